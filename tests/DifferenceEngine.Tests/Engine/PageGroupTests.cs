using System.Text;
using DifferenceEngine.Codecs;
using DifferenceEngine.Compression;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// Page groups: long-cold compressed pages compressed together. Every member reads back, a group is smaller than its
/// pages alone, writes while a group is being formed abandon it, a group that lost members is re-packed so it never
/// holds more than its live pages alone, and a corrupted group is refused on decode naming the domain and page.
/// </summary>
public class PageGroupTests(ITestOutputHelper output)
{
    private static byte[][] TextPages(int count, int seed) => TestMemory.TextPages(count, seed);

    private static DomainOptions Options(CompressionAlgorithm group, int size = 8, int sweeps = 1, bool compression = true,
        double threshold = DomainPolicy.DefaultCompressionThreshold) => new()
    {
        CompressionEnabled = compression,
        CompressionAlgorithm = CompressionAlgorithm.LZ4,
        CompressionThreshold = threshold,
        C4Sweeps = sweeps,
        GroupSize = size,
        GroupAfterSweeps = sweeps,
        GroupAlgorithm = group,
    };

    [Theory]
    [InlineData(CompressionAlgorithm.Zstd, 8)]
    [InlineData(CompressionAlgorithm.LZ4, 8)]
    [InlineData(CompressionAlgorithm.Zstd, 32)]
    [InlineData(CompressionAlgorithm.Zstd, 2)]
    public void EveryMemberOfEveryGroupReadsBackAndGroupsAreSmallerThanTheirPagesAlone(CompressionAlgorithm codec, int size)
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var pages = TextPages(600, 1);
        var d = TestMemory.LoadRaw(host, dir, "vm", pages, Options(codec, size));
        var scan = host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.True(scan.Stable);
        long formed = scan.PassResults.Sum(p => p.GroupsFormed);
        long streams = scan.PassResults.Sum(p => p.GroupStreamBytes), singles = scan.PassResults.Sum(p => p.GroupSinglesBytes);
        var stats = host.GetPageStats(d);
        output.WriteLine($"{codec} x{size}: {formed} groups of {scan.PagesGrouped} pages, streams {streams} B for singles of {singles} B; " +
                         $"{stats.GroupedPages} grouped, store {stats.StoredBytes} B");
        Assert.Equal(600, stats.CompressedPages);
        // A group also closes when its pages' single blobs reach what its stream may hold (32 KiB): at most one page is
        // left over at the end, alone.
        Assert.True(stats.GroupedPages >= 599, $"{stats.GroupedPages} of 600 pages grouped");
        Assert.True(formed >= 600 / size && formed <= 600 / 2, $"{formed} groups");
        var grouped = Enumerable.Range(0, 600).Select(g => d.GetPage(g)).Where(p => p.Group is not null).ToArray();
        Assert.All(grouped.GroupBy(p => p.Group), g => Assert.InRange(g.Count(), 2, size));
        Assert.True(streams < singles, $"groups ({streams} B) must be smaller than the same pages alone ({singles} B)");
        TestMemory.AssertFrameAccounting(host);

        // Read back in a random order: each read decodes one member; the last member of a group frees it.
        var order = Enumerable.Range(0, 600).OrderBy(_ => Random.Shared.Next()).ToArray();
        var buffer = new byte[4096];
        for (int i = 0; i < order.Length; i++)
        {
            Assert.Equal(FaultKind.Decompress, d.ReadPage(order[i], buffer));
            Assert.True(pages[order[i]].AsSpan().SequenceEqual(buffer), $"page {order[i]} differs");
            if (i % 97 == 0) TestMemory.AssertFrameAccounting(host);
        }
        var after = host.GetStats();
        Assert.Equal(0, after.PageGroups);
        Assert.Equal(0, after.StoreBlobs);
        Assert.Equal(600, after.FramesInUse);
    }

    [Fact]
    public void PagesAlreadyIdleLongEnoughGoStraightFromTheirFramesIntoGroupsAndIncompressibleOnesStayFrames()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        // 200 text pages, and every tenth a page of random bytes, which no codec shrinks.
        var rng = new Random(14);
        var pages = TextPages(200, 4);
        for (int g = 5; g < pages.Length; g += 10) rng.NextBytes(pages[g]);
        var d = TestMemory.LoadRaw(host, dir, "vm", pages, Options(CompressionAlgorithm.Zstd, 4));
        var scan = host.Scan(options: new ScanOptions { UntilStable = true });
        // With C4Sweeps and GroupAfterSweeps 1, the pass that compresses finds every page idle long enough to be grouped:
        // no single blob is made for a page that ends up in a group (at most one page, the slice's last, is left alone).
        var compressing = scan.PassResults.Single(p => p.PagesCompressed > 0);
        Assert.Equal(180, compressing.PagesCompressed);
        Assert.True(compressing.PagesGrouped >= 179, $"{compressing.PagesGrouped} grouped");
        Assert.True(compressing.CompressedBytes <= 4096, $"{compressing.CompressedBytes} B of single blobs made");
        Assert.Equal(20, compressing.PagesIncompressible);
        var stats = host.GetPageStats(d);
        Assert.Equal(180, stats.CompressedPages);
        Assert.Equal(20, stats.PrivatePages);
        TestMemory.AssertFrameAccounting(host);
        AssertReadsBack(d, pages);
    }

    [Fact]
    public void WithTheDefaultSweepsPagesAreCompressedAloneFirstAndGroupedWhenLongCold()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var pages = TextPages(64, 5);
        var options = Options(CompressionAlgorithm.Zstd, 4, sweeps: DomainPolicy.DefaultC4Sweeps);
        var d = TestMemory.LoadRaw(host, dir, "vm", pages, options);
        var scan = host.Scan(options: new ScanOptions { UntilStable = true });
        var compressing = scan.PassResults.First(p => p.PagesCompressed > 0);
        Assert.Equal(64, compressing.PagesCompressed);
        Assert.Equal(0, compressing.PagesGrouped);
        Assert.True(compressing.CompressedBytes > 64 * 512, "single blobs made");
        Assert.Equal(64, scan.PagesGrouped);
        AssertReadsBack(d, pages);
    }

    [Fact]
    public void APageNoCodecBringsUnderTheThresholdAloneStaysAFrameAndIsNeverGroupedStraightFromIt()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var pages = TextPages(64, 6);
        // Text compresses to about half a page: no codec brings it to a fifth alone.
        var options = Options(CompressionAlgorithm.Zstd, 4, threshold: 0.2);
        var d = TestMemory.LoadRaw(host, dir, "vm", pages, options);
        var scan = host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(0, scan.PagesGrouped);
        Assert.Equal(64, scan.PassResults.Sum(p => p.PagesIncompressible));
        Assert.Equal(64, host.GetPageStats(d).PrivatePages);
        AssertReadsBack(d, pages);
    }

    [Fact]
    public void APageExaminedForTheFirstTimeWaitsAPassEvenWhenLongIdle()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var pages = TextPages(64, 7);
        var options = Options(CompressionAlgorithm.Zstd, 4, sweeps: DomainPolicy.DefaultC4Sweeps, compression: false);
        // Nothing on: the clock ages the pages for six passes, and no mechanism examines them.
        var d = TestMemory.LoadRaw(host, dir, "vm", pages, options);
        host.Scan(options: new ScanOptions { Passes = 6 });
        host.EnableCompression(d, CompressionAlgorithm.LZ4);
        var first = host.Scan(options: new ScanOptions { Passes = 1 }).PassResults[0];
        Assert.Equal(64, first.NewlyExamined);
        Assert.Equal(0, first.PagesCompressed);
        Assert.Equal(0, first.PagesGrouped);
        // The next pass compresses them, long idle by now: straight from their frames into groups.
        var second = host.Scan(options: new ScanOptions { Passes = 1 }).PassResults[0];
        Assert.Equal(64, second.PagesCompressed);
        Assert.Equal(64, second.PagesGrouped);
        Assert.Equal(0, second.CompressedBytes);
        AssertReadsBack(d, pages);
    }

    /// <summary>Every page of <paramref name="d"/> reads back as <paramref name="pages"/> holds it.</summary>
    private static void AssertReadsBack(Domain d, byte[][] pages)
    {
        var buffer = new byte[4096];
        for (int g = 0; g < pages.Length; g++)
        {
            d.ReadPage(g, buffer);
            Assert.True(pages[g].AsSpan().SequenceEqual(buffer), $"page {g} differs");
        }
    }

    [Fact]
    public void AGroupThatLostMembersIsRepackedSoItNeverHoldsMoreThanItsLivePagesAlone()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var pages = TextPages(256, 2);
        // Six members: their single blobs (about 2.2 KiB each) stay under the 16 KiB a group's stream may hold.
        var d = TestMemory.LoadRaw(host, dir, "vm", pages, Options(CompressionAlgorithm.Zstd, 6));
        host.Scan(options: new ScanOptions { UntilStable = true });
        long groupedAtFirst = host.GetPageStats(d).GroupedPages;
        Assert.True(groupedAtFirst >= 250, $"{groupedAtFirst} grouped");
        // Touch members of the first group until it holds more than its live members took alone.
        var buffer = new byte[4096];
        uint first = d.GetPage(0).Group!.Value;
        var members = Enumerable.Range(0, 256).Where(g => d.GetPage(g).Group == first).ToArray();
        Assert.Equal(6, members.Length);
        int touched = 0;
        d.ReadPage(members[touched++], buffer);
        Assert.False(host.Groups.Describe(first)!.Value.PinsMemory, "one member gone: the group is still smaller than its 5 pages alone");
        while (!host.Groups.Describe(first)!.Value.PinsMemory) d.ReadPage(members[touched++], buffer);
        output.WriteLine($"the group pins memory once {touched} of its 6 members left");
        var pass = host.Scan(options: new ScanOptions { Passes = 1 }).PassResults[0];
        Assert.Equal(1, pass.GroupsDissolved);
        Assert.Equal(6 - touched, pass.PagesUngrouped);
        // No live group holds more than its live members took alone, and every page still reads back.
        var pinned = Enumerable.Range(0, 256).Select(g => d.GetPage(g).Group).OfType<uint>().Distinct()
            .Where(id => host.Groups.Describe(id)!.Value.PinsMemory).ToArray();
        Assert.Empty(pinned);
        TestMemory.AssertFrameAccounting(host);
        // The ten moved back to single blobs are grouped again with each other once the clock allows.
        host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.True(host.GetPageStats(d).GroupedPages >= groupedAtFirst - 1, "the pages are grouped again");
        for (int g = 0; g < 256; g++)
        {
            d.ReadPage(g, buffer);
            Assert.True(pages[g].AsSpan().SequenceEqual(buffer), $"page {g} differs");
        }
    }

    [Fact]
    public void AWriteWhileAGroupIsBeingFormedAbandonsItAndNothingIsLost()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var pages = TextPages(64, 3);
        var d = TestMemory.LoadRaw(host, dir, "vm", pages, Options(CompressionAlgorithm.Zstd, 8));
        var written = Encoding.ASCII.GetBytes(new string('w', 4096));
        int hooked = 0;
        host.GroupFormingHook = (domain, gfns) =>
        {
            // The guest writes the third member of the first group formed, after it was gathered and compressed.
            if (hooked++ == 0)
            {
                domain.WritePage(gfns[2], written);
                pages[gfns[2]] = written;
            }
        };
        var first = host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.True(hooked > 1);
        Assert.True(first.PassResults.Sum(p => p.Contended) >= 1, "the group whose member changed was abandoned");
        TestMemory.AssertFrameAccounting(host);
        var buffer = new byte[4096];
        for (int g = 0; g < 64; g++)
        {
            d.ReadPage(g, buffer);
            Assert.True(pages[g].AsSpan().SequenceEqual(buffer), $"page {g} differs");
        }
    }

    [Theory]
    [InlineData(CompressionAlgorithm.Zstd)]
    [InlineData(CompressionAlgorithm.LZ4)]
    public void ACorruptedGroupIsRefusedOnDecodeNamingTheDomainAndPage(CompressionAlgorithm codec)
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var pages = TextPages(32, 4);
        var d = TestMemory.LoadRaw(host, dir, "victim", pages, Options(codec, 8));
        host.Scan(options: new ScanOptions { UntilStable = true });
        var info = d.GetPage(13);
        uint id = info.Group!.Value;
        lock (host.Groups.StripeLock(id)) host.Store.Get(host.Groups.PieceLocked(id, 0))[7] ^= 0x20;

        var ex = Assert.Throws<DEException>(() => d.ReadPage(13));
        output.WriteLine(ex.Message);
        Assert.Equal("PageIntegrityError", ex.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, ex.Kind);
        Assert.Contains("Page 13 of domain 'victim'", ex.Message);
        Assert.Contains($"page group {id}", ex.Message);
        // The page is left as it was (still in its group), and pages of other groups read back.
        Assert.Equal(id, d.GetPage(13).Group);
        var buffer = new byte[4096];
        for (int g = 0; g < 32; g++)
        {
            if (d.GetPage(g).Group == id) continue;
            d.ReadPage(g, buffer);
            Assert.True(pages[g].AsSpan().SequenceEqual(buffer));
        }
        // A pass does not dissolve or reuse the corrupt group's bytes.
        host.Scan(options: new ScanOptions { Passes = 2 });
        Assert.Throws<DEException>(() => d.ReadPage(13));
    }

    [Fact]
    public void APageOnlyTheGroupsCodecShrinksIsCompressedWithItWhenGroupsAreOn()
    {
        // Random bytes over 16 symbols: too few repeats for LZ4 to shrink them to 3/4 of a page, while
        // Zstd's entropy coding takes them to about half.
        var rng = new Random(7);
        var pages = Enumerable.Range(0, 16).Select(_ => Enumerable.Range(0, 4096).Select(_ => (byte)('A' + rng.Next(16))).ToArray()).ToArray();
        using var host = new DEHost();
        using var dir = new TempDir();
        var alone = TestMemory.LoadRaw(host, dir, "alone", pages, Options(CompressionAlgorithm.Zstd, 0));
        var grouped = TestMemory.LoadRaw(host, dir, "grouped", pages, Options(CompressionAlgorithm.Zstd, 4));
        var scan = host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(0, host.GetPageStats(alone).CompressedPages); // LZ4 alone: incompressible, kept in frames
        Assert.Equal(16, host.GetPageStats(grouped).CompressedPages);
        // Each alone with Zstd (the fallback, at level 1 since session 19), then in groups only where a group came out
        // smaller: random symbols have no matches across pages, so a group of them gains nothing and is refused.
        Assert.All(Enumerable.Range(0, 16), g => Assert.Equal("Zstd", grouped.GetPage(g).Codec));
        output.WriteLine($"grouped {host.GetPageStats(grouped).GroupedPages}, groups refused {scan.PassResults.Sum(p => p.GroupsRefused)}");
        Assert.True(scan.PassResults.Sum(p => p.PagesIncompressible) >= 16);
        var buffer = new byte[4096];
        for (int g = 0; g < 16; g++)
        {
            grouped.ReadPage(g, buffer);
            Assert.True(pages[g].AsSpan().SequenceEqual(buffer), $"page {g} differs");
        }
    }

    /// <summary>
    /// A fault keeps its group's decoded payload (per thread): a neighbour's fault then takes its page from it, checked
    /// against the page's own checksum, without reading or decoding the stream (a Zstd group is decoded whole; an LZ4
    /// group only as far as the page asked for). Shown by corrupting the stored stream after the first fault: the
    /// decoded copy still gives the neighbour its exact bytes, and once this thread has decoded another group, the
    /// corrupt stream is refused again.
    /// </summary>
    [Theory]
    [InlineData(CompressionAlgorithm.Zstd)]
    [InlineData(CompressionAlgorithm.LZ4)]
    public void ANeighboursFaultTakesItsPageFromTheDecodedGroupAndACorruptStreamIsStillRefused(CompressionAlgorithm codec)
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var pages = TextPages(64, 9);
        var d = TestMemory.LoadRaw(host, dir, "vm", pages, Options(codec, 8));
        host.Scan(options: new ScanOptions { UntilStable = true });
        uint id = d.GetPage(8).Group!.Value;
        var members = Enumerable.Range(0, 64).Where(g => d.GetPage(g).Group == id).ToArray();
        Assert.True(members.Length >= 4, $"{members.Length} members");
        int other = Enumerable.Range(0, 64).First(g => d.GetPage(g).Group is { } o && o != id);
        var buffer = new byte[4096];

        Assert.Equal(FaultKind.Decompress, d.ReadPage(members[0], buffer));
        Assert.True(pages[members[0]].AsSpan().SequenceEqual(buffer));
        lock (host.Groups.StripeLock(id)) host.Store.Get(host.Groups.PieceLocked(id, 0))[7] ^= 0x20;

        if (codec == CompressionAlgorithm.Zstd)
        {
            // Decoded whole by the first fault: the last member comes from that copy, exact.
            Assert.Equal(FaultKind.Decompress, d.ReadPage(members[^1], buffer));
            Assert.True(pages[members[^1]].AsSpan().SequenceEqual(buffer), "the kept copy gave other bytes");
        }
        else
        {
            // Decoded only as far as the first member: the next one needs the stream, which is refused.
            var ex = Assert.Throws<DEException>(() => d.ReadPage(members[1], buffer));
            Assert.Equal("PageIntegrityError", ex.ErrorId);
        }
        // Another group's fault takes the thread's copy: the corrupt stream is refused again, the page left as it was.
        Assert.Equal(FaultKind.Decompress, d.ReadPage(other, buffer));
        Assert.True(pages[other].AsSpan().SequenceEqual(buffer));
        var refused = Assert.Throws<DEException>(() => d.ReadPage(members[2], buffer));
        Assert.Equal("PageIntegrityError", refused.ErrorId);
        Assert.Contains($"page group {id}", refused.Message);
        Assert.Equal(id, d.GetPage(members[2]).Group);
    }

    [Fact]
    public void GroupsPagedOutToSwapReadBackAndACorruptSlotIsRefused()
    {
        using var dir = new TempDir();
        using var host = new DEHost(new HostOptions { MemoryLimitBytes = 64L << 20, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 16L << 20 });
        var pages = TextPages(200, 8);
        var d = TestMemory.LoadRaw(host, dir, "vm", pages, Options(CompressionAlgorithm.Zstd, 4));
        host.Scan(options: new ScanOptions { UntilStable = true });
        var before = host.GetStats();
        Assert.Equal(200, host.GetPageStats(d).GroupedPages);
        long moved = host.Reclaimer!.PageOutGroups(long.MaxValue);
        var after = host.GetStats();
        output.WriteLine($"{moved} B of streams to swap; store {before.StoreAllocatedBytes} -> {after.StoreAllocatedBytes} B, swap {after.SwapUsedBytes} B");
        Assert.Equal(after.PageGroups, after.PageGroupsInSwap);
        // The swap in use is the groups' slots and the pages paged out alone, to the byte.
        Assert.True(after.SwapGroupBytes > 0);
        Assert.Equal(host.GetPageStats(d).SwappedPages * 4096 + after.SwapGroupBytes, after.SwapUsedBytes);
        Assert.Equal(0, after.StoreBlobs);
        Assert.Equal(0, after.StoreAllocatedBytes);
        Assert.Equal(0, host.GetPageStats(d).StoredBytes); // pages in swap hold no memory
        Assert.True(after.SwapUsedBytes > 0);
        TestMemory.AssertFrameAccounting(host);

        // A slot that changed on disk is refused: the page names domain and group, and stays as it was.
        var info = d.GetPage(5);
        uint id = info.Group!.Value;
        uint slot;
        lock (host.Groups.StripeLock(id)) slot = (uint)host.Groups.PieceLocked(id, 0);
        using (var file = OpenSwapFile.Open(Path.Combine(dir.Path, "swap")))
        {
            file.Position = (long)slot * 4096 + 3;
            file.WriteByte(0x5A);
        }
        var ex = Assert.Throws<DEException>(() => d.ReadPage(5));
        Assert.Equal("PageIntegrityError", ex.ErrorId);
        Assert.Contains("Page 5 of domain 'vm'", ex.Message);
        Assert.Contains($"page group {id}", ex.Message);
        Assert.Equal(id, d.GetPage(5).Group);

        var buffer = new byte[4096];
        for (int g = 0; g < 200; g++)
        {
            if (d.GetPage(g).Group == id) continue;
            d.ReadPage(g, buffer);
            Assert.True(pages[g].AsSpan().SequenceEqual(buffer), $"page {g} differs");
        }
        var read = host.GetStats(); // only the corrupt group is left in swap
        Assert.Equal(1, read.PageGroupsInSwap);
        Assert.Equal(host.GetPageStats(d).SwappedPages * 4096 + read.SwapGroupBytes, read.SwapUsedBytes);
        host.RemoveDomain(d);
        Assert.Equal(0, host.GetStats().SwapUsedBytes);
        Assert.Equal(0, host.GetStats().SwapGroupBytes);
        Assert.Equal(0, host.GetStats().PageGroups);
    }

    [Fact]
    public void GroupPolicyIsCheckedAndZeroFormsNoGroups()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var d = TestMemory.LoadRaw(host, dir, "vm", TextPages(64, 5), Options(CompressionAlgorithm.Zstd, 0));
        Assert.Equal("PolicyGroupSizeInvalid", Assert.Throws<DEException>(() => host.SetPolicy(d, groupSize: 1)).ErrorId);
        Assert.Equal("PolicyGroupSizeInvalid", Assert.Throws<DEException>(() => host.SetPolicy(d, groupSize: 33)).ErrorId);
        Assert.Equal("PolicyGroupAfterSweepsInvalid", Assert.Throws<DEException>(() => host.SetPolicy(d, groupAfterSweeps: 14)).ErrorId);
        Assert.Equal("PolicyGroupAlgorithmInvalid",
            Assert.Throws<DEException>(() => host.SetPolicy(d, groupAlgorithm: CompressionAlgorithm.WKdm)).ErrorId);
        Assert.Equal(0, d.Policy.GroupSize); // nothing changed by the refusals
        host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(64, host.GetPageStats(d).CompressedPages);
        Assert.Equal(0, host.GetPageStats(d).GroupedPages);
        host.SetPolicy(d, groupSize: 4);
        host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(64, host.GetPageStats(d).GroupedPages);
    }

    [Fact]
    public void RemovingADomainFreesItsGroups()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var d = TestMemory.LoadRaw(host, dir, "vm", TextPages(100, 6), Options(CompressionAlgorithm.Zstd, 8));
        host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.True(host.GetStats().PageGroups > 0);
        d.ReadPage(3);
        host.RemoveDomain(d);
        var stats = host.GetStats();
        Assert.Equal(0, stats.PageGroups);
        Assert.Equal(0, stats.StoreBlobs);
        Assert.Equal(0, stats.StoreAllocatedBytes);
        Assert.Equal(0, host.Groups.Members);
    }
}
