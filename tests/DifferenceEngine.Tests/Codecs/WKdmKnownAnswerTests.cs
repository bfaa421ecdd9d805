using System.Buffers.Binary;
using DifferenceEngine.Codecs;

namespace DifferenceEngine.Tests.Codecs;

/// <summary>
/// WKdm encodings worked out by hand from the format comment in WKdmPageCompressor.cs (not by running the encoder).
/// Dictionary slots used below, from slot(w) = ((w >> 10) * 0x9E3779B1 mod 2^32) >> 28:
///   0x00000001, 0x00000005 (upper bits 0)        -> 0
///   0x12345678 (upper 0x48D15)                   -> 6
///   0xABCD1234, 0xABCD12FF (upper 0x2AF344)      -> 10
///   0x11111111 (upper 0x44444)                   -> 10 (collides with 0xABCD1234 on purpose)
///   0xDEADBEEF, 0xDEADBC01 (upper 0x37AB6F)      -> 12
///   0xCAFE0000 (upper 0x32BF80)                  -> 4
/// </summary>
public class WKdmKnownAnswerTests
{
    private static readonly IPageCompressor WKdm = PageCompressors.Get(CompressionAlgorithm.WKdm);

    [Fact]
    public void SlotsAreTheOnesTheExpectedBytesUse()
    {
        Assert.Equal(0, WKdmPageCompressor.Slot(0x00000001));
        Assert.Equal(0, WKdmPageCompressor.Slot(0x00000005));
        Assert.Equal(6, WKdmPageCompressor.Slot(0x12345678));
        Assert.Equal(10, WKdmPageCompressor.Slot(0xABCD1234));
        Assert.Equal(10, WKdmPageCompressor.Slot(0xABCD12FF));
        Assert.Equal(10, WKdmPageCompressor.Slot(0x11111111));
        Assert.Equal(12, WKdmPageCompressor.Slot(0xDEADBEEF));
        Assert.Equal(12, WKdmPageCompressor.Slot(0xDEADBC01));
        Assert.Equal(4, WKdmPageCompressor.Slot(0xCAFE0000));
    }

    [Fact]
    public void AllZeroPage()
    {
        // Every tag ZERO; no full words, indices or low bits: all three offsets are 262 = 0x0106.
        byte[] expected = [0x06, 0x01, 0x06, 0x01, 0x06, 0x01, .. new byte[256]];
        AssertEncodes(Words(), expected);
    }

    [Fact]
    public void OneWordRepeated()
    {
        // Word 0 misses (slot 6 holds the preload 1: upper bits differ); words 1-1023 match it exactly.
        // Tags: byte 0 = MISS | EXACT<<2 | EXACT<<4 | EXACT<<6 = 2 + 12 + 48 + 192 = 0xFE; the rest 0xFF.
        // One full word (78 56 34 12): indices start at 266 = 0x010A.
        // 1023 indices of 6: 511 bytes 0x66 and a last 0x06; low bits start and end at 266 + 512 = 778 = 0x030A.
        byte[] expected =
        [
            0x0A, 0x01, 0x0A, 0x03, 0x0A, 0x03,
            0xFE, .. Enumerable.Repeat((byte)0xFF, 255),
            0x78, 0x56, 0x34, 0x12,
            .. Enumerable.Repeat((byte)0x66, 511), 0x06,
        ];
        AssertEncodes(Enumerable.Repeat(0x12345678u, 1024).ToArray(), expected);
    }

    [Fact]
    public void ExactPartialMissAndZeroInAKnownOrder()
    {
        uint[] words = Words(
            0x00000001,  // 0 EXACT   slot 0 (matches the preload 1)
            0x00000005,  // 1 PARTIAL slot 0, low 5; dict[0] = 5
            0xABCD1234,  // 2 MISS    slot 10; dict[10] = ABCD1234
            0xABCD1234,  // 3 EXACT   slot 10
            0xABCD12FF,  // 4 PARTIAL slot 10, low 0x2FF; dict[10] = ABCD12FF
            0x00000000,  // 5 ZERO
            0xABCD1234,  // 6 PARTIAL slot 10, low 0x234; dict[10] = ABCD1234
            0x11111111,  // 7 MISS    slot 10 (other upper bits); dict[10] = 11111111
            0xABCD1234,  // 8 MISS    slot 10 again: evicted by word 7; dict[10] = ABCD1234
            0xABCD1234); // 9 EXACT   slot 10

        // Tags: 3,1,2,3 -> 3 + 4 + 32 + 192 = 0xE7; 1,0,1,2 -> 1 + 16 + 128 = 0x91; 2,3,0,0 -> 2 + 12 = 0x0E.
        // Full words (words 2, 7, 8): 12 bytes from 262; indices from 274 = 0x0112.
        // Indices 0,0,10,10,10,10 -> 0x00, 0xAA, 0xAA; low bits from 277 = 0x0115.
        // Low bits 5, 0x2FF, 0x234 -> 5 | 0x2FF << 10 | 0x234 << 20 = 0x234BFC05; end 281 = 0x0119.
        byte[] expected =
        [
            0x12, 0x01, 0x15, 0x01, 0x19, 0x01,
            0xE7, 0x91, 0x0E, .. new byte[253],
            0x34, 0x12, 0xCD, 0xAB, 0x11, 0x11, 0x11, 0x11, 0x34, 0x12, 0xCD, 0xAB,
            0x00, 0xAA, 0xAA,
            0x05, 0xFC, 0x4B, 0x23,
        ];
        AssertEncodes(words, expected);
    }

    [Fact]
    public void OddIndexCountAndOneLowValueArePadded()
    {
        uint[] words = Words(
            0xDEADBEEF,  // MISS    slot 12
            0xDEADBC01,  // PARTIAL slot 12 (upper bits equal), low 0x001
            0xCAFE0000); // MISS    slot 4

        // Tags 2,1,2,0 -> 2 + 4 + 32 = 0x26. Full words from 262, indices from 270 = 0x010E: one index 12 -> 0x0C
        // (high nibble 0). Low bits from 271 = 0x010F: one value 1 in a whole u32; end 275 = 0x0113.
        byte[] expected =
        [
            0x0E, 0x01, 0x0F, 0x01, 0x13, 0x01,
            0x26, .. new byte[255],
            0xEF, 0xBE, 0xAD, 0xDE, 0x00, 0x00, 0xFE, 0xCA,
            0x0C,
            0x01, 0x00, 0x00, 0x00,
        ];
        AssertEncodes(words, expected);
    }

    [Fact]
    public void NoTwoWordsAlikeIsTheLargestEncoding()
    {
        // Words 1..1024 << 10: all nonzero, all with distinct upper bits, and never equal to a dictionary entry.
        uint[] words = Enumerable.Range(1, 1024).Select(i => (uint)i << 10).ToArray();
        byte[] page = ToPage(words);
        byte[] buffer = new byte[WKdmPageCompressor.MaxEncodedSize];
        Assert.True(WKdm.TryCompress(page, buffer, out int written));
        Assert.Equal(4358, written);
        Assert.Equal([0x06, 0x11, 0x06, 0x11, 0x06, 0x11, 0xAA], buffer[..7]); // 4358 = 0x1106; tags all MISS
        Assert.False(WKdm.TryCompress(page, new byte[4357], out _));
    }

    [Fact]
    public void HandMadeEncodingDecodes()
    {
        // The third case's bytes, decoded without the encoder's help.
        byte[] encoded =
        [
            0x12, 0x01, 0x15, 0x01, 0x19, 0x01, 0xE7, 0x91, 0x0E, .. new byte[253],
            0x34, 0x12, 0xCD, 0xAB, 0x11, 0x11, 0x11, 0x11, 0x34, 0x12, 0xCD, 0xAB, 0x00, 0xAA, 0xAA, 0x05, 0xFC, 0x4B, 0x23,
        ];
        byte[] page = new byte[4096];
        WKdm.Decompress(encoded, page);
        Assert.Equal(ToPage(Words(1, 5, 0xABCD1234, 0xABCD1234, 0xABCD12FF, 0, 0xABCD1234, 0x11111111, 0xABCD1234, 0xABCD1234)), page);

        // Header offsets that disagree with the length, or a tag with nothing left to read, are corrupt.
        byte[] shortHeader = (byte[])encoded.Clone();
        shortHeader[4] = 0x18;
        Assert.Equal("CodecCorrupt", Assert.Throws<DEException>(() => WKdm.Decompress(shortHeader, page)).ErrorId);
        byte[] extraMiss = (byte[])encoded.Clone();
        extraMiss[9] = 0x02;
        Assert.Equal("CodecCorrupt", Assert.Throws<DEException>(() => WKdm.Decompress(extraMiss, page)).ErrorId);
    }

    private static uint[] Words(params uint[] first)
    {
        uint[] words = new uint[1024];
        first.CopyTo(words, 0);
        return words;
    }

    private static byte[] ToPage(uint[] words)
    {
        byte[] page = new byte[4096];
        for (int i = 0; i < words.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(i * 4), words[i]);
        }

        return page;
    }

    private static void AssertEncodes(uint[] words, byte[] expected)
    {
        byte[] page = ToPage(words);
        var buffer = new GuardedBuffer(WKdmPageCompressor.MaxEncodedSize);
        Assert.True(WKdm.TryCompress(page, buffer.Span, out int written));
        buffer.AssertGuardsIntact("known-answer compress");
        Assert.Equal(Convert.ToHexString(expected), Convert.ToHexString(buffer.Span[..written]));

        byte[] back = new byte[4096];
        WKdm.Decompress(expected, back);
        Assert.Equal(page, back);
    }
}
