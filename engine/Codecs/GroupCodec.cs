using System.Runtime.CompilerServices;
using K4os.Compression.LZ4;
using ZstdSharp;
using ZstdSharp.Unsafe;

namespace DifferenceEngine.Codecs;

/// <summary>
/// Compresses a page group's payload (its members' checksums and gfns, then their pages) as one stream, and decodes a
/// prefix of it: a fault on one member decodes only as far as that member's page.
/// </summary>
/// <remarks>
/// <para>Zstd: magic-less frames at <see cref="ZstdLevel"/>, in zstd's own blocks (up to 128 KiB: a group of 4 is one
/// block); later pages refer back to earlier ones, which is what makes a group smaller than its pages compressed alone.
/// Decoding streams into the caller's buffer with a per-thread context and stops once the prefix wanted is out.</para>
/// <para>LZ4: one block (K4os) at <see cref="Lz4Level"/>, a high-compression level: the same block format, decoded as
/// fast as any LZ4 block; a prefix is decoded with LZ4's partial decode, which stops once the output is full.</para>
/// <para>Corrupt or truncated input throws "CodecCorrupt"; nothing is written outside the output.</para>
/// </remarks>
[SkipLocalsInit]
internal static unsafe class GroupCodec
{
    /// <summary>
    /// Zstd level for groups. Session 18, on the guest images' 35,949 distinct pages LZ4 admits, in groups of 4 (one
    /// thread, docs/PERFORMANCE.md, "The group codec's level and blocks"): level 1 in one block compresses in 11.7 us a page
    /// to 32.85 MiB, where level 3 in 4 KiB blocks (the codec until then) took 17.2-20.0 us to 33.73 MiB; decoding a
    /// member costs the same at the median (17.7-17.9 us against 10.3-20.9 us by member).
    /// </summary>
    internal const int ZstdLevel = 1;

    /// <summary>
    /// LZ4 level for groups: HC level 3. Groups hold long-cold pages and are compressed off the fault path, and the
    /// decoder is LZ4's whatever the level. On the three guest images (Compare, every mechanism, LZ4 single pages with
    /// LZ4 groups of 4, 2026-12-05): fastest level 144.4 MiB used, HC 3 131.8 MiB (scan to stable 1.46 s), HC 6 129.4
    /// (1.94 s), HC 9 128.9 (2.29 s); docs/PERFORMANCE.md, "The fast setting".
    /// </summary>
    internal const LZ4Level Lz4Level = LZ4Level.L03_HC;

    [ThreadStatic] private static Compressor? t_compressor;
    [ThreadStatic] private static nint t_dctx;

    /// <summary>Room <see cref="TryCompress"/> wants for a payload of <paramref name="length"/> bytes, whatever the codec.</summary>
    public static int Bound(int length) => Math.Max(Compressor.GetCompressBound(length), LZ4Codec.MaximumOutputSize(length));

    /// <summary>
    /// Compresses <paramref name="payload"/> into <paramref name="destination"/>; false when the result would not fit
    /// (a destination of <see cref="Bound"/> bytes always suffices).
    /// </summary>
    public static bool TryCompress(CompressionAlgorithm codec, ReadOnlySpan<byte> payload, Span<byte> destination, out int written)
    {
        switch (codec)
        {
            case CompressionAlgorithm.Zstd:
            {
                var compressor = t_compressor ??= CreateCompressor();
                return compressor.TryWrap(payload, destination, out written);
            }
            case CompressionAlgorithm.LZ4:
            {
                int n = LZ4Codec.Encode(payload, destination, Lz4Level);
                written = Math.Max(n, 0);
                return n > 0;
            }
            default:
                throw new DEException("GroupCodecUnsupported", DEErrorKind.InvalidArgument,
                    $"Page groups are compressed with Zstd or LZ4, not {codec}.", codec);
        }
    }

    /// <summary>Decodes exactly the first <paramref name="prefix"/>.Length bytes of the payload <paramref name="stream"/> holds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void DecodePrefix(CompressionAlgorithm codec, ReadOnlySpan<byte> stream, Span<byte> prefix)
    {
        if (stream.Overlaps(prefix)) throw new ArgumentException("The stream and the output overlap.", nameof(prefix));
        switch (codec)
        {
            case CompressionAlgorithm.Zstd:
                DecodeZstd(stream, prefix);
                break;
            case CompressionAlgorithm.LZ4:
            {
                int n = LZ4Codec.PartialDecode(stream, prefix);
                if (n != prefix.Length)
                    CodecErrors.ThrowCorrupt("LZ4 group", n < 0 ? "the block is malformed or truncated" : $"it decodes to {n} bytes, fewer than the {prefix.Length} wanted");
                break;
            }
            default:
                CodecErrors.ThrowCorrupt("group", $"{(byte)codec} is not a group codec");
                break;
        }
    }

    private static void DecodeZstd(ReadOnlySpan<byte> stream, Span<byte> prefix)
    {
        var dctx = (ZSTD_DCtx_s*)t_dctx;
        if (dctx == null)
        {
            dctx = Methods.ZSTD_createDCtx();
            Methods.ZSTD_DCtx_setParameter(dctx, ZSTD_dParameter.ZSTD_d_experimentalParam1, (int)ZSTD_format_e.ZSTD_f_zstd1_magicless);
            t_dctx = (nint)dctx;
        }
        Methods.ZSTD_DCtx_reset(dctx, ZSTD_ResetDirective.ZSTD_reset_session_only);
        fixed (byte* src = stream)
        fixed (byte* dst = prefix)
        {
            var input = new ZSTD_inBuffer_s { src = src, size = (nuint)stream.Length, pos = 0 };
            var output = new ZSTD_outBuffer_s { dst = dst, size = (nuint)prefix.Length, pos = 0 };
            while (output.pos < output.size)
            {
                nuint inBefore = input.pos, outBefore = output.pos;
                nuint r = Methods.ZSTD_decompressStream(dctx, &output, &input);
                if (Methods.ZSTD_isError(r))
                    CodecErrors.ThrowCorrupt("Zstd group", new string(Methods.ZSTD_getErrorName(r)));
                if (output.pos < output.size && (r == 0 || (input.pos == inBefore && output.pos == outBefore)))
                    CodecErrors.ThrowCorrupt("Zstd group", $"the stream ends after {output.pos} of the {prefix.Length} bytes wanted");
            }
        }
    }

    private static Compressor CreateCompressor()
    {
        var compressor = new Compressor(ZstdLevel);
        compressor.SetParameter(ZSTD_cParameter.ZSTD_c_experimentalParam2, (int)ZSTD_format_e.ZSTD_f_zstd1_magicless);
        return compressor;
    }
}
