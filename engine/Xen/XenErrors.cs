using System.Diagnostics.CodeAnalysis;

namespace DifferenceEngine.Xen;

/// <summary>
/// The one translation from a failed shim call to an exception: errno to a stable error id, a kind and a message that
/// says what to do; the shim's own text (the Xen call and its arguments) is appended.
/// </summary>
internal static class XenErrors
{
    public const string NotAvailableId = "XenNotAvailable";
    public const string PermissionDeniedId = "XenPermissionDenied";
    public const string OutOfMemoryId = "XenOutOfMemory";
    public const string InvalidArgumentId = "XenInvalidArgument";
    public const string CallFailedId = "XenCallFailed";
    public const string ShimNotFoundId = "XenShimNotFound";
    public const string PageCorruptId = "XenPageCorrupt";
    public const string PagingNotEnabledId = "XenPagingNotEnabled";
    public const string PagerRestoreFailedId = "XenPagerRestoreFailed";

    /// <summary>Returns rc when it is a success (&gt;= 0); otherwise throws for -rc.</summary>
    public static int Check(int rc, string operation, object? target = null) =>
        rc >= 0 ? rc : throw FromErrno(-rc, operation, target);

    /// <summary>The exception for errno, with the calling thread's shim message; call right after the failed call.</summary>
    public static XenException FromErrno(int errno, string operation, object? target = null)
    {
        string detail = XenNative.LastError();
        (string id, DEErrorKind kind) = errno switch
        {
            Errno.EPERM or Errno.EACCES => (PermissionDeniedId, DEErrorKind.PermissionDenied),
            Errno.ENOMEM => (OutOfMemoryId, DEErrorKind.ResourceUnavailable),
            Errno.EINVAL => (InvalidArgumentId, DEErrorKind.InvalidArgument),
            _ => (CallFailedId, DEErrorKind.InvalidOperation),
        };
        string message = $"Xen could not {operation}: {Explain(errno)}.";
        if (detail.Length > 0)
        {
            message += $" ({detail})";
        }
        return new XenException(id, kind, message, errno, operation, target);
    }

    public static XenException NotAvailable() =>
        new(NotAvailableId, DEErrorKind.ResourceUnavailable,
            $"Xen is not available on this machine: {XenConnection.PrivcmdPath} does not exist. Connect from dom0 of a Xen host " +
            "with the xen-privcmd driver loaded (see docs/XEN.md).",
            Errno.ENOENT, "open the Xen control interface", XenConnection.PrivcmdPath);

    public static XenException ShimNotFound(Exception inner) =>
        new(ShimNotFoundId, DEErrorKind.ResourceUnavailable,
            $"The Xen shim {XenLibraryResolver.FileName} or the Xen 4.17 libraries it needs (libxenctrl.so.4.17, " +
            $"libxenforeignmemory.so.1, libxenevtchn.so.1, libxenstore.so.4) could not be loaded; looked for " +
            $"{string.Join(", ", XenLibraryResolver.Candidates())}. Use the module as build.ps1 lays it out, on a dom0 with " +
            $"Xen 4.17's libraries (Debian 12: libxenmisc4.17, libxenforeignmemory1, libxenevtchn1, libxenstore4). {inner.Message}",
            0, "load the Xen shim", XenLibraryResolver.FileName, inner);

    public static XenException PagingNotEnabled(uint domainId) =>
        new(PagingNotEnabledId, DEErrorKind.InvalidOperation,
            $"Domain {domainId} is not attached to this pager: call Attach({domainId}) before evicting its pages.",
            0, "evict a page", domainId);

    [DoesNotReturn]
    public static void ThrowPageCorrupt(XenPageRef page, string detail, Exception? inner = null) =>
        throw new XenException(PageCorruptId, DEErrorKind.InvalidData,
            $"The pager's copy of {page} is corrupt ({detail}); it was not loaded back, and the vCPU that wants it stays paused.",
            0, "page a page back in", page, inner);

    private static string Explain(int errno) => errno switch
    {
        Errno.EPERM or Errno.EACCES => "permission denied (the Xen control interface needs root in dom0, and Xen's XSM policy must allow it)",
        Errno.ENOMEM => "Xen or dom0 is out of memory for it right now; free memory on the host or retry later",
        Errno.EINVAL => "an argument is invalid for this domain (a guest frame that is not populated or not in a usable state, " +
                        "or a feature not enabled for the domain)",
        Errno.ESRCH => "there is no such domain",
        Errno.ENODEV => "the domain does not use hardware-assisted paging (HAP), or paging is not enabled for it",
        Errno.EXDEV => "a PCI device is passed through to the domain, or it boots with populate-on-demand memory",
        Errno.EMLINK => "the domain has an IOMMU (device passthrough); Xen refuses paging then",
        Errno.EBUSY => "busy (another pager serves the domain, or the page is in use)",
        Errno.ENOENT => "it is not there (a Xen device in /dev/xen, such as privcmd or evtchn, is missing; or the page is " +
                        "paged out and its pager gave no answer)",
        Errno.E2BIG => "another part of Xen or dom0 holds a reference to the page",
        Errno.ENOSPC => "no room left (event channels, or paging rings on this connection)",
        Errno.ENOSYS or Errno.EOPNOTSUPP => "this Xen does not support it (a build without mem_sharing or mem_paging, or not x86-64)",
        Errno.SharingSourceHandleInvalid => "the source page changed since it was nominated",
        Errno.SharingClientHandleInvalid => "the client page changed since it was nominated",
        _ => $"errno {errno}",
    };
}
