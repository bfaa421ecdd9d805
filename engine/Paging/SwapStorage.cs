using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using static DifferenceEngine.Qemu.LinuxNative;

namespace DifferenceEngine.Paging;

/// <summary>Where swapped pages are written: a file in production, a fault-injecting wrapper in tests.</summary>
internal interface ISwapStorage : IDisposable
{
    string Path { get; }
    long Length { get; }
    bool DirectIo { get; }

    /// <summary>Writes one page at a page-aligned offset from page-aligned memory; throws IOException on failure.</summary>
    void Write(long offset, ReadOnlySpan<byte> page);

    /// <summary>Reads one page; throws IOException on failure or a short read.</summary>
    void Read(long offset, Span<byte> page);

    /// <summary>Makes every write so far durable (fdatasync).</summary>
    void Flush();
}

/// <summary>
/// The swap file: created private (0600) and exclusively, preallocated so a write never meets a full
/// disk, opened with O_DIRECT where the file system allows (no page-cache copy of guest memory),
/// flushed with fdatasync before any frame is released. Its name is removed as soon as it is reserved: the open
/// descriptor keeps it, so nothing of it (guest memory) stays on disk when the process ends, however it ends; its
/// space is given back when it is closed. Nothing needs it after the process: a QEMU guest's pages are in its crash
/// journal, and the other backends' guests live in the engine's process.
/// </summary>
internal sealed class SwapFile : ISwapStorage
{
    private readonly SafeFileHandle _handle;
    private bool _disposed;

    private readonly bool _named;

    private SwapFile(string path, SafeFileHandle handle, long length, bool direct, bool named)
    {
        Path = path;
        _named = named;
        _handle = handle;
        Length = length;
        DirectIo = direct;
    }

    /// <summary>The path it was made at (no longer its name: see the class).</summary>
    public string Path { get; }
    public long Length { get; }
    public bool DirectIo { get; }

    /// <summary>The open file's descriptor (its flags are in /proc/self/fdinfo).</summary>
    internal int Descriptor => (int)_handle.DangerousGetHandle();

    public static SwapFile Create(string path, long length)
    {
        if (!OperatingSystem.IsLinux())
            throw new DEException("SwapUnsupported", DEErrorKind.NotImplemented, "Hypervisor paging to a swap file is built for Linux only.", path);
        if (File.Exists(path) || Directory.Exists(path))
            throw new DEException("SwapFileExists", DEErrorKind.ResourceExists,
                $"'{path}' already exists; the swap file must be a new file (its name is removed once it is made).", path);
        string? dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (dir is null || !Directory.Exists(dir))
            throw new DEException("SwapDirectoryNotFound", DEErrorKind.ObjectNotFound, $"The folder of swap file '{path}' does not exist.", path);
        // Created without O_DIRECT, which is then asked for: a file system that refuses it (tmpfs before Linux 6.6, and
        // some others) refuses it to open(2) only after creating the file, so a second open with O_EXCL would meet the
        // file the first one made. fcntl(F_SETFL) refuses it with no such effect: buffered I/O with fdatasync then.
        int fd = Open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0x180 /* 0600 */);
        bool direct = false;
        if (fd >= 0)
        {
            int flags = Fcntl(fd, F_GETFL, 0);
            direct = flags >= 0 && Fcntl(fd, F_SETFL, flags | O_DIRECT) == 0;
        }
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new DEException("SwapFileCreateFailed", DEErrorKind.WriteError,
                $"Cannot create swap file '{path}': {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).", path);
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        // Unnamed at once, before the reservation (which glibc may emulate by writing every block: seconds for a large
        // file, a window in which a killed process would leave the name behind); should the unlink fail, the name goes
        // when the file is closed.
        bool named = Unlink(path) != 0;
        int rc = PosixFallocate(fd, 0, length);
        if (rc != 0)
        {
            handle.Dispose();
            if (named) TryDelete(path);
            throw new DEException(rc == ENOSPC ? "SwapDiskFull" : "SwapFileCreateFailed", DEErrorKind.WriteError,
                $"Cannot reserve {length} bytes for swap file '{path}': {Marshal.GetPInvokeErrorMessage(rc)} (errno {rc}).", path);
        }
        return new SwapFile(path, handle, length, direct, named);
    }

    public void Write(long offset, ReadOnlySpan<byte> page) => RandomAccess.Write(_handle, page, offset);

    public void Read(long offset, Span<byte> page)
    {
        int n = RandomAccess.Read(_handle, page, offset);
        if (n != page.Length) throw new IOException($"Short read from the swap file: {n} of {page.Length} bytes at offset {offset}.");
    }

    public void Flush()
    {
        if (Fdatasync(_handle.DangerousGetHandle().ToInt32()) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"fdatasync of the swap file failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).");
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _handle.Dispose();
        if (_named) TryDelete(Path);
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
