using DifferenceEngine.Xen;

namespace DifferenceEngine.Tests.Xen;

/// <summary>
/// A fact about a machine that does not run Xen (no <see cref="XenConnection.PrivcmdPath"/>): reported as skipped, with the
/// reason, on a Xen dom0, where what it checks cannot happen. It needs no native build.
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class WithoutXenFactAttribute : FactAttribute
{
    public WithoutXenFactAttribute()
    {
        if (File.Exists(XenConnection.PrivcmdPath))
        {
            Skip = $"{XenConnection.PrivcmdPath} exists: this machine runs Xen, so there is no 'Xen not available' to see.";
        }
    }
}
