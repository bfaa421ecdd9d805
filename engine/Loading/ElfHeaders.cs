using System.Buffers;
using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace DifferenceEngine.Loading;

/// <summary>One program header of a core, widened to 64 bits whatever the file's class.</summary>
internal readonly record struct ElfProgramHeader(
    int Index, uint Type, ulong Offset, ulong VirtualAddress, ulong PhysicalAddress, ulong FileSize, ulong MemorySize);

/// <summary>The little-endian ELF32/ELF64 file header and program header table of a core file, checked against the file's length.</summary>
internal sealed class ElfHeaders
{
    public const int IdentSize = 16;
    public const uint PtLoad = 1;

    /// <summary>The bytes <see cref="IsCore"/> looks at: the identification and e_type.</summary>
    public const int DetectSize = IdentSize + sizeof(ushort);

    private const ushort EtCore = 4;
    private const ushort PnXnum = 0xFFFF;
    private const int Elf64HeaderSize = 64;
    private const int Elf32HeaderSize = 52;
    private const int Elf64PhEntrySize = 56;
    private const int Elf32PhEntrySize = 32;
    private const int Elf64ShEntrySize = 64;
    private const int Elf32ShEntrySize = 40;

    private ElfHeaders(bool is64, ulong programHeaderOffset, int programHeaderEntrySize, ulong programHeaderCount)
    {
        Is64 = is64;
        ProgramHeaderOffset = programHeaderOffset;
        ProgramHeaderEntrySize = programHeaderEntrySize;
        ProgramHeaderCount = programHeaderCount;
    }

    public bool Is64 { get; }

    public ulong ProgramHeaderOffset { get; }

    public int ProgramHeaderEntrySize { get; }

    public ulong ProgramHeaderCount { get; }

    public string ClassName => Is64 ? "ELF64" : "ELF32";

    private static ReadOnlySpan<byte> Magic => [0x7F, (byte)'E', (byte)'L', (byte)'F'];

    /// <summary>
    /// Whether a file is an ELF core by its first <see cref="DetectSize"/> bytes: the ELF magic, a known class and
    /// byte order, and e_type ET_CORE. Nothing else is: a raw snapshot of a process begins with its executable's ELF
    /// header (ET_EXEC or ET_DYN), and raw memory may hold any bytes at all, an object file's header or half a magic
    /// number among them. A core whose later headers are damaged is still a core, and <see cref="Read"/> says what
    /// is wrong with it.
    /// </summary>
    public static bool IsCore(ReadOnlySpan<byte> head)
    {
        if (head.Length < DetectSize || !head[..Magic.Length].SequenceEqual(Magic) || head[4] is not (1 or 2))
        {
            return false;
        }

        ReadOnlySpan<byte> type = head[IdentSize..DetectSize];
        return head[5] switch
        {
            1 => BinaryPrimitives.ReadUInt16LittleEndian(type) == EtCore,
            2 => BinaryPrimitives.ReadUInt16BigEndian(type) == EtCore,
            _ => false,
        };
    }

    /// <summary>Reads and checks the file header; the program header table is only bounds-checked here.</summary>
    public static ElfHeaders Read(SafeFileHandle file, string path, long fileLength)
    {
        Span<byte> header = stackalloc byte[Elf64HeaderSize];
        header = header[..SourceFile.ReadAtMost(file, header, 0, path)];

        int magicBytes = Math.Min(header.Length, Magic.Length);
        if (magicBytes < Magic.Length || !header[..Magic.Length].SequenceEqual(Magic))
        {
            // Not the bytes it starts with: those of a raw image are the guest's first page.
            throw BadMagic(path, "it does not start with the ELF magic 0x7F454C46 ('\\x7fELF')");
        }

        if (header.Length < IdentSize)
        {
            throw Truncated(path, $"the file is {header.Length} bytes, shorter than the {IdentSize}-byte ELF identification");
        }

        byte elfClass = header[4], data = header[5], version = header[6];
        if (elfClass is not (1 or 2))
        {
            throw BadMagic(path, $"ELF class {elfClass} is neither 1 (ELF32) nor 2 (ELF64)");
        }

        if (data == 2)
        {
            throw new DEException("ElfUnsupported", DEErrorKind.NotImplemented,
                $"'{path}' is a big-endian ELF file; only little-endian cores are supported.", path);
        }

        if (data != 1)
        {
            throw BadMagic(path, $"ELF data encoding {data} is neither 1 (little-endian) nor 2 (big-endian)");
        }

        if (version != 1)
        {
            throw BadMagic(path, $"ELF identification version {version} is not 1");
        }

        bool is64 = elfClass == 2;
        int headerSize = is64 ? Elf64HeaderSize : Elf32HeaderSize;
        if (header.Length < headerSize)
        {
            throw Truncated(path, $"the file is {header.Length} bytes, shorter than the {headerSize}-byte {(is64 ? "ELF64" : "ELF32")} header");
        }

        ushort type = BinaryPrimitives.ReadUInt16LittleEndian(header[16..]);
        if (type != EtCore)
        {
            throw new DEException("ElfNotCore", DEErrorKind.InvalidData,
                $"'{path}' is an ELF file of type {type} ({TypeName(type)}), not a core dump (type 4, ET_CORE).", path);
        }

        ulong phOffset = is64 ? BinaryPrimitives.ReadUInt64LittleEndian(header[32..]) : BinaryPrimitives.ReadUInt32LittleEndian(header[28..]);
        ulong shOffset = is64 ? BinaryPrimitives.ReadUInt64LittleEndian(header[40..]) : BinaryPrimitives.ReadUInt32LittleEndian(header[32..]);
        int phEntrySize = BinaryPrimitives.ReadUInt16LittleEndian(header[(is64 ? 54 : 42)..]);
        ulong phCount = BinaryPrimitives.ReadUInt16LittleEndian(header[(is64 ? 56 : 44)..]);
        ulong length = (ulong)fileLength;

        if (phCount == PnXnum)
        {
            // More than 65534 segments (a big process core): the real count is in section header 0's sh_info.
            phCount = ReadExtendedCount(file, path, is64, shOffset, length);
        }

        if (phCount == 0)
        {
            return new ElfHeaders(is64, phOffset, phEntrySize, 0);
        }

        int needed = is64 ? Elf64PhEntrySize : Elf32PhEntrySize;
        if (phEntrySize < needed)
        {
            throw Truncated(path, $"its program header entries are {phEntrySize} bytes, shorter than the {needed} an {(is64 ? "ELF64" : "ELF32")} entry needs");
        }

        ulong tableBytes = phCount * (ulong)phEntrySize;
        if (phOffset > length || tableBytes > length - phOffset)
        {
            throw Truncated(path,
                $"its program header table (0x{phOffset:x} + {phCount} x {phEntrySize} bytes) runs past the end of the file at 0x{length:x}");
        }

        return new ElfHeaders(is64, phOffset, phEntrySize, phCount);
    }

    /// <summary>
    /// The PT_LOAD entries of the program header table, in file order. A table of up to 2^32 - 1 entries (PN_XNUM) in a
    /// sparse file takes minutes to read: <paramref name="cancellationToken"/> is checked between its pieces.
    /// </summary>
    public List<ElfProgramHeader> ReadLoadSegments(SafeFileHandle file, string path, CancellationToken cancellationToken = default)
    {
        var loads = new List<ElfProgramHeader>();
        if (ProgramHeaderCount == 0)
        {
            return loads;
        }

        // The table of a large process core runs to megabytes: read it in bounded pieces.
        int perRead = Math.Max(1, LoadGeometry.ChunkBytes / ProgramHeaderEntrySize);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(perRead * ProgramHeaderEntrySize);
        try
        {
            for (ulong first = 0; first < ProgramHeaderCount; first += (ulong)perRead)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int count = (int)Math.Min((ulong)perRead, ProgramHeaderCount - first);
                Span<byte> table = buffer.AsSpan(0, count * ProgramHeaderEntrySize);
                long offset = checked((long)(ProgramHeaderOffset + first * (ulong)ProgramHeaderEntrySize));
                SourceFile.ReadExactly(file, table, offset, path);
                for (int i = 0; i < count; i++)
                {
                    ElfProgramHeader ph = Decode(table.Slice(i * ProgramHeaderEntrySize, ProgramHeaderEntrySize), (int)(first + (ulong)i));
                    if (ph.Type == PtLoad)
                    {
                        loads.Add(ph);
                    }
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        return loads;
    }

    private ElfProgramHeader Decode(ReadOnlySpan<byte> e, int index) => Is64
        ? new ElfProgramHeader(
            index,
            Type: BinaryPrimitives.ReadUInt32LittleEndian(e),
            Offset: BinaryPrimitives.ReadUInt64LittleEndian(e[8..]),
            VirtualAddress: BinaryPrimitives.ReadUInt64LittleEndian(e[16..]),
            PhysicalAddress: BinaryPrimitives.ReadUInt64LittleEndian(e[24..]),
            FileSize: BinaryPrimitives.ReadUInt64LittleEndian(e[32..]),
            MemorySize: BinaryPrimitives.ReadUInt64LittleEndian(e[40..]))
        : new ElfProgramHeader(
            index,
            Type: BinaryPrimitives.ReadUInt32LittleEndian(e),
            Offset: BinaryPrimitives.ReadUInt32LittleEndian(e[4..]),
            VirtualAddress: BinaryPrimitives.ReadUInt32LittleEndian(e[8..]),
            PhysicalAddress: BinaryPrimitives.ReadUInt32LittleEndian(e[12..]),
            FileSize: BinaryPrimitives.ReadUInt32LittleEndian(e[16..]),
            MemorySize: BinaryPrimitives.ReadUInt32LittleEndian(e[20..]));

    private static ulong ReadExtendedCount(SafeFileHandle file, string path, bool is64, ulong shOffset, ulong length)
    {
        int entrySize = is64 ? Elf64ShEntrySize : Elf32ShEntrySize;
        if (shOffset == 0 || shOffset > length || (ulong)entrySize > length - shOffset)
        {
            throw Truncated(path, "it has more than 65534 program headers but no section header 0 holding their count");
        }

        Span<byte> section = stackalloc byte[Elf64ShEntrySize];
        SourceFile.ReadExactly(file, section[..entrySize], (long)shOffset, path);
        return BinaryPrimitives.ReadUInt32LittleEndian(section[(is64 ? 44 : 28)..]);
    }

    private static string TypeName(ushort type) => type switch
    {
        0 => "ET_NONE",
        1 => "ET_REL, an object file",
        2 => "ET_EXEC, an executable",
        3 => "ET_DYN, a shared object or PIE executable",
        _ => "unknown",
    };

    private static DEException BadMagic(string path, string why) =>
        new("ElfBadMagic", DEErrorKind.InvalidData, $"'{path}' is not a valid ELF file: {why}.", path);

    private static DEException Truncated(string path, string why) =>
        new("ElfTruncated", DEErrorKind.InvalidData, $"ELF core '{path}' is truncated: {why}.", path);
}
