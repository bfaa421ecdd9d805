namespace DifferenceEngine.Codecs;

/// <summary>The page compressors a domain can choose; the value is stored with every compressed page, so it never changes.</summary>
public enum CompressionAlgorithm : byte
{
    LZ4 = 1,
    WKdm = 2,
    Zstd = 3,
}
