using System.Diagnostics;
using System.Globalization;
using System.Text;
using DifferenceEngine.Bench.Compare;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Codecs;
using DifferenceEngine.Fleet;

namespace DifferenceEngine.Bench.Fleet;

/// <summary>
/// fleet [--path IMAGE...] [--programs] [--out DIR] [--pwsh PATH] [--sample N] [--quick]: the colocation model's accuracy.
/// Every input is fingerprinted; then every input alone, every pair and every triple is loaded into a fresh embedded
/// host (the default policy: all mechanisms, LZ4 with Zstd groups of four; one scan thread, so the run is repeatable)
/// and scanned until stable, and the memory it uses is set against the model's prediction from the fingerprints.
/// Writes fleet.md and fleet.csv (docs/FLEET.md, "Accuracy").
/// </summary>
internal static class FleetAccuracy
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>The embedded host's similarity seed in every run (fixed, so runs compare; not the fleet detector's seed).</summary>
    private const int HostSeed = 1;

    public static int Run(string[] args)
    {
        var paths = new List<string>();
        string outDir = Path.Combine("out", "fleet");
        string? pwsh = null, keep = null, keyFile = null, cacheFile = null;
        HashSet<string>? only = null;
        bool programs = false, quick = false;
        int sample = 1 << FingerprintBuilder.DefaultSampleShift;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--path":
                    while (i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal)) paths.Add(args[++i]);
                    break;
                case "--programs": programs = true; break;
                case "--quick": quick = true; break;
                case "--out" when i + 1 < args.Length: outDir = args[++i]; break;
                case "--pwsh" when i + 1 < args.Length: pwsh = args[++i]; break;
                case "--keep" when i + 1 < args.Length: keep = args[++i]; break;
                case "--key" when i + 1 < args.Length: keyFile = args[++i]; break;
                case "--actuals" when i + 1 < args.Length: cacheFile = args[++i]; break;
                case "--only" when i + 1 < args.Length: only = [.. args[++i].Split(',')]; break;
                case "--sample" when i + 1 < args.Length:
                    if (!int.TryParse(args[++i], NumberStyles.None, Inv, out sample)) sample = 0; // refused below
                    break;
                case "-h" or "--help":
                    Console.WriteLine("usage: fleet [--path IMAGE...] [--programs] [--out DIR] [--pwsh PATH] [--sample N] [--quick]");
                    Console.WriteLine("  --path      raw images to use as domains; --programs adds snapshots of live programs (the default without --path)");
                    Console.WriteLine("  --sample N  fingerprints sample one page in N (default 16)");
                    Console.WriteLine("  --quick     alone and pairs only (no triples)");
                    Console.WriteLine("  --key FILE  the fleet key file to fingerprint with (default: a new random key)");
                    Console.WriteLine("  --keep DIR  keep copies of the program snapshots in DIR (to run again on the same memory)");
                    Console.WriteLine("  --actuals FILE  reuse the embedded host's figures for sets already in FILE, add the others (the same images only)");
                    Console.WriteLine("  --only A+B,C  only these sets (labels joined by +)");
                    return 0;
                default:
                    Console.Error.WriteLine($"fleet: unknown or incomplete argument '{args[i]}' (see --help).");
                    return 2;
            }
        }
        if (!System.Numerics.BitOperations.IsPow2(sample) || sample < 4)
        {
            Console.Error.WriteLine("fleet: --sample must be a power of two, at least 4.");
            return 2;
        }
        int shift = System.Numerics.BitOperations.Log2((uint)sample);
        foreach (string path in paths)
        {
            if (CompareCommand.BadImage(path) is { } why)
            {
                Console.Error.WriteLine($"fleet: {path}: {why}");
                return 2;
            }
        }
        // One key for the run: a new one from the system's random source, or --key FILE to repeat a run exactly (the key
        // decides which pages are sampled).
        FleetKey key;
        try
        {
            key = keyFile is not null ? FleetKey.FromFile(keyFile) : FleetKey.FromSecret(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));
        }
        catch (DEException e)
        {
            Console.Error.WriteLine($"fleet: {e.Message}");
            return 2;
        }
        // The embedded host's figures do not depend on the model: --actuals FILE keeps them between runs on the same images.
        var cached = new Dictionary<string, Actual>(StringComparer.Ordinal);
        if (cacheFile is not null && File.Exists(cacheFile))
        {
            int number = 0;
            foreach (var line in File.ReadLines(cacheFile))
            {
                number++;
                var parts = line.Split('\t');
                if (parts.Length != 2 || Actual.TryParse(parts[1]) is not { } actual)
                {
                    Console.Error.WriteLine($"fleet: {cacheFile}, line {number}: not a set's actuals (its labels, a tab, seven whole numbers).");
                    return 2;
                }
                cached[parts[0]] = actual;
            }
        }
        Directory.CreateDirectory(outDir);
        var started = Stopwatch.StartNew();
        using var snapshots = programs || paths.Count == 0 ? InputImages.Snapshot(HelperPrograms.Default(pwsh, Log), Log) : null;
        var inputs = new List<InputImage>();
        if (snapshots is not null) inputs.AddRange(snapshots.Images);
        if (keep is not null && snapshots is not null)
        {
            // Copies of the snapshots (0600, like them) to run again on the same memory.
            Directory.CreateDirectory(keep);
            foreach (var image in snapshots.Images) File.Copy(image.Path, Path.Combine(keep, image.Label + ".img"), overwrite: true);
        }
        if (paths.Count > 0)
        {
            using var given = InputImages.FromPaths(paths);
            inputs.AddRange(given.Images);
        }

        Log($"fleet key {key.KeyId}");
        var fingerprints = new Dictionary<string, DomainFingerprint>();
        foreach (var image in inputs)
        {
            using var source = EngineRun.OpenRaw(image.Path);
            var f = FingerprintBuilder.FromSource(source, key, image.Label, "fleet", sampleShift: shift);
            fingerprints[image.Label] = f;
            Log($"fingerprint {image.Label,-10} {f.PageCount,7} pages, {f.SketchBytes,8} B sketch ({100.0 * f.SketchBytes / f.GuestBytes:0.000}% of its memory), {f.Seconds:0.000} s ({f.GuestBytes / 1048576.0 / Math.Max(1e-9, f.Seconds):0} MiB/s)");
        }

        var sets = new List<InputImage[]>();
        for (int a = 0; a < inputs.Count; a++) sets.Add([inputs[a]]);
        for (int a = 0; a < inputs.Count; a++)
            for (int b = a + 1; b < inputs.Count; b++) sets.Add([inputs[a], inputs[b]]);
        if (!quick)
            for (int a = 0; a < inputs.Count; a++)
                for (int b = a + 1; b < inputs.Count; b++)
                    for (int c = b + 1; c < inputs.Count; c++) sets.Add([inputs[a], inputs[b], inputs[c]]);

        if (Environment.GetEnvironmentVariable("DE_STORE_CENSUS") is not null) ColocationModel.Census = s => Console.WriteLine("    model census: " + s);
        var rows = new List<Row>();
        foreach (var set in sets)
        {
            if (only is not null && !only.Contains(string.Join("+", set.Select(i => i.Label)))) continue;
            var prediction = ColocationModel.Predict(set.Select(i => fingerprints[i.Label]).ToArray());
            string name = string.Join(" + ", set.Select(i => i.Label));
            if (!cached.TryGetValue(name, out var actual))
            {
                using var loaded = InputImages.FromPaths(set.Select(i => i.Path).ToList(), set.Select(i => i.Label).ToList());
                // The host's similarity seed is not the fingerprint's detector seed (FingerprintBuilder.FleetDetectorSeed):
                // a real host draws its own, so the engine keys pages on other blocks than the fingerprint does.
                var run = EngineRun.Run("fleet", loaded, patching: true, CompressionAlgorithm.LZ4, threads: 1, groupSize: 4, defaultSweeps: true,
                    similaritySeed: HostSeed);
                actual = new Actual(run.GuestPages, run.MemoryUsedBytes, run.FramesInUse, run.StoreAllocatedBytes, run.MetadataBytes,
                    run.PatchedPages, run.SavedBySharing);
                cached[name] = actual;
                if (cacheFile is not null) File.AppendAllText(cacheFile, $"{name}\t{actual}\n");
                if (Environment.GetEnvironmentVariable("DE_FLEET_DETAIL") is not null)
                {
                    Log($"    metadata: {run.Metadata}; total {run.MetadataBytes}; groups {run.PageGroups} of {run.GroupedPages} pages");
                    Log($"    engine: compressed {run.CompressedPages} pages ({run.SharedCompressedPages} naming {run.SharedCompressedFrames} shared blobs), grouped {run.GroupedPages}, blob bytes {Mib(run.CompressedBytes)} MiB, patches {Mib(run.PatchBytes)} MiB, shared frames {run.SharedFrames}; model: shared contents {prediction.SharedContents}, compressed {prediction.CompressedContents}, frames {prediction.FrameContents}+{prediction.ReferencePages} refs");
                }
            }
            var row = new Row(name, set.Length, actual.GuestPages * 4096L, actual.MemoryUsed,
                prediction.PredictedUsedBytes, actual.FramesInUse * 4096L, prediction.FrameBytes, actual.StoreAllocated, prediction.StoreBytes,
                actual.Metadata, prediction.MetadataBytes, prediction.SeparateUsedBytes)
            {
                ActualPatched = actual.Patched, PredictedPatched = prediction.PatchedPages,
                ActualShared = actual.SavedBySharing, PredictedShared = prediction.SharedPagesSaved,
            };
            rows.Add(row);
            Log($"{row.Set,-40} actual {Mib(row.Actual),7} MiB  predicted {Mib(row.Predicted),7} MiB  {row.ErrorPercent,6:+0.0;-0.0}%  (patched {row.ActualPatched}/{row.PredictedPatched}, shared {row.ActualShared}/{row.PredictedShared})");
        }
        Write(outDir, inputs, fingerprints, rows, sample, started.Elapsed);
        var grouped = rows.Where(r => r.Domains >= 2).ToList();
        int within = grouped.Count(r => Math.Abs(r.ErrorPercent) <= 5);
        Log($"pairs and triples within 5%: {within} of {grouped.Count}; largest error {grouped.Select(r => Math.Abs(r.ErrorPercent)).DefaultIfEmpty().Max():0.0}%");
        Log($"wrote {Path.Combine(outDir, "fleet.md")}");
        return 0;
    }

    private sealed record Actual(long GuestPages, long MemoryUsed, long FramesInUse, long StoreAllocated, long Metadata, long Patched, long SavedBySharing)
    {
        public override string ToString() => string.Join(' ', GuestPages, MemoryUsed, FramesInUse, StoreAllocated, Metadata, Patched, SavedBySharing);

        /// <summary>The seven figures <see cref="ToString"/> writes; null when <paramref name="text"/> is not that.</summary>
        public static Actual? TryParse(string text)
        {
            var t = text.Split(' ');
            var v = new long[7];
            if (t.Length != v.Length) return null;
            for (int i = 0; i < v.Length; i++)
                if (!long.TryParse(t[i], NumberStyles.AllowLeadingSign, Inv, out v[i])) return null;
            return new Actual(v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
        }
    }

    private sealed record Row(string Set, int Domains, long Guest, long Actual, long Predicted, long ActualFrames, long PredictedFrames,
        long ActualStore, long PredictedStore, long ActualMetadata, long PredictedMetadata, long PredictedSeparate)
    {
        public double ErrorPercent => 100.0 * (Predicted - Actual) / Actual;
        public long ActualPatched { get; init; }
        public long PredictedPatched { get; init; }
        public long ActualShared { get; init; }
        public long PredictedShared { get; init; }
    }

    private static string Mib(long bytes) => (bytes / 1048576.0).ToString("0.0", Inv);

    private static void Write(string outDir, List<InputImage> inputs, Dictionary<string, DomainFingerprint> fingerprints, List<Row> rows,
        int sample, TimeSpan elapsed)
    {
        var md = new StringBuilder();
        md.AppendLine("# Fleet: the colocation model against the embedded host");
        md.AppendLine();
        md.AppendLine(Inv, $"- Machine: {MachineDescription()}");
        md.AppendLine(Inv, $"- Run: `fleet`, {elapsed.TotalSeconds:0} s; fingerprints sample one page in {sample}");
        md.AppendLine(Inv, $"- Actual: a fresh embedded host per row, the default policy (all mechanisms, LZ4, Zstd groups of four), similarity seed {HostSeed} (the fingerprints' detector has its own), one scan thread, scanned until stable; memory used = frames + store slabs + metadata.");
        md.AppendLine();
        md.AppendLine("| domain | pages | sketch (B) | % of memory | fingerprint (s) | MiB/s |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|");
        foreach (var image in inputs)
        {
            var f = fingerprints[image.Label];
            md.AppendLine(Inv, $"| {image.Label} | {f.PageCount} | {f.SketchBytes} | {100.0 * f.SketchBytes / f.GuestBytes:0.000} | {f.Seconds:0.000} | {f.GuestBytes / 1048576.0 / Math.Max(1e-9, f.Seconds):0} |");
        }
        md.AppendLine();
        md.AppendLine("| domains | guest (MiB) | actual (MiB) | predicted (MiB) | error | frames a/p (MiB) | store a/p (MiB) | metadata a/p (MiB) | pages saved by sharing a/p | patched pages a/p | predicted apart (MiB) |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
            md.AppendLine(Inv, $"| {r.Set} | {Mib(r.Guest)} | {Mib(r.Actual)} | {Mib(r.Predicted)} | {r.ErrorPercent:+0.0;-0.0}% | {Mib(r.ActualFrames)} / {Mib(r.PredictedFrames)} | {Mib(r.ActualStore)} / {Mib(r.PredictedStore)} | {Mib(r.ActualMetadata)} / {Mib(r.PredictedMetadata)} | {r.ActualShared} / {r.PredictedShared} | {r.ActualPatched} / {r.PredictedPatched} | {Mib(r.PredictedSeparate)} |");
        var grouped = rows.Where(r => r.Domains >= 2).ToList();
        md.AppendLine();
        md.AppendLine(Inv, $"Pairs and triples within 5%: **{grouped.Count(r => Math.Abs(r.ErrorPercent) <= 5)} of {grouped.Count}**; largest error {grouped.Select(r => Math.Abs(r.ErrorPercent)).DefaultIfEmpty().Max():0.0}%; mean absolute error {grouped.Select(r => Math.Abs(r.ErrorPercent)).DefaultIfEmpty().Average():0.0}%.");
        File.WriteAllText(Path.Combine(outDir, "fleet.md"), md.ToString());
        var csv = new StringBuilder("set,domains,guest_bytes,actual_bytes,predicted_bytes,error_percent,actual_frames,predicted_frames,actual_store,predicted_store,actual_metadata,predicted_metadata\n");
        foreach (var r in rows)
            csv.AppendLine(Inv, $"\"{r.Set}\",{r.Domains},{r.Guest},{r.Actual},{r.Predicted},{r.ErrorPercent:0.00},{r.ActualFrames},{r.PredictedFrames},{r.ActualStore},{r.PredictedStore},{r.ActualMetadata},{r.PredictedMetadata}");
        File.WriteAllText(Path.Combine(outDir, "fleet.csv"), csv.ToString());
    }

    private static string MachineDescription() =>
        $"{Environment.ProcessorCount} cores, {Environment.OSVersion}, .NET {Environment.Version}, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC";

    private static void Log(string line) => Console.WriteLine($"[fleet] {line}");
}
