using DifferenceEngine.Codecs;

namespace DifferenceEngine.Tests.Codecs;

/// <summary>Round trips and limits of the delta codec, with guard bytes around every output.</summary>
public class DeltaCodecTests
{
    private const int PairsPerKind = 150;

    public static TheoryData<string> PairKindNames() => new(TestPages.PairKinds().Select(k => k.Name));

    [Theory]
    [MemberData(nameof(PairKindNames))]
    public void EveryPairRoundTrips(string kind)
    {
        var make = TestPages.PairKinds().Single(k => k.Name == kind).Make;
        var random = new Random(HashCode.Combine(kind.Length, 1234));
        var patch = new GuardedBuffer(DeltaCodec.MaxPatchSize);
        var output = new GuardedBuffer(TestPages.PageSize);
        for (int i = 0; i < PairsPerKind; i++)
        {
            (byte[] reference, byte[] page) = make(random);
            patch.Reset();
            Assert.True(DeltaCodec.TryEncode(reference, page, patch.Span, out int written), $"{kind} #{i}: MaxPatchSize must always suffice");
            Assert.InRange(written, 3, DeltaCodec.MaxPatchSize);
            patch.AssertGuardsIntact($"{kind} #{i} encode");

            output.Reset();
            DeltaCodec.Decode(reference, patch.Span[..written], output.Span);
            output.AssertGuardsIntact($"{kind} #{i} decode");
            Assert.True(output.Span.SequenceEqual(page), $"{kind} #{i}: the decoded page differs");

            // Exactly the size it needs is enough; one byte less is not, and touches nothing outside.
            var exact = new GuardedBuffer(written);
            Assert.True(DeltaCodec.TryEncode(reference, page, exact.Span, out int again));
            Assert.Equal(written, again);
            Assert.True(exact.Span.SequenceEqual(patch.Span[..written]), "encoding is deterministic");
            exact.AssertGuardsIntact($"{kind} #{i} exact encode");
            if (written < DeltaCodec.MaxPatchSize)
            {
                var small = new GuardedBuffer(written - 1);
                Assert.False(DeltaCodec.TryEncode(reference, page, small.Span, out int none));
                Assert.Equal(0, none);
                small.AssertGuardsIntact($"{kind} #{i} too-small encode");
            }
        }
    }

    [Fact]
    public void SimilarPagesGiveSmallPatches()
    {
        var random = new Random(5);
        byte[] reference = TestPages.TextLike(random);
        Span<byte> patch = stackalloc byte[DeltaCodec.MaxPatchSize];

        Assert.True(DeltaCodec.TryEncode(reference, reference, patch, out int identical));
        Assert.Equal(3, identical);

        byte[] page = (byte[])reference.Clone();
        page[2000] ^= 0xFF;
        Assert.True(DeltaCodec.TryEncode(reference, page, patch, out int oneByte));
        Assert.Equal(7, oneByte);

        // 100 bytes inserted at 1000: the tail is found again 100 bytes further on.
        page = new byte[4096];
        reference.AsSpan(0, 1000).CopyTo(page);
        random.NextBytes(page.AsSpan(1000, 100));
        reference.AsSpan(1000, 4096 - 1100).CopyTo(page.AsSpan(1100));
        Assert.True(DeltaCodec.TryEncode(reference, page, patch, out int shifted));
        Assert.InRange(shifted, 100, 115);
    }

    [Fact]
    public void DissimilarPagesStopAtTheThreshold()
    {
        var random = new Random(6);
        var small = new GuardedBuffer(2048);
        for (int i = 0; i < 50; i++)
        {
            Assert.False(DeltaCodec.TryEncode(TestPages.Random(random), TestPages.Random(random), small.Span, out int written));
            Assert.Equal(0, written);
            small.AssertGuardsIntact("random vs random under 2048");
        }

        Assert.False(DeltaCodec.TryEncode(new byte[4096], new byte[4096], Span<byte>.Empty, out _));
        Assert.False(DeltaCodec.TryEncode(new byte[4096], new byte[4096], new byte[2], out _));
    }

    [Fact]
    public void WrongSizesAndOverlapsAreArgumentErrors()
    {
        byte[] page = new byte[4096];
        byte[] patch = new byte[DeltaCodec.MaxPatchSize];
        var e = Assert.Throws<DEException>(() => DeltaCodec.TryEncode(new byte[4095], page, patch, out _));
        Assert.Equal("PageSizeInvalid", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidArgument, e.Kind);
        e = Assert.Throws<DEException>(() => DeltaCodec.TryEncode(page, new byte[4097], patch, out _));
        Assert.Equal("PageSizeInvalid", e.ErrorId);
        e = Assert.Throws<DEException>(() => DeltaCodec.Decode(page, [0x07, 0xFF, 0x1F], new byte[100]));
        Assert.Equal("PageSizeInvalid", e.ErrorId);
        e = Assert.Throws<DEException>(() => DeltaCodec.Decode(page, [0x07, 0xFF, 0x1F], page));
        Assert.Equal("CodecBuffersOverlap", e.ErrorId);
        byte[] both = new byte[8192];
        e = Assert.Throws<DEException>(() => DeltaCodec.TryEncode(page, both.AsSpan(0, 4096), both.AsSpan(4000), out _));
        Assert.Equal("CodecBuffersOverlap", e.ErrorId);
    }
}
