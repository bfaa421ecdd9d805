using System.Runtime.CompilerServices;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Patching;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Compression;

/// <summary>
/// Compression of one cold page with its domain's codec, accepted only when the result is within the
/// policy's threshold; the blob goes to the compact store and the frame is freed.
/// </summary>
internal static class CompressionPass
{
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static ulong TryCompress(DEHost host, Domain domain, long gfn, ulong e, ref EncodeCounters c)
    {
        var policy = domain.Policy;
        var frames = host.Frames;
        uint frame = PageEntry.Frame(e);
        var page = frames.Span(frame);
        int limit = (int)(PageGeometry.PageSize * policy.CompressionThreshold) - EncodedPage.CompressedHeader;
        if (limit <= 0) return e;
        byte[] blob = Scratch.A;
        var compressor = PageCompressors.Get(policy.CompressionAlgorithm);
        if (!compressor.TryCompress(page, blob.AsSpan(EncodedPage.CompressedHeader, limit), out int written))
        {
            c.Incompressible++;
            return e | PageEntry.Incompressible; // not tried again until written or the policy changes
        }
        int length = EncodedPage.CompressedHeader + written;
        EncodedPage.WriteCompressedHeader(blob, page, policy.CompressionAlgorithm);
        if (!host.Store.TryStore(blob.AsSpan(0, length), SharingIndex.PackPage(domain.Id, gfn), out ulong handle))
        {
            c.StoreFull++;
            return e;
        }
        frames.Free(frame);
        c.PagesCompressed++;
        c.CompressedBytes += length;
        return PageEntry.WithPayload(e, PageState.Compressed, handle);
    }

    /// <summary>Zero and one-word pages need no frame and no blob: their content fits in the entry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryFold(FramePool frames, ref ulong e, ref EncodeCounters c, ref SharingCounters s)
    {
        var page = frames.Span(PageEntry.Frame(e));
        if (!PageHasher.IsUniform(page, out uint word)) return false;
        frames.Free(PageEntry.Frame(e));
        if (word == 0)
        {
            s.ZeroPagesFound++;
            s.FramesFreed++;
            e = PageEntry.With(e, PageState.Zero, 0);
        }
        else
        {
            c.UniformPagesFound++;
            s.FramesFreed++;
            e = PageEntry.WithPayload(e, PageState.Uniform, word);
        }
        return true;
    }
}
