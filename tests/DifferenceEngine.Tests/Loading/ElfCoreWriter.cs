using System.Buffers.Binary;

namespace DifferenceEngine.Tests.Loading;

/// <summary>
/// Writes small ELF32/ELF64 little-endian core files the way QEMU and Linux do (a PT_NOTE, then PT_LOADs),
/// with knobs for the odd cases: unaligned file offsets, wrong sizes, bad identification bytes.
/// </summary>
internal sealed class ElfCoreWriter
{
    public bool Is64 { get; init; } = true;

    public ushort Type { get; init; } = 4;

    /// <summary>Whether a PT_NOTE precedes the loads, as in real cores (it makes program header indexes start at 1).</summary>
    public bool WithNote { get; init; } = true;

    /// <summary>Writes e_phnum as PN_XNUM with the real count in section header 0, as cores with over 65534 segments do.</summary>
    public bool ExtendedNumbering { get; init; }

    public List<Segment> Segments { get; } = [];

    public ElfCoreWriter Add(ulong physicalAddress, byte[] data, ulong? memorySize = null, int padBefore = 0, ulong virtualAddress = 0)
    {
        Segments.Add(new Segment(physicalAddress, data)
        {
            MemorySize = memorySize ?? (ulong)data.Length,
            PadBefore = padBefore,
            VirtualAddress = virtualAddress,
        });
        return this;
    }

    public byte[] Build()
    {
        int headerSize = Is64 ? 64 : 52;
        int entrySize = Is64 ? 56 : 32;
        byte[] note = [4, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, (byte)'C', (byte)'O', (byte)'R', (byte)'E', 0, 0, 0, 0, 9, 9, 9, 9];
        int count = Segments.Count + (WithNote ? 1 : 0);
        long cursor = headerSize + (count * entrySize);

        var headers = new List<(uint Type, ulong Offset, ulong Vaddr, ulong Paddr, ulong FileSize, ulong MemSize, byte[] Data)>();
        if (WithNote)
        {
            headers.Add((4, (ulong)cursor, 0, 0, (ulong)note.Length, 0, note));
            cursor += note.Length;
        }

        foreach (Segment s in Segments)
        {
            cursor += s.PadBefore;
            ulong offset = s.OffsetOverride ?? (ulong)cursor;
            headers.Add((s.Type, offset, s.VirtualAddress, s.PhysicalAddress, s.FileSizeOverride ?? (ulong)s.Data.Length, s.MemorySize, s.Data));
            cursor = Math.Max(cursor, (long)offset + s.Data.Length);
        }

        long sectionHeader = cursor;
        if (ExtendedNumbering)
        {
            cursor += Is64 ? 64 : 40;
        }

        var file = new byte[cursor];
        Span<byte> h = file;
        h[0] = 0x7F;
        h[1] = (byte)'E';
        h[2] = (byte)'L';
        h[3] = (byte)'F';
        h[4] = (byte)(Is64 ? 2 : 1);
        h[5] = 1;
        h[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(h[16..], Type);
        BinaryPrimitives.WriteUInt16LittleEndian(h[18..], (ushort)(Is64 ? 62 : 3));
        BinaryPrimitives.WriteUInt32LittleEndian(h[20..], 1);
        if (Is64)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(h[32..], (ulong)headerSize);
            BinaryPrimitives.WriteUInt16LittleEndian(h[52..], (ushort)headerSize);
            BinaryPrimitives.WriteUInt16LittleEndian(h[54..], (ushort)entrySize);
            BinaryPrimitives.WriteUInt16LittleEndian(h[56..], (ushort)count);
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(h[28..], (uint)headerSize);
            BinaryPrimitives.WriteUInt16LittleEndian(h[40..], (ushort)headerSize);
            BinaryPrimitives.WriteUInt16LittleEndian(h[42..], (ushort)entrySize);
            BinaryPrimitives.WriteUInt16LittleEndian(h[44..], (ushort)count);
        }

        if (ExtendedNumbering)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(h[(Is64 ? 56 : 44)..], 0xFFFF);
            if (Is64)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(h[40..], (ulong)sectionHeader);
                BinaryPrimitives.WriteUInt16LittleEndian(h[58..], 64);
                BinaryPrimitives.WriteUInt32LittleEndian(h[((int)sectionHeader + 44)..], (uint)count);
            }
            else
            {
                BinaryPrimitives.WriteUInt32LittleEndian(h[32..], (uint)sectionHeader);
                BinaryPrimitives.WriteUInt16LittleEndian(h[46..], 40);
                BinaryPrimitives.WriteUInt32LittleEndian(h[((int)sectionHeader + 28)..], (uint)count);
            }
        }

        for (int i = 0; i < headers.Count; i++)
        {
            var (type, offset, vaddr, paddr, fileSize, memSize, data) = headers[i];
            Span<byte> e = h.Slice(headerSize + (i * entrySize), entrySize);
            BinaryPrimitives.WriteUInt32LittleEndian(e, type);
            if (Is64)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(e[4..], 4);
                BinaryPrimitives.WriteUInt64LittleEndian(e[8..], offset);
                BinaryPrimitives.WriteUInt64LittleEndian(e[16..], vaddr);
                BinaryPrimitives.WriteUInt64LittleEndian(e[24..], paddr);
                BinaryPrimitives.WriteUInt64LittleEndian(e[32..], fileSize);
                BinaryPrimitives.WriteUInt64LittleEndian(e[40..], memSize);
            }
            else
            {
                BinaryPrimitives.WriteUInt32LittleEndian(e[4..], (uint)offset);
                BinaryPrimitives.WriteUInt32LittleEndian(e[8..], (uint)vaddr);
                BinaryPrimitives.WriteUInt32LittleEndian(e[12..], (uint)paddr);
                BinaryPrimitives.WriteUInt32LittleEndian(e[16..], (uint)fileSize);
                BinaryPrimitives.WriteUInt32LittleEndian(e[20..], (uint)memSize);
                BinaryPrimitives.WriteUInt32LittleEndian(e[24..], 4);
            }

            data.CopyTo(file, (long)offset);
        }

        return file;
    }

    /// <summary>Guest-physical memory as a machine core describes it, and the gfns that hold file bytes.</summary>
    public (byte[] Memory, SortedSet<long> PagesWithData) ExpectedPhysical()
    {
        ulong end = Segments.Max(s => s.PhysicalAddress + Math.Max(s.MemorySize, (ulong)s.Data.Length));
        var memory = new byte[(end + 4095) / 4096 * 4096];
        var pages = new SortedSet<long>();
        foreach (Segment s in Segments)
        {
            s.Data.CopyTo(memory, (long)s.PhysicalAddress);
            for (ulong a = s.PhysicalAddress; a < s.PhysicalAddress + (ulong)s.Data.Length; a = (a | 4095) + 1)
            {
                pages.Add((long)(a / 4096));
            }
        }

        return (memory, pages);
    }

    /// <summary>Guest memory as a process core is laid out: dumped bytes only, each segment from a new page, in file order.</summary>
    public byte[] ExpectedPacked()
    {
        var memory = new List<byte>();
        foreach (Segment s in Segments.Where(s => s.Data.Length > 0))
        {
            memory.AddRange(s.Data);
            memory.AddRange(new byte[((s.Data.Length + 4095) / 4096 * 4096) - s.Data.Length]);
        }

        return [.. memory];
    }

    /// <summary>One program header and its file bytes.</summary>
    internal sealed record Segment(ulong PhysicalAddress, byte[] Data)
    {
        public uint Type { get; init; } = 1;

        public ulong VirtualAddress { get; init; }

        public ulong MemorySize { get; init; }

        /// <summary>Bytes of padding in the file before this segment's data: QEMU's offsets are not page aligned.</summary>
        public int PadBefore { get; init; }

        public ulong? OffsetOverride { get; init; }

        public ulong? FileSizeOverride { get; init; }
    }
}
