using System.Runtime.CompilerServices;
using DifferenceEngine.Clock;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Patching;

/// <summary>Counters of one worker's patching and compression work in a pass.</summary>
internal struct EncodeCounters
{
    public long PagesPatched;
    public long PatchBytes;
    public long PagesCompressed;
    public long CompressedBytes;
    public long UniformPagesFound;
    public long Contended;
    /// <summary>
    /// Reference candidates another worker held past a brief wait: the page was examined and stays eligible, so later
    /// passes try it again; not a reason for another pass by itself (<see cref="Scanning.PassResult.Changed"/>).
    /// </summary>
    public long ReferencesBusy;
    public long StoreFull;
    /// <summary>Private pages examined for the first time while patching or compression is on (eligible next pass).</summary>
    public long NewlyExamined;
    /// <summary>Patches found but not made: compression would save more (PatchPass.PaysAgainstCompression).</summary>
    public long PatchesNotWorthIt;
    /// <summary>Shared frames compressed into one blob for all their pages (those pages are in <see cref="PagesCompressed"/>).</summary>
    public long SharedFramesCompressed;
    /// <summary>Patches whose reference frame was compressed with it (SharedCompression): they now name its compressed copy.</summary>
    public long PatchesOnCompressedReferences;
    /// <summary>Pages whose content did not compress within the threshold (marked, so passes do not try them again).</summary>
    public long Incompressible;
    /// <summary>Page groups formed, and the pages that went into them.</summary>
    public long GroupsFormed;
    public long PagesGrouped;
    /// <summary>Bytes of the groups' streams, and what their pages' single blobs took before.</summary>
    public long GroupStreamBytes;
    public long GroupSinglesBytes;
    /// <summary>Gathered groups that came out no smaller than their pages alone (those pages are marked, not tried again).</summary>
    public long GroupsRefused;
    /// <summary>Groups dissolved because they held more than their live members alone, and the pages moved back to single blobs.</summary>
    public long GroupsDissolved;
    public long PagesUngrouped;
    /// <summary>Single compressed pages that become groupable after a few more untouched sweeps.</summary>
    public long PagesAwaitingGroup;
    /// <summary>Groups of shared blobs formed (SharedGrouping), the blobs moved into them, and the blobs moved back out of dissolved ones.</summary>
    public long SharedGroupsFormed;
    public long SharedBlobsGrouped;
    public long SharedBlobsUngrouped;

    public void Add(in EncodeCounters o)
    {
        GroupsFormed += o.GroupsFormed;
        PagesGrouped += o.PagesGrouped;
        GroupStreamBytes += o.GroupStreamBytes;
        GroupSinglesBytes += o.GroupSinglesBytes;
        GroupsRefused += o.GroupsRefused;
        GroupsDissolved += o.GroupsDissolved;
        PagesUngrouped += o.PagesUngrouped;
        PagesAwaitingGroup += o.PagesAwaitingGroup;
        SharedGroupsFormed += o.SharedGroupsFormed;
        SharedBlobsGrouped += o.SharedBlobsGrouped;
        SharedBlobsUngrouped += o.SharedBlobsUngrouped;
        Incompressible += o.Incompressible;
        SharedFramesCompressed += o.SharedFramesCompressed;
        PatchesOnCompressedReferences += o.PatchesOnCompressedReferences;
        PagesPatched += o.PagesPatched;
        PatchBytes += o.PatchBytes;
        PagesCompressed += o.PagesCompressed;
        CompressedBytes += o.CompressedBytes;
        UniformPagesFound += o.UniformPagesFound;
        Contended += o.Contended;
        ReferencesBusy += o.ReferencesBusy;
        StoreFull += o.StoreFull;
        NewlyExamined += o.NewlyExamined;
        PatchesNotWorthIt += o.PatchesNotWorthIt;
    }
}

/// <summary>Per-thread scratch space for encoding, so the hot path allocates nothing per page.</summary>
internal static class Scratch
{
    [ThreadStatic] private static byte[]? t_a;
    [ThreadStatic] private static byte[]? t_b;

    public static byte[] A => t_a ??= new byte[EncodedPage.PatchHeader + DeltaCodec.MaxPatchSize + 64];
    public static byte[] B => t_b ??= new byte[EncodedPage.PatchHeader + DeltaCodec.MaxPatchSize + 64];

    [ThreadStatic] private static byte[]? t_c;

    /// <summary>A page's room, for estimating what a page takes compressed.</summary>
    public static byte[] C => t_c ??= new byte[Memory.PageGeometry.PageSize];
}

/// <summary>
/// Page patching for one page: look up its similarity keys, encode a delta against each valid
/// candidate reference, keep the smallest under the policy's threshold, make the reference an
/// immutable (shared) frame, and store the patch in the compact store.
/// </summary>
internal static class PatchPass
{
    /// <summary>Tries to patch a locked, eligible Private page; returns its (possibly changed) entry.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static ulong TryPatch(DEHost host, SharingIndex index, Domain domain, long gfn, ulong e, ref EncodeCounters c)
    {
        var detector = host.Policy.Detector;
        int candidates = host.Policy.SimilarityCandidates;
        var frames = host.Frames;
        var page = frames.Span(PageEntry.Frame(e));
        Span<ulong> keys = stackalloc ulong[SimilarityDetector.MaxKeys];
        keys = keys[..detector.Keys];
        detector.ComputeKeys(page, keys);
        ulong self = SharingIndex.PackPage(domain.Id, gfn);

        byte[] best = Scratch.A, trial = Scratch.B;
        int bestLength = 0;
        Domain? bestDomain = null;
        long bestGfn = -1;
        ulong bestEntry = 0;
        bool bestGuarded = false;
        try
        {
            for (int k = 0; k < keys.Length; k++)
            {
                for (int slot = 0; slot < candidates; slot++)
                {
                    ulong tableKey = SharingIndex.SimilarSlotKey(keys[k], slot);
                    ulong packed;
                    lock (index.Similar.StripeLock(tableKey))
                        if (!index.Similar.TryGet(tableKey, out packed)) continue;
                    if (packed == self) continue;
                    var (otherId, otherGfn) = SharingIndex.UnpackPage(packed);
                    if (bestDomain is not null && bestDomain.Id == otherId && bestGfn == otherGfn) continue;
                    var other = host.TryGetDomainById(otherId);
                    if (other is null || other.IsRemoved || otherGfn >= other.PageCount)
                    {
                        Forget(index, tableKey, packed);
                        continue;
                    }
                    // Another worker usually holds a candidate for microseconds: wait that long, no more (we hold a lock).
                    // Only for a candidate that sorts after this page: two workers each holding the page the other wants
                    // as a reference would otherwise both wait in vain; this way one gives up at once and the other
                    // gets its candidate as soon as that page is let go.
                    bool mayWait = otherId > domain.Id || (otherId == domain.Id && otherGfn > gfn);
                    if (!(mayWait ? other.TryLockBriefly(otherGfn, out ulong oe) : other.TryLock(otherGfn, out oe)))
                    {
                        c.ReferencesBusy++;
                        continue;
                    }
                    bool keep = false, guarded = false;
                    try
                    {
                        var state = PageEntry.State(oe);
                        if (other.IsRemoved || state is not (PageState.Private or PageState.Shared)
                            || (oe & PageEntry.Modified) != 0 || !PageClock.MayBeReference(PageEntry.Category(oe))
                            || !(other.Policy.SharingEnabled || other.Policy.PatchingEnabled)
                            // A Private page becomes Shared to serve (MakeReference): only in a domain that shares. A
                            // domain with sharing off gets no Shared page by any mechanism (after Disable-DESharing
                            // -Unshare, patches against its pages would have made them Shared again, and its trust group
                            // could not change).
                            || (state == PageState.Private && !other.Policy.SharingEnabled)
                            // Never across trust groups (a trust group changes only with no pass running: this is the
                            // second line of defence).
                            || other.Policy.TrustGroup != index.TrustGroup)
                        {
                            Forget(index, tableKey, packed);
                            continue;
                        }
                        // A QEMU guest's page is write-protected before its bytes serve as a reference.
                        if (other.Qemu is not null && state == PageState.Private && !(guarded = other.QemuProtect(otherGfn))) continue;
                        var reference = frames.Span(PageEntry.Frame(oe));
                        // A candidate whose content moved on no longer has this key: stale, never used.
                        if (detector.ComputeKey(reference, k) != keys[k])
                        {
                            Forget(index, tableKey, packed);
                            continue;
                        }
                        int limit = Math.Min(domain.Policy.PatchThreshold, bestDomain is null ? int.MaxValue : bestLength - 1);
                        if (limit <= 0) continue;
                        if (DeltaCodec.TryEncode(reference, page, trial.AsSpan(EncodedPage.PatchHeader, limit), out int written))
                        {
                            // Keep the new best locked (a reference must not change before it is committed). The old
                            // best is forgotten before it is released: should lifting its protection throw (QEMU exited),
                            // the finally below must not unlock it a second time.
                            if (bestDomain is { } previous)
                            {
                                bestDomain = null;
                                Release(previous, bestGfn, bestEntry, bestGuarded);
                            }
                            (best, trial) = (trial, best);
                            bestLength = written;
                            bestDomain = other;
                            bestGfn = otherGfn;
                            bestEntry = oe;
                            bestGuarded = guarded;
                            keep = true;
                        }
                    }
                    finally
                    {
                        if (!keep) Release(other, otherGfn, oe, guarded);
                    }
                }
            }
            if (bestDomain is null) return e;
            if (!PaysAgainstCompression(host, domain, e, page, bestDomain, bestEntry, bestLength))
            {
                c.PatchesNotWorthIt++;
                return e;
            }
            return Commit(host, index, domain, gfn, e, bestDomain, bestGfn, ref bestEntry, best, bestLength, ref c);
        }
        finally
        {
            if (bestDomain is not null) Release(bestDomain, bestGfn, bestEntry, bestGuarded);
        }
    }

    /// <summary>
    /// Whether a patch of <paramref name="patchLength"/> bytes against the best reference saves more than compression
    /// would, when the page's domain compresses. A reference keeps its whole frame (a patch decodes against it) until it
    /// and its patches are all cold, when SharedCompression may compress it for them: making a page a reference is counted
    /// as costing the frame less what its page would have taken compressed, unless its frame is whole anyway
    /// (it serves a patch already, was found incompressible, or its domain does not compress). So the patch, plus that,
    /// must come to less than the page compressed. Compressed sizes are estimated with each domain's codec on the page
    /// alone, a page it cannot shrink counted whole.
    /// </summary>
    /// <remarks>Session 22: once patching ran before compression in every pass, patches against compressible references
    /// cost 2.4 MiB more than compressing both on Compare's program snapshots (69.3 against 66.9 MiB), while on the guest
    /// images patching them saved 5.7 MiB (108.8 against 114.5): pages and references that compress poorly but differ by a
    /// few hundred bytes. The estimate tells the two apart; a reference found incompressible or already serving needs
    /// none. Session 23, with references compressed once cold: counting a cold (C4) reference as costing nothing made
    /// both inputs worse (103.3 → 103.7 MiB on the guest images, 65.4 → 65.9 on the programs), so the rule stayed.</remarks>
    private static bool PaysAgainstCompression(DEHost host, Domain domain, ulong e, ReadOnlySpan<byte> page, Domain refDomain,
        ulong refEntry, int patchLength)
    {
        if (!domain.Policy.CompressionEnabled) return true;
        uint refFrame = PageEntry.Frame(refEntry);
        int referenceCost = !refDomain.Policy.CompressionEnabled || (refEntry & PageEntry.Incompressible) != 0
            || (PageEntry.State(refEntry) == PageState.Shared && host.IsKnownReference(refFrame))
            ? 0
            : ReferenceCost(refDomain.Policy, host.Frames.Span(refFrame));
        return Pays(patchLength, referenceCost, domain.Policy, page, incompressible: (e & PageEntry.Incompressible) != 0);
    }

    /// <summary>
    /// The rule of <see cref="PaysAgainstCompression"/>, shared with the fleet's fingerprints: a patch of
    /// <paramref name="patchLength"/> bytes (its header not counted) against a reference that costs
    /// <paramref name="referenceCost"/> to keep whole pays when both come to less than <paramref name="page"/> compressed
    /// alone with <paramref name="policy"/>'s codec (a whole page when the codec cannot shrink it, or when the page is
    /// known <paramref name="incompressible"/>). The page is compressed only when the patch could pay at all.
    /// </summary>
    internal static bool Pays(int patchLength, int referenceCost, DomainPolicy policy, ReadOnlySpan<byte> page, bool incompressible)
    {
        int cost = EncodedPage.PatchHeader + patchLength + referenceCost;
        return cost < PageGeometry.PageSize && (incompressible || cost < EstimatedSize(policy, page));
    }

    /// <summary>What keeping a page whole as a reference costs over compressing it (0 for a page the codec cannot shrink).</summary>
    internal static int ReferenceCost(DomainPolicy policy, ReadOnlySpan<byte> reference) =>
        PageGeometry.PageSize - EstimatedSize(policy, reference);

    /// <summary>What a page would take compressed alone with its domain's codec (a page it cannot shrink: a whole page).</summary>
    internal static int EstimatedSize(DomainPolicy policy, ReadOnlySpan<byte> page) =>
        PageCompressors.Get(policy.CompressionAlgorithm).TryCompress(page, Scratch.C.AsSpan(0, PageGeometry.PageSize), out int written)
            ? Math.Min(PageGeometry.PageSize, EncodedPage.CompressedHeader + written)
            : PageGeometry.PageSize;

    /// <summary>Unlocks a candidate, lifting the write protection of a guest's page that is still the guest's.</summary>
    private static void Release(Domain domain, long gfn, ulong e, bool guarded) => domain.QemuUnlock(gfn, e, guarded);

    /// <summary>Makes the best candidate a reference, stores the patch and frees the page's frame.</summary>
    private static ulong Commit(DEHost host, SharingIndex index, Domain domain, long gfn, ulong e,
        Domain refDomain, long refGfn, ref ulong refEntry, byte[] blob, int patchLength, ref EncodeCounters c)
    {
        var frames = host.Frames;
        if (!MakeReference(host, index, ref refEntry, out uint referenceFrame)) return e;
        uint frame = PageEntry.Frame(e);
        int length = EncodedPage.PatchHeader + patchLength;
        EncodedPage.WritePatchHeader(blob, frames.Span(frame), referenceFrame, SharingIndex.PackPage(refDomain.Id, refGfn));
        if (!host.Store.TryStore(blob.AsSpan(0, length), out ulong handle))
        {
            index.Release(referenceFrame);
            c.StoreFull++;
            return e;
        }
        frames.Free(frame);
        host.MarkReference(referenceFrame);
        c.PagesPatched++;
        c.PatchBytes += length;
        return PageEntry.WithPayload(e, PageState.Patched, handle);
    }

    /// <summary>
    /// Takes a reference on a locked page's frame for a patch. A Private page becomes Shared first
    /// (listed by its hash when it can be), so a later guest write goes copy-on-write and the frame
    /// the patch depends on never changes: so a Private page serves only in a domain with sharing on (TryPatch's
    /// candidates, and the sweep's listing, leave out the others').
    /// </summary>
    internal static bool MakeReference(DEHost host, SharingIndex index, ref ulong refEntry, out uint referenceFrame)
    {
        var frames = host.Frames;
        uint frame = PageEntry.Frame(refEntry);
        if (PageEntry.State(refEntry) == PageState.Private && frames.IsExternal(frame))
        {
            // A QEMU guest's own memory never becomes a reference in place (the guest could write it): its bytes go to a
            // frame of the engine, and the guest's page is taken out (the page is write-protected and locked).
            if (!frames.TryAllocate(out uint copy))
            {
                referenceFrame = 0;
                return false;
            }
            frames.Span(frame).CopyTo(frames.Span(copy));
            frames.Free(frame);
            frame = copy;
            refEntry = PageEntry.With(refEntry, PageState.Private, copy);
        }
        if (PageEntry.State(refEntry) == PageState.Shared)
        {
            lock (index.Stable.StripeLock(index.HashOf(frame))) index.AddReferenceLocked(frame);
            referenceFrame = frame;
            return true;
        }
        ulong hash = PageHasher.Hash(frames.Span(frame));
        uint toFree = uint.MaxValue;
        lock (index.Stable.StripeLock(hash))
        {
            if (index.TryGetListedLocked(hash, out uint shared) && shared != frame)
            {
                if (!frames.Span(frame).SequenceEqual(frames.Span(shared)))
                {
                    // Same hash, other bytes: this frame cannot be listed; it is shared unlisted.
                    frames.SetRefCount(frame, 2);
                    referenceFrame = frame;
                    refEntry = PageEntry.With(refEntry | PageEntry.SharingSeen, PageState.Shared, frame);
                    return true;
                }
                // The reference is identical to a listed frame: it joins it, and the patch refers to that.
                index.AddReferenceLocked(shared);
                index.AddReferenceLocked(shared);
                toFree = frame;
                referenceFrame = shared;
                refEntry = PageEntry.With(refEntry | PageEntry.SharingSeen, PageState.Shared, shared);
            }
            else
            {
                frames.SetRefCount(frame, 2);
                index.Stable.Set(hash, frame);
                referenceFrame = frame;
                refEntry = PageEntry.With(refEntry | PageEntry.SharingSeen, PageState.Shared, frame);
            }
        }
        if (toFree != uint.MaxValue) frames.Free(toFree);
        return true;
    }

    /// <summary>
    /// Lists a page under its similarity keys where a slot is free (the first pages seen are kept), and
    /// lets a Shared page take a slot from a page that is not Shared: a shared frame is already
    /// immutable and serves many, the best reference there is. Returns how many slots changed.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int Remember(DEHost host, SharingIndex index, Domain domain, long gfn, ReadOnlySpan<byte> page, bool shared)
    {
        var detector = host.Policy.Detector;
        int candidates = host.Policy.SimilarityCandidates;
        ulong self = SharingIndex.PackPage(domain.Id, gfn);
        int changed = 0;
        for (int k = 0; k < detector.Keys; k++)
        {
            ulong key = detector.ComputeKey(page, k);
            // Only under a key another page of the pass has (the sweep marked every page's): no page could look it up else.
            if (!index.SimilarKeys.MayHaveTwin(key)) continue;
            for (int slot = 0; slot < candidates; slot++)
            {
                ulong tableKey = SharingIndex.SimilarSlotKey(key, slot);
                lock (index.Similar.StripeLock(tableKey))
                {
                    if (index.Similar.TryGet(tableKey, out ulong present))
                    {
                        if (present == self) break;
                        if (!shared || IsSharedPage(host, present)) continue;
                    }
                    index.Similar.Set(tableKey, self);
                    changed++;
                    break;
                }
            }
        }
        return changed;
    }

    /// <summary>Marks a page's similarity keys in the pass's filter, once each (<see cref="SharingIndex.SimilarKeys"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MarkKeys(DEHost host, SharingIndex index, ReadOnlySpan<byte> page)
    {
        var detector = host.Policy.Detector;
        for (int k = 0; k < detector.Keys; k++) index.SimilarKeys.Mark(detector.ComputeKey(page, k));
    }

    private static bool IsSharedPage(DEHost host, ulong packed)
    {
        var (id, gfn) = SharingIndex.UnpackPage(packed);
        var d = host.TryGetDomainById(id);
        return d is not null && !d.IsRemoved && gfn < d.PageCount && PageEntry.State(d.PeekEntry(gfn)) == PageState.Shared;
    }

    private static void Forget(SharingIndex index, ulong tableKey, ulong stale)
    {
        lock (index.Similar.StripeLock(tableKey)) index.Similar.RemoveIf(tableKey, stale);
    }
}
