using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// A snapshot of a host's policy (similarity detector, store compaction, reclaim watermarks), as Get-DEPolicy -HostPolicy
/// shows it. On a Xen host compaction and the watermarks do not apply (the pager has no slab store and no frames of its
/// own to keep free): they are null.
/// </summary>
public sealed class HostPolicyView
{
    public HostPolicyView(IDEHost host)
    {
        ArgumentNullException.ThrowIfNull(host);
        var policy = host.Policy;
        bool embedded = host is not XenHost;
        Host = host.Name;
        Kind = host.Kind;
        SimilarityKeys = policy.SimilarityKeys;
        SimilarityBlocksPerKey = policy.SimilarityBlocksPerKey;
        SimilarityCandidates = policy.SimilarityCandidates;
        SimilaritySeed = policy.SimilaritySeed;
        SimilarityOffsets = [.. policy.SimilarityOffsets];
        CompactionThreshold = embedded ? policy.CompactionThreshold : null;
        LowWatermark = embedded ? policy.LowWatermark : null;
        HighWatermark = embedded ? policy.HighWatermark : null;
    }

    public string Host { get; }

    /// <summary>The kind of host: "Embedded" or "Xen".</summary>
    public string Kind { get; }

    /// <summary>k: similarity keys per page.</summary>
    public int SimilarityKeys { get; }

    /// <summary>s: 64-byte blocks hashed into each key.</summary>
    public int SimilarityBlocksPerKey { get; }

    /// <summary>c: candidate pages kept per key.</summary>
    public int SimilarityCandidates { get; }

    /// <summary>The seed the block offsets were drawn from.</summary>
    public int SimilaritySeed { get; }

    /// <summary>The k*s block offsets in the page, fixed until k, s or the seed change.</summary>
    public int[] SimilarityOffsets { get; }

    /// <summary>Store fragmentation (wasted / allocated) above which a pass ends with a compaction; null on Xen.</summary>
    public double? CompactionThreshold { get; }

    /// <summary>Free memory (fraction of the limit) under which background reclaim starts; used only with a memory limit; null on Xen.</summary>
    public double? LowWatermark { get; }

    /// <summary>Free memory (fraction of the limit) at which reclaim stops; null on Xen.</summary>
    public double? HighWatermark { get; }

    public override string ToString() => Host;
}
