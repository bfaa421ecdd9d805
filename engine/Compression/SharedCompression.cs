using DifferenceEngine.Clock;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Patching;
using DifferenceEngine.Store;

namespace DifferenceEngine.Compression;

/// <summary>
/// A cold Shared page a pass saw, with the frame it shares, or a cold Patched page with its reference frame (16 bytes;
/// a patch's gfn is kept complemented, <see cref="ForPatch"/>).
/// </summary>
internal readonly record struct SharedCandidate(uint Frame, int DomainId, long Gfn)
{
    /// <summary>A cold patch whose reference is <paramref name="frame"/>.</summary>
    public static SharedCandidate ForPatch(uint frame, int domainId, long gfn) => new(frame, domainId, ~gfn);

    /// <summary>Whether the candidate is a patch holding the frame as its reference, not a page sharing it.</summary>
    public bool IsPatch => Gfn < 0;

    /// <summary>The candidate's page.</summary>
    public long Page => Gfn < 0 ? ~Gfn : Gfn;
}

/// <summary>
/// Compression of cold shared frames, run once per pass after the pages are swept. A shared frame is compressed when
/// every reference it has is a page the pass saw cold (C4, unmodified) in a domain with compression on: then the
/// frame is compressed once into a blob of the compact store, each of those pages names the blob
/// (<see cref="SharedBlobTable"/>), and the frame is freed. A frame that serves patches as their reference is compressed
/// the same way when those patches are cold too (the pass collects them with their reference frame): each gets a new
/// blob naming the shared blob instead of the frame (<see cref="EncodedPage.ReferenceInSharedBlob"/>), checked against
/// the frame before anything changes, and the blob counts them among its names.
/// </summary>
/// <remarks>
/// <para>The engine keeps no reverse map from frames to the pages that share them; the pass's sweep is that map for
/// the moment it needs one. Every page of a group is then try-locked (never waited for: a busy page leaves its frame
/// for the next pass) and checked again, and the frame's reference count is compared with the group's size under the
/// sharing index's stripe lock, the only place it changes: equal means no page or patch outside the group holds the
/// frame, and none can take it while the locks are held.</para>
/// <para>The codec is that of the group's first domain (lowest id; with page groups on, the groups' codec, Zstd by default: a shared blob
/// joins a group only after more idle sweeps, <see cref="SharedGrouping"/>, and is never a single LZ4 blob first) and the threshold the strictest of the group's
/// domains. A page that names the blob gets a frame of its own again on its next access (a Decompress fault).</para>
/// <para>Allocates nothing per page: the candidates live in the pass's buffer (native memory, freed when the pass ends),
/// and groups are found in place.</para>
/// </remarks>
internal static class SharedCompression
{
    [ThreadStatic] private static ulong[]? t_entries;
    [ThreadStatic] private static Domain?[]? t_domains;
    [ThreadStatic] private static ulong[]? t_patches;

    /// <summary>Chunks of the sorted candidates per worker (<see cref="Run"/>).</summary>
    private const int ChunksPerWorker = 32;

    private static readonly Comparison<SharedCandidate> ByFrameThenPage = static (a, b) =>
        a.Frame != b.Frame ? a.Frame.CompareTo(b.Frame)
        : a.DomainId != b.DomainId ? a.DomainId.CompareTo(b.DomainId)
        : a.Gfn.CompareTo(b.Gfn);

    /// <summary>Compresses the frames whose every sharer and patch is among <paramref name="candidates"/> (sorted in place).</summary>
    public static EncodeCounters Run(DEHost host, PassBuffer<SharedCandidate> candidates, int parallelism)
    {
        var total = new EncodeCounters();
        int n = candidates.Count;
        if (n == 0) return total;
        candidates.Items.Sort(ByFrameThenPage);
        // Many more chunks than workers: frames differ widely in work (a frame with many patches rewrites each), and with a
        // few chunks a worker was left with the last heavy one (session 26, the guest images: 4 per worker left the
        // phase at 1.3 workers busy on average; 32 per worker cut its time by a fifth).
        int chunks = Math.Max(1, Math.Min(parallelism * ChunksPerWorker, n / 64));
        var gate = new object();
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, k =>
        {
            var items = candidates.Items;
            // Chunk k takes the groups that start in [k n / chunks, (k + 1) n / chunks).
            int start = GroupStart(items, (int)((long)k * n / chunks));
            int end = GroupStart(items, (int)((long)(k + 1) * n / chunks));
            var c = new EncodeCounters();
            for (int i = start; i < end;)
            {
                int j = i + 1;
                while (j < items.Length && items[j].Frame == items[i].Frame) j++;
                // The quick, unlocked filter: a frame with more references than the pass saw cold pages stays.
                if (host.Frames.RefCount(items[i].Frame) == j - i)
                    TryCompressGroup(host, items.Slice(i, j - i), ref c);
                i = j;
            }
            lock (gate) total.Add(c);
        });
        return total;
    }

    /// <summary>The first index at or after <paramref name="i"/> where a group (a run of one frame) begins.</summary>
    private static int GroupStart(Span<SharedCandidate> items, int i)
    {
        while (i > 0 && i < items.Length && items[i].Frame == items[i - 1].Frame) i++;
        return i;
    }

    private static void TryCompressGroup(DEHost host, Span<SharedCandidate> group, ref EncodeCounters c)
    {
        int count = group.Length;
        if (t_entries is null || t_entries.Length < count)
        {
            t_entries = new ulong[Math.Max(count, 64)];
            t_domains = new Domain?[Math.Max(count, 64)];
            t_patches = new ulong[Math.Max(count, 64)];
        }
        var entries = t_entries;
        var domains = t_domains!;
        var patches = t_patches!;
        int taken = 0;
        try
        {
            for (; taken < count; taken++)
            {
                var d = host.TryGetDomainById(group[taken].DomainId);
                if (d is null || d.IsRemoved || group[taken].Page >= d.PageCount) return;
                domains[taken] = d;
                if (!d.TryLock(group[taken].Page, out entries[taken]))
                {
                    c.Contended++;
                    return;
                }
            }
            uint frame = group[0].Frame;
            var first = domains[0]!;
            var store = host.Store;
            double threshold = double.MaxValue;
            int patchCount = 0;
            for (int i = 0; i < count; i++)
            {
                var d = domains[i]!;
                ulong e = entries[i];
                if (d.IsRemoved || !d.Policy.CompressionEnabled || d.Policy.TrustGroup != first.Policy.TrustGroup
                    || (e & (PageEntry.Modified | PageEntry.Referenced)) != 0 || !PageClock.MayCompressOrSwap(PageEntry.Category(e)))
                    return;
                if (group[i].IsPatch)
                {
                    // Still a patch against this very frame (the engine rewrites no patch but here, under these locks).
                    if (PageEntry.State(e) != PageState.Patched) return;
                    var patch = store.Get(PageEntry.Payload(e));
                    if (patch.Length < EncodedPage.PatchHeader || EncodedPage.Kind(patch) != EncodedKind.Patch
                        || EncodedPage.ReferenceIsSharedBlob(patch) || EncodedPage.ReferenceFrame(patch) != frame)
                        return;
                    patchCount++;
                }
                else if (PageEntry.State(e) != PageState.Shared || PageEntry.Frame(e) != frame) return;
                threshold = Math.Min(threshold, d.Policy.CompressionThreshold);
            }
            // Its pages and patches already idle as long as a page must before grouping: nominated at once, so the pass
            // groups it with the other blobs it makes (SharedGrouping) instead of a pass later. In the name of the frame's
            // first sharing page (the lowest domain and page; a patch's page sorts first in its domain), where its
            // neighbours in the guest are, when that page's domain groups; else, as a frame only patches hold, in the
            // name of the first entry's (its domain the lowest).
            int by = 0;
            while (by < count && group[by].IsPatch) by++;
            if (by == count || domains[by]!.Policy.GroupSize < 2) by = 0;
            bool atOnce = domains[by]!.Policy.GroupSize >= 2;
            for (int i = 0; i < count && atOnce; i++)
                atOnce = PageEntry.Idle(entries[i]) >= GroupCompression.GroupAfterIdle(domains[i]!.Policy);
            var frames = host.Frames;
            var index = host.SharingIndexFor(first.Policy.TrustGroup);
            ulong hash = index.HashOf(frame);
            lock (index.Stable.StripeLock(hash))
            {
                if (frames.RefCount(frame) != count) return;
                var page = frames.Span(frame);
                byte[] blob = Scratch.A;
                // The first domain's codecs (with page groups on, the groups', which a shared blob keeps until it is grouped; else its own),
                // under the strictest threshold. A blob grouped in this very pass keeps its single copy only until then:
                // the groups' codec at its fast level, its usual one only for a near miss (as the fallback for a private page).
                if (!CompressionPass.TryEncode(first.Policy, threshold, page, blob, out int length, groupCodecFirst: true, groupFast: atOnce))
                {
                    // Not tried again until one of the pages is written (a patch: rebuilt) or a domain's compression policy changes.
                    for (int i = 0; i < count; i++) entries[i] |= PageEntry.Incompressible;
                    c.Incompressible += count - patchCount;
                    return;
                }
                var table = host.SharedBlobs;
                uint id = table.Reserve();
                // Each patch gets a new blob naming the shared blob, made before anything changes: its old one is decoded
                // against the frame and checked first (one that does not hold is left for its own fault to report).
                int made = 0;
                bool rewritten = true;
                for (int i = 0; i < count && rewritten; i++)
                {
                    if (!group[i].IsPatch) continue;
                    rewritten = TryRewritePatch(store, page, store.Get(PageEntry.Payload(entries[i])), id, out patches[i], ref c);
                    if (rewritten) made = i + 1;
                }
                if (!rewritten || !store.TryStore(blob.AsSpan(0, length), out ulong handle))
                {
                    for (int i = 0; i < made; i++)
                        if (group[i].IsPatch) store.Free(patches[i]);
                    table.Abandon(id);
                    if (rewritten) c.StoreFull++;
                    return;
                }
                // Every page and every patch that holds the frame now names the blob instead.
                table.Publish(id, handle, count);
                // Every entry names its new blob before the frame and the old patches go.
                for (int i = 0; i < count; i++)
                {
                    if (group[i].IsPatch)
                        (entries[i], patches[i]) = (PageEntry.WithPayload(entries[i], PageState.Patched, patches[i]), PageEntry.Payload(entries[i]));
                    else entries[i] = PageEntry.WithSharedBlob(entries[i], id);
                }
                index.Stable.RemoveIf(hash, frame);
                frames.Free(frame);
                for (int i = 0; i < count; i++)
                    if (group[i].IsPatch) store.Free(patches[i]); // the old patch blob
                if (atOnce) host.NominateSharedBlobs([SharedGrouping.Nomination(group[by].DomainId, group[by].Page, id)]);
                c.SharedFramesCompressed++;
                c.PagesCompressed += count - patchCount;
                c.PatchesOnCompressedReferences += patchCount;
                c.CompressedBytes += length;
            }
        }
        finally
        {
            for (int i = 0; i < taken; i++) domains[i]!.Unlock(group[i].Page, entries[i]);
            // The one whose lock failed too: the thread-static array must not keep a removed domain alive.
            Array.Clear(domains, 0, Math.Min(taken + 1, count));
        }
    }

    /// <summary>
    /// A copy of <paramref name="patch"/> (a patch against <paramref name="reference"/>, the frame being compressed) that
    /// names shared blob <paramref name="id"/> instead, stored under a new handle; false, storing nothing, when the patch
    /// does not rebuild its page against the frame or the store is full.
    /// </summary>
    private static bool TryRewritePatch(CompactStore store, ReadOnlySpan<byte> reference, ReadOnlySpan<byte> patch, uint id, out ulong handle,
        ref EncodeCounters c)
    {
        handle = 0;
        var plain = Scratch.C;
        try
        {
            DeltaCodec.Decode(reference, patch[EncodedPage.PatchHeader..], plain);
        }
        catch (DEException)
        {
            return false;
        }
        if (EncodedPage.Checksum(plain, patch) != EncodedPage.StoredChecksum(patch)) return false;
        var copy = Scratch.B.AsSpan(0, patch.Length);
        patch.CopyTo(copy);
        EncodedPage.WritePatchHeader(copy, plain, id, EncodedPage.ReferencePage(patch), EncodedPage.ReferenceInSharedBlob);
        if (store.TryStore(copy, out handle)) return true;
        c.StoreFull++;
        return false;
    }
}
