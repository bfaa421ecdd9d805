using System.Runtime.InteropServices;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Tests.Xen;

/// <summary>
/// The fake hypervisor's test-only API (tests/native/fakexen/fakexen.h), bound from the libfakexen.so the fake-linked shim
/// loads (same file, so the same in-memory Xen). Each test gets it reset. Tests that use it declare
/// <see cref="Requirement.XenBuild"/>.
/// </summary>
internal sealed unsafe class FakeXen
{
    public const int PageSize = PageGeometry.PageSize;

    private static readonly Lazy<FakeXen> Loaded = new(() => new FakeXen(NativeBuild.FakeFolder));

    private readonly delegate* unmanaged<int> reset;
    private readonly delegate* unmanaged<uint, ulong, byte*, int> create;
    private readonly delegate* unmanaged<uint, ulong, byte*, int> guestRead;
    private readonly delegate* unmanaged<uint, ulong, byte*, int> guestWrite;
    private readonly delegate* unmanaged<byte*, int, int> failNext;
    private readonly delegate* unmanaged<uint, int> setTimeout;
    private readonly delegate* unmanaged<ulong> frameCount;
    private readonly delegate* unmanaged<uint, ulong> requestsPosted;
    private readonly delegate* unmanaged<uint, uint, uint, int> setKind;
    private readonly delegate* unmanaged<uint, byte*, int> setName;
    private readonly delegate* unmanaged<uint, ulong, ulong, int> removePages;

    private FakeXen(string folder)
    {
        nint lib = NativeLibrary.Load(Path.Combine(folder, "libfakexen.so"));
        reset = (delegate* unmanaged<int>)NativeLibrary.GetExport(lib, "fakexen_reset");
        create = (delegate* unmanaged<uint, ulong, byte*, int>)NativeLibrary.GetExport(lib, "fakexen_create_domain");
        guestRead = (delegate* unmanaged<uint, ulong, byte*, int>)NativeLibrary.GetExport(lib, "fakexen_guest_read");
        guestWrite = (delegate* unmanaged<uint, ulong, byte*, int>)NativeLibrary.GetExport(lib, "fakexen_guest_write");
        failNext = (delegate* unmanaged<byte*, int, int>)NativeLibrary.GetExport(lib, "fakexen_fail_next");
        setTimeout = (delegate* unmanaged<uint, int>)NativeLibrary.GetExport(lib, "fakexen_set_timeout_ms");
        frameCount = (delegate* unmanaged<ulong>)NativeLibrary.GetExport(lib, "fakexen_frame_count");
        requestsPosted = (delegate* unmanaged<uint, ulong>)NativeLibrary.GetExport(lib, "fakexen_requests_posted");
        setKind = (delegate* unmanaged<uint, uint, uint, int>)NativeLibrary.GetExport(lib, "fakexen_set_domain_kind");
        setName = (delegate* unmanaged<uint, byte*, int>)NativeLibrary.GetExport(lib, "fakexen_set_domain_name");
        removePages = (delegate* unmanaged<uint, ulong, ulong, int>)NativeLibrary.GetExport(lib, "fakexen_remove_pages");
    }

    /// <summary>Takes gfns <paramref name="first"/> .. + <paramref name="count"/> - 1 out of the guest's physmap (an MMIO hole).</summary>
    public void RemovePages(uint domainId, ulong first, ulong count) =>
        Check(removePages(domainId, first, count), $"remove pages {first}+{count} of domain {domainId}");

    /// <summary>
    /// The fake, reset. A paused vCPU waits for the pager's answer on a condition the answer signals; the 10 s time-out on
    /// that wait only turns a pager that never answers into ETIMEDOUT instead of a hung test run (an answer takes
    /// microseconds). Tests that expect no answer (a corrupt copy) shorten it: the result is ETIMEDOUT however long it is.
    /// </summary>
    public static FakeXen Get()
    {
        var fake = Loaded.Value;
        Check(fake.reset(), "reset");
        fake.TimeoutMs = 10_000;
        return fake;
    }

    public uint TimeoutMs
    {
        set => Check(setTimeout(value), "set the timeout");
    }

    public ulong FrameCount => frameCount();

    /// <summary>What the listing says the domain is: HVM or PV, with HAP or shadow paging.</summary>
    public void SetDomainKind(uint domainId, bool hvm, bool hap) =>
        Check(setKind(domainId, hvm ? 1u : 0u, hap ? 1u : 0u), $"set the kind of domain {domainId}");

    /// <summary>Forgets every domain, as if they were all destroyed.</summary>
    public void Reset() => Check(reset(), "reset");

    public ulong RequestsPosted(uint domainId) => requestsPosted(domainId);

    /// <summary>A domain whose page g holds <see cref="Pattern"/>(seed, g).</summary>
    public void CreateDomain(uint domainId, int pages, int seed)
    {
        byte[] content = new byte[pages * PageSize];
        for (int g = 0; g < pages; g++)
        {
            Pattern(seed, g).CopyTo(content.AsSpan(g * PageSize));
        }
        CreateDomain(domainId, content);
    }

    public void CreateDomain(uint domainId, byte[] content)
    {
        fixed (byte* p = content)
        {
            Check(create(domainId, (ulong)(content.Length / PageSize), p), $"create domain {domainId}");
        }
    }

    /// <summary>Gives the domain a name in the fake's xenstore (UTF-8, under 256 bytes); a new domain has none.</summary>
    public void SetDomainName(uint domainId, string name)
    {
        byte[] bytes = System.Text.Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* p = bytes)
        {
            Check(setName(domainId, p), $"name domain {domainId}");
        }
    }

    /// <summary>A guest vCPU reads the page; 0 or -errno (blocks while the pager brings an evicted page back).</summary>
    public int GuestRead(uint domainId, ulong gfn, Span<byte> page)
    {
        fixed (byte* p = page)
        {
            return guestRead(domainId, gfn, p);
        }
    }

    public int GuestWrite(uint domainId, ulong gfn, ReadOnlySpan<byte> page)
    {
        fixed (byte* p = page)
        {
            return guestWrite(domainId, gfn, p);
        }
    }

    public byte[] GuestRead(uint domainId, ulong gfn)
    {
        byte[] page = new byte[PageSize];
        Check(GuestRead(domainId, gfn, page), $"guest read of domain {domainId} gfn {gfn}");
        return page;
    }

    public void GuestWrite(uint domainId, ulong gfn, byte[] page) =>
        Check(GuestWrite(domainId, gfn, page.AsSpan()), $"guest write of domain {domainId} gfn {gfn}");

    /// <summary>The next call of the named Xen function fails with errno.</summary>
    public void FailNext(string function, int errno)
    {
        byte[] name = System.Text.Encoding.ASCII.GetBytes(function + "\0");
        fixed (byte* p = name)
        {
            Check(failNext(p, errno), $"inject {errno} into {function}");
        }
    }

    /// <summary>Page contents every test derives the same way: a function of (seed, gfn) in every byte.</summary>
    public static byte[] Pattern(int seed, long gfn)
    {
        byte[] page = new byte[PageSize];
        var random = new Random(unchecked(seed * 1_000_003 + (int)gfn));
        random.NextBytes(page.AsSpan(0, 256));
        for (int i = 256; i < PageSize; i++)
        {
            page[i] = (byte)(page[i % 256] + i / 256);
        }
        return page;
    }

    private static void Check(int rc, string what)
    {
        if (rc != 0)
        {
            throw new InvalidOperationException($"fakexen: {what} failed with errno {-rc}");
        }
    }
}
