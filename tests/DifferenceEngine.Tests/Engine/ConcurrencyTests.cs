using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;
using DifferenceEngine.Workload;

namespace DifferenceEngine.Tests.Engine;

/// <summary>Guest writes from several threads while scans merge pages: no write may be lost.</summary>
public class ConcurrencyTests
{
    [Fact]
    public async Task WritersAndScansTogetherLoseNoWrite()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var library = Enumerable.Range(0, 8).Select(i => TestMemory.RandomPage(new Random(i))).ToArray();
        var domains = Enumerable.Range(0, 4)
            .Select(i => TestMemory.LoadRaw(host, dir, "c" + i, TestMemory.PlantedImage(600, 50 + i, library),
                new DomainOptions { SharingEnabled = true, C4Sweeps = 1 }))
            .ToArray();
        const int threads = 4;
        // Each writer owns the pages whose gfn is its index modulo the writer count: shadows are exact.
        var shadows = new Dictionary<(int, long), byte[]>[threads];
        // One pass before the writers start merges the planted duplicates, so writes meet shared pages (copy-on-write)
        // whatever the scanner's thread gets of the machine later.
        host.Scan();
        // The scanner on a thread of its own (pool threads are injected slowly, which would starve the scan's workers);
        // every 1250 operations a writer waits for one more pass, so 31 passes run under the writers' feet however the
        // machine schedules the threads.
        const int operations = 40_000, burst = 1250;
        var scanner = RacingLoop.Start(() => host.Scan(options: new ScanOptions { Passes = 1, SliceSize = 100 }));
        var writers = Enumerable.Range(0, threads).Select(t => Task.Factory.StartNew(() =>
        {
            var rng = new Random(t);
            var mine = shadows[t] = new();
            var buf = new byte[4096];
            for (int i = 0; i < operations; i++)
            {
                scanner.Pace(i, burst);
                int di = rng.Next(domains.Length);
                var d = domains[di];
                long gfn = rng.NextInt64(d.PageCount / threads) * threads + t;
                if (!mine.TryGetValue((di, gfn), out var shadow))
                    mine[(di, gfn)] = shadow = d.ReadPage(gfn);
                if (rng.Next(3) == 0)
                {
                    d.ReadPage(gfn, buf);
                    Assert.True(shadow.AsSpan().SequenceEqual(buf), $"{d.Name} page {gfn} lost a write");
                    continue;
                }
                // Whole duplicate pages keep the scanner merging what the writers then break again.
                byte[] data = rng.Next(2) == 0 ? library[rng.Next(library.Length)] : BitConverter.GetBytes(rng.NextInt64());
                int offset = data.Length == 4096 ? 0 : rng.Next(4096 - data.Length);
                d.WritePage(gfn, data, offset);
                data.CopyTo(shadow, offset);
            }
        }, TaskCreationOptions.LongRunning)).ToArray();
        try
        {
            await Task.WhenAll(writers);
        }
        finally
        {
            await scanner.StopAsync();
        }

        for (int t = 0; t < threads; t++)
            foreach (var ((di, gfn), shadow) in shadows[t])
            {
                var actual = domains[di].ReadPage(gfn);
                int at = shadow.AsSpan().CommonPrefixLength(actual);
                Assert.True(at == 4096, $"c{di} page {gfn} differs at byte {at}: {domains[di].GetPage(gfn)}; " +
                    $"library match actual={Array.FindIndex(library, l => l.AsSpan().SequenceEqual(actual))} expected={Array.FindIndex(library, l => l.AsSpan().SequenceEqual(shadow))}");
            }
        TestMemory.AssertFrameAccounting(host);
        Assert.True(host.GetStats().Faults.Single(f => f.Kind == FaultKind.CopyOnWrite).Count > 0);
    }

    [Fact]
    public async Task WorkloadRunnerWithScansVerifiesEveryRead()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var library = Enumerable.Range(0, 8).Select(i => TestMemory.RandomPage(new Random(i))).ToArray();
        var domains = Enumerable.Range(0, 3)
            .Select(i => TestMemory.LoadRaw(host, dir, "w" + i, TestMemory.PlantedImage(400, i, library), new DomainOptions { SharingEnabled = true }))
            .ToArray();
        using var stop = new CancellationTokenSource();
        var scanner = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested) host.Scan(options: new ScanOptions { Passes = 1 });
        });
        var result = WorkloadRunner.Run(domains, new WorkloadOptions
        {
            Operations = 60_000, WriteFraction = 0.4, Pattern = AccessPattern.Hotspot, Seed = 3, Threads = 3, Verify = true,
        });
        stop.Cancel();
        await scanner;
        Assert.Equal(60_000, result.Operations);
        Assert.Equal(0, result.Mismatches);
        Assert.Equal(0, result.Errors);
        Assert.True(result.Reads > 0 && result.Writes > 0);
        TestMemory.AssertFrameAccounting(host);
    }

    [Theory]
    [InlineData(AccessPattern.Uniform)]
    [InlineData(AccessPattern.Hotspot)]
    [InlineData(AccessPattern.Sequential)]
    public void WorkloadCountsItsOwnFaults(AccessPattern pattern)
    {
        using var host = new DEHost();
        var d = host.CreateDomain("w", 256 * 4096);
        var r = WorkloadRunner.Run([d], new WorkloadOptions { Operations = 5000, WriteFraction = 1, Pattern = pattern, Seed = 1, Threads = 2 });
        Assert.Equal(5000, r.Writes);
        // Every first write to a page is exactly one zero-fill fault.
        Assert.Equal(TestMemory.Census([d]).Private, r.ZeroFillFaults);
        Assert.Equal(r.ZeroFillFaults, host.GetStats().Faults.Single(f => f.Kind == FaultKind.ZeroFill).Count);
    }

    [Fact]
    public void WorkloadIsDeterministicForASeedAndThreadCount()
    {
        byte[][] Run()
        {
            using var host = new DEHost();
            var d = host.CreateDomain("w", 64 * 4096);
            WorkloadRunner.Run([d], new WorkloadOptions { Operations = 3000, WriteFraction = 0.5, Seed = 9, Threads = 2 });
            return TestMemory.ReadAll(d);
        }
        Assert.Equal(Run().Select(Convert.ToHexString), Run().Select(Convert.ToHexString));
    }
}
