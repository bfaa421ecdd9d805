using System.Runtime.InteropServices;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Qemu;
using DifferenceEngine.Scanning;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// Freed frames go back to the operating system, so that the memory the engine's process holds is the frames in use,
/// as the statistics say, not the most it ever held. Residency is asked of the kernel (mincore), page by page.
/// </summary>
public unsafe class FrameReleaseTests
{
    [Fact]
    public void ReleasedFramesAreNoLongerResidentAndReadAsZerosWhenTakenAgain()
    {
        using var pool = new FramePool(null);
        var frames = new uint[1024];
        for (int i = 0; i < frames.Length; i++)
        {
            Assert.True(pool.TryAllocate(out frames[i]));
            pool.Span(frames[i]).Fill((byte)(i | 1));
        }
        Assert.All(frames, f => Assert.True(Resident(pool, f)));

        var freed = frames.Where((_, i) => i % 3 != 0).ToArray();
        foreach (var f in freed) pool.Free(f);
        Assert.Equal(freed.Length, pool.FramesUnreleased);
        Assert.All(freed, f => Assert.True(Resident(pool, f))); // freed, but still held until released

        Assert.Equal(freed.Length, pool.ReleaseFree());
        Assert.Equal(0, pool.FramesUnreleased);
        Assert.Equal(0, pool.ReleaseFree()); // nothing left to give back
        Assert.All(freed, f => Assert.False(Resident(pool, f)));
        for (int i = 0; i < frames.Length; i += 3)
        {
            Assert.True(Resident(pool, frames[i]));
            Assert.True(pool.Span(frames[i]).IndexOfAnyExcept((byte)(i | 1)) < 0, $"frame {frames[i]} in use kept its bytes");
        }

        // Taken again, a released frame reads as zeros and is counted as in use, not as unreleased. Its free neighbour
        // after it (frames 1 and 2 are both freed, 3 is in use) is mapped with it: resident, free, reading as zeros.
        Assert.True(pool.TryAllocate(out uint again));
        Assert.Equal(frames[1], again);
        Assert.True(pool.Span(again).IndexOfAnyExcept((byte)0) < 0);
        int mapped = FramePool.PopulateSupported ? 1 : 0;
        Assert.Equal(mapped, pool.FramesUnreleased);
        Assert.Equal(mapped == 1, Resident(pool, frames[2]));
        Assert.True(pool.Span(frames[2]).IndexOfAnyExcept((byte)0) < 0);
        pool.Free(again);
        Assert.Equal(mapped + 1, pool.FramesUnreleased);
    }

    /// <summary>
    /// A released frame is mapped together with the released free frames right after it in its chunk (one
    /// MADV_POPULATE_WRITE for up to 64 frames, docs/PERFORMANCE.md, "Faults"): those stay free, now resident, and are
    /// taken next, without another call; the batch stops at a frame in use, at the chunk's end, and at what the limit
    /// leaves room for; the next release gives back what was mapped and not taken. Turned off, nothing is mapped ahead.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ATakenReleasedFrameIsMappedWithUpTo63FreeNeighboursTakenNext(bool batches)
    {
        if (!OperatingSystem.IsLinux()) return;
        using var pool = new FramePool(null) { PopulateBatches = batches };
        // A fresh pool: every frame counted released. The first take maps frames 0-63. (A fresh chunk's memory may have
        // been touched before it was the pool's, by whatever the allocator gave it to earlier: only what is mapped is
        // checked here, not what is not.)
        Assert.True(pool.TryAllocate(out uint first));
        Assert.Equal(0u, first);
        bool on = batches && FramePool.PopulateSupported;
        Assert.Equal(on ? 63 : 0, pool.FramesUnreleased);
        if (on) for (uint f = 1; f < 64; f++) Assert.True(Resident(pool, f), $"frame {f} not mapped with frame 0");
        // The next 63 takes are those frames, lowest first; the 65th maps 64-127.
        for (uint f = 1; f <= 64; f++)
        {
            Assert.True(pool.TryAllocate(out uint next));
            Assert.Equal(f, next);
            pool.Span(next).Fill((byte)(f | 1));
        }
        Assert.Equal(on ? 63 : 0, pool.FramesUnreleased);
        Assert.Equal(on ? 63 : 0, pool.ReleaseFree());

        // A frame in use stops the batch: the rest of the chunk taken, 200-299 freed but for 250, released, 200 taken.
        for (int i = 65; i < PageGeometry.FramesPerChunk; i++) Assert.True(pool.TryAllocate(out _));
        Assert.Equal(0, pool.FramesUnreleased);
        for (uint f = 200; f < 300; f++) if (f != 250) pool.Free(f);
        Assert.Equal(99, pool.ReleaseFree());
        Assert.True(pool.TryAllocate(out uint at200));
        Assert.Equal(200u, at200);
        Assert.Equal(on ? 49 : 0, pool.FramesUnreleased);
        for (uint f = 201; f < 250; f++) Assert.Equal(on, Resident(pool, f));
        for (int i = 0; i < 49; i++) Assert.True(pool.TryAllocate(out _)); // 201-249 (or, off, the same frames one at a time)
        Assert.Equal(0, pool.FramesUnreleased);

        // The chunk's end stops it too: frames 500-520 freed over two chunks, 500 taken, 501-511 mapped, not 512-520.
        for (int i = 0; i < PageGeometry.FramesPerChunk + 49; i++) Assert.True(pool.TryAllocate(out _)); // 251-299, then chunk 1
        Assert.Equal(2 * PageGeometry.FramesPerChunk, pool.FramesInUse + pool.FramesFree);
        pool.ReleaseFree();
        for (uint f = 500; f <= 520; f++) pool.Free(f);
        Assert.Equal(21, pool.ReleaseFree());
        Assert.True(pool.TryAllocate(out uint at500));
        Assert.Equal(500u, at500);
        Assert.Equal(on ? 11 : 0, pool.FramesUnreleased);
        Assert.False(Resident(pool, 512));
    }

    [Fact]
    public void TheBatchMapsNoMoreFramesThanTheLimitLeavesRoomFor()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var pool = new FramePool(10);
        Assert.True(pool.TryAllocate(out uint first));
        Assert.Equal(FramePool.PopulateSupported ? 9 : 0, pool.FramesUnreleased); // 10 in all: the 9 the limit still allows
        for (int i = 1; i < 10; i++) Assert.True(pool.TryAllocate(out _));
        Assert.False(pool.TryAllocate(out _));
        Assert.Equal(0, pool.FramesUnreleased);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ScatteredFramesAcrossChunksAreReleasedInBatchesAndFramesInUseKeepTheirBytes(bool vectored)
    {
        // 6,000 frames over 12 chunks, about half freed in runs of 1 to 7: thousands of ranges, many batches of ranges.
        bool? before = FramePool.VectoredRelease;
        if (!vectored) FramePool.VectoredRelease = false;
        try
        {
            using var pool = new FramePool(null);
            var frames = new uint[6000];
            for (int i = 0; i < frames.Length; i++)
            {
                Assert.True(pool.TryAllocate(out frames[i]));
                pool.Span(frames[i]).Fill((byte)(i * 7 | 1));
            }
            pool.ReleaseFree(); // the frames the last take mapped ahead of it, free
            var rng = new Random(25);
            var freed = new bool[frames.Length];
            for (int i = 0; i < frames.Length;)
            {
                int run = rng.Next(1, 8);
                bool free = rng.Next(2) == 0;
                for (int k = i; k < Math.Min(frames.Length, i + run); k++) freed[k] = free;
                i += run;
            }
            for (int i = 0; i < frames.Length; i++) if (freed[i]) pool.Free(frames[i]);
            int count = freed.Count(f => f);
            Assert.True(count > 2000);
            Assert.Equal(OperatingSystem.IsLinux() ? count : 0, pool.ReleaseFree());
            // Whether this kernel takes MADV_DONTNEED through process_madvise or not, the pool has found out (or was told).
            if (OperatingSystem.IsLinux()) Assert.True(vectored ? FramePool.VectoredRelease is not null : FramePool.VectoredRelease == false);
            for (int i = 0; i < frames.Length; i++)
            {
                if (freed[i]) Assert.False(Resident(pool, frames[i]) && OperatingSystem.IsLinux(), $"freed frame {frames[i]} still resident");
                else
                {
                    Assert.True(Resident(pool, frames[i]));
                    Assert.True(pool.Span(frames[i]).IndexOfAnyExcept((byte)(i * 7 | 1)) < 0, $"frame {frames[i]} in use lost its bytes");
                }
            }
        }
        finally
        {
            FramePool.VectoredRelease = before;
        }
    }

    /// <summary>
    /// A release of more frames than one slice (<see cref="FramePool.ReleaseSliceFrames"/>) gives them all back, and
    /// while it runs other threads take, write and free frames between its slices: every frame in use keeps its bytes,
    /// the counts add up, and a release with nothing else running gives back every free frame still held.
    /// </summary>
    [Fact]
    public void ReleasesInSlicesLetOtherThreadsTakeAndFreeFramesBetweenThemAndLoseNothing()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var pool = new FramePool(null) { PopulateBatches = false };
        const int count = 3 * FramePool.ReleaseSliceFrames + 100;
        var frames = new uint[count];
        for (int i = 0; i < count; i++) Assert.True(pool.TryAllocate(out frames[i]));
        for (int i = 0; i < count; i++) if (i % 7 != 0) pool.Free(frames[i]);
        var kept = new List<uint>();
        for (int i = 0; i < count; i += 7) { pool.Span(frames[i]).Fill(Mark(frames[i])); kept.Add(frames[i]); }
        long freed = count - (count + 6) / 7;
        Assert.Equal(freed, pool.ReleaseFree()); // single-threaded: every slice, all of them
        Assert.Equal(0, pool.FramesUnreleased);

        // Again, with frames held free over several slices and a second thread taking, writing and freeing frames all the
        // while (20,000 takes and frees of its own, whatever the machine's speed: the releases go on until it has done them).
        var again = new uint[count];
        for (int i = 0; i < count; i++) Assert.True(pool.TryAllocate(out again[i]));
        for (int i = 0; i < count; i++)
        {
            if (i % 3 == 0) { pool.Span(again[i]).Fill(Mark(again[i])); kept.Add(again[i]); }
            else pool.Free(again[i]);
        }
        Assert.True(pool.FramesUnreleased > 2 * FramePool.ReleaseSliceFrames);
        using var stop = new CancellationTokenSource();
        var churned = new List<uint>();
        Exception? failed = null;
        int operations = 0;
        var churn = new Thread(() =>
        {
            try
            {
                var mine = new Queue<uint>();
                var rng = new Random(28);
                while (!stop.IsCancellationRequested)
                {
                    Interlocked.Increment(ref operations);
                    if (mine.Count < 200 || rng.Next(2) == 0)
                    {
                        if (!pool.TryAllocate(out uint f)) continue;
                        pool.Span(f).Fill(Mark(f));
                        mine.Enqueue(f);
                    }
                    else
                    {
                        uint f = mine.Dequeue();
                        if (pool.Span(f).IndexOfAnyExcept(Mark(f)) >= 0) throw new InvalidOperationException($"frame {f} in use lost its bytes");
                        pool.Free(f);
                    }
                }
                churned.AddRange(mine);
            }
            catch (Exception ex)
            {
                failed = ex;
            }
        });
        churn.Start();
        while (Volatile.Read(ref operations) < 20_000 && churn.IsAlive) pool.ReleaseFree();
        stop.Cancel();
        churn.Join();
        Assert.Null(failed);
        foreach (uint f in kept.Concat(churned))
            Assert.True(pool.Span(f).IndexOfAnyExcept(Mark(f)) < 0, $"frame {f} in use lost its bytes");
        Assert.Equal(kept.Count + churned.Count, pool.FramesInUse);
        pool.ReleaseFree();
        Assert.Equal(0, pool.FramesUnreleased);
        Assert.Equal(pool.FramesInUse, ResidentFrames(pool, pool.FramesAllocated));
    }

    /// <summary>A frame's own fill byte, never zero (a page given back reads as zeros).</summary>
    private static byte Mark(uint frame) => (byte)(frame * 13 | 1);


    [Fact]
    public void EveryFreedFrameComesBackOnceAndADoubleFreeIsRefused()
    {
        using var pool = new FramePool(null);
        var frames = new uint[3000]; // more than a chunk's 512: the list crosses chunks
        for (int i = 0; i < frames.Length; i++)
        {
            Assert.True(pool.TryAllocate(out frames[i]));
            Assert.True(pool.IsInUse(frames[i]));
            Assert.Equal(1, pool.RefCount(frames[i]));
        }
        Assert.Equal(frames.Length, frames.Distinct().Count());
        foreach (uint f in frames.Where((_, i) => i % 2 == 0)) pool.Free(f);
        foreach (uint f in frames.Where((_, i) => i % 2 == 0)) Assert.False(pool.IsInUse(f)); // a free frame never reads as in use
        Assert.Throws<InvalidOperationException>(() => pool.Free(frames[0])); // it would be handed out twice
        Assert.Equal(frames.Length / 2, pool.FramesInUse);
        // Every freed frame comes back, once, before the pool grows.
        long allocated = pool.FramesAllocated;
        var again = new HashSet<uint>();
        for (int i = 0; i < frames.Length / 2; i++)
        {
            Assert.True(pool.TryAllocate(out uint f));
            Assert.True(again.Add(f));
        }
        Assert.True(again.SetEquals(frames.Where((_, i) => i % 2 == 0)));
        Assert.Equal(allocated, pool.FramesAllocated);
    }

    [Fact]
    public void AFrameTakesItsReferenceCountPast255AndBackThroughTheSideTable()
    {
        using var pool = new FramePool(null);
        Assert.True(pool.TryAllocate(out uint frame));
        Assert.True(pool.TryAllocate(out uint other));
        long metadata = pool.MetadataBytes;
        for (int n = 2; n <= 600; n++) Assert.Equal(n, pool.AddReference(frame));
        Assert.Equal(600, pool.RefCount(frame));
        Assert.Equal(1, pool.RefCount(other)); // its neighbour's byte untouched
        Assert.True(pool.MetadataBytes > metadata, "a count in the side table is counted");
        for (int n = 599; n >= 1; n--) Assert.Equal(n, pool.DropReference(frame));
        Assert.Equal(metadata, pool.MetadataBytes); // back in its byte: the side table's entry is gone
        pool.SetRefCount(frame, 1000);
        Assert.Equal(1000, pool.RefCount(frame));
        pool.SetRefCount(frame, 3);
        Assert.Equal(3, pool.RefCount(frame));
        Assert.Equal(metadata, pool.MetadataBytes);
        pool.SetRefCount(frame, 255);
        Assert.Equal(255, pool.RefCount(frame));
        pool.Free(frame); // freed with a wide count: its entry goes too, and its next life starts at 1
        Assert.Equal(metadata, pool.MetadataBytes);
        Assert.True(pool.TryAllocate(out uint again));
        Assert.Equal(frame, again);
        Assert.Equal(1, pool.RefCount(again));
        Assert.Equal(0, pool.DropReference(again));
        Assert.Throws<InvalidOperationException>(() => pool.DropReference(again));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.SetRefCount(other, 0));
    }

    [Fact]
    public void FramesStillHeldAreTakenFirstLowestNumberFirstThenReleasedOnes()
    {
        using var pool = new FramePool(null);
        var frames = new uint[1200];
        for (int i = 0; i < frames.Length; i++) Assert.True(pool.TryAllocate(out frames[i]));
        Assert.Equal(Enumerable.Range(0, frames.Length).Select(i => (uint)i), frames); // a fresh pool hands out 0, 1, 2...
        pool.ReleaseFree(); // the frames the last take mapped ahead of it (1200-1215), free
        foreach (uint f in new uint[] { 700, 5, 1100, 64, 63 }) pool.Free(f);
        Assert.True(pool.ReleaseFree() == 5 || !OperatingSystem.IsLinux());
        foreach (uint f in new uint[] { 900, 3 }) pool.Free(f); // still held: these come first, lowest first
        var taken = new uint[7];
        for (int i = 0; i < taken.Length; i++) Assert.True(pool.TryAllocate(out taken[i]));
        uint[] expected = OperatingSystem.IsLinux() ? [3, 900, 5, 63, 64, 700, 1100] : [3, 5, 63, 64, 700, 900, 1100];
        Assert.Equal(expected, taken);
        Assert.Equal(0, pool.FramesUnreleased);
        Assert.True(pool.TryAllocate(out uint next));
        Assert.Equal((uint)frames.Length, next); // then the rest of the last chunk
    }

    /// <summary>
    /// Random takes, frees, reference changes and releases against a model of the pool: every frame handed out is the one
    /// the model says (the lowest free frame still held, else the lowest released one, mapped with up to 63 released free
    /// neighbours after it in its chunk, which are then held), the counts agree after every step, and no frame in use is
    /// ever given back to the system (its bytes, a pattern of its own, survive every release).
    /// </summary>
    [Theory]
    [InlineData(1, true)]
    [InlineData(2, true)]
    [InlineData(3, false)]
    public void ThePoolAgreesWithAModelThroughRandomTakesFreesAndReleases(int seed, bool batches)
    {
        using var pool = new FramePool(null) { PopulateBatches = batches };
        var rng = new Random(seed);
        var inUse = new Dictionary<uint, int>(); // frame -> reference count
        var held = new SortedSet<uint>(); // free frames whose memory the process holds
        var released = new SortedSet<uint>(); // free frames given back (or never touched)
        uint frames = 0;
        for (int step = 0; step < 20_000; step++)
        {
            int op = rng.Next(100);
            if (op < 45 || inUse.Count == 0)
            {
                Assert.True(pool.TryAllocate(out uint f));
                Assert.False(inUse.ContainsKey(f), $"frame {f} handed out while in use");
                if (held.Count > 0) Assert.Equal(held.Min, f); // a frame still held is taken before any released one
                else
                {
                    if (released.Count == 0) // a new chunk, every frame of it released
                        for (int k = 0; k < PageGeometry.FramesPerChunk; k++) released.Add(frames++);
                    Assert.Equal(released.Min, f);
                    if (batches && FramePool.PopulateSupported)
                        for (uint n = f + 1; n <= f + 63 && n % PageGeometry.FramesPerChunk != 0 && released.Remove(n);) held.Add(n++);
                }
                held.Remove(f);
                released.Remove(f);
                inUse[f] = 1;
                pool.Span(f).Fill((byte)(f * 7 + 1));
            }
            else if (op < 80)
            {
                uint f = inUse.Keys.ElementAt(rng.Next(inUse.Count));
                if (rng.Next(4) == 0)
                {
                    int n = inUse[f] + rng.Next(1, 300);
                    pool.SetRefCount(f, n);
                    inUse[f] = n;
                }
                else if (inUse[f] > 1) inUse[f] = pool.DropReference(f);
                else
                {
                    Assert.Equal(0, pool.DropReference(f));
                    pool.Free(f);
                    inUse.Remove(f);
                    held.Add(f);
                }
            }
            else if (op < 83)
            {
                long given = pool.ReleaseFree();
                Assert.Equal(OperatingSystem.IsLinux() ? held.Count : 0, given);
                if (OperatingSystem.IsLinux())
                {
                    released.UnionWith(held);
                    held.Clear();
                }
            }
            else
            {
                uint f = inUse.Keys.ElementAt(rng.Next(inUse.Count));
                Assert.Equal(inUse[f], pool.RefCount(f));
            }
            Assert.Equal(inUse.Count, pool.FramesInUse);
            Assert.Equal(held.Count, pool.FramesUnreleased);
        }
        pool.ReleaseFree();
        foreach (var (f, n) in inUse)
        {
            Assert.Equal(n, pool.RefCount(f));
            Assert.True(pool.IsInUse(f));
            Assert.True(pool.Span(f).IndexOfAnyExcept((byte)(f * 7 + 1)) < 0, $"frame {f} in use lost its bytes");
        }
    }

    [Fact]
    public void AfterAScanTheProcessHoldsExactlyTheFramesInUse()
    {
        using var host = new DEHost(new HostOptions());
        var rng = new Random(3);
        var library = Enumerable.Range(0, 32).Select(_ => TestMemory.RandomPage(rng)).ToArray();
        var options = new DomainOptions { SharingEnabled = true };
        for (int d = 0; d < 3; d++)
        {
            var domain = host.CreateDomain($"d{d}", 2048L * 4096, options);
            for (int g = 0; g < 2048; g++) domain.WritePage(g, g % 4 == 0 ? TestMemory.RandomPage(rng) : library[g % library.Length]);
        }
        long before = host.GetStats().FramesInUse;
        host.Scan(options: new ScanOptions { UntilStable = true });
        var stats = host.GetStats();
        Assert.True(stats.FramesInUse < before / 2, $"sharing freed frames: {before} -> {stats.FramesInUse}");
        Assert.Equal(0, host.Frames.FramesUnreleased);
        Assert.Equal(stats.FramesInUse, ResidentFrames(host.Frames, stats.FramesAllocated));
    }

    /// <summary>
    /// A cancelled pass gives back what a finished one does: the unstable table's block, held only during a pass, and the
    /// memory of the frames it freed (until session 19 both stayed held until the next pass, or for good).
    /// </summary>
    [Fact]
    public void ACancelledPassGivesBackTheUnstableTableAndTheFramesItFreed()
    {
        using var host = new DEHost(new HostOptions());
        using var dir = new TempDir();
        var rng = new Random(5);
        // Every other page of the first 256 is zero (merged, its frame freed), the next 256 come in identical pairs (listed
        // in the unstable table: each has a twin), the rest distinct.
        var pages = new byte[1024][];
        for (int i = 0; i < pages.Length; i++)
            pages[i] = i < 256 ? (i % 2 == 0 ? new byte[4096] : TestMemory.RandomPage(rng))
                : i < 512 && i % 2 == 1 ? (byte[])pages[i - 1].Clone() : TestMemory.RandomPage(rng);
        var d = TestMemory.LoadRaw(host, dir, "a", pages, new DomainOptions { SharingEnabled = true });
        var index = host.SharingIndexFor(d.Policy.TrustGroup);
        long unstableDuring = -1, unreleasedDuring = -1;
        // Cancelled as its sharing phase ends, the tables still held (compression gives them back as it begins).
        ScanCancelledAt(host, "share", new ScanOptions { SliceSize = 64, Parallelism = 1 }, () =>
        {
            unstableDuring = index.Unstable.MetadataBytes;
            unreleasedDuring = host.Frames.FramesUnreleased;
        });
        Assert.True(unstableDuring > 0, $"the unstable table held {unstableDuring} bytes during the pass");
        Assert.True(unreleasedDuring > 0, $"{unreleasedDuring} frames freed and held during the pass");
        Assert.Equal(0, index.Unstable.MetadataBytes);
        Assert.Equal(0, host.Frames.FramesUnreleased);
        // The next pass runs as after any other: every zero page found, the frames add up, no page changed.
        host.Scan();
        Assert.Equal(128, TestMemory.Census([d]).Zero);
        TestMemory.AssertFrameAccounting(host);
        var back = TestMemory.ReadAll(d);
        for (int i = 0; i < pages.Length; i++) Assert.True(back[i].AsSpan().SequenceEqual(pages[i]), $"page {i} changed");
    }

    [Fact]
    public void APassCancelledAfterItsSweepGivesBackItsFiltersAndTables()
    {
        using var host = new DEHost(new HostOptions());
        using var dir = new TempDir();
        var pages = TestMemory.PlantedImage(1024, 3);
        var options = new DomainOptions { SharingEnabled = true, PatchingEnabled = true };
        var d = TestMemory.LoadRaw(host, dir, "a", pages, options);
        var index = host.SharingIndexFor(d.Policy.TrustGroup);
        host.Scan(options: new ScanOptions { Passes = 2 }); // shared frames for the stable table, pages examined for patching
        long twinsDuring = -1, keysDuring = -1, stableDuring = -1, otherTablesDuring = -1;
        ScanCancelledAt(host, "sweep", new ScanOptions { SliceSize = 64, Parallelism = 2 }, () =>
        {
            twinsDuring = index.Twins.MetadataBytes;
            keysDuring = index.SimilarKeys.MetadataBytes;
            stableDuring = index.Stable.MetadataBytes;
            otherTablesDuring = index.Unstable.MetadataBytes + index.Similar.MetadataBytes;
        });
        Assert.True(twinsDuring > 0 && keysDuring > 0 && stableDuring > 0,
            $"after the sweep: twin filter {twinsDuring} B, key filter {keysDuring} B, stable table {stableDuring} B");
        // The unstable and similarity tables take their room only when the steps that fill them begin, not in the sweep.
        Assert.Equal(0, otherTablesDuring);
        Assert.False(index.Twins.Active);
        Assert.False(index.SimilarKeys.Active);
        Assert.Equal(0, index.MetadataBytes);
        Assert.Equal(0, host.GetStats().Metadata.PassBuffers);
        // The next passes run as after any other: nothing changed.
        host.Scan(options: new ScanOptions { UntilStable = true });
        TestMemory.AssertFrameAccounting(host);
        var back = TestMemory.ReadAll(d);
        for (int i = 0; i < pages.Length; i++) Assert.True(back[i].AsSpan().SequenceEqual(pages[i]), $"page {i} changed");
    }

    /// <summary>
    /// Runs a scan that is cancelled as its first pass's <paramref name="phase"/> ends, once <paramref name="atPhase"/> has
    /// looked at the host there (DEHost.PassPhaseHook, on the pass's thread), and checks that it ends cancelled.
    /// </summary>
    private static void ScanCancelledAt(DEHost host, string phase, ScanOptions options, Action atPhase)
    {
        using var cts = new CancellationTokenSource();
        host.PassPhaseHook = p =>
        {
            if (p != phase || cts.IsCancellationRequested) return;
            atPhase();
            cts.Cancel();
        };
        try
        {
            Assert.ThrowsAny<OperationCanceledException>(() => host.Scan(options: options, cancellationToken: cts.Token));
        }
        finally
        {
            host.PassPhaseHook = null;
        }
    }

    private static bool Resident(FramePool pool, uint frame)
    {
        byte v;
        Assert.Equal(0, LinuxNative.Mincore(pool.Address(frame), 4096, &v));
        return (v & 1) != 0;
    }

    private static long ResidentFrames(FramePool pool, long framesAllocated)
    {
        long n = 0;
        for (uint f = 0; f < framesAllocated; f++) if (Resident(pool, f)) n++;
        return n;
    }
}

/// <summary>Frames of memory the pool does not own (a QEMU guest's RAM): numbered like its own, never handed out.</summary>
public unsafe class ExternalFrameTests
{
    private sealed class Owner : FramePool.IExternalOwner
    {
        public readonly List<long> Given = [];
        public void Released(long index) => Given.Add(index);
    }

    [Fact]
    public void ExternalFramesAreTheOwnersMemoryInUseOnlyWhenTakenAndGoBackToTheOwner()
    {
        const int frames = 700; // more than a chunk, not a whole number of them
        byte* memory = (byte*)NativeMemory.AlignedAlloc(2 * PageGeometry.ChunkBytes, 4096);
        try
        {
            var owner = new Owner();
            using (var pool = new FramePool(null))
            {
                Assert.True(pool.TryAllocate(out uint own));
                uint first = pool.AddExternal(memory, frames, owner);
                Assert.Equal(0, pool.FramesAllocated - PageGeometry.FramesPerChunk); // only the pool's own chunk
                long freeBefore = pool.FramesFree;

                pool.TakeExternal(first + 600);
                Assert.True(pool.IsExternal(first + 600));
                Assert.False(pool.IsExternal(own));
                Assert.True(pool.IsInUse(first + 600));
                Assert.Equal(2, pool.FramesInUse);
                Assert.Equal(freeBefore, pool.FramesFree); // an external frame in use takes none of the pool's own
                pool.Span(first + 600).Fill(0x5A);
                Assert.Equal(0x5A, memory[600L * 4096 + 17]); // the frame is the owner's memory, in place

                // The pool hands out only its own frames, however many are taken.
                for (int i = 0; i < 3 * PageGeometry.FramesPerChunk; i++)
                {
                    Assert.True(pool.TryAllocate(out uint f));
                    Assert.False(pool.IsExternal(f));
                }

                pool.Free(first + 600);
                Assert.Equal([600L], owner.Given);
                Assert.False(pool.IsInUse(first + 600));

                pool.TakeExternal(first + 3);
                pool.ForgetExternal(first + 3); // let go without telling the owner: the page stays
                Assert.Equal([600L], owner.Given);
            }
            Assert.Equal(0x5A, memory[600L * 4096 + 17]); // disposing the pool neither wipes nor frees the owner's memory
        }
        finally
        {
            NativeMemory.AlignedFree(memory);
        }
    }
}
