using System.Diagnostics;
using DifferenceEngine.Tests.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// The C tests of libdeqemu.so (tests/native/test_deqemu.c): a stand-in for QEMU runs with the library preloaded, and
/// the test program pages its RAM through the userfaultfd the library hands over, kills an engine mid-fault and attaches
/// another. Run here so they count in the totals.
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
}
