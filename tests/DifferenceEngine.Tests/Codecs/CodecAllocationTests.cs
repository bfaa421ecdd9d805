using DifferenceEngine.Codecs;

namespace DifferenceEngine.Tests.Codecs;

/// <summary>Every codec call allocates nothing once warm (Zstd's per-thread contexts are made during warm-up).</summary>
[Collection(nameof(DifferenceEngine.Tests.Engine.SerialCollection))] // measured alone: see Allocations.On
public class CodecAllocationTests
{
    private const int Calls = 1000;

    [Theory]
    [InlineData(CompressionAlgorithm.LZ4)]
    [InlineData(CompressionAlgorithm.WKdm)]
    [InlineData(CompressionAlgorithm.Zstd)]
    public void CompressAndDecompressAllocateNothing(CompressionAlgorithm algorithm)
    {
        IPageCompressor codec = PageCompressors.Get(algorithm);
        byte[][] pages = SamplePages();
        byte[] compressed = new byte[8192];
        byte[] small = new byte[64];
        byte[] output = new byte[4096];
        void Run(int calls)
        {
            for (int i = 0; i < calls; i++)
            {
                byte[] page = pages[i % pages.Length];
                codec.TryCompress(page, small, out _);
                codec.TryCompress(page, compressed, out int written);
                codec.Decompress(compressed.AsSpan(0, written), output);
            }
        }

        Run(Calls);
        long allocated = Allocations.On(() => Run(Calls));
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void DeltaEncodeAndDecodeAllocateNothing()
    {
        byte[][] pages = SamplePages();
        byte[] patch = new byte[DeltaCodec.MaxPatchSize];
        byte[] small = new byte[64];
        byte[] output = new byte[4096];
        void Run(int calls)
        {
            for (int i = 0; i < calls; i++)
            {
                byte[] reference = pages[i % pages.Length];
                byte[] page = pages[(i / pages.Length) % pages.Length];
                DeltaCodec.TryEncode(reference, page, small, out _);
                DeltaCodec.TryEncode(reference, page, patch, out int written);
                DeltaCodec.Decode(reference, patch.AsSpan(0, written), output);
            }
        }

        Run(Calls);
        long before = GC.GetAllocatedBytesForCurrentThread();
        Run(Calls);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
    }

    private static byte[][] SamplePages()
    {
        var random = new Random(11);
        return TestPages.Kinds().Select(k => k.Make(random)).ToArray();
    }
}
