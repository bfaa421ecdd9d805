using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Reports;

/// <summary>
/// Everything a report shows, taken from a host at one moment: per-domain and host-wide aggregates,
/// the engine's history and the fault latency histograms. Never page contents, nor anything derived
/// from them (no hashes): the writers can only show what this holds.
/// </summary>
public sealed record ReportModel(
    DateTimeOffset GeneratedAt,
    string GeneratorVersion,
    MachineInfo Machine,
    string HostName,
    DateTimeOffset HostConnected,
    HostStats HostStats,
    EngineStatus Engine,
    PolicySnapshot Policy,
    bool AllDomains,
    IReadOnlyList<DomainReport> Domains,
    IReadOnlyList<StatsSample> History,
    IReadOnlyList<FaultDistribution> Faults)
{
    /// <summary>
    /// Takes a report's data from <paramref name="host"/>, embedded or Xen: the given domains (in that order), or, when
    /// <paramref name="domains"/> is null, every domain of the host (on Xen every guest domain: domain 0 is not
    /// treated). Host-wide numbers always cover the whole host. A domain removed or of another host is "DomainNotFound".
    /// </summary>
    public static ReportModel FromHost(IDEHost host, IEnumerable<IDEDomain>? domains = null, DateTimeOffset? now = null)
    {
        ArgumentNullException.ThrowIfNull(host);
        var chosen = domains?.ToArray() ?? host.Domains.Where(d => d is not Xen.XenDomain { IsControlDomain: true }).ToArray();
        foreach (var d in chosen)
        {
            ArgumentNullException.ThrowIfNull(d);
            if (!ReferenceEquals(d.Host, host) || d.IsRemoved) throw DEHost.DomainNotFound(d.Name);
        }
        var hostStats = host.GetStats();
        var domainReports = chosen.Select(d => DomainReport.From(d.GetPageStats(), d.Policy)).ToArray();
        var faults = FaultCounters.Kinds
            .Select(kind => FaultDistribution.From(kind, host.FaultHistogram(kind)))
            .ToArray();
        return new ReportModel(
            now ?? DateTimeOffset.Now,
            GeneratorVersionOf(typeof(ReportModel).Assembly),
            MachineInfo.Current(),
            host.Name,
            host.Connected,
            hostStats,
            host.EngineStatus,
            PolicySnapshot.From(host.Policy),
            domains is null,
            domainReports,
            host.History,
            faults)
        {
            HostKind = host.Kind,
        };
    }

    /// <summary>"Embedded" or "Xen" (<see cref="IDEHost.Kind"/>).</summary>
    public string HostKind { get; init; } = "Embedded";

    /// <summary>Totals over <see cref="Domains"/> (the domains in this report, not necessarily the whole host).</summary>
    public DomainTotals Totals => DomainTotals.Of(Domains.Select(d => d.Stats));

    private static string GeneratorVersionOf(System.Reflection.Assembly assembly)
    {
        var informational = assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion;
        // "0.1.0+<commit>": the commit is noise in a report.
        return informational?.Split('+')[0] ?? assembly.GetName().Version?.ToString() ?? "0.0.0";
    }
}

/// <summary>A domain's row of a report: its page stats plus the policy settings the stats do not carry.</summary>
public sealed record DomainReport(DomainPageStats Stats, int PatchThreshold, double CompressionThreshold, int C4Sweeps)
{
    public static DomainReport From(DomainPageStats stats, DomainPolicy policy) =>
        new(stats, policy.PatchThreshold, policy.CompressionThreshold, policy.C4Sweeps);
}

/// <summary>Sums over the domains of a report, for its totals row.</summary>
public sealed record DomainTotals(
    int Domains, long PageCount, long PrivatePages, long ZeroPages, long UniformPages, long SharedPages,
    long PatchedPages, long CompressedPages, long SwappedPages, long GuestBytes, long BytesUsed, long StoredBytes)
{
    public long BytesSaved => GuestBytes - BytesUsed;
    public double SavingsPercent => GuestBytes == 0 ? 0 : Math.Round(100.0 * BytesSaved / GuestBytes, 2);

    public static DomainTotals Of(IEnumerable<DomainPageStats> stats)
    {
        var list = stats.ToArray();
        return new DomainTotals(list.Length, list.Sum(s => s.PageCount), list.Sum(s => s.PrivatePages), list.Sum(s => s.ZeroPages),
            list.Sum(s => s.UniformPages), list.Sum(s => s.SharedPages), list.Sum(s => s.PatchedPages), list.Sum(s => s.CompressedPages),
            list.Sum(s => s.SwappedPages), list.Sum(s => s.GuestBytes), list.Sum(s => s.BytesUsed), list.Sum(s => s.StoredBytes));
    }
}

/// <summary>The host-wide engine settings at report time (a copy: <see cref="HostPolicy"/> changes).</summary>
public sealed record PolicySnapshot(
    int SimilarityKeys, int SimilarityBlocksPerKey, int SimilarityCandidates, int SimilaritySeed,
    double LowWatermark, double HighWatermark, double CompactionThreshold)
{
    public static PolicySnapshot From(HostPolicy policy) =>
        new(policy.SimilarityKeys, policy.SimilarityBlocksPerKey, policy.SimilarityCandidates, policy.SimilaritySeed,
            policy.LowWatermark, policy.HighWatermark, policy.CompactionThreshold);
}
