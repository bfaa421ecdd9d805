using System.Text;
using DifferenceEngine.Codecs;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Xen;

/// <summary>
/// A connection to the local Xen hypervisor from dom0, through the native shim: domains, guest pages, memory sharing and
/// memory paging. Thread-safe, except that the paging ring (<see cref="WaitForRequest"/>, <see cref="TryGetRequest"/>,
/// <see cref="Respond"/>) belongs to one thread, the pager's. Every failure is a <see cref="XenException"/>.
/// </summary>
public sealed unsafe class XenConnection : IDisposable
{
    /// <summary>The device the Xen control libraries open; without it there is no Xen to talk to.</summary>
    public const string PrivcmdPath = "/dev/xen/privcmd";

    private readonly XenSafeHandle handle;

    private XenConnection(XenSafeHandle handle) => this.handle = handle;

    /// <summary>
    /// Connects to the local Xen. Fails at once with "XenNotAvailable" when <see cref="PrivcmdPath"/> is missing (no Xen,
    /// or not dom0), before any native code is loaded; "XenPermissionDenied" when not root. The one exception is for
    /// tests: when DE_XEN_SHIM_PATH names a shim linked against the fake Xen, that shim is opened without privcmd.
    /// </summary>
    public static XenConnection Open() => Open(shimPathVariable: Environment.GetEnvironmentVariable(XenLibraryResolver.ShimPathVariable));

    /// <summary>
    /// What <see cref="Open()"/> does when DE_XEN_SHIM_PATH holds <paramref name="shimPathVariable"/> (null: unset): privcmd
    /// is required unless that path is a fake-linked shim (<see cref="XenLibraryResolver.IsFakeShim"/>). The shim bound is
    /// still the one the resolver finds through the variable itself.
    /// </summary>
    internal static XenConnection Open(string? shimPathVariable) =>
        Open(requirePrivcmd: string.IsNullOrEmpty(shimPathVariable) || !XenLibraryResolver.IsFakeShim(shimPathVariable));

    /// <summary>Tests open the shim linked against the fake Xen (DE_XEN_SHIM_PATH) on a machine without privcmd.</summary>
    internal static XenConnection Open(bool requirePrivcmd)
    {
        if (requirePrivcmd && !File.Exists(PrivcmdPath))
        {
            throw XenErrors.NotAvailable();
        }
        XenSafeHandle opened;
        int rc;
        try
        {
            rc = XenNative.de_xen_open(out opened);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            throw XenErrors.ShimNotFound(e);
        }
        if (rc < 0)
        {
            var error = XenErrors.FromErrno(-rc, "open its control interfaces (libxenctrl, libxenforeignmemory, libxenevtchn)");
            opened.Dispose();
            throw error;
        }
        return new XenConnection(opened);
    }

    /// <summary>Every domain on the host, domain 0 included, in id order.</summary>
    public IReadOnlyList<XenDomainInfo> ListDomains()
    {
        const int Batch = 64;
        var result = new List<XenDomainInfo>();
        var buffer = stackalloc XenNative.DomainRecord[Batch];
        uint first = 0;
        while (true)
        {
            int n = XenErrors.Check(XenNative.de_xen_list_domains(handle, first, buffer, Batch), "list the domains");
            for (int i = 0; i < n; i++)
            {
                var d = buffer[i];
                result.Add(new XenDomainInfo(d.DomId, (XenDomainFlags)d.Flags, d.TotPages, d.MaxPages, d.ShrPages, d.PagedPages));
            }
            if (n < Batch)
            {
                return result;
            }
            first = buffer[n - 1].DomId + 1;
        }
    }

    /// <summary>
    /// The domain's name from xenstore (/local/domain/&lt;id&gt;/name), or null when it has none, does not exist, or xenstore
    /// cannot be reached (no xenstored: the rest of the connection works without it). "XenPermissionDenied" when xenstore
    /// refuses the read.
    /// </summary>
    public string? GetDomainName(uint domainId)
    {
        byte* buffer = stackalloc byte[XenNative.MaxNameBytes];
        int rc = XenNative.de_xen_domain_name(handle, domainId, buffer, XenNative.MaxNameBytes);
        if (rc == -Errno.ENOENT)
        {
            return null;
        }
        int length = XenErrors.Check(rc, "read the domain's name from xenstore", domainId);
        return Encoding.UTF8.GetString(buffer, length);
    }

    /// <summary>The highest guest frame number the domain has had populated: its pages are gfns 0..that, with holes.</summary>
    public ulong GetMaxGpfn(uint domainId)
    {
        ulong gpfn;
        XenErrors.Check(XenNative.de_xen_max_gpfn(handle, domainId, &gpfn), "read the domain's highest guest frame", domainId);
        return gpfn;
    }

    /// <summary>
    /// Copies one guest page through a read-only foreign mapping. "XenInvalidArgument" when the gfn is not populated.
    /// A paged-out page is paged in first (the call waits for the domain's pager: never call it on the pager's thread).
    /// </summary>
    public void ReadPage(uint domainId, ulong gfn, Span<byte> page)
    {
        CodecErrors.CheckPage(page.Length, nameof(page));
        fixed (byte* p = page)
        {
            XenErrors.Check(XenNative.de_xen_read_page(handle, domainId, gfn, p), "read a guest page", new XenPageRef(domainId, gfn));
        }
    }

    /// <summary>As <see cref="ReadPage"/>, but false when the gfn is not populated or not present (EINVAL, ENOENT).</summary>
    public bool TryReadPage(uint domainId, ulong gfn, Span<byte> page)
    {
        CodecErrors.CheckPage(page.Length, nameof(page));
        int rc;
        fixed (byte* p = page)
        {
            rc = XenNative.de_xen_read_page(handle, domainId, gfn, p);
        }
        if (rc == -Errno.EINVAL || rc == -Errno.ENOENT)
        {
            return false;
        }
        XenErrors.Check(rc, "read a guest page", new XenPageRef(domainId, gfn));
        return true;
    }

    /// <summary>
    /// Copies consecutive guest pages (pages.Length / 4096 of them, at most 1024) with one mapping; errors[i] receives 0 or the
    /// errno of page i, whose bytes are then zero.
    /// </summary>
    public void ReadPages(uint domainId, ulong firstGfn, Span<byte> pages, Span<int> errors)
    {
        int count = pages.Length / PageGeometry.PageSize;
        if (count == 0 || count > XenNative.MaxBatch || pages.Length % PageGeometry.PageSize != 0 || errors.Length < count)
        {
            throw new DEException("XenBatchInvalid", DEErrorKind.InvalidArgument,
                $"Read 1 to {XenNative.MaxBatch} whole pages with an error slot each, not {pages.Length} bytes and {errors.Length} slots.",
                pages.Length);
        }
        fixed (byte* p = pages)
        fixed (int* e = errors)
        {
            XenErrors.Check(XenNative.de_xen_read_pages(handle, domainId, firstGfn, (uint)count, p, e), "read guest pages",
                new XenPageRef(domainId, firstGfn));
        }
    }

    /// <summary>Turns Xen's memory sharing on for the domain (it needs HAP and no passthrough device).</summary>
    public void EnableSharing(uint domainId) =>
        XenErrors.Check(XenNative.de_xen_sharing_control(handle, domainId, 1), "enable memory sharing for the domain", domainId);

    /// <summary>Turns sharing off; pages shared already stay shared until written.</summary>
    public void DisableSharing(uint domainId) =>
        XenErrors.Check(XenNative.de_xen_sharing_control(handle, domainId, 0), "disable memory sharing for the domain", domainId);

    /// <summary>
    /// Makes the page sharable and returns its handle, which stays valid until the page is written. Compare the page's
    /// bytes after nominating it: Xen never does.
    /// </summary>
    public ulong NominateForSharing(uint domainId, ulong gfn)
    {
        ulong sharingHandle;
        XenErrors.Check(XenNative.de_xen_sharing_nominate(handle, domainId, gfn, &sharingHandle), "nominate a page for sharing",
            new XenPageRef(domainId, gfn));
        return sharingHandle;
    }

    /// <summary>
    /// Backs the client page with the source page's frame. False when either page was written since its nomination (its
    /// handle is gone), so nothing was shared.
    /// </summary>
    public bool Share(XenPageRef source, ulong sourceHandle, XenPageRef client, ulong clientHandle)
    {
        int rc = XenNative.de_xen_sharing_share(handle, source.DomainId, source.Gfn, sourceHandle, client.DomainId, client.Gfn,
            clientHandle);
        if (rc == -Errno.SharingSourceHandleInvalid || rc == -Errno.SharingClientHandleInvalid)
        {
            return false;
        }
        XenErrors.Check(rc, "share two pages", client);
        return true;
    }

    /// <summary>
    /// The host's sharing totals, all domains together: the frames sharing freed (gfns backed by a sharable frame minus those
    /// frames) and the frames in the sharable state, nominated or shared. The domains' <see cref="XenDomainInfo.SharedPages"/>
    /// add up to their sum. "XenCallFailed" (ENOSYS) when this Xen is built without memory sharing.
    /// </summary>
    public (ulong FreedPages, ulong UsedFrames) GetSharingTotals()
    {
        ulong freed, used;
        XenErrors.Check(XenNative.de_xen_sharing_totals(handle, &freed, &used), "read the host's memory sharing totals");
        return (freed, used);
    }

    /// <summary>
    /// Enables Xen's paging for the domain and takes its paging ring: from now on a guest touching an evicted page waits
    /// for this connection's <see cref="Respond"/>.
    /// </summary>
    public void EnablePaging(uint domainId) =>
        XenErrors.Check(XenNative.de_xen_paging_enable(handle, domainId), "enable paging for the domain", domainId);

    /// <summary>Disables paging and releases the ring. Load every evicted page back first.</summary>
    public void DisablePaging(uint domainId) =>
        XenErrors.Check(XenNative.de_xen_paging_disable(handle, domainId), "disable paging for the domain", domainId);

    /// <summary>Marks the page to be paged out; false when it cannot be (shared, mapped, in use: EBUSY).</summary>
    public bool NominateForPaging(uint domainId, ulong gfn) =>
        BusyIsFalse(XenNative.de_xen_paging_nominate(handle, domainId, gfn), "nominate a page for paging", domainId, gfn);

    /// <summary>Frees the nominated page's frame; false when the guest touched it since the nomination (EBUSY).</summary>
    public bool Evict(uint domainId, ulong gfn) =>
        BusyIsFalse(XenNative.de_xen_paging_evict(handle, domainId, gfn), "evict a page", domainId, gfn);

    /// <summary>Gives a paged-out page a frame holding these bytes; the guest may use it at once.</summary>
    public void Load(uint domainId, ulong gfn, ReadOnlySpan<byte> page)
    {
        CodecErrors.CheckPage(page.Length, nameof(page));
        fixed (byte* p = page)
        {
            XenErrors.Check(XenNative.de_xen_paging_load(handle, domainId, gfn, p), "load a page back into the guest",
                new XenPageRef(domainId, gfn));
        }
    }

    /// <summary>Completes the page-in of a page that was nominated but never evicted (its frame is still there).</summary>
    public void Prep(uint domainId, ulong gfn) =>
        XenErrors.Check(XenNative.de_xen_paging_prep(handle, domainId, gfn), "prepare a page for page-in", new XenPageRef(domainId, gfn));

    /// <summary>Waits for a paging request on any ring of this connection; false on timeout.</summary>
    public bool WaitForRequest(TimeSpan timeout)
    {
        int ms = timeout == Timeout.InfiniteTimeSpan ? -1 : (int)Math.Clamp(timeout.TotalMilliseconds, 0, int.MaxValue);
        return XenErrors.Check(XenNative.de_xen_ring_wait(handle, ms), "wait for a paging request") > 0;
    }

    /// <summary>Takes the next unanswered paging request, if any.</summary>
    public bool TryGetRequest(out XenPagingRequest request)
    {
        XenNative.RequestRecord r;
        if (XenErrors.Check(XenNative.de_xen_ring_get(handle, &r), "take a paging request") == 0)
        {
            request = default;
            return false;
        }
        request = new XenPagingRequest(r.DomId, r.Vcpu, r.Gfn, r.Flags, r.PagingFlags);
        return true;
    }

    /// <summary>Answers a request as it came; Xen then resumes the vCPU that waits for the page.</summary>
    public void Respond(in XenPagingRequest request)
    {
        var r = new XenNative.RequestRecord
        {
            DomId = request.DomainId,
            Vcpu = request.Vcpu,
            Gfn = request.Gfn,
            Flags = request.Flags,
            PagingFlags = request.PagingFlags,
        };
        XenErrors.Check(XenNative.de_xen_ring_put(handle, &r), "answer a paging request", request.Page);
    }

    public void Dispose() => handle.Dispose();

    private static bool BusyIsFalse(int rc, string operation, uint domainId, ulong gfn)
    {
        if (rc == -Errno.EBUSY)
        {
            return false;
        }
        XenErrors.Check(rc, operation, new XenPageRef(domainId, gfn));
        return true;
    }
}
