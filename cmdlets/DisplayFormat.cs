using System.Globalization;
using System.Management.Automation;

namespace DifferenceEngine.Commands;

/// <summary>Human-readable sizes and durations for the format views (called from DifferenceEngine.format.ps1xml).</summary>
public static class DisplayFormat
{
    /// <summary>
    /// A moment in local time as <paramref name="format"/> gives it, from a DateTimeOffset or DateTime, or from the
    /// string one arrives as after a trip through remoting (CLIXML keeps no DateTimeOffset: its invariant text); "-" for
    /// null or text that is no time.
    /// </summary>
    public static string Time(object? value, string format) => (value is PSObject ps ? ps.BaseObject : value) switch
    {
        DateTimeOffset t => t.ToLocalTime().ToString(format, CultureInfo.CurrentCulture),
        DateTime t => t.ToLocalTime().ToString(format, CultureInfo.CurrentCulture),
        string text when DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.None, out var t) =>
            t.ToLocalTime().ToString(format, CultureInfo.CurrentCulture),
        _ => "-",
    };

    /// <summary>Bytes in binary units with three significant digits, e.g. "12.5 MiB" (the engine's report formatting).</summary>
    public static string Bytes(long bytes) => Reports.ReportText.Bytes(bytes);

    /// <summary>Bytes in binary units, or "none" for a null limit.</summary>
    public static string Bytes(long? bytes) => bytes is long b ? Bytes(b) : "none";

    /// <summary>A duration in the unit that suits it: "850 ns", "12.3 µs", "4.56 ms", "2.35 s", "3m 05s".</summary>
    public static string Duration(TimeSpan t) => Reports.ReportText.Duration(t);

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
