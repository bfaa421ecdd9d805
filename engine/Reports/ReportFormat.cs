using Newtonsoft.Json;
using Newtonsoft.Json.Converters;

namespace DifferenceEngine.Reports;

/// <summary>The file formats a report is written in.</summary>
[JsonConverter(typeof(StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum ReportFormat
{
    /// <summary>A self-contained page: inline CSS and SVG charts, no scripts, nothing fetched.</summary>
    Html,
    /// <summary>The whole model, as described in docs/REPORT-SCHEMA.md (its schemaVersion: <see cref="JsonReport.SchemaVersion"/>).</summary>
    Json,
    /// <summary>One row per domain, with a header row (RFC 4180).</summary>
    Csv,
}
