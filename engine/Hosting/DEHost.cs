using System.Collections.Concurrent;
using System.Diagnostics;
using DifferenceEngine.Clock;
using DifferenceEngine.Domains;
using DifferenceEngine.Loading;
using DifferenceEngine.Memory;
using DifferenceEngine.Scanning;
using DifferenceEngine.Sharing;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Hosting;

/// <summary>
/// The embedded host: owns machine memory (a frame pool with an optional limit), the domains,
/// the sharing indexes of each trust group, the fault counters and the engine's passes.
/// </summary>
public sealed partial class DEHost : IDEHost, IEngineService
{
    private readonly ConcurrentDictionary<string, Domain> _byName = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<int, Domain> _byId = new();
    private readonly ConcurrentDictionary<string, SharingIndex> _sharing = new(StringComparer.Ordinal);
    private readonly Lock _scanGate = new();
    // Held alone by each pass (inside the scan gate, which a scan holds through all its passes), shared by snapshots and by
    // restores and policy changes waiting for the pass in progress: they wait for that pass only, and not for each other.
    private readonly PassGate _passGate = new();

    /// <summary>Runs <paramref name="pass"/> as the host's pass in progress.</summary>
    private T AsPass<T>(Func<T> pass) => _passGate.AsPass(pass);

    /// <summary>Takes the pass gate, shared, between two passes (<see cref="PassGate.Enter"/>); the caller exits it.</summary>
    private void EnterPassGateToRead(CancellationToken cancellationToken = default) => _passGate.Enter(cancellationToken: cancellationToken);

    /// <summary>Waits for the pass in progress, if any, to end (not for the rest of its scan).</summary>
    private void WaitForPassInProgress() => _passGate.WaitForPassInProgress();

    /// <summary>Callers waiting for the pass gate now (tests).</summary>
    internal int PassGateWaiters => _passGate.Waiters;
    private readonly object _domainGate = new();
    // Domain ids are the process's, not a host's: never given twice, so that a record of a domain (its page stats, its
    // policy) names no other domain, even one of the same name on a host disconnected and connected again.
    private static int s_nextDomainId;
    private long _activeOperations;
    private volatile bool _disposed;
    // Set by the first Dispose (a second one, even concurrent, returns at once); cancelled by it, so that scans in flight
    // stop at their next check and end with HostDisconnected instead of holding the disconnect up until they are done.
    private int _disposeStarted;
    private readonly CancellationTokenSource _closing = new();

    /// <summary>Whether Dispose has begun (tests).</summary>
    internal bool IsClosing => _closing.IsCancellationRequested;
    private long _passes;
    private readonly long[] _mechanismTicks = new long[5];
    private readonly long[] _mechanismPages = new long[5];

    public DEHost(HostOptions? options = null)
    {
        options ??= new HostOptions();
        NameRules.CheckHostName(options.Name);
        long? limitFrames = null;
        if (options.MemoryLimitBytes is long limit)
        {
            if (limit < PageGeometry.PageSize)
                throw new DEException("MemoryLimitInvalid", DEErrorKind.InvalidArgument,
                    $"The memory limit must be at least one page ({PageGeometry.PageSize} bytes); {limit} was given.", limit);
            limitFrames = limit / PageGeometry.PageSize;
        }
        Name = options.Name;
        if (options.JournalDirectory is { } wanted && !Directory.Exists(wanted))
            throw File.Exists(wanted)
                ? new DEException("JournalPathNotDirectory", DEErrorKind.InvalidArgument,
                    $"'{wanted}' is a file; the crash journals go into a folder: give the path of one.", wanted)
                : new DEException("JournalDirectoryNotFound", DEErrorKind.ObjectNotFound,
                    $"The folder for crash journals '{wanted}' does not exist.", wanted);
        JournalDirectory = options.JournalDirectory is { } journals
            ? Path.GetFullPath(journals)
            : options.SwapPath is { } swap ? Path.GetDirectoryName(Path.GetFullPath(swap))! : "/var/tmp";
        JitWarmup.Start();
        Frames = new FramePool(limitFrames);
        Store = new Store.CompactStore();
        Policy = new HostPolicy(options.SimilaritySeed ?? Random.Shared.Next());
        if (limitFrames is long lf)
        {
            // One budget for frames and the store's slabs.
            long budget = lf * PageGeometry.PageSize;
            Frames.ReservedBytes = () => Store.AllocatedBytes;
            Store.GrowthGate = next => next + Frames.FramesInUse * PageGeometry.PageSize <= budget;
            Store.GrowthLock = Frames.BudgetGate;
        }
        if (options.SwapSizeBytes is { } size && options.SwapPath is null)
            throw new DEException("SwapSizeNeedsSwapPath", DEErrorKind.InvalidArgument,
                $"A swap size ({size} bytes) sizes the swap file: give its path (SwapPath) too.", size);
        if (options.SwapPath is { } swapPath)
        {
            if (limitFrames is null)
                throw new DEException("SwapNeedsMemoryLimit", DEErrorKind.InvalidArgument,
                    "A swap file is used only when the host has a memory limit: give -MemoryLimit too.", swapPath);
            Reclaimer = new Paging.Reclaimer(this, Paging.SwapSpace.Create(swapPath, options.SwapSizeBytes, options.SwapStorageFactory));
        }
        Connected = DateTimeOffset.Now;
    }

    /// <summary>The longest a scan waits before its first pass for the engine's JIT warm-up (ScanResult.WarmUpWait).</summary>
    public static TimeSpan MaxWarmUpWait => JitWarmup.MaxScanWait;

    public string Name { get; }
    public string Kind => "Embedded";
    public DateTimeOffset Connected { get; }
    public bool IsConnected => !_disposed;

    /// <summary>The host's name: what Export-Csv and string interpolation show of a domain's Host.</summary>
    public override string ToString() => Name;
    public long? MemoryLimitBytes => Frames.LimitFrames * PageGeometry.PageSize;
    public long ScanPasses => Interlocked.Read(ref _passes);

    internal FramePool Frames { get; }

    /// <summary>Where patches and compressed pages live.</summary>
    internal Store.CompactStore Store { get; }

    /// <summary>Compressed shared frames: their blobs' handles and how many pages name each.</summary>
    internal Compression.SharedBlobTable SharedBlobs { get; } = new();

    /// <summary>The page groups of every domain of this host.</summary>
    internal Compression.PageGroupTable Groups { get; } = new();

    /// <summary>
    /// Tests only: called with a group's domain and members after the group is compressed and before its members are
    /// checked and committed, with no lock held (a test writes a member there, as a guest could).
    /// </summary>
    internal Action<Domain, long[]>? GroupFormingHook { get; set; }

    /// <summary>
    /// Tests only: called by a pass as each of its phases before compression ends ("sweep", "list", "share"), on the pass's
    /// thread with no lock held (a test cancels the scan there, to see what a pass cancelled between two phases gives back).
    /// </summary>
    internal Action<string>? PassPhaseHook { get; set; }

    /// <summary>Host-wide engine settings (similarity detector, compaction, watermarks).</summary>
    public HostPolicy Policy { get; }

    /// <summary>Paging to the swap file; null when the host has no swap.</summary>
    internal Paging.Reclaimer? Reclaimer { get; }

    /// <summary>The swap file's path, or null.</summary>
    public string? SwapPath => Reclaimer?.Swap.Storage.Path;

    /// <summary>Where the crash journals of QEMU domains are made (<see cref="HostOptions.JournalDirectory"/>).</summary>
    public string JournalDirectory { get; }

    /// <summary>
    /// After a pass or a reclaim: every QEMU domain's crash journal made durable so far, dropped from the page cache, and
    /// compacted when most of it is dead; the pages whose take-out the journal refused made the guest's again
    /// (<see cref="Domain.QemuReconcile"/>), and those whose record the compaction found changed on the disk written to it
    /// again (<see cref="Domain.QemuRejournal"/>).
    /// </summary>
    internal void MaintainJournals()
    {
        foreach (var d in Domains)
        {
            if (d.IsRemoved || d.Qemu is null) continue;
            d.QemuReconcile();
            d.Qemu.Journal.Maintain();
            // Records a compaction found changed on the disk, left out of the new file: written again from the pages held
            // (one that cannot be, this time, is tried again at the next upkeep: the journal's failures say so meanwhile).
            foreach (long gfn in d.Qemu.Journal.TakeDamaged())
                if (!d.QemuRejournal(gfn) && !d.IsRemoved) d.Qemu.Journal.NoteDamaged(gfn);
        }
    }

    /// <summary>The swap file's size (0 without one).</summary>
    public long SwapBytes => (Reclaimer?.Swap.SlotCount ?? 0) * PageGeometry.PageSize;

    /// <summary>The memory limit in bytes (frames and store together), or long.MaxValue when unlimited.</summary>
    internal long BudgetBytes => Frames.LimitFrames is long l ? l * PageGeometry.PageSize : long.MaxValue;

    /// <summary>
    /// Frames that could be had now: free ones, plus what paging out could free (free swap slots beyond
    /// the exchange reserve). Null when there is no limit.
    /// </summary>
    internal long? ObtainableFrames => Frames.LimitFrames is null
        ? null
        : Frames.FramesFree + (Reclaimer is { } r ? Math.Max(0, r.Swap.SlotCount - r.Swap.SlotsUsed - r.Swap.ExchangeReserve) : 0);

    /// <summary>What is left of the budget.</summary>
    internal long FreeBudgetBytes => BudgetBytes - Frames.FramesInUse * PageGeometry.PageSize - Store.AllocatedBytes;
    internal FaultCounters Faults { get; } = new();

    /// <summary>The domains, ordered by id.</summary>
    public IReadOnlyList<Domain> Domains
    {
        get
        {
            // Kept until a domain comes or goes, so the engine's hot loops (the reclaimer reads it every batch) allocate nothing.
            long version = Interlocked.Read(ref _domainsVersion);
            var snapshot = Volatile.Read(ref _domainSnapshot);
            if (snapshot is not null && snapshot.Version == version) return snapshot.Items;
            var items = Array.AsReadOnly(_byId.Values.OrderBy(d => d.Id).ToArray());
            Volatile.Write(ref _domainSnapshot, new DomainSnapshot(version, items));
            return items;
        }
    }

    /// <summary>The domains in id order as of <see cref="Version"/> (the count of registrations and removals).</summary>
    private sealed record DomainSnapshot(long Version, IReadOnlyList<Domain> Items);

    private DomainSnapshot? _domainSnapshot;
    private long _domainsVersion;

    public Domain? TryGetDomain(string name) => _byName.TryGetValue(name, out var d) ? d : null;

    IReadOnlyList<IDEDomain> IDEHost.Domains => Domains;

    IDEDomain? IDEHost.TryGetDomain(string name) => TryGetDomain(name);

    ScanResult IDEHost.Scan(IEnumerable<IDEDomain>? domains, ScanOptions? options, Action<ScanProgress>? progress,
        CancellationToken cancellationToken) =>
        Scan(DomainsOf.Cast<Domain>(domains), options, progress, cancellationToken);

    void IDEHost.SetHostPolicy(int? keys, int? blocksPerKey, int? candidates, int? seed, double? compactionThreshold,
        double? lowWatermark, double? highWatermark) =>
        SetHostPolicy(keys, blocksPerKey, candidates, seed, compactionThreshold, lowWatermark, highWatermark);

    /// <summary>The domain named <paramref name="name"/>: DomainNotFound when there is none, HostDisconnected once disposed.</summary>
    public Domain GetDomain(string name) =>
        IsClosing ? throw HostDisconnected(Name) : TryGetDomain(name) ?? throw DomainNotFound(name);

    internal Domain? TryGetDomainById(int id) => _byId.TryGetValue(id, out var d) ? d : null;

    internal SharingIndex SharingIndexFor(string trustGroup) =>
        _sharing.GetOrAdd(trustGroup, static (g, frames) => new SharingIndex(g, frames), Frames);

    /// <summary>
    /// Creates an empty domain of <paramref name="sizeBytes"/> (a multiple of 4096): every page Zero and untouched, no
    /// frame; a page becomes guest memory when the guest first writes it.
    /// </summary>
    public Domain CreateDomain(string name, long sizeBytes, DomainOptions? options = null)
    {
        using var op = EnterOperation();
        if (sizeBytes <= 0 || (sizeBytes & PageGeometry.PageMask) != 0)
            throw new DEException("MemorySizeInvalid", DEErrorKind.InvalidArgument,
                $"A domain's memory size must be a positive multiple of {PageGeometry.PageSize} bytes; {sizeBytes} was given.", sizeBytes);
        var domain = NewDomain(name, sizeBytes / PageGeometry.PageSize, options, "empty");
        domain.MarkUntouched();
        Register(domain);
        return domain;
    }

    /// <summary>
    /// <see cref="AttachQemu(string, string, DomainOptions?)"/> for running QEMU <paramref name="pid"/>, found through the
    /// DE_QEMU_SOCKET in its environment (<see cref="Qemu.QemuLink.SocketOf"/>); "QemuProcessMismatch" when another QEMU
    /// answers on that socket.
    /// </summary>
    public Domain AttachQemu(string name, int pid, DomainOptions? options = null)
    {
        var domain = AttachQemu(name, Qemu.QemuLink.SocketOf(pid), options);
        if (domain.QemuPid == pid) return domain;
        int other = domain.QemuPid;
        RemoveDomain(domain);
        throw new DEException("QemuProcessMismatch", DEErrorKind.InvalidArgument,
            $"The socket in process {pid}'s environment is served by QEMU {other}: the guest of {pid} was not attached.", pid.ToString());
    }

    /// <summary>
    /// Attaches to a running QEMU whose library (libdeqemu.so) listens at <paramref name="socketPath"/>, and makes its
    /// guest a domain: the pages the guest has are Private (its own memory, read in place), the rest Untouched, and the
    /// engine serves the guest's faults from now on; pages an engine before this one held are taken over from the crash
    /// journal the library kept. Removing the domain (or disconnecting the host) hands the guest back to QEMU.
    /// Errors: those of the link ("QemuSocketNotFound", "QemuAttachRefused", ...), of the journal ("QemuJournalInvalid",
    /// "QemuJournalCorrupt", "QemuJournalFailed"), and of a domain's name.
    /// </summary>
    public Domain AttachQemu(string name, string socketPath, DomainOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(socketPath);
        using var op = EnterOperation();
        ValidateName(name);
        if (_byName.ContainsKey(name)) throw DomainExists(name);
        var link = Qemu.QemuLink.Attach(socketPath);
        if (!link.WriteProtect && options is { SharingEnabled: true } or { PatchingEnabled: true } or { CompressionEnabled: true })
        {
            if (link.StateFd < 0) link.TryDetach(); // the guest is not left waiting for an engine (see below)
            link.Dispose();
            throw new DEException("QemuWriteProtectUnavailable", DEErrorKind.NotImplemented,
                "This kernel gives no write-protect faults on shared memory (Linux 5.19 and later do): pages cannot be taken " +
                $"out of QEMU domain '{name}' without risking a write of the guest; attach without sharing, patching and compression.", name);
        }
        Qemu.QemuJournal? journal = null;
        Qemu.QemuRam? ram = null;
        Domain? domain = null;
        int state = -1;
        try
        {
            // The crash journal: the one an earlier engine deposited with this QEMU (its pages are served from it), or a
            // new one deposited before any page is taken out.
            state = link.TakeState();
            journal = state >= 0
                ? Qemu.QemuJournal.Open(state, JournalDirectory, link.PageCount, link.Deposit)
                : Qemu.QemuJournal.Create(JournalDirectory, link.PageCount, link.Deposit);
            ram = new Qemu.QemuRam(link, Frames, journal);
            domain = NewDomain(name, link.PageCount, options, $"qemu pid {link.Pid} ({socketPath})");
            domain.AttachQemu(ram);
            Register(domain);
            return domain;
        }
        catch
        {
            if (domain?.Qemu is not null)
            {
                domain.Release(); // forgets its frames, hands the guest back, closes the link
            }
            else
            {
                // No page was taken out yet: the guest is handed back, unless an earlier engine's journal (its pages) is
                // with the library, which then keeps the guest waiting for an engine that can serve them.
                if (state < 0) link.TryDetach();
                if (ram is not null) ram.Dispose();
                else
                {
                    journal?.Dispose();
                    link.Dispose();
                }
            }
            throw;
        }
    }

    /// <summary>Creates a domain holding the pages of <paramref name="source"/> (an image, a core, a process).</summary>
    /// <remarks>Every loaded page gets a frame (Private), as in a running VM; scans find the zero and identical ones.</remarks>
    public Domain LoadDomain(string name, MemorySource source, DomainOptions? options = null, CancellationToken cancellationToken = default) =>
        LoadDomain(name, source, options, progress: null, cancellationToken);

    /// <summary>
    /// <see cref="LoadDomain(string, MemorySource, DomainOptions?, CancellationToken)"/>, telling
    /// <paramref name="progress"/> how far it is: the guest pages laid out so far (up to <see cref="MemorySource.PageCount"/>),
    /// every <see cref="LoadProgressPages"/> pages and at the end, on the loading thread.
    /// </summary>
    public Domain LoadDomain(string name, MemorySource source, DomainOptions? options, Action<long>? progress,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        using var op = EnterOperation();
        CheckMachineHasRoomFor(name, source);
        var domain = NewDomain(name, source.PageCount, options, source.Description);
        // Registered while loading, so that under a memory limit its own pages can be paged out too. Its pages are untouched
        // until laid out: the host's figures meanwhile count what is loaded, not the rest as zero pages saved.
        domain.Loading = true;
        domain.MarkUntouched();
        Register(domain);
        // A disconnect (Dispose) ends the load at its next check, as it ends scans, instead of waiting for all of it.
        using var ends = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _closing.Token);
        try
        {
            domain.LoadReport = source.CopyTo(new LoadSink(this, domain, progress), ends.Token);
            domain.MarkLoadedZeros();
            HostCallbacks.Invoke(this, progress, domain.PageCount);
            domain.Loading = false;
            if (_closing.IsCancellationRequested) throw HostDisconnected(Name); // disconnected at the very end: removed with it
            return domain;
        }
        catch (OperationCanceledException) when (_closing.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            Unregister(domain);
            throw HostDisconnected(Name);
        }
        catch
        {
            Unregister(domain);
            throw;
        }
    }

    /// <summary>
    /// "InsufficientMemoryToLoad" (ResourceUnavailable) when a load would clearly take more memory than the machine has:
    /// every loaded page gets a frame until a scan merges or compresses it, and a host without a memory limit (or with one
    /// above what the machine has) would otherwise have the process killed by the kernel part way (a 64 GiB sparse
    /// image on a 24 GiB machine). The machine's room is /proc/meminfo's MemAvailable plus SwapFree, as the kernel sees
    /// it when the load begins, and no more than the engine's memory cgroup and those above it leave (a container's limit:
    /// the kernel kills at the cgroup's limit whatever the machine has free). The guard is against a clear shortfall.
    /// </summary>
    private void CheckMachineHasRoomFor(string name, MemorySource source)
    {
        long bytes = Math.Min(source.PagesWithData, source.PageCount) * PageGeometry.PageSize; // a core's holes take no frame
        // Under a memory limit the host holds at most that much (it pages the rest out, or refuses the load).
        long needed = Frames.LimitFrames is long limit ? Math.Min(bytes, limit * PageGeometry.PageSize) : bytes;
        if (MachineRoom() is not (long room, var cgroup) || needed <= room) return;
        string where = cgroup is null
            ? "this machine has"
            : $"the memory cgroup this process runs in ({cgroup}, or one above it) leaves";
        throw new DEException("InsufficientMemoryToLoad", DEErrorKind.ResourceUnavailable,
            $"Loading '{name}' ({source.Description}) takes {needed / (1 << 20):N0} MiB: every page gets a frame until a scan " +
            $"merges or compresses it, and {where} {room / (1 << 20):N0} MiB available (memory and swap). Connect the " +
            "host with a memory limit and a swap file (Connect-DEHost -MemoryLimit -SwapPath), or load a smaller source.", name);
    }

    /// <summary>What <see cref="MachineRoom"/> leaves, in bytes; null where it cannot be read.</summary>
    internal static long? MachineRoomBytes() => MachineRoom()?.Bytes;

    /// <summary>
    /// MemAvailable + SwapFree from /proc/meminfo, in bytes, bounded by what this process's memory cgroups leave
    /// (<see cref="CgroupMemory"/>; Cgroup names the cgroup when it is the tighter bound); null where meminfo cannot be read.
    /// </summary>
    internal static (long Bytes, string? Cgroup)? MachineRoom()
    {
        if (MemInfoRoom() is not (long available, long swapFree)) return null;
        long machine = available + swapFree;
        if (CgroupMemory.Read() is { } cg && cg.TotalBytes(swapFree) is long limited && limited < machine)
            return (limited, cg.Cgroup);
        return (machine, null);
    }

    /// <summary>MemAvailable and SwapFree from /proc/meminfo, in bytes; null where it cannot be read.</summary>
    private static (long Available, long SwapFree)? MemInfoRoom()
    {
        if (!OperatingSystem.IsLinux()) return null;
        long? available = null, swapFree = null;
        try
        {
            foreach (string line in File.ReadLines("/proc/meminfo"))
            {
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal)) available = KiB(line);
                else if (line.StartsWith("SwapFree:", StringComparison.Ordinal)) swapFree = KiB(line);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
        return available is long a ? (a, swapFree ?? 0) : null;

        static long? KiB(string line) =>
            long.TryParse(line.AsSpan(line.IndexOf(':') + 1).Trim().TrimEnd("kB").Trim(), out long kib) ? kib * 1024 : null;
    }

    /// <summary>Removes a domain and gives back its frames; shared frames go when their last user goes.</summary>
    public void RemoveDomain(Domain domain)
    {
        ArgumentNullException.ThrowIfNull(domain);
        using var op = EnterOperation();
        if (!Unregister(domain)) throw DomainNotFound(domain.Name);
    }

    /// <summary>Takes a domain out of the host and gives back what it holds; false when it was not registered.</summary>
    private bool Unregister(Domain domain)
    {
        lock (_domainGate)
        {
            if (!_byId.TryRemove(domain.Id, out _)) return false;
            _byName.TryRemove(domain.Name, out _);
            Interlocked.Increment(ref _domainsVersion);
        }
        domain.Release();
        Frames.ReleaseFree();
        return true;
    }

    /// <summary>Lets scans merge this domain's identical and zero pages.</summary>
    public void EnableSharing(Domain domain)
    {
        using var op = EnterOperation();
        CheckOwned(domain);
        domain.ThrowIfQemuCannotEvict();
        ChangeMechanism(domain, p => p.SharingEnabled = true);
    }

    /// <summary>
    /// Stops merging this domain's pages. With <paramref name="unshare"/>, every Shared page gets a
    /// frame of its own again; fails before changing anything when the limit leaves too few frames.
    /// Zero pages stay Zero: they hold no frame and are shared with nobody.
    /// </summary>
    /// <returns>The number of pages given their own frame.</returns>
    public long DisableSharing(Domain domain, bool unshare)
    {
        using var op = EnterOperation();
        CheckOwned(domain);
        // A page that names a compressed shared frame shares too: it gets its own frame back, decompressed.
        static bool SharesSomething(ulong e) => PageEntry.State(e) == PageState.Shared || PageEntry.IsSharedBlob(e);
        return TurnOff(domain, unshare, "unshare a domain's pages", p => p.SharingEnabled, (p, on) => p.SharingEnabled = on, () =>
        {
            domain.EnsureFramesFor(SharesSomething, "InsufficientMemoryToUnshare", (shared, obtainable) =>
                $"Unsharing domain '{domain.Name}' needs up to {shared} frames but only {obtainable} can be had under the host's limit (free, or freed by paging out); nothing was changed.");
            // (a guest's page goes back into the guest: ConvertEvery)
            return domain.ConvertEvery(SharesSomething, (gfn, e) =>
                PageEntry.State(e) == PageState.Shared ? domain.BreakSharing(gfn, e, copy: true) : domain.Rebuild(gfn, e));
        });
    }

    /// <summary>
    /// The domain's stats as the host's snapshot has them, so that they add up with the other domains'; a domain registered
    /// after the snapshot was taken is measured alone. A removed domain is DomainNotFound (its pages are gone, not saved).
    /// </summary>
    public DomainPageStats GetPageStats(Domain domain, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(domain);
        if (IsClosing) throw HostDisconnected(Name); // its domains went with it: not "not found"
        if (!ReferenceEquals(domain.Host, this) || domain.IsRemoved) throw DomainNotFound(domain.Name);
        if (TakeSnapshot(cancellationToken).Find(domain.Id) is { } stats) return stats;
        using var op = EnterOperation();
        var (alone, charge, _) = MeasureDomain(domain);
        // Removed while it was measured (its release empties the pages after it marks the domain): not zeros saved.
        if (domain.IsRemoved) throw DomainNotFound(domain.Name);
        return alone with { BytesUsed = (long)Math.Round(charge) };
    }

    /// <summary>
    /// One domain's page counts, its exact charge (a shared frame's users each pay a fraction of it) and its exact share of
    /// the store's bytes (a shared blob's names each a fraction of it), the stats' StoredBytes rounded alone.
    /// </summary>
    /// <param name="sharedFrames">When given, a bitmap over frame numbers in which the frame of every shared page is set.</param>
    private (DomainPageStats Stats, double Charge, double Stored) MeasureDomain(Domain domain, ulong[]? sharedFrames = null)
    {
        long priv = 0, zero = 0, untouched = 0, shared = 0, uniform = 0, swapped = 0;
        double used = 0;
        var enc = new EncodedCounts();
        for (long gfn = 0; gfn < domain.PageCount; gfn++)
        {
            // Encoded pages are read under their lock: the store may move their blob meanwhile.
            ulong e = domain.PeekEntry(gfn);
            switch (PageEntry.State(e))
            {
                case PageState.Zero when PageEntry.IsUntouched(e): untouched++; break;
                case PageState.Zero: zero++; break;
                case PageState.Uniform: uniform++; break;
                case PageState.Swapped: swapped++; break;
                case PageState.Private: priv++; used += PageGeometry.PageSize; break;
                case PageState.Shared:
                    shared++;
                    uint frame = PageEntry.Frame(e);
                    used += (double)PageGeometry.PageSize / Math.Max(1, Frames.RefCount(frame));
                    if (sharedFrames is not null && frame >> 6 < (uint)sharedFrames.Length) sharedFrames[frame >> 6] |= 1UL << (int)(frame & 63);
                    break;
                case PageState.Patched:
                case PageState.Compressed:
                    // Changed between the peek and the lock: counted again as it is now, once its lock is released.
                    if (!CountEncoded(domain, gfn, ref enc)) gfn--;
                    break;
            }
        }
        var policy = domain.Policy;
        var stats = new DomainPageStats(domain.Name, domain.Id, domain.PageCount, priv, zero, shared,
            (domain.PageCount - untouched) * PageGeometry.PageSize, 0, policy.TrustGroup, policy.SharingEnabled)
        {
            Host = Name,
            UntouchedPages = untouched,
            UniformPages = uniform,
            SwappedPages = swapped,
            Status = domain.Status,
            PatchedPages = enc.Patched,
            CompressedPages = enc.Compressed,
            SharedCompressedPages = enc.SharedCompressed,
            GroupedPages = enc.Grouped,
            StoredBytes = (long)Math.Round(enc.Stored),
            PatchingEnabled = policy.PatchingEnabled,
            CompressionEnabled = policy.CompressionEnabled,
            CompressionAlgorithm = policy.CompressionAlgorithm.ToString(),
        };
        return (stats, used + enc.Used, enc.Stored);
    }

    private struct EncodedCounts
    {
        public long Patched, Compressed, SharedCompressed, Grouped;
        public double Stored, Used;
    }

    /// <summary>
    /// Counts one Patched or Compressed page under its lock (the store may move its blob meanwhile); false, changing
    /// nothing, when the page is no longer encoded.
    /// </summary>
    private bool CountEncoded(Domain domain, long gfn, ref EncodedCounts c)
    {
        ulong e = domain.Lock(gfn);
        try
        {
            var st = PageEntry.State(e);
            if (st is not (PageState.Patched or PageState.Compressed)) return false;
            if (PageEntry.IsGrouped(e))
            {
                // A page group's member: charged an equal share of the group's stream among its live members.
                if (Groups.Describe(PageEntry.GroupId(e)) is { } group)
                {
                    // A group whose stream is in the swap file holds no memory: its pages are charged nothing, like swapped pages.
                    double share = (double)group.MemoryBytes / group.LiveCount;
                    c.Stored += share;
                    c.Used += share;
                }
                c.Compressed++;
                c.Grouped++;
                return true;
            }
            if (PageEntry.IsSharedBlob(e))
            {
                // A compressed shared frame: each page that names the blob is charged its share.
                ChargeSharedBlob((uint)PageEntry.Payload(e), ref c);
                c.Compressed++;
                c.SharedCompressed++;
                return true;
            }
            var blob = Store.Get(PageEntry.Payload(e));
            c.Stored += blob.Length;
            c.Used += blob.Length;
            if (st == PageState.Patched)
            {
                c.Patched++;
                uint reference = EncodedPage.ReferenceFrame(blob);
                // A reference compressed since: the patch is charged its share of the blob, as each page naming it is.
                if (EncodedPage.ReferenceIsSharedBlob(blob)) ChargeSharedBlob(reference, ref c);
                else if (Frames.IsInUse(reference))
                    c.Used += (double)PageGeometry.PageSize / Math.Max(1, Frames.RefCount(reference));
            }
            else c.Compressed++;
            return true;
        }
        finally
        {
            domain.Unlock(gfn, e);
        }
    }

    /// <summary>Charges one name of shared blob <paramref name="id"/> (a page or a patch) its share of the blob.</summary>
    private void ChargeSharedBlob(uint id, ref EncodedCounts c)
    {
        if (SharedBlobs.Describe(id, Store, Groups) is not { } shared) return;
        double share = shared.Length / shared.References;
        c.Stored += share;
        c.Used += share;
    }

    /// <summary>Host-wide frames, memory, metadata, faults and engine time (from <see cref="TakeSnapshot"/>).</summary>
    public HostStats GetStats(CancellationToken cancellationToken = default) => TakeSnapshot(cancellationToken).Host;

    /// <summary>
    /// Every domain's page stats and the host's totals, measured in one walk so that they add up to the byte, between two
    /// passes: it waits for the pass in progress, if any, and <paramref name="cancellationToken"/> ends that wait
    /// (OperationCanceledException).
    /// </summary>
    public HostSnapshot TakeSnapshot(CancellationToken cancellationToken = default) => Snapshot(waitForPass: true, cancellationToken)!;

    /// <summary><see cref="TakeSnapshot"/> when no pass is in progress; null, at once, when one is.</summary>
    internal HostSnapshot? TryTakeSnapshot() => Snapshot(waitForPass: false);

    /// <summary>
    /// The snapshot, taken between passes: a pass that compressed or merged pages already measured, and freed their frames
    /// before the frames in use were read, would leave the domains charged for more than the host holds (an audit saw
    /// "Uncharged" at -10 MB with the engine running). Guest faults meanwhile only add frames: in flight, never negative.
    /// A progress callback of this host's own call does not wait (its pass waits for it). Null when a pass is in progress
    /// and <paramref name="waitForPass"/> is false.
    /// </summary>
    private HostSnapshot? Snapshot(bool waitForPass, CancellationToken cancellationToken = default)
    {
        using var op = EnterOperation();
        if (HostCallbacks.InCallbackOf(this)) return MeasureHost();
        if (waitForPass) EnterPassGateToRead(cancellationToken);
        else if (!_passGate.TryEnter()) return null; // a pass in progress (or waiting to begin)
        try
        {
            return MeasureHost();
        }
        finally
        {
            _passGate.Exit();
        }
    }

    private HostSnapshot MeasureHost()
    {
        var domains = Domains;
        var builder = new SnapshotBuilder();
        // Shared frames: the frames shared pages map to, each counted once (the stable table exists only during a pass).
        var sharedBits = new ulong[(Frames.FrameNumberLimit + 63) / 64];
        long swappedPages = 0;
        foreach (var d in domains)
        {
            var (stats, charge, stored) = MeasureDomain(d, sharedBits);
            builder.Add(stats, charge, stored);
            swappedPages += stats.SwappedPages;
        }
        long groupSlotBytes = Groups.SlotsInSwap * PageGeometry.PageSize;
        long sharedFrames = 0;
        foreach (ulong word in sharedBits) sharedFrames += System.Numerics.BitOperations.PopCount(word);
        var time = Enum.GetValues<Mechanism>()
            .Select(m => new MechanismTime(m.ToString(), Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _mechanismTicks[(int)m])),
                Interlocked.Read(ref _mechanismPages[(int)m])))
            .ToArray();
        var metadata = MeasureMetadata(domains);
        var peak = _metadataPeak.Note(metadata);
        return builder.Build(new HostStats(Name, domains.Count, MemoryLimitBytes, Frames.FramesInUse, Frames.FramesFree,
            Frames.FramesAllocated, sharedFrames, 0, metadata.Total, ScanPasses, Faults.Snapshot(), time)
        {
            Metadata = metadata,
            MetadataPeakBytes = peak.Total,
            MetadataPeak = peak,
            StoreAllocatedBytes = Store.AllocatedBytes,
            StoreStoredBytes = Store.StoredBytes,
            StoreBlobs = Store.LiveBlobs,
            StoreFragmentation = Store.Fragmentation,
            SharedCompressedFrames = SharedBlobs.Count,
            PageGroups = Groups.Count,
            SharedBlobGroups = Groups.SharedCount,
            PageGroupsInSwap = Groups.InSwap,
            SwapGroupBytes = groupSlotBytes,
            EngineCpuTime = EngineCpuTime,
            SwapPath = SwapPath,
            SwapBytes = SwapBytes,
            // What the swap file holds, by its definition: the swapped pages measured and the page groups' slots (the
            // slots a page-out in flight has reserved hold nothing yet; their pages are still in frames, and counted there).
            SwapUsedBytes = swappedPages * PageGeometry.PageSize + groupSlotBytes,
            PageOuts = Reclaimer?.PageOuts ?? 0,
            PageOutP50 = Reclaimer?.PageOutLatency.Percentile(50) ?? TimeSpan.Zero,
            PageOutP99 = Reclaimer?.PageOutLatency.Percentile(99) ?? TimeSpan.Zero,
            SwapWriteFailures = Reclaimer?.WriteFailures ?? 0,
            LastSwapWriteError = Reclaimer?.LastWriteError,
            LastReclaimError = Reclaimer?.LastError,
            ReclaimRuns = Reclaimer?.Runs ?? 0,
            OutOfMemoryEvents = domains.Sum(d => d.OutOfMemoryEvents),
            JournalBytes = domains.Sum(d => d.Qemu?.Journal.FileBytes ?? 0),
            JournalFailures = domains.Sum(d => d.Qemu?.Journal.Failures ?? 0),
            LastJournalError = domains.Select(d => d.Qemu?.Journal.LastError).LastOrDefault(e => e is not null),
            // QEMU guests' faults the engine could not serve: the guest thread waits on its page (no call to fail).
            PagerFailures = domains.Sum(d => d.Qemu?.FailedFaults ?? 0),
            LastPagerError = domains.Select(d => d.Qemu?.FaultFailure).LastOrDefault(e => e is not null) switch
            {
                null => null,
                DEException de => $"{de.ErrorId}: {de.Message}",
                var other => $"{other.GetType().Name}: {other.Message}",
            },
        });
    }

    /// <summary>A copy of the latency histogram of one kind of fault, for reports and charts (the host's own goes on recording).</summary>
    public LatencyHistogram FaultHistogram(FaultKind kind) => Faults[kind].Copy();

    public void Dispose()
    {
        if (Volatile.Read(ref _disposeStarted) != 0) return;
        HostCallbacks.ThrowIfInCallbackOf(this, Name, "dispose of the host");
        if (Interlocked.Exchange(ref _disposeStarted, 1) != 0) return;
        _closing.Cancel(); // scans in flight end at their next check (Scan turns that into HostDisconnected)
        // Every QEMU guest is being left: a background pass whose journal compaction deposits with a stopped QEMU (SIGSTOP,
        // a frozen cgroup) would otherwise hold the engine's thread, and this behind it, until that QEMU resumes. The
        // deposit gives up after the link's patience (the journal stays as it was); the guest is detached below.
        lock (_domainGate)
            foreach (var d in _byId.Values) d.Qemu?.Link.BeginLeaving();
        EngineControl.Close(sample: true); // and no Start-DEEngine in flight starts one after
        // QEMU guests first, while the host still works: every page the engine holds goes back into its guest (through
        // the store, the swap file, the frames), then the guest is handed back.
        // Taken under the domains' lock, after _disposeStarted is set: a domain registering meanwhile is either in it or
        // refused (Register).
        Domain[] guests;
        lock (_domainGate) guests = _byId.Values.Where(d => d.Qemu is not null).ToArray();
        // A failure of the engine's own (not a DEException) is thrown once everything else is let go: a host half disposed
        // could not be disposed again (_disposeStarted), and would keep its frames, store, swap file and threads.
        Exception? unexpected = null;
        foreach (var d in guests)
        {
            try
            {
                Unregister(d);
            }
            catch (DEException)
            {
                // That guest's pages could not all be put back (its QEMU went away, or a page failed its checksum): the
                // rest of the host is let go all the same.
            }
            catch (Exception ex)
            {
                unexpected ??= ex;
            }
        }
        _disposed = true;
        // Wait for guest accesses and scans in flight before the frames go away.
        var spin = new SpinWait();
        while (Interlocked.Read(ref _activeOperations) != 0) spin.SpinOnce();
        Reclaimer?.Dispose(); // stops the background thread, closes the swap file (unnamed since it was made)
        foreach (var d in _byId.Values) d.Release();
        _byId.Clear();
        _byName.Clear();
        foreach (var index in _sharing.Values) index.Dispose();
        _coldShared.Dispose();
        _sharedRuns.Dispose();
        _sharedNominations.Dispose();
        Frames.Dispose();
        Store.Dispose();
        _closing.Dispose();
        if (unexpected is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(unexpected);
    }

    internal OperationScope EnterOperation()
    {
        Interlocked.Increment(ref _activeOperations);
        if (_disposed)
        {
            Interlocked.Decrement(ref _activeOperations);
            throw HostDisconnected(Name);
        }
        return new OperationScope(this);
    }

    internal readonly struct OperationScope(DEHost host) : IDisposable
    {
        public void Dispose() => Interlocked.Decrement(ref host._activeOperations);
    }

    internal enum Mechanism { Clock, Sharing, Patching, Compression, Grouping }

    internal void AddEngineTime(Mechanism mechanism, long ticks, long pages)
    {
        if (pages == 0 && ticks == 0) return;
        Interlocked.Add(ref _mechanismTicks[(int)mechanism], ticks);
        Interlocked.Add(ref _mechanismPages[(int)mechanism], pages);
    }

    /// <summary>The most metadata measured so far: by each pass at the end of its phases, and by every snapshot.</summary>
    private readonly MetadataPeak _metadataPeak = new();

    /// <summary>Measures the metadata a pass holds now, for the peak (<see cref="HostStats.MetadataPeakBytes"/>).</summary>
    private void NotePassMetadata() => _metadataPeak.Note(MeasureMetadata(Domains));

    /// <summary>The engine's metadata, part by part (<see cref="HostStats.Metadata"/>; their sum is <see cref="HostStats.MetadataBytes"/>).</summary>
    private MetadataParts MeasureMetadata(IReadOnlyList<Domain> domains)
    {
        var indexes = _sharing.Values.ToArray();
        return new MetadataParts(
            P2M: domains.Sum(d => d.P2MBytes),
            Frames: Frames.MetadataBytes,
            SharingStable: indexes.Sum(s => s.Stable.MetadataBytes),
            SharingUnstable: indexes.Sum(s => s.UnstableMetadataBytes),
            Similarity: indexes.Sum(s => s.SimilarityMetadataBytes),
            Store: Store.MetadataBytes,
            SharedBlobs: SharedBlobs.MetadataBytes,
            PageGroups: Groups.MetadataBytes,
            PassBuffers: PassBuffersMetadataBytes,
            Swap: Reclaimer?.Swap.MetadataBytes ?? 0,
            Qemu: domains.Sum(d => d.QemuMetadataBytes));
    }

    private Domain NewDomain(string name, long pageCount, DomainOptions? options, string source)
    {
        ValidateName(name);
        if (_byName.ContainsKey(name)) throw DomainExists(name);
        options ??= new DomainOptions();
        var policy = new DomainPolicy
        {
            TrustGroup = options.TrustGroup,
            C4Sweeps = options.C4Sweeps,
            SharingEnabled = options.SharingEnabled,
            PatchingEnabled = options.PatchingEnabled,
            CompressionEnabled = options.CompressionEnabled,
            CompressionAlgorithm = CheckAlgorithm(options.CompressionAlgorithm),
            PatchThreshold = options.PatchThreshold,
            CompressionThreshold = options.CompressionThreshold,
            GroupSize = options.GroupSize,
            GroupAfterSweeps = options.GroupAfterSweeps,
            GroupAlgorithm = options.GroupAlgorithm,
        };
        // The same bound as for images and processes: the P2M table is one array of 8 bytes a page (128 MiB at the bound).
        if (pageCount <= 0 || pageCount > LoadGeometry.MaxGuestBytes / PageGeometry.PageSize)
            throw new DEException("MemorySizeInvalid", DEErrorKind.InvalidArgument,
                $"A domain must have between 1 page and {LoadGeometry.MaxGuestBytes >> 30} GiB of memory " +
                $"({LoadGeometry.MaxGuestBytes / PageGeometry.PageSize} pages); {pageCount} pages were asked for.", pageCount);
        return new Domain(this, Interlocked.Increment(ref s_nextDomainId), name, pageCount, policy, source);
    }

    private void Register(Domain domain)
    {
        lock (_domainGate)
        {
            if (Volatile.Read(ref _disposeStarted) != 0)
            {
                // Disconnecting: a domain registered now would be missed by Dispose's hand-back of QEMU guests.
                domain.Release();
                throw HostDisconnected(Name);
            }
            if (!_byName.TryAdd(domain.Name, domain))
            {
                domain.Release();
                throw DomainExists(domain.Name);
            }
            _byId[domain.Id] = domain;
            Interlocked.Increment(ref _domainsVersion);
        }
    }

    internal void CheckOwned(Domain domain)
    {
        ArgumentNullException.ThrowIfNull(domain);
        if (!ReferenceEquals(domain.Host, this) || domain.IsRemoved) throw DomainNotFound(domain.Name);
    }

    private static void ValidateName(string name)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Length > 64 || name.IndexOfAny(['*', '?', '[', ']', '/', '\\']) >= 0
            || name.Trim() != name || NameRules.Unprintable(name) is not null)
            throw new DEException("DomainNameInvalid", DEErrorKind.InvalidArgument,
                $"'{name}' is not a valid domain name: use 1 to 64 printable characters, no wildcards (* ? [ ]), slashes or surrounding spaces{NameRules.Why(name ?? "")}.", name);
    }

    /// <summary>The "DomainNotFound" error (engine and cmdlets raise the same one).</summary>
    public static DEException DomainNotFound(string name) =>
        new("DomainNotFound", DEErrorKind.ObjectNotFound, $"No domain named '{name}' exists on this host.", name);

    /// <summary>The "HostDisconnected" error (ConnectionError), the one every host kind and the cmdlets raise.</summary>
    public static DEException HostDisconnected(string hostName) =>
        new("HostDisconnected", DEErrorKind.ConnectionError,
            $"Host '{hostName}' has been disconnected. Get-DEHost lists the connected hosts; Connect-DEHost connects one.", hostName);

    private static DEException DomainExists(string name) =>
        new("DomainExists", DEErrorKind.ResourceExists, $"A domain named '{name}' already exists on this host.", name);

    /// <summary>How often a load reports progress: every 16 MiB of guest memory.</summary>
    public const int LoadProgressPages = 4096;

    /// <summary>Puts loaded pages into fresh frames of the domain being built.</summary>
    private sealed class LoadSink(DEHost host, Domain domain, Action<long>? progress) : IGuestPageSink
    {
        private long _nextReport = LoadProgressPages;

        public void SetPage(long gfn, ReadOnlySpan<byte> page)
        {
            if (progress is not null && gfn >= _nextReport)
            {
                // Pages come in increasing gfn order; the gfn says how much of the domain is laid out.
                HostCallbacks.Invoke(host, progress, gfn);
                _nextReport = gfn + LoadProgressPages;
            }

            if ((ulong)gfn >= (ulong)domain.PageCount || page.Length != PageGeometry.PageSize)
                throw new DEException("LoadPageOutOfRange", DEErrorKind.InvalidData,
                    $"The memory source gave page {gfn} ({page.Length} bytes) outside the domain's {domain.PageCount} pages.", gfn);
            domain.ThrowIfRemoved();
            if (PagePresentCheck(domain, gfn))
                throw new DEException("LoadPageDuplicate", DEErrorKind.InvalidData, $"The memory source gave page {gfn} twice.", gfn);
            uint frame = domain.AllocateFrame(gfn);
            page.CopyTo(host.Frames.Span(frame));
            domain.InstallLoaded(gfn, frame);
        }

        private static bool PagePresentCheck(Domain d, long gfn) => PageEntry.State(d.PeekEntry(gfn)) != PageState.Zero;
    }
}
