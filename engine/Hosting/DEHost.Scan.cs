using System.Diagnostics;
using System.Runtime.CompilerServices;
using DifferenceEngine.Clock;
using DifferenceEngine.Domains;
using DifferenceEngine.Scanning;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Hosting;

public sealed partial class DEHost
{
    /// <summary>
    /// Runs engine passes over <paramref name="domains"/> (all when null), in parallel over domains and
    /// page slices: each pass sweeps the clock over every page, then merges the zero and identical
    /// pages of domains that have sharing on. Scans of one host run one at a time.
    /// </summary>
    /// <param name="progress">Called from worker threads; must be thread-safe and quick.</param>
    public ScanResult Scan(IEnumerable<Domain>? domains = null, ScanOptions? options = null,
        Action<ScanProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options ??= new ScanOptions();
        if (options.Passes < 1 || options.MaxPasses < 1 || options.Parallelism < 1 || options.SliceSize < 1)
            throw new DEException("ScanOptionsInvalid", DEErrorKind.InvalidArgument,
                "Passes, MaxPasses, Parallelism and SliceSize must all be at least 1.", options);
        using var op = EnterOperation();
        var chosen = (domains ?? Domains).Distinct().OrderBy(d => d.Id).ToArray();
        foreach (var d in chosen) CheckOwned(d);
        int passCount = options.UntilStable ? options.MaxPasses : options.Passes;
        var results = new List<PassResult>();
        bool stable = false;
        lock (_scanGate)
        {
            for (int pass = 1; pass <= passCount; pass++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var result = RunPass(pass, chosen, options, progress, cancellationToken);
                results.Add(result);
                Interlocked.Increment(ref _passes);
                if (!result.Changed && pass > 1)
                {
                    stable = true;
                    if (options.UntilStable) break;
                }
            }
        }
        return new ScanResult(chosen.Select(d => d.Name).ToArray(), results, stable);
    }

    private PassResult RunPass(int pass, Domain[] domains, ScanOptions options, Action<ScanProgress>? progress, CancellationToken ct)
    {
        foreach (var index in _sharing.Values) index.Unstable.Clear();
        var slices = new List<(Domain Domain, long Start, long End)>();
        foreach (var d in domains)
            for (long s = 0; s < d.PageCount; s += options.SliceSize)
                slices.Add((d, s, Math.Min(d.PageCount, s + options.SliceSize)));
        long total = domains.Sum(d => d.PageCount);
        long done = 0, swept = 0;
        var sum = new SharingCounters();
        var sumGate = new object();
        long started = Stopwatch.GetTimestamp();
        Parallel.ForEach(slices,
            new ParallelOptions { MaxDegreeOfParallelism = options.Parallelism, CancellationToken = ct },
            slice =>
            {
                var c = new SharingCounters();
                long n = ScanSlice(slice.Domain, slice.Start, slice.End, ref c);
                lock (sumGate)
                {
                    sum.PagesExamined += c.PagesExamined;
                    sum.ZeroPagesFound += c.ZeroPagesFound;
                    sum.PagesMerged += c.PagesMerged;
                    sum.FramesFreed += c.FramesFreed;
                    sum.HashCollisions += c.HashCollisions;
                    sum.Contended += c.Contended;
                }
                Interlocked.Add(ref swept, n);
                long now = Interlocked.Add(ref done, slice.End - slice.Start);
                progress?.Invoke(new ScanProgress(pass, now, total));
            });
        foreach (var d in domains) if (!d.IsRemoved) d.CountSweep();
        return new PassResult(pass, swept, sum.PagesExamined, sum.ZeroPagesFound, sum.PagesMerged, sum.FramesFreed,
            sum.HashCollisions, sum.Contended, Stopwatch.GetElapsedTime(started));
    }

    /// <summary>Sweeps the clock over a slice, then shares its eligible pages; returns pages swept.</summary>
    /// <remarks>Jitted fully optimized at once: a scan calls it a few times per pass, too few for tiering to catch up.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private long ScanSlice(Domain domain, long start, long end, ref SharingCounters c)
    {
        int c4 = domain.Policy.C4Sweeps;
        long t0 = Stopwatch.GetTimestamp();
        long swept = 0;
        for (long gfn = start; gfn < end; gfn++)
        {
            ulong e = domain.Lock(gfn);
            if (domain.IsRemoved)
            {
                domain.Unlock(gfn, e);
                break;
            }
            domain.Unlock(gfn, PageClock.Sweep(e, c4));
            swept++;
        }
        long t1 = Stopwatch.GetTimestamp();
        long examinedBefore = c.PagesExamined;
        if (domain.Policy.SharingEnabled && !domain.IsRemoved)
        {
            var index = SharingIndexFor(domain.Policy.TrustGroup);
            for (long gfn = start; gfn < end; gfn++)
            {
                ulong e = domain.Lock(gfn);
                try
                {
                    if (domain.IsRemoved) break;
                    if (PageEntry.State(e) == PageState.Private && (e & PageEntry.Modified) == 0
                        && PageClock.MayShare(PageEntry.Category(e)))
                        e = SharingPass.SharePage(this, index, domain, gfn, e, ref c);
                }
                finally
                {
                    domain.Unlock(gfn, e);
                }
            }
        }
        long t2 = Stopwatch.GetTimestamp();
        AddEngineTime(t1 - t0, swept, t2 - t1, c.PagesExamined - examinedBefore);
        return swept;
    }
}
