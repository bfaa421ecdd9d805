using DifferenceEngine.Xen;

namespace DifferenceEngine.Tests.Xen;

/// <summary>On a machine without Xen, connecting fails with one clear error before any native code is loaded
/// (no shim path is given, and the check for privcmd comes first). Not timed: timing belongs in benchmarks.</summary>
public class XenNotAvailableTests
{
    [WithoutXenFact]
    public void OpenWithoutPrivcmdFailsAtOnceWithXenNotAvailable()
    {
        // Open() as it runs with DE_XEN_SHIM_PATH unset: the other Xen tests set that variable process-wide to the fake
        // shim, which Open() then opens without privcmd (XenNamesAndTotalsTests), so it is passed in here, not read.
        var e = Assert.Throws<XenException>(() => XenConnection.Open(shimPathVariable: null));
        Assert.Equal("XenNotAvailable", e.ErrorId);
        Assert.Equal(DEErrorKind.ResourceUnavailable, e.Kind);
        Assert.Equal(XenConnection.PrivcmdPath, e.Target);
        Assert.Contains(XenConnection.PrivcmdPath, e.Message);
        Assert.Contains("dom0", e.Message);
        Assert.IsAssignableFrom<DEException>(e);
    }
}
