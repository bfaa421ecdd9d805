using System.Diagnostics;
using System.Globalization;
using DifferenceEngine.Bench.Compare;

namespace DifferenceEngine.Bench.Peers;

/// <summary>What KSM ended with on the inputs, and how long it took.</summary>
internal sealed record KsmResult(
    long PagesSharing,
    long PagesShared,
    long ZeroPages,
    long PagesUnshared,
    long FullScans,
    bool Converged,
    TimeSpan TimeToConverge,
    TimeSpan TimeConfirmed,
    long MetadataBytes,
    string Settings)
{
    /// <summary>Pages KSM freed: pages mapped to another's copy, and zero pages mapped to the kernel's zero page.</summary>
    public long PagesSaved => PagesSharing + ZeroPages;

    /// <summary>How many times KSM was run; this is the run with the median convergence time.</summary>
    public int Repeats { get; init; } = 1;

    /// <summary>" (median of N runs: a, b, c s)" when KSM was run more than once, else empty.</summary>
    public string RepeatsNote { get; init; } = "";
}

/// <summary>
/// Linux KSM on the same memory: one child process per image holds it in MADV_MERGEABLE anonymous memory, ksmd
/// runs flat out (20000 pages per batch, no sleep, zero pages merged) until two full scans change nothing. The
/// knobs are saved first and put back in a finally (run=2 unmerges everything, then each saved value, run last).
/// </summary>
internal sealed class KsmPeer
{
    private const string Dir = "/sys/kernel/mm/ksm";
    private const int PagesToScan = 20000;

    /// <summary>Knobs we change, in the order they are set; run is set last and restored last.</summary>
    private static readonly (string Name, string Value)[] Settings =
    [
        ("pages_to_scan", PagesToScan.ToString(CultureInfo.InvariantCulture)),
        ("sleep_millisecs", "0"),
        ("use_zero_pages", "1"),
        ("advisor_mode", "none"),
    ];

    /// <summary>Why KSM cannot be measured here, or null when it can.</summary>
    public static string? WhyUnavailable()
    {
        if (!OperatingSystem.IsLinux()) return "not Linux";
        if (!Environment.IsPrivilegedProcess) return "not root (the KSM knobs in /sys/kernel/mm/ksm need root)";
        if (!File.Exists(Path.Combine(Dir, "run"))) return $"{Dir} does not exist (kernel built without CONFIG_KSM)";
        string run = Sysfs.Read(Path.Combine(Dir, "run"));
        if (run != "0") return $"KSM is already in use on this machine (run={run}); its state is left alone";
        if (Sysfs.ReadLong(Path.Combine(Dir, "pages_shared")) != 0 || Sysfs.ReadLong(Path.Combine(Dir, "pages_sharing")) != 0)
            return "KSM still holds merged pages from someone else; its state is left alone";
        return null;
    }

    public static KsmResult Run(InputImages inputs, TimeSpan limit, Action<string> log, CancellationToken cancel)
    {
        var children = new List<Process>();
        var saved = new List<(string Name, string Value)>();
        string savedRun = Sysfs.Read(Path.Combine(Dir, "run"));
        foreach (var (name, _) in Settings)
        {
            string path = Path.Combine(Dir, name);
            if (File.Exists(path)) saved.Add((name, Sysfs.Selected(Sysfs.Read(path))));
        }
        void Restore()
        {
            foreach (var child in children) Stop(child);
            // Unmerge first (nothing should be left once the holders are gone), then the knobs, then run itself.
            var steps = new List<(string Name, string Value)> { ("run", "2") };
            steps.AddRange(saved);
            steps.Add(("run", savedRun));
            foreach (var (name, value) in steps)
            {
                try
                {
                    Sysfs.Write(Path.Combine(Dir, name), value);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    Console.Error.WriteLine($"KSM: could not restore {name}={value}: {e.Message}");
                }
            }
        }
        using var guard = PeerGuard.Register("KSM", Restore);

        foreach (var image in inputs.Images) children.Add(StartHolder(image));
        foreach (var (child, image) in children.Zip(inputs.Images)) WaitReady(child, image);
        log($"KSM: {children.Count} holders ready ({inputs.TotalPages} pages); ksmd at {PagesToScan} pages per batch, no sleep, use_zero_pages=1");

        foreach (var (name, value) in Settings)
            if (File.Exists(Path.Combine(Dir, name))) Sysfs.Write(Path.Combine(Dir, name), value);
        string settings = string.Join(", ", Settings.Where(s => File.Exists(Path.Combine(Dir, s.Name))).Select(s => $"{s.Name}={s.Value}")) +
                          $", max_page_sharing={Sysfs.Read(Path.Combine(Dir, "max_page_sharing"))}" +
                          (File.Exists(Path.Combine(Dir, "smart_scan")) ? $", smart_scan={Sysfs.Read(Path.Combine(Dir, "smart_scan"))}" : "");

        long scans0 = Sysfs.ReadLong(Path.Combine(Dir, "full_scans"));
        var clock = Stopwatch.StartNew();
        Sysfs.Write(Path.Combine(Dir, "run"), "1");

        // A snapshot at every full-scan boundary; converged when the counters have not moved for two full scans.
        var last = Counters();
        long lastChangeScan = scans0;
        TimeSpan lastChange = TimeSpan.Zero;
        long scans = scans0;
        bool converged = false;
        while (clock.Elapsed < limit)
        {
            cancel.ThrowIfCancellationRequested();
            Thread.Sleep(2);
            long now = Sysfs.ReadLong(Path.Combine(Dir, "full_scans"));
            if (now == scans) continue;
            scans = now;
            var c = Counters();
            if (c != last)
            {
                last = c;
                lastChangeScan = now;
                lastChange = clock.Elapsed;
            }
            else if (now - lastChangeScan >= 2 && now - scans0 >= 3)
            {
                converged = true;
                break;
            }
        }
        var confirmed = clock.Elapsed;
        var final = Counters();
        long unshared = Sysfs.ReadLong(Path.Combine(Dir, "pages_unshared"));
        long metadata = RmapBytes(final.Sharing + final.Zero);
        if (!converged) log($"KSM: did not converge within {limit.TotalSeconds:0} s; the counters as they were then are reported.");
        return new KsmResult(final.Sharing, final.Shared, final.Zero, unshared, scans - scans0, converged,
            lastChange, confirmed, metadata, settings);
    }

    private static (long Sharing, long Shared, long Zero) Counters() =>
        (Sysfs.ReadLong(Path.Combine(Dir, "pages_sharing")), Sysfs.ReadLong(Path.Combine(Dir, "pages_shared")),
            File.Exists(Path.Combine(Dir, "ksm_zero_pages")) ? Sysfs.ReadLong(Path.Combine(Dir, "ksm_zero_pages")) : 0);

    /// <summary>
    /// Bytes of KSM's rmap items (one per page it tracks), from general_profit = pages saved × 4096 − rmap items ×
    /// their size (Documentation/admin-guide/mm/ksm.rst); 0 when the kernel has no general_profit. Stable nodes are
    /// not in it: a lower bound of KSM's metadata.
    /// </summary>
    private static long RmapBytes(long pagesSaved)
    {
        string path = Path.Combine(Dir, "general_profit");
        return File.Exists(path) ? Math.Max(0, pagesSaved * 4096 - Sysfs.ReadLong(path)) : 0;
    }

    /// <summary>This program again, in its hidden ksm-hold mode.</summary>
    private static Process StartHolder(InputImage image)
    {
        string self = Environment.ProcessPath ?? throw new InvalidOperationException("No process path.");
        var info = new ProcessStartInfo(self)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
        };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") info.ArgumentList.Add(typeof(KsmPeer).Assembly.Location);
        info.ArgumentList.Add(KsmHold.Verb);
        info.ArgumentList.Add(image.Path);
        return Process.Start(info) ?? throw new InvalidOperationException($"KSM: could not start a holder for {image.Label}.");
    }

    private static void WaitReady(Process child, InputImage image)
    {
        var line = child.StandardOutput.ReadLineAsync();
        if (!line.Wait(TimeSpan.FromSeconds(120)) || line.Result is not { } text || !text.StartsWith("READY", StringComparison.Ordinal))
            throw new InvalidOperationException($"KSM: the holder of {image.Label} did not get ready (exit {(child.HasExited ? child.ExitCode : -1)}).");
    }

    private static void Stop(Process child)
    {
        try
        {
            if (!child.HasExited)
            {
                child.Kill();
                child.WaitForExit(10_000);
            }
        }
        catch (InvalidOperationException)
        {
        }
        child.Dispose();
    }
}
