using System.Diagnostics;
using System.Globalization;
using System.Text;
using DifferenceEngine.Codecs;
using DifferenceEngine.Loading;
using Xunit.Abstractions;
using ZstdSharp;
using ZstdSharp.Unsafe;

namespace DifferenceEngine.Tests.Codecs;

/// <summary>
/// Measures our delta codec against xdelta3, and the three compressors, on real similar pages: two python3 processes
/// running the same script, snapshotted, each page paired with the other's page at the same gfn when they differ but
/// share at least half their bytes. Writes a report (docs/DELTA-CODEC.md quotes it); asserts only correctness, never time.
/// Run: dotnet test tests/DifferenceEngine.Tests --filter "Category=Compare" --logger "console;verbosity=detailed"
/// </summary>
[Trait("Category", "Compare")]
public sealed class DeltaCompareTests(ITestOutputHelper output)
{
    private const int PageSize = 4096;
    private const int MinSharedBytes = PageSize / 2;
    private const int MinPairs = 20;
    private const int MaxXdeltaPairs = 800;
    private const string XdeltaOptions = "-e -9 -S none -B 524288";
    private const int WarmUpMilliseconds = 400;

    // Enough live objects (dicts, lists, strings, floats, pointers among them) that the heap is more than the interpreter's start-up state.
    private const string PythonSetup = """
        import sys, json, re, collections, decimal, random
        data = [{"id": i, "name": "item%d" % i, "tags": ["a%d" % (i % 7), "b"], "score": i * 0.5} for i in range(20000)]
        index = collections.defaultdict(list)
        for d in data:
            index[d["tags"][0]].append(d)
        blob = json.dumps(data[:2000])
        words = re.findall(r"[a-z]+[0-9]*", blob)
        """;

    [RequiresFact(Requirement.Xdelta3, Requirement.Python3)]
    public void DeltaCodecAgainstXdelta3AndCompressorsOnRealPages()
    {
        if (!OperatingSystem.IsLinux())
        {
            output.WriteLine("Skipped: process snapshots need Linux.");
            return;
        }

        string xdelta = Requirement.FindProgram(Requirement.Xdelta3)!;
        var (first, second) = SnapshotTwoProcesses();
        var pairs = new List<(long Gfn, byte[] Reference, byte[] Page)>();
        foreach ((long gfn, byte[] page) in second.Pages)
        {
            if (first.Pages.TryGetValue(gfn, out byte[]? reference) && !page.AsSpan().SequenceEqual(reference) && SharedBytes(reference, page) >= MinSharedBytes)
            {
                pairs.Add((gfn, reference, page));
            }
        }

        var report = new StringBuilder();
        report.AppendLine(CultureInfo.InvariantCulture, $"Machine: {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}, {DateTime.UtcNow:yyyy-MM-dd}");
        report.AppendLine(CultureInfo.InvariantCulture, $"Snapshots: two python3 processes, {first.Pages.Count} and {second.Pages.Count} pages loaded; {pairs.Count} similar pairs (same gfn, differ, >= {MinSharedBytes} equal bytes)");
        Assert.True(pairs.Count >= MinPairs, $"only {pairs.Count} similar page pairs between the two snapshots");

        MeasureDelta(pairs, xdelta, report);
        MeasureCompressors([.. first.Pages.Values, .. second.Pages.Values], report);
        output.WriteLine(report.ToString());
    }

    private void MeasureDelta(List<(long Gfn, byte[] Reference, byte[] Page)> pairs, string xdelta, StringBuilder report)
    {
        byte[] patch = new byte[DeltaCodec.MaxPatchSize];
        byte[] decoded = new byte[PageSize];
        var sizes = new int[pairs.Count];
        for (int i = 0; i < pairs.Count; i++)
        {
            Assert.True(DeltaCodec.TryEncode(pairs[i].Reference, pairs[i].Page, patch, out sizes[i]));
            DeltaCodec.Decode(pairs[i].Reference, patch.AsSpan(0, sizes[i]), decoded);
            Assert.True(decoded.AsSpan().SequenceEqual(pairs[i].Page), $"gfn {pairs[i].Gfn} does not round-trip");
        }

        byte[][] patches = pairs.Select(p => { DeltaCodec.TryEncode(p.Reference, p.Page, patch, out int n); return patch[..n]; }).ToArray();

        // Whole passes over every pair: the pages stream from memory, and no branch pattern repeats, as on real faults.
        double encodeUs = Time(() =>
        {
            foreach (var (_, reference, page) in pairs)
            {
                DeltaCodec.TryEncode(reference, page, patch, out _);
            }
        }) / pairs.Count;
        double decodeUs = Time(() =>
        {
            for (int i = 0; i < pairs.Count; i++)
            {
                DeltaCodec.Decode(pairs[i].Reference, patches[i], decoded);
            }
        }) / pairs.Count;

        // xdelta3 on an even sample of the pairs (one process per pair), as asked and without its header and checksum.
        int sampleSize = Math.Min(pairs.Count, MaxXdeltaPairs);
        int[] sample = Enumerable.Range(0, sampleSize).Select(i => (int)((long)i * pairs.Count / sampleSize)).ToArray();
        var xdPlain = new int[sample.Length];
        var xdBare = new int[sample.Length];
        string dir = Directory.CreateTempSubdirectory("de-xdelta-").FullName;
        try
        {
            // A few shells run every xdelta3 between them: starting a process from this (large) test process costs tens of
            // ms each. -B 524288 is xdelta3's smallest source window: with the default 64 MiB one each run spends ~60 ms
            // setting it up, and on these pages the patches come out within 3 bytes of the default's (both ways).
            int shells = Environment.ProcessorCount;
            var scripts = Enumerable.Range(0, shells).Select(_ => new StringBuilder("set -e\n")).ToArray();
            for (int k = 0; k < sample.Length; k++)
            {
                var (_, reference, page) = pairs[sample[k]];
                File.WriteAllBytes(Path.Combine(dir, $"{k}.ref"), reference);
                File.WriteAllBytes(Path.Combine(dir, $"{k}.page"), page);
                StringBuilder script = scripts[k % shells];
                script.Append(CultureInfo.InvariantCulture, $"'{xdelta}' {XdeltaOptions} -f -s {k}.ref {k}.page {k}.vcdiff\n");
                script.Append(CultureInfo.InvariantCulture, $"'{xdelta}' {XdeltaOptions} -A -n -f -s {k}.ref {k}.page {k}.bare\n");
            }

            for (int i = 0; i < shells; i++)
            {
                File.WriteAllText(Path.Combine(dir, $"run{i}.sh"), scripts[i].ToString());
            }

            var xdTime = Stopwatch.StartNew();
            Parallel.For(0, shells, i => RunShell(dir, $"run{i}.sh"));
            xdTime.Stop();
            for (int k = 0; k < sample.Length; k++)
            {
                xdPlain[k] = (int)new FileInfo(Path.Combine(dir, $"{k}.vcdiff")).Length;
                xdBare[k] = (int)new FileInfo(Path.Combine(dir, $"{k}.bare")).Length;
            }

            report.AppendLine(CultureInfo.InvariantCulture, $"xdelta3: {xdTime.Elapsed.TotalMilliseconds * 1000 * shells / (2 * sample.Length):F0} µs per run, one process per page pair including its start-up (not comparable to the in-process codec)");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        int[] ours = sample.Select(i => sizes[i]).ToArray();
        report.AppendLine();
        report.AppendLine("| codec | pairs | mean patch (B) | median (B) | p90 (B) | under 2048 B |");
        report.AppendLine("|---|---|---|---|---|---|");
        report.AppendLine(CultureInfo.InvariantCulture, $"| DeltaCodec, all pairs | {pairs.Count} | {sizes.Average():F0} | {Percentile(sizes, 50)} | {Percentile(sizes, 90)} | {sizes.Count(s => s < 2048)} |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| DeltaCodec, sample | {sample.Length} | {ours.Average():F0} | {Percentile(ours, 50)} | {Percentile(ours, 90)} | {ours.Count(s => s < 2048)} |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| xdelta3 {XdeltaOptions}, sample | {sample.Length} | {xdPlain.Average():F0} | {Percentile(xdPlain, 50)} | {Percentile(xdPlain, 90)} | {xdPlain.Count(s => s < 2048)} |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| xdelta3 {XdeltaOptions} -A -n, sample | {sample.Length} | {xdBare.Average():F0} | {Percentile(xdBare, 50)} | {Percentile(xdBare, 90)} | {xdBare.Count(s => s < 2048)} |");
        report.AppendLine(CultureInfo.InvariantCulture, $"Per pair, ours smaller than xdelta3 -A -n in {ours.Zip(xdBare).Count(p => p.First < p.Second)} of {sample.Length}, equal in {ours.Zip(xdBare).Count(p => p.First == p.Second)}");
        report.AppendLine(CultureInfo.InvariantCulture, $"DeltaCodec over all {pairs.Count} pairs: encode {encodeUs:F2} µs/page, decode {decodeUs:F2} µs/page");
        report.AppendLine();
    }

    private static void MeasureCompressors(byte[][] allPages, StringBuilder report)
    {
        // Zero pages and pages of one repeated byte get a state of their own; the codecs see the rest.
        byte[][] pages = allPages.Where(p => p.AsSpan().IndexOfAnyExcept(p[0]) >= 0).ToArray();
        report.AppendLine(CultureInfo.InvariantCulture, $"Compressors on {pages.Length} pages of both snapshots (zero and one-byte pages left out); ratio = plain bytes / compressed bytes over all of them;");
        report.AppendLine("'under 2048' = pages that compress to half a page or less. Times: the best of 3 passes over every page, after warming up.");
        report.AppendLine();
        report.AppendLine("| codec | ratio | mean size (B) | under 2048 B | compress µs/page | decompress µs/page |");
        report.AppendLine("|---|---|---|---|---|---|");
        byte[] buffer = new byte[8192];
        byte[] decoded = new byte[PageSize];
        foreach (CompressionAlgorithm algorithm in Enum.GetValues<CompressionAlgorithm>())
        {
            IPageCompressor codec = PageCompressors.Get(algorithm);
            byte[][] compressed = new byte[pages.Length][];
            for (int i = 0; i < pages.Length; i++)
            {
                Assert.True(codec.TryCompress(pages[i], buffer, out int n));
                compressed[i] = buffer[..n];
                codec.Decompress(compressed[i], decoded);
                Assert.True(decoded.AsSpan().SequenceEqual(pages[i]), $"{algorithm} page {i} does not round-trip");
            }

            double compressUs = Time(() =>
            {
                foreach (byte[] page in pages)
                {
                    codec.TryCompress(page, buffer, out _);
                }
            }) / pages.Length;
            double decompressUs = Time(() =>
            {
                foreach (byte[] c in compressed)
                {
                    codec.Decompress(c, decoded);
                }
            }) / pages.Length;
            AppendRow(report, algorithm.ToString(), pages.Length, compressed.Select(c => c.Length).ToArray(), compressUs, decompressUs);
        }

        // Zstd level 1 beside the level 3 the codec uses, same frame settings, to justify the choice.
        using var level1 = new Compressor(1);
        level1.SetParameter(ZSTD_cParameter.ZSTD_c_experimentalParam2, (int)ZSTD_format_e.ZSTD_f_zstd1_magicless);
        int[] sizes1 = pages.Select(p => level1.TryWrap(p, buffer, out int n) ? n : PageSize).ToArray();
        double level1Us = Time(() =>
        {
            foreach (byte[] page in pages)
            {
                level1.TryWrap(page, buffer, out _);
            }
        }) / pages.Length;
        AppendRow(report, "Zstd level 1 (not used)", pages.Length, sizes1, level1Us, double.NaN);
    }

    private static void AppendRow(StringBuilder report, string name, int count, int[] sizes, double compressUs, double decompressUs) =>
        report.AppendLine(CultureInfo.InvariantCulture,
            $"| {name} | {(double)count * PageSize / sizes.Sum(s => (long)s):F2} | {sizes.Average():F0} | {sizes.Count(s => s <= 2048)} | {compressUs:F2} | {(double.IsNaN(decompressUs) ? "" : decompressUs.ToString("F2", CultureInfo.InvariantCulture))} |");

    /// <summary>
    /// Microseconds for one pass, the best of 3. The warm-up runs long enough (past the runtime's 100 ms tiering delay)
    /// for the code to be at its optimized tier: a few quick passes would time the unoptimized first tier.
    /// </summary>
    private static double Time(Action pass)
    {
        var warmUp = Stopwatch.StartNew();
        do
        {
            pass();
        }
        while (warmUp.ElapsedMilliseconds < WarmUpMilliseconds);

        double best = double.MaxValue;
        for (int i = 0; i < 3; i++)
        {
            var watch = Stopwatch.StartNew();
            pass();
            best = Math.Min(best, watch.Elapsed.TotalMicroseconds);
        }

        return best;
    }

    // Both processes live until disposed and are handed out once their setup is done: no sleep that a slow run outlives.
    private static (PageCollector First, PageCollector Second) SnapshotTwoProcesses()
    {
        using var a = LiveProcess.Python(PythonSetup);
        using var b = LiveProcess.Python(PythonSetup);
        return (Snapshot(a.Id), Snapshot(b.Id));
    }

    private static PageCollector Snapshot(int pid)
    {
        var sink = new PageCollector();
        using MemorySource source = MemorySource.OpenProcess(pid);
        source.CopyTo(sink);
        return sink;
    }

    private static void RunShell(string directory, string script)
    {
        using Process process = Process.Start(new ProcessStartInfo("/bin/sh", [script]) { UseShellExecute = false, WorkingDirectory = directory, RedirectStandardError = true })
            ?? throw new InvalidOperationException("could not start /bin/sh");
        string errors = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"xdelta3 failed: {errors}");
    }

    private static int SharedBytes(byte[] a, byte[] b)
    {
        int same = 0;
        for (int i = 0; i < PageSize; i++)
        {
            same += a[i] == b[i] ? 1 : 0;
        }

        return same;
    }

    private static int Percentile(int[] values, int percent)
    {
        int[] sorted = [.. values.Order()];
        return sorted[Math.Min(sorted.Length - 1, sorted.Length * percent / 100)];
    }
}
