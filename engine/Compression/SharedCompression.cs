using System.Runtime.InteropServices;
using DifferenceEngine.Clock;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Patching;
using DifferenceEngine.Store;

namespace DifferenceEngine.Compression;

/// <summary>
/// A cold Shared page a pass saw, with the frame it shares, or a cold Patched page with its reference frame: 12 bytes (the
/// gfn kept in 31 bits, an embedded domain having at most 2^24 pages, its top bit telling a sharing page from a patch; 16
/// before session 36, with a 64-bit gfn).
/// </summary>
internal readonly record struct SharedCandidate
{
    /// <summary>Set in <see cref="SortKey"/> for a page sharing the frame, clear for a patch: in a domain, patches sort first.</summary>
    private const uint SharerFlag = 1u << 31;

    /// <summary>The largest gfn a candidate holds (an embedded domain's pages: LoadGeometry.MaxGuestBytes).</summary>
    public const long MaxGfn = SharerFlag - 1;

    private SharedCandidate(uint frame, int domainId, long gfn, bool patch)
    {
        if ((ulong)gfn > MaxGfn) throw new ArgumentOutOfRangeException(nameof(gfn), gfn, "A gfn of a shared candidate fits in 31 bits.");
        Frame = frame;
        DomainId = domainId;
        SortKey = (uint)gfn | (patch ? 0 : SharerFlag);
    }

    /// <summary>A cold page sharing <paramref name="frame"/>.</summary>
    public SharedCandidate(uint frame, int domainId, long gfn) : this(frame, domainId, gfn, patch: false) { }

    /// <summary>A cold patch whose reference is <paramref name="frame"/>.</summary>
    public static SharedCandidate ForPatch(uint frame, int domainId, long gfn) => new(frame, domainId, gfn, patch: true);

    public uint Frame { get; }

    public int DomainId { get; }

    /// <summary>The page's order within its domain: its gfn, patches before the pages sharing the frame.</summary>
    public uint SortKey { get; }

    /// <summary>Whether the candidate is a patch holding the frame as its reference, not a page sharing it.</summary>
    public bool IsPatch => (SortKey & SharerFlag) == 0;

    /// <summary>The candidate's page.</summary>
    public long Page => SortKey & ~SharerFlag;
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
/// <para>Frames are taken in the order of their first sharing page (<see cref="ByFirstPage"/>), and a blob whose pages and
/// patches are already idle as long as a page must before grouping is grouped by the worker that made it, with its
/// neighbours in that order, from the frames' bytes (<see cref="AtOnceGroup"/>): the same groups the pass's grouping of
/// nominations would form, without decoding the blobs just made (docs/ARCHITECTURE.md, "Groups of shared blobs").</para>
/// <para>Allocates nothing per page: the candidates and their runs live in the pass's buffers (native memory, freed when
/// the pass ends), groups are found in place, and each worker thread's gathering buffers are made once.</para>
/// </remarks>
internal static class SharedCompression
{
    [ThreadStatic] private static ulong[]? t_entries;
    [ThreadStatic] private static Domain?[]? t_domains;
    [ThreadStatic] private static ulong[]? t_patches;

    /// <summary>Chunks of the frames' runs per worker (<see cref="Run"/>).</summary>
    private const int ChunksPerWorker = 32;

    private static readonly Comparison<SharedCandidate> ByFrameThenPage = static (a, b) =>
        a.Frame != b.Frame ? a.Frame.CompareTo(b.Frame)
        : a.DomainId != b.DomainId ? a.DomainId.CompareTo(b.DomainId)
        : a.SortKey.CompareTo(b.SortKey);

    /// <summary>
    /// Orders frames' runs of sorted candidates, each given by the index of its first sharing page (its first candidate
    /// that is not a patch; a frame only patches hold: its first patch), by that page. A run is 4 bytes, that index; its
    /// start is found from it when the run is compressed (session 36: a run kept its page, 16 bytes, before, about a
    /// seventh of the program snapshots' metadata peak). Comparing reads the two pages only, whatever the runs' lengths.
    /// </summary>
    private readonly unsafe struct ByFirstPage(SharedCandidate* items) : IComparer<int>
    {
        public int Compare(int a, int b)
        {
            ref readonly var x = ref items[a];
            ref readonly var y = ref items[b];
            return x.DomainId != y.DomainId ? x.DomainId.CompareTo(y.DomainId) : x.Page.CompareTo(y.Page);
        }
    }

    /// <summary>
    /// Compresses the frames whose every sharer and patch is among <paramref name="candidates"/> (sorted in place), in
    /// the order of each frame's first sharing page (<paramref name="runs"/>, the pass's buffer for that order: the index
    /// of each run's first sharing page in the sorted candidates).
    /// </summary>
    public static unsafe EncodeCounters Run(DEHost host, PassBuffer<SharedCandidate> candidates, PassBuffer<int> runs, int parallelism)
    {
        var total = new EncodeCounters();
        int n = candidates.Count;
        if (n == 0) return total;
        candidates.Items.Sort(ByFrameThenPage);
        // Each frame's run of candidates, in the order of its first sharing page (a frame only patches hold: its first
        // patch's page), where its neighbours in the guest are: the blobs grouped at once (below) come out of each worker
        // in that order, as SharedGrouping orders nominations.
        runs.Clear();
        {
            var items = candidates.Items;
            Span<int> batch = stackalloc int[256];
            int b = 0;
            for (int i = 0; i < n;)
            {
                int j = i + 1;
                while (j < n && items[j].Frame == items[i].Frame) j++;
                int first = i;
                while (first < j && items[first].IsPatch) first++;
                batch[b++] = first == j ? i : first;
                if (b == batch.Length)
                {
                    runs.Add(batch);
                    b = 0;
                }
                i = j;
            }
            runs.Add(batch[..b]);
            // The candidates' memory is native (a pass buffer) and no worker appends now: its address holds still.
            fixed (SharedCandidate* pinned = items) runs.Items.Sort(new ByFirstPage(pinned));
        }
        int m = runs.Count;
        int chunks = ChunkCount(m, parallelism);
        int segments = Math.Max(1, Math.Min(parallelism, chunks));
        var cursors = Cursors(chunks, segments);
        var gate = new object();
        Parallel.For(0, segments, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, own =>
        {
            var atOnce = (t_atOnce ??= new AtOnceGroup()).Begin();
            try
            {
                Traverse(cursors, own, m, chunks, (r, cut) =>
                {
                    // The blobs gathered so far are not this run's neighbours: grouped (or nominated) first.
                    if (cut) atOnce.Flush(host);
                    var items = candidates.Items;
                    // The run around its first sharing page: back to its start, on to its end (the same frame).
                    int f = runs.Items[r], i = f, j = f + 1;
                    while (i > 0 && items[i - 1].Frame == items[f].Frame) i--;
                    while (j < n && items[j].Frame == items[f].Frame) j++;
                    // The quick, unlocked filter: a frame with more references than the pass saw cold pages stays.
                    if (host.Frames.RefCount(items[i].Frame) == j - i
                        && TryCompressGroup(host, items.Slice(i, j - i), atOnce.Staging, ref atOnce.Counters) is { } made)
                        atOnce.Add(host, made);
                });
                atOnce.Flush(host);
            }
            finally
            {
                var c = atOnce.Counters;
                atOnce.Reset();
                lock (gate) total.Add(c);
            }
        });
        return total;
    }

    /// <summary>
    /// Chunks of <paramref name="runs"/> frames' runs for <paramref name="parallelism"/> workers: many more chunks than
    /// workers, as frames differ widely in work (a frame with many patches rewrites each), and with a few chunks a worker
    /// was left with the last heavy one (session 26, the guest images: 4 per worker left the phase at 1.3 workers busy on
    /// average; 32 per worker cut its time by a fifth). At least one; about 64 runs each at least.
    /// </summary>
    internal static int ChunkCount(int runs, int parallelism) => Math.Max(1, Math.Min(parallelism * ChunksPerWorker, runs / 64));

    /// <summary>
    /// Per segment (one a worker, at most one a chunk), the next chunk to take from the front &lt;&lt; 32 | one past the last
    /// to take from the back: segment g owns chunks [g chunks / segments, (g + 1) chunks / segments).
    /// </summary>
    internal static long[] Cursors(int chunks, int segments)
    {
        var cursors = new long[segments];
        for (int g = 0; g < segments; g++) cursors[g] = ((long)g * chunks / segments << 32) | (uint)((long)(g + 1) * chunks / segments);
        return cursors;
    }

    /// <summary>
    /// The runs worker <paramref name="own"/> takes, in the order it takes them, each with whether it does not follow the
    /// worker's last run in page order (<c>cut</c>): first its own segment's chunks from the front, each forward, then
    /// the others' chunks from the back, each backward, so that a worker's runs follow one another (the gathering for a
    /// group carries across its chunks) and are cut only where it changes segment or another worker took the chunk next
    /// to its last. Cut at every chunk's end instead (Parallel.For over the chunks hands two workers alternate ones), the
    /// partial groups and lone blobs cost 0.2-0.25 MiB on the program snapshots (session 27). Chunk k holds runs
    /// [k m / chunks, (k + 1) m / chunks).
    /// </summary>
    internal static void Traverse(long[] cursors, int own, int m, int chunks, Action<int, bool> visit)
    {
        int segments = cursors.Length, last = -2;
        for (int v = 0; v < segments; v++)
        {
            bool forward = v == 0, newSegment = true;
            while (Take(cursors, (own + v) % segments, fromFront: forward, out int k))
            {
                bool cut = newSegment || last != (forward ? k - 1 : k + 1);
                newSegment = false;
                last = k;
                int first = (int)((long)k * m / chunks), end = (int)((long)(k + 1) * m / chunks);
                for (int x = first; x < end; x++)
                {
                    visit(forward ? x : end - 1 - (x - first), cut);
                    cut = false;
                }
            }
        }
    }

    /// <summary>Takes a chunk of <paramref name="segment"/>: its next from the front, or its last from the back; false when none is left.</summary>
    internal static bool Take(long[] cursors, int segment, bool fromFront, out int chunk)
    {
        while (true)
        {
            long current = Volatile.Read(ref cursors[segment]);
            int front = (int)(current >> 32), back = (int)(uint)current;
            if (front >= back)
            {
                chunk = -1;
                return false;
            }
            chunk = fromFront ? front : back - 1;
            long next = fromFront ? ((long)(front + 1) << 32) | (uint)back : ((long)front << 32) | (uint)(back - 1);
            if (Interlocked.CompareExchange(ref cursors[segment], next, current) == current) return true;
        }
    }

    [ThreadStatic] private static AtOnceGroup? t_atOnce;

    /// <summary>A shared blob made to be grouped at once: its id, handle and the page (domain, gfn) it is named after.</summary>
    private readonly record struct AtOnceBlob(uint Id, ulong Handle, Domain Domain, long Gfn);

    /// <summary>
    /// The blobs a worker made, in the order it takes the frames (<see cref="Traverse"/>), to be grouped at once (their
    /// pages and patches already idle as long as a page must before grouping): gathered with their frames' bytes, copied
    /// before the frames were freed, and grouped by the worker once the naming domain's group size is reached, with no
    /// decode (<see cref="SharedGrouping.FormKnown"/>). Blobs gathered when the worker's run of frames is cut, or the
    /// domain changes, are fewer than a group: they are nominated for SharedGrouping instead, which groups them with the
    /// pass's other nominations in page order (the other side of a cut among them). One per worker thread.
    /// </summary>
    private sealed class AtOnceGroup
    {
        private readonly AtOnceBlob[] _blobs = new AtOnceBlob[PageGroupTable.MaxMembers];
        private readonly uint[] _ids = new uint[PageGroupTable.MaxMembers];
        private readonly ulong[] _handles = new ulong[PageGroupTable.MaxMembers];
        private readonly SharedNomination[] _nominations = new SharedNomination[PageGroupTable.MaxMembers];
        // The gathered blobs' pages: grown to the largest group size met (4 pages by default), wiped up to the most used.
        private byte[] _pages = new byte[4 * PageGeometry.PageSize];
        private int _pagesUsed;
        // One codec choice per trust group in a worker's pass: what one learnt from its groups never steers another's.
        private readonly Dictionary<string, GroupCodecChoice> _choices = new(StringComparer.Ordinal);
        private int _count;

        /// <summary>What the worker's frames did (<see cref="Reset"/> starts it again).</summary>
        public EncodeCounters Counters;

        /// <summary>A worker's start in a pass: nothing gathered.</summary>
        public AtOnceGroup Begin()
        {
            Reset();
            return this;
        }

        /// <summary>Where <see cref="TryCompressGroup"/> copies the page of a blob made to be grouped at once.</summary>
        public byte[] Staging { get; } = new byte[PageGeometry.PageSize];

        /// <summary>Adds the blob whose page is in <see cref="Staging"/>; groups what is gathered once it is a whole group.</summary>
        public void Add(DEHost host, AtOnceBlob blob)
        {
            if (_count > 0 && _blobs[0].Domain != blob.Domain) Flush(host);
            int at = _count * PageGeometry.PageSize;
            if (_pages.Length < at + PageGeometry.PageSize)
            {
                var pages = new byte[Math.Min(2 * _pages.Length, PageGroupTable.MaxMembers * PageGeometry.PageSize)];
                _pages.AsSpan(0, at).CopyTo(pages);
                Array.Clear(_pages); // guest memory
                _pages = pages;
            }
            Staging.CopyTo(_pages.AsSpan(at));
            _pagesUsed = Math.Max(_pagesUsed, at + PageGeometry.PageSize);
            _blobs[_count++] = blob;
            if (_count >= blob.Domain.Policy.GroupSize) Flush(host);
        }

        /// <summary>
        /// Groups what is gathered when it is a whole group of a domain that still groups; nominates fewer (see the class);
        /// drops blobs of a domain removed meanwhile or that no longer groups (SharedGrouping would drop them too: they stay
        /// single blobs). Then starts again.
        /// </summary>
        public void Flush(DEHost host)
        {
            int count = _count;
            _count = 0;
            if (count == 0) return;
            try
            {
                var domain = _blobs[0].Domain;
                if (!SharedGrouping.GroupsFor(domain)) return;
                if (count < domain.Policy.GroupSize)
                {
                    for (int k = 0; k < count; k++) _nominations[k] = SharedGrouping.Nomination(domain.Id, _blobs[k].Gfn, _blobs[k].Id);
                    host.NominateSharedBlobs(_nominations.AsSpan(0, count));
                    return;
                }
                for (int k = 0; k < count; k++)
                {
                    _ids[k] = _blobs[k].Id;
                    _handles[k] = _blobs[k].Handle;
                }
                ref var choice = ref CollectionsMarshal.GetValueRefOrAddDefault(_choices, domain.Policy.TrustGroup, out _);
                SharedGrouping.FormKnown(host, domain.Policy, _ids.AsSpan(0, count), _handles.AsSpan(0, count),
                    _pages.AsSpan(0, count * PageGeometry.PageSize), ref choice, ref Counters);
            }
            finally
            {
                Array.Clear(_blobs, 0, count); // no domain kept alive by a thread-static
            }
        }

        /// <summary>Forgets what is gathered (a worker's start and end in a pass), and wipes the pages: they hold guest memory.</summary>
        public void Reset()
        {
            Array.Clear(_blobs);
            _count = 0;
            _choices.Clear(); // each worker's pass chooses afresh, from its own groups (GroupCodecChoice)
            Counters = default;
            Array.Clear(_pages, 0, _pagesUsed);
            _pagesUsed = 0;
            Array.Clear(Staging);
        }
    }

    /// <summary>
    /// Compresses the frame <paramref name="group"/> all holds, when it still may be; returns the blob when it was made to be
    /// grouped at once, its frame's bytes then copied into <paramref name="staging"/>; null otherwise.
    /// </summary>
    private static AtOnceBlob? TryCompressGroup(DEHost host, Span<SharedCandidate> group, byte[] staging, ref EncodeCounters c)
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
                if (d is null || d.IsRemoved || group[taken].Page >= d.PageCount) return null;
                domains[taken] = d;
                if (!d.TryLock(group[taken].Page, out entries[taken]))
                {
                    c.Contended++;
                    return null;
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
                    return null;
                if (group[i].IsPatch)
                {
                    // Still a patch against this very frame (the engine rewrites no patch but here, under these locks).
                    if (PageEntry.State(e) != PageState.Patched) return null;
                    var patch = store.Get(PageEntry.Payload(e));
                    if (patch.Length < EncodedPage.PatchHeader || EncodedPage.Kind(patch) != EncodedKind.Patch
                        || EncodedPage.ReferenceIsSharedBlob(patch) || EncodedPage.ReferenceFrame(patch) != frame)
                        return null;
                    patchCount++;
                }
                else if (PageEntry.State(e) != PageState.Shared || PageEntry.Frame(e) != frame) return null;
                threshold = Math.Min(threshold, d.Policy.CompressionThreshold);
            }
            // Its pages and patches already idle as long as a page must before grouping: grouped at once, by this worker with
            // the blobs it makes next (AtOnceGroup), instead of a pass later. In the name of the frame's
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
                if (frames.RefCount(frame) != count) return null;
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
                    return null;
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
                    return null;
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
                // The frame's bytes, for the group the worker forms at once (no decode of the blob just made from them).
                if (atOnce) page.CopyTo(staging);
                frames.Free(frame);
                for (int i = 0; i < count; i++)
                    if (group[i].IsPatch) store.Free(patches[i]); // the old patch blob
                c.SharedFramesCompressed++;
                c.PagesCompressed += count - patchCount;
                c.PatchesOnCompressedReferences += patchCount;
                c.CompressedBytes += length;
                return atOnce ? new AtOnceBlob(id, handle, domains[by]!, group[by].Page) : null;
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
