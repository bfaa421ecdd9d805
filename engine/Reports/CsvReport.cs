using DifferenceEngine.Stats;

namespace DifferenceEngine.Reports;

/// <summary>
/// Writes one row per domain of a <see cref="ReportModel"/> under a header row, per RFC 4180: fields
/// separated by commas, lines ended by CRLF, a field quoted (and its quotes doubled) when it holds a
/// comma, a quote, CR or LF. The columns are the properties of Get-DEPageStats, so Import-Csv gives
/// objects that compare with it directly, then Host (the host's name) and Time (when the report's data was
/// taken, ISO 8601 with offset), so the reports of many hosts and days can be put together; numbers are
/// invariant (no thousands separators), booleans True/False as Export-Csv writes them.
/// </summary>
public static class CsvReport
{
    /// <summary>The columns, in order, and how each is read from a domain's stats.</summary>
    private static readonly (string Name, Func<DomainPageStats, string> Value)[] Columns =
    [
        ("Domain", s => Inert(s.Domain)),
        ("DomainId", s => ReportText.Raw(s.DomainId)),
        ("Status", s => s.Status),
        ("TrustGroup", s => Inert(s.TrustGroup)),
        ("PageCount", s => ReportText.Raw(s.PageCount)),
        ("PrivatePages", s => ReportText.Raw(s.PrivatePages)),
        ("ZeroPages", s => ReportText.Raw(s.ZeroPages)),
        ("UntouchedPages", s => ReportText.Raw(s.UntouchedPages)),
        ("UniformPages", s => ReportText.Raw(s.UniformPages)),
        ("SharedPages", s => ReportText.Raw(s.SharedPages)),
        ("PatchedPages", s => ReportText.Raw(s.PatchedPages)),
        ("CompressedPages", s => ReportText.Raw(s.CompressedPages)),
        ("SwappedPages", s => ReportText.Raw(s.SwappedPages)),
        ("GuestBytes", s => ReportText.Raw(s.GuestBytes)),
        ("BytesUsed", s => ReportText.Raw(s.BytesUsed)),
        ("BytesSaved", s => ReportText.Raw(s.BytesSaved)),
        ("SavingsPercent", s => ReportText.Raw(s.SavingsPercent)),
        ("StoredBytes", s => ReportText.Raw(s.StoredBytes)),
        ("SharingEnabled", s => s.SharingEnabled ? "True" : "False"),
        ("PatchingEnabled", s => s.PatchingEnabled ? "True" : "False"),
        ("CompressionEnabled", s => s.CompressionEnabled ? "True" : "False"),
        ("CompressionAlgorithm", s => s.CompressionAlgorithm ?? ""),
    ];

    /// <summary>The columns after the page stats: the same on every row of a report.</summary>
    private static readonly (string Name, Func<ReportModel, string> Value)[] ReportColumns =
    [
        ("Host", m => Inert(m.HostName)),
        ("Time", m => m.GeneratedAt.ToString("o", System.Globalization.CultureInfo.InvariantCulture)),
    ];

    /// <summary>The header row's column names, in order.</summary>
    public static IReadOnlyList<string> ColumnNames { get; } = Columns.Select(c => c.Name).Concat(ReportColumns.Select(c => c.Name)).ToArray();

    public static void Write(ReportModel model, TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(writer);
        WriteRow(writer, ColumnNames);
        string[] reportValues = ReportColumns.Select(c => c.Value(model)).ToArray();
        foreach (var d in model.Domains) WriteRow(writer, Columns.Select(c => c.Value(d.Stats)).Concat(reportValues));
        writer.Flush();
    }

    /// <summary>
    /// A name as a spreadsheet shows it, never runs it: one that begins with = + - @, a tab or a carriage return gets a
    /// leading apostrophe (OWASP's advice against CSV injection). Names only: numbers are the engine's own.
    /// </summary>
    public static string Inert(string name) =>
        name.Length > 0 && name[0] is '=' or '+' or '-' or '@' or '\t' or '\r' ? "'" + name : name;

    /// <summary>A field as RFC 4180 wants it: as is, or in quotes with its quotes doubled.</summary>
    public static string Quote(string field) =>
        field.AsSpan().IndexOfAny(",\"\r\n") < 0 ? field : "\"" + field.Replace("\"", "\"\"") + "\"";

    private static void WriteRow(TextWriter writer, IEnumerable<string> fields)
    {
        writer.Write(string.Join(',', fields.Select(Quote)));
        writer.Write("\r\n");
    }
}
