namespace DifferenceEngine.Hosting;

/// <summary>Settings of an embedded host, fixed when it is created.</summary>
public sealed class HostOptions
{
    /// <summary>A name for the host, shown by Get-DEHost.</summary>
    public string Name { get; init; } = "embedded";

    /// <summary>
    /// The most machine memory (frames and the store) the host may use for guest pages, in whole pages (rounded down to a
    /// multiple of 4096 bytes; at least one page, else "MemoryLimitInvalid"); null for no limit.
    /// </summary>
    public long? MemoryLimitBytes { get; init; }

    /// <summary>
    /// A new file to page guest memory out to when the limit is reached (created 0600, its name removed as soon as it
    /// is reserved: nothing stays on disk when the process ends; its space is given back on disconnect). Needs
    /// <see cref="MemoryLimitBytes"/>.
    /// </summary>
    public string? SwapPath { get; init; }

    /// <summary>
    /// The folder for the crash journals of QEMU domains (unnamed files, mode 0600, that only the engine and the guest's
    /// QEMU hold; docs/QEMU.md, "Crash safety"). Null: the swap file's folder, else /var/tmp. Put it on a disk: on tmpfs
    /// the journals would hold in memory what the engine takes out of the guests.
    /// </summary>
    public string? JournalDirectory { get; init; }

    /// <summary>Size of the swap file, a positive multiple of 4096 bytes; 4 GiB when null. Needs <see cref="SwapPath"/>
    /// ("SwapSizeNeedsSwapPath").</summary>
    public long? SwapSizeBytes { get; init; }

    /// <summary>Tests only: makes the swap storage (to inject failing writes and reads).</summary>
    internal Func<string, long, Paging.ISwapStorage>? SwapStorageFactory { get; init; }

    /// <summary>Seed of the similarity detector's block offsets; random (and recorded in <see cref="HostPolicy"/>) when null.</summary>
    public int? SimilaritySeed { get; init; }
}

/// <summary>Options for a new domain.</summary>
public sealed class DomainOptions
{
    public string TrustGroup { get; init; } = Domains.DomainPolicy.DefaultTrustGroup;
    public int C4Sweeps { get; init; } = Domains.DomainPolicy.DefaultC4Sweeps;
    public bool SharingEnabled { get; init; }
    public bool PatchingEnabled { get; init; }
    public bool CompressionEnabled { get; init; }
    public Codecs.CompressionAlgorithm CompressionAlgorithm { get; init; } = Codecs.CompressionAlgorithm.LZ4;
    public int PatchThreshold { get; init; } = Domains.DomainPolicy.DefaultPatchThreshold;
    public double CompressionThreshold { get; init; } = Domains.DomainPolicy.DefaultCompressionThreshold;
    /// <summary>Most pages in a page group; 0 for none (see <see cref="Domains.DomainPolicy.GroupSize"/>).</summary>
    public int GroupSize { get; init; } = Domains.DomainPolicy.DefaultGroupSize;
    public int GroupAfterSweeps { get; init; } = Domains.DomainPolicy.DefaultGroupAfterSweeps;
    public Codecs.CompressionAlgorithm GroupAlgorithm { get; init; } = Codecs.CompressionAlgorithm.Zstd;
}
