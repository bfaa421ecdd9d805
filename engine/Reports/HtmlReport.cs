using System.Globalization;
using System.Net;
using System.Text;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Reports;

/// <summary>
/// Writes a <see cref="ReportModel"/> as one self-contained HTML page: inline CSS and inline SVG charts,
/// no script, nothing fetched (its Content-Security-Policy forbids it). Every number a test or a script
/// may want carries its exact value in data-* attributes: <c>&lt;td data-domain="web1"
/// data-field="SharedPages" data-value="123"&gt;</c> for the domain table (field names as in
/// Get-DEPageStats), <c>data-field="summary.SavedBytes"</c> for the summary tiles, <c>data-total</c> for the table's totals. Every name is escaped, and the
/// page is well-formed XML too.
/// </summary>
public static class HtmlReport
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    public static void Write(ReportModel model, TextWriter w)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(w);
        string title = $"Memory report: {model.HostName}";
        w.Write("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n");
        w.Write("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\" />\n");
        // Nothing may be loaded from anywhere: the report is read offline, perhaps far from the host.
        w.Write("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\" />\n");
        w.Write($"<meta name=\"generator\" content=\"DifferenceEngine {E(model.GeneratorVersion)}\" />\n");
        w.Write($"<title>{E(title)}</title>\n<style>\n{HtmlStyle.Css}\n</style>\n</head>\n<body>\n");
        WriteHeader(w, model);
        w.Write("<main class=\"wrap\">\n");
        WriteSummary(w, model);
        WriteDomainTable(w, model);
        WriteStateChart(w, model);
        WriteHistoryChart(w, model);
        WriteFaultCharts(w, model);
        WriteHostDetails(w, model);
        w.Write($"<footer>DifferenceEngine {E(model.GeneratorVersion)} · report schema {JsonReport.SchemaVersion} · ");
        w.Write("per-domain and host-wide aggregates only: no page contents, nor anything computed from them.</footer>\n");
        w.Write("</main>\n</body>\n</html>\n");
        w.Flush();
    }

    private static void WriteHeader(TextWriter w, ReportModel m)
    {
        var mc = m.Machine;
        w.Write("<header class=\"top\"><div class=\"wrap\">\n<p class=\"eyebrow\">DifferenceEngine memory report</p>\n");
        w.Write($"<h1 id=\"host-name\">Host {E(m.HostName)}</h1>\n<p class=\"meta\">");
        w.Write($"<span id=\"host-kind\">{(m.HostKind == "Xen" ? "Xen dom0 service" : "Embedded host")}</span>");
        w.Write($"<span id=\"generated\" data-value=\"{E(m.GeneratedAt.ToString("O", C))}\">Generated {E(m.GeneratedAt.ToString("yyyy-MM-dd HH:mm:ss zzz", C))}</span>");
        w.Write($"<span>{E(mc.Name)}: {mc.ProcessorCount} cores, {E(ReportText.Bytes(mc.MemoryBytes))}</span>");
        w.Write($"<span>{E(mc.OperatingSystem)}</span><span>{E(mc.Runtime)}</span>");
        w.Write($"<span id=\"engine-state\">Engine {E(m.Engine.State.ToString().ToLowerInvariant())}");
        if (m.Engine.State != EngineState.Stopped) w.Write($", every {E(ReportText.Duration(m.Engine.Interval))}");
        w.Write("</span></p>\n</div></header>\n");
    }

    private static void WriteSummary(TextWriter w, ReportModel m)
    {
        var s = m.HostStats;
        var sum = m.Summary;
        w.Write("<div class=\"cards\" id=\"summary\">\n");
        string untouched = sum.UntouchedBytes == 0 ? "" : $"; {ReportText.Bytes(sum.UntouchedBytes)} never populated, not counted";
        Card(w, "Guest memory", "summary.GuestBytes", sum.GuestBytes, ReportText.Bytes(sum.GuestBytes),
            $"{Plural(m.Domains.Count, "domain")}, {Plural(sum.GuestBytes / PageGeometry.PageSize, "page")}{untouched}", null);
        Card(w, "Memory used", "summary.MemoryUsedBytes", sum.MemoryUsedBytes, ReportText.Bytes(sum.MemoryUsedBytes),
            string.Join(", ", sum.Parts.Select(p => $"{PartLabel(p.Part).ToLowerInvariant()} {ReportText.Bytes(p.Bytes)}")), null);
        Card(w, "Saved", "summary.SavedBytes", sum.SavedBytes, ReportText.Bytes(sum.SavedBytes),
            // Host-wide counts: on a report of some domains they are said to be the host's, not the selection's.
            $"{ReportText.Count(s.SharedFrames)} shared frames, {Plural(s.ScanPasses, "scan pass", "scan passes")}" +
            (m.AllDomains ? "" : " (host-wide)"), "good");
        w.Write($"<div class=\"card good\" data-field=\"summary.SavingsPercent\" data-value=\"{ReportText.Raw(sum.SavingsPercent)}\">");
        w.Write($"<div class=\"label\">Savings</div><div class=\"value\">{E(ReportText.Percent(sum.SavingsPercent))}</div>");
        w.Write("<div class=\"sub\">of guest memory needs no machine memory</div>");
        double gauge = Math.Clamp(sum.SavingsPercent, 0, 100);
        w.Write($"<div class=\"gauge\"><div style=\"width:{gauge.ToString("0.##", C)}%\"></div></div></div>\n");
        w.Write("</div>\n");
        if (!m.AllDomains)
        {
            w.Write($"<p class=\"scope\" id=\"scope\">This report lists {Plural(m.Domains.Count, "selected domain")} of the host's {s.Domains}: ");
            w.Write("the summary above is theirs (the bytes charged to their pages); the host-wide costs (metadata, the store's slack), ");
            w.Write("the history and the fault latency cover the whole host.</p>\n");
        }
    }

    /// <summary>How the report names a part of memory used.</summary>
    private static string PartLabel(string part) => part switch
    {
        UsedPart.Domains => "Domains",
        UsedPart.StoreSlack => "Store slack",
        UsedPart.Metadata => "Metadata",
        UsedPart.Uncharged => "Uncharged",
        _ => part,
    };

    /// <summary>What a host-wide row of the domain table holds.</summary>
    private static string PartDetail(string part) => part switch
    {
        UsedPart.StoreSlack => "the store's slabs not filled by blobs",
        UsedPart.Metadata => "the engine's tables: P2M, frames, sharing and similarity, store, shared blobs, page groups, pass buffers, swap, crash-journal index (by part under Host details)",
        UsedPart.Uncharged => "frames and blobs charged to no page: in flight while the snapshot was taken",
        _ => "",
    };

    private static void Card(TextWriter w, string label, string field, long value, string shown, string sub, string? cls)
    {
        w.Write($"<div class=\"card{(cls is null ? "" : " " + cls)}\" data-field=\"{field}\" data-value=\"{ReportText.Raw(value)}\">");
        w.Write($"<div class=\"label\">{E(label)}</div><div class=\"value\">{E(shown)}</div><div class=\"sub\">{E(sub)}</div></div>\n");
    }

    private static void WriteDomainTable(TextWriter w, ReportModel m)
    {
        var states = HtmlStyle.StatesOf(m.Domains);
        Section(w, "domains", "Domains", "Pages per state and the memory each domain uses and saves, as Get-DEPageStats shows them. "
            + "A shared frame is charged to its users in equal parts; patched and compressed pages are charged their stored bytes. "
            + "Untouched pages were never populated by the guest: not guest memory, never counted as saved."
            + (m.AllDomains ? " Host-wide costs are charged to no domain and have lines of their own, so the totals are the summary's." : ""));
        if (m.Domains.Count == 0)
        {
            EmptyNote(w, "no-domains", "No domains.", null);
            return;
        }
        w.Write("<div class=\"scroll\"><table id=\"domain-table\">\n<thead><tr><th class=\"text\">Domain</th><th>Pages</th>");
        foreach (var st in states) w.Write($"<th><span class=\"swatch\" style=\"background:{st.Color}\"></span>{st.Label}</th>");
        w.Write("<th>Guest</th><th>Used</th><th>Saved</th><th>Savings</th><th class=\"text\">Mechanisms</th></tr></thead>\n<tbody>\n");
        foreach (var d in m.Domains)
        {
            var s = d.Stats;
            string name = E(s.Domain);
            w.Write($"<tr data-domain=\"{name}\" data-domain-id=\"{s.DomainId}\">");
            // The name, and under it the trust group and the status: narrower than three columns.
            string statusClass = s.Status == "Running" ? "status" : "status warn";
            w.Write($"<td class=\"text name\" title=\"{name}\"><span class=\"domain\" data-domain=\"{name}\" data-field=\"Domain\" data-value=\"{name}\">{name}</span>");
            w.Write($"<span class=\"sub\"><span data-domain=\"{name}\" data-field=\"TrustGroup\" data-value=\"{E(s.TrustGroup)}\" title=\"trust group\">{E(s.TrustGroup)}</span>");
            w.Write($" · <span class=\"{statusClass}\" data-domain=\"{name}\" data-field=\"Status\" data-value=\"{E(s.Status)}\">{E(s.Status)}</span></span></td>");
            CountCell(w, name, "PageCount", s.PageCount);
            foreach (var st in states) CountCell(w, name, st.Field, st.Pages(s));
            BytesCell(w, name, "GuestBytes", s.GuestBytes, null);
            BytesCell(w, name, "BytesUsed", s.BytesUsed, null);
            BytesCell(w, name, "BytesSaved", s.BytesSaved, "saved");
            w.Write($"<td data-domain=\"{name}\" data-field=\"SavingsPercent\" data-value=\"{ReportText.Raw(s.SavingsPercent)}\">{E(ReportText.Percent(s.SavingsPercent))}</td>");
            w.Write("<td class=\"text\">");
            Chip(w, name, "SharingEnabled", s.SharingEnabled, "share", "sharing");
            Chip(w, name, "PatchingEnabled", s.PatchingEnabled, "patch", "patching");
            string algorithm = s.CompressionAlgorithm ?? "zip";
            Chip(w, name, "CompressionEnabled", s.CompressionEnabled, algorithm, $"compression ({algorithm})");
            w.Write("</td></tr>\n");
        }
        w.Write("</tbody>\n");
        var t = m.Totals;
        var sum = m.Summary;
        w.Write("<tfoot>");
        int stateColumns = states.Length;
        // Host-wide costs charged to no domain, on lines of their own: with them the Used column adds up to the tiles.
        foreach (var part in sum.Parts.Where(p => p.Part != UsedPart.Domains))
        {
            // The name and what it is span the page and guest columns, which a host-wide cost has none of.
            w.Write($"<tr class=\"part\" data-part=\"{part.Part}\"><td class=\"text part\" colspan=\"{stateColumns + 3}\"><strong>{E(PartLabel(part.Part))}</strong>");
            w.Write($"<span class=\"sub\">{E(PartDetail(part.Part))}</span></td>");
            w.Write($"<td data-part=\"{part.Part}\" data-field=\"BytesUsed\" data-value=\"{ReportText.Raw(part.Bytes)}\">{E(ReportText.Bytes(part.Bytes))}</td>");
            w.Write($"<td data-part=\"{part.Part}\" data-field=\"BytesSaved\" data-value=\"{ReportText.Raw(-part.Bytes)}\">{E(ReportText.Bytes(-part.Bytes))}</td><td colspan=\"2\"></td></tr>\n");
        }
        w.Write($"<tr class=\"total\"><td class=\"text\">Total ({Plural(t.Domains, "domain")})</td>");
        TotalCell(w, "PageCount", t.PageCount, ReportText.Count(t.PageCount), null);
        foreach (var st in states)
        {
            long pages = m.Domains.Sum(d => st.Pages(d.Stats));
            TotalCell(w, st.Field, pages, ReportText.Count(pages), pages == 0 ? "zero" : null);
        }
        TotalCell(w, "GuestBytes", sum.GuestBytes, ReportText.Bytes(sum.GuestBytes), null);
        TotalCell(w, "BytesUsed", sum.MemoryUsedBytes, ReportText.Bytes(sum.MemoryUsedBytes), null);
        TotalCell(w, "BytesSaved", sum.SavedBytes, ReportText.Bytes(sum.SavedBytes), "saved");
        w.Write($"<td data-total=\"SavingsPercent\" data-value=\"{ReportText.Raw(sum.SavingsPercent)}\">{E(ReportText.Percent(sum.SavingsPercent))}</td><td></td></tr></tfoot>\n");
        w.Write("</table></div>\n</section>\n");
    }

    private static void CountCell(TextWriter w, string name, string field, long value) =>
        w.Write($"<td{(value == 0 ? " class=\"zero\"" : "")} data-domain=\"{name}\" data-field=\"{field}\" data-value=\"{ReportText.Raw(value)}\">{ReportText.Count(value)}</td>");

    private static void BytesCell(TextWriter w, string name, string field, long value, string? cls) =>
        w.Write($"<td{(cls is null ? "" : $" class=\"{cls}\"")} data-domain=\"{name}\" data-field=\"{field}\" data-value=\"{ReportText.Raw(value)}\" title=\"{ReportText.Count(value)} bytes\">{E(ReportText.Bytes(value))}</td>");

    private static void TotalCell(TextWriter w, string field, long value, string shown, string? cls) =>
        w.Write($"<td{(cls is null ? "" : $" class=\"{cls}\"")} data-total=\"{field}\" data-value=\"{ReportText.Raw(value)}\">{E(shown)}</td>");

    private static void Chip(TextWriter w, string name, string field, bool on, string label, string mechanism) =>
        w.Write($"<span class=\"chip{(on ? " on" : "")}\" data-domain=\"{name}\" data-field=\"{field}\" data-value=\"{(on ? "True" : "False")}\" title=\"{E(mechanism)} {(on ? "on" : "off")}\">{E(label)}</span>");

    private static void WriteStateChart(TextWriter w, ReportModel m)
    {
        var states = HtmlStyle.StatesOf(m.Domains);
        Section(w, "page-states", "Page states per domain",
            "Where each domain's pages live, as a share of its pages. Only Private pages hold a frame of their own.");
        if (m.Domains.Count == 0)
        {
            EmptyNote(w, "no-states", "No domains.", null);
            return;
        }
        w.Write("<div class=\"legend\">");
        foreach (var st in states) w.Write($"<span><span class=\"swatch\" style=\"background:{st.Color}\"></span>{st.Label}</span>");
        w.Write("</div>\n");
        HtmlCharts.StateBars(w, m.Domains);
        w.Write("</section>\n");
    }

    private static void WriteHistoryChart(TextWriter w, ReportModel m)
    {
        Section(w, "history", "Savings over time", "Host-wide, from the stats sample the background engine takes after each pass; "
            + "the last point is this report's" + (m.AllDomains ? "." : $" for the whole host ({Plural(m.HostStats.Domains, "domain")}), not the summary's selection."));
        if (m.History.Count < 2)
        {
            EmptyNote(w, "no-history", "No history yet: start the engine.",
                $"Start-DEEngine records a sample after every pass; this host has {Plural(m.History.Count, "sample")}.");
            return;
        }
        w.Write("<div class=\"legend\">");
        w.Write($"<span><span class=\"swatch dash\"></span>Guest memory</span>");
        w.Write($"<span><span class=\"swatch line\" style=\"background:{HtmlStyle.UsedColor}\"></span>Memory used</span>");
        w.Write($"<span><span class=\"swatch\" style=\"background:{HtmlStyle.SavedColor}\"></span>Saved</span>");
        w.Write("</div>\n");
        HtmlCharts.History(w, m.History);
        w.Write("</section>\n");
    }

    private static void WriteFaultCharts(TextWriter w, ReportModel m)
    {
        Section(w, "faults", "Fault latency", "How long servicing each kind of fault took: faults per latency bucket, on a logarithmic time axis.");
        var withFaults = m.Faults.Where(f => f.Count > 0).ToArray();
        if (withFaults.Length == 0)
        {
            EmptyNote(w, "no-faults", "No faults serviced yet.",
                "Faults come when guests touch pages that are zero, uniform, shared, patched, compressed or swapped out.");
            return;
        }
        var scale = HtmlCharts.LatencyScale.For(withFaults);
        w.Write("<div class=\"panels\">\n");
        foreach (var f in withFaults)
        {
            w.Write($"<div class=\"panel\" data-fault=\"{f.Kind}\" data-count=\"{ReportText.Raw(f.Count)}\">");
            w.Write($"<h3><span class=\"swatch\" style=\"background:{HtmlStyle.FaultColor(f.Kind)}\"></span>{f.Kind}</h3>");
            w.Write($"<p>{E(Plural(f.Count, "fault"))} · p50 {E(ReportText.Duration(f.P50))} · p99 {E(ReportText.Duration(f.P99))} · mean {E(ReportText.Duration(f.Mean))}</p>");
            HtmlCharts.Latency(w, f, scale);
            w.Write("</div>\n");
        }
        w.Write("</div>\n</section>\n");
    }

    private static void WriteHostDetails(TextWriter w, ReportModel m)
    {
        var s = m.HostStats;
        var e = m.Engine;
        var p = m.Policy;
        Section(w, "host", "Host details", "Get-DEHostStats, Get-DEEngine and the host policy at report time.");
        w.Write("<div class=\"grid\">\n");
        KeyValues(w, "Memory", [
            ("Memory limit", s.MemoryLimitBytes is long l ? ReportText.Bytes(l) : "none"),
            ("Frames in use", $"{ReportText.Count(s.FramesInUse)} ({ReportText.Bytes(s.FrameBytes)})"),
            ("Frames free", s.MemoryLimitBytes is null ? $"{ReportText.Count(s.FramesFree)} (no limit)" : ReportText.Count(s.FramesFree)),
            ("Shared frames", ReportText.Count(s.SharedFrames)),
            ("Metadata", ReportText.Bytes(s.MetadataBytes)),
            ("Metadata peak", ReportText.Bytes(s.MetadataPeakBytes)),
            ("Never populated", ReportText.Bytes(s.UntouchedBytes)),
            ("Out-of-memory events", ReportText.Count(s.OutOfMemoryEvents)),
        ]);
        KeyValues(w, "Metadata by part", [.. s.Metadata.Named().Select(p => (MetadataPartLabel(p.Part), ReportText.Bytes(p.Bytes))),
            ("Total", ReportText.Bytes(s.MetadataBytes))]);
        KeyValues(w, "Store and swap", [
            ("Store allocated", ReportText.Bytes(s.StoreAllocatedBytes)),
            ("Store holds", $"{ReportText.Bytes(s.StoreStoredBytes)} in {Plural(s.StoreBlobs, "blob")}"),
            ("Fragmentation", ReportText.Percent(100 * s.StoreFragmentation)),
            ("Swap", s.SwapPath is null ? "none" : $"{ReportText.Bytes(s.SwapUsedBytes)} of {ReportText.Bytes(s.SwapBytes)}"),
            ("Page-outs", s.SwapPath is null ? "-" : $"{ReportText.Count(s.PageOuts)} (p50 {ReportText.Duration(s.PageOutP50)}, p99 {ReportText.Duration(s.PageOutP99)})"),
            ("Swap write failures", ReportText.Count(s.SwapWriteFailures)),
        ]);
        KeyValues(w, "Engine", [
            ("State", e.State.ToString()),
            ("Interval", e.State == EngineState.Stopped ? "-" : ReportText.Duration(e.Interval)),
            ("Passes (background)", ReportText.Count(e.PassesRun)),
            ("Scan passes (all)", ReportText.Count(s.ScanPasses)),
            ("Last pass", e.LastPass is { } lp ? $"{lp.ToString("HH:mm:ss", C)}, took {ReportText.Duration(e.LastPassDuration)}" : "-"),
            ("Samples", ReportText.Count(e.Samples)), // the engine's own (JSON's engine.samples), not the chart's points
            ("Last error", e.LastError ?? "none"),
        ]);
        w.Write("</div>\n<div class=\"grid\" style=\"margin-top:18px\">\n");

        w.Write("<div><h3>Faults</h3><table id=\"fault-table\"><thead><tr><th class=\"text\">Kind</th><th>Count</th><th>p50</th><th>p99</th><th>Mean</th></tr></thead><tbody>\n");
        foreach (var f in m.Faults)
            w.Write($"<tr data-fault=\"{f.Kind}\"><td class=\"text\">{f.Kind}</td><td data-field=\"Count\" data-value=\"{ReportText.Raw(f.Count)}\">{ReportText.Count(f.Count)}</td>"
                + $"<td>{E(ReportText.Duration(f.P50))}</td><td>{E(ReportText.Duration(f.P99))}</td><td>{E(ReportText.Duration(f.Mean))}</td></tr>\n");
        w.Write("</tbody></table></div>\n");

        w.Write("<div><h3>Engine time</h3><table id=\"engine-time\"><thead><tr><th class=\"text\">Mechanism</th><th>Busy</th><th>Pages</th><th>Per page</th></tr></thead><tbody>\n");
        foreach (var t in s.EngineTime)
            w.Write($"<tr><td class=\"text\">{E(t.Mechanism)}</td><td>{E(ReportText.Duration(t.BusyTime))}</td><td>{ReportText.Count(t.Pages)}</td>"
                + $"<td data-field=\"NanosecondsPerPage\" data-value=\"{ReportText.Raw(t.NanosecondsPerPage)}\">{E(t.Pages == 0 ? "-" : ReportText.Nanoseconds(t.NanosecondsPerPage))}</td></tr>\n");
        w.Write("</tbody></table></div>\n");

        KeyValues(w, "Host policy", [
            ("Similarity keys (k)", p.SimilarityKeys.ToString(C)),
            ("Blocks per key (s)", p.SimilarityBlocksPerKey.ToString(C)),
            ("Candidates (c)", p.SimilarityCandidates.ToString(C)),
            ("Similarity seed", p.SimilaritySeed.ToString(C)),
            ("Reclaim watermarks", p.LowWatermark is { } low && p.HighWatermark is { } high
                ? $"{ReportText.Percent(100 * low)} to {ReportText.Percent(100 * high)} free"
                : "n/a on Xen (the pager writes to swap over its memory limit)"),
            ("Compaction above", p.CompactionThreshold is { } compaction
                ? ReportText.Percent(100 * compaction) + " fragmentation"
                : "n/a on Xen (the pager has no slab store)"),
        ]);
        w.Write("</div>\n</section>\n");
    }

    private static void Section(TextWriter w, string id, string title, string lead) =>
        w.Write($"<section id=\"{id}\">\n<h2>{E(title)}</h2>\n<p class=\"lead\">{E(lead)}</p>\n");

    /// <summary>What a section shows when it has nothing to show; ends the section.</summary>
    private static void EmptyNote(TextWriter w, string id, string headline, string? detail)
    {
        w.Write($"<p class=\"note\" id=\"{id}\"><strong>{E(headline)}</strong>");
        if (detail is not null) w.Write($"<br />{E(detail)}");
        w.Write("</p>\n</section>\n");
    }

    private static void KeyValues(TextWriter w, string title, (string Key, string Value)[] rows)
    {
        w.Write($"<div><h3>{E(title)}</h3><table class=\"kv\"><tbody>\n");
        foreach (var (key, value) in rows)
            w.Write($"<tr><td>{E(key)}</td><td{(value.Length > 28 ? " class=\"long\"" : "")}>{E(value)}</td></tr>\n");
        w.Write("</tbody></table></div>\n");
    }

    /// <summary>A <see cref="Stats.MetadataParts"/> part's name as the report shows it.</summary>
    private static string MetadataPartLabel(string part) => part switch
    {
        "P2M" => "P2M entries",
        "Frames" => "Frame pool",
        "SharingStable" => "Sharing index, stable",
        "SharingUnstable" => "Sharing index, unstable",
        "Similarity" => "Similarity table",
        "Store" => "Store bookkeeping",
        "SharedBlobs" => "Compressed shared frames",
        "PageGroups" => "Page groups",
        "PassBuffers" => "Pass buffers",
        "Swap" => "Swap slots",
        "Qemu" => "QEMU journal index, refault counts",
        _ => part,
    };

    private static string Plural(long n, string one, string? many = null) =>
        $"{ReportText.Count(n)} {(n == 1 ? one : many ?? one + "s")}";

    /// <summary>
    /// Text for HTML content and attribute values alike: &lt; &gt; &amp; and both quotes escaped; tab, line feed and
    /// carriage return as character references (in an attribute a parser would make them spaces); characters neither
    /// HTML nor XML allows (other C0 controls, U+FFFE and U+FFFF, lone surrogates) replaced by U+FFFD. The names the
    /// engine keeps hold none of these (NameRules); text from elsewhere (a Xen domain's name, a machine's) may.
    /// </summary>
    internal static string E(string? text)
    {
        if (string.IsNullOrEmpty(text)) return "";
        var html = new StringBuilder(text.Length + 16);
        int run = 0; // start of the run of characters HtmlEncode takes as they are
        for (int i = 0; i < text.Length; i++)
        {
            char ch = text[i];
            if (char.IsHighSurrogate(ch) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                i++; // a pair: one character, left to HtmlEncode
                continue;
            }
            string? instead = ch switch
            {
                '\t' => "&#9;",
                '\n' => "&#10;",
                '\r' => "&#13;",
                < ' ' or '\uFFFE' or '\uFFFF' => "\uFFFD",
                _ when char.IsSurrogate(ch) => "\uFFFD",
                _ => null,
            };
            if (instead is null) continue;
            html.Append(WebUtility.HtmlEncode(text[run..i])).Append(instead);
            run = i + 1;
        }
        return html.Append(WebUtility.HtmlEncode(text[run..])).ToString();
    }
}
