using DifferenceEngine.Patching;

namespace DifferenceEngine.Hosting;

/// <summary>
/// Host-wide engine settings: the similarity detector HashSimilarityDetector(k, s) with c candidates
/// per key and its seed (the block offsets are drawn from it once), and the store's compaction trigger.
/// </summary>
public sealed class HostPolicy
{
    public const int DefaultKeys = 2;
    public const int DefaultBlocksPerKey = 1;
    public const int DefaultCandidates = 1;
    public const double DefaultCompactionThreshold = 0.25;

    internal HostPolicy(int seed)
    {
        Detector = new SimilarityDetector(DefaultKeys, DefaultBlocksPerKey, seed);
    }

    /// <summary>The detector in use; replaced (and the similarity tables emptied) when k, s or the seed change.</summary>
    public SimilarityDetector Detector { get; internal set; }

    /// <summary>k: similarity keys per page.</summary>
    public int SimilarityKeys => Detector.Keys;

    /// <summary>s: 64-byte blocks per key.</summary>
    public int SimilarityBlocksPerKey => Detector.BlocksPerKey;

    /// <summary>The seed the block offsets were drawn from.</summary>
    public int SimilaritySeed => Detector.Seed;

    /// <summary>The 64-byte block offsets, fixed for the detector's life.</summary>
    public IReadOnlyList<int> SimilarityOffsets => Detector.Offsets;

    /// <summary>c: candidate pages kept per key (the first ones seen).</summary>
    public int SimilarityCandidates { get; internal set; } = DefaultCandidates;

    /// <summary>Free memory (fraction of the limit) under which background reclaim starts.</summary>
    public double LowWatermark { get; internal set; } = 0.05;

    /// <summary>Free memory (fraction of the limit) at which background reclaim stops.</summary>
    public double HighWatermark { get; internal set; } = 0.10;

    /// <summary>Store fragmentation (wasted / allocated) above which a pass ends with a compaction.</summary>
    public double CompactionThreshold { get; internal set; } = DefaultCompactionThreshold;
}
