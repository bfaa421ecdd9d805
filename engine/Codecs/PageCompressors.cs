namespace DifferenceEngine.Codecs;

/// <summary>The one shared, thread-safe instance of each page compressor.</summary>
public static class PageCompressors
{
    private static readonly IPageCompressor Lz4 = new Lz4PageCompressor();
    private static readonly IPageCompressor WKdm = new WKdmPageCompressor();
    private static readonly IPageCompressor Zstd = new ZstdPageCompressor();
    private static readonly IPageCompressor ZstdFast = new ZstdPageCompressor(fast: true);

    public static IPageCompressor Get(CompressionAlgorithm algorithm) => algorithm switch
    {
        CompressionAlgorithm.LZ4 => Lz4,
        CompressionAlgorithm.WKdm => WKdm,
        CompressionAlgorithm.Zstd => Zstd,
        _ => throw new DEException("CompressionAlgorithmUnknown", DEErrorKind.InvalidArgument,
            $"{(byte)algorithm} is not a compression algorithm; use LZ4, WKdm or Zstd.", algorithm),
    };

    /// <summary>
    /// The compressor for a page the domain's codec could not shrink enough, with the groups' codec: Zstd at its fast
    /// level (the blob decodes as any Zstd blob), any other codec as <see cref="Get"/> gives it.
    /// </summary>
    internal static IPageCompressor Fallback(CompressionAlgorithm algorithm) =>
        algorithm == CompressionAlgorithm.Zstd ? ZstdFast : Get(algorithm);
}
