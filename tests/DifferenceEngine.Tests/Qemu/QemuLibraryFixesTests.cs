using System.Diagnostics;
using DifferenceEngine.Tests.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// The C tests of libdeqemu.so that start a guest of their own (test_deqemu ... own-guests, tests/native/test_deqemu.c):
/// a region mapped after an engine's hello is registered on the userfaultfd before a hello advertises it; a hello sends
/// only the memfds its regions are in (a share=off memfd has none), so the engine's descriptor count holds; an accept()
/// failing for want of descriptors backs off instead of spinning, and says so once; a DETACH queued behind a reply the
/// engine left unread (the connection reset) is still taken; a warning said while the library holds its lock waits to be
/// written until the lock is released, so a QEMU stderr nobody drains never keeps an engine's hello (or QEMU's own mmap)
/// waiting. Run here so they count in the totals.
/// </summary>
public class QemuLibraryFixesTests(ITestOutputHelper output)
{
    [RequiresFact(Requirement.QemuPager)]
    public async Task CTestsWithGuestsOfTheirOwnPass()
    {
        string folder = QemuNativeBuild.Folder;
        string stdout = await NativeBuild.RunCTests(new ProcessStartInfo(Path.Combine(folder, "test_deqemu"))
        {
            ArgumentList = { Path.Combine(folder, "libdeqemu.so"), Path.Combine(folder, "fakeguest"), "own-guests" },
        }, output);
        Assert.Contains("# 5 passed, 0 failed", stdout);
    }
}
