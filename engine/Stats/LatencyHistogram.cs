using System.Diagnostics;
using System.Numerics;

namespace DifferenceEngine.Stats;

/// <summary>
/// Lock-free log-linear histogram of durations (8 sub-buckets per power of two of nanoseconds,
/// about 9% resolution): recording is one interlocked increment, percentiles are read on demand.
/// </summary>
public sealed class LatencyHistogram
{
    private const int SubBits = 3;
    private const int Sub = 1 << SubBits;
    private readonly long[] _buckets = new long[64 * Sub];
    private long _count;
    private long _sumNs;

    public long Count => Interlocked.Read(ref _count);

    /// <summary>
    /// A copy of the samples recorded so far, for a caller to read (or add to) without touching this one: a host hands out
    /// copies of its fault histograms. Taken while others record, its count and buckets may be a sample or two apart.
    /// </summary>
    public LatencyHistogram Copy()
    {
        var copy = new LatencyHistogram();
        for (int i = 0; i < _buckets.Length; i++) copy._buckets[i] = Interlocked.Read(ref _buckets[i]);
        copy._sumNs = Interlocked.Read(ref _sumNs);
        copy._count = copy._buckets.Sum();
        return copy;
    }

    public void RecordTicks(long stopwatchTicks)
    {
        long ns = (long)(stopwatchTicks * (1_000_000_000.0 / Stopwatch.Frequency));
        RecordNanoseconds(ns);
    }

    public void RecordNanoseconds(long ns)
    {
        if (ns < 1) ns = 1;
        Interlocked.Increment(ref _buckets[IndexOf((ulong)ns)]);
        Interlocked.Increment(ref _count);
        Interlocked.Add(ref _sumNs, ns);
    }

    /// <summary>The duration below which <paramref name="percentile"/> percent of samples fall; zero when empty.</summary>
    public TimeSpan Percentile(double percentile)
    {
        if (double.IsNaN(percentile) || percentile is < 0 or > 100)
            throw new ArgumentOutOfRangeException(nameof(percentile), percentile, "A percentile is between 0 and 100.");
        long total = Count;
        if (total == 0) return TimeSpan.Zero;
        long rank = Math.Max(1, (long)Math.Ceiling(total * percentile / 100.0));
        long seen = 0;
        for (int i = 0; i < _buckets.Length; i++)
        {
            seen += Interlocked.Read(ref _buckets[i]);
            if (seen >= rank) return FromNanoseconds(UpperBound(i));
        }
        return FromNanoseconds(UpperBound(_buckets.Length - 1));
    }

    public TimeSpan Mean => Count == 0 ? TimeSpan.Zero : FromNanoseconds((double)Interlocked.Read(ref _sumNs) / Count);

    public TimeSpan Total => FromNanoseconds(Interlocked.Read(ref _sumNs));

    /// <summary>Counts per bucket as (upper bound, count), for charts; empty buckets left out.</summary>
    public IReadOnlyList<(TimeSpan UpperBound, long Count)> Buckets()
    {
        var list = new List<(TimeSpan, long)>();
        for (int i = 0; i < _buckets.Length; i++)
        {
            long c = Interlocked.Read(ref _buckets[i]);
            if (c != 0) list.Add((FromNanoseconds(UpperBound(i)), c));
        }
        return list;
    }

    private static int IndexOf(ulong ns)
    {
        if (ns < Sub) return (int)ns;
        int msb = 63 - BitOperations.LeadingZeroCount(ns);
        int sub = (int)(ns >> (msb - SubBits)) & (Sub - 1);
        return ((msb - SubBits + 1) << SubBits) + sub;
    }

    private static double UpperBound(int index)
    {
        if (index < Sub) return index + 1;
        int group = (index >> SubBits) + SubBits - 1;
        int sub = index & (Sub - 1);
        return Math.Pow(2, group) * (1 + (sub + 1) / (double)Sub);
    }

    private static TimeSpan FromNanoseconds(double ns) => TimeSpan.FromTicks((long)Math.Round(ns / 100.0));
}
