using System.Runtime.InteropServices;

namespace DifferenceEngine.Xen;

/// <summary>The shim's ABI (native/dexen.h): one partial method per export; every result is &gt;= 0 or -errno.</summary>
internal static unsafe partial class XenNative
{
    /// <summary>The name the resolver maps to libdexen.so (or DE_XEN_SHIM_PATH).</summary>
    internal const string Library = "dexen";

    internal const int MaxBatch = 1024;

    /// <summary>Room for any xenstore value (XENSTORE_PAYLOAD_MAX, 4096 bytes) and its NUL.</summary>
    internal const int MaxNameBytes = 4097;

    // Before the first call binds "dexen", so the resolver picks the file.
    static XenNative() => XenLibraryResolver.Register();

    [LibraryImport(Library, SetLastError = true)]
    internal static partial nint de_xen_last_error();

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_open(out XenSafeHandle handle);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_close(nint handle);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_list_domains(XenSafeHandle x, uint firstDomid, DomainRecord* output, uint capacity);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_domain_name(XenSafeHandle x, uint domid, byte* buffer, uint capacity);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_max_gpfn(XenSafeHandle x, uint domid, ulong* gpfn);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_read_page(XenSafeHandle x, uint domid, ulong gfn, byte* page);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_read_pages(XenSafeHandle x, uint domid, ulong firstGfn, uint count, byte* pages, int* errors);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_sharing_control(XenSafeHandle x, uint domid, uint enable);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_sharing_nominate(XenSafeHandle x, uint domid, ulong gfn, ulong* handle);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_sharing_share(XenSafeHandle x, uint sourceDomid, ulong sourceGfn, ulong sourceHandle,
        uint clientDomid, ulong clientGfn, ulong clientHandle);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_sharing_totals(XenSafeHandle x, ulong* freedPages, ulong* usedFrames);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_paging_enable(XenSafeHandle x, uint domid);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_paging_disable(XenSafeHandle x, uint domid);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_paging_nominate(XenSafeHandle x, uint domid, ulong gfn);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_paging_evict(XenSafeHandle x, uint domid, ulong gfn);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_paging_load(XenSafeHandle x, uint domid, ulong gfn, byte* page);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_paging_prep(XenSafeHandle x, uint domid, ulong gfn);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_ring_wait(XenSafeHandle x, int timeoutMs);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_ring_get(XenSafeHandle x, RequestRecord* request);

    [LibraryImport(Library, SetLastError = true)]
    internal static partial int de_xen_ring_put(XenSafeHandle x, RequestRecord* request);

    /// <summary>The calling thread's message for its last failed call; read it before any other shim call.</summary>
    internal static string LastError() => Marshal.PtrToStringUTF8(de_xen_last_error()) ?? "";

    /// <summary>de_xen_domain: 40 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct DomainRecord
    {
        public uint DomId;
        public uint Flags;
        public ulong TotPages;
        public ulong MaxPages;
        public ulong ShrPages;
        public ulong PagedPages;
    }

    /// <summary>de_xen_request: 24 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct RequestRecord
    {
        public uint DomId;
        public uint Vcpu;
        public ulong Gfn;
        public uint Flags;
        public uint PagingFlags;
    }
}
