using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// Guest writes aimed at the pages that serve as patch references, interleaved with scans: a patch
/// must always rebuild the bytes its page had, whatever happened to the reference page since.
/// </summary>
public class ReferenceWritePropertyTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void WritesToReferencePagesNeverChangeTheirPatchedPages(int seed)
    {
        var rng = new Random(seed);
        using var host = new DEHost(new HostOptions { SimilaritySeed = seed });
        using var dir = new TempDir();
        var options = new DomainOptions { SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true, C4Sweeps = 1 };
        var bases = Enumerable.Range(0, 12).Select(i => TestMemory.RandomPage(new Random(seed * 100 + i))).ToArray();
        var domains = new List<Domain>();
        var shadow = new Dictionary<Domain, byte[][]>();
        for (int i = 0; i < 4; i++)
        {
            // Each domain: a few base pages (future references) and many near-copies of them.
            var pages = Enumerable.Range(0, 300).Select(g =>
            {
                var p = (byte[])bases[rng.Next(bases.Length)].Clone();
                if (g % 7 != 0)
                    for (int k = rng.Next(1, 9); k > 0; k--) p[rng.Next(4096)] = (byte)rng.Next(256);
                return p;
            }).ToArray();
            var d = TestMemory.LoadRaw(host, dir, "r" + i, pages, options);
            domains.Add(d);
            shadow[d] = pages;
        }
        long referenceWrites = 0, patchedSeen = 0;
        var buffer = new byte[4096];
        for (int round = 0; round < 60; round++)
        {
            host.Scan(options: new ScanOptions { Passes = 1 + rng.Next(2), SliceSize = 64 });
            TestMemory.AssertFrameAccounting(host);
            // Find the pages patches depend on right now, and write to some of them.
            var references = new List<(Domain, long)>();
            foreach (var d in domains)
                for (long g = 0; g < d.PageCount; g++)
                {
                    var info = d.GetPage(g);
                    if (info.State == PageState.Patched)
                    {
                        patchedSeen++;
                        references.Add((host.GetDomain(info.ReferenceDomain!), info.ReferenceGfn!.Value));
                    }
                }
            foreach (var (d, g) in references.OrderBy(_ => rng.Next()).Take(10))
            {
                if (d.PeekState(g) is not (PageState.Shared or PageState.Private)) continue;
                var data = new byte[rng.Next(1, 64)];
                rng.NextBytes(data);
                int offset = rng.Next(4096 - data.Length);
                d.WritePage(g, data, offset);
                data.CopyTo(shadow[d][g], offset);
                referenceWrites++;
            }
            // Read a sample (reads rebuild pages, so read only some and let the rest stay patched).
            foreach (var d in domains)
                for (int k = 0; k < 20; k++)
                {
                    long g = rng.NextInt64(d.PageCount);
                    d.ReadPage(g, buffer);
                    Assert.True(shadow[d][g].AsSpan().SequenceEqual(buffer), $"round {round}: {d.Name} page {g} differs");
                }
        }
        foreach (var d in domains)
            for (long g = 0; g < d.PageCount; g++)
            {
                d.ReadPage(g, buffer);
                Assert.True(shadow[d][g].AsSpan().SequenceEqual(buffer), $"final: {d.Name} page {g} differs");
            }
        output.WriteLine($"seed {seed}: {referenceWrites} writes to reference pages, {patchedSeen} patched page sightings");
        Assert.True(referenceWrites > 100);
        Assert.True(patchedSeen > 1000);
        foreach (var d in domains) host.RemoveDomain(d);
        Assert.Equal(0, host.GetStats().FramesInUse);
        Assert.Equal(0, host.GetStats().StoreBlobs);
    }
}
