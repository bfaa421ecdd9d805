using System.Diagnostics;
using DifferenceEngine.Codecs;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Hosting;

/// <summary>
/// Brings the engine's page-sized hot code to the JIT's optimized tier early, once per process, on a low-priority
/// background thread: the content hash and checksum (xxHash3), the three codecs (Zstd at both of its levels), the page
/// groups' codecs, the order-0 entropy and the delta codec.
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
/// which is what lets the runtime promote them, until the hash, the LZ4 decoder and the Zstd group compressor have
/// reached their optimized speed (bursts every 20 ms for ten seconds, then every quarter second, for at most two
/// minutes), then ends. It touches no host state.</para>
/// <para>A scan waits for it, at most <see cref="MaxScanWait"/>, and only in the first ten seconds of the warm-up
/// (<see cref="WaitUntilWarm"/>, ScanResult.WarmUpWait):
/// the runtime promotes a method only once the process has gone 100 ms without compiling new ones, which a PowerShell
/// session loading guests, and then the scan's own first calls, may put off for seconds. In PowerShell, the first two
/// scans of the program snapshots right after their load (sharing, then every mechanism) took 3.4-4.8 s in about half
/// of the runs, where the scan and the warm-up ran unoptimized together, and 1.7-2.3 s in the others; with the wait,
/// 1.5-2.7 s in every run, the wait included (docs/PERFORMANCE.md, session 28).</para>
/// </remarks>
internal static class JitWarmup
{
    private static int s_started;
    private static readonly ManualResetEventSlim s_warm = new(false);

    /// <summary>The longest a scan waits for the warm-up (<see cref="WaitUntilWarm"/>).</summary>
    public static readonly TimeSpan MaxScanWait = TimeSpan.FromSeconds(2);

    /// <summary>Whether the warm-up has ended (its code optimized, or it gave up) or run for ten seconds, or never started.</summary>
    public static bool IsWarm => Volatile.Read(ref s_started) == 0 || s_warm.IsSet;

    /// <summary>
    /// Waits until the warm-up has ended, at most <paramref name="max"/> (or until <paramref name="cancellationToken"/> is
    /// cancelled: OperationCanceledException), and returns how long it waited: zero once it has ended (every scan after
    /// the first few) or when it never started.
    /// </summary>
    public static TimeSpan WaitUntilWarm(TimeSpan max, CancellationToken cancellationToken = default) =>
        IsWarm ? TimeSpan.Zero : WaitFor(s_warm, max, cancellationToken);

    /// <summary>The wait of <see cref="WaitUntilWarm"/> on <paramref name="signal"/> (tests give their own).</summary>
    internal static TimeSpan WaitFor(ManualResetEventSlim signal, TimeSpan max, CancellationToken cancellationToken)
    {
        if (signal.IsSet) return TimeSpan.Zero;
        long start = Stopwatch.GetTimestamp();
        signal.Wait(max, cancellationToken);
        return Stopwatch.GetElapsedTime(start);
    }

    /// <summary>Starts the warm-up unless it has run in this process; returns at once.</summary>
    public static void Start()
    {
        if (Interlocked.Exchange(ref s_started, 1) != 0) return;
        try
        {
            var thread = new Thread(Run) { IsBackground = true, Priority = ThreadPriority.BelowNormal, Name = "DifferenceEngine JIT warm-up" };
            thread.Start();
        }
        catch
        {
            s_warm.Set(); // no warm-up to wait for
            throw;
        }
    }

    /// <summary>Microseconds per call of <paramref name="call"/>, the mean of <paramref name="calls"/>.</summary>
    private static double Time(Action call, int calls)
    {
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < calls; i++) call();
        return Stopwatch.GetElapsedTime(start).TotalMicroseconds / calls;
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
            byte[] groupPayload = [.. text, .. words, .. near, .. noise];
            byte[] groupStream = new byte[GroupCodec.Bound(groupPayload.Length)], groupBack = new byte[groupPayload.Length];
            var clock = Stopwatch.StartNew();
            var zstdFast = PageCompressors.Fallback(CompressionAlgorithm.Zstd);
            // Bursts with pauses until the hash, the LZ4 decoder and the Zstd group compressor run at their optimized
            // speed (a tenth, a third and a third of their time in the first burst, which sets the baseline, or 0.3, 2
            // and 100 µs: a process whose code was optimized from the start), from the fourth burst on (the group
            // compressor, both parameter sets: 200-350 µs unoptimized here, 55-60 optimized, and 55-60 from the start
            // with DOTNET_TieredCompilation=0): every 20 ms for ten seconds, then every quarter of a second (a busy process,
            // loading guests, may hold promotion back that long), for at most two minutes. Scans stop waiting for it
            // (WaitUntilWarm) once it has ended or ten seconds have passed, whichever is first.
            var first = new double[3];
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
                        zstdFast.TryCompress(page, blob, out _);
                        PageEntropy.Order0Bytes(page);
                    }
                    if (DeltaCodec.TryEncode(text, near, blob, out int patch)) DeltaCodec.Decode(text, blob.AsSpan(0, patch), back);
                    if (round % 8 == 0)
                        foreach (var algorithm in (ReadOnlySpan<CompressionAlgorithm>)[CompressionAlgorithm.Zstd, CompressionAlgorithm.LZ4])
                            if (GroupCodec.TryCompress(algorithm, groupPayload, groupStream, out int n))
                                GroupCodec.DecodePrefix(algorithm, groupStream.AsSpan(0, n), groupBack.AsSpan(0, 3 * 4096));
                }
                double[] now =
                [
                    Time(() => PageHasher.Hash(noise), 50),
                    Time(() => lz4.Decompress(lz4Blob, back), 50),
                    Time(() => GroupCodec.TryCompress(CompressionAlgorithm.Zstd, groupPayload, groupStream, out _), 4),
                ];
                if (burst == 0) now.CopyTo(first, 0);
                else if (burst >= 3 && (now[0] < first[0] / 10 || now[0] < 0.3) && (now[1] < first[1] / 3 || now[1] < 2.0)
                    && (now[2] < first[2] / 3 || now[2] < 100))
                {
                    break;
                }
                if (clock.Elapsed >= TimeSpan.FromSeconds(10)) s_warm.Set(); // scans wait no longer; the bursts go on
                // Quiet moments are when the runtime promotes what was called.
                Thread.Sleep(clock.Elapsed < TimeSpan.FromSeconds(10) ? 20 : 250);
            }
        }
        catch (Exception)
        {
            // Only ever an optimization: a failure here changes nothing the engine does.
        }
        finally
        {
            s_warm.Set();
        }
    }
}
