using System.Diagnostics;
using DifferenceEngine.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Xen;

/// <summary>On a machine without Xen, connecting fails at once with one clear error; no native code is needed for that.</summary>
public class XenNotAvailableTests(ITestOutputHelper output)
{
    [Fact]
    public void OpenWithoutPrivcmdFailsAtOnceWithXenNotAvailable()
    {
        if (File.Exists(XenConnection.PrivcmdPath))
        {
            output.WriteLine($"Skipped: {XenConnection.PrivcmdPath} exists, this machine runs Xen.");
            return;
        }
        var clock = Stopwatch.StartNew();
        // Open() as it runs with DE_XEN_SHIM_PATH unset: the other Xen tests set that variable process-wide to the fake
        // shim, which Open() then opens without privcmd (XenNamesAndTotalsTests), so it is passed in here, not read.
        var e = Assert.Throws<XenException>(() => XenConnection.Open(shimPathVariable: null));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1), $"took {clock.Elapsed}");
        Assert.Equal("XenNotAvailable", e.ErrorId);
        Assert.Equal(DEErrorKind.ResourceUnavailable, e.Kind);
        Assert.Equal(XenConnection.PrivcmdPath, e.Target);
        Assert.Contains(XenConnection.PrivcmdPath, e.Message);
        Assert.Contains("dom0", e.Message);
        Assert.IsAssignableFrom<DEException>(e);
    }
}
