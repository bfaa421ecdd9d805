using Microsoft.Win32.SafeHandles;

namespace DifferenceEngine.Xen;

/// <summary>Owns a de_xen handle (xc_interface, foreign-memory and event-channel handles, paging rings).</summary>
internal sealed class XenSafeHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    // The marshaller creates it for de_xen_open's out parameter.
    public XenSafeHandle()
        : base(ownsHandle: true)
    {
    }

    protected override bool ReleaseHandle() => XenNative.de_xen_close(handle) == 0;
}
