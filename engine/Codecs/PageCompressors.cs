namespace DifferenceEngine.Codecs;

/// <summary>The one shared, thread-safe instance of each page compressor.</summary>
public static class PageCompressors
{
    private static readonly IPageCompressor Lz4 = new Lz4PageCompressor();
    private static readonly IPageCompressor WKdm = new WKdmPageCompressor();
    private static readonly IPageCompressor Zstd = new ZstdPageCompressor();

    public static IPageCompressor Get(CompressionAlgorithm algorithm) => algorithm switch
    {
        CompressionAlgorithm.LZ4 => Lz4,
        CompressionAlgorithm.WKdm => WKdm,
        CompressionAlgorithm.Zstd => Zstd,
        _ => throw new DEException("CompressionAlgorithmUnknown", DEErrorKind.InvalidArgument,
            $"{(byte)algorithm} is not a compression algorithm; use LZ4, WKdm or Zstd.", algorithm),
    };
}
