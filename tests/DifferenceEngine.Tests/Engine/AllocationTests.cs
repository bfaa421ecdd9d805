using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;

namespace DifferenceEngine.Tests.Engine;

/// <summary>Tests that measure process-wide allocation run alone: other tests would allocate meanwhile.</summary>
[CollectionDefinition(nameof(SerialCollection), DisableParallelization = true)]
public sealed class SerialCollection;

/// <summary>The scan's hot path allocates nothing per page once its tables have grown.</summary>
[Collection(nameof(SerialCollection))]
public class AllocationTests
{
    [Fact]
    public void SteadyStateScanAllocatesNothingPerPage()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        // Mostly unique pages, so every pass hashes and lists each one.
        var pages = TestMemory.PlantedImage(40_000, 77);
        TestMemory.LoadRaw(host, dir, "a", pages, new DomainOptions { SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true });
        var options = new ScanOptions { Passes = 1, Parallelism = 2 };
        for (int i = 0; i < 4; i++) host.Scan(options: options); // tables grown, pages encoded: steady state
        long before = GC.GetTotalAllocatedBytes(precise: true);
        var r = host.Scan(options: options);
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        Assert.True(r.PassResults[0].PagesExamined > 10_000, $"{r.PassResults[0].PagesExamined} pages examined");
        // A few objects per pass and per slice (5 slices here) are fine; one per page would be >= 40 KB.
        Assert.True(allocated < 16 * 1024, $"a steady-state pass over {pages.Length} pages allocated {allocated} bytes");
    }
}
