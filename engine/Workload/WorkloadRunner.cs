using System.Diagnostics;
using DifferenceEngine.Domains;
using DifferenceEngine.Memory;
using Newtonsoft.Json;
using Newtonsoft.Json.Converters;

namespace DifferenceEngine.Workload;

/// <summary>Which guest pages a workload touches.</summary>
[JsonConverter(typeof(StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum AccessPattern
{
    /// <summary>Every page equally likely.</summary>
    Uniform,
    /// <summary>90% of accesses go to a hot tenth of the pages, the rest anywhere.</summary>
    Hotspot,
    /// <summary>Each worker walks its pages in order, wrapping around.</summary>
    Sequential,
}

/// <summary>What a workload does: how many operations, how many writes, which pages, which seed.</summary>
public sealed class WorkloadOptions
{
    public long Operations { get; init; } = 10_000;
    public double WriteFraction { get; init; } = 0.3;
    public AccessPattern Pattern { get; init; } = AccessPattern.Uniform;
    public int Seed { get; init; }
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>Bytes each write stores (at a random offset in the page).</summary>
    public int WriteSize { get; init; } = 64;

    /// <summary>Keep a shadow copy of every page touched and check every read against it.</summary>
    public bool Verify { get; init; }
}

/// <summary>What a workload did and the faults it took.</summary>
public sealed record WorkloadResult(
    IReadOnlyList<string> Domains,
    int Threads,
    long Operations,
    long Reads,
    long Writes,
    long ZeroFillFaults,
    long CopyOnWriteFaults,
    long Mismatches,
    long Errors,
    bool Verified,
    TimeSpan Elapsed)
{
    public double OperationsPerSecond => Elapsed.TotalSeconds == 0 ? 0 : Operations / Elapsed.TotalSeconds;
    public long Faults => ZeroFillFaults + CopyOnWriteFaults + OtherFaults;

    /// <summary>Faults of the other kinds: PatternFill, Unpatch, Decompress and SwapIn.</summary>
    public long OtherFaults { get; init; }

    /// <summary>The first failing access's engine error (its ErrorId and Kind), when there was one.</summary>
    public DEException? FirstException { get; init; }

    /// <summary>The first failing access as "ErrorId: message", when there was one.</summary>
    public string? FirstError => FirstException is { } e ? $"{e.ErrorId}: {e.Message}" : null;
}

/// <summary>
/// Drives guest reads and writes from worker threads, like vCPUs. Worker t owns the pages whose
/// gfn is t modulo the worker count, so each worker's shadow copies are exact even while scans run.
/// </summary>
public static class WorkloadRunner
{
    public static WorkloadResult Run(IReadOnlyList<Domain> domains, WorkloadOptions options,
        Action<long>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(domains);
        if (domains.Count == 0)
            throw new DEException("WorkloadNoDomain", DEErrorKind.InvalidArgument, "A workload needs at least one domain.");
        if (options.Operations < 0 || options.WriteFraction is < 0 or > 1 || options.Threads < 1
            || options.WriteSize is < 1 or > PageGeometry.PageSize)
            throw new DEException("WorkloadOptionsInvalid", DEErrorKind.InvalidArgument,
                "Operations must be >= 0, WriteFraction within 0..1, Threads >= 1 and WriteSize within 1..4096.", options);
        int threads = (int)Math.Min(options.Threads, domains.Min(d => d.PageCount));
        var workers = new Worker[threads];
        long done = 0;
        var sw = Stopwatch.StartNew();
        var tasks = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            long ops = options.Operations / threads + (t < options.Operations % threads ? 1 : 0);
            var w = workers[t] = new Worker(domains, options, t, threads, ops);
            tasks[t] = new Thread(() => w.Run(ref done, progress, cancellationToken)) { IsBackground = true, Name = $"de-workload-{t}" };
            tasks[t].Start();
        }
        foreach (var th in tasks) th.Join();
        sw.Stop();
        cancellationToken.ThrowIfCancellationRequested();
        return new WorkloadResult(domains.Select(d => d.Name).ToArray(), threads,
            workers.Sum(w => w.Reads + w.Writes), workers.Sum(w => w.Reads), workers.Sum(w => w.Writes),
            workers.Sum(w => w.ZeroFill), workers.Sum(w => w.Cow), workers.Sum(w => w.Mismatches),
            workers.Sum(w => w.Errors), options.Verify, sw.Elapsed)
        {
            OtherFaults = workers.Sum(w => w.Other),
            FirstException = workers.Select(w => w.FirstException).FirstOrDefault(e => e is not null),
        };
    }

    private sealed class Worker(IReadOnlyList<Domain> domains, WorkloadOptions o, int index, int threads, long operations)
    {
        public long Reads, Writes, ZeroFill, Cow, Other, Mismatches, Errors;
        public DEException? FirstException;
        private readonly Random _rng = new(HashCode.Combine(o.Seed, index));
        private readonly long[] _cursor = new long[domains.Count];
        private readonly Dictionary<(int, long), byte[]>? _shadow = o.Verify ? new() : null;

        public void Run(ref long done, Action<long>? progress, CancellationToken ct)
        {
            var page = new byte[PageGeometry.PageSize];
            var data = new byte[o.WriteSize];
            for (long i = 0; i < operations; i++)
            {
                if ((i & 1023) == 0)
                {
                    if (ct.IsCancellationRequested) return;
                    if (i != 0) progress?.Invoke(Interlocked.Add(ref done, 1024));
                }
                int di = _rng.Next(domains.Count);
                var domain = domains[di];
                long gfn = PickGfn(di, domain.PageCount);
                try
                {
                    if (_rng.NextDouble() < o.WriteFraction) Write(di, domain, gfn, data, page);
                    else Read(di, domain, gfn, page);
                }
                catch (DEException ex)
                {
                    // A failing access (host out of memory, domain removed) stops this worker, not the others.
                    Errors++;
                    FirstException ??= ex;
                    return;
                }
            }
        }

        private void Write(int di, Domain domain, long gfn, byte[] data, byte[] page)
        {
            int offset = _rng.Next(PageGeometry.PageSize - data.Length + 1);
            _rng.NextBytes(data);
            byte[]? shadow = ShadowOf(di, domain, gfn, page);
            var fault = domain.WritePage(gfn, data, offset);
            data.CopyTo(shadow.AsSpan(offset));
            Writes++;
            Count(fault);
        }

        private void Read(int di, Domain domain, long gfn, byte[] page)
        {
            Count(domain.ReadPage(gfn, page));
            Reads++;
            if (_shadow is null) return;
            if (!_shadow.TryGetValue((di, gfn), out var expected)) _shadow[(di, gfn)] = (byte[])page.Clone();
            else if (!expected.AsSpan().SequenceEqual(page)) Mismatches++;
        }

        private byte[] ShadowOf(int di, Domain domain, long gfn, byte[] page)
        {
            if (_shadow is null) return page; // writes land in a scratch copy nobody checks
            if (!_shadow.TryGetValue((di, gfn), out var s))
            {
                domain.ReadPage(gfn, page);
                _shadow[(di, gfn)] = s = (byte[])page.Clone();
            }
            return s;
        }

        private void Count(FaultKind fault)
        {
            if (fault == FaultKind.ZeroFill) ZeroFill++;
            else if (fault == FaultKind.CopyOnWrite) Cow++;
            else if (fault != FaultKind.None) Other++;
        }

        private long PickGfn(int di, long pageCount)
        {
            long mine = (pageCount - index + threads - 1) / threads; // pages t, t+T, t+2T, ...
            long k = o.Pattern switch
            {
                AccessPattern.Sequential => _cursor[di]++ % mine,
                AccessPattern.Hotspot => _rng.NextDouble() < 0.9 ? _rng.NextInt64(Math.Max(1, mine / 10)) : _rng.NextInt64(mine),
                _ => _rng.NextInt64(mine),
            };
            return k * threads + index;
        }
    }
}
