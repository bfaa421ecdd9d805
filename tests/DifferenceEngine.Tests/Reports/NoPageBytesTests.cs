using System.Text;
using DifferenceEngine.Reports;

namespace DifferenceEngine.Tests.Reports;

/// <summary>Reports hold aggregates only: what guests wrote never shows up in any format, not even encoded.</summary>
public class NoPageBytesTests
{
    [Theory]
    [InlineData(ReportFormat.Html)]
    [InlineData(ReportFormat.Json)]
    [InlineData(ReportFormat.Csv)]
    public void MarkerInGuestMemoryIsInNoReport(ReportFormat format)
    {
        using var host = ReportHosts.Build();
        // The marker really is in guest memory (shared and private pages alike).
        Assert.Contains(ReportHosts.Marker, Encoding.ASCII.GetString(host.GetDomain("web1").ReadPage(40)));
        Assert.Contains(ReportHosts.Marker, Encoding.ASCII.GetString(host.GetDomain("web2").ReadPage(41)));

        string report = ReportHosts.Render(ReportModel.FromHost(host), format);
        byte[] marker = Encoding.ASCII.GetBytes(ReportHosts.Marker);
        Assert.DoesNotContain(ReportHosts.Marker, report, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain(Convert.ToHexString(marker), report, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain(Convert.ToBase64String(marker)[..16], report);
    }
}
