using System.Runtime.CompilerServices;
using DifferenceEngine.Memory;
using ZstdSharp;
using ZstdSharp.Unsafe;

namespace DifferenceEngine.Codecs;

/// <summary>
/// Zstandard (ZstdSharp.Port) at level 3 (or 1: <see cref="PageCompressors.Fallback"/>), in the magic-less frame format
/// (4 bytes shorter: the store knows the codec).
/// A compression and a decompression context per thread, made on first use and kept for the thread's life.
/// </summary>
[SkipLocalsInit]
internal sealed class ZstdPageCompressor : IPageCompressor
{
    /// <summary>
    /// Level 3 (zstd's default): on real process pages about 2% smaller than level 1 for about 20% more compression
    /// time, and decompression costs the same; compression runs on cold pages, off the fault path. Numbers in
    /// docs/DELTA-CODEC.md.
    /// </summary>
    internal const int Level = 3;

    /// <summary>
    /// The level of <see cref="PageCompressors.Fallback"/>: level 1, for a page LZ4 could not shrink enough when page
    /// groups are on. Such a page usually joins a group later (compressed again there); level 3 took as much of a pass's
    /// single-page compression time as LZ4 did for every page (perf, session 19).
    /// </summary>
    internal const int FastLevel = 1;

    private readonly bool _fast;

    /// <param name="fast">Compress at <see cref="FastLevel"/> instead of <see cref="Level"/> (decoding is the same).</param>
    internal ZstdPageCompressor(bool fast = false) => _fast = fast;

    private const string Name = "Zstd";

    /// <summary>ZSTD_COMPRESSBOUND(4096): 4096 + 4096 / 256 + (128 KiB - 4096) / 2048.</summary>
    private const int ScratchSize = PageGeometry.PageSize + (PageGeometry.PageSize >> 8) + (((128 * 1024) - PageGeometry.PageSize) >> 11);

    [ThreadStatic]
    private static Compressor? t_compressor;

    [ThreadStatic]
    private static Compressor? t_fastCompressor;

    [ThreadStatic]
    private static Decompressor? t_decompressor;

    public CompressionAlgorithm Algorithm => CompressionAlgorithm.Zstd;

    public bool TryCompress(ReadOnlySpan<byte> page, Span<byte> destination, out int written)
    {
        CodecErrors.CheckPage(page.Length, nameof(page));
        CodecErrors.CheckDisjoint(page, destination, nameof(page));
        Compressor compressor = _fast ? t_fastCompressor ??= CreateCompressor(FastLevel) : t_compressor ??= CreateCompressor(Level);

        // zstd wants room for its worst case while it works, more than it may finally need: compress into a scratch
        // page of that size, then copy if the result fits.
        Span<byte> scratch = stackalloc byte[ScratchSize];
        if (compressor.TryWrap(page, scratch, out int n) && n <= destination.Length)
        {
            scratch[..n].CopyTo(destination);
            written = n;
            return true;
        }

        written = 0;
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Decompress(ReadOnlySpan<byte> compressed, Span<byte> page)
    {
        CodecErrors.CheckPage(page.Length, nameof(page));
        CodecErrors.CheckDisjoint(compressed, page, nameof(compressed));
        Decompressor decompressor = t_decompressor ??= CreateDecompressor();
        int n;
        try
        {
            if (!decompressor.TryUnwrap(compressed, page, out n))
            {
                n = -1;
            }
        }
        catch (ZstdException e)
        {
            CodecErrors.ThrowCorrupt(Name, e.Message, e);
            return;
        }

        if (n != PageGeometry.PageSize)
        {
            CodecErrors.ThrowCorrupt(Name, n < 0 ? "the frame decodes to more than a page" : $"it holds {n} bytes, not a page");
        }
    }

    private static Compressor CreateCompressor(int level)
    {
        var compressor = new Compressor(level);
        compressor.SetParameter(ZSTD_cParameter.ZSTD_c_experimentalParam2, (int)ZSTD_format_e.ZSTD_f_zstd1_magicless);
        return compressor;
    }

    private static Decompressor CreateDecompressor()
    {
        var decompressor = new Decompressor();
        decompressor.SetParameter(ZSTD_dParameter.ZSTD_d_experimentalParam1, (int)ZSTD_format_e.ZSTD_f_zstd1_magicless);
        return decompressor;
    }
}
