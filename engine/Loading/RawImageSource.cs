using Microsoft.Win32.SafeHandles;
using static DifferenceEngine.Loading.LoadGeometry;

namespace DifferenceEngine.Loading;

/// <summary>A flat image of guest-physical memory: byte N of the file is guest-physical byte N.</summary>
internal sealed class RawImageSource : MemorySource
{
    private readonly SafeFileHandle _file;
    private readonly string _path;
    private readonly long _length;

    private RawImageSource(SafeFileHandle file, string path, long length)
    {
        _file = file;
        _path = path;
        _length = length;
        Description = $"{Path.GetFullPath(path)} (raw image)";
    }

    public override MemorySourceFormat Format => MemorySourceFormat.RawImage;

    public override string Description { get; }

    public override long PageCount => _length >> PageShift;

    public static RawImageSource Open(SafeFileHandle file, string path, long length)
    {
        if (length == 0)
        {
            throw new DEException("ImageEmpty", DEErrorKind.InvalidData, $"Memory image '{path}' is empty.", path);
        }

        if ((length & PageMask) != 0)
        {
            throw new DEException("ImageNotPageAligned", DEErrorKind.InvalidData,
                $"Memory image '{path}' is {length} bytes, not a multiple of the {PageSize}-byte page " +
                $"({length & PageMask} bytes past page {length >> PageShift}): it is truncated or not page-aligned.",
                path);
        }

        if (length > MaxGuestBytes)
        {
            throw LoadErrors.TooLarge($"Memory image '{path}'", (ulong)length, path);
        }

        return new RawImageSource(file, path, length);
    }

    private protected override LoadReport CopyPages(IGuestPageSink sink, CancellationToken cancellationToken)
    {
        // Zero pages are passed too: telling them apart is the engine's job, not the loader's.
        var counters = new LoadCounters
        {
            PagesLoaded = PageCopier.Copy(_file, _path, [new GuestExtent(0, 0, _length)], sink, cancellationToken),
            RegionsRead = 1,
        };
        return counters.ToReport(Format);
    }

    internal override bool TryReadPage(long gfn, Span<byte> page) =>
        gfn >= 0 && gfn < PageCount && ReadFromExtents(_file, [new GuestExtent(0, 0, _length)], gfn, page);

    private protected override void ReleaseHandles() => _file.Dispose();
}
