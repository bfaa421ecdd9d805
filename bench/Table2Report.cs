using System.Globalization;
using System.Text;
using BenchmarkDotNet.Reports;

namespace DifferenceEngine.Bench;

/// <summary>
/// The micro-benchmark results next to the paper's Table 2 and the one-tenth targets, as a Markdown file beside
/// BenchmarkDotNet's own reports (table2.md in the results folder) and on the console.
/// </summary>
internal static class Table2Report
{
    /// <summary>Paper's Table 2 (µs, 2.33 GHz Xeon) per operation, and our target: one tenth of it.</summary>
    private static readonly Dictionary<string, (double Paper, double Target)> Paper = new(StringComparer.Ordinal)
    {
        ["share_pages"] = (6.2, 0.62),
        ["cow_break"] = (25.1, 2.5),
        ["compress_page"] = (29.7, 3.0),
        ["uncompress"] = (10.4, 1.0),
        ["uncompress_fault"] = (10.4, 1.0),
        ["patch_page"] = (338.1, 34),
        ["unpatch"] = (18.6, 1.9),
        ["swap_out_page"] = (48.9, 4.9),
        ["swap_in_page"] = (7151.6, double.NaN),
    };

    public static void Write(IReadOnlyList<Summary> summaries)
    {
        var rows = new List<string[]>();
        var seen = new HashSet<string>();
        foreach (var summary in summaries)
        {
            foreach (var report in summary.Reports)
            {
                var c = report.BenchmarkCase;
                string op = c.Descriptor.WorkloadMethodDisplayInfo.Trim('\'');
                string param = string.Join(", ", c.Parameters.Items.Select(p => p.Value?.ToString()));
                string name = param.Length == 0 ? op : $"{op} ({param})";
                seen.Add(op);
                var stats = report.ResultStatistics;
                string mean = stats is null ? "failed" : Us(stats.Mean);
                string sd = stats is null ? "" : Us(stats.StandardDeviation);
                long? alloc = report.GcStats.GetBytesAllocatedPerOperation(c);
                string paper = "", target = "", met = "";
                // The paper's swap_out_page excludes the disk write: its target applies to the in-memory storage only.
                bool withDisk = op == "swap_out_page" && param == "file";
                if (Paper.TryGetValue(op, out var p))
                {
                    paper = Num(p.Paper);
                    bool hasTarget = !double.IsNaN(p.Target) && !withDisk;
                    target = hasTarget ? Num(p.Target) : "";
                    if (stats is not null && hasTarget) met = stats.Mean / 1000 <= p.Target ? "met" : "NOT met";
                }
                rows.Add([name, paper, target, mean, sd, alloc is null ? "?" : alloc.Value.ToString(CultureInfo.InvariantCulture), met]);
            }
        }
        foreach (string op in new[] { "swap_out_page", "swap_in_page" })
            if (!seen.Contains(op)) rows.Add([op, Num(Paper[op].Paper), double.IsNaN(Paper[op].Target) ? "" : Num(Paper[op].Target), "not measured", "", "", ""]);

        var md = new StringBuilder();
        md.AppendLine("# Micro-benchmarks against the paper's Table 2");
        md.AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"{Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC. Times per page, µs.");
        md.AppendLine();
        md.AppendLine("| operation | paper (µs) | target (µs) | ours mean (µs) | stddev (µs) | allocated (B/page) | target |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|---|");
        foreach (var r in rows) md.AppendLine("| " + string.Join(" | ", r) + " |");
        if (seen.Contains("compress_page"))
        {
            md.AppendLine();
            md.AppendLine("compress_page here stops at the default threshold (0.75 of a page less the blob header), as the engine compresses a page " +
                          "for a codec without page groups. Compare's compress_page (LZ4) goal gives LZ4 a page's room, as the engine's default " +
                          "setting does (page groups on, a Zstd fallback): a page LZ4 cannot shrink enough costs more there.");
        }
        string text = md.ToString();
        Console.WriteLine();
        Console.WriteLine(text);
        string dir = summaries[0].ResultsDirectoryPath;
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "table2.md"), text);
        Console.WriteLine($"Table 2 comparison: {Path.Combine(dir, "table2.md")}");
    }

    private static string Us(double nanoseconds) => (nanoseconds / 1000).ToString(nanoseconds < 10_000 ? "0.000" : "0.0", CultureInfo.InvariantCulture);

    private static string Num(double v) => v.ToString("0.###", CultureInfo.InvariantCulture);
}
