using Microsoft.Win32.SafeHandles;

namespace DifferenceEngine.Loading;

/// <summary>An ELF core dump (QEMU dump-guest-memory, gdb gcore, a kernel core) read as guest-physical memory.</summary>
internal sealed class ElfCoreSource : MemorySource
{
    private readonly SafeFileHandle _file;
    private readonly string _path;
    private readonly ElfLayout _layout;

    private ElfCoreSource(SafeFileHandle file, string path, ElfHeaders headers, ElfLayout layout)
    {
        _file = file;
        _path = path;
        _layout = layout;
        string kind = layout.ProcessLayout ? "process core, segments packed" : "guest-physical core";
        Description = $"{Path.GetFullPath(path)} ({headers.ClassName} {kind})";
    }

    public override MemorySourceFormat Format => MemorySourceFormat.ElfCore;

    public override string Description { get; }

    public override long PageCount => _layout.PageCount;

    /// <summary>The pages the segments' file bytes touch (each extent's first and last page in full: an upper bound).</summary>
    public override long PagesWithData => _layout.Extents.Sum(x =>
        ((x.Address + x.FileLength + Memory.PageGeometry.PageMask) >> Memory.PageGeometry.PageShift) - (x.Address >> Memory.PageGeometry.PageShift));

    public static ElfCoreSource Open(SafeFileHandle file, string path, long length, CancellationToken cancellationToken = default)
    {
        ElfHeaders headers = ElfHeaders.Read(file, path, length);
        List<ElfProgramHeader> loads = headers.ReadLoadSegments(file, path, cancellationToken);
        return new ElfCoreSource(file, path, headers, ElfLayout.Build(loads, path, length));
    }

    private protected override LoadReport CopyPages(IGuestPageSink sink, CancellationToken cancellationToken)
    {
        long loaded = PageCopier.Copy(_file, _path, _layout.Extents, sink, cancellationToken);
        var counters = new LoadCounters
        {
            PagesLoaded = loaded,
            PagesNotResident = _layout.PagesWithMemory - loaded + _layout.PagesNotDumped,
            PagesZeroFilled = _layout.ProcessLayout ? 0 : _layout.PagesWithMemory - loaded,
            RegionsRead = _layout.Extents.Length,
        };
        return counters.ToReport(Format);
    }

    internal override bool TryReadPage(long gfn, Span<byte> page) =>
        gfn >= 0 && gfn < PageCount && ReadFromExtents(_file, _layout.Extents, gfn, page);

    private protected override void ReleaseHandles() => _file.Dispose();
}
