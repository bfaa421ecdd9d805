using System.Runtime.InteropServices;
using DifferenceEngine.Memory;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Xen;

/// <summary>
/// What one <see cref="XenSharing"/> pass did: pages read and hashed, pages skipped (held by the pager, or not readable),
/// candidate pairs (same hash as an earlier page), and per pair: shared now, on one frame already, changed since the
/// scan (or a hash collision), refused by Xen (not sharable right now).
/// </summary>
internal sealed record XenSharingResult(
    long PagesScanned,
    long PagesSkipped,
    long Candidates,
    long PagesShared,
    long AlreadyShared,
    long PagesChanged,
    long PagesRefused);

/// <summary>What one attempt to share a candidate pair came to.</summary>
internal enum XenShareOutcome
{
    Shared,
    AlreadyShared,
    Changed,
    /// <summary>Not now: a page is held by the pager, or Xen is busy with it (EBUSY); a later pass may share it.</summary>
    Refused,
    /// <summary>
    /// Xen refuses to nominate one of the pages for a reason its content does not change (EINVAL, E2BIG, ENOENT: a guest
    /// frame not populated or not in a usable state for sharing); the page is named by TryShare's out parameter.
    /// </summary>
    Unshareable,
}

/// <summary>
/// Whole-page sharing on a Xen host: reads every page of the chosen domains, hashes them, and for each page whose hash
/// matches an earlier one nominates both, compares their bytes and has Xen share them. Xen keeps shared frames
/// copy-on-write. Choose domains that may share (one trust group): the pass shares any identical pages among them.
/// </summary>
internal sealed class XenSharing
{
    private const int Batch = 256;

    private readonly XenConnection connection;
    private readonly XenPager? pager;

    /// <summary>With a pager, pages it holds are skipped (reading them would page them back in).</summary>
    public XenSharing(XenConnection connection, XenPager? pager = null)
    {
        this.connection = connection;
        this.pager = pager;
    }

    /// <summary>One pass over the domains: enables sharing for each, scans, shares what is identical.</summary>
    public XenSharingResult Run(IEnumerable<uint> domainIds, CancellationToken cancellationToken = default)
    {
        var domains = domainIds.Distinct().ToArray();
        foreach (uint domainId in domains)
        {
            connection.EnableSharing(domainId);
        }
        var first = new Dictionary<ulong, XenPageRef>();
        var candidates = new List<(XenPageRef Source, XenPageRef Client)>();
        long scanned = 0, skipped = 0;
        byte[] buffer = new byte[Batch * PageGeometry.PageSize];
        int[] errors = new int[Batch];
        foreach (uint domainId in domains)
        {
            ulong last = connection.GetMaxGpfn(domainId);
            for (ulong gfn = 0; gfn <= last;)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int run = XenPager.UnheldRun(pager, domainId, gfn, last, Batch);
                if (run == 0)
                {
                    skipped++;
                    gfn++;
                    continue;
                }
                connection.ReadPages(domainId, gfn, buffer.AsSpan(0, run * PageGeometry.PageSize), errors);
                for (int i = 0; i < run; i++)
                {
                    if (errors[i] != 0)
                    {
                        skipped++;
                        continue;
                    }
                    scanned++;
                    var page = new XenPageRef(domainId, gfn + (ulong)i);
                    ulong hash = PageHasher.Hash(buffer.AsSpan(i * PageGeometry.PageSize, PageGeometry.PageSize));
                    ref var source = ref CollectionsMarshal.GetValueRefOrAddDefault(first, hash, out bool seen);
                    if (seen)
                    {
                        candidates.Add((source, page));
                    }
                    else
                    {
                        source = page;
                    }
                }
                gfn += (ulong)run;
            }
        }
        long shared = 0, already = 0, changed = 0, refused = 0;
        byte[] a = new byte[PageGeometry.PageSize], b = new byte[PageGeometry.PageSize];
        foreach (var (source, client) in candidates)
        {
            cancellationToken.ThrowIfCancellationRequested();
            switch (TryShare(connection, pager, source, client, a, b))
            {
                case XenShareOutcome.Shared: shared++; break;
                case XenShareOutcome.AlreadyShared: already++; break;
                case XenShareOutcome.Changed: changed++; break;
                default: refused++; break;
            }
        }
        return new XenSharingResult(scanned, skipped, candidates.Count, shared, already, changed, refused);
    }

    // Nominate both first: from then on a write invalidates the handle, so bytes compared equal after the nominations are
    // the bytes Xen shares, or the share fails.
    internal static XenShareOutcome TryShare(XenConnection connection, XenPager? pager, XenPageRef source, XenPageRef client,
        byte[] a, byte[] b) => TryShare(connection, pager, source, client, a, b, out _);

    /// <param name="unshareable">With <see cref="XenShareOutcome.Unshareable"/>: the page Xen would not nominate.</param>
    internal static XenShareOutcome TryShare(XenConnection connection, XenPager? pager, XenPageRef source, XenPageRef client,
        byte[] a, byte[] b, out XenPageRef unshareable)
    {
        unshareable = default;
        if (IsHeld(pager, source) || IsHeld(pager, client))
        {
            return XenShareOutcome.Refused;
        }
        ulong clientHandle = 0;
        var last = source; // the page nominated last: the one refused, if either is
        var nominated = TryNominate(connection, source, out ulong sourceHandle);
        if (nominated == Nomination.Nominated)
        {
            last = client;
            nominated = TryNominate(connection, client, out clientHandle);
        }
        if (nominated == Nomination.Busy) return XenShareOutcome.Refused;
        if (nominated == Nomination.Refused)
        {
            unshareable = last;
            return XenShareOutcome.Unshareable;
        }
        if (sourceHandle == clientHandle)
        {
            return XenShareOutcome.AlreadyShared; // one frame already, from an earlier pass
        }
        if (!connection.TryReadPage(source.DomainId, source.Gfn, a) || !connection.TryReadPage(client.DomainId, client.Gfn, b)
            || !a.AsSpan().SequenceEqual(b))
        {
            return XenShareOutcome.Changed;
        }
        return connection.Share(source, sourceHandle, client, clientHandle) ? XenShareOutcome.Shared : XenShareOutcome.Changed;
    }

    private enum Nomination { Nominated, Busy, Refused }

    // Pages Xen will not share are skipped: for now (EBUSY: held by another subsystem), or while their content stays
    // (EINVAL, E2BIG, ENOENT: not populated, or not in a state sharing takes); anything else is an error.
    private static Nomination TryNominate(XenConnection connection, XenPageRef page, out ulong handle)
    {
        try
        {
            handle = connection.NominateForSharing(page.DomainId, page.Gfn);
            return Nomination.Nominated;
        }
        catch (XenException e) when (e.Errno is Errno.EINVAL or Errno.E2BIG or Errno.EBUSY or Errno.ENOENT)
        {
            handle = 0;
            return e.Errno == Errno.EBUSY ? Nomination.Busy : Nomination.Refused;
        }
    }

    private static bool IsHeld(XenPager? pager, XenPageRef page) => pager is not null && pager.IsEvicted(page.DomainId, page.Gfn);
}
