namespace DifferenceEngine.Domains;

/// <summary>A snapshot of one guest page's P2M entry, as shown by Get-DEPage. Never holds page bytes.</summary>
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
    /// <summary>The content hash as 16 hex digits (xxHash3), or null for pages without a frame.</summary>
    public string? HashHex => Hash is ulong h ? h.ToString("x16") : null;
}
