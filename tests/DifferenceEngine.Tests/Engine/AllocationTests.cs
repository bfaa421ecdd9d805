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
        // Measured on one worker, the calling thread (Parallel.ForEach runs a single-worker loop there), exactly: what
        // other threads allocate meanwhile (tiered JIT's background compiles: up to 39 KB in one CI run, when this counted
        // the whole process) is not the pass's.
        var options = new ScanOptions { Passes = 1, Parallelism = 1 };
        // Tables grown, pages encoded: passes until one changes nothing.
        var warm = host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 2 });
        Assert.True(warm.Stable, $"not stable after {warm.Passes} passes");
        host.Scan(options: options); // the single-worker path's own first use
        // Then three passes, the least a pass allocated: an allocation per page shows in every pass (40,000 pages: at
        // least 40 KB each); passes that changed no page allocated 13,648-13,768 bytes in session 37 (8,312 once).
        long least = long.MaxValue;
        for (int i = 0; i < 3; i++)
        {
            ScanResult r = null!;
            least = Math.Min(least, Allocations.On(() => r = host.Scan(options: options)));
            Assert.True(r.PassResults[0].PagesExamined > 10_000, $"{r.PassResults[0].PagesExamined} pages examined");
        }
        Assert.True(least < 16 * 1024, $"a steady-state pass over {pages.Length} pages allocated {least} bytes at least");
    }
}

/// <summary>patch_page (Table 2) allocates nothing per page once the host's tables and store have grown.</summary>
[Collection(nameof(SerialCollection))]
public class PatchAllocationTests
{
    [Fact]
    public void SteadyStatePatchPageAllocatesNothing()
    {
        using var host = new DEHost(new HostOptions { SimilaritySeed = 1 });
        using var dir = new TempDir();
        var rng = new Random(11);
        const int n = 2000;
        var references = Enumerable.Range(0, n).Select(_ => TestMemory.RandomPage(rng)).ToArray();
        var similar = references.Select((page, i) =>
        {
            var copy = (byte[])page.Clone();
            var r = new Random(i);
            for (int k = 0; k < 6; k++) copy[r.Next(4096)] ^= (byte)(1 + r.Next(255));
            return copy;
        }).ToArray();
        var d = TestMemory.LoadRaw(host, dir, "a", [.. references, .. similar],
            new DomainOptions { SharingEnabled = true, PatchingEnabled = true, C4Sweeps = 1 });
        var index = host.SharingIndexFor(d.Policy.TrustGroup);
        for (int i = 0; i < 3; i++) host.Scan(); // references made immutable, the similar pages patched
        (long Bytes, long Patched) Cycle()
        {
            // Every similar page back to Private (a read rebuilds it), then patched again, page by page as a pass does:
            // the references listed in the pass's similarity table first, as a pass's sweep lists them.
            for (long gfn = n; gfn < 2 * n; gfn++) d.ReadPage(gfn);
            index.Similar.BeginPass();
            for (long gfn = 0; gfn < n; gfn++) TestMemory.ListAsReference(host, index, d, gfn);
            long patched = 0;
            long bytes = Allocations.On(() =>
            {
                var c = new Patching.EncodeCounters();
                for (long gfn = n; gfn < 2 * n; gfn++)
                {
                    ulong e = d.Lock(gfn);
                    try
                    {
                        e = Patching.PatchPass.TryPatch(host, index, d, gfn, e, ref c);
                    }
                    finally
                    {
                        d.Unlock(gfn, e);
                    }
                }
                patched = c.PagesPatched;
            });
            index.Similar.EndPass();
            return (bytes, patched);
        }
        var warm = Cycle(); // store slabs and tables grown
        var (allocated, patched) = Cycle();
        Assert.True(patched > n * 95 / 100 && patched == warm.Patched, $"{patched} of {n} patched (warm-up: {warm.Patched})");
        Assert.True(allocated == 0, $"patching {patched} pages in steady state allocated {allocated} bytes ({(double)allocated / patched:0.0} per page)");
    }
}
