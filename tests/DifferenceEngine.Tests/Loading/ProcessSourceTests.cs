using System.Runtime.InteropServices;
using DifferenceEngine.Loading;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Loading;

public sealed class ProcessSourceTests(ITestOutputHelper output)
{
    private static ReadOnlySpan<byte> ElfMagic => [0x7F, (byte)'E', (byte)'L', (byte)'F'];

    [Fact]
    public unsafe void SnapshotOfThisProcessFindsAKnownPageAtItsGfn()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        // A page-aligned native buffer the snapshot must find byte for byte at the gfn of its address.
        byte* page = (byte*)NativeMemory.AlignedAlloc(4096, 4096);
        try
        {
            byte[] pattern = TestBytes.Random(new Random(77), 4096);
            "DifferenceEngine loader test page"u8.CopyTo(pattern);
            pattern.CopyTo(new Span<byte>(page, 4096));

            using var source = (ProcessSource)MemorySource.OpenProcess(Environment.ProcessId);
            Assert.Equal(MemorySourceFormat.Process, source.Format);
            Assert.Equal($"pid {Environment.ProcessId} ({File.ReadAllText("/proc/self/comm").Trim()})", source.Description);
            Assert.True(source.UsesPageMap);
            Assert.True(source.TryGetGfn((ulong)page, out long gfn), "the buffer is not in a readable mapping");
            Assert.InRange(gfn, 0, source.PageCount - 1);

            var sink = new WatchingSink(gfn, pattern);
            LoadReport report = source.CopyTo(sink);
            output.WriteLine($"{source.Description}: {source.PageCount} pages laid out; {report}");
            output.WriteLine(string.Join(Environment.NewLine, report.SkippedRegions));

            Assert.True(sink.Seen, $"gfn {gfn} was not loaded: {report}");
            Assert.True(sink.Matched, $"gfn {gfn} was loaded with other content");
            Assert.True(report.PagesLoaded > 0);
            Assert.Equal(sink.Count, report.PagesLoaded);
            Assert.True(report.PagesLoaded + report.PagesNotResident + (report.BytesSkipped / 4096) <= source.PageCount);
            Assert.Equal(report.SkippedRegions.Count, report.RegionsSkipped);
            GC.KeepAlive(pattern);
        }
        finally
        {
            NativeMemory.AlignedFree(page);
        }
    }

    [Fact]
    public void SnapshotOfAChildProcessHoldsItsExecutable()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        using var child = new ChildProcess();
        using MemorySource source = MemorySource.OpenProcess(child.Id);
        var sink = new CollectingSink();
        LoadReport report = source.CopyTo(sink);
        output.WriteLine($"{source.Description}: {source.PageCount} pages laid out; {report}");
        output.WriteLine(string.Join(Environment.NewLine, report.SkippedRegions));

        Assert.Equal($"pid {child.Id} (sleep)", source.Description);
        Assert.True(report.PagesLoaded > 0);
        Assert.Equal(sink.Pages.Count, report.PagesLoaded);
        Assert.True(report.RegionsRead > 0);
        Assert.True(report.PagesNotResident > 0, "a process has untouched pages; pagemap should have found some");

        // The first page of the sleep binary and of libc are mapped and resident: their ELF headers are there.
        Assert.True(sink.Pages.Values.Count(p => p.AsSpan().StartsWith(ElfMagic)) >= 2);
    }

    [Fact]
    public void WithoutPageMapEveryPageIsReadAndFailingRegionsAreSkipped()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        using var child = new ChildProcess();
        using var source = ProcessSource.Open(child.Id, onLinux: true, usePageMap: false);
        var sink = new CollectingSink();
        LoadReport report = source.CopyTo(sink);
        output.WriteLine($"{source.Description}: {source.PageCount} pages laid out; {report}");
        output.WriteLine(string.Join(Environment.NewLine, report.SkippedRegions));

        // [vvar] is readable by its permissions yet gives EIO: skipped, counted, not fatal.
        Assert.False(source.UsesPageMap);
        Assert.Contains(report.SkippedRegions, r => r.Contains("[vvar]", StringComparison.Ordinal) && r.Contains("I/O error", StringComparison.Ordinal));
        Assert.Equal(report.SkippedRegions.Count, report.RegionsSkipped);
        Assert.True(report.BytesSkipped > 0);
        Assert.Equal(0, report.PagesNotResident);
        Assert.Equal(source.PageCount, report.PagesLoaded + (report.BytesSkipped / 4096));
    }

    [Fact]
    public void ProcessThatExitsBeforeTheCopyIsProcessNotFound()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        using var child = new ChildProcess();
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

        Assert.True(ProcMaps.TryParseLine("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]", out MapsRegion vsyscall));
        Assert.False(vsyscall.Readable);

        Assert.True(ProcMaps.TryParseLine("10000-11000 r--p 00000000 00:00 0", out MapsRegion anon));
        Assert.Equal("", anon.Name);
        Assert.Equal("10000-11000 [anon]", anon.ToString());

        Assert.False(ProcMaps.TryParseLine("", out _));
        Assert.False(ProcMaps.TryParseLine("garbage", out _));
    }
}
