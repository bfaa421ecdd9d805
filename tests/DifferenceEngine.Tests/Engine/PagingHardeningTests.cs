using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Paging;
using DifferenceEngine.Scanning;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Engine;

/// <summary>A swap storage whose flush can be held on command (a slow fdatasync), to hold a page-out in flight.</summary>
internal sealed class HoldingStorage(ISwapStorage inner) : ISwapStorage
{
    public volatile bool HoldFlush;
    public readonly ManualResetEventSlim FlushEntered = new(false);
    public readonly ManualResetEventSlim FlushRelease = new(false);
    public string Path => inner.Path;
    public long Length => inner.Length;
    public bool DirectIo => inner.DirectIo;
    public void Write(long offset, ReadOnlySpan<byte> page) => inner.Write(offset, page);
    public void Read(long offset, Span<byte> page) => inner.Read(offset, page);

    public void Flush()
    {
        if (HoldFlush)
        {
            HoldFlush = false;
            FlushEntered.Set();
            Assert.True(FlushRelease.Wait(TimeSpan.FromSeconds(60)), "flush never released");
        }
        inner.Flush();
    }

    public void Dispose() => inner.Dispose();
}

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class PagingHardeningTests(ITestOutputHelper output)
{
    private static byte[] PageOf(int domain, long gfn, int version = 0)
    {
        var p = new byte[4096];
        new Random(HashCode.Combine(domain, gfn, version)).NextBytes(p);
        return p;
    }

    private static DomainOptions GroupOptions() => new()
    {
        CompressionEnabled = true,
        CompressionAlgorithm = CompressionAlgorithm.LZ4,
        C4Sweeps = 1,
        GroupSize = 2,
        GroupAfterSweeps = 1,
        GroupAlgorithm = CompressionAlgorithm.LZ4,
    };

    /// <summary>
    /// A group page-out in flight (pieces written, fdatasync not returned) while the group dies and a new group of the
    /// same domain takes the recycled id and the same store handle: MoveToSwapLocked only compares id and handles, so it
    /// frees the new group's stream and points it at slots holding the old stream.
    /// </summary>
    [Fact]
    public void GroupPageOutInFlightDoesNotReplaceANewGroupThatReusedTheIdAndHandle()
    {
        using var dir = new TempDir();
        HoldingStorage? storage = null;
        using var host = new DEHost(new HostOptions
        {
            MemoryLimitBytes = 64L << 20, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 16L << 20,
            SwapStorageFactory = (p, n) => storage = new HoldingStorage(SwapFile.Create(p, n)),
        });
        var a = TestMemory.TextPages(2, 101);
        var b = TestMemory.TextPages(2, 202);
        var d = TestMemory.LoadRaw(host, dir, "vm", a, GroupOptions());
        host.Scan(options: new ScanOptions { UntilStable = true });
        uint id = d.GetPage(0).Group ?? throw new InvalidOperationException("page 0 was not grouped");
        Assert.Equal(id, d.GetPage(1).Group);
        ulong handle;
        lock (host.Groups.StripeLock(id)) handle = host.Groups.PieceLocked(id, 0);
        int oldLength = host.Groups.Describe(id)!.Value.Length;
        output.WriteLine($"old group {id}, piece {handle:x}, {host.Groups.Describe(id)}");

        storage!.HoldFlush = true;
        long moved = -1;
        var pager = new Thread(() => moved = host.Reclaimer!.PageOutGroups(long.MaxValue));
        pager.Start();
        Assert.True(storage.FlushEntered.Wait(TimeSpan.FromSeconds(60)), "group page-out never reached its flush");

        // The guest rewrites both members (the group dies), and passes group the new contents again.
        d.WritePage(0, b[0]);
        d.WritePage(1, b[1]);
        // Other blobs of the stream's size come and go meanwhile (a busy store during a slow fdatasync): the slab's 13-bit
        // generation comes round to the old piece's.
        int len = oldLength;
        int churned = 0;
        while (true)
        {
            Assert.True(host.Store.TryStore(new byte[len], out ulong h));
            host.Store.Free(h);
            churned++;
            if ((h & 0x1FFF) == 0x1FFF || churned > 20000) break;
        }
        output.WriteLine($"churned {churned} blobs");
        host.Scan(options: new ScanOptions { UntilStable = true });
        uint? id2 = d.GetPage(0).Group;
        ulong handle2 = 0;
        if (id2 is { } g2) lock (host.Groups.StripeLock(g2)) handle2 = host.Groups.PieceLocked(g2, 0);
        output.WriteLine($"new group {id2}, piece {handle2:x}, {(id2 is { } g ? host.Groups.Describe(g) : null)}");

        storage.FlushRelease.Set();
        pager.Join();
        output.WriteLine($"moved {moved} B; groups in swap {host.GetStats().PageGroupsInSwap}");
        Assert.Equal(b[0], d.ReadPage(0));
        Assert.Equal(b[1], d.ReadPage(1));
    }

    /// <summary>
    /// While a batch of pages was being written (slots reserved, fdatasync not returned), a snapshot's swap figures did
    /// not add up: SwapUsedBytes counted the reserved slots while the pages were still Private. It is now counted from the
    /// pages measured (swapped pages and group slots), and adds up while a page-out is in flight.
    /// </summary>
    [Fact]
    public void SwapUsedAddsUpWhileAPageOutIsInFlight()
    {
        using var dir = new TempDir();
        HoldingStorage? storage = null;
        using var host = new DEHost(new HostOptions
        {
            MemoryLimitBytes = 16 * 4096, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 1 << 20,
            SwapStorageFactory = (p, n) => storage = new HoldingStorage(SwapFile.Create(p, n)),
        });
        var d = host.CreateDomain("d", 64 * 4096);
        for (long g = 0; g < 12; g++) d.WritePage(g, PageOf(1, g));
        storage!.HoldFlush = true;
        var writer = new Thread(() => { for (long g = 12; g < 40; g++) d.WritePage(g, PageOf(1, g)); });
        writer.Start();
        Assert.True(storage.FlushEntered.Wait(TimeSpan.FromSeconds(60)), "no page-out reached its flush");
        var snapshot = host.TakeSnapshot(); // the page-out's slots are reserved, its pages still in frames
        storage.HoldFlush = false;
        storage.FlushRelease.Set();
        writer.Join();
        var s = snapshot.Host;
        long swapped = snapshot.Domains.Sum(x => x.SwappedPages);
        output.WriteLine($"in flight: SwapUsedBytes {s.SwapUsedBytes}, SwappedPages {swapped}, SwapGroupBytes {s.SwapGroupBytes}, FramesInUse {s.FramesInUse}");
        Assert.Equal(swapped * 4096 + s.SwapGroupBytes, s.SwapUsedBytes);
    }

    /// <summary>
    /// The frame pool checks frames + store against the limit, and the store checks store + frames, each under its own
    /// lock: a slab growth approved (its gate returned true) but not yet committed was not seen by a frame allocation,
    /// and both went through (one slab over the limit). The injected gate holds the growing thread between its check and
    /// its commit, as a preemption would: the store now grows under the frames' lock, and the frame waits for it.
    /// </summary>
    [Fact]
    public void FramesPlusStoreStayUnderTheLimitWhenAFrameAndASlabAreTakenTogether()
    {
        using var host = new DEHost(new HostOptions { MemoryLimitBytes = 8 * 4096 });
        var d = host.CreateDomain("d", 16 * 4096);
        for (long g = 0; g < 7; g++) d.WritePage(g, PageOf(1, g));
        var approved = new ManualResetEventSlim(false);
        var proceed = new ManualResetEventSlim(false);
        var gate = host.Store.GrowthGate!;
        int calls = 0;
        host.Store.GrowthGate = next =>
        {
            bool ok = gate(next);
            if (ok && Interlocked.Increment(ref calls) == 1)
            {
                approved.Set();
                proceed.Wait(TimeSpan.FromSeconds(60));
            }
            return ok;
        };
        bool stored = false;
        var grower = new Thread(() => stored = host.Store.TryStore(new byte[100], out _));
        grower.Start();
        Assert.True(approved.Wait(TimeSpan.FromSeconds(60)));
        Exception? fault = null;
        var faulting = new Thread(() => fault = Record.Exception(() => d.WritePage(7, PageOf(1, 7))));
        faulting.Start();
        SpinWait.SpinUntil(() => (faulting.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
        bool waited = faulting.IsAlive;
        proceed.Set();
        grower.Join();
        faulting.Join();
        Assert.True(waited, "the frame was taken while the store's growth was being decided");
        long total = host.Frames.FramesInUse * 4096 + host.Store.AllocatedBytes;
        output.WriteLine($"stored {stored}, fault {fault?.Message ?? "none"}, frames {host.Frames.FramesInUse}, store {host.Store.AllocatedBytes} B, total {total} of {8 * 4096}");
        Assert.True(total <= 8 * 4096, $"frames + store = {total} B, over the limit of {8 * 4096} B");
    }

    [Fact]
    public void AGroupMemberInSwapReadsBackOnAFullHost()
    {
        using var dir = new TempDir();
        using var host = new DEHost(new HostOptions { MemoryLimitBytes = 48 * 4096, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 48 * 4096 });
        var pages = TestMemory.TextPages(8, 303);
        var v = TestMemory.LoadRaw(host, dir, "vm", pages, GroupOptions());
        host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.True(v.GetPage(0).Group is not null, "page 0 was not grouped");
        Assert.True(host.Reclaimer!.PageOutGroups(long.MaxValue) > 0);
        Assert.True(host.GetStats().PageGroupsInSwap > 0);
        var greedy = host.CreateDomain("greedy", 256 * 4096);
        long written = 0;
        for (long g = 0; g < 256; g++)
        {
            try { greedy.WritePage(g, PageOf(2, g)); written++; }
            catch (DEException ex) when (ex.ErrorId == "HostOutOfMemory") { break; }
        }
        var s = host.GetStats();
        output.WriteLine($"greedy wrote {written}; frames {s.FramesInUse}, store {s.StoreAllocatedBytes}, swap used {s.SwapUsedBytes / 4096} of {s.SwapBytes / 4096}, groups in swap {s.PageGroupsInSwap}");
        // A swapped page of greedy reads back (exchange) ...
        long swapped = Enumerable.Range(0, (int)written).First(g => greedy.PeekState(g) == PageState.Swapped);
        Assert.Equal(PageOf(2, swapped), greedy.ReadPage(swapped));
        // ... and so must a page whose group is in the swap file.
        Assert.Equal(pages[0], v.ReadPage(0));
    }

    /// <summary>A domain removed, and then the host disposed, while a page-out of its pages is held in its flush: no slot
    /// or frame is left behind, and nothing throws.</summary>
    [Fact]
    public void RemovalAndDisposeDuringAPageOutLeaveNothingBehind()
    {
        using var dir = new TempDir();
        HoldingStorage? storage = null;
        var host = new DEHost(new HostOptions
        {
            MemoryLimitBytes = 16 * 4096, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 1 << 20,
            SwapStorageFactory = (p, n) => storage = new HoldingStorage(SwapFile.Create(p, n)),
        });
        var keep = host.CreateDomain("keep", 4 * 4096);
        for (long g = 0; g < 4; g++) keep.WritePage(g, PageOf(2, g));
        var d = host.CreateDomain("d", 64 * 4096);
        for (long g = 0; g < 10; g++) d.WritePage(g, PageOf(1, g));
        storage!.HoldFlush = true;
        Exception? writerError = null;
        var writer = new Thread(() =>
        {
            try { for (long g = 10; g < 64; g++) d.WritePage(g, PageOf(1, g)); }
            catch (Exception ex) { writerError = ex; }
        });
        writer.Start();
        Assert.True(storage.FlushEntered.Wait(TimeSpan.FromSeconds(60)));
        var remover = new Thread(() => host.RemoveDomain(d));
        remover.Start();
        storage.FlushRelease.Set();
        remover.Join();
        writer.Join();
        output.WriteLine($"writer: {writerError?.GetType().Name} {(writerError as DEException)?.ErrorId}");
        Assert.True(writerError is null or DEException { ErrorId: "DomainRemoved" or "DomainNotFound" }, writerError?.ToString());
        for (long g = 0; g < 4; g++) Assert.Equal(PageOf(2, g), keep.ReadPage(g));
        var s = host.GetStats();
        var swapped = host.TakeSnapshot().Domains.Sum(x => x.SwappedPages);
        output.WriteLine($"after removal: frames {s.FramesInUse}, swap used {s.SwapUsedBytes}, swapped pages {swapped}");
        Assert.Equal(swapped * 4096 + s.SwapGroupBytes, s.SwapUsedBytes);
        Assert.Equal(4 - swapped, s.FramesInUse);

        // Dispose while a page-out is held: it waits for it, and ends cleanly.
        var d2 = host.CreateDomain("d2", 64 * 4096);
        storage.FlushEntered.Reset();
        storage.FlushRelease.Reset();
        for (long g = 0; g < 8; g++) d2.WritePage(g, PageOf(3, g));
        storage.HoldFlush = true;
        Exception? writer2Error = null;
        var writer2 = new Thread(() =>
        {
            try { for (long g = 8; g < 64; g++) d2.WritePage(g, PageOf(3, g)); }
            catch (Exception ex) { writer2Error = ex; }
        });
        writer2.Start();
        Assert.True(storage.FlushEntered.Wait(TimeSpan.FromSeconds(60)));
        Exception? disposeError = null;
        var disposer = new Thread(() => { try { host.Dispose(); } catch (Exception ex) { disposeError = ex; } });
        disposer.Start();
        storage.FlushRelease.Set();
        Assert.True(disposer.Join(TimeSpan.FromSeconds(60)), "Dispose hung");
        writer2.Join();
        output.WriteLine($"dispose: {disposeError}; writer2: {(writer2Error as DEException)?.ErrorId ?? writer2Error?.GetType().Name}");
        Assert.Null(disposeError);
        Assert.True(writer2Error is null or DEException { ErrorId: "HostDisconnected" }, writer2Error?.ToString());
    }

    private static byte[] Random4K(int seed)
    {
        var p = new byte[4096];
        new Random(seed).NextBytes(p);
        return p;
    }

    /// <summary>Stops the reclaimer's background thread (without disposing it), so only the test's threads take its lock.</summary>
    private static void StopBackground(Reclaimer r)
    {
        var t = typeof(Reclaimer);
        t.GetField("_stopping", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.SetValue(r, true);
        ((AutoResetEvent)t.GetField("_wake", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(r)!).Set();
        ((Thread)t.GetField("_thread", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(r)!).Join();
    }

    /// <summary>
    /// A review of this session's first fix for the swap figures: a snapshot that held the reclaimer's lock while it
    /// measured (and measuring locks every Patched/Compressed page) deadlocked with a fault on a compressed page on a full
    /// host, which holds its page's lock and waits for the reclaimer's (AllocateFrame, ReclaimForFault). Snapshots hold no
    /// reclaimer lock now (the swap used is counted from the pages measured). Page 0's lock is held by the test to put the
    /// snapshot's walk at page 0 while the fault takes page 1; both must end.
    /// </summary>
    [Fact]
    public void SnapshotAndAFaultOnACompressedPageOnAFullHostDoNotDeadlock()
    {
        using var dir = new TempDir();
        var host = new DEHost(new HostOptions
        {
            MemoryLimitBytes = 32 * 4096, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 16 * 4096,
        });
        var d = host.CreateDomain("d", 256 * 4096, new DomainOptions
        {
            CompressionEnabled = true, CompressionAlgorithm = CompressionAlgorithm.LZ4, C4Sweeps = 1,
        });
        void Log(string m) => output.WriteLine(m);
        Log("start");
        var text = TestMemory.TextPages(2, 7);
        d.WritePage(0, text[0]);
        d.WritePage(1, text[1]);
        host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(PageState.Compressed, d.GetPage(0).State);
        Assert.Equal(PageState.Compressed, d.GetPage(1).State);
        Log("compressed");
        d.Policy.CompressionEnabled = false; // the background reclaimer's engine pass then has nothing to do
        var reclaimer = host.Reclaimer!;
        StopBackground(reclaimer);
        Log("background stopped");
        // Fill the host: frames to the limit, the swap file to its reserve.
        int written = 0;
        for (long g = 2; g < d.PageCount; g++)
        {
            try
            {
                d.WritePage(g, Random4K((int)g));
                written++;
            }
            catch (DEException ex) when (ex.ErrorId == "HostOutOfMemory")
            {
                break;
            }
        }
        output.WriteLine($"wrote {written} pages; frames free {host.Frames.FramesFree}, in use {host.Frames.FramesInUse}");
        Log($"filled {written}, free {host.Frames.FramesFree}");
        Assert.Equal(0, host.Frames.FramesFree);

        // Order the threads: the test holds page 0, so the snapshot stops at page 0 holding the reclaimer's lock.
        ulong e0 = d.Lock(0);
        Exception? snapError = null, faultError = null;
        var snap = new Thread(() => snapError = Record.Exception(() => host.TakeSnapshot())) { IsBackground = true };
        snap.Start();
        // A fault on compressed page 1: locks it, needs a frame, the host is full.
        var fault = new Thread(() => faultError = Record.Exception(() => d.ReadPage(1))) { IsBackground = true };
        fault.Start();
        Assert.True(SpinWait.SpinUntil(() =>
        {
            if (!fault.IsAlive) return true;
            if (!d.TryLock(1, out ulong e1)) return true; // the fault holds page 1
            d.Unlock(1, e1);
            return false;
        }, TimeSpan.FromSeconds(60)));
        Log($"fault holds page 1 (alive {fault.IsAlive})");
        d.Unlock(0, e0);
        bool snapEnded = snap.Join(TimeSpan.FromSeconds(30));
        bool faultEnded = fault.Join(TimeSpan.FromSeconds(30));
        Log($"snapshot ended {snapEnded} {snapError?.Message}, fault ended {faultEnded} {faultError?.Message}");
        if (snapEnded && faultEnded) host.Dispose(); // else its Dispose would wait for the stuck threads
        output.WriteLine($"snapshot ended {snapEnded} ({snapError?.Message ?? "ok"}), fault ended {faultEnded} ({faultError?.Message ?? "ok"})");
        Assert.True(snapEnded && faultEnded,
            $"deadlock: snapshot ended {snapEnded}, fault ended {faultEnded} (snapshot holds the reclaimer's lock and waits for page 1's lock; the fault holds page 1 and waits for the reclaimer's lock)");
    }
}
