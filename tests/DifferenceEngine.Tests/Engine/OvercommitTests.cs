using System.Diagnostics;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Loading;
using DifferenceEngine.Scanning;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Engine;

/// <summary>Pseudo-random guest memory made on the fly: page content is a function of (seed, gfn).</summary>
internal sealed class SyntheticSource(long pages, int seed) : MemorySource
{
    public override MemorySourceFormat Format => MemorySourceFormat.RawImage;
    public override string Description => $"synthetic random memory ({pages} pages, seed {seed})";
    public override long PageCount => pages;

    public static void Fill(int seed, long gfn, Span<byte> page)
    {
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(page);
        ulong x = (ulong)seed * 0x9E3779B97F4A7C15UL ^ (ulong)gfn * 0xD1B54A32D192ED03UL;
        for (int i = 0; i < words.Length; i++)
        {
            // splitmix64
            x += 0x9E3779B97F4A7C15UL;
            ulong z = x;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            words[i] = z ^ (z >> 31);
        }
    }

    private protected override LoadReport CopyPages(IGuestPageSink sink, CancellationToken cancellationToken)
    {
        var page = new byte[4096];
        for (long g = 0; g < pages; g++)
        {
            if ((g & 4095) == 0) cancellationToken.ThrowIfCancellationRequested();
            Fill(seed, g, page);
            sink.SetPage(g, page);
        }
        return new LoadReport(MemorySourceFormat.RawImage, pages, 0, 1, 0, 0, []);
    }

    private protected override void ReleaseHandles()
    {
    }
}

/// <summary>
/// The overcommit acceptance run: 4 GiB of guest memory, real and random, on a host limited to 1 GiB
/// with a swap file, under a multi-threaded workload; every read checked, the process's resident
/// memory watched.
/// </summary>
[Collection(nameof(SerialCollection))]
[Trait("Category", "Overcommit")]
public class OvercommitTests(ITestOutputHelper output)
{
    private const long Limit = 1L << 30;

    [RequiresFact(Requirement.Python3)]
    public void FourGiBOfGuestsRunOnAOneGiBHostWithNothingLost()
    {
        using var dir = new TempDir();
        var real = LiveProcess.Python();
        // The kernel keeps this process's peak resident size (VmHWM); reset to now, it is the exact peak of this run,
        // where a sampling thread could miss a short one.
        ResetPeakResident();
        long baseline = ResidentBytes("VmRSS:");
        using var stop = new CancellationTokenSource();
        var sw = Stopwatch.StartNew();
        try
        {
            using var host = new DEHost(new HostOptions
            {
                MemoryLimitBytes = Limit,
                SwapPath = Path.Combine(dir.Path, "swap"),
                SwapSizeBytes = 5L << 30,
            });
            var options = new DomainOptions { SharingEnabled = true, CompressionEnabled = true, C4Sweeps = 1 };
            var realDomain = TestMemory.LoadProcess(host, "real", real.Id, options);
            var realPages = TestMemory.ReadAll(realDomain);
            long randomPages = (((4L << 30) - realDomain.SizeBytes) / 4096 + 3) / 4;
            var domains = new List<Domain> { realDomain };
            for (int i = 0; i < 4; i++)
            {
                using var src = new SyntheticSource(randomPages, 1000 + i);
                domains.Add(host.LoadDomain("rand" + i, src, options));
            }
            long guest = domains.Sum(d => d.SizeBytes);
            Assert.True(guest >= 4L << 30, $"{guest} bytes of guest memory");
            output.WriteLine($"loaded {guest >> 20} MiB of guests in {sw.Elapsed.TotalSeconds:F1} s");

            // Workload: 4 threads, each owning the pages gfn % 4 == t, checking every read. The shadow keeps
            // each page's writes (not page copies), so the test's own memory does not blur the engine's.
            const int threads = 4;
            var written = new Dictionary<(int, long), List<(int Offset, byte[] Data)>>[threads];
            long mismatches = 0, reads = 0, writes = 0;
            var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
            {
                var rng = new Random(t);
                var mine = written[t] = new();
                var buf = new byte[4096];
                var expected = new byte[4096];
                for (int op = 0; op < 25_000; op++)
                {
                    int di = rng.Next(domains.Count);
                    var d = domains[di];
                    // A hot tenth of each domain gets most of the accesses, as in a real guest.
                    long span = rng.Next(10) < 8 ? Math.Max(threads, d.PageCount / 10) : d.PageCount;
                    long gfn = rng.NextInt64(span / threads) * threads + t;
                    if (gfn >= d.PageCount) continue;
                    if (rng.Next(10) < 3)
                    {
                        var data = new byte[rng.Next(1, 64)];
                        rng.NextBytes(data);
                        int offset = rng.Next(4096 - data.Length);
                        d.WritePage(gfn, data, offset);
                        if (!mine.TryGetValue((di, gfn), out var list)) mine[(di, gfn)] = list = new();
                        list.Add((offset, data));
                        Interlocked.Increment(ref writes);
                    }
                    else
                    {
                        d.ReadPage(gfn, buf);
                        var want = Expected(di, gfn, realPages);
                        if (mine.TryGetValue((di, gfn), out var list))
                            foreach (var (offset, data) in list) data.CopyTo(want, offset);
                        if (!want.AsSpan().SequenceEqual(buf)) Interlocked.Increment(ref mismatches);
                        Interlocked.Increment(ref reads);
                    }
                }
            })).ToArray();
            var scanner = new Thread(() =>
            {
                while (!stop.IsCancellationRequested) host.Scan(options: new ScanOptions { Passes = 1 });
            }) { IsBackground = true };
            foreach (var w in workers) w.Start();
            scanner.Start();
            foreach (var w in workers) w.Join();
            stop.Cancel();
            scanner.Join();

            var stats = host.GetStats();
            output.WriteLine($"workload: {reads} reads, {writes} writes, {mismatches} mismatches; {sw.Elapsed.TotalSeconds:F1} s in all");
            output.WriteLine($"frames {stats.FramesInUse}, store {stats.StoreAllocatedBytes >> 20} MiB, swap used {stats.SwapUsedBytes >> 20} MiB, " +
                             $"page-outs {stats.PageOuts} (p50 {stats.PageOutP50.TotalMicroseconds:F0} us, p99 {stats.PageOutP99.TotalMicroseconds:F0} us), " +
                             $"swap-ins {stats.Faults.Single(f => f.Kind == FaultKind.SwapIn).Count} (p50 {stats.Faults.Single(f => f.Kind == FaultKind.SwapIn).P50Microseconds:F0} us)");
            Assert.Equal(0, mismatches);
            Assert.True(stats.FramesInUse * 4096 + stats.StoreAllocatedBytes <= Limit);
            Assert.True(stats.PageOuts > 500_000);
            Assert.True(stats.Faults.Single(f => f.Kind == FaultKind.SwapIn).Count > 1000);

            // Stats account for every page.
            long counted = 0;
            foreach (var d in domains)
            {
                var ps = host.GetPageStats(d);
                long sum = ps.PrivatePages + ps.ZeroPages + ps.UniformPages + ps.SharedPages + ps.PatchedPages + ps.CompressedPages + ps.SwappedPages;
                Assert.Equal(d.PageCount, sum);
                counted += sum;
            }
            Assert.Equal(guest / 4096, counted);
        }
        finally
        {
            stop.Cancel();
            real.Dispose();
        }
        long peak = ResidentBytes("VmHWM:");
        long overhead = peak - baseline - Limit;
        output.WriteLine($"VmRSS: baseline {baseline >> 20} MiB, peak {peak >> 20} MiB, limit {Limit >> 20} MiB: overhead beyond the limit {overhead >> 20} MiB");
        // The measured overhead (docs/PAGING.md) is page tables, swap checksums, the runtime's own heap
        // growth and the test's shadow data: 120 MiB measured; 192 MiB leaves room for noise, not for a
        // leak of frames (a single lost GiB of frames would show at once).
        Assert.True(peak <= baseline + Limit + (192L << 20), $"peak VmRSS {peak >> 20} MiB over baseline {baseline >> 20} MiB + limit + 192 MiB");
    }

    private static byte[] Expected(int domain, long gfn, byte[][] realPages)
    {
        if (domain == 0) return (byte[])realPages[gfn].Clone();
        var page = new byte[4096];
        SyntheticSource.Fill(1000 + domain - 1, gfn, page);
        return page;
    }

    /// <summary>A line of /proc/self/status (VmRSS: now, VmHWM: the peak since the last reset), in bytes.</summary>
    private static long ResidentBytes(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field, StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        throw new InvalidOperationException($"/proc/self/status has no {field} line.");
    }

    /// <summary>Sets VmHWM to the current VmRSS (proc(5), /proc/pid/clear_refs, since Linux 4.0).</summary>
    private static void ResetPeakResident() => File.WriteAllText("/proc/self/clear_refs", "5");
}
