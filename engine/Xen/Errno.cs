namespace DifferenceEngine.Xen;

/// <summary>The Linux errno values the Xen calls report and the backend decides on.</summary>
internal static class Errno
{
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int ESRCH = 3;
    public const int ENXIO = 6;
    public const int E2BIG = 7;
    public const int ENOMEM = 12;
    public const int EACCES = 13;
    public const int EBUSY = 16;
    public const int EXDEV = 18;
    public const int ENODEV = 19;
    public const int EINVAL = 22;
    public const int ENOSPC = 28;
    public const int EMLINK = 31;
    public const int ENOSYS = 38;
    public const int EOPNOTSUPP = 95;
    public const int ETIMEDOUT = 110;

    /// <summary>Xen's XENMEM_SHARING_OP_C_HANDLE_INVALID / S_HANDLE_INVALID, negated as errno: the page changed since nomination.</summary>
    public const int SharingClientHandleInvalid = 9;
    public const int SharingSourceHandleInvalid = 10;
}
