namespace DifferenceEngine.Stats;

/// <summary>
/// Pages per state and the memory a domain uses and saves (docs/REPORT-SCHEMA.md, "The numbers"). The page counts add
/// up to <see cref="PageCount"/>. Guest memory is the pages the guest populated (<see cref="UntouchedPages"/> are not).
/// Memory used is the domain's charge: a shared frame is charged to its users in equal parts (patches that use it as
/// their reference count as users); a patch or compressed page is charged its stored bytes, and a compressed shared
/// frame is charged to the pages that name it in equal parts. The charges of a host's domains are rounded together so
/// that they add up to the host's <see cref="HostStats.DomainsUsedBytes"/> to the byte. Saved is guest memory minus
/// used. Host-wide costs (metadata, the store's slack) are charged to no domain: <see cref="HostStats"/> has them.
/// </summary>
public sealed record DomainPageStats(
    string Domain,
    int DomainId,
    long PageCount,
    long PrivatePages,
    long ZeroPages,
    long SharedPages,
    long GuestBytes,
    long BytesUsed,
    string TrustGroup,
    bool SharingEnabled)
{
    /// <summary>
    /// The name of the domain's host. Piped to a cmdlet that takes domains, it names the host (the hidden -InputHost, alias -Host), so the domain is found on its
    /// own host, not on the current one.
    /// </summary>
    public string Host { get; init; } = "";

    /// <summary>
    /// Pages of an empty domain the guest never populated (never written): zeros to read, but not guest memory, so
    /// neither used nor saved. Not counted in <see cref="ZeroPages"/>.
    /// </summary>
    public long UntouchedPages { get; init; }

    /// <summary>Pages that are one repeated non-zero 32-bit word (no frame, no blob).</summary>
    public long UniformPages { get; init; }
    public long PatchedPages { get; init; }
    /// <summary>Pages paged out to the swap file (they use disk, not memory).</summary>
    public long SwappedPages { get; init; }
    /// <summary>
    /// Embedded: "Running", "Loading", "OutOfMemory" or "Removed". Xen: as Xen reports it (<see cref="Xen.XenDomain.Status"/>):
    /// "Running", "Blocked", "Paused", "Shutdown" or "Dying".
    /// </summary>
    public string Status { get; init; } = "Running";
    public long CompressedPages { get; init; }

    /// <summary>
    /// Of <see cref="CompressedPages"/>, those whose blob they share with other pages: a shared frame compressed once
    /// when every page sharing it was cold. Each such page is charged its share of the blob.
    /// </summary>
    public long SharedCompressedPages { get; init; }

    /// <summary>
    /// Of <see cref="CompressedPages"/>, those kept in a page group themselves: compressed together with other long-cold
    /// pages of this domain. Each is charged an equal share of its group's stream among the group's live members. A page
    /// naming a shared blob kept in a group of shared blobs is counted in <see cref="SharedCompressedPages"/>, not here.
    /// </summary>
    public long GroupedPages { get; init; }
    /// <summary>Xen: pages the pager holds as the reference copies patches decode against (embedded references are Shared frames).</summary>
    public long ReferencePages { get; init; }
    public bool PatchingEnabled { get; init; }
    public bool CompressionEnabled { get; init; }
    public string? CompressionAlgorithm { get; init; }

    /// <summary>
    /// This domain's share of the store's stored bytes (<see cref="HostStats.StoreStoredBytes"/>; on Xen, of what the pager
    /// holds): a page's own blob whole, 1/n of a shared blob named by n pages and patches, an equal share of a page group's
    /// stream among its live members. Rounded together with the other domains' (largest remainder) in a host's snapshot,
    /// so the domains' add up to the host's to the byte (docs/REPORT-SCHEMA.md, domains[].storedBytes).
    /// </summary>
    public long StoredBytes { get; init; }

    public long BytesSaved => GuestBytes - BytesUsed;
    public double SavingsPercent => GuestBytes == 0 ? 0 : Math.Round(100.0 * BytesSaved / GuestBytes, 2);
}
