using DifferenceEngine.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Xen;

/// <summary>The C# backend over the real shim code, linked against the fake Xen.</summary>
[Collection(nameof(FakeXenCollection))]
public class XenConnectionTests(ITestOutputHelper output)
{
    private const int PageSize = FakeXen.PageSize;

    [RequiresFact(Requirement.XenBuild)]
    public void ListsDomainsWithTheirPages()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(5, 8, seed: 1);
        fake.CreateDomain(2, 4, seed: 2);
        using var xen = XenConnection.Open(requirePrivcmd: false);
        var domains = xen.ListDomains();
        Assert.Equal(new uint[] { 2, 5 }, domains.Select(d => d.DomainId));
        var d5 = domains[1];
        Assert.Equal(8ul, d5.TotalPages);
        Assert.Equal(8ul, d5.MaxPages);
        Assert.Equal(0ul, d5.SharedPages);
        Assert.Equal(0ul, d5.PagedPages);
        Assert.Equal(XenDomainFlags.Hvm | XenDomainFlags.Hap | XenDomainFlags.Running, d5.Flags);
        Assert.True(d5.SupportsSharingAndPaging);
        Assert.Equal(8ul, xen.GetMaxGpfn(5)); // gfns 0..7, then the paging ring page
    }

    [RequiresFact(Requirement.XenBuild)]
    public void ReadsGuestPagesOneByOneAndInBatches()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(3, 16, seed: 7);
        using var xen = XenConnection.Open(requirePrivcmd: false);
        byte[] page = new byte[PageSize];
        for (int g = 0; g < 16; g++)
        {
            xen.ReadPage(3, (ulong)g, page);
            Assert.Equal(FakeXen.Pattern(7, g), page);
        }
        byte[] batch = new byte[18 * PageSize];
        int[] errors = new int[18];
        xen.ReadPages(3, 0, batch, errors);
        Assert.All(errors[..17], e => Assert.Equal(0, e)); // 16 guest pages and the ring page
        Assert.Equal(22, errors[17]);
        Assert.Equal(FakeXen.Pattern(7, 9), batch.AsSpan(9 * PageSize, PageSize).ToArray());
        Assert.False(xen.TryReadPage(3, 1000, page));
        Assert.True(xen.TryReadPage(3, 4, page));
    }

    [RequiresFact(Requirement.XenBuild)]
    public void ABadGfnIsXenInvalidArgumentNamingThePage()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(3, 4, seed: 1);
        using var xen = XenConnection.Open(requirePrivcmd: false);
        var e = Assert.Throws<XenException>(() => xen.ReadPage(3, 0x3e8, new byte[PageSize]));
        Assert.Equal("XenInvalidArgument", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidArgument, e.Kind);
        Assert.Equal(22, e.Errno);
        Assert.Equal(new XenPageRef(3, 0x3e8), e.Target);
        Assert.Contains("xenforeignmemory_map(domain 3, gfn 0x3e8)", e.Message);
        var size = Assert.Throws<DEException>(() => xen.ReadPage(3, 0, new byte[100]));
        Assert.Equal("PageSizeInvalid", size.ErrorId);
    }

    public static TheoryData<string, int, string> HypervisorErrors => new()
    {
        { "xc_interface_open", 1, "XenPermissionDenied" },
        { "xc_domain_getinfolist", 1, "XenPermissionDenied" },
        { "xenforeignmemory_map", 13, "XenPermissionDenied" },
        { "xc_memshr_nominate_gfn", 12, "XenOutOfMemory" },
        { "xc_mem_paging_enable", 12, "XenOutOfMemory" },
        { "xc_memshr_control", 22, "XenInvalidArgument" },
        { "xc_memshr_share_gfns", 22, "XenInvalidArgument" },
        { "xc_mem_paging_enable", 19, "XenCallFailed" },
        { "xc_mem_paging_load", 3, "XenCallFailed" },
    };

    [RequiresTheory(Requirement.XenBuild)]
    [MemberData(nameof(HypervisorErrors))]
    public void ErrorsFromTheHypervisorSurfaceWithStableIds(string function, int errno, string errorId)
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(1, 4, seed: 1);
        fake.CreateDomain(2, 4, seed: 1);
        using var setup = XenConnection.Open(requirePrivcmd: false);
        setup.EnableSharing(1);
        setup.EnableSharing(2);
        ulong h1 = setup.NominateForSharing(1, 0), h2 = setup.NominateForSharing(2, 0);
        fake.FailNext(function, errno);
        var e = Assert.Throws<XenException>(() =>
        {
            using var xen = XenConnection.Open(requirePrivcmd: false);
            switch (function)
            {
                case "xc_domain_getinfolist": xen.ListDomains(); break;
                case "xenforeignmemory_map": xen.ReadPage(1, 0, new byte[PageSize]); break;
                case "xc_memshr_nominate_gfn": xen.NominateForSharing(1, 1); break;
                case "xc_memshr_control": xen.EnableSharing(1); break;
                case "xc_memshr_share_gfns": xen.Share(new(1, 0), h1, new(2, 0), h2); break;
                case "xc_mem_paging_enable": xen.EnablePaging(1); break;
                case "xc_mem_paging_load": xen.Load(1, 0, new byte[PageSize]); break;
            }
        });
        output.WriteLine(e.Message);
        Assert.Equal(errorId, e.ErrorId);
        Assert.Equal(errno, e.Errno);
        Assert.Contains(function, e.Message);
        if (errno == 19)
        {
            Assert.Contains("hardware-assisted paging (HAP)", e.Message);
        }
    }

    [RequiresFact(Requirement.XenBuild)]
    public void SharesNominatedPagesAndTheGuestsWriteCopiesThem()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(1, 4, seed: 1);
        fake.CreateDomain(2, 4, seed: 2);
        byte[] same = FakeXen.Pattern(99, 0);
        fake.GuestWrite(1, 2, same);
        fake.GuestWrite(2, 3, same);
        using var xen = XenConnection.Open(requirePrivcmd: false);
        xen.EnableSharing(1);
        xen.EnableSharing(2);
        ulong frames = fake.FrameCount;
        ulong h1 = xen.NominateForSharing(1, 2), h2 = xen.NominateForSharing(2, 3);
        Assert.True(xen.Share(new(1, 2), h1, new(2, 3), h2));
        Assert.Equal(frames - 1, fake.FrameCount);
        Assert.All(xen.ListDomains(), d => Assert.Equal(1ul, d.SharedPages));

        byte[] other = FakeXen.Pattern(98, 0);
        fake.GuestWrite(2, 3, other);
        Assert.Equal(frames, fake.FrameCount);
        Assert.Equal(same, fake.GuestRead(1, 2));
        Assert.Equal(other, fake.GuestRead(2, 3));
        Assert.False(xen.Share(new(1, 2), h1, new(2, 3), h2)); // the client's handle died with the write
    }

    [RequiresFact(Requirement.XenBuild)]
    public async Task AnEvictedPageComesBackThroughTheRing()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(7, 8, seed: 3);
        using var xen = XenConnection.Open(requirePrivcmd: false);
        xen.EnablePaging(7);
        Assert.False(xen.Evict(7, 5)); // not nominated
        Assert.True(xen.NominateForPaging(7, 5));
        byte[] saved = new byte[PageSize];
        xen.ReadPage(7, 5, saved);
        Assert.True(xen.Evict(7, 5));
        Assert.Equal(1ul, xen.ListDomains().Single().PagedPages);

        // The guest's vCPU on a thread of its own (a pool thread may be slow to come on a loaded machine); it posts the
        // request and stays paused until the response below.
        var guest = Task.Factory.StartNew(() => fake.GuestRead(7, 5), TaskCreationOptions.LongRunning);
        // The wait's time-out only lets the loop see a guest that ended without posting (then its error fails the test).
        while (!xen.WaitForRequest(TimeSpan.FromMilliseconds(100)))
        {
            if (guest.IsCompleted)
            {
                await guest;
                Assert.Fail("the guest's read ended without a paging request");
            }
        }
        Assert.True(xen.TryGetRequest(out var request));
        Assert.Equal(new XenPageRef(7, 5), request.Page);
        Assert.True(request.VcpuPaused);
        Assert.False(request.EvictFailed);
        Assert.False(guest.IsCompleted);
        xen.Load(7, 5, saved);
        xen.Respond(request);
        Assert.Equal(FakeXen.Pattern(3, 5), await guest);
        Assert.Equal(0ul, xen.ListDomains().Single().PagedPages);
        Assert.False(xen.TryGetRequest(out _));
        xen.DisablePaging(7);
    }
}
