using DifferenceEngine.Clock;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Tests.Engine;

public class ClockTests
{
    [Fact]
    public void CategoriesFollowTheNotRecentlyUsedRules()
    {
        using var host = new DEHost();
        var d = host.CreateDomain("a", 4 * 4096, new DomainOptions { C4Sweeps = 3 });
        Assert.Equal(PageCategory.None, d.GetPage(0).Category);
        d.WritePage(0, [1]);   // modified -> C1
        d.ReadPage(1);         // referenced only -> C2
        host.Scan();
        Assert.Equal(PageCategory.C1, d.GetPage(0).Category);
        Assert.Equal(PageCategory.C2, d.GetPage(1).Category);
        Assert.Equal(PageCategory.C3, d.GetPage(2).Category);
        host.Scan();
        Assert.Equal(PageCategory.C3, d.GetPage(0).Category);
        Assert.Equal(PageCategory.C3, d.GetPage(2).Category);
        host.Scan();
        Assert.Equal(PageCategory.C4, d.GetPage(2).Category); // third sweep without access, C4Sweeps = 3
        Assert.Equal(PageCategory.C3, d.GetPage(0).Category);
        d.ReadPage(2);
        host.Scan();
        Assert.Equal(PageCategory.C2, d.GetPage(2).Category); // access resets the idle count
        Assert.Equal(4, d.Sweeps);
    }

    [Fact]
    public void PagesAndPageStatsNameTheirHost()
    {
        // The cmdlets bind a piped object's Host, so a page or stats object piped on is found on its own host.
        using var host = new DEHost(new HostOptions { Name = "lab" });
        var d = host.CreateDomain("a", 4 * 4096, new DomainOptions());
        d.WritePage(1, [1]);
        Assert.Equal("lab", d.GetPage(0).Host);
        Assert.Equal("lab", d.GetPage(1).Host);
        Assert.Equal("lab", host.GetPageStats(d).Host);
        Assert.All(host.TakeSnapshot().Domains, s => Assert.Equal("lab", s.Host));
    }

    [Fact]
    public void DefaultExtendedPeriodIsTwoSweeps()
    {
        using var host = new DEHost();
        var d = host.CreateDomain("a", 4096);
        host.Scan();
        Assert.Equal(PageCategory.C3, d.GetPage(0).Category);
        host.Scan();
        Assert.Equal(PageCategory.C4, d.GetPage(0).Category);
    }

    [Fact]
    public void EligibilityMatchesThePaper()
    {
        Assert.False(PageClock.MayShare(PageCategory.C1));
        Assert.False(PageClock.MayShare(PageCategory.None));
        Assert.True(PageClock.MayShare(PageCategory.C2));
        Assert.False(PageClock.MayPatch(PageCategory.C2));
        Assert.True(PageClock.MayPatch(PageCategory.C3));
        Assert.False(PageClock.MayCompressOrSwap(PageCategory.C3));
        Assert.True(PageClock.MayCompressOrSwap(PageCategory.C4));
        Assert.True(PageClock.MayBeReference(PageCategory.C2));
        Assert.False(PageClock.MayBeReference(PageCategory.C1));
    }

    [Fact]
    public void RecentlyModifiedPagesAreNotShared()
    {
        using var host = new DEHost();
        var d = host.CreateDomain("a", 4 * 4096, new DomainOptions { SharingEnabled = true });
        var page = TestMemory.RandomPage(new Random(1));
        d.WritePage(0, page);
        d.WritePage(1, page);
        host.Scan(); // both C1 now: modified since the last sweep
        Assert.Equal(PageState.Private, d.GetPage(0).State);
        Assert.Equal(PageState.Private, d.GetPage(1).State);
        host.Scan(); // untouched for a sweep: C3, shared
        Assert.Equal(PageState.Shared, d.GetPage(0).State);
        Assert.Equal(PageState.Shared, d.GetPage(1).State);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(16)]
    public void C4PeriodIsValidated(int sweeps)
    {
        using var host = new DEHost();
        Assert.Equal("PolicyC4SweepsInvalid",
            Assert.Throws<DEException>(() => host.CreateDomain("a", 4096, new DomainOptions { C4Sweeps = sweeps })).ErrorId);
    }
}
