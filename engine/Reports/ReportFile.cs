using System.Text;
using DifferenceEngine.Qemu;

namespace DifferenceEngine.Reports;

/// <summary>
/// Writes reports to files that only their owner can read (0600 on Unix): the report names domains and
/// shows how much memory each one saves, which is nobody else's business. The file is written under a
/// temporary name in the same folder and renamed into place, so a reader never sees half a report and
/// an overwritten file never keeps its old mode.
/// </summary>
public static class ReportFile
{
    private const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>The format a file name's extension stands for (.html/.htm, .json, .csv); null for any other.</summary>
    public static ReportFormat? FormatFromExtension(string path) =>
        Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".html" or ".htm" => ReportFormat.Html,
            ".json" => ReportFormat.Json,
            ".csv" => ReportFormat.Csv,
            _ => null,
        };

    /// <summary>The format of <paramref name="path"/>'s extension; "ReportFormatUnknown" for any other extension.</summary>
    public static ReportFormat FormatOf(string path) =>
        FormatFromExtension(path) ?? throw new DEException("ReportFormatUnknown", DEErrorKind.InvalidArgument,
            $"'{path}' does not end in .html, .htm, .json or .csv: give the format with -Format Html, Json or Csv.", path);

    /// <summary>
    /// Checks that a report can be written to <paramref name="path"/> (a full path): its folder exists
    /// ("ReportDirectoryNotFound"), it is not a folder ("ReportPathIsDirectory"), and, unless
    /// <paramref name="overwrite"/>, no file is there yet ("ReportFileExists"); a file there that is read-only
    /// (no write permission for anyone) is replaced only with <paramref name="replaceReadOnly"/> ("ReportFileReadOnly"),
    /// as Export-Csv replaces one only with -Force.
    /// </summary>
    public static void CheckTarget(string path, bool overwrite, bool replaceReadOnly = false)
    {
        string? folder = Path.GetDirectoryName(path);
        if (string.IsNullOrEmpty(folder) || !Directory.Exists(folder))
            throw new DEException("ReportDirectoryNotFound", DEErrorKind.ObjectNotFound,
                $"The folder of '{path}' does not exist; create it first.", path);
        if (Directory.Exists(path))
            throw new DEException("ReportPathIsDirectory", DEErrorKind.InvalidArgument,
                $"'{path}' is a folder; give the path of the report file.", path);
        if (!overwrite && File.Exists(path))
            throw FileExists(path);
        if (!replaceReadOnly && IsReadOnly(path))
            throw new DEException("ReportFileReadOnly", DEErrorKind.PermissionDenied,
                $"'{path}' is read-only; use -Force to replace it all the same.", path);
    }

    /// <summary>A file that nobody may write (Unix), or that has the read-only attribute (Windows).</summary>
    private static bool IsReadOnly(string path)
    {
        if (OperatingSystem.IsWindows()) return File.Exists(path) && File.GetAttributes(path).HasFlag(FileAttributes.ReadOnly);
        if (LinuxNative.FileType(path) != LinuxNative.S_IFREG) return false; // nothing there yet (a dangling link too), or not a file
        return (File.GetUnixFileMode(path) & (UnixFileMode.UserWrite | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) == 0;
    }

    /// <summary>Writes the report in <paramref name="format"/> to <paramref name="stream"/> as UTF-8 (no BOM); the stream stays open.</summary>
    public static void Write(ReportModel model, ReportFormat format, Stream stream)
    {
        using var text = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true);
        Write(model, format, text);
    }

    /// <summary>Writes the report in <paramref name="format"/> to <paramref name="writer"/>.</summary>
    public static void Write(ReportModel model, ReportFormat format, TextWriter writer)
    {
        switch (format)
        {
            case ReportFormat.Html: HtmlReport.Write(model, writer); break;
            case ReportFormat.Json: JsonReport.Write(model, writer); break;
            case ReportFormat.Csv: CsvReport.Write(model, writer); break;
            default: throw new ArgumentOutOfRangeException(nameof(format), format, "Not a report format.");
        }
    }

    /// <summary>
    /// Writes the report to a new file at <paramref name="path"/>, readable and writable by its owner
    /// only; replaces a file there only with <paramref name="overwrite"/>, and a read-only one only with
    /// <paramref name="replaceReadOnly"/> too. Errors: those of <see cref="CheckTarget"/>, and
    /// "ReportWriteFailed" when the file system refuses.
    /// </summary>
    /// <param name="cancellationToken">Ends (OperationCanceledException) the wait for a reader of a FIFO, before anything
    /// is written: opening a FIFO to write waits until some process opens it to read.</param>
    public static FileInfo WriteFile(ReportModel model, string path, ReportFormat format, bool overwrite, bool replaceReadOnly = false,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        string full = Path.GetFullPath(path);
        CheckTarget(full, overwrite, replaceReadOnly);
        CheckNotPlanted(full);
        // What the path names, as the kernel resolves it (links followed by the kernel, never by this code: the kernel's
        // link protections apply, and a relative target's '..' means what it means to the kernel).
        switch (LinuxNative.FileType(full))
        {
            case var type and (LinuxNative.S_IFBLK or LinuxNative.S_IFSOCK):
                throw new DEException("ReportPathNotAFile", DEErrorKind.InvalidArgument,
                    $"'{full}' is a {(type == LinuxNative.S_IFBLK ? "block device" : "socket")}, not a file a report can be written to.", full);
            case LinuxNative.S_IFIFO:
                // Written into, never replaced (below); its open waits for a reader, as long as the caller lets it.
                return WriteIntoFifo(model, full, format, cancellationToken);
            case LinuxNative.S_IFCHR:
                // A character device (/dev/null, a terminal, /dev/stdout), as a FIFO, is written into, never replaced: it
                // is not a file this report makes, so nothing is renamed over it and its mode is left alone.
                return WriteInto(model, full, format, FileMode.Open);
        }
        // A symbolic link is written through, as Export-Csv writes: the file it leads to is truncated and written (made
        // with mode 0600 when the link dangles; -NoClobber then refuses, as the kernel does), the link left as it is; but
        // only a link the kernel's fs.protected_symlinks would follow, and only into a file of this user's own.
        if (!OperatingSystem.IsWindows() && new FileInfo(full).LinkTarget is not null)
            return WriteInto(model, full, format, overwrite ? FileMode.OpenOrCreate : FileMode.CreateNew);
        string folder = Path.GetDirectoryName(full)!;
        // Not named after the report: a name of up to 255 bytes must leave room for what a temporary name adds.
        string temp = Path.Combine(folder, $".de-report-{Guid.NewGuid():N}.tmp");
        try
        {
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
            if (!OperatingSystem.IsWindows()) options.UnixCreateMode = OwnerOnly;
            using (var stream = new FileStream(temp, options))
            {
                // The umask can only take bits away from the create mode; set it exactly all the same.
                if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(stream.SafeFileHandle, OwnerOnly);
                Write(model, format, stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite);
            return new FileInfo(full);
        }
        catch (IOException) when (!overwrite && File.Exists(full))
        {
            throw FileExists(full); // created by someone else since the check
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new DEException("ReportWriteFailed", DEErrorKind.WriteError, $"Could not write the report '{full}': {ex.Message}", full, ex);
        }
        finally
        {
            TryDelete(temp); // still there only when something failed before the rename
        }
    }

    /// <summary>
    /// Writes the report into what <paramref name="path"/> leads to, opened by the kernel with <paramref name="mode"/>:
    /// a device or FIFO as it is (<see cref="FileMode.Open"/>), or the file at the end of a symbolic link (made, or
    /// truncated once it is found to be this user's own ("ReportLinkTargetNotOwned" when not); then mode 0600, set on the
    /// open file).
    /// </summary>
    private static FileInfo WriteInto(ReportModel model, string path, ReportFormat format, FileMode mode)
    {
        try
        {
            var options = new FileStreamOptions { Mode = mode, Access = FileAccess.Write, Share = FileShare.ReadWrite };
            bool makes = mode != FileMode.Open;
            if (makes && !OperatingSystem.IsWindows()) options.UnixCreateMode = OwnerOnly;
            using var stream = new FileStream(path, options);
            bool file = false;
            var status = makes && !OperatingSystem.IsWindows() ? LinuxNative.StatusOf(stream.SafeFileHandle) : null;
            if (makes && status is null)
            {
                // Not to be looked at (a C library without statx; Windows): a file is at least emptied before it is written.
                file = stream.CanSeek;
                if (file) stream.SetLength(0);
            }
            else if (status is { } found)
            {
                // A link may lead anywhere the kernel lets this user write: as root, into another user's file, which
                // would keep its owner and so be theirs to read. Nothing is written into it (it was opened, not truncated).
                file = found.Type == LinuxNative.S_IFREG;
                uint self = LinuxNative.GetEuid();
                if (file && found.Owner != self)
                    throw new DEException("ReportLinkTargetNotOwned", DEErrorKind.PermissionDenied,
                        $"'{path}' is a symbolic link to '{new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName}', " +
                        $"a file of uid {found.Owner}, not of this process's uid {self}: the report, written into it, would be " +
                        "theirs to read. Give the path of a file of your own, or remove the link.", path);
                if (file)
                {
                    if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(stream.SafeFileHandle, OwnerOnly);
                    stream.SetLength(0);
                }
            }
            Write(model, format, stream);
            stream.Flush(flushToDisk: file);
            return new FileInfo(path);
        }
        catch (IOException) when (mode == FileMode.CreateNew)
        {
            throw FileExists(path); // a dangling link: the kernel will not make its target under -NoClobber
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new DEException("ReportWriteFailed", DEErrorKind.WriteError, $"Could not write the report '{path}': {ex.Message}", path, ex);
        }
    }

    /// <summary>
    /// Writes the report into the FIFO at <paramref name="path"/> once a reader has it open: the open is tried without
    /// waiting (ENXIO while no process reads it) every 20 ms until one does or <paramref name="cancellationToken"/> is
    /// cancelled; a plain open would wait in the kernel, where Ctrl-C cannot reach it.
    /// </summary>
    private static FileInfo WriteIntoFifo(ReportModel model, string path, ReportFormat format, CancellationToken cancellationToken)
    {
        if (OperatingSystem.IsWindows()) return WriteInto(model, path, format, FileMode.Open);
        const int WriteOnly = 1;
        int fd;
        while ((fd = LinuxNative.Open(path, WriteOnly | LinuxNative.O_NONBLOCK | LinuxNative.O_CLOEXEC, 0)) < 0)
        {
            int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (errno != LinuxNative.ENXIO)
                throw new DEException("ReportWriteFailed", DEErrorKind.WriteError,
                    $"Could not write the report '{path}': {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)}", path);
            cancellationToken.WaitHandle.WaitOne(20);
            cancellationToken.ThrowIfCancellationRequested();
        }
        using var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        // Writes wait for the reader again (a full pipe), as any writer of a FIFO does.
        int flags = LinuxNative.Fcntl(fd, LinuxNative.F_GETFL, 0);
        if (flags >= 0) LinuxNative.Fcntl(fd, LinuxNative.F_SETFL, flags & ~LinuxNative.O_NONBLOCK);
        try
        {
            using var stream = new FileStream(handle, FileAccess.Write);
            Write(model, format, stream);
            stream.Flush();
            return new FileInfo(path);
        }
        catch (IOException ex)
        {
            throw new DEException("ReportWriteFailed", DEErrorKind.WriteError, $"Could not write the report '{path}': {ex.Message}", path, ex);
        }
    }

    /// <summary>
    /// Refuses ("ReportPathUntrusted") a symbolic link or a FIFO that another user may have planted where the report is
    /// to go: in a folder that everyone may write and that has the sticky bit (/tmp), and made by neither this process's
    /// user nor the folder's owner. The report would go where they chose (a link into a file of theirs), or to them (their
    /// FIFO). The kernel's fs.protected_symlinks and fs.protected_fifos refuse the like, when the system turns them on.
    /// </summary>
    private static void CheckNotPlanted(string path)
    {
        if (LinuxNative.StatusOf(path, followLinks: false) is not { Type: LinuxNative.S_IFLNK or LinuxNative.S_IFIFO } entry) return;
        string folder = Path.GetDirectoryName(path)!;
        if (LinuxNative.StatusOf(folder, followLinks: true) is not { } parent) return;
        bool everyones = (parent.Mode & LinuxNative.S_ISVTX) != 0 && (parent.Mode & 0x2) != 0;
        uint self = LinuxNative.GetEuid();
        if (everyones && entry.Owner != self && entry.Owner != parent.Owner)
            throw new DEException("ReportPathUntrusted", DEErrorKind.PermissionDenied,
                $"'{path}' is a {(entry.Type == LinuxNative.S_IFLNK ? "symbolic link" : "FIFO")} of uid {entry.Owner} in '{folder}', " +
                "a folder anyone may write: another user may have put it there to have the report. Write the report to a folder of your own.", path);
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A leftover hidden temporary file is better than hiding the error that matters.
        }
    }

    private static DEException FileExists(string path) =>
        new("ReportFileExists", DEErrorKind.ResourceExists, $"'{path}' already exists, and -NoClobber says not to replace it.", path);
}
