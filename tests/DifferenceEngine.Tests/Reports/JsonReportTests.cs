using DifferenceEngine.Reports;
using Newtonsoft.Json.Linq;

namespace DifferenceEngine.Tests.Reports;

public class JsonReportTests
{
    [Fact]
    public void DomainNumbersEqualPageStats()
    {
        using var host = ReportHosts.Build();
        var json = JObject.Parse(ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Json));

        Assert.Equal(2, (int)json["schemaVersion"]!);
        Assert.True((bool)json["allDomains"]!);
        var domains = (JArray)json["domains"]!;
        Assert.Equal(host.Domains.Select(d => d.Name), domains.Select(d => (string)d["domain"]!));
        foreach (var d in host.Domains)
        {
            var expected = host.GetPageStats(d);
            var row = domains.Single(x => (string)x["domain"]! == d.Name);
            foreach (var (field, value) in ReportHosts.Numbers(expected))
            {
                var token = row[char.ToLowerInvariant(field[0]) + field[1..]];
                Assert.NotNull(token);
                Assert.Equal(Convert.ToDouble(value), (double)token!);
            }
            Assert.Equal(expected.DomainId, (int)row["domainId"]!);
            Assert.Equal(expected.TrustGroup, (string)row["trustGroup"]!);
            Assert.Equal(expected.SharingEnabled, (bool)row["sharingEnabled"]!);
        }
        Assert.True(domains.Sum(d => (long)d["sharedPages"]!) > 0, "the fixture shares pages");
    }

    [Fact]
    public void HostNumbersEqualHostStats()
    {
        using var host = ReportHosts.Build();
        var json = JObject.Parse(ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Json));
        var expected = host.GetStats();
        var h = json["host"]!;
        Assert.Equal("report-test", (string)h["name"]!);
        Assert.Equal(expected.GuestBytes, (long)h["guestBytes"]!);
        Assert.Equal(expected.MemoryUsedBytes, (long)h["memoryUsedBytes"]!);
        Assert.Equal(expected.SavedBytes, (long)h["savedBytes"]!);
        Assert.Equal(expected.SavingsPercent, (double)h["savingsPercent"]!);
        Assert.Equal(expected.SharedFrames, (long)h["sharedFrames"]!);
        var cow = ((JArray)h["faults"]!).Single(f => (string)f["kind"]! == "CopyOnWrite");
        Assert.Equal(1, (long)cow["count"]!);
        Assert.Equal(1, ((JArray)cow["histogram"]!).Sum(b => (long)b["count"]!));
        // The host's samples, then the report's own as the last point.
        Assert.Equal(host.History.Count + 1, ((JArray)json["history"]!).Count);
        Assert.Equal(host.History[^1].SavedBytes, (long)json["history"]![host.History.Count - 1]!["savedBytes"]!);
        Assert.Equal(expected.SavedBytes, (long)json["history"]![host.History.Count]!["savedBytes"]!);
    }

    [Fact]
    public void NamesRoundTrip()
    {
        using var host = ReportHosts.Build();
        var json = JObject.Parse(ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Json));
        Assert.Contains(ReportHosts.AwkwardName, json["domains"]!.Select(d => (string)d["domain"]!));
    }

    [Fact]
    public void SelectedDomainsOnly()
    {
        using var host = ReportHosts.Build();
        var model = ReportModel.FromHost(host, [host.GetDomain("web2")]);
        var json = JObject.Parse(ReportHosts.Render(model, ReportFormat.Json));
        Assert.False((bool)json["allDomains"]!);
        Assert.Equal(["web2"], json["domains"]!.Select(d => (string)d["domain"]!));
        Assert.Equal(3, (int)json["host"]!["domains"]!); // host-wide numbers stay host-wide
    }

    [Fact]
    public void EveryDomainGivenOneByOneIsAReportOfTheHost()
    {
        using var host = ReportHosts.Build();
        var whole = ReportModel.FromHost(host);
        var given = ReportModel.FromHost(host, host.Domains.Reverse().ToArray());
        Assert.True(given.AllDomains);
        // The same headline as the host's: metadata and the store's slack are in it, not only the domains' charges.
        Assert.Equal(whole.Summary.Parts.Select(p => p.Part), given.Summary.Parts.Select(p => p.Part));
        Assert.Equal(given.HostStats.MemoryUsedBytes, given.Summary.MemoryUsedBytes);
        Assert.Equal(given.HostStats.SavedBytes, given.Summary.SavedBytes);
        Assert.False(ReportModel.FromHost(host, host.Domains.Skip(1).ToArray()).AllDomains);
    }
}
