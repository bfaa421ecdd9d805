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
        byte[] blob = Scratch.A;
        if (!TryEncode(policy, page, blob, out int length))
        {
            c.Incompressible++;
            return e | PageEntry.Incompressible; // not tried again until written or the policy changes
        }
        if (!host.Store.TryStore(blob.AsSpan(0, length), out ulong handle))
        {
            c.StoreFull++;
            return e;
        }
        frames.Free(frame);
        c.PagesCompressed++;
        c.CompressedBytes += length;
        return PageEntry.WithPayload(e, PageState.Compressed, handle);
    }

    /// <summary>
    /// Encodes a page as a single compressed blob (header included) into <paramref name="blob"/> under the policy's
    /// threshold: with the domain's codec, or, with page groups on, the groups' codec (Zstd by default) when the first
    /// does not shrink the page enough (it would be grouped with that codec anyway once long cold). False: neither did.
    /// </summary>
    public static bool TryEncode(DomainPolicy policy, ReadOnlySpan<byte> page, byte[] blob, out int length) =>
        TryEncode(policy, policy.CompressionThreshold, page, blob, out length);

    /// <summary>
    /// As above, under <paramref name="threshold"/> (a shared frame takes the strictest of its pages' domains). With
    /// <paramref name="groupCodecFirst"/> and page groups on, the groups' codec is the one used (a compressed shared frame
    /// gets the groups' codec at once: it stays a blob of its own until it is grouped with other shared blobs, if ever).
    /// </summary>
    public static bool TryEncode(DomainPolicy policy, double threshold, ReadOnlySpan<byte> page, byte[] blob, out int length,
        bool groupCodecFirst = false, bool groupFast = false)
    {
        length = 0;
        if (!TryCompressBody(policy, threshold, page, blob.AsSpan(EncodedPage.CompressedHeader), out int written, out var algorithm, groupCodecFirst, groupFast))
            return false;
        length = EncodedPage.CompressedHeader + written;
        EncodedPage.WriteCompressedHeader(blob, page, algorithm);
        return true;
    }

    /// <summary>
    /// The codec's bytes of a single blob (no header) into <paramref name="body"/> (room for a page at least), under
    /// <paramref name="threshold"/>, and the codec that made them: the domain's codec, or with page groups on the groups'
    /// codec when the first does not shrink the page enough. One rule, shared by the engine and the fingerprint
    /// (FingerprintBuilder), so what a fingerprint predicts is what the engine does.
    /// </summary>
    /// <remarks>
    /// A page LZ4 cannot shrink at all (its block would be a page or more: the page has next to no repeated 4-byte
    /// sequences) is tried with the groups' codec only when its order-0 entropy could bring it under the threshold
    /// (<see cref="PageEntropy"/>): with no repeats, what Zstd can still save is in coding the bytes' values. On real memory
    /// that tries about 2% of such pages and still finds 99% of those Zstd shrinks enough, while a Zstd try costs about
    /// 15 us a page, the most expensive thing a compression pass does on random or encrypted pages (docs/PERFORMANCE.md,
    /// "The fallback codec's gate").
    /// </remarks>
    /// <param name="groupFast">With <paramref name="groupCodecFirst"/>: the groups' codec at its fast level first, its usual
    /// level only for a near miss, as the fallback below (a shared blob grouped in the pass that makes it: its single
    /// copy is kept only until then).</param>
    public static bool TryCompressBody(DomainPolicy policy, double threshold, ReadOnlySpan<byte> page, Span<byte> body, out int written,
        out CompressionAlgorithm algorithm, bool groupCodecFirst = false, bool groupFast = false)
    {
        written = 0;
        int limit = (int)(PageGeometry.PageSize * threshold) - EncodedPage.CompressedHeader;
        algorithm = policy.CompressionAlgorithm;
        if (limit <= 0) return false;
        bool groups = policy.GroupSize >= 2;
        if (groups && groupCodecFirst) algorithm = policy.GroupAlgorithm;
        bool fallback = groups && policy.GroupAlgorithm != algorithm;
        // LZ4 with a fallback gets a page's room, to tell a page it shrank too little from one it could not shrink at all.
        bool gated = fallback && algorithm == CompressionAlgorithm.LZ4;
        int pageRoom = Math.Max(limit, Math.Min(PageGeometry.PageSize, body.Length));
        if (!(groups && groupCodecFirst && groupFast))
        {
            int room = gated ? pageRoom : limit;
            bool shrank = PageCompressors.Get(algorithm).TryCompress(page, body[..room], out written);
            if (shrank && written <= limit) return true;
            written = 0;
            if (!fallback || (gated && !shrank && PageEntropy.Order0Bytes(page) > limit)) return false;
        }
        // The fallback codec's fast level first, given a page's room to tell how far it missed; a page it brings to within
        // an eighth of the threshold is tried at the codec's usual level too, which may fit it (a page refused here is
        // marked incompressible and never grouped, so a near miss would cost more than the second try).
        var fast = PageCompressors.Fallback(policy.GroupAlgorithm);
        if (!fast.TryCompress(page, body[..pageRoom], out written))
        {
            written = 0;
            return false;
        }
        if (written > limit)
        {
            var usual = PageCompressors.Get(policy.GroupAlgorithm);
            if (fast == usual || written > limit + limit / 8 || !usual.TryCompress(page, body[..limit], out written))
            {
                written = 0;
                return false;
            }
        }
        algorithm = policy.GroupAlgorithm;
        return true;
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
