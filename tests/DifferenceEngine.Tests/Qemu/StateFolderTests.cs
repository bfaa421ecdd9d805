using System.Runtime.InteropServices;
using DifferenceEngine.Qemu;
using DifferenceEngine.Tests.Engine;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>The folder of a guest's socket, console and pid file must be the engine user's own: no one else may write there.</summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public partial class StateFolderTests
{
    private const UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    [LibraryImport("libc", EntryPoint = "chown", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Chown(string path, uint owner, uint group);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint GetEuid();

    [Fact]
    public void ANewFolderIsMadeOwnerOnly()
    {
        using var dir = new TempDir();
        string folder = Path.Combine(dir.Path, "state");
        QemuGuestProcess.CreatePrivateFolder(folder);
        Assert.Equal(Private, File.GetUnixFileMode(folder));
        QemuGuestProcess.CreatePrivateFolder(folder); // and is taken as it is the next time
    }

    [Fact]
    public void AFolderOthersMayWriteIsRefused()
    {
        using var dir = new TempDir();
        string folder = Path.Combine(dir.Path, "open");
        Directory.CreateDirectory(folder);
        File.SetUnixFileMode(folder, Private | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
                                     | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute);
        var e = Assert.Throws<DEException>(() => QemuGuestProcess.CreatePrivateFolder(folder));
        Assert.Equal("GuestStatePathUnsafe", e.ErrorId);
        Assert.Equal(DEErrorKind.PermissionDenied, e.Kind);
        Assert.Contains("writable by others", e.Message);
        File.SetUnixFileMode(folder, Private | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        QemuGuestProcess.CreatePrivateFolder(folder); // readable by others but written by its owner only: taken
    }

    [Fact]
    public void ASymbolicLinkIsNotFollowed()
    {
        using var dir = new TempDir();
        string target = Path.Combine(dir.Path, "target"), link = Path.Combine(dir.Path, "link");
        QemuGuestProcess.CreatePrivateFolder(target);
        File.CreateSymbolicLink(link, target);
        var e = Assert.Throws<DEException>(() => QemuGuestProcess.CreatePrivateFolder(link));
        Assert.Equal("GuestStatePathUnsafe", e.ErrorId);
        Assert.Contains("symbolic link", e.Message);
    }

    [Fact]
    public void AFolderOfAnotherUserIsRefused()
    {
        using var dir = new TempDir();
        string folder;
        if (GetEuid() == 0)
        {
            // As root: a folder made over to nobody (65534).
            folder = Path.Combine(dir.Path, "theirs");
            QemuGuestProcess.CreatePrivateFolder(folder);
            Assert.Equal(0, Chown(folder, 65534, 65534));
        }
        else
        {
            folder = "/"; // root's, not this user's
        }
        var e = Assert.Throws<DEException>(() => QemuGuestProcess.CreatePrivateFolder(folder));
        Assert.Equal("GuestStatePathUnsafe", e.ErrorId);
        Assert.Contains("belongs to uid", e.Message);
    }
}
