using DifferenceEngine.Domains;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Reports;

/// <summary>One fault kind's count, percentiles and latency histogram at report time.</summary>
public sealed record FaultDistribution(FaultKind Kind, long Count, TimeSpan P50, TimeSpan P99, TimeSpan Mean,
    IReadOnlyList<LatencyBucket> Buckets)
{
    public static FaultDistribution From(FaultKind kind, LatencyHistogram histogram)
    {
        // Read the buckets first: a fault recorded meanwhile then shows in Count, never only in a bucket.
        var buckets = histogram.Buckets()
            // The histogram's bounds are rounded to TimeSpan ticks (100 ns), so neighbours can coincide.
            .GroupBy(b => b.UpperBound)
            .Select(g => new LatencyBucket(g.Key, g.Sum(b => b.Count)))
            .OrderBy(b => b.UpperBound)
            .ToArray();
        return new FaultDistribution(kind, histogram.Count, histogram.Percentile(50), histogram.Percentile(99), histogram.Mean, buckets);
    }
}

/// <summary>Faults whose servicing took at most <paramref name="UpperBound"/> (and more than the previous bucket's bound).</summary>
public sealed record LatencyBucket(TimeSpan UpperBound, long Count);
