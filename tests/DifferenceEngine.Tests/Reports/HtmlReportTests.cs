using System.Globalization;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using DifferenceEngine.Hosting;
using DifferenceEngine.Reports;

namespace DifferenceEngine.Tests.Reports;

public class HtmlReportTests
{
    [Fact]
    public void DomainCellsEqualPageStats()
    {
        using var host = ReportHosts.Build();
        var page = Parse(ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Html));
        var cells = DomainCells(page);

        foreach (var d in host.Domains)
        {
            var expected = host.GetPageStats(d);
            foreach (var (field, value) in ReportHosts.Numbers(expected))
                Assert.Equal(Convert.ToDouble(value, CultureInfo.InvariantCulture),
                    double.Parse(cells[(d.Name, field)], CultureInfo.InvariantCulture));
            Assert.Equal(d.Name, cells[(d.Name, "Domain")]);
            Assert.Equal(expected.TrustGroup, cells[(d.Name, "TrustGroup")]);
            Assert.Equal(expected.Status, cells[(d.Name, "Status")]);
            Assert.Equal("True", cells[(d.Name, "SharingEnabled")]);
        }
    }

    [Fact]
    public void SummaryShowsHostStats()
    {
        using var host = ReportHosts.Build();
        var page = Parse(ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Html));
        var expected = host.GetStats();
        string Summary(string field) => page.Descendants().Single(e => (string?)e.Attribute("data-field") == field).Attribute("data-value")!.Value;
        Assert.Equal(expected.GuestBytes.ToString(CultureInfo.InvariantCulture), Summary("summary.GuestBytes"));
        Assert.Equal(expected.MemoryUsedBytes.ToString(CultureInfo.InvariantCulture), Summary("summary.MemoryUsedBytes"));
        Assert.Equal(expected.SavedBytes.ToString(CultureInfo.InvariantCulture), Summary("summary.SavedBytes"));
        Assert.Equal(expected.SavingsPercent, double.Parse(Summary("summary.SavingsPercent"), CultureInfo.InvariantCulture));
    }

    [Fact]
    public void EscapesEveryName()
    {
        using var host = ReportHosts.Build();
        string html = ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Html);
        Assert.DoesNotContain("db<1>", html);
        Assert.DoesNotContain("\"main\"", html);
        Assert.Contains("db&lt;1&gt; &amp; &quot;main&quot;, &#39;eu&#39;", html);
        // Parsed back, the name is exactly the domain's.
        Assert.Contains((ReportHosts.AwkwardName, "SharedPages"), DomainCells(Parse(html)).Keys);
    }

    /// <summary>
    /// Text no name of the engine's holds but other text may (a Xen domain's name): what XML refuses is replaced, and the
    /// controls a parser would turn into spaces in an attribute are references; the text parses back as XML.
    /// </summary>
    [Theory]
    [InlineData("a\tb\nc\rd", "a&#9;b&#10;c&#13;d", "a\tb\nc\rd")]
    [InlineData("x\uFFFEy\uFFFFz", "x\uFFFDy\uFFFDz", "x\uFFFDy\uFFFDz")]
    [InlineData("ctl\u0001x", "ctl\uFFFDx", "ctl\uFFFDx")]
    [InlineData("pair \U0001F600 <b>", "pair &#128512; &lt;b&gt;", "pair \U0001F600 <b>")]
    public void TextIsWellFormedXmlWhateverItHolds(string text, string html, string parsed)
    {
        string escaped = HtmlReport.E(text);
        Assert.Equal(html, escaped);
        var element = XElement.Parse($"<p title=\"{escaped}\">{escaped}</p>");
        Assert.Equal(parsed, element.Attribute("title")!.Value);
        Assert.Equal(parsed.Replace("\r", "\n", StringComparison.Ordinal), element.Value.Replace("\r", "\n", StringComparison.Ordinal));
    }

    /// <summary>Lone surrogates (built here: a theory's data would not carry them through its serialization) are replaced.</summary>
    [Fact]
    public void LoneSurrogatesAreReplaced()
    {
        string text = "lone " + (char)0xD800 + " and " + (char)0xDC00;
        Assert.Equal("lone \uFFFD and \uFFFD", HtmlReport.E(text));
    }

    [Fact]
    public void IsSelfContained()
    {
        using var host = ReportHosts.Build();
        string html = ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Html);
        foreach (string banned in new[] { "http:", "https:", "<script", "<link", "<img", "<iframe", "@import", "src=", "@font-face" })
            Assert.DoesNotContain(banned, html, StringComparison.OrdinalIgnoreCase);
        // url() only for the page's own clip paths.
        Assert.All(Regex.Matches(html, @"url\(([^)]*)\)").Select(m => m.Groups[1].Value), target => Assert.StartsWith("#", target));
        Assert.Contains("Content-Security-Policy", html);
    }

    [Fact]
    public void StateBarsAddUpToEachDomainsPages()
    {
        using var host = ReportHosts.Build();
        var page = Parse(ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Html));
        var bars = page.Descendants().Single(e => (string?)e.Attribute("id") == "state-bars");
        foreach (var d in host.Domains)
        {
            var group = bars.Elements().Single(g => (string?)g.Attribute("data-domain") == d.Name);
            var segments = group.Descendants().Where(e => e.Attribute("data-state") is not null).ToArray();
            Assert.Equal(d.PageCount, segments.Sum(s => long.Parse(s.Attribute("data-pages")!.Value, CultureInfo.InvariantCulture)));
            var stats = host.GetPageStats(d);
            Assert.Equal(stats.SharedPages, segments.Where(s => s.Attribute("data-state")!.Value == "Shared")
                .Sum(s => long.Parse(s.Attribute("data-pages")!.Value, CultureInfo.InvariantCulture)));
        }
    }

    [Fact]
    public void HistoryChartOrANoteToStartTheEngine()
    {
        using var fresh = new DEHost();
        fresh.CreateDomain("only", 16 * 4096);
        string empty = ReportHosts.Render(ReportModel.FromHost(fresh), ReportFormat.Html);
        Assert.Contains("No history yet: start the engine", empty);
        Assert.DoesNotContain("id=\"history-chart\"", empty);
        // One sample and the report's own point make a line.
        fresh.RecordSample();
        Assert.Contains("id=\"history-chart\"", ReportHosts.Render(ReportModel.FromHost(fresh), ReportFormat.Html));

        using var host = ReportHosts.Build(); // two samples, and the report's
        var page = Parse(ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Html));
        var chart = page.Descendants().Single(e => (string?)e.Attribute("id") == "history-chart");
        var series = chart.Descendants().Where(e => e.Name.LocalName == "polyline").Select(e => e.Attribute("data-series")!.Value).ToArray();
        Assert.Equal(["GuestBytes", "SavedBytes", "MemoryUsedBytes"], series);
        Assert.All(chart.Descendants().Where(e => e.Name.LocalName == "polyline"),
            line => Assert.Equal(3, line.Attribute("points")!.Value.Split(' ').Length));
        // The Samples row is the engine's own count, as Get-DEEngine and JSON's engine.samples give it: the chart's third
        // point is the report's, not a sample.
        var samples = page.Descendants().Where(e => e.Name.LocalName == "tr")
            .Single(tr => tr.Elements().First().Value == "Samples").Elements().Last().Value;
        Assert.Equal(host.EngineStatus.Samples.ToString(), samples);
        Assert.Equal(2, host.EngineStatus.Samples);
    }

    [Fact]
    public void FaultPanelsForKindsThatHappened()
    {
        using var host = ReportHosts.Build();
        var page = Parse(ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Html));
        var panels = page.Descendants().Where(e => (string?)e.Attribute("class") == "panel").ToArray();
        var happened = host.GetStats().Faults.Where(f => f.Count > 0).ToArray();
        Assert.Equal(happened.Select(f => f.Kind.ToString()), panels.Select(p => p.Attribute("data-fault")!.Value));
        foreach (var (panel, faults) in panels.Zip(happened))
        {
            // Every fault of the kind is in one bar or another.
            var bars = panel.Descendants().Where(e => e.Attribute("data-count") is not null && e.Name.LocalName == "rect");
            Assert.Equal(faults.Count, bars.Sum(b => long.Parse(b.Attribute("data-count")!.Value, CultureInfo.InvariantCulture)));
        }
        Assert.Contains("CopyOnWrite", panels.Select(p => p.Attribute("data-fault")!.Value));

        using var quiet = new DEHost();
        Assert.Contains("No faults serviced yet", ReportHosts.Render(ReportModel.FromHost(quiet), ReportFormat.Html));
    }

    [Fact]
    public void SelectionIsSaid()
    {
        using var host = ReportHosts.Build();
        var page = Parse(ReportHosts.Render(ReportModel.FromHost(host, [host.GetDomain("web1")]), ReportFormat.Html));
        Assert.Equal(["web1"], DomainCells(page).Keys.Select(k => k.Domain).Distinct());
        Assert.NotNull(page.Descendants().SingleOrDefault(e => (string?)e.Attribute("id") == "scope"));
        // The Saved card's shared frames and passes are the host's, and say so under a selection's figures.
        string SavedSub(XDocument p) => p.Descendants().Single(e => (string?)e.Attribute("data-field") == "summary.SavedBytes")
            .Descendants().Single(e => (string?)e.Attribute("class") == "sub").Value;
        Assert.EndsWith("(host-wide)", SavedSub(page));
        Assert.DoesNotContain("host-wide", SavedSub(Parse(ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Html))));
    }

    /// <summary>The page as XML: the report is written to be well-formed, which also proves its escaping.</summary>
    internal static XDocument Parse(string html) => XDocument.Parse(html.Replace("<!DOCTYPE html>", ""));

    /// <summary>Every domain table cell: (domain, field) to data-value.</summary>
    internal static Dictionary<(string Domain, string Field), string> DomainCells(XDocument page) =>
        page.Descendants()
            .Where(e => e.Attribute("data-domain") is not null && e.Attribute("data-field") is not null && e.Attribute("data-value") is not null)
            .ToDictionary(e => (e.Attribute("data-domain")!.Value, e.Attribute("data-field")!.Value), e => e.Attribute("data-value")!.Value);
}
