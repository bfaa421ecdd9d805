using DifferenceEngine.Hosting;
using DifferenceEngine.Loading;
using DifferenceEngine.Memory;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// The figures of a domain while it loads and once it is removed: guest memory is what is laid out (the rest of a
/// loading domain is not zeros saved), a page the source left out is a zero page of the guest once the load is done,
/// and a removed domain has no stats (its pages are gone, not saved).
/// </summary>
public class LoadingStatsTests
{
    private const int Page = PageGeometry.PageSize;

    /// <summary>Every <paramref name="step"/>-th page of synthetic memory; the others left out (zeros).</summary>
    private sealed class SparseSource(long pages, int step) : MemorySource
    {
        public override MemorySourceFormat Format => MemorySourceFormat.RawImage;
        public override string Description => $"sparse synthetic memory ({pages} pages, one in {step})";
        public override long PageCount => pages;

        private protected override LoadReport CopyPages(IGuestPageSink sink, CancellationToken cancellationToken)
        {
            var page = new byte[Page];
            long given = 0;
            for (long g = 0; g < pages; g += step)
            {
                SyntheticSource.Fill(7, g, page);
                sink.SetPage(g, page);
                given++;
            }
            return new LoadReport(MemorySourceFormat.RawImage, given, 0, 1, 0, 0, []);
        }

        private protected override void ReleaseHandles()
        {
        }
    }

    [Fact]
    public void ALoadingDomainCountsOnlyThePagesLaidOutSoFar()
    {
        using var host = new DEHost();
        const long pages = 3 * DEHost.LoadProgressPages;
        var seen = new List<(long Gfn, DomainPageStats Row, HostStats Host)>();
        host.LoadDomain("big", new SyntheticSource(pages, 3), null, progress: gfn =>
        {
            if (gfn == 0 || gfn == pages) return;
            var snapshot = host.TakeSnapshot();
            seen.Add((gfn, Assert.Single(snapshot.Domains), snapshot.Host));
        });
        Assert.Equal([DEHost.LoadProgressPages, 2 * DEHost.LoadProgressPages], seen.Select(s => s.Gfn));
        foreach (var (gfn, row, hostStats) in seen)
        {
            // Pages 0 to gfn - 1 are laid out, each on a frame of its own: guest memory, all of it used, none saved.
            Assert.Equal("Loading", row.Status);
            Assert.Equal(gfn, row.PrivatePages);
            Assert.Equal(pages - gfn, row.UntouchedPages);
            Assert.Equal(0, row.ZeroPages);
            Assert.Equal(gfn * Page, row.GuestBytes);
            Assert.Equal(gfn * Page, row.BytesUsed);
            Assert.Equal(0, row.BytesSaved);
            Assert.Equal(gfn * Page, hostStats.GuestBytes);
            Assert.Equal(hostStats.GuestBytes, hostStats.MemoryUsedBytes + hostStats.SavedBytes);
        }
        var done = Assert.Single(host.TakeSnapshot().Domains);
        Assert.Equal("Running", done.Status);
        Assert.Equal(pages * Page, done.GuestBytes);
        Assert.Equal(0, done.UntouchedPages);
    }

    [Fact]
    public void PagesASourceLeavesOutAreTheGuestsZeroPagesOnceLoaded()
    {
        using var host = new DEHost();
        var domain = host.LoadDomain("sparse", new SparseSource(1000, 4));
        var row = host.GetPageStats(domain);
        Assert.Equal(250, row.PrivatePages);
        Assert.Equal(750, row.ZeroPages);
        Assert.Equal(0, row.UntouchedPages);
        Assert.Equal(1000L * Page, row.GuestBytes);
        Assert.Equal(750L * Page, row.BytesSaved);
        Assert.Equal(new byte[Page], domain.ReadPage(1));
        Assert.False(domain.GetPage(1).Untouched);
    }

    [Fact]
    public void ARemovedDomainHasNoStats()
    {
        using var host = new DEHost();
        var domain = host.LoadDomain("gone", new SyntheticSource(64, 1));
        host.RemoveDomain(domain);
        var ex = Assert.Throws<DEException>(() => host.GetPageStats(domain));
        Assert.Equal("DomainNotFound", ex.ErrorId);
    }
}
