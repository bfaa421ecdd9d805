using System.Diagnostics;
using DifferenceEngine.Codecs;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Hosting;

/// <summary>
/// Brings the engine's page-sized hot code to the JIT's optimized tier early, once per process, on a low-priority
/// background thread: the content hash and checksum (xxHash3), the three codecs, the page groups' codecs and the delta codec.
/// </summary>
/// <remarks>
/// <para>Why: the codecs and the hash come from libraries (K4os LZ4, ZstdSharp, System.IO.Hashing) whose methods
/// have loops. With .NET's tiered compilation such a method starts unoptimized; a page-sized call ends long before
/// on-stack replacement kicks in, and promotion to the optimized tier waits until the process has been quiet for a
/// while, which a busy PowerShell session or a short workload may never be. Measured on 4,196 compressed pages of a
/// real python3 process, just after load: a Decompress fault took 11.7 µs (LZ4 decode 8.7 µs, the xxHash3 checksum
/// 3.1 µs) against 2.8 µs with the code optimized; our own methods carry
/// <c>MethodImplOptions.AggressiveOptimization</c>, the libraries' cannot.</para>
/// <para>The thread calls each of those on a few synthetic pages (never guest memory) in short bursts with pauses,
/// which is what lets the runtime promote them, until the hash and the LZ4 decoder have reached their optimized speed
/// (bursts every 20 ms for ten seconds, then every quarter second, for at most two minutes), then ends. It touches no
/// host state.</para>
/// </remarks>
internal static class JitWarmup
{
    private static int s_started;

    /// <summary>Starts the warm-up unless it has run in this process; returns at once.</summary>
    public static void Start()
    {
        if (Interlocked.Exchange(ref s_started, 1) != 0) return;
        var thread = new Thread(Run) { IsBackground = true, Priority = ThreadPriority.BelowNormal, Name = "DifferenceEngine JIT warm-up" };
        thread.Start();
    }

    /// <summary>Microseconds per call of <paramref name="call"/>, the mean of 50.</summary>
    private static double Time(Action call)
    {
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < 50; i++) call();
        return Stopwatch.GetElapsedTime(start).TotalMicroseconds / 50;
    }

    private static void Run()
    {
        try
        {
            var random = new Random(20081208);
            byte[] text = new byte[4096], words = new byte[4096], noise = new byte[4096], near = new byte[4096];
            for (int i = 0; i < text.Length; i++) text[i] = (byte)"the page of a guest, warmed up; "[i % 32];
            var w = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(words.AsSpan());
            for (int i = 0; i < w.Length; i++) w[i] = (i % 3) switch { 0 => 0x00007F3A12000000UL + (ulong)(i * 64), 1 => (ulong)(i % 13), _ => 0 };
            random.NextBytes(noise);
            text.CopyTo(near, 0);
            near[100] ^= 0x5A;
            near[2000] ^= 0x33;
            byte[][] pages = [text, words, noise];
            byte[] blob = new byte[4096 + 64], back = new byte[4096];
            var lz4 = PageCompressors.Get(CompressionAlgorithm.LZ4);
            lz4.TryCompress(text, blob, out int lz4Length);
            byte[] lz4Blob = blob.AsSpan(0, lz4Length).ToArray();
            // A page group's payload of four pages, and room for its stream and a decoded prefix.
            byte[] groupPayload = [.. text, .. words, .. near, .. text];
            byte[] groupStream = new byte[GroupCodec.Bound(groupPayload.Length)], groupBack = new byte[groupPayload.Length];
            var clock = Stopwatch.StartNew();
            // Bursts with pauses until the hash and the LZ4 decoder run at their optimized speed (a tenth and a third of
            // their time in the first burst, or 0.3 and 2 µs): every 20 ms for ten seconds, then every quarter of a
            // second (a busy process, loading guests, may hold promotion back that long), for at most two minutes.
            double hashFirst = 0, decodeFirst = 0;
            for (int burst = 0; clock.Elapsed < TimeSpan.FromMinutes(2); burst++)
            {
                for (int round = 0; round < 40; round++)
                {
                    foreach (var page in pages)
                    {
                        PageHasher.Hash(page);
                        System.IO.Hashing.XxHash3.HashToUInt64(page, round);
                        foreach (var algorithm in (ReadOnlySpan<CompressionAlgorithm>)[CompressionAlgorithm.LZ4, CompressionAlgorithm.WKdm, CompressionAlgorithm.Zstd])
                        {
                            var codec = PageCompressors.Get(algorithm);
                            if (codec.TryCompress(page, blob, out int n)) codec.Decompress(blob.AsSpan(0, n), back);
                        }
                    }
                    if (DeltaCodec.TryEncode(text, near, blob, out int patch)) DeltaCodec.Decode(text, blob.AsSpan(0, patch), back);
                    if (round % 8 == 0)
                        foreach (var algorithm in (ReadOnlySpan<CompressionAlgorithm>)[CompressionAlgorithm.Zstd, CompressionAlgorithm.LZ4])
                            if (GroupCodec.TryCompress(algorithm, groupPayload, groupStream, out int n))
                                GroupCodec.DecodePrefix(algorithm, groupStream.AsSpan(0, n), groupBack.AsSpan(0, 3 * 4096));
                }
                double hash = Time(() => PageHasher.Hash(noise));
                double decode = Time(() => lz4.Decompress(lz4Blob, back));
                if (burst == 0)
                {
                    hashFirst = hash;
                    decodeFirst = decode;
                }
                else if (burst >= 10 && (hash < hashFirst / 10 || hash < 0.3) && (decode < decodeFirst / 3 || decode < 2.0))
                {
                    break;
                }
                // Quiet moments are when the runtime promotes what was called.
                Thread.Sleep(clock.Elapsed < TimeSpan.FromSeconds(10) ? 20 : 250);
            }
        }
        catch (Exception)
        {
            // Only ever an optimization: a failure here changes nothing the engine does.
        }
    }
}
