using DifferenceEngine.Codecs;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// A snapshot of one domain's policy with its host's detector settings beside it, as Get-DEPolicy
/// shows it; its Domain property binds to -Domain of the other cmdlets.
/// </summary>
public sealed class DomainPolicyView
{
    public DomainPolicyView(IDEDomain domain)
    {
        ArgumentNullException.ThrowIfNull(domain);
        var policy = domain.Policy;
        var hostPolicy = domain.Host.Policy;
        Host = domain.Host.Name;
        Domain = domain.Name;
        DomainId = domain.Id;
        TrustGroup = policy.TrustGroup;
        SharingEnabled = policy.SharingEnabled;
        PatchingEnabled = policy.PatchingEnabled;
        CompressionEnabled = policy.CompressionEnabled;
        CompressionAlgorithm = policy.CompressionAlgorithm.ToString();
        PatchThreshold = policy.PatchThreshold;
        CompressionThreshold = policy.CompressionThreshold;
        C4Sweeps = policy.C4Sweeps;
        if (domain.Host is not XenHost)
        {
            GroupSize = policy.GroupSize;
            GroupAfterSweeps = policy.GroupAfterSweeps;
            GroupAlgorithm = policy.GroupAlgorithm.ToString();
        }
        SimilarityKeys = hostPolicy.SimilarityKeys;
        SimilarityBlocksPerKey = hostPolicy.SimilarityBlocksPerKey;
        SimilarityCandidates = hostPolicy.SimilarityCandidates;
        SimilaritySeed = hostPolicy.SimilaritySeed;
        CompactionThreshold = domain.Host is XenHost ? null : hostPolicy.CompactionThreshold;
    }

    public string Host { get; }
    public string Domain { get; }
    public int DomainId { get; }
    public string TrustGroup { get; }
    public bool SharingEnabled { get; }
    public bool PatchingEnabled { get; }
    public bool CompressionEnabled { get; }

    /// <summary>
    /// The codec for pages compressed from now on (pages already compressed keep theirs): LZ4, WKdm or Zstd. A name, so
    /// ConvertTo-Json and Export-Csv write the name; Set-DEPolicy -CompressionAlgorithm takes it back.
    /// </summary>
    public string CompressionAlgorithm { get; }

    /// <summary>Largest patch accepted, in bytes.</summary>
    public int PatchThreshold { get; }

    /// <summary>Largest compressed size accepted, as a fraction of the page.</summary>
    public double CompressionThreshold { get; }

    /// <summary>Sweeps without access after which a page is C4.</summary>
    public int C4Sweeps { get; }

    /// <summary>
    /// Most pages compressed together in one page group (long-cold compressed pages, in gfn order); 0 when groups are
    /// off; null on Xen, where every page is compressed alone.
    /// </summary>
    public int? GroupSize { get; }

    /// <summary>Sweeps a compressed page stays untouched past C4 before it may be grouped; null on Xen.</summary>
    public int? GroupAfterSweeps { get; }

    /// <summary>The codec of page groups (Zstd or LZ4); null on Xen.</summary>
    public string? GroupAlgorithm { get; }

    /// <summary>The host's detector: k, keys per page.</summary>
    public int SimilarityKeys { get; }

    /// <summary>The host's detector: s, 64-byte blocks per key.</summary>
    public int SimilarityBlocksPerKey { get; }

    /// <summary>The host's detector: c, candidate pages kept per key.</summary>
    public int SimilarityCandidates { get; }

    /// <summary>The seed the host's block offsets were drawn from.</summary>
    public int SimilaritySeed { get; }

    /// <summary>The host's store fragmentation above which a pass ends with a compaction; null on Xen (no store there).</summary>
    public double? CompactionThreshold { get; }

    public override string ToString() => Domain;
}
