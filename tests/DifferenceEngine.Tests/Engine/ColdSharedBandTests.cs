using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// A pass compresses its cold shared frames band by band (frame numbers cut into ranges): the buffer of cold shared pages
/// holds one band at a time, and the frames compressed are those one buffer of them all would have compressed.
/// </summary>
public sealed class ColdSharedBandTests
{
    /// <summary>Bands follow where the frames are: equal shares of the pages, not of the frame numbers.</summary>
    [Fact]
    public void BandsAreCutWhereTheSharedFramesAre()
    {
        Span<uint> starts = stackalloc uint[DEHost.MaxColdSharedBands];
        var histogram = new int[DEHost.ColdSharedBuckets];
        // None, or fewer than a band's target: one band from frame 0 on.
        Assert.Equal(1, DEHost.CutColdSharedBands(histogram, 25600, 0, 8192, starts));
        histogram[10] = 5000;
        Assert.Equal(1, DEHost.CutColdSharedBands(histogram, 25600, 5000, 8192, starts));
        Assert.Equal(0u, starts[0]);
        // 3 x 8,192 pages in three buckets far apart (frames 100 a bucket): a band ends after each.
        histogram[10] = 8192;
        histogram[100] = 8192;
        histogram[200] = 8192;
        Assert.Equal(3, DEHost.CutColdSharedBands(histogram, 25600, 3 * 8192, 8192, starts));
        Assert.Equal([0u, 1100u, 10100u], starts[..3].ToArray());
        // Far more pages than 16 targets: at most 16 bands, each about a sixteenth.
        Array.Fill(histogram, 1000);
        int bands = DEHost.CutColdSharedBands(histogram, 25600, 256_000, 8192, starts);
        Assert.Equal(DEHost.MaxColdSharedBands, bands);
        Assert.Equal(1600u, starts[1]); // 16,000 pages a band: 16 buckets of 1,000
        // Patches (their frames not known unlocked) taken to follow the shared pages: 1,000 shared pages spread evenly
        // with 49,000 patches make 50,000 pages, cut as such (7 bands of 8,192 or so), not one band of them all.
        Array.Fill(histogram, 0);
        for (int b = 0; b < 250; b++) histogram[b] = 4;
        bands = DEHost.CutColdSharedBands(histogram, 25600, 50_000, 8192, starts);
        Assert.InRange(bands, 6, 7);
        // Only patches: spread evenly.
        Array.Fill(histogram, 0);
        Assert.InRange(DEHost.CutColdSharedBands(histogram, 25600, 50_000, 8192, starts), 6, 7);
        // Fewer frame numbers than buckets: no band without a frame number of its own.
        Array.Fill(histogram, 100);
        bands = DEHost.CutColdSharedBands(histogram, 10, 25_600, 1, starts);
        Assert.InRange(bands, 2, 10);
        for (int b = 1; b < bands; b++) Assert.True(starts[b] > starts[b - 1] && starts[b] < 10, $"band {b} starts at {starts[b]}");
    }

    /// <summary>
    /// Three domains: b a clone of a, c sharing half of a's contents and holding as many of its own; sharing, compression
    /// and groups of 4 on, every page cold after one sweep. Hosts that differ only in the band target come to the same
    /// frames compressed, the same pages compressed and the same memory, every page reading back as loaded.
    /// </summary>
    [Fact]
    public void ManyBandsCompressTheFramesOneBandDoes()
    {
        var one = Run(bandTarget: 1 << 20, out int oneBands, out int onePeak);
        var many = Run(bandTarget: 8, out int manyBands, out int manyPeak);
        Assert.Equal(1, oneBands);
        Assert.True(manyBands >= 8, $"{manyBands} bands");
        // 750 cold shared pages in one band; in bands cut where the frames are, none holds more than a small part of them.
        Assert.True(onePeak >= 450, $"one band held {onePeak} cold shared pages at most");
        Assert.True(manyPeak < onePeak / 4, $"{manyBands} bands held up to {manyPeak} at once, one band {onePeak}");
        Assert.True(one.SharedCompressedFrames >= 300, $"{one.SharedCompressedFrames} shared frames compressed");
        Assert.Equal(one.SharedCompressedFrames, many.SharedCompressedFrames);
        Assert.Equal(one.SharedCompressedPages, many.SharedCompressedPages);
        Assert.Equal(one.FramesInUse, many.FramesInUse);
    }

    /// <summary>
    /// Patches against shared references, a reference's patches and sharers in other domains than it: made with
    /// compression off, then compression turned on, so the cold references are compressed with their patches (each
    /// patch then names the compressed copy). A reference frame read from a patch's blob under its lock falls in the same
    /// band as its sharers; many bands on two workers make the same frames, patches and pages as one.
    /// </summary>
    [Fact]
    public void PatchesFollowTheirReferenceIntoItsBand()
    {
        var one = RunWithPatches(bandTarget: 1 << 20, out int oneBands);
        var many = RunWithPatches(bandTarget: 8, out int manyBands);
        Assert.Equal(1, oneBands);
        Assert.True(manyBands >= 8, $"{manyBands} bands");
        Assert.True(one.Patches >= 100, $"{one.Patches} patches moved onto compressed references");
        Assert.Equal(one, many);
    }

    private sealed record PatchOutcome(long SharedCompressedFrames, long Patches, long SharedCompressedPages, long FramesInUse);

    private static PatchOutcome RunWithPatches(int bandTarget, out int bands)
    {
        using var host = new DEHost();
        host.ColdSharedBandTarget = bandTarget;
        using var dir = new TempDir();
        var options = new DomainOptions { SharingEnabled = true, PatchingEnabled = true, C4Sweeps = 1 };
        byte[][] a = Enumerable.Range(0, 200).Select(SharedCompressionTests.Compressible).ToArray();
        // b: near copies of a's pages (a few bytes differ: patched against them); c: copies of half of them (shared).
        byte[][] b = a.Select((p, k) =>
        {
            var near = (byte[])p.Clone();
            BitConverter.TryWriteBytes(near.AsSpan(1000), 0xC0FFEE00 + k);
            return near;
        }).ToArray();
        byte[][] c = a.Take(100).Select(p => (byte[])p.Clone()).ToArray();
        var domains = new[]
        {
            (TestMemory.LoadRaw(host, dir, "a", a, options), a),
            (TestMemory.LoadRaw(host, dir, "b", b, options), b),
            (TestMemory.LoadRaw(host, dir, "c", c, options), c),
        };
        host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 2 });
        foreach (var (domain, _) in domains) host.EnableCompression(domain);
        bands = 0;
        long patches = 0;
        for (int pass = 0; pass < 6; pass++)
        {
            var result = host.Scan(options: new ScanOptions { Passes = 1, Parallelism = 2 });
            patches += result.PassResults[0].PatchesOnCompressedReferences;
            bands = Math.Max(bands, host.LastColdSharedBands);
        }
        var stats = host.GetStats();
        var snapshot = host.TakeSnapshot();
        TestMemory.AssertFrameAccounting(host);
        TestMemory.AssertNumbersAddUp(snapshot);
        var outcome = new PatchOutcome(stats.SharedCompressedFrames, patches, snapshot.Domains.Sum(d => d.SharedCompressedPages), stats.FramesInUse);
        foreach (var (domain, pages) in domains)
            for (long g = 0; g < pages.Length; g++)
                Assert.Equal(pages[g], domain.ReadPage(g));
        return outcome;
    }

    private sealed record Outcome(long SharedCompressedFrames, long SharedCompressedPages, long FramesInUse);

    private static Outcome Run(int bandTarget, out int bands, out int peak)
    {
        using var host = new DEHost();
        host.ColdSharedBandTarget = bandTarget;
        using var dir = new TempDir();
        var options = new DomainOptions
        {
            SharingEnabled = true, CompressionEnabled = true, C4Sweeps = 1, GroupSize = 4, GroupAfterSweeps = 1,
        };
        byte[][] a = Enumerable.Range(0, 300).Select(SharedCompressionTests.Compressible).ToArray();
        byte[][] c = Enumerable.Range(150, 300).Select(SharedCompressionTests.Compressible).ToArray();
        var domains = new[]
        {
            (TestMemory.LoadRaw(host, dir, "a", a, options), a),
            (TestMemory.LoadRaw(host, dir, "b", a.Select(p => (byte[])p.Clone()).ToArray(), options), a),
            (TestMemory.LoadRaw(host, dir, "c", c, options), c),
        };
        bands = 0;
        peak = 0;
        for (int pass = 0; pass < 6; pass++)
        {
            host.Scan(options: new ScanOptions { Passes = 1, Parallelism = 1 });
            // The passes that found cold shared pages (the first merges them; its frames are compressed from the next).
            bands = Math.Max(bands, host.LastColdSharedBands);
            peak = Math.Max(peak, host.LastColdSharedPeak);
        }
        var stats = host.GetStats();
        var snapshot = host.TakeSnapshot();
        TestMemory.AssertFrameAccounting(host);
        TestMemory.AssertNumbersAddUp(snapshot);
        var outcome = new Outcome(stats.SharedCompressedFrames, snapshot.Domains.Sum(d => d.SharedCompressedPages), stats.FramesInUse);
        foreach (var (domain, pages) in domains)
            for (long g = 0; g < pages.Length; g++)
                Assert.Equal(pages[g], domain.ReadPage(g));
        return outcome;
    }
}
