using System.Globalization;
using System.Text;
using DifferenceEngine.Reports;

namespace DifferenceEngine.Tests.Reports;

public class CsvReportTests
{
    [Fact]
    public void OneRowPerDomainWithPageStats()
    {
        using var host = ReportHosts.Build();
        string csv = ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Csv);
        var rows = Parse(csv);

        Assert.Equal(CsvReport.ColumnNames, rows[0]);
        Assert.Equal(host.Domains.Count + 1, rows.Count);
        foreach (var d in host.Domains)
        {
            var expected = host.GetPageStats(d);
            var row = rows.Skip(1).Single(r => r[0] == d.Name);
            string Cell(string column) => row[rows[0].IndexOf(column)];
            foreach (var (field, value) in ReportHosts.Numbers(expected))
                Assert.Equal(Convert.ToDouble(value, CultureInfo.InvariantCulture), double.Parse(Cell(field), CultureInfo.InvariantCulture));
            Assert.Equal(expected.TrustGroup, Cell("TrustGroup"));
            Assert.Equal(expected.SharingEnabled ? "True" : "False", Cell("SharingEnabled"));
        }
    }

    [Fact]
    public void FollowsRfc4180()
    {
        using var host = ReportHosts.Build();
        string csv = ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Csv);
        Assert.EndsWith("\r\n", csv);
        Assert.Equal(host.Domains.Count + 1, csv.Split("\r\n").Length - 1);
        // The name holds a comma and quotes: quoted, its quotes doubled.
        Assert.Contains("\"db<1> & \"\"main\"\", 'eu'\",", csv);
        Assert.Contains(ReportHosts.AwkwardName, Parse(csv).Select(r => r[0]));
    }

    [Theory]
    [InlineData("plain", "plain")]
    [InlineData("a,b", "\"a,b\"")]
    [InlineData("say \"hi\"", "\"say \"\"hi\"\"\"")]
    [InlineData("two\r\nlines", "\"two\r\nlines\"")]
    [InlineData("", "")]
    public void QuotesOnlyWhatNeedsIt(string field, string expected) => Assert.Equal(expected, CsvReport.Quote(field));

    /// <summary>An RFC 4180 reader written here, independent of the writer: quoted fields, doubled quotes, CRLF rows.</summary>
    internal static List<List<string>> Parse(string csv)
    {
        var rows = new List<List<string>>();
        var row = new List<string>();
        var field = new StringBuilder();
        bool quoted = false;
        for (int i = 0; i < csv.Length; i++)
        {
            char c = csv[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < csv.Length && csv[i + 1] == '"') { field.Append('"'); i++; }
                else if (c == '"') quoted = false;
                else field.Append(c);
            }
            else if (c == '"') quoted = true;
            else if (c == ',') { row.Add(field.ToString()); field.Clear(); }
            else if (c == '\r' && i + 1 < csv.Length && csv[i + 1] == '\n')
            {
                row.Add(field.ToString());
                field.Clear();
                rows.Add(row);
                row = [];
                i++;
            }
            else field.Append(c);
        }
        Assert.True(field.Length == 0 && row.Count == 0, "the CSV ends with CRLF");
        return rows;
    }
}
