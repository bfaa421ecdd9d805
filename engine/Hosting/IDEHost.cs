using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Scanning;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Hosting;

/// <summary>
/// What every kind of host does: the embedded host (<see cref="DEHost"/>, guest memory in this process) and a Xen host
/// (<see cref="Xen.XenHost"/>, guest memory in Xen's domains). The cmdlets drive either through it.
/// </summary>
public interface IDEHost : IDisposable
{
    string Name { get; }

    /// <summary>"Embedded" or "Xen".</summary>
    string Kind { get; }

    DateTimeOffset Connected { get; }

    bool IsConnected { get; }

    /// <summary>Host-wide engine settings (similarity detector and the rest).</summary>
    HostPolicy Policy { get; }

    long ScanPasses { get; }

    /// <summary>The domains, in id order (on Xen as Xen lists them now, domain 0 included).</summary>
    IReadOnlyList<IDEDomain> Domains { get; }

    /// <summary>The domain of this name (on Xen also of this domain id); null when there is none.</summary>
    IDEDomain? TryGetDomain(string name);

    /// <summary>
    /// Engine passes over <paramref name="domains"/> of this host, or, when null, over its default set: every domain
    /// (embedded), every domU with a mechanism on (Xen). A domain of another host is "DomainNotFound".
    /// </summary>
    ScanResult Scan(IEnumerable<IDEDomain>? domains, ScanOptions? options, Action<ScanProgress>? progress,
        CancellationToken cancellationToken);

    /// <summary>
    /// Changes the similarity detector, the compaction threshold and the paging watermarks (null leaves a value as it is).
    /// A Xen host has no store to compact and no frames to keep free: compaction and watermarks are
    /// "HostPolicyNotApplicable" there.
    /// </summary>
    void SetHostPolicy(int? keys, int? blocksPerKey, int? candidates, int? seed, double? compactionThreshold,
        double? lowWatermark, double? highWatermark);

    /// <summary>The host-wide figures: <see cref="TakeSnapshot"/>'s host part.</summary>
    HostStats GetStats(CancellationToken cancellationToken = default);

    /// <summary>
    /// Every domain's page stats (on Xen every guest domain: domain 0 is not treated) and the host's totals, measured
    /// together so that they add up to the byte (docs/REPORT-SCHEMA.md, "The numbers").
    /// </summary>
    /// <remarks>
    /// An embedded host measures between two passes: with the engine or a scan running it waits for the pass in progress
    /// (one pass at most), and <paramref name="cancellationToken"/> ends that wait with OperationCanceledException.
    /// </remarks>
    HostSnapshot TakeSnapshot(CancellationToken cancellationToken = default);

    /// <summary>The latency histogram of one kind of fault (on Xen: the page-ins the pager served, by how it rebuilt them).</summary>
    LatencyHistogram FaultHistogram(FaultKind kind);

    EngineStatus StartEngine(TimeSpan interval);

    EngineStatus? StopEngine();

    EngineStatus EngineStatus { get; }

    IReadOnlyList<StatsSample> History { get; }
}

/// <summary>What every kind of domain does: an embedded <see cref="Domain"/> or a <see cref="Xen.XenDomain"/>.</summary>
public interface IDEDomain
{
    string Name { get; }

    /// <summary>
    /// An embedded domain's id is unique in the process (never given again, even by another host of the same name); a Xen
    /// domain's is Xen's domain id.
    /// </summary>
    int Id { get; }

    IDEHost Host { get; }

    DomainPolicy Policy { get; }

    bool IsRemoved { get; }

    /// <summary>"Running", "Loading", "OutOfMemory", "Paused", "Removed" and so on.</summary>
    string Status { get; }

    long PageCount { get; }

    long SizeBytes { get; }

    void EnableSharing();

    long DisableSharing(bool unshare);

    void EnablePatching();

    long DisablePatching(bool restore);

    void EnableCompression(CompressionAlgorithm? algorithm);

    long DisableCompression(bool restore);

    /// <summary>
    /// Changes policy values (null leaves one as it is). The page-group values apply on the embedded host (and its QEMU
    /// guests); a Xen host refuses them (NotSupportedOnXenHost).
    /// </summary>
    void SetPolicy(int? c4Sweeps, int? patchThreshold, double? compressionThreshold, CompressionAlgorithm? algorithm,
        string? trustGroup, int? groupSize = null, int? groupAfterSweeps = null, CompressionAlgorithm? groupAlgorithm = null);

    /// <summary>The domain's page stats as the host's snapshot has them (<see cref="IDEHost.TakeSnapshot"/>, whose wait
    /// <paramref name="cancellationToken"/> ends).</summary>
    DomainPageStats GetPageStats(CancellationToken cancellationToken = default);

    /// <summary>
    /// A guest page's bytes: as the guest reads it (embedded), or without disturbing the guest (Xen: a read-only mapping, or
    /// the pager's copy of a page it holds).
    /// </summary>
    byte[] ReadPage(long gfn);
}

internal static class DomainsOf
{
    /// <summary>The domains as <typeparamref name="T"/>, the kind of domain a host has; one of another kind is "DomainNotFound".</summary>
    public static T[]? Cast<T>(IEnumerable<IDEDomain>? domains) where T : class, IDEDomain =>
        domains?.Select(d => d as T ?? throw DEHost.DomainNotFound(d.Name)).ToArray();
}
