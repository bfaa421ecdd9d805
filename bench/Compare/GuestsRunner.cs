using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using DifferenceEngine.Bench.Peers;
using DifferenceEngine.Codecs;
using DifferenceEngine.Hosting;
using DifferenceEngine.Qemu;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Bench.Compare;

/// <summary>One test guest of the live comparison: its workload (tests/guest/deworkload.c options).</summary>
internal sealed record GuestSpec(string Name, string Workload, int Seed, int Mix, int HotPercent, int RewritePermil)
{
    public string Options(int workloadMiB, int rounds, int pauseMs) =>
        $"de.mem={workloadMiB} de.rounds={rounds} de.seed={Seed} de.mix={Mix} de.hot={HotPercent} de.rewrite={RewritePermil} " +
        $"de.pause={pauseMs} de.hold=1";
}

/// <summary>What one way of running the guests cost: host memory at the sample, the guests' pace, what they verified.</summary>
internal sealed record GuestPhaseResult(string Name, string? Skipped)
{
    /// <summary>Host memory the guests' RAM costs at the sample (the phase's own definition, in <see cref="MemoryParts"/>).</summary>
    public long HostBytes { get; init; }
    public string MemoryParts { get; init; } = "";
    /// <summary>Guest RAM the guests touched (resident without any saving), at the sample.</summary>
    public long TouchedBytes { get; init; }
    /// <summary>Per guest: the median seconds of a working-set round between the warm-up and the sample.</summary>
    public double[] RoundSeconds { get; init; } = [];
    public long Mismatches { get; init; }
    public IReadOnlyList<FaultStats> Faults { get; init; } = [];
    public TimeSpan FaultP50 { get; init; }
    public TimeSpan FaultP99 { get; init; }
    public long FaultCount { get; init; }
    public long MetadataBytes { get; init; }
    public string Notes { get; init; } = "";
}

/// <summary>
/// compare --guests: three test guests of different workloads, booted from one image (the Debian cloud kernel and the
/// deworkload initramfs of build.ps1 -Task Guests), run three ways in turn, each from a fresh boot with the same seeds:
/// (a) no engine; (b) DifferenceEngine attached as their pager, every mechanism on, the background engine running;
/// (c) Linux's own: KSM over their (private, mergeable) RAM, and zram as swap, fed by proactive reclaim of the guests'
/// RAM (process_madvise MADV_PAGEOUT, the way user-space memory agents drive it) every second, like the engine's
/// interval. Measured in each: host memory for guest RAM at the same round, each guest's pace (its working-set round
/// time), and for (b) the fault round trip. Every guest verifies all its memory at the end: a mismatch fails the run.
/// </summary>
internal sealed class GuestsRunner(GuestsOptions options)
{
    private const int GuestMiB = 128;
    internal const long GuestBytes = (long)GuestMiB << 20;
    private const int WorkloadMiB = 64;
    private static readonly TimeSpan Patience = TimeSpan.FromMinutes(10);
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    private static readonly GuestSpec[] Guests =
    [
        new("app", "mostly text (60%), 20% hot, 2% of it rewritten a round", Seed: 1, Mix: 1, HotPercent: 20, RewritePermil: 20),
        new("db", "mostly unique data (60%), 30% hot, 5% rewritten", Seed: 2, Mix: 2, HotPercent: 30, RewritePermil: 50),
        new("mixed", "even mix of zero/shared/text/similar/unique, 10% hot, 1% rewritten", Seed: 3, Mix: 0, HotPercent: 10, RewritePermil: 10),
    ];

    private int Rounds => options.Quick ? 40 : 300;
    private int SampleRound => options.Quick ? 30 : 250;
    private int WarmupRounds => options.Quick ? 5 : 20;
    private int Repeats => options.Quick ? 1 : 3;
    private bool _imagesWritten;
    /// <summary>Think time after each round: guests that are not busy all the time, as VMs mostly are.</summary>
    private const int PauseMs = 100;

    public int Run()
    {
        var machine = MachineInfo.Capture();
        Log($"compare --guests: {machine}; load average {MachineInfo.LoadAverage()}");
        Log($"guests: {Guests.Length} x {GuestMiB} MiB RAM, {WorkloadMiB} MiB workload each, {Rounds} rounds, measured at round {SampleRound}");
        // Every way again, in turn, so that the machine's moods fall on all of them: the report takes medians.
        var all = new List<GuestPhaseResult[]>();
        for (int r = 1; r <= Repeats; r++)
        {
            Log($"repeat {r} of {Repeats}");
            all.Add([NoEngine(), Engine(CompressionAlgorithm.LZ4), Engine(CompressionAlgorithm.Zstd), LinuxPeers()]);
        }
        var results = all.SelectMany(a => a).ToList();
        var report = Report(machine, all);
        Console.WriteLine();
        Console.WriteLine(report);
        Directory.CreateDirectory(options.OutDir);
        string md = Path.Combine(options.OutDir, "guests.md");
        File.WriteAllText(md, report);
        Log($"wrote {md}");
        return results.Any(r => r.Mismatches != 0) ? 1 : 0;
    }

    // ---- the three ways ----

    private GuestPhaseResult NoEngine()
    {
        Log("(a) no engine");
        using var guests = new Fleet(options, Rounds, PauseMs, sharedMemfd: true, library: false);
        guests.WaitAll("ready");
        var paces = guests.Rounds(WarmupRounds, SampleRound);
        long rss = guests.Sum(g => GuestRam.Measure(g.Pid, memfd: true).Rss);
        if (options.ImagesDir is { } images && !_imagesWritten)
        {
            // The guests' RAM as it is now, for the whole-run comparison (compare --path): read through the memfd, whose
            // holes read as zeros without being filled.
            Directory.CreateDirectory(images);
            if (OperatingSystem.IsLinux())
                foreach (var g in guests) GuestRam.WriteImage(g.Pid, Path.Combine(images, g.Spec.Name + ".img"));
            _imagesWritten = true;
            Log($"wrote the guests' RAM to {images} ({string.Join(", ", guests.Select(g => g.Spec.Name + ".img"))})");
        }
        long mismatches = guests.Finish(Rounds);
        return new GuestPhaseResult("no engine", null)
        {
            HostBytes = rss,
            TouchedBytes = rss,
            MemoryParts = $"QEMU's resident guest RAM {Mib(rss)}",
            RoundSeconds = paces,
            Mismatches = mismatches,
        };
    }

    private GuestPhaseResult Engine(CompressionAlgorithm codec)
    {
        Log($"(b) DifferenceEngine: every mechanism ({codec}), the background engine every {Interval.TotalSeconds} s");
        using var guests = new Fleet(options, Rounds, PauseMs, sharedMemfd: true, library: true);
        guests.WaitAll("ready");
        using var host = new DEHost(new HostOptions { Name = "compare-guests", JournalDirectory = options.JournalDirectory });
        var domainOptions = new DomainOptions
        {
            SharingEnabled = true,
            PatchingEnabled = true,
            CompressionEnabled = true,
            CompressionAlgorithm = codec,
        };
        for (int i = 0; i < guests.Count; i++) host.AttachQemu(Guests[i].Name, guests[i].Socket!, domainOptions);
        host.StartEngine(Interval);
        var paces = guests.Rounds(WarmupRounds, SampleRound);
        var snapshot = host.TakeSnapshot();
        var s = snapshot.Host;
        long qemuRss = guests.Sum(g => GuestRam.Measure(g.Pid, memfd: true).Rss);
        long touched = snapshot.Domains.Sum(d => d.GuestBytes);
        var faults = s.Faults.Where(f => f.Count > 0).ToArray();
        var (p50, p99, count) = AllFaults(host);
        host.StopEngine();
        long mismatches = guests.Finish(Rounds);
        foreach (var g in Guests) host.RemoveDomain(host.GetDomain(g.Name));
        long engineFrames = s.FrameBytes - qemuRss;
        return new GuestPhaseResult($"DifferenceEngine, {codec}", null)
        {
            HostBytes = s.MemoryUsedBytes,
            TouchedBytes = touched,
            MemoryParts = $"guest RAM left in QEMU {Mib(qemuRss)} + engine frames {Mib(engineFrames)} + store {Mib(s.StoreAllocatedBytes)} + " +
                          $"metadata {Mib(s.MetadataBytes)} (crash journal on disk: {Mib(s.JournalBytes)}; {s.ScanPasses} passes)",
            RoundSeconds = paces,
            Mismatches = mismatches,
            Faults = faults,
            FaultP50 = p50,
            FaultP99 = p99,
            FaultCount = count,
            MetadataBytes = s.MetadataBytes,
        };
    }

    private GuestPhaseResult LinuxPeers()
    {
        const string name = "KSM + zram (proactive reclaim)";
        string? why = ZramPeer.WhyUnavailable() ?? KsmPeer.WhyUnavailable();
        if (why is not null) return new GuestPhaseResult(name, why);
        using var lockFile = PeerGuard.TryLock(TimeSpan.FromMinutes(2), out why);
        if (lockFile is null) return new GuestPhaseResult(name, why);
        string algorithm = ZramSwap.BestAlgorithm();
        Log($"(c) {name}: KSM over the guests' RAM, zram ({algorithm}) as swap, MADV_PAGEOUT of their RAM every {Interval.TotalSeconds} s");
        using var ksm = KsmOn.Start();
        using var zram = ZramSwap.Start(algorithm, 2L * Guests.Length * GuestBytes);
        using var guests = new Fleet(options, Rounds, PauseMs, sharedMemfd: false, library: false);
        guests.WaitAll("ready");
        using var stop = new CancellationTokenSource();
        long pagedOut = 0;
        // Where each guest's RAM is does not change while it runs: found once.
        var mappings = guests.Select(g => (g.Pid, Ram: GuestRam.Measure(g.Pid, memfd: false))).ToArray();
        var reclaim = Task.Run(() =>
        {
            while (!stop.Token.WaitHandle.WaitOne(Interval))
                foreach (var (pid, ram) in mappings)
                    pagedOut += GuestRam.PageOut(pid, ram);
        });
        var paces = guests.Rounds(WarmupRounds, SampleRound);
        var ram = guests.Select(g => GuestRam.Measure(g.Pid, memfd: false)).ToArray();
        var z = zram.Stats();
        long ksmSharing = Sysfs.ReadLong("/sys/kernel/mm/ksm/pages_sharing"), ksmShared = Sysfs.ReadLong("/sys/kernel/mm/ksm/pages_shared");
        stop.Cancel();
        reclaim.Wait();
        long mismatches = guests.Finish(Rounds);
        long pss = ram.Sum(r => r.Pss);
        long touched = ram.Sum(r => r.Rss + r.Swap);
        return new GuestPhaseResult(name, null)
        {
            HostBytes = pss + z.MemUsedTotal,
            TouchedBytes = touched,
            MemoryParts = $"QEMU's guest RAM PSS {Mib(pss)} (KSM: {ksmShared} pages shared by {ksmSharing}) + zram {Mib(z.MemUsedTotal)} " +
                          $"holding {Mib(z.OrigDataSize)} ({z.SamePages} same-filled pages)",
            RoundSeconds = paces,
            Mismatches = mismatches,
            Notes = $"{pagedOut} pages advised out{(GuestRam.LastError is { } e ? $" (last failure: {e})" : "")}",
        };
    }

    // ---- the report ----

    private string Report(MachineInfo machine, List<GuestPhaseResult[]> all)
    {
        var md = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        md.AppendLine($"# Live guests: DifferenceEngine against no engine and Linux's KSM + zram");
        md.AppendLine();
        md.AppendLine($"Machine: {machine}. Run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC{(options.Quick ? " (quick)" : "")}.");
        md.AppendLine();
        md.AppendLine($"Guests, booted from one image (Debian cloud kernel + deworkload initramfs), {GuestMiB} MiB RAM each, QEMU TCG, " +
                      $"{WorkloadMiB} MiB workload each, {Rounds} rounds, measured after round {SampleRound}; every way run {Repeats} " +
                      "time(s) in turn, each from fresh boots; the table gives medians (and the range over the repeats):");
        md.AppendLine();
        foreach (var g in Guests) md.AppendLine($"- **{g.Name}**: {g.Workload}.");
        md.AppendLine();
        md.AppendLine("| way | host memory for guest RAM | x no engine | guest pace (round ms: " + string.Join(" / ", Guests.Select(g => g.Name)) +
                      ") | pace vs no engine | mismatches |");
        md.AppendLine("|---|---:|---:|---|---:|---:|");
        var typical = new List<GuestPhaseResult>();
        for (int w = 0; w < all[0].Length; w++)
        {
            var runs = all.Select(a => a[w]).ToArray();
            if (runs.Any(r => r.Skipped is not null))
            {
                md.AppendLine($"| {runs[0].Name} | skipped: {runs.First(r => r.Skipped is not null).Skipped} | | | | |");
                continue;
            }
            var ratios = all.Select(a => (double)a[w].HostBytes / a[0].HostBytes).ToArray();
            var slowdowns = all.Select(a => Slowdown(a[0].RoundSeconds, a[w].RoundSeconds)).ToArray();
            var byMemory = runs.OrderBy(r => r.HostBytes).ToArray();
            var median = byMemory[byMemory.Length / 2];
            typical.Add(median);
            string paces = string.Join(" / ", Enumerable.Range(0, Guests.Length)
                .Select(i => (Median(runs.Select(r => r.RoundSeconds[i])) * 1000).ToString("0.0", inv)));
            string Range(IEnumerable<string> values) => Repeats > 1 ? $" ({string.Join(" to ", values)})" : "";
            md.AppendLine($"| {median.Name} | {Mib(median.HostBytes)}{Range([Mib(byMemory[0].HostBytes), Mib(byMemory[^1].HostBytes)])} | " +
                          $"{Median(ratios):0.00}x | {paces} | {Signed(Median(slowdowns))}{Range([Signed(slowdowns.Min()), Signed(slowdowns.Max())])} | " +
                          $"{runs.Sum(r => r.Mismatches)} |");
        }
        md.AppendLine();
        md.AppendLine("Where the memory is, in the run of each way with the median memory:");
        md.AppendLine();
        foreach (var r in typical)
            md.AppendLine($"- {r.Name}: {r.MemoryParts}{(r.Notes.Length > 0 ? "; " + r.Notes : "")}.");
        foreach (var engine in typical.Where(r => r.Name.StartsWith("DifferenceEngine", StringComparison.Ordinal)))
        {
            md.AppendLine();
            md.AppendLine($"{engine.Name}: fault round trip (message read to guest woken), all kinds: {engine.FaultCount} faults, " +
                          $"p50 {Us(engine.FaultP50)}, p99 {Us(engine.FaultP99)} (target p50 <= 20 us: {(engine.FaultP50.TotalMicroseconds <= 20 ? "met" : "not met")}); " +
                          $"engine metadata {Mib(engine.MetadataBytes)} ({100.0 * engine.MetadataBytes / Math.Max(1, engine.TouchedBytes):0.00}% of the guest memory it pages).");
            md.AppendLine();
            md.AppendLine("| fault kind | count | p50 | p99 |");
            md.AppendLine("|---|---:|---:|---:|");
            foreach (var f in engine.Faults) md.AppendLine($"| {f.Kind} | {f.Count} | {Us(f.P50)} | {Us(f.P99)} |");
        }
        if (Repeats > 1)
        {
            md.AppendLine();
            md.AppendLine("Every run:");
            md.AppendLine();
            md.AppendLine("| repeat | way | host memory | pace vs that repeat's no engine | faults | fault p50 |");
            md.AppendLine("|---:|---|---:|---:|---:|---:|");
            for (int i = 0; i < all.Count; i++)
                foreach (var r in all[i].Where(r => r.Skipped is null))
                    md.AppendLine($"| {i + 1} | {r.Name} | {Mib(r.HostBytes)} | {Signed(Slowdown(all[i][0].RoundSeconds, r.RoundSeconds))} | " +
                                  $"{r.FaultCount} | {(r.FaultCount > 0 ? Us(r.FaultP50) : "")} |");
        }
        md.AppendLine();
        md.AppendLine("Host memory for guest RAM: (a) QEMU's resident pages of the guests' RAM memfds; (b) the embedded host's " +
                      "memory used (Get-DEHostStats MemoryUsedBytes: the guest pages still in QEMU, the engine's frames, its store " +
                      "and its metadata; the engine process's own runtime is not counted); (c) the PSS of QEMU's guest RAM mapping " +
                      "(KSM's shared pages divided among their users) plus zram's mem_used_total. QEMU's own memory (TCG's code " +
                      "buffer, devices) is left out of all three alike. Pace: the median time of a working-set round of each guest " +
                      $"after the warm-up, as the guest measures it (its work alone, not its {PauseMs} ms think time between rounds); " +
                      "'pace vs no engine' is the mean of the guests' slowdowns against the no-engine run of the same repeat.");
        return md.ToString();
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? 0 : sorted[sorted.Length / 2];
    }

    private static string Signed(double percent) => (percent >= 0 ? "+" : "") + percent.ToString("0.0", CultureInfo.InvariantCulture) + "%";

    private static double Slowdown(double[] baseline, double[] run) =>
        baseline.Length == 0 || run.Length != baseline.Length ? 0 : 100 * (run.Zip(baseline, (r, b) => r / b).Average() - 1);

    private static (TimeSpan P50, TimeSpan P99, long Count) AllFaults(DEHost host)
    {
        var buckets = new SortedDictionary<TimeSpan, long>();
        foreach (var kind in Enum.GetValues<Domains.FaultKind>())
            foreach (var (upper, count) in host.FaultHistogram(kind).Buckets())
                buckets[upper] = buckets.GetValueOrDefault(upper) + count;
        long total = buckets.Values.Sum();
        TimeSpan At(double p)
        {
            long rank = (long)Math.Ceiling(total * p / 100), seen = 0;
            foreach (var (upper, count) in buckets)
                if ((seen += count) >= rank) return upper;
            return TimeSpan.Zero;
        }
        return total == 0 ? (TimeSpan.Zero, TimeSpan.Zero, 0) : (At(50), At(99), total);
    }

    private static string Mib(long bytes) => (bytes / 1048576.0).ToString("0.0", CultureInfo.InvariantCulture) + " MiB";

    private static string Us(TimeSpan t) => t.TotalMicroseconds.ToString("0.0", CultureInfo.InvariantCulture) + " us";

    private static void Log(string message) => Console.WriteLine($"[{DateTime.Now:HH:mm:ss}] {message}");

    // ---- the guests ----

    /// <summary>The three guests of one way, booted together; Dispose kills them.</summary>
    private sealed class Fleet : List<FleetGuest>, IDisposable
    {
        public Fleet(GuestsOptions options, int rounds, int pauseMs, bool sharedMemfd, bool library)
        {
            string sockets = Directory.CreateTempSubdirectory("de-guests-").FullName;
            foreach (var spec in Guests)
            {
                string? socket = library ? Path.Combine(sockets, spec.Name + ".sock") : null;
                Add(new FleetGuest(spec, socket, QemuGuestProcess.Start(new QemuGuestStartInfo
                {
                    Kernel = Path.Combine(options.GuestsDir, "vmlinuz"),
                    Initrd = Path.Combine(options.GuestsDir, "initramfs.cpio.gz"),
                    MemoryMiB = GuestMiB,
                    SharedMemfd = sharedMemfd,
                    Library = library ? options.Library : null,
                    Socket = socket,
                    Append = $"console=ttyS0 quiet loglevel=0 panic=-1 {spec.Options(WorkloadMiB, rounds, pauseMs)}",
                })));
            }
        }

        public void WaitAll(string what)
        {
            foreach (var g in this) g.Process.WaitFor(new Regex($"^deworkload {what} "), Patience);
        }

        /// <summary>
        /// Waits until every guest has done round <paramref name="last"/>; each guest's median work time of a round (its
        /// own us=, the pause left out) after <paramref name="warmup"/>, in seconds.
        /// </summary>
        public double[] Rounds(int warmup, int last)
        {
            var paces = new double[Count];
            for (int i = 0; i < Count; i++)
            {
                var g = this[i];
                for (int round = g.RoundsSeen + 1; round <= last; round++)
                {
                    var (m, _) = g.Process.WaitFor(new Regex($@"^deworkload (round={round} .* us=(\d+)$|MISMATCH)"), Patience);
                    if (m.Value.Contains("MISMATCH", StringComparison.Ordinal))
                        throw new InvalidOperationException($"guest {g.Spec.Name} found its memory changed");
                    if (round > warmup) g.RoundMicroseconds.Add(long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
                    g.RoundsSeen = round;
                }
                var times = g.RoundMicroseconds.Order().ToArray();
                paces[i] = times.Length == 0 ? 0 : times[times.Length / 2] / 1e6;
            }
            return paces;
        }

        /// <summary>Runs every guest to its end (all memory verified); the mismatches they found.</summary>
        public long Finish(int rounds)
        {
            long bad = 0;
            foreach (var g in this)
            {
                for (int round = g.RoundsSeen + 1; round <= rounds; round++)
                    g.Process.WaitFor(new Regex($@"^deworkload round={round} "), Patience);
                g.RoundsSeen = rounds;
                var (m, _) = g.Process.WaitFor(new Regex(@"^deworkload done rounds=\d+ mismatches=(\d+)$"), Patience);
                bad += long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
            }
            return bad;
        }

        public void Dispose()
        {
            foreach (var g in this) g.Process.Dispose();
        }
    }

    private sealed class FleetGuest(GuestSpec spec, string? socket, QemuGuestProcess process)
    {
        public GuestSpec Spec { get; } = spec;
        public string? Socket { get; } = socket;
        public QemuGuestProcess Process { get; } = process;
        public int Pid => Process.Pid;
        public int RoundsSeen { get; set; }
        public List<long> RoundMicroseconds { get; } = [];
    }
}

internal sealed class GuestsOptions
{
    public required string GuestsDir { get; init; }
    public required string Library { get; init; }
    public string OutDir { get; init; } = Path.Combine("out", "compare");
    public string? JournalDirectory { get; init; }
    public bool Quick { get; init; }
    /// <summary>Where the guests' RAM images go (raw, 0600), taken in the first no-engine run; null: none.</summary>
    public string? ImagesDir { get; init; }
}

/// <summary>A QEMU's guest RAM mapping, from /proc/PID/smaps: resident, proportional and swapped bytes.</summary>
internal static partial class GuestRam
{
    public readonly record struct Usage(long Rss, long Pss, long Swap, ulong Start, ulong End);

    /// <summary>
    /// The guest RAM mapping of QEMU <paramref name="pid"/>: the memfd mapping (memory-backend-memfd), or, for private RAM,
    /// the rw-p anonymous mapping of exactly the guest's size.
    /// </summary>
    public static Usage Measure(int pid, bool memfd)
    {
        Usage? found = null;
        ulong start = 0, end = 0;
        bool candidate = false;
        long rss = 0, pss = 0, swap = 0;
        foreach (string line in File.ReadLines($"/proc/{pid}/smaps"))
        {
            var head = MappingLine().Match(line);
            if (head.Success)
            {
                if (candidate) found = new Usage(rss, pss, swap, start, end);
                start = ulong.Parse(head.Groups[1].Value, NumberStyles.HexNumber);
                end = ulong.Parse(head.Groups[2].Value, NumberStyles.HexNumber);
                string perms = head.Groups[3].Value, path = head.Groups[4].Value.Trim();
                candidate = memfd
                    ? path.Contains("memory-backend-memfd", StringComparison.Ordinal) && found is null
                    : perms == "rw-p" && path.Length == 0 && end - start == (ulong)GuestsRunner.GuestBytes && found is null;
                rss = pss = swap = 0;
                continue;
            }
            if (!candidate) continue;
            if (line.StartsWith("Rss:", StringComparison.Ordinal)) rss = Kib(line);
            else if (line.StartsWith("Pss:", StringComparison.Ordinal)) pss = Kib(line);
            else if (line.StartsWith("Swap:", StringComparison.Ordinal)) swap = Kib(line);
        }
        if (candidate) found = new Usage(rss, pss, swap, start, end);
        return found ?? throw new InvalidOperationException($"QEMU {pid} has no guest RAM mapping in its smaps");
    }

    /// <summary>Asks the kernel to page out QEMU's guest RAM (<paramref name="ram"/>) now (process_madvise MADV_PAGEOUT); the pages advised.</summary>
    public static unsafe long PageOut(int pid, Usage ram)
    {
        int pidfd = (int)Syscall(434 /* pidfd_open */, pid, 0);
        if (pidfd < 0)
        {
            LastError = $"pidfd_open: {Marshal.GetLastPInvokeErrorMessage()}";
            return 0;
        }
        try
        {
            var iov = stackalloc nuint[2];
            iov[0] = (nuint)ram.Start;
            iov[1] = (nuint)(ram.End - ram.Start);
            long n = Syscall(440 /* process_madvise */, pidfd, (long)iov, 1, 21 /* MADV_PAGEOUT */, 0);
            if (n < 0) LastError = $"process_madvise: {Marshal.GetLastPInvokeErrorMessage()}";
            return n < 0 ? 0 : n / 4096;
        }
        finally
        {
            LibC.Close(pidfd);
        }
    }

    /// <summary>
    /// Writes QEMU <paramref name="pid"/>'s guest RAM to a raw image (mode 0600: it holds the guest's secrets), read from
    /// its memfd (/proc/PID/fd), so that pages the guest never touched read as zeros and stay holes.
    /// </summary>
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public static void WriteImage(int pid, string path)
    {
        string? memfd = Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd")
            .FirstOrDefault(fd => (new FileInfo(fd).LinkTarget ?? "").Contains("memory-backend-memfd", StringComparison.Ordinal))
            ?? throw new InvalidOperationException($"QEMU {pid} holds no memory-backend-memfd descriptor");
        using var source = File.OpenHandle(memfd, FileMode.Open, FileAccess.Read);
        using var target = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.Create, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        });
        var buffer = new byte[1 << 20];
        long offset = 0;
        int n;
        while (offset < GuestsRunner.GuestBytes && (n = RandomAccess.Read(source, buffer, offset)) > 0)
        {
            target.Write(buffer, 0, n);
            offset += n;
        }
    }

    /// <summary>Why the last page-out did nothing, if it did nothing.</summary>
    public static string? LastError { get; private set; }

    private static long Kib(string line) => long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;

    [GeneratedRegex(@"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")]
    private static partial Regex MappingLine();

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, long a, long b, long c = 0, long d = 0, long e = 0);
}

/// <summary>KSM on for the run (merging every MADV_MERGEABLE area, which QEMU's private RAM is), unmerged and off after.</summary>
internal sealed class KsmOn : IDisposable
{
    private const string Dir = "/sys/kernel/mm/ksm";
    private readonly IDisposable _guard;
    private readonly string _pages, _sleep;

    private KsmOn()
    {
        _pages = Sysfs.Read(Path.Combine(Dir, "pages_to_scan"));
        _sleep = Sysfs.Read(Path.Combine(Dir, "sleep_millisecs"));
        _guard = PeerGuard.Register("ksm", Restore);
        RestoreSteps.SetUpOrRestore(_guard, () =>
        {
            Sysfs.Write(Path.Combine(Dir, "pages_to_scan"), 4000);
            Sysfs.Write(Path.Combine(Dir, "sleep_millisecs"), 20);
            Sysfs.Write(Path.Combine(Dir, "run"), 1);
        });
    }

    public static KsmOn Start() => new();

    /// <summary>Each step on its own: a knob that cannot be written does not keep KSM running or the others unrestored.</summary>
    private void Restore() => RestoreSteps.Run("KSM",
        ("unmerge (run=2)", () => Sysfs.Write(Path.Combine(Dir, "run"), 2)),
        ("stop (run=0)", () => Sysfs.Write(Path.Combine(Dir, "run"), 0)),
        ($"restore pages_to_scan={_pages}", () => Sysfs.Write(Path.Combine(Dir, "pages_to_scan"), _pages)),
        ($"restore sleep_millisecs={_sleep}", () => Sysfs.Write(Path.Combine(Dir, "sleep_millisecs"), _sleep)));

    public void Dispose() => _guard.Dispose();
}

/// <summary>zram0 as the machine's swap for the run (highest priority), off and reset after.</summary>
internal sealed class ZramSwap : IDisposable
{
    private const string Dir = "/sys/block/zram0";
    private readonly IDisposable _guard;
    private readonly string _saved;

    private ZramSwap(string algorithm, long bytes)
    {
        _saved = Sysfs.Selected(Sysfs.Read(Path.Combine(Dir, "comp_algorithm")));
        _guard = PeerGuard.Register("zram swap", Restore);
        // If a step fails (mkswap or swapon included), zram0 is reset now, not left initialized for the next run to skip.
        RestoreSteps.SetUpOrRestore(_guard, () =>
        {
            Sysfs.Write(Path.Combine(Dir, "comp_algorithm"), algorithm);
            Sysfs.Write(Path.Combine(Dir, "disksize"), bytes);
            Run("mkswap", "/dev/zram0");
            Run("swapon", "-p", "32767", "/dev/zram0");
        });
    }

    /// <summary>The codec of zram's that keeps the most: zstd where offered, else lzo-rle, else the kernel's default.</summary>
    public static string BestAlgorithm()
    {
        var offered = Sysfs.Choices(Sysfs.Read(Path.Combine(Dir, "comp_algorithm")));
        return new[] { "zstd", "lzo-rle", "lzo", "lz4" }.FirstOrDefault(offered.Contains) ?? offered[0];
    }

    public static ZramSwap Start(string algorithm, long bytes) => new(algorithm, bytes);

    public (long OrigDataSize, long ComprDataSize, long MemUsedTotal, long SamePages) Stats()
    {
        var f = Sysfs.Read(Path.Combine(Dir, "mm_stat")).Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();
        return (f[0], f[1], f[2], f[5]);
    }

    /// <summary>
    /// swapoff only when zram0 is swap (a setup that failed before swapon left it not), then reset and the saved codec, each
    /// step on its own: reset runs even when swapoff fails.
    /// </summary>
    private void Restore() => RestoreSteps.Run("zram swap",
        ("swapoff /dev/zram0", () =>
        {
            if (File.ReadAllText("/proc/swaps").Contains("/dev/zram0", StringComparison.Ordinal)) Run("swapoff", "/dev/zram0");
        }),
        ("reset zram0", () => Sysfs.Write(Path.Combine(Dir, "reset"), 1)),
        ($"restore comp_algorithm={_saved}", () => Sysfs.Write(Path.Combine(Dir, "comp_algorithm"), _saved)));

    private static void Run(string file, params string[] args)
    {
        var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        string err = p.StandardError.ReadToEnd();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed ({p.ExitCode}): {err.Trim()}");
    }

    public void Dispose() => _guard.Dispose();
}
