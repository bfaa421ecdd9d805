using System.Buffers;
using System.Runtime.CompilerServices;
using Microsoft.Win32.SafeHandles;
using static DifferenceEngine.Loading.LoadGeometry;

namespace DifferenceEngine.Loading;

/// <summary>
/// Streams file bytes to guest pages through one reused 1 MiB buffer. Extents may start and end mid-page
/// (QEMU cores do): a page shared by several extents is merged in a side buffer and passed once.
/// </summary>
[SkipLocalsInit]
internal static class PageCopier
{
    /// <summary>Copies <paramref name="extents"/> (sorted by address, not overlapping); returns the pages passed to the sink.</summary>
    public static long Copy(
        SafeFileHandle file,
        string path,
        ReadOnlySpan<GuestExtent> extents,
        IGuestPageSink sink,
        CancellationToken cancellationToken)
    {
        byte[] chunk = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        var pending = new PendingPage(stackalloc byte[PageSize]);
        long loaded = 0;
        try
        {
            foreach (GuestExtent extent in extents)
            {
                long address = extent.Address;
                long offset = extent.FileOffset;
                long remaining = extent.FileLength;
                while (remaining > 0)
                {
                    cancellationToken.ThrowIfCancellationRequested();

                    // Read so that chunk[0] is the start of a guest page: then whole pages go to the sink straight from the chunk.
                    int lead = (int)(address & PageMask);
                    int count = (int)Math.Min(remaining, ChunkBytes - lead);
                    SourceFile.ReadExactly(file, chunk.AsSpan(lead, count), offset, path);
                    loaded += Emit(chunk.AsSpan(0, lead + count), lead, address >> PageShift, sink, ref pending);
                    address += count;
                    offset += count;
                    remaining -= count;
                }
            }

            loaded += pending.Flush(sink);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }

        return loaded;
    }

    /// <summary>Passes the pages of <paramref name="window"/>, whose bytes before <paramref name="lead"/> are not data.</summary>
    private static long Emit(ReadOnlySpan<byte> window, int lead, long firstGfn, IGuestPageSink sink, ref PendingPage pending)
    {
        long loaded = 0;
        for (int pageStart = 0; pageStart < window.Length; pageStart += PageSize)
        {
            long gfn = firstGfn + (pageStart >> PageShift);
            int from = Math.Max(pageStart, lead);
            int to = Math.Min(pageStart + PageSize, window.Length);
            if (from == pageStart && to == pageStart + PageSize)
            {
                // An extent that covers a page whole is its only writer (extents do not overlap), so no merge.
                loaded += pending.Flush(sink);
                sink.SetPage(gfn, window.Slice(pageStart, PageSize));
                loaded++;
            }
            else
            {
                loaded += pending.Merge(gfn, window[from..to], from - pageStart, sink);
            }
        }

        return loaded;
    }

    /// <summary>The one partial page being assembled; extents come in address order, so a later gfn completes it.</summary>
    private ref struct PendingPage
    {
        private readonly Span<byte> _page;
        private long _gfn;

        public PendingPage(Span<byte> page)
        {
            _page = page;
            _gfn = -1;
        }

        public long Merge(long gfn, ReadOnlySpan<byte> part, int offsetInPage, IGuestPageSink sink)
        {
            long flushed = 0;
            if (gfn != _gfn)
            {
                flushed = Flush(sink);
                _page.Clear();
                _gfn = gfn;
            }

            part.CopyTo(_page[offsetInPage..]);
            return flushed;
        }

        public long Flush(IGuestPageSink sink)
        {
            if (_gfn < 0)
            {
                return 0;
            }

            sink.SetPage(_gfn, _page);
            _gfn = -1;
            return 1;
        }
    }
}
