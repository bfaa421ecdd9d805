using DifferenceEngine.Codecs;

namespace DifferenceEngine.Tests.Codecs;

/// <summary>Round trips, limits and thread safety of LZ4, WKdm and Zstd, with guard bytes around every output.</summary>
public class PageCompressorTests
{
    private const int PagesPerKind = 100;

    /// <summary>Large enough for any codec's worst case on a 4 KiB page (WKdm's is 4358).</summary>
    private const int Roomy = 8192;

    public static TheoryData<CompressionAlgorithm, string> Cases()
    {
        var data = new TheoryData<CompressionAlgorithm, string>();
        foreach (CompressionAlgorithm algorithm in Enum.GetValues<CompressionAlgorithm>())
        {
            foreach (var kind in TestPages.Kinds())
            {
                data.Add(algorithm, kind.Name);
            }
        }

        return data;
    }

    public static TheoryData<CompressionAlgorithm> Algorithms() => new(Enum.GetValues<CompressionAlgorithm>());

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryPageRoundTrips(CompressionAlgorithm algorithm, string kind)
    {
        IPageCompressor codec = PageCompressors.Get(algorithm);
        var make = TestPages.Kinds().Single(k => k.Name == kind).Make;
        var random = new Random(HashCode.Combine((int)algorithm, kind.Length, 99));
        var compressed = new GuardedBuffer(Roomy);
        var output = new GuardedBuffer(TestPages.PageSize);
        for (int i = 0; i < PagesPerKind; i++)
        {
            byte[] page = make(random);
            compressed.Reset();
            Assert.True(codec.TryCompress(page, compressed.Span, out int written), $"{algorithm} {kind} #{i}");
            Assert.InRange(written, 1, Roomy);
            compressed.AssertGuardsIntact($"{algorithm} {kind} #{i} compress");

            output.Reset();
            codec.Decompress(compressed.Span[..written], output.Span);
            output.AssertGuardsIntact($"{algorithm} {kind} #{i} decompress");
            Assert.True(output.Span.SequenceEqual(page), $"{algorithm} {kind} #{i}: the decompressed page differs");

            var exact = new GuardedBuffer(written);
            Assert.True(codec.TryCompress(page, exact.Span, out int again), $"{algorithm} {kind} #{i}: its own size must suffice");
            Assert.Equal(written, again);
            exact.AssertGuardsIntact($"{algorithm} {kind} #{i} exact compress");

            foreach (int size in (int[])[written - 1, written / 2, 1, 0])
            {
                var small = new GuardedBuffer(Math.Max(size, 0));
                Assert.False(codec.TryCompress(page, small.Span, out int none), $"{algorithm} {kind} #{i}: {size} bytes cannot hold {written}");
                Assert.Equal(0, none);
                small.AssertGuardsIntact($"{algorithm} {kind} #{i} compress into {size}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Algorithms))]
    public void CompressibleKindsCompress(CompressionAlgorithm algorithm)
    {
        IPageCompressor codec = PageCompressors.Get(algorithm);
        Span<byte> buffer = stackalloc byte[Roomy];
        var random = new Random(8);
        byte[] structured = algorithm == CompressionAlgorithm.WKdm ? TestPages.NearbyWords(random) : TestPages.TextLike(random);
        foreach (byte[] page in (byte[][])[new byte[4096], TestPages.Filled(0x41), TestPages.RepeatedWord(0xDEADBEEF), structured])
        {
            Assert.True(codec.TryCompress(page, buffer, out int written));
            Assert.True(written < 4096 * 3 / 4, $"{algorithm}: {written} bytes");
        }
    }

    [Fact]
    public void GetReturnsOneInstancePerAlgorithmAndRefusesOthers()
    {
        foreach (CompressionAlgorithm algorithm in Enum.GetValues<CompressionAlgorithm>())
        {
            Assert.Same(PageCompressors.Get(algorithm), PageCompressors.Get(algorithm));
            Assert.Equal(algorithm, PageCompressors.Get(algorithm).Algorithm);
        }

        var e = Assert.Throws<DEException>(() => PageCompressors.Get((CompressionAlgorithm)0));
        Assert.Equal("CompressionAlgorithmUnknown", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidArgument, e.Kind);
    }

    [Theory]
    [MemberData(nameof(Algorithms))]
    public void WrongSizesAreArgumentErrors(CompressionAlgorithm algorithm)
    {
        IPageCompressor codec = PageCompressors.Get(algorithm);
        byte[] buffer = new byte[Roomy];
        Assert.Equal("PageSizeInvalid", Assert.Throws<DEException>(() => codec.TryCompress(new byte[4000], buffer, out _)).ErrorId);
        Assert.True(codec.TryCompress(new byte[4096], buffer, out int written));
        Assert.Equal("PageSizeInvalid", Assert.Throws<DEException>(() => codec.Decompress(buffer.AsSpan(0, written), new byte[8192])).ErrorId);
        Assert.Equal("CodecBuffersOverlap", Assert.Throws<DEException>(() => codec.TryCompress(buffer.AsSpan(0, 4096), buffer.AsSpan(100), out _)).ErrorId);
        Assert.Equal("CodecBuffersOverlap", Assert.Throws<DEException>(() => codec.Decompress(buffer.AsSpan(0, written), buffer.AsSpan(0, 4096))).ErrorId);
    }

    [Theory]
    [MemberData(nameof(Algorithms))]
    public void ManyThreadsShareOneInstance(CompressionAlgorithm algorithm)
    {
        IPageCompressor codec = PageCompressors.Get(algorithm);
        int failures = 0;
        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, worker =>
        {
            var random = new Random(worker);
            byte[] compressed = new byte[Roomy];
            byte[] output = new byte[4096];
            for (int i = 0; i < 200; i++)
            {
                byte[] page = TestPages.AnyPage(random);
                if (!codec.TryCompress(page, compressed, out int written))
                {
                    Interlocked.Increment(ref failures);
                    continue;
                }

                codec.Decompress(compressed.AsSpan(0, written), output);
                if (!output.AsSpan().SequenceEqual(page))
                {
                    Interlocked.Increment(ref failures);
                }
            }
        });
        Assert.Equal(0, failures);
    }
}
