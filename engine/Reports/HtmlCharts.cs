using System.Globalization;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Reports;

/// <summary>
/// The HTML report's inline SVG charts: page states per domain (stacked bars), host memory over time
/// (lines from the engine's history) and fault latency (bars over a logarithmic time axis). Drawn in
/// viewBox units and scaled to the page's width by CSS.
/// </summary>
internal static class HtmlCharts
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;
    private const string Axis = "#9aa5b1";
    private const string Grid = "#e8ecf1";
    private const string Label = "#5f6c7b";

    /// <summary>One 100% bar per domain, a segment per page state, with its size and savings at the end.</summary>
    public static void StateBars(TextWriter w, IReadOnlyList<DomainReport> domains)
    {
        const double width = 1000, nameRight = 168, barX = 178, barRight = 790, rowH = 32, barH = 20;
        const double barW = barRight - barX;
        double height = domains.Count * rowH + 4;
        w.Write($"<svg class=\"chart\" id=\"state-bars\" viewBox=\"0 0 {N(width)} {N(height)}\" role=\"img\" aria-label=\"Page states per domain\">\n");
        for (int i = 0; i < domains.Count; i++)
        {
            var s = domains[i].Stats;
            string name = HtmlReport.E(s.Domain);
            double y = i * rowH + (rowH - barH) / 2;
            double mid = y + barH / 2;
            w.Write($"<g data-domain=\"{name}\"><title>{name}</title>");
            w.Write($"<text x=\"{N(nameRight)}\" y=\"{N(mid)}\" dy=\"0.35em\" text-anchor=\"end\" font-size=\"13\" font-weight=\"600\" fill=\"#1f2933\">{HtmlReport.E(Shorten(s.Domain, 22))}</text>");
            w.Write($"<clipPath id=\"bar-clip-{i}\"><rect x=\"{N(barX)}\" y=\"{N(y)}\" width=\"{N(barW)}\" height=\"{N(barH)}\" rx=\"5\" /></clipPath>");
            w.Write($"<rect x=\"{N(barX)}\" y=\"{N(y)}\" width=\"{N(barW)}\" height=\"{N(barH)}\" rx=\"5\" fill=\"#eef1f5\" />");
            long total = HtmlStyle.States.Sum(st => st.Pages(s));
            w.Write($"<g clip-path=\"url(#bar-clip-{i})\">");
            double x = barX;
            foreach (var st in HtmlStyle.States)
            {
                long pages = st.Pages(s);
                if (pages == 0 || total == 0) continue;
                double share = (double)pages / total;
                double segW = barW * share;
                w.Write($"<rect x=\"{N(x)}\" y=\"{N(y)}\" width=\"{N(segW)}\" height=\"{N(barH)}\" fill=\"{st.Color}\" data-state=\"{st.Label}\" data-pages=\"{pages}\">");
                w.Write($"<title>{name}: {st.Label} {ReportText.Count(pages)} pages ({ReportText.Percent(100 * share)})</title></rect>");
                if (segW >= 44)
                    w.Write($"<text x=\"{N(x + segW / 2)}\" y=\"{N(mid)}\" dy=\"0.35em\" text-anchor=\"middle\" font-size=\"11\" font-weight=\"600\" fill=\"{st.TextColor}\">{ReportText.Percent(100 * share)}</text>");
                x += segW;
            }
            w.Write("</g>");
            w.Write($"<text x=\"{N(barRight + 12)}\" y=\"{N(mid)}\" dy=\"0.35em\" font-size=\"12.5\" fill=\"{Label}\">{HtmlReport.E(ReportText.Bytes(s.GuestBytes))}");
            w.Write($"<tspan fill=\"#23875a\" font-weight=\"600\" dx=\"8\">{HtmlReport.E(ReportText.Percent(s.SavingsPercent))} saved</tspan></text></g>\n");
        }
        w.Write("</svg>\n");
    }

    /// <summary>Guest memory, memory used and memory saved over the samples' times.</summary>
    public static void History(TextWriter w, IReadOnlyList<StatsSample> all)
    {
        const double width = 1000, height = 300, left = 78, right = 18, top = 14, bottom = 34;
        var samples = Thin(all, 1500);
        double plotW = width - left - right, plotH = height - top - bottom;
        var t0 = samples[0].Time;
        double span = (samples[^1].Time - t0).TotalSeconds;
        // Samples taken in the same instant still spread out, in order.
        Func<int, double> xOf = span > 0
            ? i => left + plotW * (samples[i].Time - t0).TotalSeconds / span
            : i => left + plotW * i / (samples.Count - 1);
        double yMaxData = samples.Max(s => Math.Max(s.GuestBytes, Math.Max(s.MemoryUsedBytes, s.SavedBytes)));
        double yMinData = Math.Min(0, samples.Min(s => s.SavedBytes));
        var (yMin, yMax, step) = ByteTicks(yMinData, Math.Max(yMaxData, 4096));
        double YOf(double v) => top + plotH * (1 - (v - yMin) / (yMax - yMin));

        w.Write($"<svg class=\"chart\" id=\"history-chart\" viewBox=\"0 0 {N(width)} {N(height)}\" role=\"img\" aria-label=\"Memory over time\">\n");
        for (double v = yMin; v <= yMax + step / 2; v += step)
        {
            double y = YOf(v);
            w.Write($"<line x1=\"{N(left)}\" x2=\"{N(width - right)}\" y1=\"{N(y)}\" y2=\"{N(y)}\" stroke=\"{(v == 0 ? Axis : Grid)}\" stroke-width=\"1\" />");
            w.Write($"<text x=\"{N(left - 8)}\" y=\"{N(y)}\" dy=\"0.35em\" text-anchor=\"end\" font-size=\"11.5\" fill=\"{Label}\">{HtmlReport.E(ReportText.Bytes((long)v))}</text>\n");
        }
        const int xTicks = 5;
        for (int k = 0; k <= xTicks; k++)
        {
            double x = left + plotW * k / xTicks;
            // The clock time at the start, then how long after it: short spans stay readable.
            string label = span <= 0 ? $"sample {Math.Round((samples.Count - 1.0) * k / xTicks) + 1}"
                : k == 0 ? t0.ToString(span >= 86_400 ? "yyyy-MM-dd HH:mm" : "HH:mm:ss", C)
                : "+" + Elapsed(span * k / xTicks);
            string anchor = k == 0 ? "start" : k == xTicks ? "end" : "middle";
            w.Write($"<line x1=\"{N(x)}\" x2=\"{N(x)}\" y1=\"{N(top + plotH)}\" y2=\"{N(top + plotH + 5)}\" stroke=\"{Axis}\" />");
            w.Write($"<text x=\"{N(x)}\" y=\"{N(height - 10)}\" text-anchor=\"{anchor}\" font-size=\"11.5\" fill=\"{Label}\">{HtmlReport.E(label)}</text>\n");
        }
        string Points(Func<StatsSample, long> value) =>
            string.Join(" ", samples.Select((s, i) => $"{N(xOf(i))},{N(YOf(value(s)))}"));
        string saved = Points(s => s.SavedBytes);
        w.Write($"<path d=\"M{N(xOf(0))},{N(YOf(0))} L{saved.Replace(" ", " L")} L{N(xOf(samples.Count - 1))},{N(YOf(0))} Z\" fill=\"{HtmlStyle.SavedColor}\" fill-opacity=\"0.14\" />\n");
        w.Write($"<polyline points=\"{Points(s => s.GuestBytes)}\" fill=\"none\" stroke=\"{HtmlStyle.GuestColor}\" stroke-width=\"1.6\" stroke-dasharray=\"6 4\" data-series=\"GuestBytes\" />\n");
        w.Write($"<polyline points=\"{saved}\" fill=\"none\" stroke=\"{HtmlStyle.SavedColor}\" stroke-width=\"2.4\" stroke-linejoin=\"round\" data-series=\"SavedBytes\" />\n");
        w.Write($"<polyline points=\"{Points(s => s.MemoryUsedBytes)}\" fill=\"none\" stroke=\"{HtmlStyle.UsedColor}\" stroke-width=\"2.4\" stroke-linejoin=\"round\" data-series=\"MemoryUsedBytes\" />\n");
        var last = samples[^1];
        int n = samples.Count - 1;
        foreach (var (value, color, label) in new[]
                 {
                     (last.MemoryUsedBytes, HtmlStyle.UsedColor, "Memory used"),
                     (last.SavedBytes, HtmlStyle.SavedColor, "Saved"),
                 })
            w.Write($"<circle cx=\"{N(xOf(n))}\" cy=\"{N(YOf(value))}\" r=\"4\" fill=\"{color}\" stroke=\"#fff\" stroke-width=\"1.5\"><title>{label}: {HtmlReport.E(ReportText.Bytes(value))}</title></circle>\n");
        w.Write("</svg>\n");
    }

    /// <summary>The latency axis all fault panels share, so their bars line up: 1-2-5 buckets over whole decades.</summary>
    public sealed class LatencyScale
    {
        // The histogram's bounds come rounded to 100 ns (TimeSpan ticks): finer buckets would be noise.
        private const double FinestNs = 100;
        private LatencyScale(double[] edges) => Edges = edges;

        /// <summary>Bucket bounds in nanoseconds: bucket i holds latencies in (Edges[i], Edges[i+1]].</summary>
        public double[] Edges { get; }
        public double Low => Edges[0];
        public double High => Edges[^1];

        public static LatencyScale For(IEnumerable<FaultDistribution> faults)
        {
            var bounds = faults.SelectMany(f => f.Buckets).Where(b => b.Count > 0).Select(b => Math.Max(Ns(b.UpperBound), FinestNs)).ToArray();
            double lowest = bounds.Length == 0 ? FinestNs : bounds.Min();
            double highest = bounds.Length == 0 ? FinestNs : bounds.Max();
            // The axis starts where the bucket of the lowest bound starts, and ends on a whole decade.
            double low = OneTwoFive(lowest / 3, lowest * 2).Where(e => e < lowest * 0.999).Max();
            double high = Math.Pow(10, Math.Ceiling(Math.Log10(highest * 0.999)));
            high = Math.Max(high, Math.Pow(10, Math.Ceiling(Math.Log10(low * 0.999)) + 2)); // two decades at least
            return new LatencyScale(OneTwoFive(low, high).ToArray());
        }

        /// <summary>1, 2, 5, 10, 20, 50, ... from <paramref name="low"/> to <paramref name="high"/>, both included.</summary>
        private static IEnumerable<double> OneTwoFive(double low, double high)
        {
            for (int k = (int)Math.Floor(Math.Log10(low)) - 1; k <= (int)Math.Ceiling(Math.Log10(high)) + 1; k++)
                foreach (double m in new[] { 1.0, 2.0, 5.0 })
                {
                    double e = m * Math.Pow(10, k);
                    if (e >= low * 0.999 && e <= high * 1.001) yield return e;
                }
        }

        /// <summary>Counts per bucket of <paramref name="f"/>: each histogram bucket goes by its upper bound.</summary>
        public long[] Bin(FaultDistribution f)
        {
            var counts = new long[Edges.Length - 1];
            foreach (var b in f.Buckets)
            {
                double u = Math.Max(Ns(b.UpperBound), FinestNs);
                int i = Array.FindIndex(Edges, 1, e => e >= u * 0.999);
                counts[(i < 0 ? Edges.Length : i) - 1] += b.Count;
            }
            return counts;
        }

        public double Fraction(double ns) =>
            (Math.Log10(Math.Clamp(ns, Low, High)) - Math.Log10(Low)) / (Math.Log10(High) - Math.Log10(Low));
    }

    /// <summary>One fault kind's latency histogram, with its p50 and p99 marked.</summary>
    public static void Latency(TextWriter w, FaultDistribution f, LatencyScale scale)
    {
        const double width = 540, height = 180, left = 46, right = 14, top = 18, bottom = 30;
        double plotW = width - left - right, plotH = height - top - bottom;
        var counts = scale.Bin(f);
        long max = Math.Max(1, counts.Max());
        double yMax = NiceCeiling(max);
        string color = HtmlStyle.FaultColor(f.Kind);
        w.Write($"<svg class=\"chart\" viewBox=\"0 0 {N(width)} {N(height)}\" role=\"img\" aria-label=\"{f.Kind} latency\">\n");
        for (int k = 0; k <= 2; k++)
        {
            double v = yMax * k / 2;
            double y = top + plotH * (1 - v / yMax);
            w.Write($"<line x1=\"{N(left)}\" x2=\"{N(width - right)}\" y1=\"{N(y)}\" y2=\"{N(y)}\" stroke=\"{(k == 0 ? Axis : Grid)}\" />");
            w.Write($"<text x=\"{N(left - 6)}\" y=\"{N(y)}\" dy=\"0.35em\" text-anchor=\"end\" font-size=\"11\" fill=\"{Label}\">{Compact(v)}</text>\n");
        }
        for (int i = 0; i < counts.Length; i++)
        {
            if (counts[i] == 0) continue;
            double x0 = left + plotW * scale.Fraction(scale.Edges[i]);
            double x1 = left + plotW * scale.Fraction(scale.Edges[i + 1]);
            double h = plotH * counts[i] / yMax;
            w.Write($"<rect x=\"{N(x0 + 1)}\" y=\"{N(top + plotH - h)}\" width=\"{N(Math.Max(1, x1 - x0 - 2))}\" height=\"{N(h)}\" rx=\"2\" fill=\"{color}\" data-upper-ns=\"{N(scale.Edges[i + 1])}\" data-count=\"{counts[i]}\">");
            w.Write($"<title>{ReportText.Count(counts[i])} faults of {Duration(scale.Edges[i])} to {Duration(scale.Edges[i + 1])}</title></rect>\n");
        }
        for (double d = Math.Pow(10, Math.Ceiling(Math.Log10(scale.Low * 0.999))); d <= scale.High * 1.001; d *= 10)
        {
            double x = left + plotW * scale.Fraction(d);
            w.Write($"<line x1=\"{N(x)}\" x2=\"{N(x)}\" y1=\"{N(top + plotH)}\" y2=\"{N(top + plotH + 4)}\" stroke=\"{Axis}\" />");
            w.Write($"<text x=\"{N(x)}\" y=\"{N(height - 9)}\" text-anchor=\"middle\" font-size=\"11\" fill=\"{Label}\">{Decade(d)}</text>\n");
        }
        double p50 = left + plotW * scale.Fraction(Ns(f.P50));
        double p99 = left + plotW * scale.Fraction(Ns(f.P99));
        Marker(w, p50, top, plotH, "p50", p99 - p50 < 30 ? "end" : "middle");
        Marker(w, p99, top, plotH, "p99", p99 - p50 < 30 ? "start" : "middle");
        w.Write("</svg>\n");
    }

    private static void Marker(TextWriter w, double x, double top, double plotH, string label, string anchor)
    {
        w.Write($"<line x1=\"{N(x)}\" x2=\"{N(x)}\" y1=\"{N(top)}\" y2=\"{N(top + plotH)}\" stroke=\"#1f2933\" stroke-width=\"1\" stroke-dasharray=\"3 3\" opacity=\"0.55\" />");
        w.Write($"<text x=\"{N(x)}\" y=\"{N(top - 5)}\" text-anchor=\"{anchor}\" font-size=\"10.5\" font-weight=\"600\" fill=\"#1f2933\">{label}</text>\n");
    }

    private static double Ns(TimeSpan t) => t.Ticks * 100.0;

    private static string Duration(double ns) => HtmlReport.E(ReportText.Duration(TimeSpan.FromTicks((long)Math.Round(ns / 100))));

    /// <summary>At most <paramref name="max"/> samples, evenly picked, the first and the last kept.</summary>
    private static IReadOnlyList<StatsSample> Thin(IReadOnlyList<StatsSample> samples, int max)
    {
        if (samples.Count <= max) return samples;
        return Enumerable.Range(0, max).Select(i => samples[(int)Math.Round((double)i * (samples.Count - 1) / (max - 1))]).ToArray();
    }

    /// <summary>An axis from below <paramref name="min"/> to above <paramref name="max"/> in steps of 1, 2, 2.5 or 5 binary units.</summary>
    private static (double Min, double Max, double Step) ByteTicks(double min, double max)
    {
        double range = max - min;
        double unit = 1;
        while (range / unit >= 1024 * 4) unit *= 1024;
        double step = NiceStep(range / unit / 4) * unit;
        return (Math.Floor(min / step) * step, Math.Ceiling(max * 1.02 / step) * step, step);
    }

    private static double NiceStep(double raw)
    {
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        foreach (double m in new[] { 1, 2, 2.5, 5, 10 })
            if (raw <= m * magnitude) return m * magnitude;
        return 10 * magnitude;
    }

    private static double NiceCeiling(long value)
    {
        double step = NiceStep(value / 2.0);
        return Math.Ceiling(value / step) * step;
    }

    /// <summary>An offset on the time axis: "0.4 s", "45 s", "12 min", "1.5 h", "3.2 d".</summary>
    private static string Elapsed(double seconds) =>
        seconds < 10 ? seconds.ToString("0.#", C) + " s"
        : seconds < 120 ? seconds.ToString("0", C) + " s"
        : seconds < 7200 ? (seconds / 60).ToString("0.#", C) + " min"
        : seconds < 172_800 ? (seconds / 3600).ToString("0.#", C) + " h"
        : (seconds / 86_400).ToString("0.#", C) + " d";

    /// <summary>A decade on the latency axis: "100 ns", "1 µs", "10 µs", "1 ms", "1 s".</summary>
    private static string Decade(double ns) =>
        ns < 1e3 ? ns.ToString("0", C) + " ns"
        : ns < 1e6 ? (ns / 1e3).ToString("0", C) + " µs"
        : ns < 1e9 ? (ns / 1e6).ToString("0", C) + " ms"
        : (ns / 1e9).ToString("0", C) + " s";

    private static string Compact(double v) =>
        v >= 1e6 ? (v / 1e6).ToString("0.#", C) + "M" : v >= 1e4 ? (v / 1e3).ToString("0.#", C) + "k" : v.ToString("#,0", C);

    /// <summary>At most <paramref name="max"/> characters as a reader counts them (text elements: a surrogate pair or a
    /// letter with its accents is never cut in two), the last an ellipsis when cut.</summary>
    private static string Shorten(string s, int max)
    {
        var text = new System.Globalization.StringInfo(s);
        return text.LengthInTextElements <= max ? s : text.SubstringByTextElements(0, max - 1) + "…";
    }

    /// <summary>A coordinate: invariant, at most two decimals.</summary>
    private static string N(double v) => v.ToString("0.##", C);
}
