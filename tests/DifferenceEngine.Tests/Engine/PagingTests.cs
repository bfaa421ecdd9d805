using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Paging;
using DifferenceEngine.Scanning;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Tests.Engine;

/// <summary>A swap storage that fails on command, for fault injection.</summary>
internal sealed class FlakyStorage(ISwapStorage inner) : ISwapStorage
{
    public int FailWrites;
    public int FailFlushes;
    public int FailReads;
    public string Path => inner.Path;
    public long Length => inner.Length;
    public bool DirectIo => inner.DirectIo;

    public void Write(long offset, ReadOnlySpan<byte> page)
    {
        if (FailWrites > 0 && Interlocked.Decrement(ref FailWrites) >= 0) throw new IOException("injected: No space left on device");
        inner.Write(offset, page);
    }

    public void Read(long offset, Span<byte> page)
    {
        if (FailReads > 0 && Interlocked.Decrement(ref FailReads) >= 0) throw new IOException("injected: Input/output error");
        inner.Read(offset, page);
    }

    public void Flush()
    {
        if (FailFlushes > 0 && Interlocked.Decrement(ref FailFlushes) >= 0) throw new IOException("injected: fdatasync failed");
        inner.Flush();
    }

    public void Dispose() => inner.Dispose();
}

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class PagingTests
{
    private static byte[] PageOf(int domain, long gfn, int version = 0)
    {
        var p = new byte[4096];
        new Random(HashCode.Combine(domain, gfn, version)).NextBytes(p);
        return p;
    }

    [Fact]
    public void SwapFileIsPrivateUnnamedAndClosedOnDisconnect()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "swap");
        var host = new DEHost(new HostOptions { MemoryLimitBytes = 64 * 4096, SwapPath = path, SwapSizeBytes = 1 << 20 });
        Assert.False(File.Exists(path)); // only the engine's descriptor has it
        using (var file = OpenSwapFile.Open(path))
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file.SafeFileHandle));
            Assert.Equal(1 << 20, file.Length);
        }
        host.Dispose();
        Assert.Null(OpenSwapFile.Descriptor(path));
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void SwapNeedsALimitAndANewFile()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "swap");
        Assert.Equal("SwapNeedsMemoryLimit", Assert.Throws<DEException>(() => new DEHost(new HostOptions { SwapPath = path })).ErrorId);
        File.WriteAllText(path, "x");
        Assert.Equal("SwapFileExists", Assert.Throws<DEException>(() =>
            new DEHost(new HostOptions { MemoryLimitBytes = 1 << 20, SwapPath = path })).ErrorId);
        Assert.Equal("SwapDirectoryNotFound", Assert.Throws<DEException>(() =>
            new DEHost(new HostOptions { MemoryLimitBytes = 1 << 20, SwapPath = Path.Combine(dir.Path, "no", "swap") })).ErrorId);
        Assert.Equal("SwapSizeInvalid", Assert.Throws<DEException>(() =>
            new DEHost(new HostOptions { MemoryLimitBytes = 1 << 20, SwapPath = Path.Combine(dir.Path, "s2"), SwapSizeBytes = 100 })).ErrorId);
        // More pages than the slot tables can have: refused before any file is made (not an OutOfMemoryException after it).
        string huge = Path.Combine(dir.Path, "s3");
        Assert.Equal("SwapSizeInvalid", Assert.Throws<DEException>(() =>
            new DEHost(new HostOptions { MemoryLimitBytes = 1 << 20, SwapPath = huge, SwapSizeBytes = (DifferenceEngine.Paging.SwapSpace.MaxSlots + 1) * 4096 })).ErrorId);
        Assert.False(File.Exists(huge));
    }

    [Fact]
    public void MoreGuestMemoryThanTheLimitIsPagedOutAndBackWithNothingLost()
    {
        using var dir = new TempDir();
        using var host = new DEHost(new HostOptions { MemoryLimitBytes = 64 * 4096, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 4 << 20 });
        var a = host.CreateDomain("a", 300 * 4096);
        var b = host.CreateDomain("b", 300 * 4096);
        for (long g = 0; g < 300; g++)
        {
            a.WritePage(g, PageOf(1, g));
            b.WritePage(g, PageOf(2, g));
            Assert.True(host.GetStats().FramesInUse <= 64);
        }
        for (long g = 299; g >= 0; g--)
        {
            Assert.Equal(PageOf(1, g), a.ReadPage(g));
            Assert.Equal(PageOf(2, g), b.ReadPage(g));
        }
        var stats = host.GetStats();
        Assert.True(stats.PageOuts > 500, $"{stats.PageOuts} page-outs");
        Assert.True(stats.Faults.Single(f => f.Kind == FaultKind.SwapIn).Count > 500);
        Assert.True(stats.PageOutP50 > TimeSpan.Zero);
        var ps = host.GetPageStats(a);
        Assert.Equal(300, ps.PrivatePages + ps.SwappedPages);
        var swappedPage = Enumerable.Range(0, 300).Select(g => a.GetPage(g)).First(p => p.State == PageState.Swapped);
        Assert.NotNull(swappedPage.SwapSlot);
        host.RemoveDomain(a);
        host.RemoveDomain(b);
        Assert.Equal(0, host.GetStats().SwapUsedBytes);
        Assert.Equal(0, host.GetStats().FramesInUse);
    }

    [Fact]
    public void ColdPagesGoFirst()
    {
        using var dir = new TempDir();
        using var host = new DEHost(new HostOptions { MemoryLimitBytes = 100 * 4096, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 4 << 20 });
        var cold = host.CreateDomain("cold", 40 * 4096);
        var hot = host.CreateDomain("hot", 40 * 4096);
        for (long g = 0; g < 40; g++) { cold.WritePage(g, PageOf(1, g)); hot.WritePage(g, PageOf(2, g)); }
        host.Scan(options: new ScanOptions { Passes = 3 }); // everything C4 ...
        for (long g = 0; g < 40; g++) hot.ReadPage(g);       // ... but hot's pages are read again
        host.Scan();                                          // hot: C2, cold: C4
        var filler = host.CreateDomain("filler", 60 * 4096);
        for (long g = 0; g < 60; g++) filler.WritePage(g, PageOf(3, g));
        Assert.True(host.GetPageStats(cold).SwappedPages > 0);
        Assert.Equal(0, host.GetPageStats(hot).SwappedPages);
    }

    [Fact]
    public void WhenSwapIsFullTheFaultingDomainGetsAClearErrorAndNothingIsHarmed()
    {
        using var dir = new TempDir();
        using var host = new DEHost(new HostOptions { MemoryLimitBytes = 16 * 4096, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 16 * 4096 });
        var bystander = host.CreateDomain("bystander", 4 * 4096);
        for (long g = 0; g < 4; g++) bystander.WritePage(g, PageOf(9, g));
        var greedy = host.CreateDomain("greedy", 64 * 4096);
        long written = 0;
        DEException? error = null;
        for (long g = 0; g < 64; g++)
        {
            try
            {
                greedy.WritePage(g, PageOf(1, g));
                written++;
            }
            catch (DEException ex)
            {
                error = ex;
                break;
            }
        }
        Assert.NotNull(error);
        Assert.Equal("HostOutOfMemory", error!.ErrorId);
        Assert.Contains("'greedy'", error.Message);
        Assert.Equal("OutOfMemory", greedy.Status);
        Assert.Equal("Running", bystander.Status);
        Assert.InRange(written, 24, 32);
        // Memory and swap are full, yet every page written reads back: a swap-in trades places with a victim.
        for (int round = 0; round < 3; round++)
        {
            for (long g = 0; g < 4; g++) Assert.Equal(PageOf(9, g), bystander.ReadPage(g));
            for (long g = 0; g < written; g++) Assert.Equal(PageOf(1, g), greedy.ReadPage(g));
        }
        Assert.Equal("Running", greedy.Status);
        Assert.Equal(0, bystander.OutOfMemoryEvents);
    }

    [Fact]
    public void FailingSwapWritesLeavePagesInMemoryAndAreReported()
    {
        using var dir = new TempDir();
        FlakyStorage? flaky = null;
        using var host = new DEHost(new HostOptions
        {
            MemoryLimitBytes = 32 * 4096, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 1 << 20,
            SwapStorageFactory = (p, n) => flaky = new FlakyStorage(SwapFile.Create(p, n)),
        });
        // Every swap write fails from the start: the background reclaim, woken once free memory runs low, must find no
        // write that worked either (set after the first pages, it could have paged some out already).
        flaky!.FailWrites = 1000;
        var d = host.CreateDomain("d", 100 * 4096);
        for (long g = 0; g < 30; g++) d.WritePage(g, PageOf(1, g));
        var ex = Assert.Throws<DEException>(() => { for (long g = 30; g < 100; g++) d.WritePage(g, PageOf(1, g)); });
        Assert.Equal("HostOutOfMemory", ex.ErrorId);
        // The background reclaim keeps trying: taken while it is paused, the stats see no slot reserved for a write in flight.
        HostStats stats;
        using (host.Reclaimer!.Pause()) stats = host.GetStats();
        Assert.True(stats.SwapWriteFailures > 0);
        Assert.Contains("injected", stats.LastSwapWriteError);
        Assert.Equal(0, stats.SwapUsedBytes);
        flaky.FailWrites = 0;
        flaky.FailFlushes = 1; // a failed flush frees no frame either: that one fault fails, clearly
        int failures = 0;
        for (long g = 30; g < 100; g++)
        {
            try
            {
                d.WritePage(g, PageOf(1, g));
            }
            catch (DEException oom) when (oom.ErrorId == "HostOutOfMemory")
            {
                failures++;
                Assert.Contains("fdatasync", oom.Message);
                d.WritePage(g, PageOf(1, g)); // the next attempt pages out normally
            }
        }
        // The background reclaim thread may be the one that meets the failed flush: then no fault fails.
        Assert.InRange(failures, 0, 1);
        long before = host.GetStats().SwapWriteFailures;
        for (long g = 0; g < 100; g++) Assert.Equal(PageOf(1, g), d.ReadPage(g));
        Assert.True(before >= 2, $"{before} failures recorded: the injected writes and the injected flush");
    }

    /// <summary>
    /// A HostOutOfMemory named the last failed swap write as its cause for good, even once writes worked again and the
    /// swap file was simply full: only a failure no page-out has succeeded since is named (LastSwapWriteError keeps it).
    /// </summary>
    [Fact]
    public void AnOutOfMemoryNamesASwapWriteFailureOnlyWhileWritesFail()
    {
        using var dir = new TempDir();
        FlakyStorage? flaky = null;
        using var host = new DEHost(new HostOptions
        {
            MemoryLimitBytes = 32 * 4096, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 64 * 4096,
            SwapStorageFactory = (p, n) => flaky = new FlakyStorage(SwapFile.Create(p, n)),
        });
        flaky!.FailWrites = 1000;
        var d = host.CreateDomain("d", 200 * 4096);
        long g = 0;
        var failing = Assert.Throws<DEException>(() => { for (; g < 200; g++) d.WritePage(g, PageOf(2, g)); });
        Assert.Equal("HostOutOfMemory", failing.ErrorId);
        Assert.Contains("The last swap write failed: injected", failing.Message);
        flaky.FailWrites = 0;
        var full = Assert.Throws<DEException>(() => { for (; g < 200; g++) d.WritePage(g, PageOf(2, g)); });
        Assert.Equal("HostOutOfMemory", full.ErrorId);
        Assert.DoesNotContain("swap write failed", full.Message);
        Assert.Contains("injected", host.GetStats().LastSwapWriteError); // kept as history
    }

    [Fact]
    public void ACorruptedOrUnreadableSwapSlotIsAClearErrorNeverWrongBytes()
    {
        using var dir = new TempDir();
        FlakyStorage? flaky = null;
        string path = Path.Combine(dir.Path, "swap");
        using var host = new DEHost(new HostOptions
        {
            MemoryLimitBytes = 16 * 4096, SwapPath = path, SwapSizeBytes = 1 << 20,
            SwapStorageFactory = (p, n) => flaky = new FlakyStorage(SwapFile.Create(p, n)),
        });
        var d = host.CreateDomain("d", 64 * 4096);
        for (long g = 0; g < 64; g++) d.WritePage(g, PageOf(1, g));
        var victim = Enumerable.Range(0, 64).Select(g => d.GetPage(g)).First(p => p.State == PageState.Swapped);
        // Flip a bit in the file behind the engine's back (O_DIRECT writes have reached the file).
        using (var f = OpenSwapFile.Open(path))
        {
            f.Position = victim.SwapSlot!.Value * 4096 + 100;
            int b = f.ReadByte();
            f.Position--;
            f.WriteByte((byte)(b ^ 0x01));
        }
        var ex = Assert.Throws<DEException>(() => d.ReadPage(victim.Gfn));
        Assert.Equal("SwapIntegrityError", ex.ErrorId);
        Assert.Contains($"Page {victim.Gfn}", ex.Message);
        Assert.Equal(PageState.Swapped, d.GetPage(victim.Gfn).State);

        var other = Enumerable.Range(0, 64).Select(g => d.GetPage(g)).First(p => p.State == PageState.Swapped && p.Gfn != victim.Gfn);
        flaky!.FailReads = 1;
        Assert.Equal("SwapReadError", Assert.Throws<DEException>(() => d.ReadPage(other.Gfn)).ErrorId);
        Assert.Equal(PageState.Swapped, d.GetPage(other.Gfn).State);
        Assert.Equal(PageOf(1, other.Gfn), d.ReadPage(other.Gfn)); // the read works once the device does
    }
}
