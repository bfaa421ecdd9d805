using DifferenceEngine.Scanning;
using DifferenceEngine.Tests.Engine;
using DifferenceEngine.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Xen;

/// <summary>
/// Trust groups on Xen: what a pass does to one group's pages must not depend on another group's. A security audit found
/// that contents held twice were kept by hash alone for the whole pass, so a page of group y whose content group x held
/// twice was left in the guest (kept for sharing it could not have), where it would have been compressed: group y's guest
/// could tell from its faults whether group x holds a content it guesses.
/// </summary>
[Collection(nameof(FakeXenCollection))]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class XenTrustGroupTests(ITestOutputHelper output)
{
    /// <summary>Group y's domain 3 holds a guess at gfn 0; group x's domains 1 and 2 hold it twice, or not at all.</summary>
    private (long Compressed, XenHeldKind? Gfn0) Prober(bool otherGroupHoldsItTwice)
    {
        var fake = FakeXen.Get();
        var text = TestMemory.TextPages(8, 42);
        byte[] guess = text[0];
        byte[] Pages(params byte[][] pages) => pages.SelectMany(p => p).ToArray();
        fake.CreateDomain(1, Pages(otherGroupHoldsItTwice ? guess : text[1], text[2]));
        fake.CreateDomain(2, Pages(otherGroupHoldsItTwice ? guess : text[3], text[4]));
        fake.CreateDomain(3, Pages(guess, text[5], text[6], text[7]));
        using var host = XenHost.Connect(new XenHostOptions { SimilaritySeed = 7 }, requirePrivcmd: false);
        var (d1, d2, d3) = (host.GetDomain("1"), host.GetDomain("2"), host.GetDomain("3"));
        host.SetPolicy(d3, trustGroup: "y", c4Sweeps: 1);
        host.EnableSharing(d1);
        host.EnableSharing(d2);
        host.EnableSharing(d3);
        host.EnableCompression(d3);
        host.Scan(options: new ScanOptions { Passes = 4 });
        var result = (host.GetPageStats(d3).CompressedPages, host.Pager.HeldKindForTest(3, 0));
        output.WriteLine($"group x holds it twice: {otherGroupHoldsItTwice}; compressed {result.CompressedPages}; gfn 0 {result.Item2?.ToString() ?? "guest page"}");
        return result;
    }

    [RequiresFact(Requirement.XenBuild)]
    public void WhetherAPageIsCompressedDoesNotDependOnAnotherTrustGroupsPages()
    {
        var alone = Prober(otherGroupHoldsItTwice: false);
        var beside = Prober(otherGroupHoldsItTwice: true);
        Assert.Equal(XenHeldKind.Compressed, alone.Gfn0);
        Assert.Equal(alone, beside);
    }
}
