using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Patching;
using DifferenceEngine.Store;

namespace DifferenceEngine.Compression;

/// <summary>
/// Page groups of shared blobs (docs/ARCHITECTURE.md, "Page groups"): the compressed copies of cold shared frames
/// (<see cref="SharedCompression"/>) compressed together, as long-cold pages of one domain are. A page that names a shared
/// blob keeps naming it by its id; only the blob's slot in <see cref="SharedBlobTable"/> changes, from a store handle to
/// a member of a group in <see cref="PageGroupTable"/> (the group's domain is <see cref="GroupCompression.SharedBlobsDomain"/>,
/// and each member is named by its blob id where a page group names a gfn). A fault on such a page decodes the group as
/// far as that blob (GroupCompression.DecodeMember) and checks it as any group member is checked.
/// </summary>
/// <remarks>
/// <para>When: a pass's page grouping (GroupSlice) nominates each single shared blob that one of its pages names once that
/// page has stayed untouched as long as a page must before it is grouped (the domain's policy: C4Sweeps +
/// GroupAfterSweeps sweeps), or SharedCompression nominates those it made when their pages and patches were that idle
/// already but that came fewer than a group where a worker's run of frames was cut (the others it groups itself, from the
/// frames' bytes: <see cref="FormKnown"/>), in the name of the frame's first sharing page; after the pass's sweep the nominated blobs are grouped in
/// the order of the page that nominated them (of several, the lowest domain and page), per that domain (its policy gives
/// the group size and codec: every page naming a blob is in one trust group, as sharing never crosses one). Neighbours
/// in a guest's memory are most alike: on Compare's inputs, groups in that order came out 3-4% smaller than in blob id
/// order, which follows the order the pass's workers compressed the frames in (session 26).</para>
/// <para>A nomination is read without the blob's lock: the host holds shared blob ids given back during a pass
/// (<see cref="IdSlotTable{TChunk}.HoldRecycled"/>) until the pass ends, so a nominated id that lost its last name meanwhile
/// is not live when it is grouped, and never names another trust group's blob.</para>
/// <para>Forming a group takes no page lock: each blob is decoded and checked under its id's stripe lock, the group is
/// compressed with no lock held and published, then each blob is moved into it under its stripe lock only if it still has
/// the very handle it was read from (a blob released or moved meanwhile leaves the group at once instead); the blobs'
/// own copies are freed only then. Lock order: a page's, then a blob's stripe, then a group's stripe.</para>
/// <para>A group that loses enough members (their last pages and patches gone) to hold more than those members took alone
/// is dissolved after a pass like any group (<see cref="Dissolve"/>): each live member becomes a store blob of its own
/// again, which a later pass may group with others.</para>
/// </remarks>
internal static class SharedGrouping
{
    /// <summary>
    /// Whether <paramref name="domain"/> still groups the shared blobs nominated in its name: not removed, compressing,
    /// with page groups on (its group size, at most <see cref="PageGroupTable.MaxMembers"/> by the policy's own check).
    /// </summary>
    internal static bool GroupsFor([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] Domain? domain) =>
        domain is { IsRemoved: false } && domain.Policy.GroupSize >= 2 && domain.Policy.CompressionEnabled;

    /// <summary>A nomination of blob <paramref name="blobId"/> by page <paramref name="gfn"/> of domain <paramref name="domainId"/>, which names it.</summary>
    public static SharedNomination Nomination(int domainId, long gfn, uint blobId) => new(domainId, blobId, gfn);

    private static readonly Comparison<SharedNomination> ByPage = static (a, b) =>
        a.DomainId != b.DomainId ? a.DomainId.CompareTo(b.DomainId) : a.Gfn.CompareTo(b.Gfn);

    private static readonly Comparison<SharedNomination> ByBlobThenPage = static (a, b) =>
        a.Blob != b.Blob ? a.Blob.CompareTo(b.Blob) : ByPage(a, b);

    /// <summary>
    /// Whether a page's entry names a single shared blob (not in a group yet, nor found not to pay in one, as far as an
    /// unlocked look tells) that is cold:
    /// then its blob is a candidate for a group once the page's idle sweeps reach the policy's (see the remarks).
    /// </summary>
    public static bool AwaitsGroup(DEHost host, ulong e) =>
        PageEntry.IsSharedBlob(e) && (e & (PageEntry.Modified | PageEntry.Referenced)) == 0
        && PageEntry.Category(e) == PageCategory.C4 && host.SharedBlobs.IsGroupableHint((uint)PageEntry.Payload(e));

    /// <summary>
    /// Groups the nominated blobs (<paramref name="nominations"/>, sorted in place and cleared); each blob once, under
    /// its lowest nominating domain and page, in runs of that domain's group size in the order of those pages.
    /// </summary>
    public static EncodeCounters Run(DEHost host, PassBuffer<SharedNomination> nominations, int parallelism)
    {
        var total = new EncodeCounters();
        try
        {
            // Nominations of domains that are gone or no longer group are dropped first, so another domain's stands.
            var all = nominations.Items;
            int kept = 0;
            foreach (var n in all)
                if (GroupsFor(host.TryGetDomainById(n.DomainId))) all[kept++] = n;
            if (kept < 2) return total;
            // By blob, the lowest domain and page first, each blob once; then by domain and page.
            var items = all[..kept];
            items.Sort(ByBlobThenPage);
            int unique = 0;
            for (int i = 0; i < items.Length; i++)
                if (unique == 0 || items[unique - 1].Blob != items[i].Blob) items[unique++] = items[i];
            items = items[..unique];
            items.Sort(ByPage);
            nominations.Truncate(unique);
            // Runs of one domain, cut into groups.
            var runs = new List<(int Start, int Count, Domain Domain)>();
            for (int i = 0; i < items.Length;)
            {
                int domainId = items[i].DomainId;
                int j = i + 1;
                while (j < items.Length && items[j].DomainId == domainId) j++;
                var domain = host.TryGetDomainById(domainId);
                int size = domain?.Policy.GroupSize ?? 0;
                if (GroupsFor(domain))
                    for (int k = i; k < j; k += size)
                        if (Math.Min(size, j - k) >= 2) runs.Add((k, Math.Min(size, j - k), domain));
                i = j;
            }
            if (runs.Count == 0) return total;
            // Cut into chunks per trust group, each chunk one trust group's runs: a chunk's codec choice learns from the
            // groups it made (GroupCodecChoice), and neither which runs a chunk holds nor what it learnt may depend on
            // another trust group's pages (a security audit: one group's stored streams followed another's content).
            var chunkList = new List<ArraySegment<int>>();
            foreach (var trust in runs.Select((r, index) => (r.Domain.Policy.TrustGroup, index))
                                      .GroupBy(t => t.TrustGroup, StringComparer.Ordinal))
            {
                int[] indexes = [.. trust.Select(t => t.index)]; // its runs, by domain and page, wherever other groups' fall
                int pieces = Math.Max(1, Math.Min(parallelism * 4, indexes.Length / 8));
                for (int p = 0; p < pieces; p++)
                {
                    int from = (int)((long)p * indexes.Length / pieces), to = (int)((long)(p + 1) * indexes.Length / pieces);
                    chunkList.Add(new ArraySegment<int>(indexes, from, to - from));
                }
            }
            var gate = new object();
            Parallel.For(0, chunkList.Count, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, k =>
            {
                var c = new EncodeCounters();
                var choice = new GroupCodecChoice();
                Span<uint> ids = stackalloc uint[PageGroupTable.MaxMembers];
                var sorted = nominations.Items;
                foreach (int r in chunkList[k])
                {
                    var (start, count, domain) = runs[r];
                    for (int m = 0; m < count; m++) ids[m] = sorted[start + m].Blob;
                    Form(host, domain.Policy, ids[..count], ref choice, ref c);
                }
                lock (gate) total.Add(c);
            });
            return total;
        }
        finally
        {
            nominations.Clear();
        }
    }

    /// <summary>Compresses blobs <paramref name="candidates"/> together and moves those still as read into the group.</summary>
    private static void Form(DEHost host, DomainPolicy policy, ReadOnlySpan<uint> candidates, ref GroupCodecChoice choice, ref EncodeCounters c) =>
        Form(host, policy, candidates, [], [], ref choice, ref c);

    /// <summary>
    /// <see cref="Form(DEHost, DomainPolicy, ReadOnlySpan{uint}, ref GroupCodecChoice, ref EncodeCounters)"/> for blobs
    /// whose pages the caller has: blob k was made with handle <paramref name="handles"/>[k] from the page at k × 4096 of
    /// <paramref name="pages"/> (the frame's bytes, copied before the frame was freed: SharedCompression). A blob is taken
    /// only if it still has that very handle, and its page only if it matches the checksum the blob stores; no decode.
    /// </summary>
    internal static void FormKnown(DEHost host, DomainPolicy policy, ReadOnlySpan<uint> candidates, ReadOnlySpan<ulong> handles,
        ReadOnlySpan<byte> pages, ref GroupCodecChoice choice, ref EncodeCounters c)
    {
        if (handles.Length != candidates.Length || pages.Length != candidates.Length * PageGeometry.PageSize)
            throw new ArgumentException("One handle and one page a blob.", nameof(pages));
        Form(host, policy, candidates, handles, pages, ref choice, ref c);
    }

    private static void Form(DEHost host, DomainPolicy policy, ReadOnlySpan<uint> candidates, ReadOnlySpan<ulong> known,
        ReadOnlySpan<byte> knownPages, ref GroupCodecChoice choice, ref EncodeCounters c)
    {
        var blobs = host.SharedBlobs;
        var groups = host.Groups;
        var store = host.Store;
        int planned = candidates.Length;
        int pagesAt = planned * GroupCompression.HeaderPerMember;
        byte[] plain = GroupCompression.Plain;
        Span<uint> ids = stackalloc uint[PageGroupTable.MaxMembers];
        Span<ulong> handles = stackalloc ulong[PageGroupTable.MaxMembers];
        int n = 0, singles = 0;
        for (int i = 0; i < candidates.Length; i++)
        {
            uint id = candidates[i];
            lock (blobs.StripeLock(id))
            {
                if (!blobs.IsLiveLocked(id) || blobs.TryGroupLocked(id, out _, out _) || blobs.IsUngroupableLocked(id)) continue;
                ulong handle = blobs.HandleLocked(id);
                if (!known.IsEmpty && handle != known[i]) continue; // not the blob the page was made into any more
                var blob = store.Get(handle);
                if (singles + blob.Length > PageGroupTable.MaxStreamBytes) break;
                var page = plain.AsSpan(pagesAt + n * PageGeometry.PageSize, PageGeometry.PageSize);
                if (known.IsEmpty)
                {
                    if (!TryDecode(blob, page)) continue; // left for its faults to report
                }
                else
                {
                    if (blob.Length < EncodedPage.CompressedHeader || EncodedPage.Kind(blob) != EncodedKind.Compressed) continue;
                    knownPages.Slice(i * PageGeometry.PageSize, PageGeometry.PageSize).CopyTo(page);
                    if (EncodedPage.Checksum(page, blob) != EncodedPage.StoredChecksum(blob)) continue;
                }
                ids[n] = id;
                handles[n] = handle;
                singles += blob.Length;
                n++;
            }
        }
        if (n < 2) return;
        int header = n * GroupCompression.HeaderPerMember;
        if (header != pagesAt) plain.AsSpan(pagesAt, n * PageGeometry.PageSize).CopyTo(plain.AsSpan(header));
        for (int k = 0; k < n; k++)
        {
            var page = plain.AsSpan(header + k * PageGeometry.PageSize, PageGeometry.PageSize);
            GroupCompression.WriteMemberHeader(plain, n, k, GroupCompression.PageChecksum(page, GroupCompression.SharedBlobsDomain, ids[k]), ids[k]);
        }
        var payload = plain.AsSpan(0, header + n * PageGeometry.PageSize);
        var codec = policy.GroupAlgorithm;
        byte[] stream = GroupCompression.Stream;
        if (!GroupCodec.TryCompress(codec, payload, stream, ref choice, Math.Min(singles, PageGroupTable.MaxStreamBytes + 1), out int written)
            || written > PageGroupTable.MaxStreamBytes || written >= singles)
        {
            // Not smaller than the blobs alone: they stay as they are, and are not nominated again.
            for (int k = 0; k < n; k++)
                lock (blobs.StripeLock(ids[k]))
                    if (StillAsRead(blobs, ids[k], handles[k])) blobs.MarkUngroupableLocked(ids[k]);
            c.GroupsRefused++;
            return;
        }
        uint group = groups.Reserve();
        if (group > SharedBlobTable.MaxGroupId)
        {
            groups.Abandon(group); // an id a blob's slot cannot name: the blobs stay as they are
            return;
        }
        uint hash = GroupCompression.StreamChecksum(stream.AsSpan(0, written), GroupCompression.SharedBlobsDomain, group);
        Span<ulong> pieces = stackalloc ulong[PageGroupTable.MaxPieces];
        if (!GroupCompression.TryStorePieces(store, stream.AsSpan(0, written), pieces, out int pieceCount))
        {
            groups.Abandon(group);
            c.StoreFull++;
            return;
        }
        groups.Publish(group, GroupCompression.SharedBlobsDomain, codec, n, pieces[..pieceCount], written, hash, singles);
        int moved = 0;
        for (int k = 0; k < n; k++)
        {
            lock (blobs.StripeLock(ids[k]))
            {
                if (StillAsRead(blobs, ids[k], handles[k]))
                {
                    blobs.MoveToGroupLocked(ids[k], group, k);
                    store.Free(handles[k]);
                    moved++;
                    continue;
                }
                // Released (or moved) since it was read: it was never the group's.
                lock (groups.StripeLock(group)) groups.LeaveLocked(group, k, store, host.Reclaimer?.Swap);
            }
        }
        if (moved == 0) return;
        c.SharedGroupsFormed++;
        c.SharedBlobsGrouped += moved;
        c.GroupStreamBytes += written;
        c.GroupSinglesBytes += singles;
    }

    /// <summary>Whether blob <paramref name="id"/> is live, single and still has <paramref name="handle"/>; under its stripe lock.</summary>
    private static bool StillAsRead(SharedBlobTable blobs, uint id, ulong handle) =>
        blobs.IsLiveLocked(id) && !blobs.TryGroupLocked(id, out _, out _) && blobs.HandleLocked(id) == handle;

    /// <summary>Decodes a shared blob's bytes into <paramref name="page"/> and checks them against its stored checksum.</summary>
    private static bool TryDecode(ReadOnlySpan<byte> blob, Span<byte> page)
    {
        if (blob.Length < EncodedPage.CompressedHeader || EncodedPage.Kind(blob) != EncodedKind.Compressed || !Enum.IsDefined(EncodedPage.Algorithm(blob)))
            return false;
        try
        {
            PageCompressors.Get(EncodedPage.Algorithm(blob)).Decompress(blob[EncodedPage.CompressedHeader..], page);
        }
        catch (DEException)
        {
            return false;
        }
        return EncodedPage.Checksum(page, blob) == EncodedPage.StoredChecksum(blob);
    }

    /// <summary>
    /// Dissolves a group of shared blobs whose decoded, checked payload is in <paramref name="plain"/>: each live member
    /// whose blob still names it gets a store blob of its own again (the group's codec, alone), then leaves the group.
    /// Returns the blobs so moved; a member that cannot be moved (it no longer compresses alone, the store is full) keeps
    /// the group listed for the next pass.
    /// </summary>
    public static long Dissolve(DEHost host, uint group, in GroupRecord r, ReadOnlySpan<byte> plain, ref EncodeCounters c)
    {
        var blobs = host.SharedBlobs;
        var groups = host.Groups;
        var store = host.Store;
        int header = r.Count * GroupCompression.HeaderPerMember;
        byte[] blob = Scratch.A;
        long moved = 0;
        bool skipped = false;
        for (int k = 0; k < r.Count; k++)
        {
            if ((r.Live & (1u << k)) == 0) continue;
            long named = GroupCompression.MemberGfn(plain, r.Count, k);
            if (named is <= 0 or > uint.MaxValue) continue;
            uint id = (uint)named;
            var page = plain.Slice(header + k * PageGeometry.PageSize, PageGeometry.PageSize);
            if (GroupCompression.PageChecksum(page, GroupCompression.SharedBlobsDomain, id) != GroupCompression.MemberChecksum(plain, k))
                continue;
            lock (blobs.StripeLock(id))
            {
                if (!blobs.IsLiveLocked(id) || !blobs.TryGroupLocked(id, out uint g, out int m) || g != group || m != k) continue;
                int room = PageGeometry.PageSize - EncodedPage.CompressedHeader - 1;
                if (!PageCompressors.Get(r.Codec).TryCompress(page, blob.AsSpan(EncodedPage.CompressedHeader, room), out int written))
                {
                    skipped = true;
                    continue;
                }
                EncodedPage.WriteCompressedHeader(blob, page, r.Codec);
                if (!store.TryStore(blob.AsSpan(0, EncodedPage.CompressedHeader + written), out ulong handle))
                {
                    c.StoreFull++;
                    skipped = true;
                    continue;
                }
                blobs.MoveOutOfGroupLocked(id, handle);
                lock (groups.StripeLock(group)) groups.LeaveLocked(group, k, store, host.Reclaimer?.Swap);
                moved++;
            }
        }
        if (moved > 0) c.GroupsDissolved++;
        c.SharedBlobsUngrouped += moved;
        if (skipped && moved == 0) lock (groups.StripeLock(group)) groups.RelistLocked(group);
        return moved;
    }
}

/// <summary>
/// A shared blob nominated for a group of shared blobs (<see cref="SharedGrouping"/>) by a page that names it: page
/// <see cref="Gfn"/> of domain <see cref="DomainId"/> (whose policy groups it), which orders the groups. 16 bytes.
/// </summary>
internal readonly record struct SharedNomination(int DomainId, uint Blob, long Gfn);
