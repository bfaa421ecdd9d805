using DifferenceEngine.Qemu;
using DifferenceEngine.Tests.Engine;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// Which QEMU Start-DEGuest runs: the one its check found. A bare name is looked up in PATH's folders only, the first that
/// has it runnable; Process.Start would also have looked in the working folder and the program's own, so the file checked
/// and the file started could differ.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class QemuLookupTests
{
    private static string Executable(string folder, string name, bool runnable = true)
    {
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, name);
        File.WriteAllText(path, "#!/bin/sh\n");
        File.SetUnixFileMode(path, runnable ? UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            : UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return path;
    }

    [Fact]
    public void ABareNameIsTheFirstRunnableFileOfPathsFolders()
    {
        using var dir = new TempDir();
        string a = Path.Combine(dir.Path, "a"), b = Path.Combine(dir.Path, "b"), c = Path.Combine(dir.Path, "c");
        Executable(a, "qemu-x", runnable: false);
        string inB = Executable(b, "qemu-x");
        Executable(c, "qemu-x");
        Assert.Equal(inB, QemuGuestProcess.ResolveQemu("qemu-x", string.Join(':', a, b, c)));
    }

    [Fact]
    public void ARelativeFolderInPathIsNotLookedIn()
    {
        using var dir = new TempDir();
        string here = Path.Combine(dir.Path, "here");
        Executable(here, "qemu-x");
        string saved = Directory.GetCurrentDirectory();
        // "." and "" in PATH mean the working folder to a shell; the engine does not look there (the file would depend on
        // where the admin happens to stand).
        var ex = Assert.Throws<DEException>(() => QemuGuestProcess.ResolveQemu("qemu-x", ".:here:" + Path.Combine(dir.Path, "none")));
        Assert.Equal("QemuNotFound", ex.ErrorId);
        Assert.Equal(saved, Directory.GetCurrentDirectory());
    }

    [Fact]
    public void APathIsTakenAsItIs()
    {
        using var dir = new TempDir();
        string path = Executable(dir.Path, "qemu-x");
        Assert.Equal(path, QemuGuestProcess.ResolveQemu(path, ""));
        Assert.Equal("QemuNotFound", Assert.Throws<DEException>(() => QemuGuestProcess.ResolveQemu(path + "-missing", "")).ErrorId);
    }
}
