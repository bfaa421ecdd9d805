using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;
using DifferenceEngine.Sharing;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// The pass's twin filter (<see cref="TwinFilter"/>): a page goes into the unstable table only when another page of the pass
/// may match it, and no page with a twin is ever left out.
/// </summary>
public sealed class TwinFilterTests
{
    /// <summary>Distinct 64-bit values, the same every run (SplitMix64 of the index).</summary>
    private static ulong Value(long i)
    {
        ulong z = (ulong)i * 0x9E3779B97F4A7C15UL + 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    [Fact]
    public void EveryValueMarkedTwiceMayHaveATwinAndMostMarkedOnceHaveNone()
    {
        using var filter = new TwinFilter();
        const int Items = 10_000, Twins = 1_000;
        filter.Begin(Items + Twins);
        for (int i = 0; i < Items; i++) filter.Mark(Value(i));
        for (int i = 0; i < Twins; i++) filter.Mark(Value(i));
        filter.EndMarking();
        for (int i = 0; i < Twins; i++) Assert.True(filter.MayHaveTwin(Value(i)), $"value {i}, marked twice, said to have no twin");
        int falsePositives = 0;
        for (int i = Twins; i < Items; i++) if (filter.MayHaveTwin(Value(i))) falsePositives++;
        // 11,000 values in 88,000 buckets, two each: both buckets of a value marked once are marked by others about 5% of
        // the time ((1 - e^(-1/4))^2).
        Assert.InRange(falsePositives, 1, (Items - Twins) * 8 / 100);
    }

    [Fact]
    public void TwoThreadsMarkingTheSameValuesLeaveEveryOneATwin()
    {
        using var filter = new TwinFilter();
        const int Items = 20_000;
        filter.Begin(2 * Items);
        using var start = new Barrier(2);
        var threads = Enumerable.Range(0, 2).Select(_ => new Thread(() =>
        {
            start.SignalAndWait();
            for (int i = 0; i < Items; i++) filter.Mark(Value(i));
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        for (int i = 0; i < Items; i++) Assert.True(filter.MayHaveTwin(Value(i)), $"value {i}");
    }

    [Fact]
    public void NotActiveEveryValueMayHaveATwinAndNothingIsHeld()
    {
        using var filter = new TwinFilter();
        Assert.False(filter.Active);
        Assert.True(filter.MayHaveTwin(Value(1)));
        filter.Mark(Value(1)); // ignored: no pass
        Assert.Equal(0, filter.MetadataBytes);

        filter.Begin(1000);
        Assert.True(filter.Active);
        long full = filter.MetadataBytes;
        Assert.Equal(2 * 8000 / 8, full); // 1,000 items, 8 buckets each: 8,000 buckets, two bits each
        filter.Mark(Value(1));
        filter.EndMarking();
        Assert.Equal(full / 2, filter.MetadataBytes);
        filter.Mark(Value(1)); // after marking: ignored
        Assert.False(filter.MayHaveTwin(Value(1)));

        filter.End();
        Assert.False(filter.Active);
        Assert.Equal(0, filter.MetadataBytes);
        Assert.True(filter.MayHaveTwin(Value(1)));
    }

    [Fact]
    public void APassListsOnlyPagesWithAPossibleTwinAndStillSharesEveryTwin()
    {
        // 4,096 distinct random pages and 64 pairs of identical ones, shuffled: before the filter the unstable table held
        // every one of them; now about the pairs and the pages whose bucket another shares.
        const int Unique = 4096, Pairs = 64;
        var image = UniquePagesAndPairs(7, Unique, Pairs, p => (byte[])p.Clone());
        using var host = new DEHost();
        using var dir = new TempDir();
        var options = new DomainOptions { SharingEnabled = true };
        var domain = TestMemory.LoadRaw(host, dir, "a", image, options);
        var index = host.SharingIndexFor(domain.Policy.TrustGroup);
        long tablesInCompression = -1;
        bool filterInCompression = true;
        // Progress comes from the pass's last phase, compression: the unstable table and the filter are given back by then.
        var result = host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 2, SliceSize = 256 }, progress: _ =>
        {
            tablesInCompression = Math.Max(tablesInCompression, index.Unstable.MetadataBytes + index.Similar.MetadataBytes + index.Twins.MetadataBytes);
            filterInCompression &= index.Twins.Active;
        });
        Assert.True(result.Stable);
        var census = TestMemory.Census(host.Domains);
        Assert.Equal(2 * Pairs, census.Shared);
        Assert.Equal(Pairs, census.DistinctSharedFrames);
        Assert.Equal(0, tablesInCompression);
        Assert.False(filterInCompression);

        // Every page listed, as before the filter: at least 16 B a slot for each of the 4,224 pages. Now the filter (2 B a
        // page) and the pairs, and the few pages both of whose buckets others marked.
        AssertHeldUnderHalf(host, m => m.SharingUnstable, (long)(Unique + 2 * Pairs) * 16, "the unstable table and filter");
        AssertNothingLost(host, domain, image);
    }

    [Fact]
    public void APassListsReferencesOnlyUnderKeysAnotherPageHasAndStillPatchesEveryPair()
    {
        // 2,048 distinct random pages and 64 pairs of pages that differ in 16 bytes: before the key filter every page was
        // listed under both its keys; now about the pairs' keys and those whose bucket another key shares.
        const int Unique = 2048, Pairs = 64;
        var image = UniquePagesAndPairs(11, Unique, Pairs, p => Changed(p, 2000, 0x5A));
        using var host = new DEHost(new HostOptions { SimilaritySeed = 5 });
        using var dir = new TempDir();
        var domain = TestMemory.LoadRaw(host, dir, "a", image, new DomainOptions { SharingEnabled = true, PatchingEnabled = true });
        var result = host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 2, SliceSize = 256 });
        Assert.True(result.Stable);
        // One page of every pair patched against the other (a page's two keys: the 16 bytes changed lie in one block at most).
        Assert.Equal(Pairs, TestMemory.Census(host.Domains).Patched);

        AssertHeldUnderHalf(host, m => m.Similarity, (long)(Unique + 2 * Pairs) * host.Policy.SimilarityKeys * 16,
            "the similarity table and filter");
        AssertNothingLost(host, domain, image);
    }

    [Fact]
    public void APassWhereNoPageMayBePatchedListsNoReference()
    {
        // A new host's first pass: no page was examined before, so none may be patched, and no reference is listed (every
        // page with a key in common with another was, before). The next pass lists the pairs' references and patches them.
        var image = UniquePagesAndPairs(13, 256, 16, p => Changed(p, 3000, 0x33));
        using var host = new DEHost(new HostOptions { SimilaritySeed = 5 });
        using var dir = new TempDir();
        var domain = TestMemory.LoadRaw(host, dir, "a", image, new DomainOptions { SharingEnabled = true, PatchingEnabled = true });
        var first = host.Scan(options: new ScanOptions { Passes = 1, Parallelism = 1 });
        Assert.Equal(0, first.PassResults[0].ReferencesListed);
        Assert.Equal(0, host.GetStats().MetadataPeak.Similarity);
        var next = host.Scan(options: new ScanOptions { Passes = 1, Parallelism = 1 });
        Assert.True(next.PassResults[0].ReferencesListed >= 16, $"{next.PassResults[0].ReferencesListed} references listed");
        Assert.Equal(16, next.PassResults[0].PagesPatched);
        AssertNothingLost(host, domain, image);
    }

    [Fact]
    public void OnlyATrustGroupWhereAPageMayBePatchedListsReferencesAndADomainNotScannedStillServes()
    {
        var rng = new Random(17);
        var reference = TestMemory.RandomPage(rng);
        var other = TestMemory.RandomPage(rng);
        var patching = new DomainOptions { SharingEnabled = true, PatchingEnabled = true, C4Sweeps = 1, TrustGroup = "g1" };
        using var host = new DEHost(new HostOptions { SimilaritySeed = 5 });
        using var dir = new TempDir();
        var served = TestMemory.LoadRaw(host, dir, "served", [reference], patching);
        var patched = TestMemory.LoadRaw(host, dir, "patched", [Changed(reference, 1000, 0x21)], patching);
        // Another trust group whose domain shares but does not patch, with a pair of similar pages of its own.
        var sharing = TestMemory.LoadRaw(host, dir, "sharing", [other, Changed(other, 1000, 0x21)],
            new DomainOptions { SharingEnabled = true, C4Sweeps = 1, TrustGroup = "g2" });
        host.Scan(options: new ScanOptions { Passes = 1, Parallelism = 1 }); // every page examined once: none patched yet
        var g1 = host.SharingIndexFor("g1");
        var g2 = host.SharingIndexFor("g2");
        long g1Candidates = -1, g2Candidates = -1, g1Table = -1, g2Table = -1;
        host.PassPhaseHook = phase =>
        {
            if (phase != "list") return;
            (g1Candidates, g2Candidates) = (Math.Max(g1Candidates, g1.PassCandidates), Math.Max(g2Candidates, g2.PassCandidates));
            (g1Table, g2Table) = (Math.Max(g1Table, g1.Similar.MetadataBytes), Math.Max(g2Table, g2.Similar.MetadataBytes));
        };
        // The domain "served" is not scanned: its page only serves, listed as a reference of its trust group.
        host.Scan([patched, sharing], options: new ScanOptions { UntilStable = true, Parallelism = 1 });
        host.PassPhaseHook = null;
        Assert.Equal(1, g1Candidates);
        Assert.True(g1Table > 0, "g1 listed no reference");
        Assert.Equal(0, g2Candidates);
        Assert.Equal(0, g2Table);
        Assert.Equal(PageState.Patched, patched.GetPage(0).State);
        Assert.Equal("served", patched.GetPage(0).ReferenceDomain);
        Assert.Equal(PageState.Private, sharing.GetPage(0).State);
        Assert.Equal(PageState.Private, sharing.GetPage(1).State);
        AssertNothingLost(host, patched, [Changed(reference, 1000, 0x21)]);
        Assert.Equal(reference, served.ReadPage(0));
    }

    /// <summary>Distinct random pages and pairs (a random page and what <paramref name="second"/> makes of it), shuffled.</summary>
    private static byte[][] UniquePagesAndPairs(int seed, int unique, int pairs, Func<byte[], byte[]> second)
    {
        var rng = new Random(seed);
        var pages = new List<byte[]>();
        for (int i = 0; i < unique; i++) pages.Add(TestMemory.RandomPage(rng));
        for (int i = 0; i < pairs; i++)
        {
            var p = TestMemory.RandomPage(rng);
            pages.Add(p);
            pages.Add(second(p));
        }
        return pages.OrderBy(_ => rng.Next()).ToArray();
    }

    /// <summary>A copy of <paramref name="page"/> with 16 bytes from <paramref name="at"/> changed (a similar page).</summary>
    private static byte[] Changed(byte[] page, int at, byte xor)
    {
        var q = (byte[])page.Clone();
        for (int b = 0; b < 16; b++) q[at + b] ^= xor;
        return q;
    }

    /// <summary>
    /// A part of the metadata held during the passes (the peak) but under half of <paramref name="everySlot"/> (a slot for
    /// every item, as before the filters), and given back at rest.
    /// </summary>
    private static void AssertHeldUnderHalf(DEHost host, Func<MetadataParts, long> part, long everySlot, string what)
    {
        var stats = host.GetStats();
        long peak = part(stats.MetadataPeak);
        Assert.True(peak > 0, $"the peak holds none of {what}");
        Assert.True(peak < everySlot / 2, $"{what} peaked at {peak} B, a slot for every item being {everySlot} B");
        Assert.Equal(0, part(stats.Metadata));
    }

    private static void AssertNothingLost(DEHost host, Domain domain, byte[][] image)
    {
        TestMemory.AssertFrameAccounting(host);
        var back = TestMemory.ReadAll(domain);
        for (int i = 0; i < image.Length; i++) Assert.True(image[i].AsSpan().SequenceEqual(back[i]), $"page {i} differs");
    }
}
