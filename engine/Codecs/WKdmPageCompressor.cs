// WKdm, after P. R. Wilson, S. F. Kaplan, Y. Smaragdakis, "The Case for Compressed Caching in Virtual Memory
// Systems" (USENIX 1999), the word-oriented codec Difference Engine used: our own implementation, in our own layout.
//
// The page is read as 1024 little-endian 32-bit words. A 16-entry direct-mapped dictionary, every entry preloaded
// with the word 1, remembers recent words; a word's entry is chosen by its upper 22 bits only:
//     slot(w) = ((w >> 10) * 0x9E3779B1) mod 2^32 >> 28          (Fibonacci hashing of bits 10..31)
// so a word and its partial matches always meet in the same entry. Each word gets a 2-bit tag:
//     0 ZERO     w == 0                                     nothing else stored; dictionary unchanged
//     1 PARTIAL  upper 22 bits equal dict[slot(w)]          slot index and the low 10 bits stored; dict[slot] = w
//     2 MISS     anything else                              the full word stored; dict[slot] = w
//     3 EXACT    w == dict[slot(w)]                         slot index stored
//
// Encoded layout (all multi-byte fields little-endian; offsets are from the start of the encoding):
//     0    u16  qposStart  offset of the dictionary-index area (= 262 + 4 * misses)
//     2    u16  lowStart   offset of the low-bits area (= qposStart + ceil(indices / 2))
//     4    u16  end        offset just past the low-bits area (= lowStart + 4 * ceil(partials / 3)) = total length
//     6    256  tags       word i's tag in byte 6 + i / 4, bits 2 * (i % 4) .. 2 * (i % 4) + 1
//     262  4*M  full words of the MISS words, in page order
//     qposStart  dictionary indices (0..15) of the EXACT and PARTIAL words in page order, two per byte, the
//                earlier one in the low nibble; an odd count leaves the last high nibble 0
//     lowStart   low 10 bits of the PARTIAL words in page order, three per u32: bits 0-9, 10-19, 20-29; bits
//                30-31 and the unused slots of the last u32 are 0
// So the encoding is 262 bytes at least (a page of zeros) and 4358 at most (no two words alike).
//
// Against the published WKdm (Darwin's WKdm_new.h, Kaplan's original): same tags, tag values, dictionary size,
// preload, 10 low bits and area order (header, tags, full words, 4-bit indices, 10-bit low bits). Ours differs in
// the details that were 32-bit-word artefacts there: a 6-byte header of byte offsets instead of 3-4 words of word
// offsets; tags and indices packed sequentially rather than interleaved across a word (same size), the index area
// padded to a byte rather than to a word; and the dictionary hash multiplies all 22 upper bits instead of looking
// up bits 10-17 in a 256-entry table.

using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Codecs;

/// <summary>WKdm, the word-oriented page compressor of the paper: fast on pages of small integers and pointers.</summary>
[SkipLocalsInit]
internal sealed class WKdmPageCompressor : IPageCompressor
{
    internal const int WordSize = sizeof(uint);
    internal const int WordsPerPage = PageGeometry.PageSize / WordSize;
    internal const int DictionarySize = 16;
    internal const int DictionaryShift = 32 - 4;
    internal const uint DictionaryPreload = 1;
    internal const uint HashMultiplier = 0x9E3779B1;
    internal const int LowBitCount = 10;
    internal const uint LowMask = (1u << LowBitCount) - 1;
    internal const int LowPerWord = 3;

    internal const int TagZero = 0;
    internal const int TagPartial = 1;
    internal const int TagMiss = 2;
    internal const int TagExact = 3;
    internal const int TagsPerByte = 4;

    internal const int HeaderSize = 3 * sizeof(ushort);
    internal const int TagsSize = WordsPerPage / TagsPerByte;
    internal const int FullWordsOffset = HeaderSize + TagsSize;
    internal const int MinEncodedSize = FullWordsOffset;
    internal const int MaxEncodedSize = FullWordsOffset + PageGeometry.PageSize;

    private const string Name = "WKdm";

    public CompressionAlgorithm Algorithm => CompressionAlgorithm.WKdm;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Slot(uint word) => (int)(((word >> LowBitCount) * HashMultiplier) >> DictionaryShift);

    [MethodImpl(MethodImplOptions.NoInlining)]
    public bool TryCompress(ReadOnlySpan<byte> page, Span<byte> destination, out int written)
    {
        CodecErrors.CheckPage(page.Length, nameof(page));
        CodecErrors.CheckDisjoint(page, destination, nameof(page));
        written = 0;
        if (destination.Length < MinEncodedSize)
        {
            return false;
        }

        Span<uint> dictionary = stackalloc uint[DictionarySize];
        dictionary.Fill(DictionaryPreload);
        Span<byte> indices = stackalloc byte[WordsPerPage];
        Span<ushort> lows = stackalloc ushort[WordsPerPage];
        ReadOnlySpan<uint> words = MemoryMarshal.Cast<byte, uint>(page);
        Span<byte> tags = destination.Slice(HeaderSize, TagsSize);

        int full = FullWordsOffset;
        int fullLimit = destination.Length - WordSize;
        int indexCount = 0;
        int lowCount = 0;
        for (int t = 0; t < TagsSize; t++)
        {
            int tagByte = 0;
            for (int k = 0; k < TagsPerByte; k++)
            {
                uint w = LittleEndian(words[(t * TagsPerByte) + k]);
                int tag;
                if (w == 0)
                {
                    tag = TagZero;
                }
                else
                {
                    int slot = Slot(w);
                    uint d = dictionary[slot];
                    if (w == d)
                    {
                        tag = TagExact;
                        indices[indexCount++] = (byte)slot;
                    }
                    else
                    {
                        dictionary[slot] = w;
                        if ((w ^ d) <= LowMask)
                        {
                            tag = TagPartial;
                            indices[indexCount++] = (byte)slot;
                            lows[lowCount++] = (ushort)(w & LowMask);
                        }
                        else
                        {
                            if (full > fullLimit)
                            {
                                return false;
                            }

                            BinaryPrimitives.WriteUInt32LittleEndian(destination[full..], w);
                            full += WordSize;
                            tag = TagMiss;
                        }
                    }
                }

                tagByte |= tag << (2 * k);
            }

            tags[t] = (byte)tagByte;
        }

        int qposStart = full;
        int lowStart = qposStart + ((indexCount + 1) / 2);
        int end = lowStart + (((lowCount + LowPerWord - 1) / LowPerWord) * WordSize);
        if (end > destination.Length)
        {
            return false;
        }

        int q = qposStart;
        for (int i = 0; i + 1 < indexCount; i += 2)
        {
            destination[q++] = (byte)(indices[i] | (indices[i + 1] << 4));
        }

        if ((indexCount & 1) != 0)
        {
            destination[q] = indices[indexCount - 1];
        }

        int l = lowStart;
        for (int i = 0; i < lowCount; i += LowPerWord)
        {
            uint packed = lows[i];
            if (i + 1 < lowCount)
            {
                packed |= (uint)lows[i + 1] << LowBitCount;
            }

            if (i + 2 < lowCount)
            {
                packed |= (uint)lows[i + 2] << (2 * LowBitCount);
            }

            BinaryPrimitives.WriteUInt32LittleEndian(destination[l..], packed);
            l += WordSize;
        }

        BinaryPrimitives.WriteUInt16LittleEndian(destination, (ushort)qposStart);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[2..], (ushort)lowStart);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[4..], (ushort)end);
        written = end;
        return true;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public void Decompress(ReadOnlySpan<byte> compressed, Span<byte> page)
    {
        CodecErrors.CheckPage(page.Length, nameof(page));
        CodecErrors.CheckDisjoint(compressed, page, nameof(compressed));
        if (compressed.Length < MinEncodedSize)
        {
            CodecErrors.ThrowCorrupt(Name, $"{compressed.Length} bytes is shorter than the header and tags ({MinEncodedSize})");
        }

        int qposStart = BinaryPrimitives.ReadUInt16LittleEndian(compressed);
        int lowStart = BinaryPrimitives.ReadUInt16LittleEndian(compressed[2..]);
        int end = BinaryPrimitives.ReadUInt16LittleEndian(compressed[4..]);
        if (end != compressed.Length || qposStart < FullWordsOffset || qposStart > lowStart || lowStart > end
            || ((qposStart - FullWordsOffset) % WordSize) != 0 || ((end - lowStart) % WordSize) != 0)
        {
            CodecErrors.ThrowCorrupt(Name, $"the header's areas ({qposStart}, {lowStart}, {end}) do not fit its {compressed.Length} bytes");
        }

        Span<uint> dictionary = stackalloc uint[DictionarySize];
        dictionary.Fill(DictionaryPreload);
        ReadOnlySpan<byte> tags = compressed.Slice(HeaderSize, TagsSize);
        ReadOnlySpan<byte> fullWords = compressed[FullWordsOffset..qposStart];
        ReadOnlySpan<byte> indices = compressed[qposStart..lowStart];
        ReadOnlySpan<byte> lows = compressed[lowStart..end];
        Span<uint> output = MemoryMarshal.Cast<byte, uint>(page);

        int full = 0;
        int index = 0;
        int indexLimit = indices.Length * 2;
        int low = 0;
        int lowLimit = (lows.Length / WordSize) * LowPerWord;
        int lowInWord = LowPerWord;
        int lowOffset = -WordSize;
        uint lowWord = 0;
        for (int t = 0; t < TagsSize; t++)
        {
            int tagByte = tags[t];
            int first = t * TagsPerByte;
            if (tagByte == 0)
            {
                // Four zero words: the commonest tag byte in real memory.
                Unsafe.WriteUnaligned(ref Unsafe.As<uint, byte>(ref output[first]), (ulong)0);
                Unsafe.WriteUnaligned(ref Unsafe.As<uint, byte>(ref output[first + 2]), (ulong)0);
                continue;
            }

            for (int k = 0; k < TagsPerByte; k++, tagByte >>= 2)
            {
                uint w;
                switch (tagByte & 3)
                {
                    case TagZero:
                        w = 0;
                        break;
                    case TagExact:
                        if (index >= indexLimit)
                        {
                            CodecErrors.ThrowCorrupt(Name, "more matches than dictionary indices");
                        }

                        w = dictionary[(indices[index >> 1] >> ((index & 1) * 4)) & 0xF];
                        index++;
                        break;
                    case TagPartial:
                        if (index >= indexLimit || low >= lowLimit)
                        {
                            CodecErrors.ThrowCorrupt(Name, "more partial matches than indices or low bits");
                        }

                        int slot = (indices[index >> 1] >> ((index & 1) * 4)) & 0xF;
                        index++;
                        if (lowInWord == LowPerWord)
                        {
                            lowOffset += WordSize;
                            lowWord = BinaryPrimitives.ReadUInt32LittleEndian(lows[lowOffset..]);
                            lowInWord = 0;
                        }

                        w = (dictionary[slot] & ~LowMask) | (lowWord & LowMask);
                        lowWord >>= LowBitCount;
                        lowInWord++;
                        low++;
                        dictionary[slot] = w;
                        break;
                    default:
                        if (full > fullWords.Length - WordSize)
                        {
                            CodecErrors.ThrowCorrupt(Name, "more misses than full words");
                        }

                        w = BinaryPrimitives.ReadUInt32LittleEndian(fullWords[full..]);
                        full += WordSize;
                        dictionary[Slot(w)] = w;
                        break;
                }

                output[first + k] = LittleEndian(w);
            }
        }

        if (full != fullWords.Length || (index + 1) / 2 != indices.Length
            || (low + LowPerWord - 1) / LowPerWord * WordSize != lows.Length)
        {
            CodecErrors.ThrowCorrupt(Name, "the areas hold more than the tags use");
        }
    }

    /// <summary>Page words are little-endian in the format (both ways): free on a little-endian machine.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint LittleEndian(uint raw) => BitConverter.IsLittleEndian ? raw : BinaryPrimitives.ReverseEndianness(raw);
}
