using System.Diagnostics;
using System.Runtime.InteropServices;
using DifferenceEngine.Codecs;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Patching;
using DifferenceEngine.Scanning;
using DifferenceEngine.Sharing;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Xen;

public sealed partial class XenHost
{
    private const int Batch = 256;

    // Reference pages the pager keeps, per trust group, under each of their similarity keys: kept from pass to pass, changed
    // only by passes and by a new detector (SetHostPolicy), both holding the pass gate.
    private readonly Dictionary<string, Dictionary<ulong, XenReference>> referenceIndex = new(StringComparer.Ordinal);
    // The index's keys, counted by the pass gate's holder after each change: stats read it without waiting for a pass.
    private long referenceIndexKeys;
    private long scanTicks;
    private long pagesSwept;

    private long ReferenceIndexBytes => Volatile.Read(ref referenceIndexKeys) * 24;

    /// <summary>Counts the reference index's keys for <see cref="ReferenceIndexBytes"/>; the caller holds the pass gate.</summary>
    private void CountReferenceIndex()
    {
        long keys = 0;
        foreach (var group in referenceIndex.Values)
        {
            keys += group.Count;
        }
        Volatile.Write(ref referenceIndexKeys, keys);
    }

    /// <summary>
    /// Runs engine passes over <paramref name="domains"/> (every domU with a mechanism on when null). Each pass reads every
    /// page the pager does not hold, ages it (unchanged since the last pass: one pass older), shares identical pages within
    /// each trust group through memshr, then, for domains with patching on, evicts pages unchanged for a pass as patches
    /// against a similar reference page, and, with compression on, pages unchanged for the C4 period compressed; last it
    /// moves the pager's oldest pages to swap if it is over its memory limit.
    /// </summary>
    public ScanResult Scan(IEnumerable<XenDomain>? domains = null, ScanOptions? options = null,
        Action<ScanProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options ??= new ScanOptions();
        PassLoop.Check(options);
        HostCallbacks.ThrowIfInCallbackOf(this, Name, "scan");
        XenDomain[] chosen;
        bool all = domains is null;
        // Every domU with a mechanism on, as Xen lists them (Domains refreshes from Xen).
        XenDomain[] Treated() => Domains.Where(d => !d.IsControlDomain
            && (d.Policy.SharingEnabled || d.Policy.PatchingEnabled || d.Policy.CompressionEnabled)).ToArray();
        if (domains is null)
        {
            chosen = Treated();
        }
        else
        {
            chosen = domains.Distinct().ToArray();
            foreach (var d in chosen)
            {
                CheckOwned(d);
                if (d.IsControlDomain)
                {
                    throw new DEException("XenControlDomainNotTreated", DEErrorKind.InvalidOperation,
                        "Domain 0 runs the engine itself: scans are only for guest domains (domUs).", d.Name);
                }
            }
            Array.Sort(chosen, (a, b) => a.DomainId.CompareTo(b.DomainId));
        }
        CheckConnected();
        // The scan lock through all the passes (scans one at a time), the pass gate through each (the changes that must not
        // race a pass go between two passes: AsPass).
        // A scan of every domain takes them again once it holds the scan lock: a domU destroyed while this scan waited for
        // another is not asked for (Xen would fail the call), and one given a mechanism meanwhile is scanned.
        IEnumerable<string> Names()
        {
            foreach (var d in chosen) yield return d.Name;
        }
        return PassLoop.Scan(Name, Names(), chosen.Length, options, scanGate, () =>
        {
            CheckConnected();
            if (all) chosen = Treated();
        }, (pass, ct) => AsPass(() =>
        {
            long cpu = ThreadCpu.NowTicks();
            long started = Stopwatch.GetTimestamp();
            var result = RunPass(pass, chosen, progress, ct);
            Interlocked.Add(ref scanTicks, Stopwatch.GetTimestamp() - started);
            Interlocked.Add(ref engineCpuTicks, ThreadCpu.NowTicks() - cpu);
            Interlocked.Add(ref pagesSwept, result.PagesSwept);
            Interlocked.Increment(ref passes);
            // The pager's metadata at the pass's end, for the peak (the domains as known, without asking Xen again).
            metadataPeak.Note(MeasureMetadata(byId.Values.Where(d => !d.IsRemoved && !d.IsControlDomain)));
            return result;
        }), cancellationToken, closing.Token,
            progress is null ? null : () => HostCallbacks.Invoke(this, progress, new ScanProgress(0, 0, 0) { WaitingForOtherScan = true }));
    }

    private readonly record struct ColdPage(XenDomain Domain, ulong Gfn, ulong Hash, byte Age, ulong[]? Keys, bool Incompressible);

    private sealed class PassCounters
    {
        public long Swept, Examined, Zero, Merged, Collisions, Contended, Patched, PatchBytes, Compressed, CompressedBytes;
        public long Newly, IndexChanges, StoreFull, Incompressible, Awaiting;
    }

    private PassResult RunPass(int pass, XenDomain[] chosen, Action<ScanProgress>? progress, CancellationToken cancellationToken)
    {
        long started = Stopwatch.GetTimestamp();
        var c = new PassCounters();
        var detector = Policy.Detector;
        var firstSeen = new Dictionary<string, Dictionary<ulong, XenPageRef>>(StringComparer.Ordinal);
        var pairs = new List<(XenPageRef Source, XenPageRef Client)>();
        // Contents held twice within a trust group (pages for sharing, left alone by patching and compression): by group,
        // as the pairs are. A set of hashes alone let one group's duplicates keep another group's page of the same content
        // from being paged out, which that group's guest could tell by its faults (a probe of the other's memory).
        var duplicated = new HashSet<(string TrustGroup, ulong Hash)>();
        var cold = new List<ColdPage>();
        byte[] buffer = new byte[Batch * PageGeometry.PageSize];
        int[] errors = new int[Batch];
        var bounds = chosen.Select(d => connection.GetMaxGpfn(d.DomainId)).ToArray();
        var chosenById = chosen.ToDictionary(d => d.DomainId);
        long total = bounds.Sum(b => (long)b + 1), done = 0;

        // Marks the policy changes since the last pass asked to forget (EnableSharing, a compression change) go first.
        foreach (var domain in chosen)
        {
            domain.ApplyForgetRequests();
        }

        // 1. Read and age every page; collect sharing candidates and pages old enough to encode.
        for (int di = 0; di < chosen.Length; di++)
        {
            var domain = chosen[di];
            var policy = domain.Policy;
            bool encodes = policy.PatchingEnabled || policy.CompressionEnabled;
            ulong last = bounds[di];
            domain.EnsureTracked(last);
            var seen = policy.SharingEnabled ? Group(firstSeen, policy.TrustGroup) : null;
            for (ulong gfn = 0; gfn <= last;)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int run = XenPager.UnheldRun(pager, domain.DomainId, gfn, last, Batch);
                if (run == 0)
                {
                    gfn++;
                    done++;
                    continue;
                }
                connection.ReadPages(domain.DomainId, gfn, buffer.AsSpan(0, run * PageGeometry.PageSize), errors);
                for (int i = 0; i < run; i++)
                {
                    if (errors[i] != 0)
                    {
                        continue;
                    }
                    var bytes = buffer.AsSpan(i * PageGeometry.PageSize, PageGeometry.PageSize);
                    ulong g = gfn + (ulong)i;
                    ulong hash = PageHasher.Hash(bytes);
                    c.Swept++;
                    byte age = domain.Ages[g];
                    bool incompressible = false, unshareable = false;
                    if (age == XenDomain.NeverSeen)
                    {
                        age = 0;
                        if (encodes) c.Newly++;
                    }
                    else if (hash == domain.Hashes[g])
                    {
                        incompressible = (age & XenDomain.IncompressibleFlag) != 0;
                        unshareable = (age & XenDomain.UnshareableFlag) != 0;
                        age = (byte)Math.Min((age & XenDomain.AgeMask) + 1, XenDomain.MaxAge);
                    }
                    else
                    {
                        age = 0; // changed: young again, and worth a new try at compression
                    }
                    domain.Hashes[g] = hash;
                    domain.Ages[g] = (byte)(age | (incompressible ? XenDomain.IncompressibleFlag : 0) | (unshareable ? XenDomain.UnshareableFlag : 0));
                    // Found: new to the engine or written since the last pass (age 0). Xen keeps a zero page as a guest
                    // page (memshr shares it with its twins), so counting every one read would make every pass look
                    // like a change, and -UntilStable run to its pass limit on any guest with a zero page.
                    if (age == 0 && PageHasher.IsZero(bytes)) c.Zero++;
                    if (seen is not null && !unshareable)
                    {
                        c.Examined++;
                        var page = new XenPageRef(domain.DomainId, g);
                        ref var source = ref CollectionsMarshal.GetValueRefOrAddDefault(seen, hash, out bool exists);
                        if (exists)
                        {
                            pairs.Add((source, page));
                            duplicated.Add((domain.Policy.TrustGroup, hash));
                        }
                        else
                        {
                            source = page;
                        }
                    }
                    if (encodes && age >= 1)
                    {
                        ulong[]? keys = null;
                        if (policy.PatchingEnabled)
                        {
                            keys = new ulong[detector.Keys];
                            detector.ComputeKeys(bytes, keys);
                        }
                        cold.Add(new ColdPage(domain, g, hash, age, keys, incompressible));
                        // Aging toward C4, where it will be compressed: a scan until stable goes on for it (PassLoop caps
                        // how long pages that only age can keep it going).
                        if (policy.CompressionEnabled && age < policy.C4Sweeps && !incompressible) c.Awaiting++;
                    }
                    else if (policy.CompressionEnabled && age >= 1 && age < policy.C4Sweeps)
                    {
                        c.Newly++; // growing older: a later pass may compress it
                    }
                }
                gfn += (ulong)run;
                done += run;
                HostCallbacks.Invoke(this, progress, new ScanProgress(pass, done, total));
            }
        }

        // 2. Share identical pages (nominate both, compare, share: a write meanwhile makes the share fail).
        byte[] a = new byte[PageGeometry.PageSize], b = new byte[PageGeometry.PageSize];
        foreach (var (source, client) in pairs)
        {
            cancellationToken.ThrowIfCancellationRequested();
            switch (XenSharing.TryShare(connection, pager, source, client, a, b, out var unshareable))
            {
                case XenShareOutcome.Shared: c.Merged++; break;
                case XenShareOutcome.Changed: c.Collisions++; break;
                case XenShareOutcome.Refused: c.Contended++; break;
                case XenShareOutcome.Unshareable:
                    // Not offered again until its content changes (its twins pair with another page meanwhile).
                    if (chosenById.TryGetValue(unshareable.DomainId, out var owner) && unshareable.Gfn < (ulong)owner.Ages.Length)
                        owner.Ages[unshareable.Gfn] |= XenDomain.UnshareableFlag;
                    break;
            }
        }

        // 3. Patch and compress the pages old enough, most aged first; pages that had a twin were for sharing.
        var candidates = new Dictionary<string, Dictionary<ulong, (XenPageRef Page, ulong[] Keys)>>(StringComparer.Ordinal);
        foreach (var page in cold.OrderByDescending(p => p.Age))
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (duplicated.Contains((page.Domain.Policy.TrustGroup, page.Hash)) && page.Domain.Policy.SharingEnabled)
            {
                continue;
            }
            bool encoded = page.Domain.Policy.PatchingEnabled && TryPatch(page, candidates, a, b, c);
            if (!encoded && page.Domain.Policy.CompressionEnabled && page.Age >= page.Domain.Policy.C4Sweeps && !page.Incompressible)
            {
                TryCompress(page, a, c);
            }
        }

        // 4. Keep the pager under its memory limit.
        pager.EnforceBudget(out bool full);
        if (full) c.StoreFull++;

        PruneReferenceIndex();
        return new PassResult(pass, c.Swept, c.Examined, c.Zero, c.Merged, c.Merged, c.Collisions, c.Contended,
            Stopwatch.GetElapsedTime(started))
        {
            PagesPatched = c.Patched,
            PatchBytes = c.PatchBytes,
            PagesCompressed = c.Compressed,
            CompressedBytes = c.CompressedBytes,
            SimilarityIndexChanges = c.IndexChanges,
            NewlyExamined = c.Newly,
            PagesAwaitingCompression = c.Awaiting,
            StoreFull = c.StoreFull,
            PagesIncompressible = c.Incompressible,
        };
    }

    // A reference of the trust group under one of the page's keys, else a candidate page that becomes a reference; the patch
    // is kept when it is no larger than the domain's threshold.
    private bool TryPatch(in ColdPage page, Dictionary<string, Dictionary<ulong, (XenPageRef Page, ulong[] Keys)>> candidates,
        byte[] plain, byte[] other, PassCounters c)
    {
        var domain = page.Domain;
        var policy = domain.Policy;
        var refs = Group(referenceIndex, policy.TrustGroup);
        var self = new XenPageRef(domain.DomainId, page.Gfn);
        if (pager.IsEvicted(domain.DomainId, page.Gfn) || !connection.TryReadPage(domain.DomainId, page.Gfn, plain))
        {
            return false;
        }
        Span<byte> patch = stackalloc byte[DeltaCodec.MaxPatchSize];
        foreach (ulong key in page.Keys!)
        {
            if (refs.TryGetValue(key, out var reference) && !reference.Released)
            {
                if (DeltaCodec.TryEncode(reference.Page, plain, patch, out int size) && size <= policy.PatchThreshold)
                {
                    return EvictPatched(page, reference, patch[..size].ToArray(), PageHasher.Hash(plain), c);
                }
                break; // the paper's detector tries the first candidate only
            }
        }
        var group = Group(candidates, policy.TrustGroup);
        foreach (ulong key in page.Keys!)
        {
            if (!group.TryGetValue(key, out var candidate) || candidate.Page == self)
            {
                continue;
            }
            var r = candidate.Page;
            if (pager.IsEvicted(r.DomainId, r.Gfn) || !connection.TryReadPage(r.DomainId, r.Gfn, other)
                || !DeltaCodec.TryEncode(other, plain, patch, out int size) || size > policy.PatchThreshold)
            {
                break;
            }
            var reference = pager.EvictAsReference(r.DomainId, r.Gfn, policy.TrustGroup, candidate.Keys);
            if (reference is null)
            {
                c.Contended++;
                break;
            }
            foreach (ulong k in candidate.Keys)
            {
                refs[k] = reference;
                group.Remove(k);
                c.IndexChanges++;
            }
            CountReferenceIndex();
            // The patch was made against the bytes read before the reference's eviction: still right if the reference has them.
            byte[]? prepared = reference.Checksum == PageHasher.Hash(other) ? patch[..size].ToArray() : null;
            return EvictPatched(page, reference, prepared, PageHasher.Hash(plain), c);
        }
        foreach (ulong key in page.Keys!)
        {
            if (!group.ContainsKey(key) && !refs.ContainsKey(key))
            {
                group[key] = (self, page.Keys!);
            }
        }
        return false;
    }

    private bool EvictPatched(in ColdPage page, XenReference reference, byte[]? preparedPatch, ulong plainChecksum, PassCounters c)
    {
        var policy = page.Domain.Policy;
        var held = pager.EvictPatched(page.Domain.DomainId, page.Gfn, reference, policy.PatchThreshold, policy.CompressionAlgorithm,
            preparedPatch, plainChecksum);
        if (held is null)
        {
            c.Contended++;
            return false;
        }
        if (held.Kind == XenHeldKind.Patched)
        {
            c.Patched++;
            c.PatchBytes += held.Data!.Length;
        }
        else
        {
            c.Compressed++;
            c.CompressedBytes += held.MemoryBytes;
        }
        return true;
    }

    private void TryCompress(in ColdPage page, byte[] plain, PassCounters c)
    {
        var domain = page.Domain;
        var policy = domain.Policy;
        if (pager.IsEvicted(domain.DomainId, page.Gfn) || !connection.TryReadPage(domain.DomainId, page.Gfn, plain))
        {
            return;
        }
        int limit = (int)(policy.CompressionThreshold * PageGeometry.PageSize);
        if (XenPager.TryCompress(plain, policy.CompressionAlgorithm, limit) is not { } prepared)
        {
            // Does not compress well enough: the guest keeps it, and passes leave it alone until its content changes.
            if (page.Gfn < (ulong)domain.Ages.Length && domain.Ages[page.Gfn] != XenDomain.NeverSeen)
                domain.Ages[page.Gfn] |= XenDomain.IncompressibleFlag;
            c.Incompressible++;
            return;
        }
        var held = pager.EvictCompressed(domain.DomainId, page.Gfn, policy.CompressionAlgorithm, prepared);
        if (held is null)
        {
            c.Contended++;
            return;
        }
        c.Compressed++;
        c.CompressedBytes += held.MemoryBytes;
    }

    // References whose last patch and source page are gone leave the index.
    private void PruneReferenceIndex()
    {
        foreach (var group in referenceIndex.Values)
        {
            foreach (var (key, reference) in group.ToArray())
            {
                if (reference.Released)
                {
                    group.Remove(key);
                }
            }
        }
        CountReferenceIndex();
    }

    private static Dictionary<TKey, TValue> Group<TKey, TValue>(Dictionary<string, Dictionary<TKey, TValue>> groups, string trustGroup)
        where TKey : notnull
    {
        if (!groups.TryGetValue(trustGroup, out var group))
        {
            groups[trustGroup] = group = [];
        }
        return group;
    }
}
