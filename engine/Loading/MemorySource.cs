using Microsoft.Win32.SafeHandles;

namespace DifferenceEngine.Loading;

/// <summary>
/// Real guest memory from outside the engine (a raw image, an ELF core dump, a live Linux process),
/// laid out as a guest-physical space of 4 KiB pages and copied page by page into an <see cref="IGuestPageSink"/>.
/// </summary>
public abstract class MemorySource : IDisposable
{
    /// <summary>Largest guest-physical space a source may describe (64 GiB); larger ones fail with "ImageTooLarge".</summary>
    public const long MaxGuestBytes = LoadGeometry.MaxGuestBytes;

    private bool _disposed;

    // Sources are the formats this assembly knows; nobody else derives.
    private protected MemorySource()
    {
    }

    public abstract MemorySourceFormat Format { get; }

    /// <summary>For people: e.g. "/images/web1.img (raw image)", "pid 1234 (python3)".</summary>
    public abstract string Description { get; }

    /// <summary>Size of the guest-physical space in 4 KiB pages: the size of the domain to load it into.</summary>
    public abstract long PageCount { get; }

    /// <summary>
    /// At most how many pages a load passes to its sink (each gets a frame): every page of a raw image or a process, only
    /// the pages a core's segments have file bytes for (the rest of its address space, holes included, stays zero).
    /// </summary>
    public virtual long PagesWithData => PageCount;

    /// <summary>
    /// Passes every page that has data to <paramref name="sink"/>, each gfn at most once, in increasing gfn order.
    /// Pages not passed are zero. Can be called more than once; each call reads the source again.
    /// </summary>
    public LoadReport CopyTo(IGuestPageSink sink, CancellationToken cancellationToken = default)
    {
        if (sink is null)
        {
            throw new DEException("SinkNull", DEErrorKind.InvalidArgument, "CopyTo needs a page sink.", nameof(sink));
        }

        if (_disposed)
        {
            throw new DEException("SourceDisposed", DEErrorKind.InvalidOperation,
                $"The memory source {Description} is closed.", Description);
        }

        cancellationToken.ThrowIfCancellationRequested();
        return CopyPages(sink, cancellationToken);
    }

    /// <summary>
    /// Opens an image or core file; the format is decided by the content, never by the extension: an ELF core
    /// (e_type ET_CORE) is read as a core, any other file as a raw image.
    /// </summary>
    public static MemorySource OpenFile(string path) => OpenFile(path, null);

    /// <summary>
    /// Opens an image or core file as <paramref name="format"/>: RawImage takes the bytes as they are, even a raw
    /// image that begins with a core's header; ElfCore insists on a valid core; null detects the format by content:
    /// a file whose header says ELF core (ET_CORE) is read as a core, any other file, one that starts with an
    /// executable's, a shared object's or an object file's ELF header included (a raw snapshot of a process begins
    /// with its executable's header), as a raw image. A core that cannot be read names the raw format in its error.
    /// </summary>
    public static MemorySource OpenFile(string path, MemorySourceFormat? format) => OpenFile(path, format, CancellationToken.None);

    /// <summary>
    /// <see cref="OpenFile(string, MemorySourceFormat?)"/>, ended by <paramref name="cancellationToken"/>
    /// (OperationCanceledException) while a core's program header table is read (a crafted sparse core can hold billions
    /// of entries).
    /// </summary>
    public static MemorySource OpenFile(string path, MemorySourceFormat? format, CancellationToken cancellationToken)
    {
        if (format == MemorySourceFormat.Process)
        {
            throw new DEException("SourceFormatInvalid", DEErrorKind.InvalidArgument,
                "A file is a RawImage or an ElfCore; processes are opened with OpenProcess.", format);
        }

        if (string.IsNullOrWhiteSpace(path))
        {
            throw new DEException("PathInvalid", DEErrorKind.InvalidArgument, "A memory image path is required.", path);
        }

        SafeFileHandle file = SourceFile.OpenRead(path);
        try
        {
            long length = RandomAccess.GetLength(file);
            Span<byte> head = stackalloc byte[ElfHeaders.DetectSize];
            int n = SourceFile.ReadAtMost(file, head, 0, path);
            bool core = format switch
            {
                MemorySourceFormat.RawImage => false,
                MemorySourceFormat.ElfCore => true,
                _ => ElfHeaders.IsCore(head[..n]),
            };
            return core ? OpenCore(file, path, length, cancellationToken) : RawImageSource.Open(file, path, length);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static ElfCoreSource OpenCore(SafeFileHandle file, string path, long length, CancellationToken cancellationToken)
    {
        try
        {
            return ElfCoreSource.Open(file, path, length, cancellationToken);
        }
        catch (DEException e) when (e.ErrorId.StartsWith("Elf", StringComparison.Ordinal))
        {
            // The same error (ElfBadMagic, ElfNotCore, ElfTruncated, ...), with the way out for a file not meant as a core.
            throw new DEException(e.ErrorId, e.Kind, $"{e.Message} {RawFormatHint}", e.Target, e);
        }
    }

    /// <summary>Appended to every refusal of a file as a core.</summary>
    internal const string RawFormatHint =
        "To load the file's bytes as a raw image instead, give the format RawImage (New-DEDomain -Format Raw).";

    /// <summary>
    /// Opens a live Linux process: the resident pages of its readable mappings (per /proc/PID/pagemap),
    /// one after another in address order; every mapped page when pagemap cannot be read.
    /// </summary>
    public static MemorySource OpenProcess(int processId) => OpenProcess(processId, CancellationToken.None);

    /// <summary>
    /// <see cref="OpenProcess(int)"/>, ended by <paramref name="cancellationToken"/> (OperationCanceledException) while
    /// the process's page map is read: 8 bytes for every page of every readable mapping, about 1.5 s a TiB of address
    /// space (a sanitizer's shadow memory reserves many).
    /// </summary>
    public static MemorySource OpenProcess(int processId, CancellationToken cancellationToken) =>
        OpenProcess(processId, OperatingSystem.IsLinux(), cancellationToken);

    // The platform is a parameter so the not-on-Linux refusal can be tested on Linux.
    internal static MemorySource OpenProcess(int processId, bool onLinux, CancellationToken cancellationToken = default) =>
        ProcessSource.Open(processId, onLinux, cancellationToken: cancellationToken);

    public override string ToString() => Description;

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        ReleaseHandles();
        GC.SuppressFinalize(this);
    }

    private protected abstract LoadReport CopyPages(IGuestPageSink sink, CancellationToken cancellationToken);

    /// <summary>
    /// Reads one guest page at random (a page no extent holds reads as zero); false when this kind of source cannot (a
    /// live process, whose pages are only read in one pass). For the fingerprint's few second looks.
    /// </summary>
    internal virtual bool TryReadPage(long gfn, Span<byte> page) => false;

    /// <summary>Reads guest page <paramref name="gfn"/> from file <paramref name="extents"/> (sorted by address); the rest of the page is zero.</summary>
    internal static bool ReadFromExtents(SafeFileHandle file, IReadOnlyList<GuestExtent> extents, long gfn, Span<byte> page)
    {
        if (_disposedCheck(file)) return false;
        page = page[..Memory.PageGeometry.PageSize];
        page.Clear();
        long start = gfn * Memory.PageGeometry.PageSize, end = start + Memory.PageGeometry.PageSize;
        foreach (var x in extents)
        {
            long from = Math.Max(start, x.Address), to = Math.Min(end, x.Address + x.FileLength);
            if (from >= to) continue;
            var part = page.Slice((int)(from - start), (int)(to - from));
            long offset = x.FileOffset + (from - x.Address);
            while (!part.IsEmpty)
            {
                int n;
                try
                {
                    n = RandomAccess.Read(file, part, offset);
                }
                catch (IOException)
                {
                    return false; // an I/O error on a second look: the page is unreadable, as when the file ended
                }
                if (n <= 0) return false;
                part = part[n..];
                offset += n;
            }
        }
        return true;
    }

    private static bool _disposedCheck(SafeFileHandle file) => file.IsClosed || file.IsInvalid;

    private protected abstract void ReleaseHandles();
}
