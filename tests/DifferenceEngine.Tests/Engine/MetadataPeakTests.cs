using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;

namespace DifferenceEngine.Tests.Engine;

/// <summary>HostStats.MetadataPeakBytes: the most metadata held, the tables a pass holds only while it runs included.</summary>
public sealed class MetadataPeakTests
{
    [Fact]
    public void BeforeAnyPassThePeakIsWhatIsHeld()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        TestMemory.LoadRaw(host, dir, "a", TestMemory.PlantedImage(256, 1));
        var stats = host.GetStats();
        Assert.True(stats.MetadataBytes > 0);
        Assert.Equal(stats.MetadataBytes, stats.MetadataPeakBytes);
        Assert.Equal(stats.MetadataPeakBytes, stats.MetadataPeak.Total);
    }

    [Fact]
    public void ThePeakHoldsTheTablesAPassGivesBack()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var options = new DomainOptions { SharingEnabled = true, PatchingEnabled = true };
        var a = TestMemory.LoadRaw(host, dir, "a", TestMemory.PlantedImage(2048, 1), options);
        TestMemory.LoadRaw(host, dir, "b", TestMemory.PlantedImage(2048, 2), options);
        var index = host.SharingIndexFor(a.Policy.TrustGroup);
        long tablesInCompression = -1;
        // The pass's last phase, compression, reports progress: the sharing tables are given back by then (the peak was
        // measured as the second phase ended, with them at their fullest).
        host.Scan(options: new ScanOptions { Passes = 3, Parallelism = 1, SliceSize = 256 }, progress: _ =>
            tablesInCompression = Math.Max(tablesInCompression, index.MetadataBytes));
        Assert.Equal(0, tablesInCompression);
        var stats = host.GetStats();
        // At rest the pass's tables are given back; the peak kept them.
        Assert.Equal(0, stats.Metadata.SharingStable);
        Assert.Equal(0, stats.Metadata.SharingUnstable);
        Assert.Equal(0, stats.Metadata.Similarity);
        Assert.True(stats.MetadataPeak.SharingStable > 0, "the peak holds no stable table");
        Assert.True(stats.MetadataPeak.SharingUnstable > 0, "the peak holds no unstable table");
        Assert.True(stats.MetadataPeak.Similarity > 0, "the peak holds no similarity table");
        Assert.True(stats.MetadataPeakBytes > stats.MetadataBytes);
        Assert.Equal(stats.MetadataPeakBytes, stats.MetadataPeak.Total);
    }

    [Fact]
    public void ThePeakIsNeverBelowWhatIsHeld()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        TestMemory.LoadRaw(host, dir, "a", TestMemory.PlantedImage(64, 1), new DomainOptions { SharingEnabled = true });
        host.Scan(options: new ScanOptions { Passes = 2 });
        long before = host.GetStats().MetadataPeakBytes;
        // A domain far larger than the first, loaded after the passes: its page table alone is more than the peak so far.
        TestMemory.LoadRaw(host, dir, "big", TestMemory.PlantedImage(16384, 2));
        var stats = host.GetStats();
        Assert.True(stats.MetadataBytes > before, $"held {stats.MetadataBytes} B, the peak before {before} B");
        Assert.Equal(stats.MetadataBytes, stats.MetadataPeakBytes);
    }
}
