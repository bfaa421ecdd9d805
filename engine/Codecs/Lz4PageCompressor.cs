using System.Runtime.CompilerServices;
using K4os.Compression.LZ4;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Codecs;

/// <summary>LZ4 block format (K4os.Compression.LZ4) at its fastest level: the cheap general-purpose choice.</summary>
internal sealed class Lz4PageCompressor : IPageCompressor
{
    private const string Name = "LZ4";
    private const LZ4Level Level = LZ4Level.L00_FAST;

    public CompressionAlgorithm Algorithm => CompressionAlgorithm.LZ4;

    public bool TryCompress(ReadOnlySpan<byte> page, Span<byte> destination, out int written)
    {
        CodecErrors.CheckPage(page.Length, nameof(page));
        CodecErrors.CheckDisjoint(page, destination, nameof(page));

        // K4os stops (and returns <= 0) when the block would not fit: it never writes past the target's end.
        int n = LZ4Codec.Encode(page, destination, Level);
        written = n > 0 ? n : 0;
        return n > 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Decompress(ReadOnlySpan<byte> compressed, Span<byte> page)
    {
        CodecErrors.CheckPage(page.Length, nameof(page));
        CodecErrors.CheckDisjoint(compressed, page, nameof(compressed));

        // The "safe" LZ4 decoder checks every literal and match against both buffers and returns < 0 on bad input.
        int n = LZ4Codec.Decode(compressed, page);
        if (n != PageGeometry.PageSize)
        {
            CodecErrors.ThrowCorrupt(Name, n < 0 ? "the block is malformed or truncated" : $"it holds {n} bytes, not a page");
        }
    }
}
