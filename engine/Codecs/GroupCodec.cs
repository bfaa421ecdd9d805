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
    /// Zstd level of the first of the two parameter sets a group may be compressed with (<see cref="GroupCodecChoice"/>):
    /// level 3, whose parameters for a group of 4 (a payload just over 16 KiB) are zstd's "double fast" strategy with
    /// matches of 5 bytes or more. Session 23, every page the default setting had grouped on the guest images (33,043
    /// pages) and the program snapshots (36,709), groups of 4 in gfn order with their 16-byte member headers, one
    /// thread: level 1 29.61 / 34.63 MiB at 12 us a page; level 3 29.71 / 33.71 MiB at 13.6 us; level 1's "fast"
    /// strategy with matches of 7 bytes or more 28.50 / 35.27 MiB at 11-13 us; the smaller of the two for every group
    /// 28.10 / 33.65 MiB. Level 5 and up (lazy strategies) 27.4-28.0 / 32.8-33.1 MiB at 38-72 us a page.
    /// </summary>
    internal const int ZstdLevel = 3;

    /// <summary>The second parameter set's level (<see cref="GroupCodecChoice"/>): zstd's "fast" strategy ...</summary>
    internal const int ZstdLongMatchLevel = 1;

    /// <summary>... with no match shorter than 7 bytes: on the guest images' structured data, short matches cost more than they save.</summary>
    internal const int ZstdLongMatchMinMatch = 7;

    /// <summary>
    /// LZ4 level for groups: HC level 3. Groups hold long-cold pages and are compressed off the fault path, and the
    /// decoder is LZ4's whatever the level. On the three guest images (Compare, every mechanism, LZ4 single pages with
    /// LZ4 groups of 4, 2026-12-05): fastest level 144.4 MiB used, HC 3 131.8 MiB (scan to stable 1.46 s), HC 6 129.4
    /// (1.94 s), HC 9 128.9 (2.29 s); docs/PERFORMANCE.md, "The fast setting".
    /// </summary>
    internal const LZ4Level Lz4Level = LZ4Level.L03_HC;

    [ThreadStatic] private static Compressor? t_compressor;
    [ThreadStatic] private static Compressor? t_longMatchCompressor;
    [ThreadStatic] private static byte[]? t_other;
    [ThreadStatic] private static nint t_dctx;

    /// <summary>Room <see cref="TryCompress(CompressionAlgorithm, ReadOnlySpan{byte}, Span{byte}, out int)"/> wants for a payload of <paramref name="length"/> bytes, whatever the codec.</summary>
    public static int Bound(int length) => Math.Max(Compressor.GetCompressBound(length), LZ4Codec.MaximumOutputSize(length));

    /// <summary>
    /// Compresses <paramref name="payload"/> into <paramref name="destination"/>; false when the result would not fit
    /// (a destination of <see cref="Bound"/> bytes always suffices).
    /// </summary>
    public static bool TryCompress(CompressionAlgorithm codec, ReadOnlySpan<byte> payload, Span<byte> destination, out int written)
    {
        var choice = new GroupCodecChoice();
        return TryCompress(codec, payload, destination, ref choice, int.MaxValue, out written);
    }

    /// <summary>
    /// <see cref="TryCompress(CompressionAlgorithm, ReadOnlySpan{byte}, Span{byte}, out int)"/> for one of a run of groups
    /// whose Zstd parameter set <paramref name="choice"/> picks, trying both on some groups (<see cref="GroupCodecChoice"/>),
    /// and on any group whose stream from the set chosen is not shorter than <paramref name="wanted"/> bytes (what the group
    /// must come under to be kept).
    /// </summary>
    public static bool TryCompress(CompressionAlgorithm codec, ReadOnlySpan<byte> payload, Span<byte> destination, ref GroupCodecChoice choice,
        int wanted, out int written)
    {
        switch (codec)
        {
            case CompressionAlgorithm.Zstd:
            {
                var dense = t_compressor ??= CreateCompressor(ZstdLevel, 0);
                var longMatch = t_longMatchCompressor ??= CreateCompressor(ZstdLongMatchLevel, ZstdLongMatchMinMatch);
                bool both = choice.TriesBoth;
                choice.Groups++;
                // The chosen set first (level 3 when both are tried); the other only when both are tried, or when the
                // chosen one's stream is not under what the group must come to. The smaller stream is kept.
                var (first, second) = !both && choice.PrefersLongMatches ? (longMatch, dense) : (dense, longMatch);
                bool a = first.TryWrap(payload, destination, out written);
                if (!both && a && written < wanted) return true;
                var other = t_other ??= new byte[Compressor.GetCompressBound(Compression.GroupCompression.MaxPayload)];
                if (payload.Length > Compression.GroupCompression.MaxPayload || !second.TryWrap(payload, other, out int w2)) return a;
                if (a && both) choice.Tried(written, w2);
                if ((a && w2 >= written) || w2 > destination.Length) return a;
                other.AsSpan(0, w2).CopyTo(destination);
                written = w2;
                return true;
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

    private static Compressor CreateCompressor(int level, int minMatch)
    {
        var compressor = new Compressor(level);
        compressor.SetParameter(ZSTD_cParameter.ZSTD_c_experimentalParam2, (int)ZSTD_format_e.ZSTD_f_zstd1_magicless);
        if (minMatch != 0) compressor.SetParameter(ZSTD_cParameter.ZSTD_c_minMatch, minMatch);
        return compressor;
    }
}

/// <summary>
/// Which of the Zstd group codec's two parameter sets a run of groups gets (a pass keeps one per slice, the fingerprint
/// one per domain): the first <see cref="FirstTried"/> groups and every <see cref="TryEvery"/>th after are compressed
/// with both and keep the smaller stream; the others get the set that made fewer bytes on the groups tried with both.
/// </summary>
/// <remarks>
/// Which set wins depends on the memory: on the guest images the long-match set won 4,630 of 7,083 groups and made 4%
/// less than level 3, on the program snapshots level 3 won 6,136 of 9,180 and made 4.6% less (session 23). Trying both on
/// every group made 0.1-0.2% less again than the better set, for twice the CPU. The choice depends only on the groups a
/// run has compressed, in order, so a slice compressed again the same way makes the same streams.
/// </remarks>
internal struct GroupCodecChoice
{
    /// <summary>Groups compressed with both sets before the choice follows the bytes.</summary>
    public const int FirstTried = 8;

    /// <summary>After those, one group in this many is compressed with both.</summary>
    public const int TryEvery = 16;

    private long _denseBytes, _longMatchBytes;

    /// <summary>Groups of the run compressed so far.</summary>
    public int Groups { get; internal set; }

    /// <summary>Whether the next group is compressed with both sets.</summary>
    public readonly bool TriesBoth => Groups < FirstTried || Groups % TryEvery == 0;

    /// <summary>Whether the long-match set made fewer bytes than level 3 on the groups tried with both.</summary>
    public readonly bool PrefersLongMatches => _longMatchBytes < _denseBytes;

    internal void Tried(int dense, int longMatch)
    {
        _denseBytes += dense;
        _longMatchBytes += longMatch;
    }
}
