using DifferenceEngine.Fleet;
using DifferenceEngine.Tests.Engine;

namespace DifferenceEngine.Tests.Fleet;

/// <summary>Key files that are not files, and a key file that cannot be written: clear errors, no secret left behind.</summary>
public sealed class FleetKeyFileTests
{
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "mkfifo", SetLastError = true)]
    private static extern int MakeFifo(string path, uint mode);

    /// <summary>Opening a FIFO to read waits for a writer: it is refused before it is opened.</summary>
    [Fact]
    public void AFifoIsNotAKeyFileAndIsRefusedWithoutWaiting()
    {
        if (OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "key.fifo");
        Assert.Equal(0, MakeFifo(path, 0x180));
        var e = Assert.Throws<DEException>(() => FleetKey.FromFile(path));
        Assert.Equal("FleetKeyFileInvalid", e.ErrorId);
        Assert.Contains("FIFO", e.Message, StringComparison.Ordinal);
    }

    /// <summary>A key file name the file system takes (255 bytes at most) is written: the temporary name, which added 13
    /// bytes to it, is short now.</summary>
    [Fact]
    public void ALongButValidKeyFileNameIsWritten()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, new string('k', 250) + ".key"); // 254 bytes
        FleetKey.CreateFile(path, overwrite: false);
        Assert.Equal(32, new FileInfo(path).Length);
        Assert.Equal([Path.GetFileName(path)], Directory.GetFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void ADirectoryIsNotAKeyFileNorAMissingOne()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<DEException>(() => FleetKey.FromFile(dir.Path));
        Assert.Equal("FleetKeyFileInvalid", e.ErrorId);
        Assert.Contains("directory", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AShortKeyFileIsInvalidDataNamingTheFile()
    {
        if (OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "short.key");
        File.WriteAllBytes(path, new byte[8]);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var e = Assert.Throws<DEException>(() => FleetKey.FromFile(path));
        Assert.Equal("FleetKeyFileInvalid", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
        Assert.Equal(path, e.Target);
    }

    /// <summary>A key written where a directory is, with or without -Force: refused, and no copy of the secret is left.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AKeyFileThatCannotBeWrittenLeavesNoSecretBehind(bool overwrite)
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "key.dir");
        Directory.CreateDirectory(path);
        var e = Assert.Throws<DEException>(() => FleetKey.CreateFile(path, overwrite));
        Assert.Equal("FleetKeyFileUnwritable", e.ErrorId);
        Assert.Contains("directory", e.Message, StringComparison.Ordinal);
        Assert.Equal(["key.dir"], Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void AKeyFileInAMissingFolderIsDirectoryNotFound()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<DEException>(() => FleetKey.CreateFile(Path.Combine(dir.Path, "no", "fleet.key"), overwrite: false));
        Assert.Equal("FleetKeyDirectoryNotFound", e.ErrorId);
        Assert.Equal(DEErrorKind.ObjectNotFound, e.Kind);
    }

    /// <summary>A rename that fails after the secret was written (a dangling symbolic link holds the name): the temporary file goes too.</summary>
    [Fact]
    public void AFailedRenameLeavesNoSecretBehind()
    {
        if (OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "fleet.key");
        File.CreateSymbolicLink(path, Path.Combine(dir.Path, "missing", "target"));
        var e = Assert.Throws<DEException>(() => FleetKey.CreateFile(path, overwrite: false));
        Assert.True(e.ErrorId is "FleetKeyFileUnwritable" or "FleetKeyFileExists", e.ErrorId);
        Assert.Equal(["fleet.key"], Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }
}
