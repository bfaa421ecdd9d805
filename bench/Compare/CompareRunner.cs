using System.Diagnostics;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Bench.Peers;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;

namespace DifferenceEngine.Bench.Compare;

/// <summary>
/// The whole-run comparison: the inputs loaded into fresh hosts, (a) sharing alone, (b) sharing and patching,
/// (c) every mechanism with each codec, each until stable; then, in the same run, KSM, zram with each codec the
/// kernel offers, and KSM then zram, where the machine allows; a table on the console, compare.csv and compare.md.
/// </summary>
internal sealed class CompareRunner(CompareOptions options)
{
    private const int SharingRepeats = 5;
    private const int KsmRepeats = 3;

    /// <summary>Pairs xdelta3 encodes, one process each: an even sample of the pages the sharing+patching run patched.</summary>
    private const int MaxXdeltaPairs = 400;
    private const int QuickXdeltaPairs = 50;
    private static readonly TimeSpan PeerLockWait = TimeSpan.FromMinutes(2);

    public int Run()
    {
        var total = Stopwatch.StartNew();
        var machine = MachineInfo.Capture();
        string loadBefore = MachineInfo.LoadAverage();
        Log($"compare{(options.Quick ? " --quick" : "")}: {machine}; load average {loadBefore}");

        using var inputs = OpenInputs();
        Log($"inputs: {inputs.Images.Count} images, {inputs.TotalPages} pages ({inputs.TotalBytes / 1048576.0:0.0} MiB): " +
            $"{inputs.ZeroPages} zero, {inputs.UniformPages} one repeated word, {inputs.DistinctNonZero} distinct non-zero contents " +
            $"({inputs.ContentsRepeated} of them repeated, {inputs.DuplicatePages} duplicate pages)");

        CompressionAlgorithm[] codecs = options.Quick
            ? [CompressionAlgorithm.LZ4]
            : [CompressionAlgorithm.LZ4, CompressionAlgorithm.WKdm, CompressionAlgorithm.Zstd];
        WarmUp(inputs, codecs);

        // The sharing runs time the pass compared with KSM: repeated, the median kept (the machine is shared).
        int repeats = options.Quick ? 1 : SharingRepeats;
        var runs = new List<EngineRunResult>
        {
            Median(repeats, () => Engine("sharing", inputs, patching: false, codec: null)),
            Median(repeats, () => Engine("sharing", inputs, patching: false, codec: null, threads: 1)),
        };
        // The pairs the sharing+patching run patched, read once its numbers are taken, for xdelta3 below.
        PatchPairs? patchPairs = null;
        string? xdelta = XdeltaPeer.Find(out string? xdeltaWhy);
        int maxPairs = options.Quick ? QuickXdeltaPairs : MaxXdeltaPairs;
        var goals = new GoalMeasurements();
        runs.Add(Engine("sharing+patching", inputs, patching: true, codec: null, afterMeasure: host =>
        {
            if (xdelta is not null) patchPairs = PatchPairs.Collect("sharing+patching", host, maxPairs);
            goals.SteadyPatch = GoalSamples.SteadyPatchAllocation(host);
        }));
        var peers = new PeerResults();
        if (xdelta is null) peers.Skip("xdelta3", xdeltaWhy!);
        else if (patchPairs is not { Sample.Count: > 0 })
            peers.Skip("xdelta3", $"the sharing+patching run patched {(patchPairs?.PatchedPages ?? 0)} pages: no pairs to encode");
        else
        {
            try
            {
                peers.Xdelta = XdeltaPeer.Run(xdelta, patchPairs);
                Log("xdelta3: " + XdeltaPeer.Describe(peers.Xdelta));
            }
            catch (Exception e) when (e is InvalidOperationException or IOException or System.ComponentModel.Win32Exception)
            {
                peers.Skip("xdelta3", $"failed: {e.Message}");
            }
        }
        patchPairs = null;

        // Every codec alone (each page compressed by itself), then the default codecs (LZ4 alone, long-cold pages in Zstd
        // groups; every run at sweeps 1/1, not the policy's default 2/2, and named so), the fast setting (LZ4 with LZ4 groups: LZ4 decodes every page) and Zstd with Zstd groups: the effect of
        // page groups, before and after, in one run.
        foreach (var codec in codecs)
            runs.Add(Engine("all mechanisms", inputs, patching: true, codec,
                afterMeasure: codec is CompressionAlgorithm.Zstd or CompressionAlgorithm.LZ4 ? host => goals.Faults.AddRange(GoalSamples.Faults(host)) : null));
        runs.Add(Engine("all mechanisms", inputs, patching: true, DomainPolicy.DefaultAlgorithm, groupSize: DomainPolicy.DefaultGroupSize,
            afterMeasure: host => goals.Faults.AddRange(GoalSamples.Faults(host))));
        var sample = GoalSamples.SamplePages(inputs);
        goals.CompressPageLz4Micros = GoalSamples.CompressPageLz4Micros(sample);
        goals.CompressPageFloor = CodecReference.Lz4Compress(sample, goals.CompressPageLz4Micros.Value);
        Log(CodecReference.Unavailable is { } noReference
            ? $"codec floors: not timed ({noReference})"
            : $"codec floors: {CodecReference.Versions}, against the engine's .NET codecs on the same input");
        if (OperatingSystem.IsLinux()) goals.FirstTouchMicros = GoalSamples.FirstTouchMicros();
        runs.Add(Engine("all mechanisms", inputs, patching: true, CompressionAlgorithm.LZ4, groupSize: DomainPolicy.DefaultGroupSize,
            groupCodec: CompressionAlgorithm.LZ4));
        if (!options.Quick)
            runs.Add(Engine("all mechanisms", inputs, patching: true, CompressionAlgorithm.Zstd, groupSize: DomainPolicy.DefaultGroupSize));

        RunPeers(inputs, peers);
        string loadAfter = MachineInfo.LoadAverage();
        var report = new CompareReport(machine, options.Quick, inputs, runs, peers, loadBefore, loadAfter, total.Elapsed, goals);
        Console.WriteLine();
        Console.WriteLine(report.ConsoleTable());
        Directory.CreateDirectory(options.OutDir);
        string csv = Path.Combine(options.OutDir, "compare.csv");
        string md = Path.Combine(options.OutDir, "compare.md");
        File.WriteAllText(csv, report.Csv());
        File.WriteAllText(md, report.Markdown());
        Log($"wrote {csv} and {md} ({total.Elapsed.TotalSeconds:0} s in all)");
        return 0;
    }

    private InputImages OpenInputs()
    {
        if (options.Paths.Count > 0)
            return InputImages.FromPaths(options.Quick ? options.Paths.Take(2).ToList() : options.Paths);
        var programs = HelperPrograms.Default(options.Pwsh, Log);
        if (options.Quick)
        {
            // The two smallest programs: a smoke run that still has two different memories to share between.
            var small = programs.Where(p => p.Small).ToList();
            programs = (small.Count >= 2 ? small : programs).Take(2).ToList();
        }
        var inputs = InputImages.Snapshot(programs, Log);
        if (options.Keep is { } keep)
        {
            try
            {
                inputs.CopyTo(keep);
                Log($"kept the snapshots in {keep} (for --path)");
            }
            catch
            {
                inputs.Dispose();
                throw;
            }
        }
        return inputs;
    }

    /// <summary>The engine's code jitted once on the smallest input, so no run's first pass pays for it.</summary>
    private static void WarmUp(InputImages inputs, CompressionAlgorithm[] codecs)
    {
        var smallest = inputs.Images.MinBy(i => i.Pages)!;
        using var one = InputImages.FromPaths([smallest.Path]);
        foreach (var codec in codecs) EngineRun.Run("warm-up", one, patching: true, codec);
    }

    private static EngineRunResult Median(int repeats, Func<EngineRunResult> run)
    {
        var all = Enumerable.Range(0, repeats).Select(_ => run()).OrderBy(r => r.FirstPassTime).ToList();
        return all[all.Count / 2] with { Repeats = repeats };
    }

    private static EngineRunResult Engine(string name, InputImages inputs, bool patching, CompressionAlgorithm? codec, int threads = 0,
        Action<DifferenceEngine.Hosting.DEHost>? afterMeasure = null, int groupSize = 0, CompressionAlgorithm groupCodec = CompressionAlgorithm.Zstd)
    {
        var r = EngineRun.Run(name, inputs, patching, codec, threads, afterMeasure, groupSize, groupCodec);
        Log($"{name}{(r.Setting is null ? "" : $" ({r.Setting})")}, {r.Threads} thread(s): {r.Passes} passes in {r.ScanTime.TotalSeconds:0.000} s " +
            $"(converged {r.ConvergeTime.TotalSeconds:0.000} s; passes {string.Join(" + ", r.PassTimes.Select(t => t.TotalSeconds.ToString("0.000", System.Globalization.CultureInfo.InvariantCulture)))}; " +
            $"first {r.FirstPassTime.TotalSeconds:0.000} s, {r.FirstPassPagesPerSecond:0} pages/s); memory used {r.MemoryUsedBytes / 1048576.0:0.0} MiB " +
            $"of {r.GuestPages * 4096 / 1048576.0:0.0}");
        return r;
    }

    private PeerResults RunPeers(InputImages inputs, PeerResults peers)
    {
        string? ksmWhy = KsmPeer.WhyUnavailable();
        string? zramWhy = ZramPeer.WhyUnavailable();
        if (ksmWhy is not null && zramWhy is not null)
        {
            peers.Skip("KSM", ksmWhy);
            peers.Skip("zram", zramWhy);
            return peers;
        }
        using var peerLock = PeerGuard.TryLock(PeerLockWait, out string? lockWhy);
        if (peerLock is null)
        {
            peers.Skip("KSM", lockWhy!);
            peers.Skip("zram", lockWhy!);
            return peers;
        }
        // Checked again under the lock: another run may have been using them while we waited.
        ksmWhy = KsmPeer.WhyUnavailable();
        zramWhy = ZramPeer.WhyUnavailable();

        if (ksmWhy is null)
        {
            try
            {
                var limit = TimeSpan.FromSeconds(options.Quick ? 60 : 300);
                // Repeated and the median kept, as the engine's sharing runs are: KSM's convergence time is the yardstick of
                // two goals, and one run of this session's took twice the usual while the machine was busy.
                var ksmRuns = new List<KsmResult>();
                for (int i = 0; i < (options.Quick ? 1 : KsmRepeats); i++)
                {
                    var run = KsmPeer.Run(inputs, limit, Log, PeerGuard.Cancel.Token);
                    ksmRuns.Add(run);
                    Log($"KSM: {run.PagesSaved} pages saved (pages_sharing {run.PagesSharing}, ksm_zero_pages {run.ZeroPages}); " +
                        $"converged after {run.TimeToConverge.TotalSeconds:0.000} s, confirmed at {run.TimeConfirmed.TotalSeconds:0.000} s " +
                        $"({run.FullScans} full scans)");
                }
                var byTime = ksmRuns.OrderBy(r => r.TimeToConverge).ToList();
                peers.Ksm = byTime[byTime.Count / 2] with
                {
                    Repeats = ksmRuns.Count,
                    RepeatsNote = ksmRuns.Count == 1 ? ""
                        : $" (median of {ksmRuns.Count} runs: {string.Join(", ", ksmRuns.Select(r => r.TimeToConverge.TotalSeconds.ToString("0.000")))} s)",
                };
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                peers.Skip("KSM", $"failed: {e.Message}");
            }
        }
        else peers.Skip("KSM", ksmWhy);

        if (zramWhy is null)
        {
            try
            {
                using var zram = ZramPeer.Open();
                string[] algorithms = ZramPeer.Algorithms();
                if (options.Quick) algorithms = [algorithms.Contains("lzo-rle") ? "lzo-rle" : algorithms[0]];
                foreach (string algorithm in algorithms)
                {
                    var all = zram.Measure(algorithm, "all pages", inputs.TotalPages, emit => inputs.ForEachPage((_, _, page) => emit(page)));
                    peers.Zram.Add(all);
                    Log($"zram {algorithm}: {all.MemUsedTotal / 1048576.0:0.0} MiB used for {all.PagesWritten} pages, ratio {all.Ratio:0.00}, {all.MiBPerSecond:0} MiB/s");
                }
                foreach (string algorithm in algorithms)
                {
                    var seen = new HashSet<UInt128>();
                    var distinct = zram.Measure(algorithm, "distinct non-zero pages (KSM then zram)", inputs.DistinctNonZero, emit =>
                        inputs.ForEachPage((_, _, page) =>
                        {
                            if (!InputImages.IsZero(page) && seen.Add(InputImages.ContentKey(page))) emit(page);
                        }));
                    peers.KsmThenZram.Add(distinct);
                    Log($"KSM then zram {algorithm}: {distinct.MemUsedTotal / 1048576.0:0.0} MiB used for {distinct.PagesWritten} distinct pages");
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                peers.Skip("zram", $"failed: {e.Message}");
            }
        }
        else peers.Skip("zram", zramWhy);
        return peers;
    }

    private static void Log(string line) => Console.WriteLine(line);
}

/// <summary>What the peers measured, and why any was skipped.</summary>
internal sealed class PeerResults
{
    public KsmResult? Ksm { get; set; }

    /// <summary>xdelta3 and our delta codec on the pairs the sharing+patching run patched.</summary>
    public XdeltaResult? Xdelta { get; set; }
    public List<ZramResult> Zram { get; } = [];
    public List<ZramResult> KsmThenZram { get; } = [];
    public List<string> Skipped { get; } = [];

    public void Skip(string peer, string why)
    {
        string line = $"{peer} skipped: {why}";
        Skipped.Add(line);
        Console.WriteLine(line);
    }
}
