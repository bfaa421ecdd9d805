using System.Globalization;
using DifferenceEngine.Reports;
using DifferenceEngine.Tests.Loading;

namespace DifferenceEngine.Tests.Reports;

/// <summary>Reports replace files as Export-Csv does (read-only ones only when forced), and the CSV says whose and when.</summary>
public class ReportOverwriteTests
{
    [Fact]
    public void AReadOnlyFileIsReplacedOnlyWhenForced()
    {
        if (OperatingSystem.IsWindows()) return;
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        string path = dir.Write("r.csv", "old"u8.ToArray());
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.GroupRead);
        var model = ReportModel.FromHost(host);

        var ex = Assert.Throws<DEException>(() => ReportFile.WriteFile(model, path, ReportFormat.Csv, overwrite: true));
        Assert.Equal("ReportFileReadOnly", ex.ErrorId);
        Assert.Equal(DEErrorKind.PermissionDenied, ex.Kind);
        Assert.Contains("-Force", ex.Message);
        Assert.Equal("old", File.ReadAllText(path));

        ReportFile.WriteFile(model, path, ReportFormat.Csv, overwrite: true, replaceReadOnly: true);
        Assert.StartsWith("Domain,", File.ReadAllText(path));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
    }

    [Fact]
    public void CsvRowsCarryTheHostAndTheTimeOfTheReport()
    {
        using var host = ReportHosts.Build();
        var when = new DateTimeOffset(2026, 12, 3, 7, 45, 0, TimeSpan.FromHours(1));
        var model = ReportModel.FromHost(host, now: when);
        var rows = CsvReportTests.Parse(ReportHosts.Render(model, ReportFormat.Csv));

        Assert.Equal(["Host", "Time"], rows[0].TakeLast(2));
        Assert.Equal(host.Domains.Count, rows.Count - 1);
        foreach (var row in rows.Skip(1))
        {
            Assert.Equal(host.Name, row[^2]);
            Assert.Equal(when, DateTimeOffset.Parse(row[^1], CultureInfo.InvariantCulture));
        }
    }
}
