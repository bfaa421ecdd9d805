using System.Collections.Concurrent;
using DifferenceEngine.Domains;
using DifferenceEngine.Qemu;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// The engine's side of libdeqemu.so's protocol (QemuLink, Userfaultfd) against the fake QEMU: the hello describes the
/// guest RAM, pages read from the memfd are the guest's, and pages punched out of it come back through faults the
/// engine serves, with the guest checking its own memory.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class QemuLinkTests
{
    private const int PageSize = 4096;


    [RequiresFact(Requirement.QemuPager)]
    public void HelloDescribesTheGuestRam()
    {
        using var guest = FakeGuest.Start();
        using var link = QemuLink.Attach(guest.SocketPath);
        Assert.Equal(guest.Pid, link.Pid);
        Assert.Equal(FakeGuest.Pages, link.PageCount);
        Assert.True(link.WriteProtect);
        Assert.False(link.Reattached);
        Assert.Equal(-1, link.StateFd);
        var region = Assert.Single(link.Regions);
        Assert.Equal((ulong)FakeGuest.Pages * PageSize, region.Length);
        Assert.Equal(0, link.GfnOf(region.HostAddress));
        Assert.Equal(FakeGuest.Pages - 1, link.GfnOf(region.HostAddress + region.Length - 1));
        Assert.Equal(-1, link.GfnOf(region.HostAddress + region.Length));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(guest.SocketPath));
    }

    [RequiresFact(Requirement.QemuPager)]
    public void ReadsTheGuestsPagesFromItsMemfd()
    {
        using var guest = FakeGuest.Start();
        using var link = QemuLink.Attach(guest.SocketPath);
        var page = new byte[PageSize];
        link.ReadPage(0, page); // the fake guest's pages 0, 4, 8, ... are zero; 1, 5, 9, ... copies of 8 shared pages
        Assert.True(page.AsSpan().IndexOfAnyExcept((byte)0) < 0);
        var one = new byte[PageSize];
        var nine = new byte[PageSize];
        link.ReadPage(1, one);
        link.ReadPage(9, nine);
        Assert.Equal(one, nine);
        link.ReadPage(2, page);
        Assert.NotEqual(one, page);
        Assert.Throws<DEException>(() => link.ReadPage(FakeGuest.Pages, page));
    }

    [RequiresFact(Requirement.QemuPager)]
    public void RefusesASecondEngineAndSaysWhenNoQemuListens()
    {
        using var guest = FakeGuest.Start();
        using var link = QemuLink.Attach(guest.SocketPath);
        Assert.Equal("QemuAttachRefused", Assert.Throws<DEException>(() => QemuLink.Attach(guest.SocketPath)).ErrorId);
        string nowhere = Path.Combine(Path.GetDirectoryName(guest.SocketPath)!, "none.sock");
        Assert.Equal("QemuSocketNotFound", Assert.Throws<DEException>(() => QemuLink.Attach(nowhere)).ErrorId);
    }

    /// <summary>
    /// Pages taken out of the guest (QemuGuestMemory.Evict: write-protect, copy, punch) come back on the guest's faults,
    /// and a guest write between the copy and the punch cancels the eviction: the guest finds every page as it wrote it.
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public void EvictedPagesComeBackOnFaultsAndWritesCancelEvictions()
    {
        using var guest = FakeGuest.Start();
        using var link = QemuLink.Attach(guest.SocketPath);
        var holder = new PlainHolder();
        using var memory = new QemuGuestMemory(link, holder);
        bool Evict(long gfn) => memory.Evict(gfn, (_, page) => page.ToArray(), holder.Hold);

        int evicted = 0;
        for (long gfn = 0; gfn < link.PageCount; gfn += 2) evicted += Evict(gfn) ? 1 : 0;
        Assert.Equal(FakeGuest.Pages / 2, evicted);
        Assert.Equal(evicted, holder.Count);
        Assert.Equal("VERIFY mismatches=0", guest.Ask("verify"));
        memory.Settle(); // the guest can answer before the fault thread counts the last page it installed
        Assert.Equal(0, holder.Count);
        // Every evicted page came back on a fault.
        Assert.Equal(evicted, memory.Installs);
        Assert.Equal(evicted, memory.Faults.Snapshot().Single(f => f.Kind == FaultKind.Decompress).Count);

        // Evictions race the guest's writes.
        guest.Send("write 20000");
        for (int round = 0; round < 3; round++)
            for (long gfn = round; gfn < link.PageCount; gfn += 3) Evict(gfn);
        Assert.Equal("WROTE 20000", guest.Answer());
        Assert.Equal("VERIFY mismatches=0", guest.Ask("verify"));
        Assert.Null(memory.FaultFailure);
    }

    /// <summary>Held pages restored without a fault are the guest's again, and the guest finds them as they were.</summary>
    [RequiresFact(Requirement.QemuPager)]
    public void RestoredPagesNeedNoFault()
    {
        using var guest = FakeGuest.Start();
        using var link = QemuLink.Attach(guest.SocketPath);
        var holder = new PlainHolder();
        using var memory = new QemuGuestMemory(link, holder);
        for (long gfn = 1; gfn < link.PageCount; gfn += 4) Assert.True(memory.Evict(gfn, (_, page) => page.ToArray(), holder.Hold));
        long restored = 0;
        for (long gfn = 0; gfn < link.PageCount; gfn++) restored += memory.Restore(gfn) ? 1 : 0;
        Assert.Equal(FakeGuest.Pages / 4, restored);
        Assert.Equal("VERIFY mismatches=0", guest.Ask("verify"));
        Assert.Equal(restored, memory.Installs);
    }

    /// <summary>Pages held as plain copies.</summary>
    private sealed class PlainHolder : IQemuPageHolder
    {
        private readonly ConcurrentDictionary<long, byte[]> pages = new();

        public int Count => pages.Count;

        public void Hold(long gfn, byte[] page) => pages[gfn] = page;

        public FaultKind Fill(long gfn, Span<byte> page)
        {
            if (!pages.TryGetValue(gfn, out var bytes)) return FaultKind.None;
            bytes.CopyTo(page);
            return FaultKind.Decompress;
        }

        public void Released(long gfn) => pages.TryRemove(gfn, out _);
    }
}
