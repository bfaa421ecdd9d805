using System.Buffers.Binary;

namespace DifferenceEngine.Fleet;

/// <summary>What a fingerprint entry says about one sampled distinct page content (docs/FLEET.md, "The fingerprint").</summary>
[Flags]
[Newtonsoft.Json.JsonConverter(typeof(Newtonsoft.Json.Converters.StringEnumConverter))] // names, not numbers, in ConvertTo-Json
public enum EntryFlags : byte
{
    None = 0,
    /// <summary>Neither codec shrinks the page to the compression threshold: it stays a frame.</summary>
    Incompressible = 1,
    /// <summary>Another content of the domain, later in gfn order, patches against this one (it is kept as a frame).</summary>
    Reference = 2,
    /// <summary>The first content of the domain with its similarity key (the candidate reference of the others).</summary>
    ClusterFirst = 4,
    /// <summary>The single-page codec did not shrink it enough; the groups' codec (Zstd) did.</summary>
    FallbackCodec = 8,
    /// <summary>A page it would be patched against, or one that would patch against it, could not be read again: not known.</summary>
    PatchUnknown = 16,
    /// <summary>Sampled because its keyed content hash fell below the threshold: counts toward every total.</summary>
    ByContent = 32,
    /// <summary>Sampled because its keyed similarity key fell below the threshold: counts toward patches across domains.</summary>
    BySimilarity = 64,
    /// <summary>Its shared-frame blob was not compressed but estimated from its single blob (the domain's measured Zstd-to-LZ4 ratio).</summary>
    SharedCostEstimated = 128,
}

/// <summary>
/// One sampled distinct content: keyed hashes of its bytes and of its similarity key, how many pages of the domain hold
/// it, and what the engine's codecs made of it, as bytes of the store's slots (a blob's slot, not its length).
/// </summary>
public readonly record struct FingerprintEntry(
    ulong Content,
    ulong Similarity,
    uint Copies,
    ushort SingleCost,
    ushort SharedCost,
    ushort PatchCost,
    EntryFlags Flags)
{
    /// <summary>
    /// For one content-route entry in eight (by its keyed hash): its share of a Zstd group with the content pages before
    /// it, as store bytes (its single blob times the group's stream over its members' single blobs); 0: not measured.
    /// </summary>
    public ushort GroupCost { get; init; }
}

/// <summary>
/// A domain's fingerprint: from one read-only pass over its pages, what the colocation model needs to predict the memory
/// any set of domains needs together (docs/FLEET.md). Every hash in it is keyed with the fleet's secret (<see cref="KeyId"/>
/// names the secret); it holds no page bytes and nothing from which a page's content can be checked without the secret.
/// All properties are plain values, so the object survives PowerShell remoting and JSON as it is.
/// </summary>
public sealed partial class DomainFingerprint
{
    public const string CurrentSchema = "DifferenceEngine.Fingerprint/1";

    public string Schema { get; set; } = CurrentSchema;
    public string Domain { get; set; } = "";
    public string HostName { get; set; } = "";
    public string Source { get; set; } = "";
    public string TrustGroup { get; set; } = Domains.DomainPolicy.DefaultTrustGroup;
    public DateTimeOffset Created { get; set; }
    public string KeyId { get; set; } = "";

    /// <summary>Guest pages (4 KiB each), untouched ones included.</summary>
    public long PageCount { get; set; }

    /// <summary>
    /// The domain's guest memory as Get-DEHostStats and Get-DEPageStats define it: (PageCount − UntouchedPages) × 4096.
    /// Untouched pages are neither guest memory nor saved.
    /// </summary>
    public long GuestBytes { get; set; }

    /// <summary>
    /// Pages the guest has never touched (a QEMU guest's holes, an empty domain's pages): left out of GuestBytes and of every
    /// other count. 0 for a file or process fingerprinted from its source (it has no untouched pages) and in fingerprints
    /// made before it was counted.
    /// </summary>
    public long UntouchedPages { get; set; }

    /// <summary>Pages of nothing but zero bytes, and non-zero pages of one repeated 32-bit word: neither needs memory.</summary>
    public long ZeroPages { get; set; }
    public long UniformPages { get; set; }

    /// <summary>The other pages: those whose content needs memory.</summary>
    public long ContentPages { get; set; }

    /// <summary>Distinct contents among the content pages, counted over every page (0: not known, a fingerprint made before it was counted).</summary>
    public long DistinctContents { get; set; }

    /// <summary>Pages whose stored bytes could not be read back during the pass (left out of every figure; their next guest access reports why).</summary>
    public long UnreadablePages { get; set; }

    /// <summary>
    /// The sample: a content is sampled (the content route) when its keyed content hash falls below 2^64 / 2^<see cref="SampleShift"/>,
    /// and with its similarity key (the similarity route) when its keyed similarity key falls below 2^64 / 2^<see cref="SimilarityShift"/>.
    /// </summary>
    public int SampleShift { get; set; }

    /// <summary>
    /// The similarity route's shift: <see cref="SampleShift"/> + 2 (<see cref="FingerprintBuilder.SimilarityShiftExtra"/>);
    /// 0 in a fingerprint made before the routes were sampled apart, whose similarity route has <see cref="SampleShift"/>.
    /// </summary>
    public int SimilarityShift { get; set; }

    /// <summary>The similarity route's shift as it was sampled (<see cref="SampleShift"/> for a fingerprint that does not say).</summary>
    internal int SimilaritySampleShift => SimilarityShift > 0 ? SimilarityShift : SampleShift;
    public long SampledPages { get; set; }

    /// <summary>The similarity detector's seed and block the sample is keyed on (one 64-byte block, the engine's default k=1 key).</summary>
    public int DetectorSeed { get; set; }

    /// <summary>Groups of gfn neighbours: bytes of a Zstd group's stream for every byte of its pages' single blobs, on sampled runs of four.</summary>
    public double GroupFactor { get; set; } = 1;
    public int GroupRunsSampled { get; set; }

    /// <summary>
    /// Groups of shared blobs: bytes of a group's stream for every byte of its members' shared blobs alone, on sampled runs
    /// of four pages that compress as shared blobs (1: no grouping, page groups off, or none sampled). The entries' shared
    /// costs already include it (each is the content's share of such a group).
    /// </summary>
    public double SharedGroupFactor { get; set; } = 1;
    public int SharedGroupRunsSampled { get; set; }

    /// <summary>
    /// A small domain's mean single blob (store slot bytes) over all its distinct contents a codec shrinks, and the same
    /// mean over those the content route sampled: the model scales its group factor by their ratio
    /// (<see cref="FingerprintBuilder.ExactSinglesPages"/>). 0: not measured (a larger domain, or a fingerprint made
    /// before session 14).
    /// </summary>
    public double SinglesMean { get; set; }
    public double SampledSinglesMean { get; set; }

    /// <summary>
    /// A small domain's distinct contents no codec shrinks to the threshold, counted over all of them (they stay frames);
    /// meaningful where <see cref="SinglesMean"/> is not 0. The model weighs the sample's incompressible contents and
    /// its others apart, each to its exact count (a stratified estimate).
    /// </summary>
    public long IncompressibleContents { get; set; }

    private int _incompressibleSampled = -1;

    /// <summary>Content-route entries no codec shrinks.</summary>
    internal int IncompressibleSampled => Counted(ref _incompressibleSampled, static e => (e.Flags & EntryFlags.ByContent) != 0 && e.SingleCost == 0);

    /// <summary>The memory the domain needs alone on an embedded host, all mechanisms, once stable: the model's prediction.</summary>
    public long PredictedUsedBytes { get; set; }

    /// <summary>Bytes of the sketch (before base64) and the pass's time.</summary>
    public int SketchBytes { get; set; }
    public double Seconds { get; set; }

    /// <summary>The sampled entries: base64 of the binary sketch (docs/FLEET.md, "The fingerprint").</summary>
    public string Sketch
    {
        get => _sketch;
        set
        {
            // What was read from the old sketch no longer holds (a fingerprint altered after it was read is checked anew).
            _sketch = value;
            _entries = null;
            ResetCounts();
        }
    }

    private string _sketch = "";
    private FingerprintEntry[]? _entries;

    /// <summary>Bytes of the sketch as decoded (what <see cref="SketchBytes"/> must say).</summary>
    private int _sketchLength;

    /// <summary>The entries the sketch holds, in the order the pass met them.</summary>
    public IReadOnlyList<FingerprintEntry> GetEntries() => _entries ??= Decode(Sketch, out _sketchLength);

    private int _contentSampled = -1;

    /// <summary>Entries sampled by their content hash (the content route): the domain's distinct contents in the sample.</summary>
    internal int ContentSampled => Counted(ref _contentSampled, static e => (e.Flags & EntryFlags.ByContent) != 0);

    /// <summary>Entries that <paramref name="match"/>, counted once (the counts are reset with the entries).</summary>
    private int Counted(ref int cache, Func<FingerprintEntry, bool> match)
    {
        if (cache >= 0) return cache;
        int n = 0;
        foreach (var e in GetEntries())
            if (match(e)) n++;
        return cache = n;
    }

    private void ResetCounts()
    {
        _contentSampled = -1;
        _incompressibleSampled = -1;
        _sampledCopies = -1;
    }

    internal void SetEntries(FingerprintEntry[] entries)
    {
        byte[] bytes = Encode(entries);
        SketchBytes = bytes.Length;
        Sketch = Convert.ToBase64String(bytes);
        // What the sketch holds (costs in its units), so the fingerprint predicts exactly as one read back from JSON.
        _entries = Decode(Sketch, out _sketchLength);
    }

    private static readonly byte[] Magic = "DEFP"u8.ToArray();
    private const int HeaderBytes = 4 + 2 + 4;
    private const ushort FormatVersion = 1;

    // An entry: flags (1 byte); the keyed content hash (8); the keyed similarity key (8, only with BySimilarity); copies
    // (a LEB128 varint); the single blob's, the shared blob's and the patch's store slots in units of 32 bytes (1 byte each:
    // a slot is a multiple of 32 bytes, 4096 at most), and its measured share of a group (the same unit, rounded up; 0:
    // not measured).
    private const int SlotUnit = 32;

    private static byte[] Encode(FingerprintEntry[] entries)
    {
        var buffer = new System.IO.MemoryStream(HeaderBytes + entries.Length * 16);
        Span<byte> head = stackalloc byte[HeaderBytes];
        Magic.CopyTo(head);
        BinaryPrimitives.WriteUInt16LittleEndian(head[4..], FormatVersion);
        BinaryPrimitives.WriteInt32LittleEndian(head[6..], entries.Length);
        buffer.Write(head);
        Span<byte> entry = stackalloc byte[1 + 8 + 8 + 5 + 4];
        foreach (var e in entries)
        {
            int n = 0;
            entry[n++] = (byte)e.Flags;
            BinaryPrimitives.WriteUInt64LittleEndian(entry[n..], e.Content);
            n += 8;
            if ((e.Flags & EntryFlags.BySimilarity) != 0)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(entry[n..], e.Similarity);
                n += 8;
            }
            for (uint v = e.Copies; ; v >>= 7)
            {
                if (v < 0x80) { entry[n++] = (byte)v; break; }
                entry[n++] = (byte)(v | 0x80);
            }
            entry[n++] = Slot(e.SingleCost);
            entry[n++] = Slot(e.SharedCost);
            entry[n++] = Slot(e.PatchCost);
            entry[n++] = Slot(e.GroupCost);
            buffer.Write(entry[..n]);
        }
        return buffer.ToArray();
    }

    private static byte Slot(ushort bytes)
    {
        if (bytes % SlotUnit != 0 && bytes <= 4096) bytes = (ushort)((bytes + SlotUnit - 1) / SlotUnit * SlotUnit);
        if (bytes % SlotUnit != 0 || bytes > 4096) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "A store slot is a multiple of 32 bytes, 4096 at most.");
        return (byte)(bytes / SlotUnit);
    }

    private FingerprintEntry[] Decode(string sketch, out int length)
    {
        byte[] bytes;
        try
        {
            bytes = Convert.FromBase64String(sketch ?? "");
        }
        catch (FormatException e)
        {
            throw Invalid("its sketch is not base64", e);
        }
        length = bytes.Length;
        if (bytes.Length < HeaderBytes || !bytes.AsSpan(0, 4).SequenceEqual(Magic))
            throw Invalid("its sketch does not begin with the sketch header");
        if (BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(4)) != FormatVersion)
            throw Invalid($"its sketch is format {BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(4))}; this module reads format {FormatVersion}");
        int count = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(6));
        if (count < 0 || count > (bytes.Length - HeaderBytes) / 14)
            throw Invalid($"its sketch says {count} entries but holds {bytes.Length - HeaderBytes} bytes of them");
        var entries = new FingerprintEntry[count];
        int at = HeaderBytes;
        for (int i = 0; i < count; i++)
        {
            if (at + 14 > bytes.Length) throw Invalid($"its sketch ends inside entry {i}");
            var flags = (EntryFlags)bytes[at++];
            if ((flags & (EntryFlags.ByContent | EntryFlags.BySimilarity)) == 0)
                throw Invalid($"entry {i} of its sketch has invalid flags {(byte)flags}");
            ulong content = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(at));
            at += 8;
            ulong similarity = 0;
            if ((flags & EntryFlags.BySimilarity) != 0)
            {
                if (at + 8 + 4 > bytes.Length) throw Invalid($"its sketch ends inside entry {i}");
                similarity = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(at));
                at += 8;
            }
            uint copies = 0;
            for (int shift = 0; ; shift += 7)
            {
                if (at >= bytes.Length || shift > 28) throw Invalid($"entry {i} of its sketch has a malformed copy count");
                byte b = bytes[at++];
                copies |= (uint)(b & 0x7F) << shift;
                if (b < 0x80) break;
            }
            if (at + 4 > bytes.Length) throw Invalid($"its sketch ends inside entry {i}");
            if (copies == 0 || bytes[at] > 128 || bytes[at + 1] > 128 || bytes[at + 2] > 128 || bytes[at + 3] > 128)
                throw Invalid($"entry {i} of its sketch has an impossible copy count or slot");
            entries[i] = new FingerprintEntry(content, similarity, copies, (ushort)(bytes[at] * SlotUnit), (ushort)(bytes[at + 1] * SlotUnit),
                (ushort)(bytes[at + 2] * SlotUnit), flags) { GroupCost = (ushort)(bytes[at + 3] * SlotUnit) };
            at += 4;
        }
        if (at != bytes.Length) throw Invalid($"its sketch holds {bytes.Length - at} bytes after its {count} entries");
        return entries;
    }

    private DEException Invalid(string why, Exception? inner = null) =>
        new("FingerprintInvalid", DEErrorKind.InvalidData, $"The fingerprint of {Naming} cannot be read: {why}.", ToString(), inner);

    public override string ToString() => $"{HostName}/{Domain}";
}
