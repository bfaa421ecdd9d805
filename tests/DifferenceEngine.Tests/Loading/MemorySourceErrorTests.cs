using System.Buffers.Binary;
using DifferenceEngine.Loading;

namespace DifferenceEngine.Tests.Loading;

/// <summary>Every error a memory source raises on purpose, matched by its stable id.</summary>
public sealed class MemorySourceErrorTests : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void MissingFileIsFileNotFound()
    {
        string path = _temp.File("nope.img");
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(path));
        Assert.Equal("FileNotFound", e.ErrorId);
        Assert.Equal(DEErrorKind.ObjectNotFound, e.Kind);
        Assert.Equal(path, e.Target);
    }

    [Fact]
    public void DirectoryIsFileUnreadable()
    {
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(_temp.Path));
        Assert.Equal("FileUnreadable", e.ErrorId);
        Assert.Equal(DEErrorKind.ReadError, e.Kind);
    }

    /// <summary>Opening a FIFO waits for a writer: it is refused before it is opened, as any file that is not regular.</summary>
    [Fact]
    public void FifoIsFileUnreadableWithoutWaitingForAWriter()
    {
        if (OperatingSystem.IsWindows()) return;
        string path = _temp.File("pipe.img");
        Assert.Equal(0, MakeFifo(path, 0x180));
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(path));
        Assert.Equal("FileUnreadable", e.ErrorId);
        Assert.Equal(DEErrorKind.ReadError, e.Kind);
        Assert.Contains("FIFO", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CharacterDeviceIsFileUnreadableNotAnEmptyImage()
    {
        if (OperatingSystem.IsWindows()) return;
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile("/dev/zero"));
        Assert.Equal("FileUnreadable", e.ErrorId);
        Assert.Contains("character device", e.Message, StringComparison.Ordinal);
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "mkfifo", SetLastError = true)]
    private static extern int MakeFifo(string path, uint mode);

    [Fact]
    public void PermissionDeniedIsFileUnreadable()
    {
        // Tests run as root here, where chmod cannot deny a read: check the mapping itself.
        DEException e = SourceFile.OpenFailure("/x.img", new UnauthorizedAccessException());
        Assert.Equal("FileUnreadable", e.ErrorId);
        Assert.Equal(DEErrorKind.PermissionDenied, e.Kind);
    }

    [Fact]
    public void EmptyPathIsPathInvalid()
    {
        Assert.Equal("PathInvalid", Assert.Throws<DEException>(() => MemorySource.OpenFile("")).ErrorId);
        Assert.Equal("PathInvalid", Assert.Throws<DEException>(() => MemorySource.OpenFile(null!)).ErrorId);
    }

    [Fact]
    public void EmptyFileIsImageEmpty()
    {
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(_temp.Write("empty.img", [])));
        Assert.Equal("ImageEmpty", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
    }

    [Fact]
    public void CoreWithoutLoadsIsImageEmpty()
    {
        string path = _temp.Write("notes-only.core", new ElfCoreWriter().Build());
        Assert.Equal("ImageEmpty", Assert.Throws<DEException>(() => MemorySource.OpenFile(path)).ErrorId);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4097)]
    [InlineData(3 * 4096 - 1)]
    public void PartialPageIsImageNotPageAligned(int length)
    {
        string path = _temp.Write("odd.img", new byte[length]);
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(path));
        Assert.Equal("ImageNotPageAligned", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
        Assert.Contains(length.ToString(), e.Message);
        Assert.Contains("truncated or not page-aligned", e.Message);
        Assert.Equal(path, e.Target);
    }

    [Fact]
    public void RawImageOver64GiBIsImageTooLarge()
    {
        string path = _temp.File("huge.img");
        using (var stream = File.Create(path))
        {
            stream.SetLength(MemorySource.MaxGuestBytes + 4096); // sparse: costs no disk
        }

        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(path));
        Assert.Equal("ImageTooLarge", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
    }

    [Fact]
    public void CoreReachingPast64GiBIsImageTooLarge()
    {
        var writer = new ElfCoreWriter().Add(0, new byte[4096]).Add(64UL << 30, new byte[4096]);
        string path = _temp.Write("far.core", writer.Build());
        Assert.Equal("ImageTooLarge", Assert.Throws<DEException>(() => MemorySource.OpenFile(path)).ErrorId);
    }

    [Fact]
    public void ProcessCoreSegmentLargerThanAnyAddressSpaceIsElfSegmentInvalid()
    {
        var writer = new ElfCoreWriter().Add(0, new byte[4096]).Add(0, new byte[4096], memorySize: ulong.MaxValue);
        string path = _temp.Write("huge-process.core", writer.Build());
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(path));
        Assert.Equal("ElfSegmentInvalid", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
    }

    [Fact]
    public void CoreWithHugeMemsizeIsImageTooLarge()
    {
        var writer = new ElfCoreWriter().Add(0x1000, new byte[4096], memorySize: ulong.MaxValue - 5);
        string path = _temp.Write("wrap.core", writer.Build());
        Assert.Equal("ImageTooLarge", Assert.Throws<DEException>(() => MemorySource.OpenFile(path)).ErrorId);
    }

    [Theory]
    [InlineData(new byte[] { 0x7F, 0x45 })]
    [InlineData(new byte[] { 0x7F, 0x45, 0x4C })]
    [InlineData(new byte[] { 0x7F, 0x45, 0x58, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0 })]
    public void DamagedMagicAsElfCoreIsElfBadMagic(byte[] head)
    {
        byte[] file = new byte[Math.Max(head.Length, head.Length > 4 ? 4096 : 0)];
        head.CopyTo(file, 0);
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(_temp.Write("bad.img", file), MemorySourceFormat.ElfCore));
        Assert.Equal("ElfBadMagic", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
        Assert.Contains("New-DEDomain -Format Raw", e.Message);
    }

    [Theory]
    [InlineData(new byte[] { 0x7F, 0x45 })]
    [InlineData(new byte[] { 0x7F, 0x45, 0x4C })]
    [InlineData(new byte[] { 0x7F, 0x45, 0x58, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0 })]
    [InlineData(new byte[] { 0x7F, 0x45, 0x4C, 0x46, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0 })] // no class
    [InlineData(new byte[] { 0x7F, 0x45, 0x4C, 0x46, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0 })] // no byte order
    [InlineData(new byte[] { 0x7F, 0x45, 0x4C, 0x46, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0 })] // big-endian type 0x0400
    public void MemoryThatOnlyLooksLikeElfIsARawImage(byte[] head)
    {
        // Raw memory may hold any bytes: without a whole ELF identification and e_type ET_CORE it is not a core.
        byte[] file = TestBytes.Random(new Random(head.Length), 2 * 4096);
        head.CopyTo(file, 0);
        using MemorySource source = MemorySource.OpenFile(_temp.Write("raw.img", file));
        Assert.Equal(MemorySourceFormat.RawImage, source.Format);
        var sink = new CollectingSink();
        source.CopyTo(sink);
        Assert.Equal(file, sink.Pages[0].Concat(sink.Pages[1]).ToArray());
    }

    [Theory]
    [InlineData(4, 0)] // class
    [InlineData(4, 3)]
    [InlineData(5, 0)] // data encoding
    [InlineData(5, 7)]
    [InlineData(6, 0)] // version
    [InlineData(6, 2)]
    public void BadIdentAsElfCoreIsElfBadMagic(int index, byte value)
    {
        Assert.Equal("ElfBadMagic", OpenPatched(file => file[index] = value, format: MemorySourceFormat.ElfCore).ErrorId);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    public void CoreOfAnotherIdentVersionIsElfBadMagic(byte version)
    {
        // Magic, class, byte order and ET_CORE say core: what is wrong with it is reported, not loaded as raw bytes.
        DEException e = OpenPatched(file => file[6] = version);
        Assert.Equal("ElfBadMagic", e.ErrorId);
        Assert.Contains("New-DEDomain -Format Raw", e.Message);
    }

    [Fact]
    public void BigEndianIsElfUnsupported()
    {
        Assert.Equal("ElfUnsupported", OpenPatched(file => file[5] = 2, format: MemorySourceFormat.ElfCore).ErrorId);
        // A big-endian core's header, detected by content.
        DEException e = OpenPatched(file => { file[5] = 2; file[16] = 0; file[17] = 4; });
        Assert.Equal("ElfUnsupported", e.ErrorId);
        Assert.Contains("New-DEDomain -Format Raw", e.Message);
    }

    [Theory]
    [InlineData((ushort)2)]
    [InlineData((ushort)3)]
    public void ExecutableAsElfCoreIsElfNotCore(ushort type)
    {
        var writer = new ElfCoreWriter { Type = type }.Add(0, new byte[4096]);
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(_temp.Write("a.out", writer.Build()), MemorySourceFormat.ElfCore));
        Assert.Equal("ElfNotCore", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
        Assert.Contains("not a core dump", e.Message);
        Assert.Contains("New-DEDomain -Format Raw", e.Message);
    }

    [Theory]
    [InlineData(true, 18)]
    [InlineData(true, 40)]
    [InlineData(true, 63)]
    [InlineData(false, 51)]
    public void CutHeaderIsElfTruncated(bool is64, int keep)
    {
        // Long enough to say ET_CORE: a core, and a truncated one.
        byte[] file = new ElfCoreWriter { Is64 = is64 }.Add(0, new byte[4096]).Build()[..keep];
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(_temp.Write("cut.core", file)));
        Assert.Equal("ElfTruncated", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
        Assert.Contains("New-DEDomain -Format Raw", e.Message);
    }

    [Fact]
    public void CoreCutInsideItsIdentification()
    {
        byte[] file = new ElfCoreWriter().Add(0, new byte[4096]).Build()[..10];
        string path = _temp.Write("cut.core", file);
        // Too short to say what it is: as a raw image it is not whole pages; as a core it is truncated.
        Assert.Equal("ImageNotPageAligned", Assert.Throws<DEException>(() => MemorySource.OpenFile(path)).ErrorId);
        Assert.Equal("ElfTruncated", Assert.Throws<DEException>(() => MemorySource.OpenFile(path, MemorySourceFormat.ElfCore)).ErrorId);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void CoreCutInsideItsMemoryIsElfSegmentPastEnd(bool is64)
    {
        // A dump cut short (a full disk, a copy that stopped): the headers promise more than the file holds.
        byte[] whole = new ElfCoreWriter { Is64 = is64 }.Add(0, TestBytes.Random(new Random(5), 4 * 4096)).Build();
        byte[] file = whole[..(whole.Length - 4096 - 100)];
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(_temp.Write("short.core", file)));
        Assert.Equal("ElfSegmentPastEnd", e.ErrorId);
        Assert.Contains("New-DEDomain -Format Raw", e.Message);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ProgramHeadersPastEndAreElfTruncated(bool is64)
    {
        // Claim 1000 program headers in a file that holds three.
        DEException e = OpenPatched(file => BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(is64 ? 56 : 44), 1000), is64);
        Assert.Equal("ElfTruncated", e.ErrorId);
    }

    [Fact]
    public void ShortProgramHeaderEntriesAreElfTruncated()
    {
        Assert.Equal("ElfTruncated", OpenPatched(file => BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(54), 40)).ErrorId);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SegmentPastEndIsElfSegmentPastEnd(bool is64)
    {
        var writer = new ElfCoreWriter { Is64 = is64 }.Add(0, new byte[4096]);
        writer.Segments.Add(new ElfCoreWriter.Segment(0x10000, new byte[4096]) { MemorySize = 0x3000, FileSizeOverride = 0x3000 });
        byte[] file = writer.Build();
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(_temp.Write("short.core", file)));
        Assert.Equal("ElfSegmentPastEnd", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
        Assert.Contains("segment 2", e.Message); // PT_NOTE is program header 0
        Assert.Contains($"0x{file.Length:x}", e.Message);
    }

    [Fact]
    public void OverlappingSegmentsAreElfOverlappingSegments()
    {
        var writer = new ElfCoreWriter().Add(0x2000, new byte[0x2000]).Add(0, new byte[0x1000], memorySize: 0x2800);
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenFile(_temp.Write("overlap.core", writer.Build())));
        Assert.Equal("ElfOverlappingSegments", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
    }

    [Fact]
    public void NullSinkAndDisposedSourceAreRefused()
    {
        MemorySource source = MemorySource.OpenFile(_temp.Write("one.img", new byte[4096]));
        Assert.Equal("SinkNull", Assert.Throws<DEException>(() => source.CopyTo(null!)).ErrorId);
        source.Dispose();
        source.Dispose();
        Assert.Equal("SourceDisposed", Assert.Throws<DEException>(() => source.CopyTo(new CollectingSink())).ErrorId);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(int.MinValue)]
    public void NonPositivePidIsProcessIdInvalid(int pid)
    {
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenProcess(pid));
        Assert.Equal("ProcessIdInvalid", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidArgument, e.Kind);
    }

    [Fact]
    public void NonexistentPidIsProcessNotFound()
    {
        // Above any possible pid_max (at most 2^22).
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenProcess(int.MaxValue));
        Assert.Equal("ProcessNotFound", e.ErrorId);
        Assert.Equal(DEErrorKind.ObjectNotFound, e.Kind);
        Assert.Equal(int.MaxValue, e.Target);
    }

    [Fact]
    public void OffLinuxIsProcessSnapshotUnsupported()
    {
        DEException e = Assert.Throws<DEException>(() => MemorySource.OpenProcess(Environment.ProcessId, onLinux: false));
        Assert.Equal("ProcessSnapshotUnsupported", e.ErrorId);
        Assert.Equal(DEErrorKind.NotImplemented, e.Kind);
    }

    [Fact]
    public void PermissionDeniedIsProcessUnreadable()
    {
        DEException e = ProcessSource.OpenFailure(1, "mem", new UnauthorizedAccessException());
        Assert.Equal("ProcessUnreadable", e.ErrorId);
        Assert.Equal(DEErrorKind.PermissionDenied, e.Kind);
    }

    [Fact]
    public void AnotherUsersProcessIsProcessUnreadableWhenNotRoot()
    {
        if (Environment.IsPrivilegedProcess || !OperatingSystem.IsLinux())
        {
            return; // root may read any process: the mapping is checked above instead
        }

        Assert.Equal("ProcessUnreadable", Assert.Throws<DEException>(() => MemorySource.OpenProcess(1)).ErrorId);
    }

    private DEException OpenPatched(Action<byte[]> patch, bool is64 = true, MemorySourceFormat? format = null)
    {
        byte[] file = new ElfCoreWriter { Is64 = is64 }.Add(0, new byte[4096]).Add(0x2000, new byte[4096]).Build();
        patch(file);
        return Assert.Throws<DEException>(() => MemorySource.OpenFile(_temp.Write("patched.core", file), format));
    }
}
