using DifferenceEngine.Codecs;

namespace DifferenceEngine.Tests.Codecs;

/// <summary>Damaged encodings (truncated, bit-flipped, extended) decode to a whole page or fail with "CodecCorrupt", never out of range.</summary>
public class MalformedInputTests
{
    public static TheoryData<CompressionAlgorithm> Algorithms() => new(Enum.GetValues<CompressionAlgorithm>());

    [Theory]
    [MemberData(nameof(Algorithms))]
    public void DamagedCompressedPagesFailCleanly(CompressionAlgorithm algorithm)
    {
        IPageCompressor codec = PageCompressors.Get(algorithm);
        var random = new Random(31 + (int)algorithm);
        byte[] buffer = new byte[8192];
        foreach (var kind in TestPages.Kinds())
        {
            byte[] page = kind.Make(random);
            Assert.True(codec.TryCompress(page, buffer, out int written));
            CorruptInput.Check($"{algorithm} {kind.Name}", buffer[..written], codec.Decompress, random, flips: 200);
        }
    }

    [Fact]
    public void DamagedPatchesFailCleanly()
    {
        var random = new Random(77);
        byte[] buffer = new byte[DeltaCodec.MaxPatchSize];
        foreach (var kind in TestPages.PairKinds())
        {
            for (int i = 0; i < 3; i++)
            {
                (byte[] reference, byte[] page) = kind.Make(random);
                Assert.True(DeltaCodec.TryEncode(reference, page, buffer, out int written));
                CorruptInput.Check($"delta {kind.Name} #{i}", buffer[..written],
                    (patch, output) => DeltaCodec.Decode(reference, patch, output), random);
            }
        }
    }

    [Fact]
    public void RandomBytesAreNotAPatchOrACompressedPage()
    {
        var random = new Random(3);
        byte[] reference = TestPages.Random(random);
        var output = new GuardedBuffer(4096);
        for (int i = 0; i < 2000; i++)
        {
            byte[] junk = new byte[random.Next(0, 5000)];
            random.NextBytes(junk);
            Expect(() => DeltaCodec.Decode(reference, junk, output.Span), output, $"delta junk #{i}");
            foreach (CompressionAlgorithm algorithm in Enum.GetValues<CompressionAlgorithm>())
            {
                Expect(() => PageCompressors.Get(algorithm).Decompress(junk, output.Span), output, $"{algorithm} junk #{i}");
            }
        }
    }

    [Fact]
    public void CorruptErrorsSayWhichCodec()
    {
        byte[] page = new byte[4096];
        var e = Assert.Throws<DEException>(() => DeltaCodec.Decode(page, [0x3F], new byte[4096]));
        Assert.Equal("CodecCorrupt", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
        Assert.Contains("delta", e.Message, StringComparison.Ordinal);
        foreach (CompressionAlgorithm algorithm in Enum.GetValues<CompressionAlgorithm>())
        {
            e = Assert.Throws<DEException>(() => PageCompressors.Get(algorithm).Decompress([1, 2, 3], new byte[4096]));
            Assert.Equal("CodecCorrupt", e.ErrorId);
            Assert.Contains(algorithm.ToString(), e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void HandMadePatchesDecodeAndBadFieldsAreCaught()
    {
        byte[] reference = TestPages.AllDifferentBytes();
        byte[] output = new byte[4096];

        // One same-offset copy of the whole page: 7 = M code for 9 + varint 4087 (0xF7 0x1F).
        DeltaCodec.Decode(reference, [0x07, 0xF7, 0x1F], output);
        Assert.Equal(reference, output);

        // 4096 literals as one run: L = 7 + 4089 (0xF9 0x1F).
        byte[] literals = [0xE0, 0xF9, 0x1F, .. TestPages.Filled(0x5A)];
        DeltaCodec.Decode(reference, literals, output);
        Assert.Equal(TestPages.Filled(0x5A), output);

        // A copy at delta +1 (zigzag 2) of 4095 bytes, then one literal: byte i = reference[i + 1], last = 0x77.
        DeltaCodec.Decode(reference, [0x17, 0x02, 0xF6, 0x1F, 0x20, 0x77], output);
        for (int i = 0; i < 4095; i++)
        {
            Assert.Equal((byte)(i + 1), output[i]);
        }

        Assert.Equal(0x77, output[4095]);

        // One literal 'A', then a copy from 1 byte back (K = 3) of 9 + 4086 bytes: a run, LZ77 style.
        DeltaCodec.Decode(reference, [0x3F, 0x41, 0x01, 0xF6, 0x1F], output);
        Assert.Equal(TestPages.Filled(0x41), output);

        // 16 literals, a copy from 16 back of 16 (M = 7, varint 7), then K = 1 repeats "16 back" for the remaining 4064
        // (9 + 4055 = 0xD7 0x1F): a 16-byte pattern over the page.
        byte[] pattern = [.. Enumerable.Range(0x30, 16).Select(i => (byte)i)];
        DeltaCodec.Decode(reference, [0xFF, 0x09, .. pattern, 0x10, 0x07, 0x0F, 0xD7, 0x1F], output);
        for (int i = 0; i < 4096; i++)
        {
            Assert.Equal(pattern[i % 16], output[i]);
        }

        string[] bad =
        [
            "07 F7",          // ends inside a varint
            "07 F7 1F 00",    // a byte after the page is complete
            "07 F8 1F",       // copy runs past the page (4088 + 9 = 4097)
            "17 01 F6 1F 20 77", // delta -1 at offset 0 reads before the reference
            "1F 02 F6 1F",    // a copy from 2 bytes back at page offset 0
            "07 F7 9F 01",    // a three-byte varint
            "E0 F9 1F",       // literals run past the patch
            "17 02 06 0F E8 1F", // the second copy, at the last delta (+1), runs past the reference's end
            "3F 41 00 F6 1F",  // a copy from 0 bytes back
            "3F 41 02 F6 1F",  // a copy from 2 bytes back at page offset 1
            "",               // empty
        ];
        foreach (string hex in bad)
        {
            byte[] patch = Convert.FromHexString(hex.Replace(" ", "", StringComparison.Ordinal));
            var e = Assert.Throws<DEException>(() => DeltaCodec.Decode(reference, patch, output));
            Assert.Equal("CodecCorrupt", e.ErrorId);
        }
    }

    private static void Expect(Action decode, GuardedBuffer output, string context)
    {
        output.Reset();
        try
        {
            decode();
        }
        catch (DEException e) when (e.ErrorId == "CodecCorrupt")
        {
        }

        output.AssertGuardsIntact(context);
    }
}
