using DifferenceEngine.Codecs;
using Newtonsoft.Json;
using Newtonsoft.Json.Converters;

namespace DifferenceEngine.Xen;

/// <summary>How the pager keeps a page it took from a guest.</summary>
[JsonConverter(typeof(StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum XenHeldKind : byte
{
    /// <summary>The plain 4 KiB (it did not compress well enough to be worth a codec).</summary>
    Plain,

    /// <summary>Compressed with the domain's codec.</summary>
    Compressed,

    /// <summary>A delta against a reference page the pager keeps.</summary>
    Patched,

    /// <summary>The page is itself a reference for patches: the pager's plain copy serves both.</summary>
    Reference,

    /// <summary>Written to the pager's swap file.</summary>
    Swapped,
}

/// <summary>
/// An immutable plain copy the pager keeps as the base of patches: the reference page of the paper. It lives while a patch
/// uses it or while the guest page it was taken from is held as this copy.
/// </summary>
internal sealed class XenReference
{
    public XenReference(byte[] page, ulong checksum, string trustGroup, ulong[] keys)
    {
        Page = page;
        Checksum = checksum;
        TrustGroup = trustGroup;
        Keys = keys;
    }

    public byte[] Page { get; }

    public ulong Checksum { get; }

    public string TrustGroup { get; }

    /// <summary>The similarity keys it is indexed under.</summary>
    public ulong[] Keys { get; }

    /// <summary>Patches that decode against it; changed under the pager's reference lock.</summary>
    public int Users;

    /// <summary>True while its source page is held as this copy (kind Reference).</summary>
    public bool HeldBySource;

    /// <summary>Set once neither holds: the copy is gone and the index drops it.</summary>
    public volatile bool Released;
}

/// <summary>One held page: its kind, its bytes (encoded) or swap slot, the checksum of its plain bytes.</summary>
internal sealed class XenHeld
{
    public XenHeldKind Kind;
    public byte[]? Data;
    public CompressionAlgorithm Algorithm;
    public XenReference? Reference;
    public uint Slot;
    public ulong Checksum;
    public long Sequence;

    /// <summary>Bytes of pager memory this page holds on its own (a reference's page is counted with the reference).</summary>
    public int MemoryBytes => Kind is XenHeldKind.Plain or XenHeldKind.Compressed or XenHeldKind.Patched ? Data!.Length : 0;
}

/// <summary>Per-domain counts of what the pager holds.</summary>
public sealed record XenPagerDomainStats(
    uint DomainId,
    long PlainPages,
    long CompressedPages,
    long PatchedPages,
    long ReferencePages,
    long SwappedPages,
    long StoredBytes)
{
    /// <summary>
    /// This domain's share of the references whose own page the guest has back (no longer held for it) but that patches
    /// still decode against: each such reference's 4096 bytes charged to its patches in equal parts, as a shared frame is
    /// charged to its users. Without it those bytes would be stored but charged to no domain.
    /// </summary>
    public double OrphanReferenceBytes { get; init; }

    public long HeldPages => PlainPages + CompressedPages + PatchedPages + ReferencePages + SwappedPages;
}
