namespace DifferenceEngine.Codecs;

/// <summary>A codec that compresses one 4 KiB page on its own; implementations are stateless per call and thread-safe.</summary>
public interface IPageCompressor
{
    CompressionAlgorithm Algorithm { get; }

    /// <summary>
    /// Compresses one 4096-byte page. Returns false (writing nothing meaningful) when the result would not fit in
    /// <paramref name="destination"/>: callers pass a destination sized to their acceptance threshold, so
    /// "does not compress well enough" is cheap. Never writes outside <paramref name="destination"/>, which must not
    /// overlap <paramref name="page"/>; a destination as long as the result always suffices.
    /// </summary>
    bool TryCompress(ReadOnlySpan<byte> page, Span<byte> destination, out int written);

    /// <summary>
    /// Decompresses exactly the bytes <see cref="TryCompress"/> wrote into exactly 4096 bytes. Malformed or truncated input
    /// throws <see cref="DEException"/> "CodecCorrupt"; nothing is ever written outside <paramref name="page"/>.
    /// </summary>
    void Decompress(ReadOnlySpan<byte> compressed, Span<byte> page);
}
