using DifferenceEngine.Reports;
using DifferenceEngine.Tests.Loading;

namespace DifferenceEngine.Tests.Reports;

public class ReportFileTests
{
    [Theory]
    [InlineData("r.html", ReportFormat.Html)]
    [InlineData("R.HTM", ReportFormat.Html)]
    [InlineData("r.json", ReportFormat.Json)]
    [InlineData("nightly.2025-01-01.csv", ReportFormat.Csv)]
    public void FormatFromExtension(string name, ReportFormat expected) => Assert.Equal(expected, ReportFile.FormatOf(name));

    [Theory]
    [InlineData("r.txt")]
    [InlineData("report")]
    [InlineData("r.html.bak")]
    public void UnknownExtensionIsAnError(string name)
    {
        var ex = Assert.Throws<DEException>(() => ReportFile.FormatOf(name));
        Assert.Equal("ReportFormatUnknown", ex.ErrorId);
        Assert.Equal(DEErrorKind.InvalidArgument, ex.Kind);
    }

    [Fact]
    public void WritesAFileOnlyItsOwnerCanRead()
    {
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        var file = ReportFile.WriteFile(ReportModel.FromHost(host), dir.File("r.json"), ReportFormat.Json, overwrite: false);
        Assert.True(file.Exists);
        Assert.StartsWith("{", File.ReadAllText(file.FullName));
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file.FullName));
        Assert.Equal(["r.json"], Directory.GetFiles(dir.Path).Select(Path.GetFileName)); // no temporary file left
    }

    [Fact]
    public void ReplacesAFileOnlyWhenAsked()
    {
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        string path = dir.Write("r.csv", "old"u8.ToArray());
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, (UnixFileMode)0b110_100_100);
        var model = ReportModel.FromHost(host);

        var ex = Assert.Throws<DEException>(() => ReportFile.WriteFile(model, path, ReportFormat.Csv, overwrite: false));
        Assert.Equal("ReportFileExists", ex.ErrorId);
        Assert.Equal(DEErrorKind.ResourceExists, ex.Kind);
        Assert.Equal("old", File.ReadAllText(path));

        ReportFile.WriteFile(model, path, ReportFormat.Csv, overwrite: true);
        Assert.StartsWith("Domain,", File.ReadAllText(path));
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void MissingFolderOrAFolderIsAnError()
    {
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        var model = ReportModel.FromHost(host);
        var missing = Assert.Throws<DEException>(() => ReportFile.WriteFile(model, dir.File("no/such/r.html"), ReportFormat.Html, false));
        Assert.Equal("ReportDirectoryNotFound", missing.ErrorId);
        Assert.Equal(DEErrorKind.ObjectNotFound, missing.Kind);
        Directory.CreateDirectory(dir.File("sub.html"));
        var folder = Assert.Throws<DEException>(() => ReportFile.WriteFile(model, dir.File("sub.html"), ReportFormat.Html, true));
        Assert.Equal("ReportPathIsDirectory", folder.ErrorId);
    }

    /// <summary>
    /// A symbolic link at the path is written through, the kernel following it: the file it leads to is the report
    /// (mode 0600), the link stays a link; a relative target's '..' is the kernel's (from the link's real folder, not
    /// its path's text); with -NoClobber a dangling link is refused.
    /// </summary>
    [Fact]
    public void ASymbolicLinkIsWrittenThroughAsTheKernelFollowsIt()
    {
        if (OperatingSystem.IsWindows()) return;
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        var model = ReportModel.FromHost(host);
        string target = dir.Write("target.json", "old"u8.ToArray());
        string link = dir.File("link.json");
        File.CreateSymbolicLink(link, target);
        var file = ReportFile.WriteFile(model, link, ReportFormat.Json, overwrite: true);
        Assert.Equal(link, file.FullName);
        Assert.Equal(target, new FileInfo(link).LinkTarget);
        Assert.StartsWith("{", File.ReadAllText(target));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(target));

        // cur -> a/b, and cur/r.json -> ../latest.json: the kernel means a/latest.json, the text cur/.. the folder itself.
        Directory.CreateDirectory(dir.File("a/b"));
        File.CreateSymbolicLink(dir.File("cur"), "a/b");
        File.CreateSymbolicLink(dir.File("a/b/r.json"), "../latest.json");
        ReportFile.WriteFile(model, dir.File("cur/r.json"), ReportFormat.Json, overwrite: true);
        Assert.StartsWith("{", File.ReadAllText(dir.File("a/latest.json")));
        Assert.False(File.Exists(dir.File("latest.json")));

        File.CreateSymbolicLink(dir.File("dangling.json"), dir.File("made-by-no-one.json"));
        Assert.Equal("ReportFileExists", Assert.Throws<DEException>(() => ReportFile.WriteFile(model, dir.File("dangling.json"), ReportFormat.Json, overwrite: false)).ErrorId);
        Assert.False(File.Exists(dir.File("made-by-no-one.json")));
    }

    /// <summary>
    /// A FIFO (as a character device, /dev/null, would be) is written into, never replaced by a file of the report: as
    /// root, a report to /dev/null once replaced the system's /dev/null with a regular file.
    /// </summary>
    [Fact]
    public async Task AFifoIsWrittenIntoAndStaysAFifo()
    {
        if (OperatingSystem.IsWindows()) return;
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        string fifo = dir.File("pipe.json");
        Assert.Equal(0, MakeFifo(fifo, 0x1A4 /* 0644 */));
        var reader = Task.Run(() => File.ReadAllText(fifo)); // opening blocks until the report opens it to write
        ReportFile.WriteFile(ReportModel.FromHost(host), fifo, ReportFormat.Json, overwrite: true);
        Assert.StartsWith("{", await reader);
        Assert.Equal(DifferenceEngine.Qemu.LinuxNative.S_IFIFO, DifferenceEngine.Qemu.LinuxNative.FileType(fifo));
        Assert.Equal((UnixFileMode)0x1A4, File.GetUnixFileMode(fifo)); // its mode left alone
        Assert.Equal(["pipe.json"], Directory.GetFileSystemEntries(dir.Path).Select(Path.GetFileName)); // no temporary file
        // Through a link too (as /dev/stdout leads to a pipe): the kernel's answer for what it leads to decides.
        string link = dir.File("stdout.json");
        File.CreateSymbolicLink(link, fifo);
        reader = Task.Run(() => File.ReadAllText(fifo));
        ReportFile.WriteFile(ReportModel.FromHost(host), link, ReportFormat.Json, overwrite: true);
        Assert.StartsWith("{", await reader);
        Assert.Equal(fifo, new FileInfo(link).LinkTarget);
        Assert.Equal(DifferenceEngine.Qemu.LinuxNative.S_IFIFO, DifferenceEngine.Qemu.LinuxNative.FileType(fifo));
    }

    [Fact]
    public void ASocketIsNotAReportFile()
    {
        if (OperatingSystem.IsWindows()) return;
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        string path = dir.File("socket.json");
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        socket.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
        var ex = Assert.Throws<DEException>(() => ReportFile.WriteFile(ReportModel.FromHost(host), path, ReportFormat.Json, overwrite: true));
        Assert.Equal("ReportPathNotAFile", ex.ErrorId);
        Assert.Equal(DEErrorKind.InvalidArgument, ex.Kind);
        Assert.Equal(DifferenceEngine.Qemu.LinuxNative.S_IFSOCK, DifferenceEngine.Qemu.LinuxNative.FileType(path));
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "mkfifo", SetLastError = true)]
    private static extern int MakeFifo(string path, uint mode);

    [Fact]
    public void ARemovedDomainIsNotFound()
    {
        using var host = ReportHosts.Build();
        var web1 = host.GetDomain("web1");
        host.RemoveDomain(web1);
        var ex = Assert.Throws<DEException>(() => ReportModel.FromHost(host, [web1]));
        Assert.Equal("DomainNotFound", ex.ErrorId);
    }
}
