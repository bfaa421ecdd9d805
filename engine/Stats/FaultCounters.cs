using DifferenceEngine.Domains;

namespace DifferenceEngine.Stats;

/// <summary>Counts and times every fault the host services, one latency histogram per kind.</summary>
public sealed class FaultCounters
{
    /// <summary>The fault kinds the engine services.</summary>
    public static IReadOnlyList<FaultKind> Kinds { get; } = Array.AsReadOnly(
        [FaultKind.ZeroFill, FaultKind.CopyOnWrite, FaultKind.PatternFill, FaultKind.Unpatch, FaultKind.Decompress, FaultKind.SwapIn]);

    private readonly LatencyHistogram[] _byKind;

    public FaultCounters()
    {
        _byKind = new LatencyHistogram[Enum.GetValues<FaultKind>().Length];
        for (int i = 0; i < _byKind.Length; i++) _byKind[i] = new LatencyHistogram();
    }

    public void Record(FaultKind kind, long stopwatchTicks) => _byKind[(int)kind].RecordTicks(stopwatchTicks);

    public LatencyHistogram this[FaultKind kind] =>
        (uint)kind < (uint)_byKind.Length ? _byKind[(int)kind]
        : throw new ArgumentOutOfRangeException(nameof(kind), kind, "Not a fault kind.");

    public IReadOnlyList<FaultStats> Snapshot() =>
        Kinds.Select(k => new FaultStats(k, this[k].Count, this[k].Percentile(50), this[k].Percentile(99), this[k].Mean)).ToArray();
}

/// <summary>How often one kind of fault happened and how long servicing it took.</summary>
public sealed record FaultStats(FaultKind Kind, long Count, TimeSpan P50, TimeSpan P99, TimeSpan Mean)
{
    public double P50Microseconds => P50.TotalMicroseconds;
    public double P99Microseconds => P99.TotalMicroseconds;
    public double MeanMicroseconds => Mean.TotalMicroseconds;
}

/// <summary>Time the engine's workers spent in one mechanism, and the pages they handled.</summary>
public sealed record MechanismTime(string Mechanism, TimeSpan BusyTime, long Pages)
{
    public double NanosecondsPerPage => Pages == 0 ? 0 : BusyTime.TotalNanoseconds / Pages;
}
