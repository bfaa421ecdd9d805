using System.Globalization;

namespace DifferenceEngine.Reports;

/// <summary>How reports print numbers for people: invariant culture, binary units, durations in the unit that suits.</summary>
public static class ReportText
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;
    private static readonly string[] Units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

    /// <summary>Bytes in binary units with three significant digits: "12.5 MiB", "0.98 GiB", "-3.00 KiB".</summary>
    public static string Bytes(long bytes)
    {
        double value = Math.Abs((double)bytes);
        int unit = 0;
        // Moving up at 1000 rather than 1024 keeps every number at three digits ("0.98 MiB", not "1000 KiB").
        // At 999.5 and over the number would print as 1000 (no decimals from 100 up): the next unit then.
        while (value >= 999.5 && unit < Units.Length - 1)
        {
            value /= 1024;
            unit++;
        }
        string sign = bytes < 0 ? "-" : "";
        if (unit == 0) return sign + value.ToString("0", C) + " B";
        // Three digits whatever the rounding: 9.996 prints as 10.0, not 10.00; 99.96 as 100, not 100.0.
        string format = value >= 99.95 ? "0" : value >= 9.995 ? "0.0" : "0.00";
        return sign + value.ToString(format, C) + " " + Units[unit];
    }

    /// <summary>A count with thousands separators: "262,144".</summary>
    public static string Count(long value) => value.ToString("#,0", C);

    /// <summary>A percentage with one decimal: "37.5%".</summary>
    public static string Percent(double value) => value.ToString("0.0", C) + "%";

    /// <summary>A duration in the unit that suits it: "850 ns", "12.3 µs", "4.56 ms", "2.35 s", "3m 05s".</summary>
    public static string Duration(TimeSpan t)
    {
        double ns = t.Ticks * 100.0;
        if (t == TimeSpan.Zero) return "0";
        if (ns < 1_000) return ns.ToString("0", C) + " ns";
        // Each unit up to where its rounding would print 1000 (or 60.00 s): "999.9 µs", then "1.00 ms".
        if (ns < 999_950) return (ns / 1_000).ToString(ns < 9_995 ? "0.00" : "0.0", C) + " µs";
        if (ns < 999_950_000) return (ns / 1_000_000).ToString(ns < 9_995_000 ? "0.00" : "0.0", C) + " ms";
        if (t.TotalSeconds < 59.995) return t.TotalSeconds.ToString("0.00", C) + " s";
        long seconds = (long)Math.Round(t.TotalSeconds); // 59.996 s is 1m 00s, not 0m 59s
        return string.Create(C, $"{seconds / 60}m {seconds % 60:00}s");
    }

    /// <summary>
    /// A time per item in nanoseconds, with the digits that matter below 100 ns ("10.2 ns", "850 ns", "12.3 µs"): the
    /// clock's few nanoseconds a page are not rounded to 0.
    /// </summary>
    public static string Nanoseconds(double ns)
    {
        if (!double.IsFinite(ns) || ns <= 0) return "0";
        if (ns < 10) return ns.ToString("0.00", C) + " ns";
        if (ns < 100) return ns.ToString("0.0", C) + " ns";
        if (ns < 1_000) return ns.ToString("0", C) + " ns";
        return Duration(TimeSpan.FromTicks((long)Math.Round(ns / 100)));
    }

    /// <summary>A number as data (JSON, CSV, data-value attributes): invariant, round-trippable.</summary>
    public static string Raw(long value) => value.ToString(C);

    /// <summary>A number as data; "R" so that parsing it back gives the same double.</summary>
    public static string Raw(double value) => value.ToString("R", C);
}
