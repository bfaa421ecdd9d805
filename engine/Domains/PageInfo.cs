namespace DifferenceEngine.Domains;

/// <summary>
/// A snapshot of one guest page's P2M entry, as shown by Get-DEPage. Never holds page bytes, but its <see cref="Hash"/>
/// (unkeyed) and <see cref="UniformWord"/> (the whole page of a Uniform page) are derived from the content: treat it as
/// the memory it describes, not as something that may leave the host (fingerprints are made for that).
/// </summary>
public sealed record PageInfo(
    string Domain,
    long Gfn,
    PageState State,
    PageCategory Category,
    bool Referenced,
    bool Modified,
    int ReferenceCount,
    ulong? Hash,
    uint? Frame)
{
    /// <summary>
    /// The name of the domain's host. Piped to a cmdlet that takes domains, it names the host (the hidden -InputHost, alias -Host), so the page is addressed on its
    /// own host, not on the current one.
    /// </summary>
    public string Host { get; init; } = "";

    /// <summary>For a Patched page: the domain whose page served as the reference (at patch time).</summary>
    public string? ReferenceDomain { get; init; }

    /// <summary>For a Patched page: the reference page's gfn (at patch time).</summary>
    public long? ReferenceGfn { get; init; }

    /// <summary>For Patched and Compressed pages: bytes the page holds in the compact store (header included).</summary>
    public int? StoredBytes { get; init; }

    /// <summary>"Delta" for a Patched page, the compression algorithm for a Compressed one.</summary>
    public string? Codec { get; init; }

    /// <summary>For a Swapped page: its slot in the swap file.</summary>
    public long? SwapSlot { get; init; }

    /// <summary>
    /// For a Compressed page whose blob other pages share (a compressed shared frame): the blob's id, the same for
    /// every page that names it; <see cref="ReferenceCount"/> is then how many pages name it, and
    /// <see cref="StoredBytes"/> the whole blob (for a blob kept in a page group of shared blobs, see <see cref="Group"/>,
    /// its equal share of the group's stream among the group's live members). For a Patched page whose reference frame was
    /// compressed since: that blob's id, and <see cref="ReferenceCount"/> how many pages and patches name it. Null for any
    /// other page.
    /// </summary>
    public uint? SharedBlob { get; init; }

    /// <summary>
    /// For a Compressed page kept in a page group (compressed together with other long-cold pages of its domain): the
    /// group's id; <see cref="StoredBytes"/> is then the group's whole stream (0 while it is in the swap file), <see cref="ReferenceCount"/> how many pages
    /// still live in it, and <see cref="GroupMember"/> this page's place in it. For a Compressed page that names a shared
    /// blob kept in a page group of shared blobs (cold shared frames compressed together): that group, and the blob's place
    /// in it. Null for any other page.
    /// </summary>
    public uint? Group { get; init; }

    /// <summary>For a page in a page group (or naming a shared blob kept in one): its (the blob's) member index in the group.</summary>
    public int? GroupMember { get; init; }

    /// <summary>
    /// A Zero page of an empty domain that the guest never populated: not guest memory, never counted as saved
    /// (a page written, loaded, or found zero by a scan is not untouched).
    /// </summary>
    public bool Untouched { get; init; }

    /// <summary>For a Uniform page: the 32-bit word repeated over the page.</summary>
    public uint? UniformWord { get; init; }

    /// <summary>The content hash as 16 hex digits (xxHash3), or null for pages without a frame.</summary>
    public string? HashHex => Hash is ulong h ? h.ToString("x16") : null;
}
