using System.Runtime.CompilerServices;
using DifferenceEngine.Clock;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Sharing;

/// <summary>Counters of one worker's share of a pass; summed into the pass result.</summary>
internal struct SharingCounters
{
    public long PagesExamined;
    public long ZeroPagesFound;
    public long PagesMerged;
    public long FramesFreed;
    public long HashCollisions;
    public long Contended;

    public void Add(in SharingCounters o)
    {
        PagesExamined += o.PagesExamined;
        ZeroPagesFound += o.ZeroPagesFound;
        PagesMerged += o.PagesMerged;
        FramesFreed += o.FramesFreed;
        HashCollisions += o.HashCollisions;
        Contended += o.Contended;
    }
}

/// <summary>
/// The whole-page sharing step for one page: hash, look up, byte-for-byte compare,
/// merge. Allocates nothing; all compares and hashes are vectorized span operations.
/// A merged page loses its incompressible mark (<see cref="PageEntry.Merged"/>).
/// </summary>
internal static class SharingPass
{
    /// <summary>
    /// Considers one locked, eligible Private page that is not zero or uniform (those are folded before)
    /// and returns its (possibly changed) entry.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static ulong SharePage(DEHost host, SharingIndex index, Domain domain, long gfn, ulong e, ref SharingCounters c)
    {
        var frames = host.Frames;
        uint frame = PageEntry.Frame(e);
        var bytes = frames.Span(frame);
        c.PagesExamined++;
        e |= PageEntry.SharingSeen;

        ulong hash = PageHasher.Hash(bytes);

        // 1. An existing shared frame with this content?
        lock (index.Stable.StripeLock(hash))
        {
            if (index.TryGetListedLocked(hash, out uint shared))
            {
                if (!bytes.SequenceEqual(frames.Span(shared)))
                {
                    c.HashCollisions++;
                    return e;
                }
                index.AddReferenceLocked(shared);
                frames.Free(frame);
                c.PagesMerged++;
                c.FramesFreed++;
                return PageEntry.Merged(e, shared);
            }
        }

        // 2. A private page with this content seen earlier in this pass? Only a page another page of the pass may match is
        // listed (the sweep marked every page the pass may share in the filter): the others could only wait there in vain.
        if (!index.Twins.MayHaveTwin(hash)) return e;
        ulong candidate;
        bool found;
        lock (index.Unstable.StripeLock(hash))
        {
            found = index.Unstable.TryGet(hash, out candidate);
            if (!found) index.Unstable.Set(hash, SharingIndex.PackPage(domain.Id, gfn));
        }
        if (!found) return e;

        var (otherId, otherGfn) = SharingIndex.UnpackPage(candidate);
        if (otherId == domain.Id && otherGfn == gfn) return e;
        var other = host.TryGetDomainById(otherId);
        if (other is null || other.IsRemoved || otherGfn >= other.PageCount)
        {
            ReplaceCandidate(index, hash, candidate, domain, gfn);
            return e;
        }
        // Never wait unboundedly for a second page lock while holding one: try a little, then leave it for the next pass.
        // Its holder is most often another worker at the same gfn of a twin domain (clones scan in step), which shares,
        // patches or compresses its page and lets go within microseconds. Given up at once, the twins would be
        // compressed apart in the next pass, each a copy, never to merge.
        if (!other.TryLockBriefly(otherGfn, out ulong oe))
        {
            c.Contended++;
            return e;
        }
        bool otherGuarded = false;
        try
        {
            if (other.IsRemoved || PageEntry.State(oe) != PageState.Private || (oe & PageEntry.Modified) != 0
                || !PageClock.MayShare(PageEntry.Category(oe))
                // Never across trust groups (a trust group changes only with no pass running: a second line of defence).
                || other.Policy.TrustGroup != index.TrustGroup
                // A QEMU guest's page is write-protected before its bytes are compared (as the pass did with ours).
                || (other.Qemu is not null && !(otherGuarded = other.QemuProtect(otherGfn))))
            {
                ReplaceCandidate(index, hash, candidate, domain, gfn);
                return e;
            }
            uint otherFrame = PageEntry.Frame(oe);
            if (!bytes.SequenceEqual(frames.Span(otherFrame)))
            {
                // Same hash, other bytes: a collision, or the other page changed since it was listed.
                if (PageHasher.Hash(frames.Span(otherFrame)) == hash) c.HashCollisions++;
                ReplaceCandidate(index, hash, candidate, domain, gfn);
                return e;
            }
            lock (index.Unstable.StripeLock(hash)) index.Unstable.RemoveIf(hash, candidate);
            lock (index.Stable.StripeLock(hash))
            {
                if (index.TryGetListedLocked(hash, out uint shared))
                {
                    // Another worker listed this content meanwhile: join its frame with both pages.
                    if (!bytes.SequenceEqual(frames.Span(shared)))
                    {
                        c.HashCollisions++;
                        return e;
                    }
                    index.AddReferenceLocked(shared);
                    index.AddReferenceLocked(shared);
                    frames.Free(frame);
                    frames.Free(otherFrame);
                    c.PagesMerged += 2;
                    c.FramesFreed += 2;
                    oe = PageEntry.Merged(oe, shared);
                    return PageEntry.Merged(e, shared);
                }
                // The other page's frame becomes the shared copy; ours is freed. A QEMU guest's own memory never becomes
                // a shared frame (the guest could write it): its bytes are copied to a frame of the engine, and the
                // guest's page is taken out like ours.
                uint sharedFrame = otherFrame;
                if (frames.IsExternal(otherFrame))
                {
                    if (!frames.TryAllocate(out sharedFrame))
                    {
                        ReplaceCandidate(index, hash, candidate, domain, gfn);
                        return e;
                    }
                    frames.Span(otherFrame).CopyTo(frames.Span(sharedFrame));
                    // QEMU itself may write guest memory where no write-protect fault tells the engine: the copy is
                    // listed under this hash only if it still has these bytes (a frame listed under another content's
                    // hash could never be unlisted, its hash being computed again from its bytes).
                    if (!bytes.SequenceEqual(frames.Span(sharedFrame)))
                    {
                        frames.Free(sharedFrame);
                        return e;
                    }
                    frames.Free(otherFrame);
                }
                frames.SetRefCount(sharedFrame, 2);
                index.Stable.Set(hash, sharedFrame);
                frames.Free(frame);
                c.PagesMerged += 2;
                c.FramesFreed++;
                oe = PageEntry.Merged(oe | PageEntry.SharingSeen, sharedFrame);
                return PageEntry.Merged(e, sharedFrame);
            }
        }
        finally
        {
            // Still the guest's: let it write again.
            other.QemuUnlock(otherGfn, oe, otherGuarded);
        }
    }

    private static void ReplaceCandidate(SharingIndex index, ulong hash, ulong stale, Domain domain, long gfn)
    {
        lock (index.Unstable.StripeLock(hash))
        {
            if (index.Unstable.TryGet(hash, out ulong now) && now == stale)
                index.Unstable.Set(hash, SharingIndex.PackPage(domain.Id, gfn));
        }
    }
}
