using System.Text.RegularExpressions;
using DifferenceEngine.Reports;
using Newtonsoft.Json.Linq;

namespace DifferenceEngine.Tests.Reports;

/// <summary>docs/REPORT-SCHEMA.md documents exactly the fields the JSON report writes.</summary>
public class ReportSchemaDocTests
{
    [Fact]
    public void EveryFieldIsDocumentedAndEveryDocumentedFieldIsWritten()
    {
        using var host = ReportHosts.Build();
        var json = JObject.Parse(ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Json));
        var written = new SortedSet<string>(StringComparer.Ordinal);
        Collect(json, "", written);

        string doc = File.ReadAllText(Path.Combine(RepoRoot(), "docs", "REPORT-SCHEMA.md"));
        // Table rows name a field by its full path: | `host.store.allocatedBytes` | ...
        var documented = new SortedSet<string>(
            Regex.Matches(doc, @"^\|\s*`([A-Za-z0-9_.\[\]]+)`\s*\|", RegexOptions.Multiline).Select(m => m.Groups[1].Value),
            StringComparer.Ordinal);

        Assert.Empty(written.Except(documented));
        Assert.Empty(documented.Except(written));
        Assert.Contains("\"schemaVersion\": 2", doc);
    }

    /// <summary>Paths of every field: objects by name, array elements as "[]".</summary>
    private static void Collect(JToken token, string path, ISet<string> paths)
    {
        switch (token)
        {
            case JObject o:
                foreach (var p in o.Properties())
                {
                    string child = path.Length == 0 ? p.Name : $"{path}.{p.Name}";
                    paths.Add(child);
                    Collect(p.Value, child, paths);
                }
                break;
            case JArray a:
                foreach (var item in a) Collect(item, path + "[]", paths);
                break;
        }
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Directory.Build.props"))) return dir.FullName;
        throw new InvalidOperationException("No Directory.Build.props above " + AppContext.BaseDirectory);
    }
}
