using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using DifferenceEngine.Codecs;

namespace DifferenceEngine.Domains;

/// <summary>What a blob in the compact store holds.</summary>
internal enum EncodedKind : byte
{
    Patch = 1,
    Compressed = 2,
}

/// <summary>
/// The header every encoded page carries in the compact store: a checksum of the plain page
/// (xxHash3), checked on every rebuild, and what is needed to rebuild it.
/// </summary>
/// <remarks>
/// Layout (little-endian): [0..8) checksum; [8] kind; [9] codec, or for a patch where its reference is
/// (<see cref="ReferenceInFrame"/>, or <see cref="ReferenceInSharedBlob"/> once the reference frame was compressed);
/// patch: [10..14) reference frame (or shared blob id), [14..22) the reference page when patched (domain id &lt;&lt; 40 | gfn);
/// then the encoded bytes. The checksum is xxHash3 of the plain page seeded with the header fields,
/// so a flipped bit in the header is caught like one in the page (the rebuild changes nothing until
/// the checksum holds).
/// </remarks>
internal static class EncodedPage
{
    public const int CompressedHeader = 10;
    public const int PatchHeader = 22;

    /// <summary>A patch's byte 9: its reference is a frame, field [10..14).</summary>
    public const byte ReferenceInFrame = 0;

    /// <summary>
    /// A patch's byte 9: its reference frame was compressed (<see cref="Compression.SharedCompression"/>), and field
    /// [10..14) is the shared blob's id (<see cref="Compression.SharedBlobTable"/>), which counts the patch as one of its references.
    /// </summary>
    public const byte ReferenceInSharedBlob = 1;

    /// <summary>The checksum of a plain page under the header fields of its blob.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Checksum(ReadOnlySpan<byte> page, ReadOnlySpan<byte> blob) =>
        System.IO.Hashing.XxHash3.HashToUInt64(page, (long)HeaderSeed(blob));

    private static ulong HeaderSeed(ReadOnlySpan<byte> blob)
    {
        ulong seed = (ulong)blob[8] << 8 | blob[9];
        if (Kind(blob) == EncodedKind.Patch)
            seed ^= ((ulong)ReferenceFrame(blob) << 16) ^ (ReferencePage(blob) * 0x9E3779B97F4A7C15UL);
        return seed;
    }

    /// <summary>Writes the header fields (the checksum last, since it depends on them).</summary>
    public static void WritePatchHeader(Span<byte> blob, ReadOnlySpan<byte> plain, uint referenceFrame, ulong referencePage,
        byte referenceIn = ReferenceInFrame)
    {
        blob[8] = (byte)EncodedKind.Patch;
        blob[9] = referenceIn;
        BinaryPrimitives.WriteUInt32LittleEndian(blob[10..], referenceFrame);
        BinaryPrimitives.WriteUInt64LittleEndian(blob[14..], referencePage);
        BinaryPrimitives.WriteUInt64LittleEndian(blob, Checksum(plain, blob));
    }

    public static void WriteCompressedHeader(Span<byte> blob, ReadOnlySpan<byte> plain, CompressionAlgorithm algorithm)
    {
        blob[8] = (byte)EncodedKind.Compressed;
        blob[9] = (byte)algorithm;
        BinaryPrimitives.WriteUInt64LittleEndian(blob, Checksum(plain, blob));
    }

    public static ulong StoredChecksum(ReadOnlySpan<byte> blob) => BinaryPrimitives.ReadUInt64LittleEndian(blob);

    public static EncodedKind Kind(ReadOnlySpan<byte> blob) => (EncodedKind)blob[8];

    public static CompressionAlgorithm Algorithm(ReadOnlySpan<byte> blob) => (CompressionAlgorithm)blob[9];

    /// <summary>A patch's reference: a frame, or a shared blob's id when <see cref="ReferenceIsSharedBlob"/>.</summary>
    public static uint ReferenceFrame(ReadOnlySpan<byte> blob) => BinaryPrimitives.ReadUInt32LittleEndian(blob[10..]);

    /// <summary>Whether a patch's reference is a compressed shared blob rather than a frame.</summary>
    public static bool ReferenceIsSharedBlob(ReadOnlySpan<byte> blob) => blob[9] == ReferenceInSharedBlob;

    /// <summary>
    /// The frame a patch holds as its reference; false for a patch whose reference is a compressed shared blob, or whose
    /// header is truncated (read without rebuilding the page: left for its own fault to report).
    /// </summary>
    public static bool TryReferenceFrame(ReadOnlySpan<byte> patch, out uint frame)
    {
        bool inFrame = patch.Length >= PatchHeader && !ReferenceIsSharedBlob(patch);
        frame = inFrame ? ReferenceFrame(patch) : 0;
        return inFrame;
    }

    /// <summary>Whether a patch (header not truncated) names a compressed shared blob as its reference.</summary>
    public static bool NamesSharedBlob(ReadOnlySpan<byte> patch) => patch.Length >= PatchHeader && ReferenceIsSharedBlob(patch);

    public static ulong ReferencePage(ReadOnlySpan<byte> blob) => BinaryPrimitives.ReadUInt64LittleEndian(blob[14..]);
}
