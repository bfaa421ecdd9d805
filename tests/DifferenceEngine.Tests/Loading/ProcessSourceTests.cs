using System.Runtime.InteropServices;
using System.Security.Cryptography;
using DifferenceEngine.Qemu;
using DifferenceEngine.Loading;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Loading;

public sealed class ProcessSourceTests(ITestOutputHelper output)
{
    private static ReadOnlySpan<byte> ElfMagic => [0x7F, (byte)'E', (byte)'L', (byte)'F'];

    [Fact]
    public unsafe void SnapshotOfThisProcessHoldsAKnownPage()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        // A page-aligned native buffer the snapshot must hold byte for byte. Its gfn depends on which pages are
        // resident, so the loaded pages are searched for it; only its hash is kept, so no other copy of it exists.
        byte* page = (byte*)NativeMemory.AlignedAlloc(4096, 4096);
        // 64 MiB mapped and never touched: readable, so laid out, and not resident, so not read (the page map says so).
        const long untouchedPages = 16384;
        void* untouched = LinuxNative.Mmap(null, (nuint)(untouchedPages * 4096), 1 /* PROT_READ */, 0x22 /* MAP_PRIVATE | MAP_ANONYMOUS */, -1, 0);
        Assert.True(untouched != (void*)-1, "mmap of the untouched region failed");
        try
        {
            var content = new Span<byte>(page, 4096);
            byte[] tag = "DifferenceEngine loader test page"u8.ToArray();
            new Random(77).NextBytes(content);
            tag.CopyTo(content);
            byte[] hash = SHA256.HashData(content);

            using var source = (ProcessSource)MemorySource.OpenProcess(Environment.ProcessId);
            Assert.Equal(MemorySourceFormat.Process, source.Format);
            Assert.Equal($"pid {Environment.ProcessId} ({File.ReadAllText("/proc/self/comm").Trim()})", source.Description);
            Assert.True(source.UsesPageMap);

            var sink = new SearchingSink(tag, hash);
            LoadReport report = source.CopyTo(sink);
            output.WriteLine($"{source.Description}: {source.PageCount} pages laid out; {report}");
            output.WriteLine(string.Join(Environment.NewLine, report.SkippedRegions));

            long gfn = Assert.Single(sink.Found);
            Assert.InRange(gfn, 0, source.PageCount - 1);
            Assert.True(report.PagesLoaded > 0);
            Assert.Equal(sink.Count, report.PagesLoaded);

            // The pages the process maps but never touched are not read: the untouched region's at least (whatever else
            // the process, and the tests beside this one, happen to have resident).
            Assert.True(report.PagesNotResident >= untouchedPages,
                $"{source.PageCount} pages laid out, only {report.PagesNotResident} not resident, fewer than the {untouchedPages} never touched");
            Assert.Equal(source.PageCount, report.PagesLoaded + (report.BytesSkipped / 4096));
            Assert.Equal(report.SkippedRegions.Count, report.RegionsSkipped);
        }
        finally
        {
            NativeMemory.AlignedFree(page);
            LinuxNative.Munmap(untouched, (nuint)(untouchedPages * 4096));
        }
    }

    /// <summary>
    /// A shared-memory page punched out after the snapshot was opened (as the engine's QEMU backend does to guest RAM it
    /// keeps mapped this way) is read as zeros and stays a hole: read through /proc/PID/mem it was allocated anew in the
    /// memfd, which filled pages a userfaultfd pager held (session 16: the cause of guests finding pages of zeros when
    /// this test ran beside the QEMU tests). The memfd ends 100 bytes short of its last page, which reads as its bytes
    /// and zeros after them.
    /// </summary>
    [Fact]
    public unsafe void SnapshotReadsSharedMemoryThroughItsFileAndLeavesItsHolesAlone()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        const int Pages = 64;
        const long Size = Pages * 4096L - 100;
        int fd = MemfdCreate("de-snapshot-test", 1 /* MFD_CLOEXEC */);
        Assert.True(fd >= 0, $"memfd_create: {Marshal.GetLastPInvokeError()}");
        byte* map = null;
        try
        {
            Assert.Equal(0, LinuxNative.Ftruncate(fd, Size));
            map = (byte*)LinuxNative.Mmap(null, Pages * 4096, LinuxNative.PROT_READ | 2 /* PROT_WRITE */, LinuxNative.MAP_SHARED, fd, 0);
            Assert.True(map != (byte*)-1, $"mmap: {Marshal.GetLastPInvokeError()}");

            // Each page's bytes are made in the memfd itself and only their hash is kept: the snapshot reads this whole
            // process, and a copy elsewhere (an array, a stream's buffer) could be found at a page boundary by chance.
            var hashes = new string[Pages];
            var random = new Random(1000);
            for (int i = 0; i < Pages; i++)
            {
                var page = new Span<byte>(map + i * 4096L, 4096);
                random.NextBytes(i == Pages - 1 ? page[..(4096 - 100)] : page); // the last page: the file's end, then zeros
                hashes[i] = Convert.ToHexString(SHA256.HashData(page));
            }

            using var source = (ProcessSource)MemorySource.OpenProcess(Environment.ProcessId);
            // Pages 16 to 31 leave the memfd between the layout and the copy.
            Assert.Equal(0, LinuxNative.Fallocate(fd, LinuxNative.FALLOC_FL_PUNCH_HOLE | LinuxNative.FALLOC_FL_KEEP_SIZE, 16 * 4096L, 16 * 4096L));
            var sink = new HashingSink();
            LoadReport report = source.CopyTo(sink);

            Assert.Equal([(0L, 16L), (32L, Pages - 32L)], DataRuns(fd, Pages));
            string ours = report.SkippedRegions.FirstOrDefault(r => r.Contains("memfd:de-snapshot-test", StringComparison.Ordinal)) ?? "";
            if (ours.Length > 0)
            {
                // Not root: the mapping is skipped, for the reason given, and still untouched.
                Assert.Contains("map_files", ours, StringComparison.Ordinal);
                return;
            }

            for (int i = 0; i < Pages; i++)
            {
                bool punched = i is >= 16 and < 32;
                Assert.True(sink.Has(hashes[i]) != punched, $"page {i} ({(punched ? "punched: zeros" : "kept")})");
            }
        }
        finally
        {
            if (map is not null && map != (byte*)-1) LinuxNative.Munmap(map, Pages * 4096);
            LinuxNative.Close(fd);
        }
    }

    /// <summary>The runs of pages a file holds (SEEK_DATA, SEEK_HOLE), as (first page, pages).</summary>
    private static List<(long, long)> DataRuns(int fd, long pages)
    {
        var runs = new List<(long, long)>();
        for (long at = 0; at < pages * 4096;)
        {
            long data = LinuxNative.Lseek(fd, at, LinuxNative.SEEK_DATA);
            if (data < 0) break;
            long hole = LinuxNative.Lseek(fd, data, LinuxNative.SEEK_HOLE);
            runs.Add((data / 4096, (hole + 4095) / 4096 - data / 4096));
            at = hole;
        }

        return runs;
    }

    [DllImport("libc", EntryPoint = "memfd_create", SetLastError = true)]
    private static extern int MemfdCreate(string name, uint flags);

    /// <summary>The SHA-256 of every page a snapshot gives.</summary>
    private sealed class HashingSink : IGuestPageSink
    {
        private readonly HashSet<string> _hashes = [];

        public void SetPage(long gfn, ReadOnlySpan<byte> page) => _hashes.Add(Convert.ToHexString(SHA256.HashData(page)));

        public bool Has(string sha256) => _hashes.Contains(sha256);
    }

    [Fact]
    public void SnapshotOfAChildProcessHoldsItsExecutable()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        using var child = LiveProcess.Cat();
        using MemorySource source = MemorySource.OpenProcess(child.Id);
        var sink = new CollectingSink();
        LoadReport report = source.CopyTo(sink);
        output.WriteLine($"{source.Description}: {source.PageCount} pages laid out; {report}");
        output.WriteLine(string.Join(Environment.NewLine, report.SkippedRegions));

        Assert.Equal($"pid {child.Id} (cat)", source.Description);
        Assert.True(report.PagesLoaded > 0);
        Assert.Equal(sink.Pages.Count, report.PagesLoaded);
        Assert.True(report.RegionsRead > 0);
        Assert.True(report.PagesNotResident > 0, "a process has untouched pages; pagemap should have found some");

        // The first page of the cat binary and of libc are mapped and resident: their ELF headers are there.
        Assert.True(sink.Pages.Values.Count(p => p.AsSpan().StartsWith(ElfMagic)) >= 2);
    }

    [Fact]
    public void SnapshotOfAChildProcessLaysOutOnlyItsResidentPages()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        using var child = LiveProcess.Cat();
        long mappedBefore = ReadableMappedPages(child.Id);
        using var source = ProcessSource.Open(child.Id, onLinux: true);
        long mappedAfter = ReadableMappedPages(child.Id);
        var sink = new CollectingSink();
        LoadReport report = source.CopyTo(sink);
        output.WriteLine($"{source.Description}: {source.PageCount} of {mappedBefore} mapped pages laid out; {report}");
        output.WriteLine(string.Join(Environment.NewLine, report.SkippedRegions));

        Assert.True(source.UsesPageMap);
        Assert.Equal($"pid {child.Id} (cat)", source.Description);

        // Every gfn is a resident page: loaded, or in a part that failed to read.
        Assert.Equal(source.PageCount, report.PagesLoaded + (report.BytesSkipped / 4096));
        Assert.Equal(sink.Pages.Count, report.PagesLoaded);
        Assert.All(sink.Pages.Keys, gfn => Assert.InRange(gfn, 0, source.PageCount - 1));

        // cat touched only part of what it mapped. Fault-around maps file pages 16 at a time, so even cat has
        // about 60% of its mappings resident; the larger the process, the larger the share it never touched.
        Assert.True(source.PageCount < mappedBefore, $"{source.PageCount} of {mappedBefore} mapped pages laid out");
        Assert.True(report.PagesNotResident > 0);
        if (mappedBefore == mappedAfter)
        {
            // The mappings did not change while opening: every readable page is either laid out or not resident.
            Assert.Equal(mappedBefore, source.PageCount + report.PagesNotResident);
        }
    }

    [Fact]
    public void WithoutPageMapEveryPageIsReadAndFailingRegionsAreSkipped()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        using var child = LiveProcess.Cat();
        long mappedBefore = ReadableMappedPages(child.Id);
        using var source = ProcessSource.Open(child.Id, onLinux: true, usePageMap: false);
        long mappedAfter = ReadableMappedPages(child.Id);
        var sink = new CollectingSink();
        LoadReport report = source.CopyTo(sink);
        output.WriteLine($"{source.Description}: {source.PageCount} pages laid out; {report}");
        output.WriteLine(string.Join(Environment.NewLine, report.SkippedRegions));

        Assert.False(source.UsesPageMap);
        Assert.StartsWith($"pid {child.Id} (cat), all mapped pages: ", source.Description, StringComparison.Ordinal);

        // [vvar] is readable by its permissions yet gives EIO: skipped, counted, not fatal.
        Assert.Contains(report.SkippedRegions, r => r.Contains("[vvar]", StringComparison.Ordinal) && r.Contains("I/O error", StringComparison.Ordinal));
        Assert.Equal(report.SkippedRegions.Count, report.RegionsSkipped);
        Assert.True(report.BytesSkipped > 0);
        Assert.Equal(0, report.PagesNotResident);
        Assert.Equal(source.PageCount, report.PagesLoaded + (report.BytesSkipped / 4096));
        if (mappedBefore == mappedAfter)
        {
            // Every page of every readable mapping is laid out.
            Assert.Equal(mappedBefore, source.PageCount);
        }
    }

    [Fact]
    public void ProcessThatExitsBeforeTheCopyIsProcessNotFound()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        using var child = LiveProcess.Cat();
        using MemorySource source = MemorySource.OpenProcess(child.Id);
        child.Kill();

        DEException e = Assert.Throws<DEException>(() => source.CopyTo(new CollectingSink()));
        Assert.Equal("ProcessNotFound", e.ErrorId);
        Assert.Equal(child.Id, e.Target);
    }

    [Fact]
    public void MapsLinesParseWithNamesThatHoldSpaces()
    {
        Assert.True(ProcMaps.TryParseLine("7ffd1000-7ffd5000 r--p 00000000 00:00 0                          [vvar]", out MapsRegion vvar));
        Assert.Equal(new MapsRegion(0x7ffd1000, 0x7ffd5000, true, "[vvar]"), vvar);
        Assert.Equal("7ffd1000-7ffd5000 [vvar]", vvar.ToString());

        Assert.True(ProcMaps.TryParseLine("555500000000-555500002000 rw-s 00001000 08:01 1234   /tmp/my file (deleted)", out MapsRegion named));
        Assert.Equal("/tmp/my file (deleted)", named.Name);
        Assert.True(named.Shared);
        Assert.Equal(0x1000UL, named.FileOffset);
        Assert.False(vvar.Shared);

        Assert.True(ProcMaps.TryParseLine("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]", out MapsRegion vsyscall));
        Assert.False(vsyscall.Readable);

        Assert.True(ProcMaps.TryParseLine("10000-11000 r--p 00000000 00:00 0", out MapsRegion anon));
        Assert.Equal("", anon.Name);
        Assert.Equal("10000-11000 [anon]", anon.ToString());

        Assert.False(ProcMaps.TryParseLine("", out _));
        Assert.False(ProcMaps.TryParseLine("garbage", out _));
    }

    [Fact]
    public void WithoutMapFilesOnlySharedMemoryIsLeftOutAndADisksFileIsReadThroughTheProcess()
    {
        // The device's major number, in hex as maps writes it: 0 for shared memory and other file systems with no device.
        Assert.True(ProcMaps.TryParseLine("7f0000000000-7f0000040000 rw-s 00000000 00:01 4242   /memfd:guest (deleted)", out MapsRegion memfd));
        Assert.Equal(0u, memfd.DeviceMajor);
        Assert.True(ProcMaps.TryParseLine("7f0000000000-7f0000002000 rw-s 00001000 08:01 1234   /tmp/my file", out MapsRegion sda));
        Assert.Equal(8u, sda.DeviceMajor);
        Assert.True(ProcMaps.TryParseLine("7f0000000000-7f0000002000 rw-s 00000000 103:02 77   /data/db", out MapsRegion nvme));
        Assert.Equal(0x103u, nvme.DeviceMajor);
        Assert.True(ProcMaps.TryParseLine("7f0000000000-7f0000002000 rw-s 00000000 00:05 32768   /SYSV00000000 (deleted)", out MapsRegion sysv));

        // Without /proc/PID/map_files: shared memory is left out, with the reason; a disk's file is read through the process.
        Assert.Contains("map_files", ProcessSource.WhyNotWithoutMapFiles(memfd), StringComparison.Ordinal);
        Assert.Contains("map_files", ProcessSource.WhyNotWithoutMapFiles(sysv), StringComparison.Ordinal);
        Assert.Null(ProcessSource.WhyNotWithoutMapFiles(sda));
        Assert.Null(ProcessSource.WhyNotWithoutMapFiles(nvme));
    }

    [Fact]
    public unsafe void MapsNamesTheDeviceOfAMappedFileAsItsFileSystemDoes()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        // This process's own shared mappings: a memfd (shared memory: no device) and a file where tests make theirs,
        // whose device major in maps is the one the file system gives the file.
        int fd = MemfdCreate("de-maps-device-test", 1 /* MFD_CLOEXEC */);
        Assert.True(fd >= 0, $"memfd_create: {Marshal.GetLastPInvokeError()}");
        string path = Path.Combine(Path.GetTempPath(), $"de-maps-device-{Environment.ProcessId}-{Guid.NewGuid():N}");
        byte* shm = null, disk = null;
        try
        {
            Assert.Equal(0, LinuxNative.Ftruncate(fd, 4096));
            File.WriteAllBytes(path, new byte[4096]);
            using var file = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
            shm = (byte*)LinuxNative.Mmap(null, 4096, LinuxNative.PROT_READ, LinuxNative.MAP_SHARED, fd, 0);
            disk = (byte*)LinuxNative.Mmap(null, 4096, LinuxNative.PROT_READ, LinuxNative.MAP_SHARED, (int)file.DangerousGetHandle(), 0);
            Assert.True(shm != (byte*)-1 && disk != (byte*)-1, $"mmap: {Marshal.GetLastPInvokeError()}");
            var maps = ProcMaps.Parse(new StringReader(File.ReadAllText("/proc/self/maps")));
            var ours = maps.Single(r => r.Start == (ulong)shm);
            var theirs = maps.Single(r => r.Start == (ulong)disk);
            Assert.True(ours.Shared && theirs.Shared);
            Assert.Equal(0u, ours.DeviceMajor);
            Assert.NotNull(ProcessSource.WhyNotWithoutMapFiles(ours));
            byte* stat = stackalloc byte[LinuxNative.StatxBufferSize];
            Assert.Equal(0, LinuxNative.Statx(LinuxNative.AT_FDCWD, path, 0, LinuxNative.STATX_TYPE, stat));
            uint major = *(uint*)(stat + StatxDevMajorOffset);
            Assert.Equal(major, theirs.DeviceMajor);
            Assert.Equal(major == 0, ProcessSource.WhyNotWithoutMapFiles(theirs) is not null);
        }
        finally
        {
            if (shm != null && shm != (byte*)-1) LinuxNative.Munmap(shm, 4096);
            if (disk != null && disk != (byte*)-1) LinuxNative.Munmap(disk, 4096);
            LinuxNative.Close(fd);
            File.Delete(path);
        }
    }

    /// <summary>struct statx: stx_dev_major (after stx_rdev_major and stx_rdev_minor, at 128 and 132).</summary>
    private const int StatxDevMajorOffset = 136;

    /// <summary>Pages of the readable mappings in /proc/PID/maps: the size of a layout without pagemap.</summary>
    private static long ReadableMappedPages(int pid)
    {
        using var reader = new StreamReader($"/proc/{pid}/maps");
        return ProcMaps.Parse(reader).Where(r => r.Readable).Sum(r => (long)((r.Length + 4095) / 4096));
    }
}
