using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Bench.Peers;

/// <summary>What zram held after the pages were written, from its mm_stat, and how fast it took them.</summary>
internal sealed record ZramResult(
    string Algorithm,
    string Input,
    long PagesWritten,
    long OrigDataSize,
    long ComprDataSize,
    long MemUsedTotal,
    long SamePages,
    long HugePages,
    TimeSpan WriteTime,
    bool Direct)
{
    public double Ratio => ComprDataSize == 0 ? 0 : (double)OrigDataSize / ComprDataSize;
    public double MiBPerSecond => WriteTime.TotalSeconds == 0 ? 0 : PagesWritten * (double)PageGeometry.PageSize / 1048576 / WriteTime.TotalSeconds;
}

/// <summary>
/// zram on the same memory: for a codec the kernel offers, the device is reset, given the codec and a size, the
/// pages are written to /dev/zram0 (O_DIRECT where we know the flag, then fsync), and mm_stat is read. The device is
/// reset after every measurement and its codec put back at the end.
/// </summary>
internal sealed unsafe class ZramPeer : IDisposable
{
    private const string Dir = "/sys/block/zram0";
    private const string Device = "/dev/zram0";
    private const int BufferBytes = 1 << 20;
    private readonly string _savedAlgorithm;
    private readonly IDisposable _guard;
    private readonly byte* _buffer;

    private ZramPeer()
    {
        _savedAlgorithm = Sysfs.Selected(Sysfs.Read(Path.Combine(Dir, "comp_algorithm")));
        _guard = PeerGuard.Register("zram", Restore);
        _buffer = (byte*)NativeMemory.AlignedAlloc(BufferBytes, PageGeometry.PageSize);
    }

    /// <summary>Why zram cannot be measured here, or null when it can.</summary>
    public static string? WhyUnavailable()
    {
        if (!OperatingSystem.IsLinux()) return "not Linux";
        if (!Environment.IsPrivilegedProcess) return "not root (resetting and writing /dev/zram0 needs root)";
        if (!Directory.Exists(Dir) || !File.Exists(Device)) return $"{Dir} or {Device} does not exist (modprobe zram)";
        if (Sysfs.Read(Path.Combine(Dir, "initstate")) != "0") return $"{Device} is initialized (in use, perhaps as swap); it is left alone";
        if (File.ReadAllText("/proc/swaps").Contains(Device, StringComparison.Ordinal)) return $"{Device} is a swap device; it is left alone";
        return null;
    }

    public static ZramPeer Open() => new();

    /// <summary>The codecs the kernel offers for zram, in its order.</summary>
    public static string[] Algorithms() => Sysfs.Choices(Sysfs.Read(Path.Combine(Dir, "comp_algorithm")));

    /// <summary>
    /// Writes the pages <paramref name="produce"/> gives (it calls its argument once per page, in order) with
    /// <paramref name="algorithm"/>; <paramref name="pages"/> sizes the device.
    /// </summary>
    public ZramResult Measure(string algorithm, string input, long pages, Action<Action<ReadOnlySpan<byte>>> produce)
    {
        Sysfs.Write(Path.Combine(Dir, "reset"), "1");
        try
        {
            Sysfs.Write(Path.Combine(Dir, "comp_algorithm"), algorithm);
            Sysfs.Write(Path.Combine(Dir, "disksize"), (pages + 256) * PageGeometry.PageSize);
            int direct = LibC.ODirect;
            int fd = LibC.Open(Device, LibC.OWrOnly | LibC.OCloExec | direct);
            if (fd < 0 && direct != 0)
            {
                direct = 0;
                fd = LibC.Open(Device, LibC.OWrOnly | LibC.OCloExec);
            }
            if (fd < 0) throw new IOException($"open {Device}: {LibC.LastError()}");
            long written = 0, ticks = 0;
            int filled = 0;
            try
            {
                void Flush()
                {
                    if (filled == 0) return;
                    long t0 = Stopwatch.GetTimestamp();
                    for (int done = 0; done < filled;)
                    {
                        nint n = LibC.PWrite(fd, (nint)(_buffer + done), (nuint)(filled - done), written * PageGeometry.PageSize + done);
                        if (n <= 0) throw new IOException($"write {Device}: {LibC.LastError()}");
                        done += (int)n;
                    }
                    ticks += Stopwatch.GetTimestamp() - t0;
                    written += filled / PageGeometry.PageSize;
                    filled = 0;
                }
                produce(page =>
                {
                    page.CopyTo(new Span<byte>(_buffer + filled, PageGeometry.PageSize));
                    filled += PageGeometry.PageSize;
                    if (filled == BufferBytes) Flush();
                });
                Flush();
                long f0 = Stopwatch.GetTimestamp();
                if (LibC.Fsync(fd) != 0) throw new IOException($"fsync {Device}: {LibC.LastError()}");
                ticks += Stopwatch.GetTimestamp() - f0;
            }
            finally
            {
                LibC.Close(fd);
            }
            // orig_data_size compr_data_size mem_used_total mem_limit mem_used_max same_pages pages_compacted huge_pages ...
            var f = Sysfs.Read(Path.Combine(Dir, "mm_stat")).Split(' ', StringSplitOptions.RemoveEmptyEntries)
                .Select(v => long.Parse(v, CultureInfo.InvariantCulture)).ToArray();
            return new ZramResult(algorithm, input, written, f[0], f[1], f[2], f[5], f.Length > 7 ? f[7] : 0,
                Stopwatch.GetElapsedTime(0, ticks), direct != 0);
        }
        finally
        {
            Sysfs.Write(Path.Combine(Dir, "reset"), "1");
        }
    }

    public void Dispose()
    {
        _guard.Dispose();
        NativeMemory.AlignedFree(_buffer);
    }

    private void Restore() => RestoreSteps.Run("zram",
        ("reset zram0", () => Sysfs.Write(Path.Combine(Dir, "reset"), "1")),
        ($"restore comp_algorithm={_savedAlgorithm}", () => Sysfs.Write(Path.Combine(Dir, "comp_algorithm"), _savedAlgorithm)));
}
