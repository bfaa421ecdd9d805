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
    /// Takes a report's data from <paramref name="host"/>, embedded or Xen, in one snapshot: the given domains (in that
    /// order), or, when <paramref name="domains"/> is null, every domain of the host (on Xen every guest domain: domain 0
    /// is not treated). <see cref="HostStats"/> covers the whole host; <see cref="Summary"/> the domains reported (the host's
    /// figures when they are every domain of the snapshot, however they were given). The
    /// history ends with a sample of this snapshot, so its last point is the report's own. A domain removed or of
    /// another host is "DomainNotFound".
    /// </summary>
    public static ReportModel FromHost(IDEHost host, IEnumerable<IDEDomain>? domains = null, DateTimeOffset? now = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(host);
        var chosen = domains?.ToArray() ?? host.Domains.Where(d => d is not Xen.XenDomain { IsControlDomain: true }).ToArray();
        foreach (var d in chosen)
        {
            ArgumentNullException.ThrowIfNull(d);
            if (!ReferenceEquals(d.Host, host) || d.IsRemoved) throw DEHost.DomainNotFound(d.Name);
        }
        var snapshot = host.TakeSnapshot(cancellationToken);
        var domainReports = chosen
            // A domain the snapshot leaves out (Xen's domain 0, named) is measured alone.
            .Select(d => DomainReport.From(snapshot.Find(d.Id) ?? d.GetPageStats(cancellationToken), d.Policy))
            .ToArray();
        var time = now ?? DateTimeOffset.Now;
        var faults = FaultCounters.Kinds
            .Select(kind => FaultDistribution.From(kind, host.FaultHistogram(kind)))
            .ToArray();
        var history = host.History;
        // The last point is the report's: the tiles and the chart agree. Its faults are the report's own counts (read
        // from the histograms just now; faults taken since the snapshot count there too, as they would in the tiles).
        if (history.Count > 0) history = [.. history, StatsSample.From(snapshot.Host, time) with { Faults = faults.Sum(f => f.Count) }];
        return new ReportModel(
            time,
            GeneratorVersionOf(typeof(ReportModel).Assembly),
            MachineInfo.Current(),
            host.Name,
            host.Connected,
            snapshot.Host,
            host.EngineStatus,
            PolicySnapshot.From(host),
            // Every domain, however asked for (-Domain *, Get-DEDomain piped): the same headline as a report of the host.
            chosen.Select(d => d.Id).ToHashSet().SetEquals(snapshot.Domains.Select(d => d.DomainId)),
            domainReports,
            history,
            faults)
        {
            HostKind = host.Kind,
        };
    }

    /// <summary>"Embedded" or "Xen" (<see cref="IDEHost.Kind"/>).</summary>
    public string HostKind { get; init; } = "Embedded";

    /// <summary>Totals over <see cref="Domains"/> (the domains in this report, not necessarily the whole host).</summary>
    public DomainTotals Totals => DomainTotals.Of(Domains.Select(d => d.Stats));

    /// <summary>
    /// The report's headline: for a report of every domain the host's figures, with memory used in its parts (the
    /// domains, the store's slack, metadata, and bytes charged to no page when there are any); for a report of some
    /// domains, those domains' figures alone (host-wide costs are charged to no domain).
    /// </summary>
    public ReportSummary Summary => ReportSummary.Of(this);

    private static string GeneratorVersionOf(System.Reflection.Assembly assembly)
    {
        var informational = assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion;
        // "0.1.0+<commit>": the commit is noise in a report.
        return informational?.Split('+')[0] ?? assembly.GetName().Version?.ToString() ?? "0.0.0";
    }
}

/// <summary>
/// The figures a report leads with: guest memory, memory used (in parts that add up to it) and saved, to the byte:
/// <see cref="GuestBytes"/> = <see cref="MemoryUsedBytes"/> + <see cref="SavedBytes"/>. docs/REPORT-SCHEMA.md,
/// "The numbers", defines them.
/// </summary>
public sealed record ReportSummary(long GuestBytes, long UntouchedBytes, IReadOnlyList<UsedPart> Parts)
{
    public long MemoryUsedBytes => Parts.Sum(p => p.Bytes);
    public long SavedBytes => GuestBytes - MemoryUsedBytes;
    public double SavingsPercent => GuestBytes == 0 ? 0 : Math.Round(100.0 * SavedBytes / GuestBytes, 2);

    public static ReportSummary Of(ReportModel model)
    {
        var t = model.Totals;
        if (!model.AllDomains)
            return new ReportSummary(t.GuestBytes, t.UntouchedPages * Memory.PageGeometry.PageSize, [new UsedPart(UsedPart.Domains, t.BytesUsed)]);
        var s = model.HostStats;
        var parts = new List<UsedPart>
        {
            new(UsedPart.Domains, s.DomainsUsedBytes),
            new(UsedPart.StoreSlack, s.StoreSlackBytes),
            new(UsedPart.Metadata, s.MetadataBytes),
        };
        // Frames or blobs in flight during the snapshot: shown only when there are any, so that the parts still add up.
        if (s.UnchargedBytes != 0) parts.Add(new UsedPart(UsedPart.Uncharged, s.UnchargedBytes));
        return new ReportSummary(s.GuestBytes, s.UntouchedBytes, parts);
    }
}

/// <summary>One part of a report's memory used: <see cref="Domains"/>, <see cref="StoreSlack"/>, <see cref="Metadata"/>, <see cref="Uncharged"/>.</summary>
public sealed record UsedPart(string Part, long Bytes)
{
    /// <summary>The frames and stored bytes charged to the reported domains' pages (their BytesUsed).</summary>
    public const string Domains = "Domains";
    /// <summary>The store's slabs not filled by blobs.</summary>
    public const string StoreSlack = "StoreSlack";
    /// <summary>The engine's own tables: P2M, frame, sharing and store metadata.</summary>
    public const string Metadata = "Metadata";
    /// <summary>Frames and blobs charged to no page when the snapshot was taken (in flight); 0 at rest.</summary>
    public const string Uncharged = "Uncharged";
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
    public long UntouchedPages { get; init; }

    public long BytesSaved => GuestBytes - BytesUsed;
    public double SavingsPercent => GuestBytes == 0 ? 0 : Math.Round(100.0 * BytesSaved / GuestBytes, 2);

    public static DomainTotals Of(IEnumerable<DomainPageStats> stats)
    {
        var list = stats.ToArray();
        return new DomainTotals(list.Length, list.Sum(s => s.PageCount), list.Sum(s => s.PrivatePages), list.Sum(s => s.ZeroPages),
            list.Sum(s => s.UniformPages), list.Sum(s => s.SharedPages), list.Sum(s => s.PatchedPages), list.Sum(s => s.CompressedPages),
            list.Sum(s => s.SwappedPages), list.Sum(s => s.GuestBytes), list.Sum(s => s.BytesUsed), list.Sum(s => s.StoredBytes))
        {
            UntouchedPages = list.Sum(s => s.UntouchedPages),
        };
    }
}

/// <summary>
/// The host-wide engine settings at report time (a copy: <see cref="HostPolicy"/> changes), as Get-DEPolicy -HostPolicy
/// shows them: on a Xen host the watermarks and the compaction threshold do not apply (the pager has no slab store and no
/// frames of its own to keep free), and are null.
/// </summary>
public sealed record PolicySnapshot(
    int SimilarityKeys, int SimilarityBlocksPerKey, int SimilarityCandidates, int SimilaritySeed,
    double? LowWatermark, double? HighWatermark, double? CompactionThreshold)
{
    /// <summary>The settings of <paramref name="host"/>'s policy; without the embedded host's own on a Xen host.</summary>
    public static PolicySnapshot From(IDEHost host)
    {
        var policy = host.Policy;
        bool embedded = host is not Xen.XenHost;
        return new(policy.SimilarityKeys, policy.SimilarityBlocksPerKey, policy.SimilarityCandidates, policy.SimilaritySeed,
            embedded ? policy.LowWatermark : null, embedded ? policy.HighWatermark : null, embedded ? policy.CompactionThreshold : null);
    }
}
