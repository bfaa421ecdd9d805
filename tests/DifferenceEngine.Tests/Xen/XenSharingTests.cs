using DifferenceEngine.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Xen;

/// <summary>The sharing pass over the fake: identical pages end on one frame, and the guests' writes copy them again.</summary>
[Collection(nameof(FakeXenCollection))]
public class XenSharingTests(ITestOutputHelper output)
{
    private const int PageSize = FakeXen.PageSize;

    // Domain 1: pattern pages; domain 2: its own pattern, but gfns 8..15 copy domain 1's gfns 0..7; gfns 20..23 zero in both.
    private static void CreatePair(FakeXen fake)
    {
        byte[] a = new byte[32 * PageSize], b = new byte[32 * PageSize];
        for (int g = 0; g < 32; g++)
        {
            if (g is >= 20 and < 24) continue;
            FakeXen.Pattern(1, g).CopyTo(a, g * PageSize);
            FakeXen.Pattern(g is >= 8 and < 16 ? 1 : 2, g is >= 8 and < 16 ? g - 8 : g).CopyTo(b, g * PageSize);
        }
        fake.CreateDomain(1, a);
        fake.CreateDomain(2, b);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void SharesIdenticalPagesAcrossDomainsAndWritesCopyThem()
    {
        var fake = FakeXen.Get();
        CreatePair(fake);
        using var xen = XenConnection.Open(requirePrivcmd: false);
        ulong frames = fake.FrameCount;
        var result = new XenSharing(xen).Run([1, 2]);
        output.WriteLine(result.ToString());
        // 8 copies, and 8 zero pages onto one: 7 more.
        Assert.Equal(15, result.PagesShared);
        Assert.Equal(17, result.Candidates);
        Assert.Equal(2, result.PagesRefused); // the zero paging-ring pages: the fake refuses to share that special page
        Assert.Equal(0, result.PagesChanged);
        Assert.Equal(frames - 15, fake.FrameCount);
        var domains = xen.ListDomains();
        Assert.True(domains.All(d => d.SharedPages > 0));
        Assert.Equal(12ul, domains[1].SharedPages);

        for (int g = 0; g < 32; g++)
        {
            Assert.Equal(Expected(1, g), fake.GuestRead(1, (ulong)g));
            Assert.Equal(Expected(2, g), fake.GuestRead(2, (ulong)g));
        }
        byte[] written = FakeXen.Pattern(50, 0);
        fake.GuestWrite(2, 9, written);
        Assert.Equal(written, fake.GuestRead(2, 9));
        Assert.Equal(FakeXen.Pattern(1, 1), fake.GuestRead(1, 1));
        Assert.Equal(frames - 14, fake.FrameCount);

        var again = new XenSharing(xen).Run([1, 2]);
        output.WriteLine(again.ToString());
        Assert.Equal(0, again.PagesShared);
        Assert.Equal(14, again.AlreadyShared);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void PagesThePagerHoldsAreSkippedNotPagedIn()
    {
        var fake = FakeXen.Get();
        CreatePair(fake);
        using var xen = XenConnection.Open(requirePrivcmd: false);
        using var pager = new XenPager(xen);
        pager.Attach(2);
        Assert.True(pager.Evict(2, 9));
        var result = new XenSharing(xen, pager).Run([1, 2]);
        output.WriteLine(result.ToString());
        Assert.Equal(0ul, fake.RequestsPosted(2));
        Assert.True(pager.IsEvicted(2, 9));
        Assert.Equal(14, result.PagesShared);
        Assert.True(result.PagesSkipped >= 1);
    }

    private static byte[] Expected(int domain, int g) =>
        g is >= 20 and < 24 ? new byte[PageSize]
        : domain == 1 ? FakeXen.Pattern(1, g)
        : FakeXen.Pattern(g is >= 8 and < 16 ? 1 : 2, g is >= 8 and < 16 ? g - 8 : g);
}
