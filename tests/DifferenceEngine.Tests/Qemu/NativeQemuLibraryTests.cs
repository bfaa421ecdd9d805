using System.Diagnostics;
using DifferenceEngine.Tests.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// The C tests of libdeqemu.so (tests/native/test_deqemu.c): a stand-in for QEMU runs with the library preloaded, and
/// the test program pages its RAM through the userfaultfd the library hands over, kills an engine mid-fault and attaches
/// another; and those of libdeguard.so, the engine's read guard. Run here so they count in the totals.
/// </summary>
public class NativeQemuLibraryTests(ITestOutputHelper output)
{
    [RequiresFact(Requirement.QemuPager)]
    public async Task CTestsOfTheLibraryPass()
    {
        string folder = QemuNativeBuild.Folder;
        string stdout = await NativeBuild.RunCTests(new ProcessStartInfo(Path.Combine(folder, "test_deqemu"))
        {
            ArgumentList = { Path.Combine(folder, "libdeqemu.so"), Path.Combine(folder, "fakeguest") },
        }, output);
        Assert.Contains("# 7 passed, 0 failed", stdout);
    }

    /// <summary>
    /// The C tests of libdeguard.so (tests/native/test_deguard.c), the engine's native read guard: present pages read as
    /// they are, holes QEMU made get a zero page, a hole the engine punched stops the process (in a child).
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public async Task CTestsOfTheReadGuardPass()
    {
        string folder = QemuNativeBuild.Folder;
        string stdout = await NativeBuild.RunCTests(new ProcessStartInfo(Path.Combine(folder, "test_deguard")), output);
        Assert.Contains("# 8 passed, 0 failed", stdout);
    }
}
