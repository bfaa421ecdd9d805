using DifferenceEngine.Xen;

namespace DifferenceEngine.Tests.Xen;

/// <summary>The engine as Xen's pager, over the fake: evicted pages come back right when the guest touches them.</summary>
[Collection(nameof(FakeXenCollection))]
public class XenPagerTests
{
    private const int PageSize = FakeXen.PageSize;

    // Half pattern, half zeros: compressible, and different per page.
    private static byte[] HalfZero(int seed, int gfn)
    {
        byte[] page = new byte[PageSize];
        FakeXen.Pattern(seed, gfn).AsSpan(0, PageSize / 2).CopyTo(page);
        return page;
    }

    private static void CreateHalfZeroDomain(FakeXen fake, uint domainId, int pages, int seed)
    {
        byte[] content = new byte[pages * PageSize];
        for (int g = 0; g < pages; g++)
        {
            HalfZero(seed, g).CopyTo(content, g * PageSize);
        }
        fake.CreateDomain(domainId, content);
    }

    [RequiresFact(Requirement.XenBuild)]
    public async Task EvictedPagesComeBackWhenTheGuestReadsThemFromAnotherThread()
    {
        var fake = FakeXen.Get();
        CreateHalfZeroDomain(fake, 4, 32, seed: 5);
        using var xen = XenConnection.Open(requirePrivcmd: false);
        using var pager = new XenPager(xen);
        pager.Attach(4);
        for (ulong g = 0; g < 32; g += 2)
        {
            Assert.True(pager.Evict(4, g));
        }
        Assert.False(pager.Evict(4, 0)); // out already
        Assert.Equal(16, pager.EvictedPages);
        Assert.Equal(16ul, xen.ListDomains().Single().PagedPages);
        // The zero half compresses away; the other half is noise.
        Assert.True(pager.StoredBytes < 16 * PageSize * 6 / 10, $"{pager.StoredBytes} bytes held for 16 half-zero pages");

        // One thread per vCPU, not pool threads: each read blocks until the pager answers, and the pool adds threads slowly.
        var reads = Enumerable.Range(0, 32)
            .Select(g => Task.Factory.StartNew(() => fake.GuestRead(4, (ulong)g), TaskCreationOptions.LongRunning)).ToArray();
        byte[][] pages = await Task.WhenAll(reads);
        for (int g = 0; g < 32; g++)
        {
            Assert.Equal(HalfZero(5, g), pages[g]);
        }
        Assert.Equal(0, pager.EvictedPages);
        Assert.Equal(0L, pager.StoredBytes);
        Assert.Equal(16L, pager.PageIns);
        Assert.Equal(0ul, xen.ListDomains().Single().PagedPages);
        Assert.Empty(pager.Failures);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void AGuestWriteToAnEvictedPageLandsOnItsOwnBytes()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(4, 8, seed: 5);
        using var xen = XenConnection.Open(requirePrivcmd: false);
        using var pager = new XenPager(xen);
        pager.Attach(4);
        Assert.True(pager.Evict(4, 3));
        byte[] written = FakeXen.Pattern(77, 3);
        Assert.Equal(0, fake.GuestWrite(4, 3, written.AsSpan()));
        Assert.Equal(written, fake.GuestRead(4, 3));
        Assert.Equal(1L, pager.PageIns);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void DisposeLoadsEveryPageBackAndDisablesPaging()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(4, 16, seed: 6);
        fake.CreateDomain(9, 16, seed: 7);
        using var xen = XenConnection.Open(requirePrivcmd: false);
        var pager = new XenPager(xen, DifferenceEngine.Codecs.CompressionAlgorithm.Zstd);
        pager.Attach(4);
        pager.Attach(9);
        for (ulong g = 0; g < 16; g++)
        {
            Assert.True(pager.Evict(4, g));
            Assert.True(pager.Evict(9, g));
        }
        Assert.All(xen.ListDomains(), d => Assert.Equal(16ul, d.PagedPages));
        pager.Dispose();
        Assert.All(xen.ListDomains(), d => Assert.Equal(0ul, d.PagedPages));
        Assert.Equal(0ul, fake.RequestsPosted(4) + fake.RequestsPosted(9));
        for (ulong g = 0; g < 16; g++)
        {
            Assert.Equal(FakeXen.Pattern(6, (long)g), fake.GuestRead(4, g));
            Assert.Equal(FakeXen.Pattern(7, (long)g), fake.GuestRead(9, g));
        }
        xen.EnablePaging(4); // the pager let the ring go
        Assert.Throws<ObjectDisposedException>(() => pager.Attach(4));
    }

    [RequiresFact(Requirement.XenBuild)]
    public void ACorruptCopyIsNeverLoadedAndSaysWhichPage()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(4, 8, seed: 5);
        fake.TimeoutMs = 500;
        using var xen = XenConnection.Open(requirePrivcmd: false);
        var pager = new XenPager(xen);
        using var failed = new ManualResetEventSlim();
        pager.FailureRecorded = _ => failed.Set();
        pager.Attach(4);
        Assert.True(pager.Evict(4, 6));
        Assert.True(pager.CorruptForTest(4, 6));
        Assert.Equal(-110, fake.GuestRead(4, 6, new byte[PageSize])); // the vCPU stays paused: ETIMEDOUT in the fake
        // The guest giving up says nothing of when the pager took the request: wait for the pager to say it failed.
        failed.Wait();
        var failure = Assert.Single(pager.Failures);
        Assert.Equal("XenPageCorrupt", failure.ErrorId);
        Assert.Equal(new XenPageRef(4, 6), failure.Target);
        Assert.Contains("domain 4 gfn 0x6", failure.Message);
        var e = Assert.Throws<DEException>(pager.Dispose);
        Assert.Equal("XenPagerRestoreFailed", e.ErrorId);
        Assert.Equal(1ul, xen.ListDomains().Single().PagedPages); // paging stays on: the copy is not thrown away
    }

    [RequiresFact(Requirement.XenBuild)]
    public void PagesThatCannotGoAreRefused()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(4, 8, seed: 5);
        using var xen = XenConnection.Open(requirePrivcmd: false);
        using var pager = new XenPager(xen);
        var e = Assert.Throws<XenException>(() => pager.Evict(4, 1));
        Assert.Equal("XenPagingNotEnabled", e.ErrorId);
        pager.Attach(4);
        xen.EnableSharing(4);
        xen.NominateForSharing(4, 1);
        Assert.False(pager.Evict(4, 1)); // a sharable page is not pageable
        Assert.False(pager.Evict(4, 1000));
        Assert.Equal(0, pager.EvictedPages);
    }
}
