// The patch format: a page as copies from its reference page and literal runs, for 4 KiB pages that differ from
// their reference in a few places (see docs/DELTA-CODEC.md for the design and measurements).
//
// A patch is a list of sequences and nothing else: no header, no length, no checksum (the store keeps the length
// and the engine a checksum of the plain page). Decoding fills the page from offset 0 upwards and the patch must
// end exactly when the page is full.
//
//     sequence := token [literal-length varint] literals [source varint] [copy-length varint]
//     token    := bits 7-5 L: literal count; 0-6, or 7 = 7 + a varint
//                 bits 4-3 K: where the copy comes from
//                     0  the reference at the same offset
//                     1  the same source as the last K=2 or K=3 copy (the reference at delta 0 before any):
//                        blocks that moved together, or a pattern that repeats
//                     2  the reference at a new delta d: zigzag varint (d << 1 ^ d >> 31) after the literals
//                     3  the page itself, d bytes back (d >= 1, varint after the literals): structure that
//                        repeats inside the page; d may be shorter than the copy (runs), as in LZ77
//                 bits 2-0 M: copy length; 0-6 = 2-8, or 7 = 9 + a varint
//     literals := L bytes copied to the page as they are
//     a copy   := page[pos + i] = reference[pos + d + i] (K 0 with d = 0, K 2) or page[pos - d + i] (K 3), for
//                 i = 0 .. n-1 in order; K 1 copies as the copy it repeats
// When the literals fill the page the sequence ends there, with K = M = 0: that is how a patch ends on literals.
// A varint is LEB128 of one or two bytes (values below 16384); a third byte is corrupt.
//
// An identical page is 3 bytes (one copy of 4096); a page with one changed byte in the middle is 7.

using System.Runtime.CompilerServices;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Codecs;

/// <summary>Our delta codec: a page as a compact patch against a similar reference page, quick to build and very quick to apply.</summary>
public static class DeltaCodec
{
    internal const string Name = "delta";

    internal const int PageSize = PageGeometry.PageSize;

    internal const int LiteralShift = 5;
    internal const int KindShift = 3;
    internal const int KindMask = 3;
    internal const int LengthMask = 7;
    internal const int LiteralCodeMax = 7;
    internal const int LengthCodeMax = 7;
    internal const int MinCopy = 2;
    internal const int LongCopy = MinCopy + LengthCodeMax;

    internal const int KindSameOffset = 0;
    internal const int KindRepeat = 1;
    internal const int KindReference = 2;
    internal const int KindSelf = 3;

    internal const int VarintMax = (1 << 14) - 1;
    internal const int VarintContinue = 0x80;
    internal const int VarintPayload = 0x7F;
    internal const int VarintShift = 7;

    /// <summary>Worst case of a patch that keeps every byte as a literal: token, literal length, the page.</summary>
    public const int MaxPatchSize = 1 + 2 + PageSize;

    /// <summary>
    /// Encodes <paramref name="page"/> as copies from <paramref name="reference"/> and literal runs (both exactly 4096
    /// bytes). Returns false, having written nothing meaningful, when the patch would exceed
    /// <paramref name="destination"/>'s length: pass a destination sized to the acceptance threshold.
    /// Never writes outside <paramref name="destination"/>, which must not overlap the inputs; allocates nothing.
    /// The patch does not depend on the destination's length: one exactly as long as the patch always suffices, and
    /// <see cref="MaxPatchSize"/> bytes are always enough.
    /// </summary>
    public static bool TryEncode(ReadOnlySpan<byte> reference, ReadOnlySpan<byte> page, Span<byte> destination, out int written)
    {
        CodecErrors.CheckPage(reference.Length, nameof(reference));
        CodecErrors.CheckPage(page.Length, nameof(page));
        CodecErrors.CheckDisjoint(reference, destination, nameof(reference));
        CodecErrors.CheckDisjoint(page, destination, nameof(page));
        if (DeltaEncoder.TryEncode(reference, page, destination, out written))
        {
            return true;
        }

        // Greedy copies can, rarely, cost a byte more than the literals they replace: MaxPatchSize always suffices.
        return destination.Length >= MaxPatchSize && TryEncodeLiterals(page, destination, out written);
    }

    /// <summary>
    /// Rebuilds exactly 4096 bytes into <paramref name="page"/> from <paramref name="reference"/> and a patch made by
    /// <see cref="TryEncode"/>. A malformed or truncated patch throws <see cref="DEException"/> "CodecCorrupt"; nothing is
    /// written outside <paramref name="page"/>, which must not overlap the other two.
    /// </summary>
    public static void Decode(ReadOnlySpan<byte> reference, ReadOnlySpan<byte> patch, Span<byte> page)
    {
        CodecErrors.CheckPage(reference.Length, nameof(reference));
        CodecErrors.CheckPage(page.Length, nameof(page));
        CodecErrors.CheckDisjoint(reference, page, nameof(reference));
        CodecErrors.CheckDisjoint(patch, page, nameof(patch));
        DeltaDecoder.Decode(reference, patch, page);
    }

    /// <summary>The patch that keeps the whole page as one literal run: <see cref="MaxPatchSize"/> bytes.</summary>
    private static bool TryEncodeLiterals(ReadOnlySpan<byte> page, Span<byte> destination, out int written)
    {
        const int extra = PageSize - LiteralCodeMax;
        destination[0] = LiteralCodeMax << LiteralShift;
        destination[1] = (byte)((extra & VarintPayload) | VarintContinue);
        destination[2] = (byte)(extra >> VarintShift);
        page.CopyTo(destination[3..]);
        written = MaxPatchSize;
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int VarintLength(int value) => value <= VarintPayload ? 1 : 2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int ZigZag(int delta) => (delta << 1) ^ (delta >> 31);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int UnZigZag(int value) => (int)((uint)value >> 1) ^ -(value & 1);
}
