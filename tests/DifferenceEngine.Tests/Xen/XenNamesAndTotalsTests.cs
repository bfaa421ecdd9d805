using DifferenceEngine.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Xen;

/// <summary>
/// Domain names from xenstore, the host's sharing totals, and the public <see cref="XenConnection.Open()"/> over the fake
/// Xen when DE_XEN_SHIM_PATH names the fake-linked shim.
/// </summary>
[Collection(nameof(FakeXenCollection))]
public class XenNamesAndTotalsTests(ITestOutputHelper output)
{
    private const int PageSize = FakeXen.PageSize;

    [RequiresFact(Requirement.XenBuild)]
    public void ReadsDomainNamesAndNullWhenThereIsNone()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(3, 4, seed: 1);
        fake.CreateDomain(4, 4, seed: 2);
        using var xen = XenConnection.Open(requirePrivcmd: false);
        Assert.Null(xen.GetDomainName(3)); // a new domain has no name
        Assert.Null(xen.GetDomainName(99)); // nor has a domain that does not exist
        fake.SetDomainName(3, "web-01");
        fake.SetDomainName(4, "gäst-ü"); // UTF-8 both ways
        Assert.Equal("web-01", xen.GetDomainName(3));
        Assert.Equal("gäst-ü", xen.GetDomainName(4));
        string longest = new('n', 255);
        fake.SetDomainName(3, longest);
        Assert.Equal(longest, xen.GetDomainName(3));
    }

    [RequiresFact(Requirement.XenBuild)]
    public void ARefusedNameReadIsXenPermissionDeniedNamingXenstore()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(3, 4, seed: 1);
        fake.SetDomainName(3, "web-01");
        using var xen = XenConnection.Open(requirePrivcmd: false);
        fake.FailNext("xs_read", 13);
        var e = Assert.Throws<XenException>(() => xen.GetDomainName(3));
        output.WriteLine(e.Message);
        Assert.Equal("XenPermissionDenied", e.ErrorId);
        Assert.Equal(13, e.Errno);
        Assert.Equal(3u, e.Target);
        Assert.Contains("xs_read(/local/domain/3/name)", e.Message);
        Assert.Equal("web-01", xen.GetDomainName(3));
    }

    [RequiresFact(Requirement.XenBuild)]
    public void WithoutXenstoreOnlyTheNamesAreMissing()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(2, 4, seed: 1);
        fake.SetDomainName(2, "two");
        fake.FailNext("xs_open", 111); // ECONNREFUSED: no xenstored behind the socket
        using var xen = XenConnection.Open(requirePrivcmd: false); // opening does not touch xenstore
        Assert.Single(xen.ListDomains());
        Assert.Null(xen.GetDomainName(2));
        Assert.Equal(FakeXen.Pattern(1, 0), ReadPage(xen, 2, 0));
        Assert.Equal("two", xen.GetDomainName(2)); // xenstore is tried again on the next name
    }

    [RequiresFact(Requirement.XenBuild)]
    public void SharingTotalsFollowNominateShareAndCopyOnWrite()
    {
        var fake = FakeXen.Get();
        byte[] same = FakeXen.Pattern(99, 0);
        for (uint d = 1; d <= 3; d++)
        {
            fake.CreateDomain(d, 4, seed: (int)d);
            fake.GuestWrite(d, 0, same);
        }
        using var xen = XenConnection.Open(requirePrivcmd: false);
        AssertTotals(xen, freed: 0, used: 0);
        for (uint d = 1; d <= 3; d++)
        {
            xen.EnableSharing(d);
        }
        ulong h1 = xen.NominateForSharing(1, 0), h2 = xen.NominateForSharing(2, 0);
        AssertTotals(xen, freed: 0, used: 2); // nominated: sharable frames, nothing freed yet
        Assert.True(xen.Share(new(1, 0), h1, new(2, 0), h2));
        AssertTotals(xen, freed: 1, used: 1);
        ulong h3 = xen.NominateForSharing(3, 0);
        Assert.True(xen.Share(new(1, 0), h1, new(3, 0), h3));
        AssertTotals(xen, freed: 2, used: 1);

        fake.GuestWrite(2, 0, FakeXen.Pattern(98, 0)); // copy-on-write takes one freed page back
        AssertTotals(xen, freed: 1, used: 1);
        fake.GuestWrite(3, 0, FakeXen.Pattern(98, 0));
        fake.GuestWrite(1, 0, FakeXen.Pattern(98, 0)); // the last sharer takes its frame back
        AssertTotals(xen, freed: 0, used: 0);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void SharingTotalsOnAXenWithoutSharingFailWithWhatItMeans()
    {
        var fake = FakeXen.Get();
        using var xen = XenConnection.Open(requirePrivcmd: false);
        fake.FailNext("xc_sharing_freed_pages", 38); // ENOSYS: built without CONFIG_MEM_SHARING
        var e = Assert.Throws<XenException>(() => xen.GetSharingTotals());
        output.WriteLine(e.Message);
        Assert.Equal("XenCallFailed", e.ErrorId);
        Assert.Equal(38, e.Errno);
        Assert.Contains("xc_sharing_freed_pages", e.Message);
        Assert.Contains("does not support it", e.Message);
        fake.FailNext("xc_sharing_used_frames", 1);
        Assert.Equal("XenPermissionDenied", Assert.Throws<XenException>(() => xen.GetSharingTotals()).ErrorId);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void PublicOpenUsesTheFakeShimThatDeXenShimPathNames()
    {
        var fake = FakeXen.Get();
        string? configured = Environment.GetEnvironmentVariable(XenLibraryResolver.ShimPathVariable);
        Assert.False(string.IsNullOrEmpty(configured)); // NativeBuild points it at out/native/fake/libdexen.so
        Assert.True(XenLibraryResolver.IsFakeShim(configured!));
        fake.CreateDomain(6, 4, seed: 1);
        fake.SetDomainName(6, "six");
        using var xen = XenConnection.Open(); // no /dev/xen/privcmd needed for the fake
        Assert.Equal(6u, Assert.Single(xen.ListDomains()).DomainId);
        Assert.Equal("six", xen.GetDomainName(6));
    }

    [RequiresFact(Requirement.XenBuild)]
    public void OnlyAFakeLinkedShimCountsAsFake()
    {
        string folder = NativeBuild.FakeFolder;
        Assert.True(XenLibraryResolver.IsFakeShim(Path.Combine(folder, "libdexen.so"))); // through its dependency
        Assert.False(XenLibraryResolver.IsFakeShim(LoadedLibc()));
        Assert.False(XenLibraryResolver.IsFakeShim(Path.Combine(folder, "no-such-library.so")));
        Assert.False(XenLibraryResolver.IsFakeShim(""));
        string real = Path.Combine(NativeBuild.RepoRoot, "out", "native", XenLibraryResolver.FileName);
        if (File.Exists(real))
        {
            Assert.False(XenLibraryResolver.IsFakeShim(real)); // the shipped build, over the real Xen libraries
        }
        else
        {
            output.WriteLine($"{real} is not built (make -C native): checked libc only.");
        }
    }

    [WithoutXenFact]
    public void WithTheVariableUnsetOpenStillNeedsPrivcmd()
    {
        Assert.Equal("XenNotAvailable", Assert.Throws<XenException>(() => XenConnection.Open(shimPathVariable: null)).ErrorId);
        Assert.Equal("XenNotAvailable", Assert.Throws<XenException>(() => XenConnection.Open(shimPathVariable: "")).ErrorId);
        Assert.Equal("XenNotAvailable", Assert.Throws<XenException>(() => XenConnection.Open(shimPathVariable: LoadedLibc())).ErrorId);
    }

    private void AssertTotals(XenConnection xen, ulong freed, ulong used)
    {
        var (freedPages, usedFrames) = xen.GetSharingTotals();
        ulong shared = xen.ListDomains().Aggregate(0ul, (sum, d) => sum + d.SharedPages);
        output.WriteLine($"freed {freedPages}, used {usedFrames}, shr_pages {shared}");
        Assert.Equal((freed, used), (freedPages, usedFrames));
        Assert.Equal(shared, freedPages + usedFrames); // xenctrl.h: the domains' shr_pages add up to both
    }

    private static byte[] ReadPage(XenConnection xen, uint domainId, ulong gfn)
    {
        byte[] page = new byte[PageSize];
        xen.ReadPage(domainId, gfn, page);
        return page;
    }

    /// <summary>The C library this process runs on, from /proc/self/maps: a real library that exports no fakexen_*.</summary>
    private static string LoadedLibc() =>
        File.ReadLines("/proc/self/maps")
            .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(fields => fields.Length >= 6 && Path.GetFileName(fields[5]).StartsWith("libc.so", StringComparison.Ordinal))
            .Select(fields => fields[5])
            .First();
}
