using System.Collections.Concurrent;
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

    private static unsafe void Signal(int eventFd)
    {
        ulong one = 1;
        Assert.Equal(8, (int)LinuxNative.Write(eventFd, &one, 8));
    }

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
    /// Pages punched out of the guest (after write-protecting and copying them) come back on the guest's faults, and
    /// a guest write between the copy and the punch cancels the eviction: the guest finds every page as it wrote it.
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public async Task EvictedPagesComeBackOnFaultsAndWritesCancelEvictions()
    {
        using var guest = FakeGuest.Start();
        using var link = QemuLink.Attach(guest.SocketPath);
        var held = new ConcurrentDictionary<long, byte[]>();
        var cancelled = new ConcurrentDictionary<long, bool>();
        var gate = new object();
        long copies = 0, zeros = 0;
        int stop = LinuxNative.EventFd(0, 0x80000 /* EFD_CLOEXEC */);
        Assert.True(stop >= 0);
        var server = Task.Factory.StartNew(() =>
        {
            var messages = new Userfaultfd.Message[16];
            while (link.Faults.Wait(stop))
            {
                int n = link.Faults.ReadMessages(messages);
                for (int i = 0; i < n; i++)
                {
                    if (messages[i].Event != Userfaultfd.EventPageFault) continue;
                    ulong address = messages[i].Address & ~(ulong)(PageSize - 1);
                    long gfn = link.GfnOf(address);
                    lock (gate)
                    {
                        if ((messages[i].Flags & Userfaultfd.PageFaultFlagWriteProtect) != 0)
                        {
                            cancelled[gfn] = true;
                            link.Faults.WriteProtect(address, PageSize, on: false);
                        }
                        else if (held.TryRemove(gfn, out var bytes))
                        {
                            link.Faults.Copy(address, bytes);
                            copies++;
                        }
                        else if (link.Faults.ZeroPage(address))
                        {
                            zeros++;
                        }
                    }
                }
            }
        }, TaskCreationOptions.LongRunning);

        bool Evict(long gfn)
        {
            var bytes = new byte[PageSize];
            lock (gate)
            {
                if (held.ContainsKey(gfn)) return false;
                cancelled[gfn] = false;
                link.Faults.WriteProtect(link.AddressOf(gfn), PageSize, on: true);
            }
            link.ReadPage(gfn, bytes);
            lock (gate)
            {
                if (cancelled[gfn])
                {
                    link.Faults.WriteProtect(link.AddressOf(gfn), PageSize, on: false);
                    return false;
                }
                held[gfn] = bytes; // held before the page leaves the guest
                link.Punch(gfn);
                return true;
            }
        }

        try
        {
            int evicted = 0;
            for (long gfn = 0; gfn < link.PageCount; gfn += 2) evicted += Evict(gfn) ? 1 : 0;
            Assert.Equal(FakeGuest.Pages / 2, evicted);
            Assert.Equal("VERIFY mismatches=0", guest.Ask("verify"));
            // Read under the server's lock: a fault's page is installed, and the guest woken, before it is counted.
            lock (gate) Assert.Equal(evicted, copies);

            // Evictions race the guest's writes.
            guest.Send("write 20000");
            for (int round = 0; round < 3; round++)
                for (long gfn = round; gfn < link.PageCount; gfn += 3) Evict(gfn);
            Assert.Equal("WROTE 20000", guest.Answer());
            Assert.Equal("VERIFY mismatches=0", guest.Ask("verify"));
        }
        finally
        {
            Signal(stop);
            await server;
            LinuxNative.Close(stop);
        }
    }
}
