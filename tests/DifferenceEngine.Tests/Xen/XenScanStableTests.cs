using DifferenceEngine.Scanning;
using DifferenceEngine.Tests.Engine;
using DifferenceEngine.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Xen;

/// <summary>
/// A scan until stable on Xen: pages aging toward C4 keep it going, as on the embedded host. Before, the pass that
/// collected them as cold counted nothing for them, so with -C4Sweeps 3 or more pass 2 changed nothing and the scan ended
/// before any page was compressed (a review's finding).
/// </summary>
[Collection(nameof(FakeXenCollection))]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class XenScanStableTests(ITestOutputHelper output)
{
    [RequiresFact(Requirement.XenBuild)]
    public void AScanUntilStableGoesOnUntilPagesAgingTowardC4AreCompressed()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(4, TestMemory.TextPages(8, 11).SelectMany(p => p).ToArray());
        using var host = XenHost.Connect(new XenHostOptions { SimilaritySeed = 7 }, requirePrivcmd: false);
        var d = host.GetDomain("4");
        host.SetPolicy(d, c4Sweeps: 5);
        host.EnableCompression(d);
        var scan = host.Scan(options: new ScanOptions { UntilStable = true });
        output.WriteLine($"{scan.PassResults.Count} passes, stable {scan.Stable}, compressed {host.GetPageStats(d).CompressedPages}");
        Assert.True(scan.Stable);
        Assert.Equal(8, host.GetPageStats(d).CompressedPages);
    }
}
