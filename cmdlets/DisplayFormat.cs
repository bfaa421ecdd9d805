using System.Globalization;

namespace DifferenceEngine.Commands;

/// <summary>Human-readable sizes and durations for the format views (called from DifferenceEngine.format.ps1xml).</summary>
public static class DisplayFormat
{
    private static readonly string[] Units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

    /// <summary>Bytes in binary units with three significant digits, e.g. "12.5 MiB", "-3.00 KiB", "0.98 MiB".</summary>
    public static string Bytes(long bytes)
    {
        double value = Math.Abs((double)bytes);
        int unit = 0;
        // Moving up at 1000 rather than 1024 keeps every number at three digits ("0.98 MiB", not "1000 KiB").
        while (value >= 1000 && unit < Units.Length - 1)
        {
            value /= 1024;
            unit++;
        }
        string sign = bytes < 0 ? "-" : "";
        if (unit == 0) return string.Create(CultureInfo.InvariantCulture, $"{sign}{value:0} B");
        string format = value >= 100 ? "0" : value >= 10 ? "0.0" : "0.00";
        return sign + value.ToString(format, CultureInfo.InvariantCulture) + " " + Units[unit];
    }

    /// <summary>Bytes in binary units, or "none" for a null limit.</summary>
    public static string Bytes(long? bytes) => bytes is long b ? Bytes(b) : "none";

    /// <summary>A duration in the unit that suits it: "850 ns", "12.3 µs", "4.56 ms", "2.35 s", "3m 05s".</summary>
    public static string Duration(TimeSpan t)
    {
        double ns = t.Ticks * 100.0;
        var c = CultureInfo.InvariantCulture;
        if (t == TimeSpan.Zero) return "0";
        if (ns < 1_000) return ns.ToString("0", c) + " ns";
        if (ns < 1_000_000) return (ns / 1_000).ToString(ns < 10_000 ? "0.00" : "0.0", c) + " µs";
        if (ns < 1_000_000_000) return (ns / 1_000_000).ToString(ns < 10_000_000 ? "0.00" : "0.0", c) + " ms";
        if (t.TotalSeconds < 60) return t.TotalSeconds.ToString("0.00", c) + " s";
        return string.Create(c, $"{(int)t.TotalMinutes}m {t.Seconds:00}s");
    }

    /// <summary>A percentage with one decimal, e.g. "37.5%".</summary>
    public static string Percent(double percent) => percent.ToString("0.0", CultureInfo.InvariantCulture) + "%";

    /// <summary>A count with thousands separators, e.g. "1,234,567".</summary>
    public static string Count(double value) => value.ToString("#,0", CultureInfo.InvariantCulture);

    /// <summary>The first bytes of a page in hex, e.g. "7f454c46 02010100 … (4096 bytes)".</summary>
    public static string Preview(byte[]? bytes, int count = 16)
    {
        if (bytes is null) return "";
        int n = Math.Min(count, bytes.Length);
        var sb = new System.Text.StringBuilder(n * 2 + n / 4 + 16);
        for (int i = 0; i < n; i++)
        {
            if (i > 0 && i % 4 == 0) sb.Append(' ');
            sb.Append(bytes[i].ToString("x2", CultureInfo.InvariantCulture));
        }
        if (n < bytes.Length) sb.Append(" …");
        return sb.ToString();
    }
}
