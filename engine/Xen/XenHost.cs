using System.Collections.Concurrent;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Paging;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Xen;

/// <summary>
/// The engine as a dom0 service on the local Xen: the same per-domain policy and passes as the embedded host, with the
/// guests' memory in Xen. Sharing goes through memshr (Xen keeps shared frames copy-on-write); patched, compressed and
/// swapped pages are evicted through mem_paging and rebuilt by the pager when the guest touches them.
/// </summary>
/// <remarks>
/// Domains are listed from Xen at every call that needs them (they come and go). The engine's clock on Xen is content
/// based: dom0 cannot see a guest's accessed bits, so a page's age is the number of passes it has been seen unchanged
/// (its hash equal to the last pass's) and not paged back in. Patching takes pages unchanged for a pass; compression
/// pages unchanged for the domain's C4 period.
/// </remarks>
public sealed partial class XenHost : IDEHost, IEngineService
{
    private readonly XenConnection connection;
    private readonly XenPager pager;
    private readonly SwapSpace? swap;
    private readonly ConcurrentDictionary<uint, XenDomain> byId = new();
    private readonly Lock domainGate = new();
    // Held by a scan through all its passes (PassLoop.Scan): scans run one at a time, and Dispose waits for the one in flight.
    private readonly Lock scanGate = new();
    // Held by each pass (inside the scan lock) and by the changes that must not race a pass: a trust group change, a new
    // similarity detector, a mechanism turned off for a restore. They wait for the pass in progress, if any, not for the rest
    // of its scan (an audit saw Set-DEPolicy -TrustGroup wait for a whole -UntilStable scan, past Ctrl-C), and are seen by
    // the scan's next pass. Order: scanGate, then passGate; a holder of passGate never takes scanGate.
    // Taken exclusively by the changes (two of them must not run together either).
    private readonly Scanning.PassGate passGate = new();
    private volatile bool disposed;
    // Cancelled when the host is disposed: scans in flight stop at their next check and end with HostDisconnected instead of
    // holding the disconnection up until they are done (as on the embedded host).
    private readonly CancellationTokenSource closing = new();
    private long passes;

    /// <summary>Whether disposal has begun (scans in flight are being stopped).</summary>
    internal bool IsClosing => closing.IsCancellationRequested;
    private long engineCpuTicks;

    private XenHost(XenConnection connection, XenHostOptions options)
    {
        this.connection = connection;
        Name = options.Name;
        JitWarmup.Start();
        Policy = new HostPolicy(options.SimilaritySeed ?? Random.Shared.Next());
        pager = new XenPager(connection);
        try
        {
            if (options.SwapPath is { } path)
            {
                swap = SwapSpace.Create(path, options.SwapSizeBytes);
            }
            pager.UseSwap(swap, options.PagerMemoryLimitBytes ?? long.MaxValue);
            PagerMemoryLimitBytes = options.PagerMemoryLimitBytes;
            pager.PagedIn = OnPagedIn;
            Connected = DateTimeOffset.Now;
            Refresh();
        }
        catch
        {
            swap?.Dispose();
            pager.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Connects to the local Xen from dom0. "XenNotAvailable" at once without /dev/xen/privcmd; "XenPermissionDenied" when
    /// not root; "XenShimNotFound" when the shim or Xen's libraries are missing.
    /// </summary>
    public static XenHost Connect(XenHostOptions? options = null)
    {
        options ??= new XenHostOptions();
        Validate(options);
        var connection = XenConnection.Open();
        return Create(connection, options);
    }

    /// <summary>Tests connect to the fake Xen without privcmd.</summary>
    internal static XenHost Connect(XenHostOptions options, bool requirePrivcmd)
    {
        Validate(options);
        return Create(XenConnection.Open(requirePrivcmd), options);
    }

    private static XenHost Create(XenConnection connection, XenHostOptions options)
    {
        try
        {
            return new XenHost(connection, options);
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    private static void Validate(XenHostOptions options)
    {
        NameRules.CheckHostName(options.Name);
        if (options.PagerMemoryLimitBytes is { } limit && limit < PageGeometry.PageSize)
        {
            throw new DEException("MemoryLimitInvalid", DEErrorKind.InvalidArgument,
                $"The pager's memory limit must be at least {PageGeometry.PageSize} bytes; {limit} was given.", limit);
        }
        if (options.PagerMemoryLimitBytes is not null && options.SwapPath is null)
        {
            throw new DEException("XenMemoryLimitNeedsSwap", DEErrorKind.InvalidArgument,
                "On Xen the memory limit bounds what the pager holds before it writes pages to swap: give a swap path too.",
                options.PagerMemoryLimitBytes);
        }
        // The embedded host's id for the same mistake (DEHost): Connect-DEHost checks it first, under its own id.
        if (options.SwapSizeBytes is { } size && options.SwapPath is null)
        {
            throw new DEException("SwapSizeNeedsSwapPath", DEErrorKind.InvalidArgument,
                $"A swap size ({size} bytes) sizes the swap file: give its path (SwapPath) too.", size);
        }
    }

    public string Name { get; }

    public string Kind => "Xen";

    public DateTimeOffset Connected { get; }

    public bool IsConnected => !disposed;

    /// <summary>The host's name: what Export-Csv and string interpolation show of a domain's Host.</summary>
    public override string ToString() => Name;

    /// <summary>The similarity detector and the rest of the host-wide settings (watermarks and compaction do not apply on Xen).</summary>
    public HostPolicy Policy { get; }

    public long ScanPasses => Interlocked.Read(ref passes);

    /// <summary>The pager's memory limit, or null.</summary>
    public long? PagerMemoryLimitBytes { get; private set; }

    /// <summary>The pager's swap file, or null.</summary>
    public string? SwapPath => swap?.Storage.Path;

    /// <summary>The swap file's size (0 without one).</summary>
    public long SwapBytes => (swap?.SlotCount ?? 0) * PageGeometry.PageSize;

    /// <summary>CPU time (user + system, per worker thread) the engine's passes have used.</summary>
    public TimeSpan EngineCpuTime => TimeSpan.FromTicks(Interlocked.Read(ref engineCpuTicks));

    /// <summary>The pager serving the domains with patching or compression on (for .NET callers that want its counters).</summary>
    public XenPager Pager => pager;

    /// <summary>Every domain on the host, domain 0 included, in id order, as Xen lists them now.</summary>
    public IReadOnlyList<XenDomain> Domains
    {
        get
        {
            Refresh();
            return byId.Values.Where(d => !d.IsRemoved).OrderBy(d => d.DomainId).ToArray();
        }
    }

    /// <summary>The domain with this name (as xl list shows it, case-insensitive) or, failing that, this domain id.</summary>
    public XenDomain? TryGetDomain(string nameOrId)
    {
        var all = Domains;
        return all.FirstOrDefault(d => string.Equals(d.Name, nameOrId, StringComparison.OrdinalIgnoreCase))
               ?? (uint.TryParse(nameOrId, out uint id) ? all.FirstOrDefault(d => d.DomainId == id) : null);
    }

    IReadOnlyList<IDEDomain> IDEHost.Domains => Domains;

    IDEDomain? IDEHost.TryGetDomain(string name) => TryGetDomain(name);

    Scanning.ScanResult IDEHost.Scan(IEnumerable<IDEDomain>? domains, Scanning.ScanOptions? options, Action<Scanning.ScanProgress>? progress,
        CancellationToken cancellationToken) =>
        Scan(DomainsOf.Cast<XenDomain>(domains), options, progress, cancellationToken);

    void IDEHost.SetHostPolicy(int? keys, int? blocksPerKey, int? candidates, int? seed, double? compactionThreshold,
        double? lowWatermark, double? highWatermark)
    {
        if (compactionThreshold is not null || lowWatermark is not null || highWatermark is not null)
        {
            throw new DEException("HostPolicyNotApplicable", DEErrorKind.InvalidArgument,
                $"Host '{Name}' is a Xen host: the pager has no store to compact and no frames of its own to keep free, so the " +
                "compaction threshold and the watermarks do not apply.", Name);
        }
        SetHostPolicy(keys, blocksPerKey, candidates, seed);
    }

    public XenDomain GetDomain(string nameOrId) => TryGetDomain(nameOrId) ?? throw DEHost.DomainNotFound(nameOrId);

    /// <summary>Lets passes share this domain's identical pages with those of its trust group (memshr on for it).</summary>
    public void EnableSharing(XenDomain domain)
    {
        CheckTreatable(domain, "sharing");
        connection.EnableSharing(domain.DomainId);
        domain.Policy.SharingEnabled = true;
        domain.ForgetUnshareable(); // at the next pass's start: no pass to wait for
    }

    /// <summary>
    /// Stops sharing this domain's pages. Pages shared already stay shared until the guest writes them: Xen has no call
    /// that unshares a page, so <paramref name="unshare"/> is refused with "XenUnshareNotSupported".
    /// </summary>
    public long DisableSharing(XenDomain domain, bool unshare = false)
    {
        CheckOwned(domain);
        if (unshare)
        {
            throw new DEException("XenUnshareNotSupported", DEErrorKind.NotImplemented,
                $"Xen cannot unshare the pages of domain '{domain.Name}' on request: a shared page gets a private copy when the " +
                "guest writes it. Sharing was left as it is; disable it without -Unshare.", domain.Name);
        }
        domain.Policy.SharingEnabled = false;
        if (!domain.IsRemoved)
        {
            connection.DisableSharing(domain.DomainId);
        }
        return 0;
    }

    /// <summary>Lets passes store this domain's similar pages as patches in the pager (mem_paging on, this host its pager).</summary>
    public void EnablePatching(XenDomain domain)
    {
        CheckTreatable(domain, "patching");
        pager.Attach(domain.DomainId);
        domain.Policy.PatchingEnabled = true;
    }

    /// <summary>
    /// Stops patching; with <paramref name="restore"/> the patched pages (and references taken from it) go back to the guest.
    /// A restore waits for the pass in progress, if any (not for the rest of its scan), as long as
    /// <paramref name="cancellationToken"/> allows (OperationCanceledException, nothing changed).
    /// </summary>
    public long DisablePatching(XenDomain domain, bool restore, CancellationToken cancellationToken = default) =>
        Disable(domain, p => p.PatchingEnabled = false, restore, cancellationToken, XenHeldKind.Patched, XenHeldKind.Reference);

    /// <summary>Lets passes compress this domain's cold pages in the pager, with <paramref name="algorithm"/> when given.</summary>
    public void EnableCompression(XenDomain domain, CompressionAlgorithm? algorithm = null)
    {
        if (algorithm is { } a)
        {
            PageCompressors.Get(a);
        }
        CheckTreatable(domain, "compression");
        pager.Attach(domain.DomainId);
        bool changed = !domain.Policy.CompressionEnabled || (algorithm is { } b && b != domain.Policy.CompressionAlgorithm);
        if (algorithm is { } alg)
        {
            domain.Policy.CompressionAlgorithm = alg;
        }
        domain.Policy.CompressionEnabled = true;
        if (changed)
        {
            domain.ForgetIncompressible(); // at the next pass's start: no pass to wait for
        }
    }

    /// <summary>
    /// Stops compression; with <paramref name="restore"/> the compressed pages go back to the guest. A restore waits for the
    /// pass in progress, if any (not for the rest of its scan), as long as <paramref name="cancellationToken"/> allows
    /// (OperationCanceledException, nothing changed).
    /// </summary>
    public long DisableCompression(XenDomain domain, bool restore, CancellationToken cancellationToken = default) =>
        Disable(domain, p => p.CompressionEnabled = false, restore, cancellationToken, XenHeldKind.Compressed, XenHeldKind.Plain);

    // Turns a pager mechanism off; with restore its pages go back. Paging goes back to Xen once the pager holds nothing
    // of the domain and no mechanism needs it.
    private long Disable(XenDomain domain, Action<Domains.DomainPolicy> off, bool restore, CancellationToken cancellationToken,
        params XenHeldKind[] kinds)
    {
        CheckOwned(domain);
        if (!restore)
        {
            off(domain.Policy);
        }
        else
        {
            HostCallbacks.ThrowIfInCallbackOf(this, Name, "restore a domain's pages");
            // Turned off between two passes: a pass reads the flags as it goes, and the one in progress could still evict
            // pages behind the restore's walk, which nothing would restore after. Later passes, even of the same scan, read
            // the flag off. Only the pass in progress is waited for (the pass gate), not the rest of its scan; a cancelled
            // wait changes nothing.
            EnterPassGate(cancellationToken);
            try
            {
                CheckOwned(domain); // the host disconnected, or the domain went, while it waited
                off(domain.Policy);
            }
            finally
            {
                ExitPassGate();
            }
        }
        long restored = restore ? pager.Restore(domain.DomainId, kinds) : 0;
        if (!domain.Policy.PatchingEnabled && !domain.Policy.CompressionEnabled && pager.IsAttached(domain.DomainId)
            && pager.GetDomainStats(domain.DomainId).HeldPages == 0)
        {
            pager.Detach(domain.DomainId);
        }
        return restored;
    }

    /// <summary>
    /// Loads back every page the pager holds for the domain (swapped ones too) and hands its paging back to Xen: what to do
    /// before saving, migrating or shutting a domain down.
    /// </summary>
    public long RestoreAll(XenDomain domain)
    {
        CheckOwned(domain);
        long held = pager.GetDomainStats(domain.DomainId).HeldPages;
        pager.Detach(domain.DomainId);
        return held;
    }

    /// <summary>
    /// Changes a domain's policy values (null leaves one as it is); all are checked before any changes. A trust group change
    /// waits for the pass in progress, if any (not for the rest of its scan), as long as <paramref name="cancellationToken"/>
    /// allows (OperationCanceledException, nothing changed); the scan's next pass sees the new group.
    /// </summary>
    public void SetPolicy(XenDomain domain, int? c4Sweeps = null, int? patchThreshold = null,
        double? compressionThreshold = null, CompressionAlgorithm? algorithm = null, string? trustGroup = null,
        CancellationToken cancellationToken = default)
    {
        CheckOwned(domain);
        if (algorithm is { } a)
        {
            PageCompressors.Get(a);
        }
        // Every value checked first (the trial is made again below, from the policy as it is then).
        domain.Policy.With(c4Sweeps, patchThreshold, compressionThreshold, algorithm, trustGroup);
        // A trust group is checked and changed with no pass running: a pass reads each domain's trust group as it goes, and
        // one that ran between the check and the change could still share or patch this domain's pages within its old group.
        // Between two passes is enough (the pass gate): the next pass reads the new group, and nothing kept from one pass to
        // the next is of the domain's group (the reference index holds no page of a domain that may change group). The other
        // values take effect as a pass reads them, with no pass to wait for.
        bool betweenPasses = trustGroup is not null && trustGroup != domain.Policy.TrustGroup;
        while (true)
        {
            if (betweenPasses)
            {
                HostCallbacks.ThrowIfInCallbackOf(this, Name, "change a domain's trust group");
                EnterPassGate(cancellationToken);
            }
            try
            {
                if (TryChangePolicy(domain, betweenPasses, c4Sweeps, patchThreshold, compressionThreshold, algorithm, trustGroup))
                {
                    return;
                }
            }
            finally
            {
                if (betweenPasses) ExitPassGate();
            }
            // Another caller changed the trust group meanwhile, and this change would set it again: between passes too.
            betweenPasses = true;
        }
    }

    // Makes the trial of a policy change and takes it, under the policy's gate (a change made meanwhile by another caller is
    // not undone); false, changing nothing, when it changes the trust group and the caller does not hold the pass gate.
    private bool TryChangePolicy(XenDomain domain, bool betweenPasses, int? c4Sweeps, int? patchThreshold,
        double? compressionThreshold, CompressionAlgorithm? algorithm, string? trustGroup)
    {
        if (betweenPasses)
        {
            CheckOwned(domain); // the host disconnected, or the domain went, while it waited
        }
        lock (domain.Policy.ChangeGate)
        {
            var trial = domain.Policy.With(c4Sweeps, patchThreshold, compressionThreshold, algorithm, trustGroup);
            if (trial.TrustGroup != domain.Policy.TrustGroup)
            {
                if (!betweenPasses)
                {
                    return false;
                }
                Refresh();
                var held = pager.GetDomainStats(domain.DomainId);
                if (domain.Info.SharedPages > 0 || held.PatchedPages + held.ReferencePages > 0)
                {
                    throw new DEException("TrustGroupChangeNeedsUnshare", DEErrorKind.InvalidOperation,
                        $"Domain '{domain.Name}' still has shared pages ({domain.Info.SharedPages}) or patches and references " +
                        $"({held.PatchedPages + held.ReferencePages}) from trust group '{domain.Policy.TrustGroup}'. Shared pages on Xen " +
                        "stay shared until written; restore patches with Disable-DEPatching -Restore.", domain.Name);
                }
            }
            bool compressionChanged = trial.CompressionThreshold != domain.Policy.CompressionThreshold
                                      || trial.CompressionAlgorithm != domain.Policy.CompressionAlgorithm;
            domain.Policy.TakeTunables(trial);
            if (compressionChanged) domain.ForgetIncompressible(); // at the next pass's start
            return true;
        }
    }

    /// <summary>
    /// Changes the similarity detector (k keys of s blocks, c candidates, the seed); the reference index keeps its pages. Waits
    /// for the pass in progress, if any (not for the rest of its scan), as long as <paramref name="cancellationToken"/> allows
    /// (OperationCanceledException, nothing changed); the scan's next pass uses the new detector.
    /// </summary>
    public void SetHostPolicy(int? keys = null, int? blocksPerKey = null, int? candidates = null, int? seed = null,
        CancellationToken cancellationToken = default)
    {
        HostCallbacks.ThrowIfInCallbackOf(this, Name, "change the host's policy"); // it waits for the pass in progress
        // Checked before the wait (the detector is made again below, from the one in use then).
        DEHost.CheckSimilarityValues(keys, blocksPerKey, candidates);
        EnterPassGate(cancellationToken);
        try
        {
            CheckConnected(); // the host was disconnected while this waited
            // A pass computes its pages' keys with the detector it read at its start, and looks them up in the reference
            // index, kept from pass to pass: both change between two passes, and the next pass starts with an empty index.
            var old = Policy.Detector;
            if (Changed(old))
            {
                Policy.Detector = NewDetector(old);
                referenceIndex.Clear();
                CountReferenceIndex();
            }
            if (candidates is { } c) Policy.SimilarityCandidates = c;
        }
        finally
        {
            ExitPassGate();
        }

        bool Changed(Patching.SimilarityDetector old) =>
            (keys ?? old.Keys) != old.Keys || (blocksPerKey ?? old.BlocksPerKey) != old.BlocksPerKey || (seed ?? old.Seed) != old.Seed;

        Patching.SimilarityDetector NewDetector(Patching.SimilarityDetector old) =>
            new(keys ?? old.Keys, blocksPerKey ?? old.BlocksPerKey, seed ?? old.Seed);
    }

    /// <summary>Runs <paramref name="pass"/> as the host's pass in progress (the pass gate held).</summary>
    private T AsPass<T>(Func<T> pass) => passGate.AsPass(pass);

    /// <summary>
    /// Takes the pass gate, alone, between two passes (<see cref="Scanning.PassGate.Enter"/>): cancellable, OperationCanceledException
    /// without the gate. The caller exits it (<see cref="ExitPassGate"/>).
    /// </summary>
    private void EnterPassGate(CancellationToken cancellationToken) => passGate.Enter(exclusive: true, cancellationToken);

    private void ExitPassGate() => passGate.Exit(exclusive: true);

    /// <summary>The domain's highest gfn (its physmap may have holes below it: an HVM guest's MMIO hole).</summary>
    internal long MaxGfn(XenDomain domain)
    {
        CheckOwned(domain);
        return (long)connection.GetMaxGpfn(domain.DomainId);
    }

    /// <summary>
    /// A guest page's bytes as the guest would read them, without disturbing it: through a read-only foreign mapping, or from
    /// the pager's copy when the pager holds it (so reading does not page it back in).
    /// </summary>
    public byte[] ReadPage(XenDomain domain, long gfn)
    {
        CheckOwned(domain);
        if (gfn < 0)
        {
            throw new DEException("GfnOutOfRange", DEErrorKind.InvalidArgument, $"Guest frame {gfn} is negative.", gfn);
        }
        byte[] page = new byte[PageGeometry.PageSize];
        if (!pager.TryReadHeld(new XenPageRef(domain.DomainId, (ulong)gfn), page))
        {
            connection.ReadPage(domain.DomainId, (ulong)gfn, page);
        }
        return page;
    }

    /// <summary>Pages per state and memory used and saved, from Xen's counters and what the pager holds (as the host's snapshot has them).</summary>
    public DomainPageStats GetPageStats(XenDomain domain, CancellationToken cancellationToken = default)
    {
        CheckOwned(domain);
        cancellationToken.ThrowIfCancellationRequested();
        if (domain.IsControlDomain)
        {
            // Domain 0 is not treated, and not in the snapshot: measured alone.
            Refresh();
            var (stats, charge, stored) = MeasureDomain(domain, SharedFrameCharge(out _));
            return stats with { BytesUsed = (long)Math.Round(charge), StoredBytes = (long)Math.Round(stored) };
        }
        return TakeSnapshot(cancellationToken).Find(domain.Id) ?? throw DEHost.DomainNotFound(domain.Name);
    }

    /// <summary>
    /// A domain's page counts, its exact charge (its own frames, its share of the shared frames, its stored bytes) and its
    /// exact stored bytes: what the pager holds for it, and its patches' share of the reference pages the pager keeps for
    /// patches only (their own page went back to its guest), so that the domains' stored bytes add up to the pager's.
    /// </summary>
    private (DomainPageStats Stats, double Charge, double Stored) MeasureDomain(XenDomain domain, double sharedCharge)
    {
        var info = domain.Info;
        var held = pager.GetDomainStats(domain.DomainId);
        double stored = held.StoredBytes + held.OrphanReferenceBytes;
        double used = (double)info.TotalPages * PageGeometry.PageSize + info.SharedPages * sharedCharge + stored;
        var policy = domain.Policy;
        var stats = new DomainPageStats(domain.Name, domain.Id, domain.PageCount, (long)info.TotalPages, 0, (long)info.SharedPages,
            domain.SizeBytes, 0, policy.TrustGroup, policy.SharingEnabled)
        {
            Host = Name,
            PatchedPages = held.PatchedPages,
            CompressedPages = held.CompressedPages + held.PlainPages,
            SwappedPages = held.SwappedPages,
            ReferencePages = held.ReferencePages,
            StoredBytes = held.StoredBytes,
            Status = domain.Status,
            PatchingEnabled = policy.PatchingEnabled,
            CompressionEnabled = policy.CompressionEnabled,
            CompressionAlgorithm = policy.CompressionAlgorithm.ToString(),
        };
        return (stats, used, stored);
    }

    /// <summary>
    /// Host-wide: guest memory of the domUs, the frames they hold (their own plus the shared frames), what the pager holds,
    /// the engine's metadata, page-ins, engine time.
    /// </summary>
    public HostStats GetStats(CancellationToken cancellationToken = default) => TakeSnapshot(cancellationToken).Host;

    /// <summary>Every domU's page stats and the host's totals, from one refresh of Xen's counters, adding up to the byte.</summary>
    /// <remarks>Xen's counters are read at once (no pass to wait for): <paramref name="cancellationToken"/> is checked before.</remarks>
    public HostSnapshot TakeSnapshot(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Refresh();
        var domains = Domains.Where(d => !d.IsControlDomain).ToArray();
        double sharedCharge = SharedFrameCharge(out ulong usedFrames);
        var builder = new SnapshotBuilder();
        foreach (var d in domains)
        {
            var (stats, charge, stored) = MeasureDomain(d, sharedCharge);
            builder.Add(stats, charge, stored);
        }
        long frames = domains.Sum(d => (long)d.Info.TotalPages) + (long)usedFrames;
        // The same parts as an embedded host's, where Xen has them: each domU's page table here is the pager's hash and age
        // of every page, and its similarity table the references patches were made against.
        var metadata = MeasureMetadata(domains);
        var peak = metadataPeak.Note(metadata);
        var time = new[]
        {
            new MechanismTime("Scan", TimeSpan.FromTicks(Interlocked.Read(ref scanTicks)), Interlocked.Read(ref pagesSwept)),
        };
        return builder.Build(new HostStats(Name, domains.Length, PagerMemoryLimitBytes, frames, 0, frames, (long)usedFrames, 0, metadata.Total,
            ScanPasses, pager.Faults.Snapshot(), time)
        {
            Metadata = metadata,
            MetadataPeakBytes = peak.Total,
            MetadataPeak = peak,
            StoreAllocatedBytes = pager.StoredBytes,
            StoreStoredBytes = pager.StoredBytes,
            StoreBlobs = pager.EvictedPages,
            EngineCpuTime = EngineCpuTime,
            SwapPath = SwapPath,
            SwapBytes = SwapBytes,
            SwapUsedBytes = (swap?.SlotsUsed ?? 0) * PageGeometry.PageSize,
            PageOuts = pager.SwapOuts,
            PagerFailures = pager.FailureCount,
            LastPagerError = pager.LastFailure,
        });
    }

    /// <summary>
    /// The pager's metadata, part by part: the hash and age of every page of the domains (P2M), the references patches were
    /// made against (Similarity), the swap file's slot table. Kept across passes.
    /// </summary>
    private MetadataParts MeasureMetadata(IEnumerable<XenDomain> domains) => MetadataParts.None with
    {
        P2M = domains.Sum(d => d.MetadataBytes),
        Similarity = ReferenceIndexBytes,
        Swap = swap?.MetadataBytes ?? 0,
    };

    // The most metadata held: measured at each pass's end (the reference index grows during a pass) and by every snapshot.
    private readonly MetadataPeak metadataPeak = new();

    /// <summary>The pager's page-ins of one kind (Unpatch, Decompress, SwapIn), timed from the ring's request to the answer.</summary>
    /// <summary>A copy of the latency histogram of one kind of page-in (the pager's own goes on recording).</summary>
    public LatencyHistogram FaultHistogram(FaultKind kind) => pager.Faults[kind].Copy();

    /// <summary>Loads every page the pager holds back into its guest, hands paging back to Xen and closes the connection.</summary>
    public void Dispose()
    {
        if (disposed)
        {
            return;
        }
        HostCallbacks.ThrowIfInCallbackOf(this, Name, "dispose of the host");
        closing.Cancel();
        EngineControl.Close(sample: true); // and no Start-DEEngine in flight starts one after
        // The scan in flight stops at its next check (closing); a change holding the pass gate ends its work, and one waiting
        // for it finds the host disconnected.
        lock (scanGate)
        {
            EnterPassGate(CancellationToken.None);
            try
            {
                disposed = true;
            }
            finally
            {
                ExitPassGate();
            }
        }
        try
        {
            pager.Dispose();
        }
        finally
        {
            swap?.Dispose();
            connection.Dispose();
        }
    }

    // What one shared gfn costs in frames: Xen's shared frames over the shared gfns of the guest domains (1 when none).
    // Domain 0 is left out as it is of the host's frames: were it to share pages (the engine never offers its pages), its
    // part would be charged to no domain, and "uncharged" would not be 0 at rest.
    private double SharedFrameCharge(out ulong usedFrames)
    {
        var (_, used) = connection.GetSharingTotals();
        usedFrames = used;
        ulong sharedGfns = 0;
        foreach (var d in byId.Values)
        {
            if (!d.IsRemoved && !d.IsControlDomain)
            {
                sharedGfns += d.Info.SharedPages;
            }
        }
        return sharedGfns == 0 ? PageGeometry.PageSize : (double)PageGeometry.PageSize * used / sharedGfns;
    }

    // Lists the domains: new ones are added (named from xenstore), gone ones are marked removed and their pages dropped.
    private void Refresh()
    {
        CheckConnected();
        var listed = connection.ListDomains();
        lock (domainGate)
        {
            var alive = new HashSet<uint>();
            foreach (var info in listed)
            {
                alive.Add(info.DomainId);
                if (byId.TryGetValue(info.DomainId, out var known))
                {
                    known.Info = info;
                }
                else
                {
                    byId[info.DomainId] = new XenDomain(this, info, NameOf(info.DomainId));
                }
            }
            foreach (var (id, domain) in byId)
            {
                if (!alive.Contains(id))
                {
                    domain.MarkRemoved();
                    byId.TryRemove(id, out _);
                    pager.ForgetDomain(id);
                }
            }
        }
    }

    // A disconnected host fails as a disconnected embedded host does.
    private void CheckConnected()
    {
        if (disposed)
        {
            throw DEHost.HostDisconnected(Name);
        }
    }

    private string NameOf(uint domainId) =>
        connection.GetDomainName(domainId) is { Length: > 0 } name ? name : $"Domain-{domainId}";

    private void CheckOwned(XenDomain domain)
    {
        CheckConnected();
        if (!ReferenceEquals(domain.Host, this) || domain.IsRemoved)
        {
            throw DEHost.DomainNotFound(domain.Name);
        }
    }

    private void CheckTreatable(XenDomain domain, string mechanism)
    {
        CheckOwned(domain);
        if (domain.IsControlDomain)
        {
            throw new DEException("XenControlDomainNotTreated", DEErrorKind.InvalidOperation,
                $"Domain 0 runs the engine itself: {mechanism} is only for guest domains (domUs).", domain.Name);
        }
        if (!domain.SupportsSharingAndPaging)
        {
            throw new DEException("XenDomainNotHvmHap", DEErrorKind.InvalidOperation,
                $"Domain '{domain.Name}' is not an HVM guest with hardware-assisted paging (flags: {domain.Info.Flags}); Xen shares " +
                "and pages only those.", domain.Name);
        }
    }

    // A page the guest asked back is hot again: its age and its last hash are cleared, so the next pass sees it as just
    // changed and it needs a whole further pass unchanged before it can be patched again (no evict, fault, evict loop).
    private void OnPagedIn(XenPageRef page)
    {
        if (byId.TryGetValue(page.DomainId, out var domain))
        {
            var ages = domain.Ages;
            var hashes = domain.Hashes;
            if (page.Gfn < (ulong)ages.Length && page.Gfn < (ulong)hashes.Length)
            {
                hashes[page.Gfn] = 0;
                ages[page.Gfn] = 0;
            }
        }
    }

    TimeSpan IEngineService.RunEnginePass(CancellationToken cancellationToken) =>
        Scan(options: new Scanning.ScanOptions { Passes = 1 }, cancellationToken: cancellationToken).WarmUpWait;
}
