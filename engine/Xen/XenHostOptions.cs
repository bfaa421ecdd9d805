namespace DifferenceEngine.Xen;

/// <summary>How to connect to the local Xen: the host's name and the pager's memory, swap and similarity settings.</summary>
public sealed class XenHostOptions
{
    public string Name { get; init; } = "xen";

    /// <summary>
    /// The most memory (bytes) the pager may hold for the pages it took (compressed pages, patches, reference pages) before
    /// it writes the oldest to <see cref="SwapPath"/>. Needs SwapPath; no limit by default.
    /// </summary>
    public long? PagerMemoryLimitBytes { get; init; }

    /// <summary>A new swap file for the pager (created 0600, preallocated, its name removed once made, closed on disconnect); none by default.</summary>
    public string? SwapPath { get; init; }

    /// <summary>Size of the swap file, a multiple of 4096; 4 GiB by default. Only with <see cref="SwapPath"/> ("SwapSizeNeedsSwapPath").</summary>
    public long? SwapSizeBytes { get; init; }

    /// <summary>Seed of the similarity detector's block offsets; random by default.</summary>
    public int? SimilaritySeed { get; init; }
}
