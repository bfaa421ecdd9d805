using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// Groups of shared blobs: compressed shared frames whose pages stay cold as long as a page must before it is grouped are
/// compressed together; their pages keep naming their blobs, read back through the group, and a group that loses members
/// goes back to blobs of their own.
/// </summary>
public class SharedGroupingTests(ITestOutputHelper output)
{
    private static DomainOptions Options(int groupSize = 4, int groupAfterSweeps = 1, CompressionAlgorithm codec = CompressionAlgorithm.Zstd) => new()
    {
        SharingEnabled = true, CompressionEnabled = true, C4Sweeps = 1, GroupSize = groupSize, GroupAfterSweeps = groupAfterSweeps,
        GroupAlgorithm = codec,
    };

    /// <summary>Two clones of <paramref name="count"/> compressible pages (so each page's frame is shared by both).</summary>
    private static (Domain A, Domain B, byte[][] Pages) Clones(DEHost host, TempDir dir, int count, DomainOptions options)
    {
        var pages = Enumerable.Range(0, count).Select(SharedCompressionTests.Compressible).ToArray();
        var a = TestMemory.LoadRaw(host, dir, "a", pages, options);
        var b = TestMemory.LoadRaw(host, dir, "b", pages.Select(p => (byte[])p.Clone()).ToArray(), options);
        return (a, b, pages);
    }

    [Fact]
    public void GroupsOfSharedBlobsFollowTheirFirstSharingPagesNotTheOrderTheBlobsWereMade()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        // Grouped only once a's pages have stayed untouched for 9 sweeps: long after both rounds of blobs below are made.
        var (a, b, pages) = Clones(host, dir, 16, Options(groupAfterSweeps: 8));
        var one = new ScanOptions { Passes = 1, Parallelism = 1 };
        // Round one: the frames of pages 2-9 are compressed while b's copies of the others are read after every pass
        // (a frame is compressed only once every page sharing it is cold); round two: the others, a pass or more later.
        long[] late = [0, 1, 10, 11, 12, 13, 14, 15];
        for (int pass = 0; pass < 12 && a.GetPage(2).SharedBlob is null; pass++)
        {
            host.Scan(options: one);
            foreach (long g in late) b.ReadPage(g);
        }
        Assert.NotNull(a.GetPage(9).SharedBlob);
        Assert.Null(a.GetPage(0).SharedBlob);
        Assert.Null(a.GetPage(2).Group);
        var scan = host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 1 });
        foreach (var p in scan.PassResults)
            output.WriteLine($"pass {p.Pass}: shared frames compressed {p.SharedFramesCompressed}, shared blob groups {p.SharedBlobGroupsFormed} ({p.SharedBlobsGrouped} blobs)");
        // The blobs of the second round have the later ids: in id order, pages 2-5 would have made the first group.
        Assert.True(a.GetPage(0).SharedBlob > a.GetPage(9).SharedBlob, "the blobs' ids follow the pages' order: the test shows nothing");
        Assert.Equal(4, host.GetStats().SharedBlobGroups);
        // Grouped in the order of a's pages, which nominated them all in one pass: 0-3, 4-7, 8-11, 12-15, each in page order.
        for (int k = 0; k < 4; k++)
        {
            var first = a.GetPage(4 * k);
            Assert.NotNull(first.Group);
            for (int m = 0; m < 4; m++)
            {
                var info = a.GetPage(4 * k + m);
                Assert.Equal(first.Group, info.Group);
                Assert.Equal(m, info.GroupMember);
            }
        }
        for (long g = 0; g < 16; g++)
        {
            Assert.Equal(pages[g], a.ReadPage(g));
            Assert.Equal(pages[g], b.ReadPage(g));
        }
        TestMemory.AssertFrameAccounting(host);
    }

    [Fact]
    public void SharedFramesGroupedAtOnceByTwoWorkersFollowPageOrderAndReadBack()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        // Enough frames for SharedCompression to cut them into many chunks for its two workers; their pages are idle long
        // enough by the pass that compresses the frames for the workers to group the blobs at once, from the frames' bytes.
        const int count = 2048;
        var (a, b, pages) = Clones(host, dir, count, Options());
        long GroupedAfterThePhase() => host.GetStats().EngineTime.Single(t => t.Mechanism == "Grouping").Pages;
        var scan = host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 2 });
        foreach (var p in scan.PassResults)
            output.WriteLine($"pass {p.Pass}: shared frames compressed {p.SharedFramesCompressed}, shared blob groups {p.SharedBlobGroupsFormed} ({p.SharedBlobsGrouped} blobs)");
        // Every frame compressed in one pass, and every blob grouped in that same pass: by the workers that compressed them,
        // none nominated and grouped after the phase (the chunks hold a multiple of 4 runs here, so no run of a worker is
        // cut inside a group).
        var compressing = Assert.Single(scan.PassResults, p => p.SharedFramesCompressed > 0);
        Assert.Equal(count, compressing.SharedFramesCompressed);
        Assert.Equal(count, compressing.SharedBlobsGrouped);
        Assert.Equal(0, GroupedAfterThePhase());
        // Groups of 4 pages that follow one another in a's memory (a worker that takes another's chunks from the back groups
        // them backward), but where a worker's run of chunks ends: a group cut short there and the blobs so left alone,
        // whatever the two workers took.
        var members = new Dictionary<uint, List<long>>();
        for (long g = 0; g < count; g++)
        {
            var info = a.GetPage(g);
            Assert.NotNull(info.Group);
            if (!members.TryGetValue(info.Group.Value, out var list)) members[info.Group.Value] = list = [];
            list.Add(g);
        }
        int groups = members.Count, consecutive = members.Values.Count(l => l.Count == 4 && l.Max() - l.Min() == 3);
        output.WriteLine($"{groups} groups, {consecutive} of 4 consecutive pages");
        Assert.True(consecutive >= 4 * groups / 5, $"{consecutive} of {groups} groups hold 4 consecutive pages");
        for (long g = 0; g < count; g++)
        {
            Assert.Equal(pages[g], a.ReadPage(g));
            Assert.Equal(pages[g], b.ReadPage(g));
        }
        TestMemory.AssertFrameAccounting(host);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(63, 2)]
    [InlineData(64, 2)]
    [InlineData(1000, 1)]
    [InlineData(1000, 2)]
    [InlineData(1000, 3)]
    [InlineData(5000, 8)]
    public void SharedCompressionsWorkersTakeEveryRunOnceEachRunOfThemInPageOrder(int runs, int parallelism)
    {
        int chunks = Compression.SharedCompression.ChunkCount(runs, parallelism);
        int segments = Math.Min(parallelism, chunks);
        var cursors = Compression.SharedCompression.Cursors(chunks, segments);
        var visited = new int[runs];
        var taken = new List<(int Run, bool Cut)>[segments];
        Parallel.For(0, segments, new ParallelOptions { MaxDegreeOfParallelism = segments }, own =>
        {
            var mine = taken[own] = [];
            Compression.SharedCompression.Traverse(cursors, own, runs, chunks, (r, cut) =>
            {
                Interlocked.Increment(ref visited[r]);
                mine.Add((r, cut));
            });
        });
        Assert.All(visited, v => Assert.Equal(1, v));
        // Chunk k holds runs [k runs / chunks, (k + 1) runs / chunks): a worker is cut only at a chunk's first run (taken
        // forward) or last (backward), and never inside its own segment, which it takes forward from its first chunk.
        var chunkEdges = new HashSet<int>();
        for (int k = 0; k < chunks; k++)
        {
            chunkEdges.Add((int)((long)k * runs / chunks));
            chunkEdges.Add((int)((long)(k + 1) * runs / chunks) - 1);
        }
        for (int own = 0; own < segments; own++)
        {
            var mine = taken[own];
            if (mine.Count == 0) continue;
            Assert.True(mine[0].Cut);
            for (int i = 1; i < mine.Count; i++)
            {
                // Between two cuts the runs follow one another, forward or backward.
                if (!mine[i].Cut) Assert.Equal(1, Math.Abs(mine[i].Run - mine[i - 1].Run));
                else Assert.Contains(mine[i].Run, chunkEdges);
            }
            int ownFirst = (int)((long)(own * chunks / segments) * runs / chunks);
            int ownEnd = (int)((long)((own + 1) * chunks / segments) * runs / chunks);
            int prefix = 0;
            while (prefix < mine.Count && mine[prefix].Run >= ownFirst && mine[prefix].Run < ownEnd) prefix++;
            if (prefix > 0) Assert.Equal(1, mine.Take(prefix).Count(t => t.Cut));
        }
    }

    [Fact]
    public void ColdSharedBlobsAreGroupedAndReadBackThroughTheirGroup()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var (a, b, pages) = Clones(host, dir, 16, Options());
        var scan = host.Scan(options: new ScanOptions { UntilStable = true });
        foreach (var p in scan.PassResults)
            output.WriteLine($"pass {p.Pass}: shared frames compressed {p.SharedFramesCompressed}, shared blob groups {p.SharedBlobGroupsFormed} ({p.SharedBlobsGrouped} blobs), awaiting {p.PagesAwaitingGroup}");
        var stats = host.GetStats();
        Assert.Equal(16, stats.SharedCompressedFrames);
        Assert.Equal(4, stats.SharedBlobGroups);
        Assert.Equal(4, stats.PageGroups);
        Assert.Equal(16, scan.PassResults.Sum(p => p.SharedBlobsGrouped));
        // The pages had stayed untouched as long as a page must before grouping (C4Sweeps + GroupAfterSweeps = 2 sweeps) when
        // their frames were compressed: the blobs were grouped in that same pass (nominated as they were made).
        int made = scan.PassResults.ToList().FindIndex(p => p.SharedFramesCompressed > 0);
        int grouped = scan.PassResults.ToList().FindIndex(p => p.SharedBlobsGrouped > 0);
        Assert.Equal(made, grouped);
        Assert.Equal(made + 2, scan.PassResults.Count); // then one pass that changes nothing
        TestMemory.AssertFrameAccounting(host);
        Assert.Equal(0, host.PassBuffersMetadataBytes); // the pass's cold shared pages and nominations are gone with it

        var seen = new HashSet<(uint, int)>();
        for (long g = 0; g < 16; g++)
        {
            var info = a.GetPage(g);
            Assert.Equal(PageState.Compressed, info.State);
            Assert.NotNull(info.SharedBlob);
            Assert.NotNull(info.Group);
            Assert.True(seen.Add((info.Group!.Value, info.GroupMember!.Value)), "two blobs share a member of a group");
            Assert.Equal(info.SharedBlob, b.GetPage(g).SharedBlob);
            Assert.Equal(2, info.ReferenceCount);
            Assert.True(info.StoredBytes > 0);
        }
        // The group's stream took less than the blobs alone did.
        Assert.True(scan.PassResults.Sum(p => p.GroupStreamBytes) < scan.PassResults.Sum(p => p.GroupSinglesBytes));

        // Every page reads back (a's first: b's page still names the blob, now named once, until it too is read).
        for (long g = 0; g < 16; g++)
        {
            Assert.Equal(pages[g], a.ReadPage(g));
            TestMemory.AssertFrameAccounting(host);
        }
        for (long g = 0; g < 16; g++) Assert.Equal(pages[g], b.ReadPage(g));
        stats = host.GetStats();
        Assert.Equal(0, stats.SharedCompressedFrames);
        Assert.Equal(0, stats.PageGroups);
        Assert.Equal(0, stats.StoreBlobs);
        TestMemory.AssertFrameAccounting(host);
    }

    /// <summary>Blobs whose pages were not idle long enough when they were made are grouped by a later pass's sweep.</summary>
    [Fact]
    public void BlobsAreNotGroupedBeforeTheirPagesWereIdleLongEnough()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var (a, _, _) = Clones(host, dir, 8, Options(groupAfterSweeps: 6));
        // Enough passes to compress the shared frames, not enough for their pages to reach C4Sweeps + 6 idle sweeps.
        var early = host.Scan(options: new ScanOptions { Passes = 4 });
        Assert.Equal(8, host.GetStats().SharedCompressedFrames);
        Assert.Equal(0, host.GetStats().SharedBlobGroups);
        Assert.True(early.PassResults[^1].PagesAwaitingGroup >= 8, "pages naming blobs that await a group keep the passes going");
        Assert.Null(a.GetPage(0).Group);
        var rest = host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(2, host.GetStats().SharedBlobGroups);
        Assert.Equal(0, rest.PassResults[^1].PagesAwaitingGroup);
        TestMemory.AssertFrameAccounting(host);
    }

    /// <summary>
    /// An id given back during a pass is not handed out again before the pass ends (HoldRecycled): a nomination read
    /// earlier in the pass can never come to name another trust group's blob.
    /// </summary>
    [Fact]
    public void IdsGivenBackWhileHeldAreNotReusedUntilReleased()
    {
        using var store = new DifferenceEngine.Store.CompactStore();
        var table = new DifferenceEngine.Compression.SharedBlobTable();
        Assert.True(store.TryStore(new byte[] { 1, 2, 3 }, out ulong h1));
        uint first = table.Reserve();
        table.Publish(first, h1, 1);
        table.HoldRecycled();
        lock (table.StripeLock(first)) table.ReleaseLocked(first, store);
        uint during = table.Reserve();
        Assert.NotEqual(first, during);
        table.Abandon(during); // held too
        Assert.NotEqual(first, table.Reserve());
        table.ReleaseHeld();
        var after = new[] { table.Reserve(), table.Reserve() };
        Assert.Contains(first, after);
        Assert.Contains(during, after);
    }

    /// <summary>Two trust groups with the same cold shared content: each groups its own blobs, never the other's.</summary>
    [Fact]
    public void GroupsOfSharedBlobsNeverMixTrustGroups()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var pages = Enumerable.Range(0, 12).Select(SharedCompressionTests.Compressible).ToArray();
        DomainOptions In(string trust) => new()
        {
            SharingEnabled = true, CompressionEnabled = true, C4Sweeps = 1, GroupSize = 4, GroupAfterSweeps = 1, TrustGroup = trust,
        };
        var domains = new[] { ("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b") }
            .Select(x => TestMemory.LoadRaw(host, dir, x.Item1, pages.Select(p => (byte[])p.Clone()).ToArray(), In(x.Item2))).ToArray();
        host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(24, host.GetStats().SharedCompressedFrames); // each trust group its own 12
        Assert.Equal(6, host.GetStats().SharedBlobGroups);
        var groupsOf = domains.Select(d => Enumerable.Range(0, 12).Select(g => d.GetPage(g).Group!.Value).ToHashSet()).ToArray();
        Assert.Equal(groupsOf[0], groupsOf[2]);
        Assert.Equal(groupsOf[1], groupsOf[3]);
        Assert.Empty(groupsOf[0].Intersect(groupsOf[1]));
        TestMemory.AssertFrameAccounting(host); // the census checks every group's blobs come from one trust group
        foreach (var d in domains)
            for (long g = 0; g < 12; g++) Assert.Equal(pages[g], d.ReadPage(g));
    }

    [Fact]
    public void WithoutPageGroupsSharedBlobsStayAlone()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var (a, _, pages) = Clones(host, dir, 8, Options(groupSize: 0));
        host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(8, host.GetStats().SharedCompressedFrames);
        Assert.Equal(0, host.GetStats().PageGroups);
        Assert.Null(a.GetPage(3).Group);
        Assert.Equal(pages[3], a.ReadPage(3));
    }

    [Fact]
    public void AGroupThatLostMostOfItsBlobsGoesBackToBlobsOfTheirOwn()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var (a, b, pages) = Clones(host, dir, 4, Options());
        host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(1, host.GetStats().SharedBlobGroups);
        uint group = a.GetPage(0).Group!.Value;
        uint survivor = a.GetPage(3).SharedBlob!.Value;
        // Blobs 0-2 lose both their pages (written): their members leave; the group now holds more than blob 3 alone.
        for (long g = 0; g < 3; g++)
        {
            a.WritePage(g, new byte[] { 1 }, 10);
            b.WritePage(g, new byte[] { 2 }, 20);
        }
        Assert.Equal(group, a.GetPage(3).Group);
        TestMemory.AssertFrameAccounting(host);
        var pass = host.Scan(options: new ScanOptions { Passes = 1 });
        Assert.Equal(1, pass.PassResults[0].SharedBlobsUngrouped);
        Assert.Equal(1, pass.PassResults[0].GroupsDissolved);
        var info = a.GetPage(3);
        Assert.Equal(survivor, info.SharedBlob);
        Assert.Null(info.Group);
        Assert.Equal(0, host.GetStats().PageGroups);
        TestMemory.AssertFrameAccounting(host);
        Assert.Equal(pages[3], a.ReadPage(3));
        Assert.Equal(pages[3], b.ReadPage(3));
        var expected = (byte[])pages[1].Clone();
        expected[10] = 1;
        Assert.Equal(expected, a.ReadPage(1));
    }

    [Theory]
    [InlineData(CompressionAlgorithm.Zstd)]
    [InlineData(CompressionAlgorithm.LZ4)]
    public void ACorruptedGroupOfSharedBlobsIsRefusedNamingThePage(CompressionAlgorithm codec)
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var (a, b, pages) = Clones(host, dir, 8, Options(codec: codec));
        host.Scan(options: new ScanOptions { UntilStable = true });
        var info = b.GetPage(5);
        uint group = info.Group!.Value;
        lock (host.Groups.StripeLock(group)) host.Store.Get(host.Groups.PieceLocked(group, 0))[9] ^= 0x10;

        var ex = Assert.Throws<DEException>(() => b.ReadPage(5));
        output.WriteLine(ex.Message);
        Assert.Equal("PageIntegrityError", ex.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, ex.Kind);
        Assert.Contains("Page 5 of domain 'b'", ex.Message);
        Assert.Contains($"page group {group}", ex.Message);
        // Left as it was, and so is the other page that names the blob; pages of other groups read back.
        Assert.Equal(group, b.GetPage(5).Group);
        Assert.Throws<DEException>(() => a.ReadPage(5));
        for (long g = 0; g < 8; g++)
        {
            if (a.GetPage(g).Group == group) continue;
            Assert.Equal(pages[g], a.ReadPage(g));
        }
        // A pass neither dissolves nor reuses the corrupt group.
        host.Scan(options: new ScanOptions { Passes = 2 });
        Assert.Throws<DEException>(() => b.ReadPage(5));
    }

    [Fact]
    public void GroupsOfSharedBlobsPagedOutToSwapReadBack()
    {
        using var dir = new TempDir();
        using var host = new DEHost(new HostOptions { MemoryLimitBytes = 64L << 20, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 16L << 20 });
        var (a, b, pages) = Clones(host, dir, 12, Options());
        host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(3, host.GetStats().SharedBlobGroups);
        Assert.True(host.Reclaimer!.PageOutGroups(long.MaxValue) > 0);
        var stats = host.GetStats();
        Assert.Equal(3, stats.PageGroupsInSwap);
        Assert.Equal(0, stats.StoreBlobs);
        Assert.Equal(0, a.GetPage(0).StoredBytes); // a blob whose group is in the swap file holds no memory
        TestMemory.AssertFrameAccounting(host);
        for (long g = 0; g < 12; g++)
        {
            Assert.Equal(pages[g], b.ReadPage(g));
            Assert.Equal(pages[g], a.ReadPage(g));
        }
        Assert.Equal(0, host.GetStats().SwapUsedBytes);
        Assert.Equal(0, host.GetStats().PageGroups);
    }

    [Fact]
    public void RemovingTheDomainsReleasesTheGroups()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var (a, b, _) = Clones(host, dir, 8, Options());
        host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(2, host.GetStats().SharedBlobGroups);
        host.RemoveDomain(a);
        Assert.Equal(2, host.GetStats().SharedBlobGroups); // b's pages still name every blob
        TestMemory.AssertFrameAccounting(host);
        host.RemoveDomain(b);
        var stats = host.GetStats();
        Assert.Equal(0, stats.PageGroups);
        Assert.Equal(0, stats.SharedCompressedFrames);
        Assert.Equal(0, stats.StoreBlobs);
    }

    [Fact]
    public void BlobsThatDoNotPayInAGroupAreMarkedAndNotTriedAgain()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        // Random bytes over 16 symbols, a different 16 for each page: Zstd codes one page alone in 4 bits a byte, while a
        // group of four (one block, one code for all 64 symbols) needs 6: the group is larger than its blobs alone.
        var rng = new Random(3);
        var pages = Enumerable.Range(0, 8).Select(k =>
        {
            var p = new byte[4096];
            for (int i = 0; i < p.Length; i++) p[i] = (byte)(16 * k + rng.Next(16));
            return p;
        }).ToArray();
        var options = Options();
        var a = TestMemory.LoadRaw(host, dir, "a", pages, options);
        var b = TestMemory.LoadRaw(host, dir, "b", pages.Select(p => (byte[])p.Clone()).ToArray(), options);
        var scan = host.Scan(options: new ScanOptions { UntilStable = true, MaxPasses = 12 });
        foreach (var p in scan.PassResults)
            output.WriteLine($"pass {p.Pass}: shared frames compressed {p.SharedFramesCompressed}, groups refused {p.GroupsRefused}, awaiting {p.PagesAwaitingGroup}");
        Assert.True(scan.Stable, "the scan came to rest");
        Assert.Equal(8, host.GetStats().SharedCompressedFrames);
        Assert.Equal(0, host.GetStats().PageGroups);
        Assert.Equal(2, scan.PassResults.Sum(p => p.GroupsRefused));
        Assert.Equal(0, scan.PassResults[^1].PagesAwaitingGroup);
        Assert.Equal(pages[2], b.ReadPage(2));
        Assert.Equal(pages[2], a.ReadPage(2));
    }

    [Fact]
    public void APatchAgainstAGroupedReferenceReadsBack()
    {
        using var host = new DEHost(new HostOptions { SimilaritySeed = 1 });
        using var dir = new TempDir();
        var options = new DomainOptions
        {
            SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true, C4Sweeps = 1, GroupSize = 4, GroupAfterSweeps = 1,
        };
        // Four references, each shared by a and b and patched against by c; a page LZ4 takes to about two thirds, so the
        // patch pays for keeping its reference whole until all are cold.
        var rng = new Random(5);
        var references = Enumerable.Range(0, 4).Select(_ =>
        {
            var p = new byte[4096];
            rng.NextBytes(p.AsSpan(0, 2560));
            return p;
        }).ToArray();
        var similar = references.Select((p, i) =>
        {
            var s = (byte[])p.Clone();
            s[77 + i] ^= 0x5A;
            return s;
        }).ToArray();
        var a = TestMemory.LoadRaw(host, dir, "a", references, options);
        var b = TestMemory.LoadRaw(host, dir, "b", references.Select(p => (byte[])p.Clone()).ToArray(), options);
        var c = TestMemory.LoadRaw(host, dir, "c", similar, options);
        host.Scan(options: new ScanOptions { UntilStable = true, MaxPasses = 20 });
        TestMemory.AssertFrameAccounting(host);
        int onGroupedReference = 0;
        for (long g = 0; g < 4; g++)
        {
            var info = c.GetPage(g);
            output.WriteLine($"c:{g} {info.State} blob {info.SharedBlob}; a:{g} {a.GetPage(g).State} group {a.GetPage(g).Group}");
            if (info.State == PageState.Patched && info.SharedBlob is uint blob && a.GetPage(g) is { SharedBlob: var named, Group: not null } && named == blob)
                onGroupedReference++;
        }
        Assert.True(onGroupedReference > 0, "a patch's reference blob was grouped");
        for (long g = 0; g < 4; g++)
        {
            Assert.Equal(similar[g], c.ReadPage(g));
            TestMemory.AssertFrameAccounting(host);
        }
        for (long g = 0; g < 4; g++)
        {
            Assert.Equal(references[g], a.ReadPage(g));
            Assert.Equal(references[g], b.ReadPage(g));
        }
        Assert.Equal(0, host.GetStats().PageGroups);
    }
}
