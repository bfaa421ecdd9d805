using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// What the engine stores for one trust group must not depend on another group's content. A security audit found that
/// the Zstd parameter set a group of shared blobs is compressed with (GroupCodecChoice: it learns from the groups made
/// before it) was carried from one domain's groups to the next within a worker, across trust groups: trust group y's
/// stored streams came out of different lengths depending only on what trust group x held.
/// </summary>
public class TrustGroupIsolationTests(ITestOutputHelper output)
{
    [Fact]
    public void AGroupOfSharedBlobsIsCompressedTheSameWhateverAnotherTrustGroupHolds()
    {
        // Contents on which each of the two parameter sets wins: x holds one kind or the other.
        var families = new (string Name, Func<int, byte[]> Page)[]
        {
            ("compressible", SharedCompressionTests.Compressible),
            ("text", s => TestMemory.TextPages(1, 1000 + s)[0]),
            ("tok5", s => Tokens(s, 5, 40)),
            ("tok6", s => Tokens(s, 6, 64)),
            ("tok8", s => Tokens(s, 8, 64)),
            ("tok12", s => Tokens(s, 12, 128)),
            ("tok16", s => Tokens(s, 16, 256)),
        };
        var wins = families.ToDictionary(f => f.Name, f => Enumerable.Range(0, 8).Count(k => LongMatchesWin(Enumerable.Range(4 * k, 4).Select(f.Page).ToArray())));
        var longFamily = families.First(f => wins[f.Name] == 8);
        var denseFamily = families.First(f => wins[f.Name] == 0);
        output.WriteLine($"x holds {longFamily.Name} (long-match set wins) or {denseFamily.Name} (dense set wins)");

        foreach (var yFamily in families)
        {
            var afterLong = StreamsOfY(longFamily.Page, s => yFamily.Page(500 + s));
            var afterDense = StreamsOfY(denseFamily.Page, s => yFamily.Page(500 + s));
            // x's domains between y's (interleaved ids), and x with few pages or many (its runs on either side of how
            // a pass cuts runs into chunks): y's streams the same still.
            var between = StreamsOfY(longFamily.Page, s => yFamily.Page(500 + s), xPages: 8, interleaved: true);
            var betweenMany = StreamsOfY(denseFamily.Page, s => yFamily.Page(500 + s), xPages: 120, interleaved: true);
            output.WriteLine($"y {yFamily.Name}: [{string.Join(", ", afterLong)}] / [{string.Join(", ", afterDense)}] / " +
                             $"[{string.Join(", ", between)}] / [{string.Join(", ", betweenMany)}]");
            Assert.Equal(afterLong, afterDense);
            Assert.Equal(between, betweenMany); // (y's own order and the workers differ from the first two runs')
        }
    }

    /// <summary>
    /// Trust group x (two domains of <paramref name="xPages"/> pages) and y (two of 16), all shared, grouped; y's group
    /// streams' lengths. <paramref name="interleaved"/>: loaded y1, x1, x2, y2 (x's domain ids between y's).
    /// </summary>
    private static int[] StreamsOfY(Func<int, byte[]> xPage, Func<int, byte[]> yPage, int xPages = 40, bool interleaved = false,
        int parallelism = 1)
    {
        using var host = new DEHost(new HostOptions { SimilaritySeed = 1 });
        using var dir = new TempDir();
        DomainOptions Options(string trust) => new()
        {
            SharingEnabled = true, CompressionEnabled = true, C4Sweeps = 1, GroupSize = 4, GroupAfterSweeps = 1, TrustGroup = trust,
        };
        var xContent = Enumerable.Range(0, xPages).Select(xPage).ToArray();
        var yPages = Enumerable.Range(0, 16).Select(yPage).ToArray();
        Domain? y1 = null;
        if (interleaved) y1 = TestMemory.LoadRaw(host, dir, "y1", yPages, Options("y"));
        TestMemory.LoadRaw(host, dir, "x1", xContent, Options("x"));
        TestMemory.LoadRaw(host, dir, "x2", xContent.Select(p => (byte[])p.Clone()).ToArray(), Options("x"));
        y1 ??= TestMemory.LoadRaw(host, dir, "y1", yPages, Options("y"));
        TestMemory.LoadRaw(host, dir, "y2", yPages.Select(p => (byte[])p.Clone()).ToArray(), Options("y"));
        host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = parallelism });
        var groups = Enumerable.Range(0, 16).Select(g => y1.GetPage(g).Group).ToArray();
        Assert.All(groups, g => Assert.NotNull(g));
        for (long g = 0; g < 16; g++) Assert.Equal(yPages[g], y1.ReadPage(g));
        return groups.Distinct().Select(g => host.Groups.Describe(g!.Value)!.Value.Length).ToArray();
    }

    private static bool LongMatchesWin(byte[][] pages)
    {
        var payload = pages.SelectMany(p => p).ToArray();
        var choice = new GroupCodecChoice();
        var destination = new byte[GroupCodec.Bound(payload.Length)];
        Assert.True(GroupCodec.TryCompress(CompressionAlgorithm.Zstd, payload, destination, ref choice, int.MaxValue, out _));
        return choice.PrefersLongMatches;
    }

    /// <summary>A page of tokens of <paramref name="tokenLength"/> bytes drawn from an alphabet of that many.</summary>
    private static byte[] Tokens(int seed, int tokenLength, int alphabet)
    {
        var rng = new Random(seed);
        var tokens = Enumerable.Range(0, alphabet).Select(_ =>
        {
            var t = new byte[tokenLength];
            rng.NextBytes(t);
            return t;
        }).ToArray();
        var page = new byte[4096];
        for (int i = 0; i < 4096; i += tokenLength) tokens[rng.Next(alphabet)].AsSpan(0, Math.Min(tokenLength, 4096 - i)).CopyTo(page.AsSpan(i));
        return page;
    }
}
