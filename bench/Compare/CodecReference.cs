using System.Diagnostics;
using System.Runtime.InteropServices;
using DifferenceEngine.Memory;
using K4os.Compression.LZ4;
using DifferenceEngine.Codecs;
using ZstdSharp;
using ZstdSharp.Unsafe;

namespace DifferenceEngine.Bench.Compare;

/// <summary>
/// One codec operation timed on the same pages twice: by the C library that defines the format (the system's liblz4 or
/// libzstd) and by the .NET library the engine uses (K4os.Compression.LZ4, ZstdSharp). Medians, in µs.
/// </summary>
internal sealed record CodecTiming(string Operation, double NativeMicros, double ManagedMicros, int Samples);

/// <summary>
/// Times the C reference codecs, when the system has them (Debian's liblz4-1 and libzstd1 are part of every install),
/// against the engine's .NET codecs on identical input: compress_page on the sample pages (LZ4's fastest level, a state
/// allocated once), and the decoding of the very blobs and group streams the fault samples decoded. What the C library
/// takes is the floor a goal meets on this hardware (a fault adds the kernel's first touch and the engine's checks).
/// </summary>
internal static unsafe class CodecReference
{
    private static readonly Lazy<(Lz4Api? Lz4, ZstdApi? Zstd, string? Why)> Libraries = new(Load);

    /// <summary>Why the C libraries cannot be timed, or null when they can.</summary>
    public static string? Unavailable => Libraries.Value.Why;

    /// <summary>The versions of the C libraries timed ("liblz4 1.9.4 and libzstd 1.5.4"), or null.</summary>
    public static string? Versions
    {
        get
        {
            var (lz4, zstd, _) = Libraries.Value;
            return lz4 is null || zstd is null ? null
                : $"liblz4 {Marshal.PtrToStringUTF8(lz4.VersionString())} and libzstd {Marshal.PtrToStringUTF8(zstd.VersionString())}";
        }
    }

    private static (Lz4Api?, ZstdApi?, string?) Load()
    {
        if (!NativeLibrary.TryLoad("liblz4.so.1", out nint lz4)) return (null, null, "liblz4.so.1 is not installed");
        if (!NativeLibrary.TryLoad("libzstd.so.1", out nint zstd)) return (null, null, "libzstd.so.1 is not installed");
        return (new Lz4Api(lz4), new ZstdApi(zstd), null);
    }

    /// <summary>
    /// liblz4's compress_page on <paramref name="pages"/> (its fastest level, a state allocated once), against
    /// <paramref name="engineMicros"/>, the engine's own median on the same pages; null without the libraries.
    /// </summary>
    public static CodecTiming? Lz4Compress(IReadOnlyList<byte[]> pages, double engineMicros)
    {
        if (Libraries.Value.Lz4 is not { } l || pages.Count == 0) return null;
        const int Room = PageGeometry.PageSize + 64;
        byte* state = (byte*)NativeMemory.AlignedAlloc((nuint)l.SizeofState(), 64);
        byte* dest = (byte*)NativeMemory.AlignedAlloc(Room, 64);
        try
        {
            return new CodecTiming("LZ4 compress_page",
                Median(pages, p => { fixed (byte* src = p) return l.CompressFastExtState(state, src, dest, p.Length, Room, 1); }),
                engineMicros,
                pages.Count);
        }
        finally
        {
            NativeMemory.AlignedFree(state);
            NativeMemory.AlignedFree(dest);
        }
    }

    /// <summary>
    /// Decodes each of <paramref name="blobs"/> (LZ4 blocks, or magic-less Zstd frames as the engine stores them) to
    /// <paramref name="size"/> bytes by the C library and by the engine's .NET codec; null without the libraries.
    /// </summary>
    public static CodecTiming? Decode(string operation, CompressionAlgorithm codec, IReadOnlyList<byte[]> blobs, int size)
    {
        var (l, z, _) = Libraries.Value;
        if (l is null || z is null || blobs.Count == 0) return null;
        byte* dest = (byte*)NativeMemory.AlignedAlloc((nuint)size, 64);
        var managed = new byte[size];
        try
        {
            switch (codec)
            {
                case CompressionAlgorithm.LZ4:
                    return new CodecTiming(operation,
                        Median(blobs, b => { fixed (byte* src = b) return Check(l.DecompressSafe(src, dest, b.Length, size), size); }),
                        Median(blobs, b => Check(LZ4Codec.Decode(b, managed), size)),
                        blobs.Count);
                case CompressionAlgorithm.Zstd:
                {
                    nint dctx = z.CreateDCtx();
                    try
                    {
                        Check(z.SetDParameter(dctx, ZstdFormatParameter, 1));
                        using var decompressor = new Decompressor();
                        decompressor.SetParameter(ZSTD_dParameter.ZSTD_d_experimentalParam1, (int)ZSTD_format_e.ZSTD_f_zstd1_magicless);
                        return new CodecTiming(operation,
                            Median(blobs, b => { fixed (byte* src = b) return Check(z.Decompress(dctx, dest, (nuint)size, src, (nuint)b.Length), size); }),
                            Median(blobs, b => Check(decompressor.Unwrap(b, managed), size)),
                            blobs.Count);
                    }
                    finally
                    {
                        z.FreeDCtx(dctx);
                    }
                }
                default:
                    return null;
            }
        }
        finally
        {
            NativeMemory.AlignedFree(dest);
        }
    }

    /// <summary>ZSTD_d_format (ZSTD_d_experimentalParam1): 1 is ZSTD_f_zstd1_magicless, the frames the engine stores.</summary>
    private const int ZstdFormatParameter = 1000;

    private static void Check(nuint setParameter)
    {
        if (setParameter > unchecked((nuint)(-120))) throw new InvalidOperationException("libzstd refused the magic-less frame format");
    }

    private static int Check(long got, int expected) =>
        got == expected ? (int)got : throw new InvalidOperationException($"a reference decode returned {got} bytes, not {expected}");

    private static int Check(nuint got, int expected) => Check((long)got, expected);

    /// <summary>Two warm-up rounds (so the .NET side is fully optimized), then each item timed once: the median, in µs.</summary>
    internal static double Median<T>(IReadOnlyList<T> items, Func<T, long> op)
    {
        long sink = 0;
        for (int r = 0; r < 2; r++)
            foreach (var item in items) sink += op(item);
        var micros = new double[items.Count];
        for (int i = 0; i < items.Count; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            sink += op(items[i]);
            micros[i] = Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
        }
        GC.KeepAlive(sink);
        Array.Sort(micros);
        return micros[micros.Length / 2];
    }

    private sealed class Lz4Api(nint lib)
    {
        public readonly delegate* unmanaged<int> SizeofState = (delegate* unmanaged<int>)NativeLibrary.GetExport(lib, "LZ4_sizeofState");
        public readonly delegate* unmanaged<void*, byte*, byte*, int, int, int, int> CompressFastExtState =
            (delegate* unmanaged<void*, byte*, byte*, int, int, int, int>)NativeLibrary.GetExport(lib, "LZ4_compress_fast_extState");
        public readonly delegate* unmanaged<byte*, byte*, int, int, int> DecompressSafe =
            (delegate* unmanaged<byte*, byte*, int, int, int>)NativeLibrary.GetExport(lib, "LZ4_decompress_safe");
        public readonly delegate* unmanaged<nint> VersionString = (delegate* unmanaged<nint>)NativeLibrary.GetExport(lib, "LZ4_versionString");
    }

    private sealed class ZstdApi(nint lib)
    {
        public readonly delegate* unmanaged<nint> CreateDCtx = (delegate* unmanaged<nint>)NativeLibrary.GetExport(lib, "ZSTD_createDCtx");
        public readonly delegate* unmanaged<nint, nuint> FreeDCtx = (delegate* unmanaged<nint, nuint>)NativeLibrary.GetExport(lib, "ZSTD_freeDCtx");
        public readonly delegate* unmanaged<nint, int, int, nuint> SetDParameter =
            (delegate* unmanaged<nint, int, int, nuint>)NativeLibrary.GetExport(lib, "ZSTD_DCtx_setParameter");
        public readonly delegate* unmanaged<nint, byte*, nuint, byte*, nuint, nuint> Decompress =
            (delegate* unmanaged<nint, byte*, nuint, byte*, nuint, nuint>)NativeLibrary.GetExport(lib, "ZSTD_decompressDCtx");
        public readonly delegate* unmanaged<nint> VersionString = (delegate* unmanaged<nint>)NativeLibrary.GetExport(lib, "ZSTD_versionString");
    }
}
