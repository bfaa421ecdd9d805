using DifferenceEngine.Domains;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Reports;

/// <summary>The HTML report's look: its style sheet and the colour of each page state and fault kind.</summary>
internal static class HtmlStyle
{
    /// <summary>A page state as the report shows it: a label, the Get-DEPageStats property, colours, the count.</summary>
    internal sealed record StateColumn(string Label, string Field, string Color, string TextColor, Func<DomainPageStats, long> Pages)
    {
        public StateColumn(PageState state, string field, string color, string textColor, Func<DomainPageStats, long> pages)
            : this(state.ToString(), field, color, textColor, pages) { }
    }

    /// <summary>
    /// The page states a report shows: every state, but Untouched and References (Xen's pages that patches were made
    /// against) only when some domain of the report has such pages (most hosts have neither, and the table is wide
    /// enough).
    /// </summary>
    public static StateColumn[] StatesOf(IReadOnlyList<DomainReport> domains) =>
        States.Where(st => st.Field is not (nameof(DomainPageStats.UntouchedPages) or nameof(DomainPageStats.ReferencePages))
            || domains.Any(d => st.Pages(d.Stats) > 0)).ToArray();

    /// <summary>The page states in the order of the table's columns and the bars' segments.</summary>
    public static readonly StateColumn[] States =
    [
        new(PageState.Private, nameof(DomainPageStats.PrivatePages), "#52667a", "#ffffff", s => s.PrivatePages),
        new(PageState.Zero, nameof(DomainPageStats.ZeroPages), "#d5dbe2", "#334155", s => s.ZeroPages),
        new(PageState.Uniform, nameof(DomainPageStats.UniformPages), "#93c5e6", "#1e3a52", s => s.UniformPages),
        new(PageState.Shared, nameof(DomainPageStats.SharedPages), "#2e9e6b", "#ffffff", s => s.SharedPages),
        new(PageState.Patched, nameof(DomainPageStats.PatchedPages), "#8b6cc1", "#ffffff", s => s.PatchedPages),
        new(PageState.Compressed, nameof(DomainPageStats.CompressedPages), "#e39a3b", "#ffffff", s => s.CompressedPages),
        new(PageState.Swapped, nameof(DomainPageStats.SwappedPages), "#c8553d", "#ffffff", s => s.SwappedPages),
        // A Xen domain's pages that patches were made against, held by the pager as they are: the page counts add up to
        // Pages with them (docs/REPORT-SCHEMA.md).
        new("References", nameof(DomainPageStats.ReferencePages), "#6b7fa3", "#ffffff", s => s.ReferencePages),
        // Zero pages the guest never populated: not guest memory (an empty domain's pages until written).
        new("Untouched", nameof(DomainPageStats.UntouchedPages), "#eef1f4", "#64748b", s => s.UntouchedPages),
    ];

    /// <summary>A fault kind's colour: that of the page state the fault leaves.</summary>
    public static string FaultColor(FaultKind kind) => kind switch
    {
        FaultKind.ZeroFill => "#8795a5",
        FaultKind.CopyOnWrite => "#2e9e6b",
        FaultKind.PatternFill => "#5fa8d8",
        FaultKind.Unpatch => "#8b6cc1",
        FaultKind.Decompress => "#e39a3b",
        FaultKind.SwapIn => "#c8553d",
        _ => "#3b6fb6",
    };

    public const string GuestColor = "#8795a5";
    public const string UsedColor = "#3b6fb6";
    public const string SavedColor = "#2e9e6b";

    // No '<' or '&' anywhere in it: the page stays well-formed XML as well as HTML.
    public const string Css = """
        :root { --ink: #1f2933; --muted: #5f6c7b; --line: #e4e8ee; --bg: #f3f5f8; --card: #ffffff; --good: #23875a; --blue: #3b6fb6; }
        * { box-sizing: border-box; }
        html { -webkit-text-size-adjust: 100%; }
        body { margin: 0; background: var(--bg); color: var(--ink);
               font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
        .top { background: linear-gradient(135deg, #1d3557 0%, #2f5f8f 100%); color: #fff; padding: 26px 0 64px; }
        .wrap { max-width: 1280px; margin: 0 auto; padding: 0 22px; }
        .eyebrow { font-size: 12px; letter-spacing: .12em; text-transform: uppercase; color: #a9c3de; margin: 0 0 4px; }
        h1 { margin: 0; font-size: 26px; font-weight: 650; letter-spacing: -.01em; }
        .meta { margin: 8px 0 0; color: #d3e0ee; font-size: 13px; }
        .meta span + span::before { content: "\00B7"; margin: 0 8px; color: #8fb0d1; }
        main.wrap { margin-top: -44px; padding-bottom: 36px; }
        .cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 16px; }
        .card, section { background: var(--card); border-radius: 12px;
               box-shadow: 0 1px 2px rgba(16, 24, 40, .06), 0 2px 8px rgba(16, 24, 40, .06); }
        .card { padding: 16px 18px 14px; }
        .card .label { color: var(--muted); font-size: 11.5px; font-weight: 600; text-transform: uppercase; letter-spacing: .07em; }
        .card .value { font-size: 30px; font-weight: 700; margin-top: 4px; font-variant-numeric: tabular-nums; letter-spacing: -.02em; }
        .card .sub { color: var(--muted); font-size: 12.5px; margin-top: 2px; }
        .card.good .value { color: var(--good); }
        .gauge { height: 6px; border-radius: 3px; background: #e8edf2; margin-top: 10px; overflow: hidden; }
        .gauge div { height: 100%; background: linear-gradient(90deg, #34b37a, #23875a); border-radius: 3px; }
        section { padding: 18px 20px 20px; margin-top: 18px; }
        h2 { font-size: 16px; margin: 0 0 4px; font-weight: 650; }
        .lead { color: var(--muted); font-size: 13px; margin: 0 0 14px; }
        .scroll { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; font-size: 13px; }
        th, td { padding: 6px 5px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
        th { color: var(--muted); font-weight: 600; font-size: 12px;
             background: #f8fafc; border-bottom: 1px solid #d9dee5; }
        th.text, td.text { text-align: left; }
        td.name { max-width: 210px; overflow: hidden; text-overflow: ellipsis; line-height: 1.25; }
        td.name .domain { font-weight: 650; }
        td.name .sub { display: block; font-size: 11.5px; color: var(--muted); }
        tbody tr:hover { background: #f4f8fd; }
        tfoot td { font-weight: 650; border-top: 2px solid #d9dee5; border-bottom: none; }
        tfoot tr.part td { font-weight: 400; border-top: 1px solid #e6e9ee; }
        tfoot td.part .sub { display: block; font-size: 11.5px; color: var(--muted); }
        td.zero { color: #b3bcc6; }
        td.saved { color: var(--good); font-weight: 600; }
        .chip { display: inline-block; font-size: 10.5px; font-weight: 600; padding: 0 5px; border-radius: 8px; margin-left: 2px;
                background: #f1f3f6; color: #a7b0bb; text-decoration: line-through; }
        .chip.on { background: #e3f4ec; color: #1f7a50; text-decoration: none; }
        .status { font-weight: 600; color: #1f7a50; }
        .status.warn { color: #b4472f; }
        .legend { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 0 0 12px; font-size: 12.5px; color: var(--muted); }
        .swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px; vertical-align: -1px; margin-right: 6px; }
        th .swatch { width: 9px; height: 9px; border-radius: 2px; margin-right: 4px; vertical-align: 0; }
        .swatch.line { height: 3px; vertical-align: 3px; border-radius: 2px; }
        .swatch.dash { height: 0; border-top: 2px dashed #8795a5; vertical-align: 3px; border-radius: 0; }
        svg.chart { display: block; width: 100%; height: auto; overflow: visible; }
        svg text { font-family: inherit; }
        .note { color: var(--muted); background: #f8fafc; border: 1px dashed #c8d0d9; border-radius: 10px; padding: 22px;
                text-align: center; font-size: 13.5px; }
        .note strong { color: var(--ink); }
        .panels { display: grid; grid-template-columns: 1fr 1fr; gap: 14px 22px; }
        .panel h3 { font-size: 13.5px; margin: 0 0 2px; font-weight: 650; }
        .panel p { margin: 0 0 6px; color: var(--muted); font-size: 12px; }
        .grid { display: grid; grid-template-columns: repeat(3, 1fr); gap: 18px 26px; }
        .grid h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .07em; color: var(--muted); margin: 0 0 6px; }
        table.kv td { padding: 4px 0; }
        table.kv td:first-child { text-align: left; color: var(--muted); }
        table.kv td.long { white-space: normal; max-width: 200px; overflow-wrap: anywhere; }
        .scope { margin: 14px 0 0; padding: 10px 14px; background: #fff8e6; border: 1px solid #f3dfaa; border-radius: 10px;
                 font-size: 13px; color: #6b5314; }
        footer { color: var(--muted); font-size: 12px; margin-top: 22px; text-align: center; }
        @media (max-width: 900px) { .cards { grid-template-columns: 1fr 1fr; } .panels, .grid { grid-template-columns: 1fr; } }
        @media print { body { background: #fff; } .top { padding-bottom: 20px; } main.wrap { margin-top: 12px; }
                       .card, section { box-shadow: none; border: 1px solid var(--line); break-inside: avoid; } }
        """;
}
