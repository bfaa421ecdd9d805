using DifferenceEngine.Loading;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Bench.Corpus;

/// <summary>
/// Writes the pages a memory source gives into a raw image file (byte N of the file is guest byte N). The file is
/// created readable and writable by its owner only, before any byte is written: memory images hold secrets.
/// </summary>
internal sealed class RawImageWriter : IGuestPageSink, IDisposable
{
    private const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private readonly FileStream _stream;

    private RawImageWriter(FileStream stream) => _stream = stream;

    /// <summary>Snapshots a live process into a new raw image at <paramref name="path"/>; returns the pages it holds.</summary>
    public static long SnapshotProcess(int pid, string path)
    {
        using var source = MemorySource.OpenProcess(pid);
        using var writer = Create(path, source.PageCount);
        source.CopyTo(writer);
        return source.PageCount;
    }

    public static RawImageWriter Create(string path, long pageCount)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.ReadWrite, Share = FileShare.None };
        // Created with mode 0600 by open(2) itself: there is no moment when the file is readable by others.
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = OwnerOnly;
        var stream = new FileStream(path, options);
        try
        {
            // Pages never given stay zero: a sparse file of the full size.
            stream.SetLength(pageCount * PageGeometry.PageSize);
            return new RawImageWriter(stream);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public void SetPage(long gfn, ReadOnlySpan<byte> page)
    {
        // Zero pages are left as holes: they read back as zero all the same.
        if (page.ContainsAnyExcept((byte)0)) RandomAccess.Write(_stream.SafeFileHandle, page, gfn * PageGeometry.PageSize);
    }

    public void Dispose() => _stream.Dispose();
}

/// <summary>Keeps the pages a memory source gives in memory, by gfn (for the micro-benchmarks' corpus).</summary>
internal sealed class PageCollector : IGuestPageSink
{
    public SortedDictionary<long, byte[]> Pages { get; } = [];

    public void SetPage(long gfn, ReadOnlySpan<byte> page) => Pages[gfn] = page.ToArray();

    public static PageCollector SnapshotProcess(int pid)
    {
        var sink = new PageCollector();
        using var source = MemorySource.OpenProcess(pid);
        source.CopyTo(sink);
        return sink;
    }
}
