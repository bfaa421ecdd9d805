using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;
using Xunit;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// Scans until stable that wait for pages still aging toward C4, the scan result's Stable flag, and the policy changes,
/// background passes and trust group changes an audit found wrong.
/// </summary>
public sealed class PolicyScanFixesTests(ITestOutputHelper output)
{
    private static DomainOptions Compressing(int c4Sweeps) => new()
    {
        CompressionEnabled = true, C4Sweeps = c4Sweeps, GroupSize = 0,
    };

    [Fact]
    public void UntilStableWaitsForPagesStillAgingTowardC4()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var d = TestMemory.LoadRaw(host, dir, "a", TestMemory.TextPages(64, 7), Compressing(5));
        var scan = host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 1 });
        foreach (var p in scan.PassResults)
            output.WriteLine($"pass {p.Pass}: examined {p.PagesExamined}, new {p.NewlyExamined}, awaiting {p.PagesAwaitingCompression}, compressed {p.PagesCompressed}");
        Assert.True(scan.Stable);
        // Every page reached C4 and was compressed before the scan called itself stable.
        Assert.Equal(64, scan.PagesCompressed);
        Assert.Contains(scan.PassResults, p => p.PagesAwaitingCompression > 0 && p.PagesCompressed == 0);
        // A further scan finds nothing left to do.
        var again = host.Scan(options: new ScanOptions { Passes = 1, Parallelism = 1 });
        Assert.Equal(0, again.PagesCompressed);
        Assert.Equal(0, again.PassResults[0].PagesAwaitingCompression);
    }

    [Fact]
    public void UntilStableStillEndsWhenPagesDoNotCompress()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var random = Enumerable.Range(0, 32).Select(i => TestMemory.RandomPage(new Random(i))).ToArray();
        TestMemory.LoadRaw(host, dir, "a", random, Compressing(5));
        var scan = host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 1, MaxPasses = 30 });
        foreach (var p in scan.PassResults)
            output.WriteLine($"pass {p.Pass}: awaiting {p.PagesAwaitingCompression}, incompressible {p.PagesIncompressible}");
        // The pages waited for C4, were tried once and marked incompressible; marked pages are not waited for.
        Assert.True(scan.Stable);
        Assert.True(scan.Passes < 30, $"{scan.Passes} passes");
        Assert.Equal(32, scan.PassResults.Sum(p => p.PagesIncompressible));
        Assert.Equal(0, scan.PassResults[^1].PagesAwaitingCompression);
    }

    private static PassResult Pass(int pass, long merged) => new(pass, 1, 1, 0, merged, merged, 0, 0, TimeSpan.Zero);

    [Fact]
    public void StableIsFalseWhenTheLastPassChangedSomething()
    {
        // Pass 2 changes nothing, pass 3 does: a scan of 3 passes did not end stable.
        long[] merged = [5, 0, 3];
        var (results, stable) = PassLoop.Run(new ScanOptions { Passes = 3 }, p => Pass(p, merged[p - 1]), CancellationToken.None);
        Assert.Equal(3, results.Count);
        Assert.False(stable);
        // Its last pass changing nothing: stable.
        long[] settled = [5, 3, 0];
        Assert.True(PassLoop.Run(new ScanOptions { Passes = 3 }, p => Pass(p, settled[p - 1]), CancellationToken.None).Stable);
        // A single pass is never stable (nothing to compare it with), whatever it did.
        Assert.False(PassLoop.Run(new ScanOptions { Passes = 1 }, p => Pass(p, 0), CancellationToken.None).Stable);
    }
}
