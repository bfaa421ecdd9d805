using System.Diagnostics;
using System.Runtime.CompilerServices;
using DifferenceEngine.Clock;
using DifferenceEngine.Compression;
using DifferenceEngine.Patching;
using DifferenceEngine.Domains;
using DifferenceEngine.Scanning;
using DifferenceEngine.Sharing;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Hosting;

public sealed partial class DEHost
{
    /// <summary>
    /// Runs engine passes over <paramref name="domains"/> (all when null), in parallel over domains and
    /// page slices: each pass sweeps the clock over every page, then merges the zero and identical
    /// pages of domains that have sharing on. Scans of one host run one at a time.
    /// </summary>
    /// <param name="progress">
    /// Called from worker threads; must be thread-safe and quick. It may take the host's stats, on the thread it is called
    /// on; a snapshot taken on another thread waits for the pass in progress, so a callback that hands one to another
    /// thread and waits for it waits for ever.
    /// </param>
    public ScanResult Scan(IEnumerable<Domain>? domains = null, ScanOptions? options = null,
        Action<ScanProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options ??= new ScanOptions();
        PassLoop.Check(options);
        using var op = EnterOperation();
        HostCallbacks.ThrowIfInCallbackOf(this, Name, "scan");
        bool all = domains is null;
        var chosen = (domains ?? Domains).Distinct().ToArray();
        // A scan over every domain (the background engine's pass, Invoke-DEScan without -Domain) skips the domains
        // removed meanwhile: here, once it holds the scan lock (it takes the domains as they are then), and at each
        // pass; a removal during a pass is seen by the pass itself (Domain.IsRemoved). Only domains named explicitly
        // are refused when removed (DomainNotFound), and only here: the scan's result still names them.
        if (all) chosen = Live(chosen);
        else foreach (var d in chosen) CheckOwned(d);
        Array.Sort(chosen, (a, b) => a.Id.CompareTo(b.Id));
        IEnumerable<string> Names()
        {
            foreach (var d in chosen)
                if (!all || !d.IsRemoved) yield return d.Name;
        }
        return PassLoop.Scan(Name, Names(), chosen.Length, options, _scanGate, all ? () => chosen = Live(Domains) : null, (pass, ct) =>
        {
            if (all) chosen = Live(chosen);
            var result = AsPass(() => RunPass(pass, chosen, options, progress, ct));
            Interlocked.Increment(ref _passes);
            return result;
        }, cancellationToken, _closing.Token,
            progress is null ? null : () => HostCallbacks.Invoke(this, progress, new ScanProgress(0, 0, 0) { WaitingForOtherScan = true }));
    }

    /// <summary>The domains of <paramref name="domains"/> not removed (in their order), as an array of their own.</summary>
    private static Domain[] Live(IReadOnlyList<Domain> domains)
    {
        int live = 0;
        foreach (var d in domains) if (!d.IsRemoved) live++;
        if (live == domains.Count && domains is Domain[] same) return same;
        var result = new Domain[live];
        int i = 0;
        foreach (var d in domains) if (!d.IsRemoved) result[i++] = d;
        return result;
    }

    private volatile bool _anyPatching;
    // Some domain shares or patches: only then does a pass list the shared frames in the stable tables.
    private volatile bool _anyIndexing;

    // The pass's bitmap of frames its sweep listed in their trust group's stable table (one bit a frame number below
    // _listedLimit), so each shared frame is hashed once a pass however many pages share it; native, freed when the pass ends.
    private unsafe ulong* _listedFrames;
    // In the same allocation, after the listed frames' words: frames known to serve a patch as its reference (marked by the
    // sweep for every patched page it sees, and by each patch the pass makes), so a new patch against one adds no frame.
    private unsafe ulong* _referenceFrames;
    // And after those: frames whose similarity keys the sweep marked in the key filter (once a frame, not once a sharer).
    private unsafe ulong* _keyedFrames;
    // And a fourth: frames the step after the sweep has looked at for the stable table (ListStableSlice).
    private unsafe ulong* _stableChecked;
    private uint _listedLimit;
    // The four bitmaps' bytes (counted with the pass's buffers), 0 between passes.
    private long _frameBitmapsBytes;

    private long FrameBitmapsBytes => Volatile.Read(ref _frameBitmapsBytes);

    /// <summary>Makes the pass's bitmaps of listed and reference frames, for the frame numbers the pool has now.</summary>
    private unsafe void AllocateListedFrames()
    {
        FreeListedFrames();
        long limit = Frames.FrameNumberLimit;
        long words = (limit + 63) / 64;
        _listedFrames = (ulong*)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)(4 * words * sizeof(ulong)));
        _referenceFrames = _listedFrames + words;
        _keyedFrames = _referenceFrames + words;
        _stableChecked = _keyedFrames + words;
        _listedLimit = (uint)limit;
        Volatile.Write(ref _frameBitmapsBytes, 4 * words * sizeof(ulong));
    }

    private unsafe void FreeListedFrames()
    {
        System.Runtime.InteropServices.NativeMemory.Free(_listedFrames);
        _listedFrames = null;
        _referenceFrames = null;
        _keyedFrames = null;
        _stableChecked = null;
        _listedLimit = 0;
        Volatile.Write(ref _frameBitmapsBytes, 0);
    }

    /// <summary>
    /// Sets <paramref name="frame"/>'s bit in one of the pass's frame bitmaps; false when the bit was set already, or when
    /// there is no such bit (no pass runs, or a frame newer than the pass's sweep).
    /// </summary>
    private unsafe bool SetFrameBit(ulong* bitmap, uint frame)
    {
        if (frame >= _listedLimit || bitmap == null) return false;
        ulong bit = 1UL << (int)(frame & 63);
        return (Interlocked.Or(ref bitmap[frame >> 6], bit) & bit) == 0;
    }

    /// <summary>Whether <paramref name="frame"/>'s bit is set in one of the pass's frame bitmaps.</summary>
    private unsafe bool HasFrameBit(ulong* bitmap, uint frame) =>
        frame < _listedLimit && bitmap != null && (Volatile.Read(ref bitmap[frame >> 6]) & (1UL << (int)(frame & 63))) != 0;

    /// <summary>
    /// Whether the sweep marks <paramref name="frame"/>'s similarity keys now: the first time a pass asks, and always for a
    /// frame newer than the pass's bitmaps (made by a fault during the sweep: its keys may then be marked more than once,
    /// which only lists it where no other page needed it).
    /// </summary>
    private unsafe bool MarkKeyed(uint frame) => frame >= _listedLimit || SetFrameBit(_keyedFrames, frame);

    /// <summary>Notes, for the running pass, that <paramref name="frame"/> serves a patch as its reference.</summary>
    internal unsafe void MarkReference(uint frame) => SetFrameBit(_referenceFrames, frame);

    /// <summary>Whether the running pass knows <paramref name="frame"/> to serve a patch as its reference already.</summary>
    internal unsafe bool IsKnownReference(uint frame) => HasFrameBit(_referenceFrames, frame);

    /// <summary>
    /// Lists a shared frame, or a patch's reference, in the stable table of its trust group, once a pass: under the
    /// stripe lock of its hash, unless a frame is listed under that hash already (two frames of one content, or a
    /// collision: the first one swept serves, as the first one listed did when the table was kept across passes).
    /// </summary>
    /// <remarks>With the trust group's twin filter on (a domain of the group shares in this pass), the frame only marks
    /// its hash in the filter here, as one more item: the step after the sweep (<see cref="ListStableSlice"/>) lists it if
    /// a page of the pass may match it, so the table holds the frames some page may merge into, not every shared frame
    /// (session 37: 0.34 MiB of the program snapshots' metadata peak, in a later pass's sharing phase).</remarks>
    private unsafe void ListStable(SharingIndex index, uint frame)
    {
        if (!SetFrameBit(_listedFrames, frame)) return; // listed already, or a frame newer than the pass's sweep
        ulong hash = index.HashOf(frame);
        if (index.Twins.Active) index.Twins.Mark(hash);
        else SetStable(index, frame, hash);
    }

    /// <summary>
    /// The frame a Shared page or a patch holds (the patch's reference frame, read from its blob): false for a page in any
    /// other state, and for a patch whose reference was compressed (a shared blob: no frame). The caller holds the page's lock.
    /// </summary>
    private bool TryHeldFrame(ulong e, out uint frame)
    {
        switch (PageEntry.State(e))
        {
            case PageState.Shared:
                frame = PageEntry.Frame(e);
                return true;
            case PageState.Patched:
                return EncodedPage.TryReferenceFrame(Store.Get(PageEntry.Payload(e)), out frame);
            default:
                frame = 0;
                return false;
        }
    }

    /// <summary>Lists <paramref name="frame"/> under <paramref name="hash"/> unless a frame is listed there already.</summary>
    private void SetStable(SharingIndex index, uint frame, ulong hash)
    {
        lock (index.Stable.StripeLock(hash))
        {
            if (!Frames.IsInUse(frame)) return;
            if (!index.Stable.TryGet(hash, out _)) index.Stable.Set(hash, frame);
        }
    }

    /// <summary>
    /// After the sweep: lists in the stable table each shared frame (and patch reference) of a slice whose trust group's
    /// twin filter was on, when a page of the pass may match it (its hash marked again: by a page the sharing phase may
    /// take, or another frame). A frame no page may match is left out; the pages marked are all those the sharing phase
    /// looks up, so none misses a frame it is identical to. Each frame once a pass, checked under a page's lock that holds it.
    /// </summary>
    private unsafe void ListStableSlice(Domain domain, long start, long end, bool sweep)
    {
        var index = SharingIndexFor(domain.Policy.TrustGroup);
        if (!index.Twins.Active || domain.IsRemoved) return;
        for (long gfn = start; gfn < end; gfn++)
        {
            ulong peek = domain.PeekEntry(gfn);
            var peekState = PageEntry.State(peek);
            if (peekState is not (PageState.Shared or PageState.Patched)) continue;
            if (peekState == PageState.Shared && HasFrameBit(_stableChecked, PageEntry.Frame(peek))) continue;
            ulong e;
            if (sweep) e = domain.Lock(gfn);
            else if (!domain.TryLock(gfn, out e)) continue;
            try
            {
                if (domain.IsRemoved) break;
                // Only a frame the sweep noted (it marked the filter), each once.
                if (!TryHeldFrame(e, out uint frame) || !HasFrameBit(_listedFrames, frame) || !SetFrameBit(_stableChecked, frame)) continue;
                ulong hash = index.HashOf(frame);
                if (index.Twins.MayHaveTwin(hash)) SetStable(index, frame, hash);
            }
            finally
            {
                domain.Unlock(gfn, e);
            }
        }
    }

    /// <summary>
    /// Whether the pass's sweep listed <paramref name="frame"/>: it was shared (or a patch's reference) when the pass began,
    /// not made by the pass's own merges.
    /// </summary>
    private unsafe bool IsListed(uint frame) => HasFrameBit(_listedFrames, frame);

    /// <summary>The cold Shared pages of the running pass (held only during a pass, counted in the metadata meanwhile).</summary>
    private readonly PassBuffer<SharedCandidate> _coldShared = new();

    /// <summary>The frames' runs of cold shared pages in the order SharedCompression takes them (only during a pass).</summary>
    private readonly PassBuffer<int> _sharedRuns = new();

    /// <summary>The page groups a pass judges for re-packing (kept between passes).</summary>
    private readonly List<uint> _dirtyGroups = new();

    // Shared blobs a pass's page grouping nominated for groups of shared blobs (SharedGrouping.Nomination), grouped after
    // the sweep; held only during a pass, as the cold shared pages are.
    private readonly PassBuffer<SharedNomination> _sharedNominations = new();

    /// <summary>Adds the shared blobs a slice nominated for groups (<see cref="Compression.SharedGrouping"/>).</summary>
    internal void NominateSharedBlobs(ReadOnlySpan<SharedNomination> nominations)
    {
        if (nominations.IsEmpty) return;
        _sharedNominations.Add(nominations);
    }

    /// <summary>Bytes the buffers of cold shared pages, their runs and nominations hold (only during a pass).</summary>
    internal long PassBuffersMetadataBytes => _coldShared.MetadataBytes + _sharedRuns.MetadataBytes + _sharedNominations.MetadataBytes
                                                + FrameBitmapsBytes;
    private long _engineCpuTicks;

    /// <summary>CPU time (user + system, getrusage per worker thread) that engine passes have used on this host.</summary>
    public TimeSpan EngineCpuTime => TimeSpan.FromTicks(Interlocked.Read(ref _engineCpuTicks));

    internal IDisposable Quiesce()
    {
        _scanGate.Enter();
        var paused = Reclaimer?.Pause();
        return new QuiesceScope(this, paused);
    }

    private sealed class QuiesceScope(DEHost host, IDisposable? paused) : IDisposable
    {
        public void Dispose()
        {
            paused?.Dispose();
            host._scanGate.Exit();
        }
    }

    /// <summary>
    /// One engine pass for background reclaim, over the domains that have a mechanism on; skipped
    /// (false) when a scan is already running or no domain has one.
    /// </summary>
    internal bool TryReclaimPass()
    {
        using var op = EnterOperation();
        var domains = Domains.Where(d => d.Policy.SharingEnabled || d.Policy.PatchingEnabled || d.Policy.CompressionEnabled).ToArray();
        if (domains.Length == 0 || !_scanGate.TryEnter()) return false;
        try
        {
            AsPass(() => RunPass(0, domains, new ScanOptions(), null, CancellationToken.None));
            Interlocked.Increment(ref _passes);
            return true;
        }
        finally
        {
            _scanGate.Exit();
        }
    }

    private PassResult RunPass(int pass, Domain[] domains, ScanOptions options, Action<ScanProgress>? progress, CancellationToken ct)
    {
        // The stable table is filled by the sweep; the similarity and unstable tables take their room only when the steps
        // that fill them begin (RunPassBody), not through the sweep, while the pass's filters are at their fullest.
        foreach (var index in _sharing.Values) index.Stable.BeginPass();
        // Shared blob ids given back during the pass are not handed out again before its end: the pass's nominations for
        // groups of shared blobs (read without the blobs' locks) can never come to name another trust group's blob.
        SharedBlobs.HoldRecycled();
        try
        {
            return RunPassBody(pass, domains, options, progress, ct);
        }
        catch
        {
            // A pass that fails or is cancelled gives back the memory a pass holds only while it runs: the sharing tables'
            // blocks, the filters and the frames it freed. A failure of that must not hide the pass's own exception.
            try
            {
                foreach (var index in _sharing.Values) index.EndPass(complete: false);
                FreeListedFrames();
                Frames.ReleaseFree();
            }
            catch (Exception cleanup) when (cleanup is not OutOfMemoryException)
            {
                System.Diagnostics.Trace.TraceWarning($"DifferenceEngine: cleaning up after a failed pass failed too: {cleanup.Message}");
            }
            throw;
        }
        finally
        {
            // The pass's buffers, whether it completed or not: empty between passes, their memory freed.
            _coldShared.EndPass();
            _sharedRuns.EndPass();
            _sharedNominations.EndPass();
            SharedBlobs.ReleaseHeld();
        }
    }

    private PassResult RunPassBody(int pass, Domain[] domains, ScanOptions options, Action<ScanProgress>? progress, CancellationToken ct)
    {
        _anyPatching = Domains.Any(d => d.Policy.PatchingEnabled);
        _anyIndexing = Domains.Any(d => d.Policy.SharingEnabled || d.Policy.PatchingEnabled);
        var slices = new List<(Domain Domain, long Start, long End)>();
        foreach (var d in domains)
            for (long s = 0; s < d.PageCount; s += options.SliceSize)
                slices.Add((d, s, Math.Min(d.PageCount, s + options.SliceSize)));
        long total = domains.Sum(d => d.PageCount);
        // The domains this pass does not scan still serve as references to those it does (same trust group): their pages
        // are listed, not swept (a scan of one domain patches against the others, and merges into their shared frames, as
        // it did with tables kept across passes).
        // Listed first: a key's slot goes to the first page listed, and a page of a domain not scanned can only be a
        // reference, never patched.
        var sweepSlices = new List<(Domain Domain, long Start, long End, bool Sweep)>();
        // Their shared frames too, whatever their own policy: the stable table holds every shared frame of the group.
        var groups = domains.Where(d => d.Policy.SharingEnabled || d.Policy.PatchingEnabled).Select(d => d.Policy.TrustGroup)
            .ToHashSet(StringComparer.Ordinal);
        if (groups.Count > 0)
        {
            foreach (var d in Domains)
                if (!d.IsRemoved && Array.IndexOf(domains, d) < 0 && groups.Contains(d.Policy.TrustGroup))
                    for (long s = 0; s < d.PageCount; s += options.SliceSize)
                        sweepSlices.Add((d, s, Math.Min(d.PageCount, s + options.SliceSize), false));
        }
        sweepSlices.AddRange(slices.Select(x => (x.Domain, x.Start, x.End, true)));
        AllocateListedFrames();
        BeginTwinFilters(domains, groups);
        long done = 0, swept = 0;
        var sum = new SharingCounters();
        var enc = new EncodeCounters();
        var sumGate = new object();
        long started = Stopwatch.GetTimestamp();
        long listed = 0, awaitingCompression = 0;
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = options.Parallelism, CancellationToken = ct };
        try
        {
            // Three phases: every slice swept (the pass's filters marked, shared frames listed in the stable table) and,
            // while some domain patches, its references listed in the pass's similarity table under keys another page
            // has; then every slice's sharing and patching, so a page finds the references of the whole pass, not only of
            // the pages swept before it; then every slice's compression.
            Parallel.ForEach(sweepSlices, parallel, slice =>
            {
                long n = SweepSlice(slice.Domain, slice.Start, slice.End, slice.Sweep);
                Interlocked.Add(ref swept, n);
            });
            NotePassMetadata(); // the pass's filters at their fullest: their "seen" halves go now
            foreach (var index in _sharing.Values)
            {
                index.Twins.EndMarking();
                index.SimilarKeys.EndMarking();
            }
            // The shared frames a page of the pass may match are listed now that every page has marked the filters: in the
            // same walk as the references, when some domain patches (a walk less a pass), else in a walk of their own.
            bool filtered = false;
            foreach (var index in _sharing.Values) filtered |= index.Twins.Active;
            PassPhaseHook?.Invoke("sweep");
            if (filtered && !_anyPatching)
                Parallel.ForEach(sweepSlices, parallel, slice => ListStableSlice(slice.Domain, slice.Start, slice.End, slice.Sweep));
            if (_anyPatching)
            {
                // Only where some page may be patched: in a group with none (every pass's first, for one) no page would look
                // a reference up.
                foreach (var index in _sharing.Values)
                    if (index.PassCandidates > 0) index.Similar.BeginPass();
                // The references listed under the keys the sweep found more than once, then the key filters given back.
                Parallel.ForEach(sweepSlices, parallel, slice =>
                {
                    if (filtered) ListStableSlice(slice.Domain, slice.Start, slice.End, slice.Sweep);
                    Interlocked.Add(ref listed, ListSlice(slice.Domain, slice.Start, slice.End, slice.Sweep));
                });
                NotePassMetadata();
                PassPhaseHook?.Invoke("list");
            }
            foreach (var index in _sharing.Values)
            {
                index.SimilarKeys.End();
                if (_anyIndexing) index.Unstable.BeginPass();
            }
            Parallel.ForEach(slices, parallel, slice =>
            {
                var c = new SharingCounters();
                var ec = new EncodeCounters();
                ScanSlice(slice.Domain, slice.Start, slice.End, ref c, ref ec);
                lock (sumGate)
                {
                    sum.Add(c);
                    enc.Add(ec);
                }
            });
            NotePassMetadata(); // the sharing and similarity tables at their fullest
            PassPhaseHook?.Invoke("share");
            // Compression needs none of the sharing tables: given back now, not at the pass's end, so they are never held
            // with the compression's buffers. The stable table's stripes stay the locks a shared frame's reference count
            // changes under (SharedCompression, a write to a shared page); what they list no phase after this one looks up
            // (a frame the rest of the pass frees is unlisted from an empty stripe: nothing to do).
            foreach (var index in _sharing.Values) index.EndPass();
            // Then compression, once every page has been shared or patched where it could be: a page compressed in the
            // second phase could no longer be the reference of a similar page later in the pass.
            _coldSharedSeen = default;
            Parallel.ForEach(slices, parallel, slice =>
            {
                var ec = new EncodeCounters();
                long waiting = 0;
                var cold = new ColdSharedSeen();
                CompressSlice(slice.Domain, slice.Start, slice.End, ref ec, ref waiting, ref cold);
                lock (sumGate)
                {
                    enc.Add(ec);
                    _coldSharedSeen.Add(cold);
                }
                if (waiting > 0) Interlocked.Add(ref awaitingCompression, waiting);
                long now = Interlocked.Add(ref done, slice.End - slice.Start);
                HostCallbacks.Invoke(this, progress, new ScanProgress(pass, now, total));
            });
            NotePassMetadata(); // the nominations, filled by the sweep and compression
            if (_coldSharedSeen.Pages > 0) enc.Add(CompressColdShared(slices, _coldSharedSeen, parallel));
        }
        catch (AggregateException e)
        {
            // The engine's own error (a domain removed meanwhile, a QEMU guest that exited) as the callers know it, else
            // the first worker's (a progress callback's own exception, an OperationCanceledException it throws to stop
            // the scan): not wrapped in the workers' AggregateException, as a scan on one worker would throw it.
            var inner = e.Flatten().InnerExceptions;
            var first = inner.OfType<DEException>().FirstOrDefault() ?? inner.FirstOrDefault();
            if (first is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
            throw;
        }
        if (_sharedNominations.Count > 0)
        {
            // Long-cold shared blobs compressed together, once the sweep has nominated them.
            long cpu0 = ThreadCpu.NowTicks(), t0 = Stopwatch.GetTimestamp();
            var shared = SharedGrouping.Run(this, _sharedNominations, options.Parallelism);
            enc.Add(shared);
            AddEngineTime(Mechanism.Grouping, Stopwatch.GetTimestamp() - t0, shared.SharedBlobsGrouped);
            Interlocked.Add(ref _engineCpuTicks, ThreadCpu.NowTicks() - cpu0);
        }
        {
            // Groups that lost members and now hold more than those members alone go back to single pages.
            long t0 = Stopwatch.GetTimestamp();
            long cpu0 = ThreadCpu.NowTicks();
            long moved = GroupCompression.Repack(this, _dirtyGroups, ref enc);
            if (moved > 0) AddEngineTime(Mechanism.Grouping, Stopwatch.GetTimestamp() - t0, moved);
            Interlocked.Add(ref _engineCpuTicks, ThreadCpu.NowTicks() - cpu0);
        }
        foreach (var d in domains) if (!d.IsRemoved) d.CountSweep();
        NotePassMetadata(); // groups made, before the tables are given back
        TrimIndexes();
        Frames.ReleaseFree(); // the frames this pass freed go back to the system: memory used is what the process holds
        MaintainJournals();
        var compaction = CompactStoreIfNeeded();
        Store.TrimSlabCache(); // what the pass kept of released slabs for reuse
        NotePassMetadata(); // at rest: the store's compaction may have grown its work lists
        return new PassResult(pass, swept, sum.PagesExamined, sum.ZeroPagesFound, sum.PagesMerged, sum.FramesFreed,
            sum.HashCollisions, sum.Contended + enc.Contended, Stopwatch.GetElapsedTime(started))
        {
            UniformPagesFound = enc.UniformPagesFound,
            PagesPatched = enc.PagesPatched,
            PatchBytes = enc.PatchBytes,
            PagesCompressed = enc.PagesCompressed,
            CompressedBytes = enc.CompressedBytes,
            SharedFramesCompressed = enc.SharedFramesCompressed,
            PatchesOnCompressedReferences = enc.PatchesOnCompressedReferences,
            PagesIncompressible = enc.Incompressible,
            StoreFull = enc.StoreFull,
            BlobsCompacted = compaction.BlobsMoved,
            ReferencesListed = listed,
            ReferencesBusy = enc.ReferencesBusy,
            NewlyExamined = enc.NewlyExamined,
            PatchesDeclined = enc.PatchesNotWorthIt,
            GroupsFormed = enc.GroupsFormed,
            PagesGrouped = enc.PagesGrouped,
            GroupStreamBytes = enc.GroupStreamBytes,
            GroupSinglesBytes = enc.GroupSinglesBytes,
            GroupsRefused = enc.GroupsRefused,
            GroupsDissolved = enc.GroupsDissolved,
            PagesUngrouped = enc.PagesUngrouped,
            PagesAwaitingGroup = enc.PagesAwaitingGroup,
            PagesAwaitingCompression = awaitingCompression,
            SharedBlobGroupsFormed = enc.SharedGroupsFormed,
            SharedBlobsGrouped = enc.SharedBlobsGrouped,
            SharedBlobsUngrouped = enc.SharedBlobsUngrouped,
        };
    }

    // BeginTwinFilters' count of shared pages by trust group, kept so a steady pass allocates no more.
    private readonly Dictionary<string, long> _twinSharedPages = new(StringComparer.Ordinal);

    /// <summary>
    /// Starts each trust group's filters for the pass, sized for the most items the sweep can mark: the twin filter for the
    /// private pages of the domains it sweeps that share; while some domain patches, the key filter for the similarity keys
    /// of the private and shared pages of the group's sharing or patching domains, swept or not, and only in a group where
    /// the pass may patch a page (<see cref="SharingIndex.PassCandidates"/>: private pages an earlier pass examined, in the
    /// swept domains that patch): in the others no page would look a reference up, and none is listed
    /// (<see cref="ListSlice"/>). A group none of whose swept domains shares gets no twin filter (nothing marks it,
    /// nothing asks it).
    /// </summary>
    /// <param name="domains">The domains the pass sweeps.</param>
    /// <param name="groups">Their trust groups where some shares or patches: the groups whose references the pass lists.</param>
    private void BeginTwinFilters(Domain[] domains, HashSet<string> groups)
    {
        var pages = new Dictionary<string, long>(StringComparer.Ordinal);
        var shared = _twinSharedPages;
        shared.Clear();
        var keyed = new Dictionary<string, long>(StringComparer.Ordinal);
        var candidates = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var index in _sharing.Values) index.PassCandidates = 0;
        foreach (var d in Domains)
        {
            var policy = d.Policy;
            bool swept = Array.IndexOf(domains, d) >= 0;
            bool shares = swept && policy.SharingEnabled;
            bool listed = groups.Contains(policy.TrustGroup); // its shared frames noted by the sweep (ListStable)
            bool keys = _anyPatching && (policy.SharingEnabled || policy.PatchingEnabled) && listed;
            if (d.IsRemoved || !(shares || keys || listed)) continue;
            long privatePages = 0, sharedPages = 0, examined = 0;
            for (long gfn = 0; gfn < d.PageCount; gfn++)
            {
                ulong e = d.PeekEntry(gfn);
                var state = PageEntry.State(e);
                if (state == PageState.Private)
                {
                    privatePages++;
                    if ((e & PageEntry.SharingSeen) != 0) examined++;
                }
                else if (state == PageState.Shared) sharedPages++;
            }
            if (shares) pages[policy.TrustGroup] = pages.GetValueOrDefault(policy.TrustGroup) + privatePages;
            // A shared frame marks the twin filter too (once, whatever the pages sharing it): at most one a shared page.
            if (listed || shares) shared[policy.TrustGroup] = shared.GetValueOrDefault(policy.TrustGroup) + sharedPages;
            // A domain the scan does not cover marks its pages that may serve as patch references (SweepSlice).
            if (!swept && keys) shared[policy.TrustGroup] = shared.GetValueOrDefault(policy.TrustGroup) + privatePages;
            if (keys) keyed[policy.TrustGroup] = keyed.GetValueOrDefault(policy.TrustGroup) + (privatePages + sharedPages) * Policy.Detector.Keys;
            if (keys && swept && policy.PatchingEnabled) candidates[policy.TrustGroup] = candidates.GetValueOrDefault(policy.TrustGroup) + examined;
        }
        foreach (var (group, n) in pages) SharingIndexFor(group).Twins.Begin(n + shared.GetValueOrDefault(group));
        foreach (var (group, n) in candidates)
        {
            if (n == 0) continue;
            var index = SharingIndexFor(group);
            index.PassCandidates = n;
            index.SimilarKeys.Begin(keyed[group]);
        }
    }

    /// <summary>
    /// The pass's first phase over a slice: sweeps the clock (ages every page; not with <paramref name="sweep"/> false,
    /// for a domain the pass does not scan), notes every shared frame and patch reference for the stable table (listed
    /// now, or, with its trust group's twin filter on, marked there and listed after the sweep: <see cref="ListStableSlice"/>),
    /// and marks the pass's filters: the content hash of each page the second phase may share, the similarity keys of each page
    /// that may serve as a patch reference or be patched (<see cref="ListSlice"/> lists the references then). Returns
    /// pages swept.
    /// </summary>
    /// <remarks>Jitted fully optimized at once: a scan calls it a few times per pass, too few for tiering to catch up.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private long SweepSlice(Domain domain, long start, long end, bool sweep)
    {
        var policy = domain.Policy;
        int c4 = policy.C4Sweeps;
        long cpu0 = ThreadCpu.NowTicks();
        long t0 = Stopwatch.GetTimestamp();
        long swept = 0, listTicks = 0, stableTicks = 0;
        // A QEMU guest writes its pages without the engine: the sweep sees writes as changed content, and a page is
        // write-protected while a pass decides on it (Domain.QemuProtect).
        bool qemu = domain.Qemu is not null;
        // References are listed only while some domain patches (else the table is pure cost); shared frames always.
        bool list = _anyPatching && (policy.SharingEnabled || policy.PatchingEnabled);
        var stable = _anyIndexing ? SharingIndexFor(policy.TrustGroup) : null;
        var index = list ? stable : null;
        bool marking = sweep && policy.SharingEnabled && stable is not null;
        for (long gfn = start; gfn < end; gfn++)
        {
            // A page of a domain this pass does not scan is listed only when free: the pass never waits on it.
            ulong e, after;
            if (sweep) e = domain.Lock(gfn);
            else if (!domain.TryLock(gfn, out e)) continue;
            after = e;
            try
            {
                if (domain.IsRemoved) break;
                if (sweep)
                {
                    if (qemu && PageEntry.State(e) == PageState.Private) after = domain.QemuNoteWrites(e);
                    after = qemu ? domain.QemuSweep(gfn, after, c4) : PageClock.Sweep(after, c4);
                }
                else if ((e & PageEntry.Modified) != 0) continue; // written since its last sweep: not a reference now
                var category = PageEntry.Category(after);
                // Every shared frame, and every patch's reference, goes back into the stable table (a pass table).
                var state = PageEntry.State(after);
                if (stable is not null && state is PageState.Shared or PageState.Patched)
                {
                    long s0 = Stopwatch.GetTimestamp();
                    // A patch whose reference was compressed (a shared blob) lists no frame.
                    if (TryHeldFrame(after, out uint frame))
                    {
                        ListStable(stable, frame);
                        if (state == PageState.Patched) MarkReference(frame);
                    }
                    stableTicks += Stopwatch.GetTimestamp() - s0;
                }
                // A page the second phase may share marks its content hash in the pass's twin filter: only one another
                // page may match goes into the unstable table there (SharingPass.SharePage).
                // So does a page of a domain the scan does not cover that may serve as a patch reference: making it one looks
                // the stable table up for an identical frame to join (PatchPass.MakeReference), which must then be listed.
                if (state == PageState.Private && (marking
                        ? MayTakeOut(after, qemu) && PageClock.MayShare(category)
                        : !sweep && index is not null && index.PassCandidates > 0 && IsReference(policy, state, category, qemu)))
                {
                    long h0 = Stopwatch.GetTimestamp();
                    stable!.Twins.Mark(PageHasher.Hash(Frames.Span(PageEntry.Frame(after))));
                    stableTicks += Stopwatch.GetTimestamp() - h0;
                }
                // A page that may serve as a patch reference (IsReference), or be patched in the second phase (IsCandidate),
                // marks its similarity keys in the pass's key filter: the listing after the sweep (ListSlice) lists a
                // reference only under keys another page has. A shared frame marks its keys once however many pages share
                // it. Not in a group where no page may be patched (its key filter is not begun: marks are ignored).
                if (index is not null && index.PassCandidates > 0
                    && (IsReference(policy, state, category, qemu) || IsCandidate(policy, after, qemu, sweep))
                    && (state != PageState.Shared || MarkKeyed(PageEntry.Frame(after))))
                {
                    long l0 = Stopwatch.GetTimestamp();
                    PatchPass.MarkKeys(this, index, Frames.Span(PageEntry.Frame(after)));
                    listTicks += Stopwatch.GetTimestamp() - l0;
                }
            }
            finally
            {
                // Whatever the sweep of this page did, it is unlocked (as it was, should the sweep have thrown).
                domain.Unlock(gfn, after);
            }
            if (sweep) swept++;
        }
        AddEngineTime(Mechanism.Clock, Stopwatch.GetTimestamp() - t0 - listTicks - stableTicks, swept);
        AddEngineTime(Mechanism.Patching, listTicks, 0);
        AddEngineTime(Mechanism.Sharing, stableTicks, 0);
        Interlocked.Add(ref _engineCpuTicks, ThreadCpu.NowTicks() - cpu0);
        return swept;
    }

    /// <summary>
    /// Whether a page may serve as a patch reference, so the pass lists it under its similarity keys as the second phase
    /// would patch against it: a guest's page only when cold, as only those are taken out (its bytes are checked again,
    /// write-protected, before they serve). A Private page only in a domain that shares: serving makes it Shared
    /// (PatchPass.MakeReference), and a domain with sharing off gets no Shared page.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsReference(DomainPolicy policy, PageState state, PageCategory category, bool qemu) =>
        (state == PageState.Shared || (state == PageState.Private && policy.SharingEnabled))
        && PageClock.MayBeReference(category) && (!qemu || category == PageCategory.C4);

    /// <summary>
    /// Whether the second phase may try to patch a page (<see cref="ScanSlice"/>, PatchPass.TryPatch): in a domain the pass
    /// sweeps that patches, a Private page examined by an earlier pass, unmodified, cold enough to patch (C3-C4; a guest's
    /// C4).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsCandidate(DomainPolicy policy, ulong e, bool qemu, bool sweep) =>
        sweep && policy.PatchingEnabled && PageEntry.State(e) == PageState.Private && (e & PageEntry.SharingSeen) != 0
        && MayTakeOut(e, qemu) && PageClock.MayPatch(PageEntry.Category(e));

    /// <summary>
    /// After the sweep, while some domain patches: lists each page of a slice that may serve as a patch reference under
    /// those of its similarity keys another page of the pass has (the sweep marked them all), so that in the second phase
    /// (<see cref="ScanSlice"/>) a page finds every reference of the pass, wherever it lies. Returns the similarity slots
    /// filled. A page of a domain the pass does not scan is listed only when free, as the sweep took it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private long ListSlice(Domain domain, long start, long end, bool sweep)
    {
        var policy = domain.Policy;
        if (!(policy.SharingEnabled || policy.PatchingEnabled) || domain.IsRemoved) return 0;
        var index = SharingIndexFor(policy.TrustGroup);
        if (index.PassCandidates == 0) return 0; // no page of the group may be patched: none would look a reference up
        long cpu0 = ThreadCpu.NowTicks();
        long t0 = Stopwatch.GetTimestamp();
        bool qemu = domain.Qemu is not null;
        long listed = 0;
        for (long gfn = start; gfn < end; gfn++)
        {
            // Most pages can serve as no reference: looked at unlocked first, checked again under the lock.
            ulong peek = domain.PeekEntry(gfn);
            if (!IsReference(policy, PageEntry.State(peek), PageEntry.Category(peek), qemu)) continue;
            ulong e;
            if (sweep) e = domain.Lock(gfn);
            else if (!domain.TryLock(gfn, out e)) continue;
            try
            {
                if (domain.IsRemoved) break;
                if ((e & PageEntry.Modified) != 0) continue; // written since its sweep: not a reference now
                var state = PageEntry.State(e);
                if (IsReference(policy, state, PageEntry.Category(e), qemu))
                    listed += PatchPass.Remember(this, index, domain, gfn, Frames.Span(PageEntry.Frame(e)), state == PageState.Shared);
            }
            finally
            {
                domain.Unlock(gfn, e);
            }
        }
        AddEngineTime(Mechanism.Patching, Stopwatch.GetTimestamp() - t0, 0);
        Interlocked.Add(ref _engineCpuTicks, ThreadCpu.NowTicks() - cpu0);
        return listed;
    }

    /// <summary>
    /// The pass's second phase over a slice the pass has swept: the domain's mechanisms that find a page's bytes elsewhere,
    /// in the paper's order: zero and one-word pages folded, identical pages shared (C2-C4), similar pages patched (C3-C4)
    /// against the references the sweep listed. Compression waits for the third phase (<see cref="CompressSlice"/>), once
    /// every slice has had this one: a page compressed here could no longer serve as the reference of a similar page later
    /// in the pass.
    /// </summary>
    /// <remarks>Jitted fully optimized at once: a scan calls it a few times per pass, too few for tiering to catch up.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ScanSlice(Domain domain, long start, long end, ref SharingCounters c, ref EncodeCounters ec)
    {
        var policy = domain.Policy;
        long cpu0 = ThreadCpu.NowTicks();
        bool qemu = domain.Qemu is not null;
        long t1 = Stopwatch.GetTimestamp();
        long examinedBefore = c.PagesExamined;
        long patchTicks = 0, patchTried = 0;
        bool sharing = policy.SharingEnabled, patching = policy.PatchingEnabled;
        if ((sharing || patching || policy.CompressionEnabled) && !domain.IsRemoved)
        {
            var index = SharingIndexFor(policy.TrustGroup);
            for (long gfn = start; gfn < end; gfn++)
            {
                ulong e = domain.Lock(gfn);
                bool guarded = false;
                try
                {
                    if (domain.IsRemoved) break;
                    var category = PageEntry.Category(e);
                    if (!MayTakeOut(e, qemu) || PageEntry.State(e) != PageState.Private) continue;
                    // Without write-protect faults a guest write could race the pass: the page is left alone.
                    if (qemu && !(guarded = domain.QemuProtect(gfn))) continue;
                    bool examinedBefore2 = (e & PageEntry.SharingSeen) != 0;
                    c.PagesExamined++;
                    if (CompressionPass.TryFold(Frames, ref e, ref ec, ref c))
                    {
                        e |= PageEntry.SharingSeen;
                        continue;
                    }
                    if (sharing && PageClock.MayShare(category))
                        e = SharingPass.SharePage(this, index, domain, gfn, e, ref c);
                    // Like compression, patching waits for a page an earlier pass already examined: a
                    // whole sharing cycle first, so a page is never patched while its identical twin,
                    // later in the same pass, could have shared it.
                    if (patching && examinedBefore2 && PageEntry.State(e) == PageState.Private && PageClock.MayPatch(category))
                    {
                        long p0 = Stopwatch.GetTimestamp();
                        e = PatchPass.TryPatch(this, index, domain, gfn, e, ref ec);
                        patchTicks += Stopwatch.GetTimestamp() - p0;
                        patchTried++;
                    }
                    // A page still private is marked examined by the third phase, which tells a page examined for the
                    // first time (not compressed until the next pass) by the mark's absence.
                    if (PageEntry.State(e) == PageState.Private && !examinedBefore2) e &= ~PageEntry.SharingSeen;
                    else e |= PageEntry.SharingSeen;
                }
                finally
                {
                    // Still the guest's: let it write again (a write that waited on the page lock goes on now).
                    domain.QemuUnlock(gfn, e, guarded);
                }
            }
        }
        AddEngineTime(Mechanism.Sharing, Stopwatch.GetTimestamp() - t1 - patchTicks, c.PagesExamined - examinedBefore);
        AddEngineTime(Mechanism.Patching, patchTicks, patchTried);
        Interlocked.Add(ref _engineCpuTicks, ThreadCpu.NowTicks() - cpu0);
    }

    /// <summary>
    /// The pass's third phase over a slice, after every slice's second (<see cref="ScanSlice"/>): cold (C4) private pages
    /// that an earlier pass already examined are compressed, a page examined for the first time marked so, and the slice's
    /// long-cold compressed pages grouped. <paramref name="awaiting"/> counts the examined private pages still aging toward
    /// C4 that will be compressed then (<see cref="AwaitsCompression"/>), <paramref name="coldShared"/> the cold shared
    /// pages and patches seen (unlocked), which <see cref="CompressColdShared"/> collects and compresses after the phase.
    /// </summary>
    /// <remarks>Jitted fully optimized at once: a scan calls it a few times per pass, too few for tiering to catch up.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void CompressSlice(Domain domain, long start, long end, ref EncodeCounters ec, ref long awaiting, ref ColdSharedSeen coldShared)
    {
        var policy = domain.Policy;
        long cpu0 = ThreadCpu.NowTicks();
        bool qemu = domain.Qemu is not null;
        long t1 = Stopwatch.GetTimestamp();
        long compressTried = 0;
        bool compression = policy.CompressionEnabled;
        bool examining = policy.PatchingEnabled || compression;
        // Pages left to this slice's grouping, to go into groups straight from their frames.
        var deferred = GroupCompression.Deferred(end - start);
        if ((policy.SharingEnabled || examining) && !domain.IsRemoved)
        {
            for (long gfn = start; gfn < end; gfn++)
            {
                // Most pages have nothing to do here: looked at unlocked first, checked again under the lock.
                ulong peek = domain.PeekEntry(gfn);
                if (!MayCompressPhase(peek, compression, qemu))
                {
                    if (compression && AwaitsCompression(peek)) awaiting++;
                    continue;
                }
                if (PageEntry.State(peek) != PageState.Private)
                {
                    // A cold Shared page or patch: collected after this phase, band by band (CompressColdShared).
                    coldShared.Note(peek, Math.Max(1, _listedLimit));
                    continue;
                }
                ulong e = domain.Lock(gfn);
                bool guarded = false;
                try
                {
                    if (domain.IsRemoved) break;
                    if (!MayCompressPhase(e, compression, qemu)) continue;
                    var state = PageEntry.State(e);
                    if (state == PageState.Private)
                    {
                        // A guest's page the second phase could not protect was not examined there, nor is it here.
                        if (qemu && !domain.QemuCanProtect) continue;
                        if ((e & PageEntry.SharingSeen) == 0)
                        {
                            // Examined for the first time this pass: patched or compressed from the next one on.
                            if (examining) ec.NewlyExamined++;
                            e |= PageEntry.SharingSeen;
                            continue;
                        }
                        // Examined before, and cold enough to compress (MayCompressPhase lets no other private page through).
                        // One already idle as long as a page must be before grouping goes into a group straight from its
                        // frame: left to this slice's grouping below (GroupCompression.GroupSlice).
                        if (GroupCompression.GoesStraightToGroup(policy, qemu, e))
                        {
                            GroupCompression.Defer(deferred, gfn - start);
                            continue;
                        }
                        if (qemu && !(guarded = domain.QemuProtect(gfn))) continue;
                        e = CompressionPass.TryCompress(this, domain, gfn, e, ref ec);
                        compressTried++;
                    }
                    // else no longer private (a page is made shared or patched only by a pass's second phase): left as it is.
                }
                finally
                {
                    // Still the guest's: let it write again (a write that waited on the page lock goes on now).
                    domain.QemuUnlock(gfn, e, guarded);
                }
            }
        }
        long t2 = Stopwatch.GetTimestamp();
        AddEngineTime(compression ? Mechanism.Compression : Mechanism.Sharing, t2 - t1, compressTried);
        // Long-cold compressed pages of this slice, compressed together (page groups): timed on their own line.
        if (compression && policy.GroupSize >= 2 && !domain.IsRemoved)
        {
            long grouped = GroupCompression.GroupSlice(this, domain, policy, start, end, deferred, ref ec);
            AddEngineTime(Mechanism.Grouping, Stopwatch.GetTimestamp() - t2, grouped);
        }
        Interlocked.Add(ref _engineCpuTicks, ThreadCpu.NowTicks() - cpu0);
    }

    /// <summary>
    /// Most cold shared pages and patches one band of <see cref="CompressColdShared"/> collects (12 bytes each: 96 KiB);
    /// tests set it lower to run many bands on a small host.
    /// </summary>
    internal int ColdSharedBandTarget { get; set; } = 8192;

    // The running pass's ColdSharedSeen, merged from its workers' (a field: a local the workers' lambda captured would be
    // a 1 KiB object allocated every pass).
    private ColdSharedSeen _coldSharedSeen;

    /// <summary>Buckets of the frame numbers' histogram a compression phase keeps of its cold shared pages.</summary>
    internal const int ColdSharedBuckets = 256;

    /// <summary>
    /// The cold shared pages and patches a compression phase saw (unlocked), with a histogram of the frames its shared
    /// pages named (<see cref="ColdSharedBuckets"/> equal ranges of the frame numbers the pass began with; later ones in
    /// the last): what <see cref="CompressColdShared"/> cuts into bands. On the stack (1 KiB), merged under a lock.
    /// </summary>
    private struct ColdSharedSeen
    {
        public long Pages;
        public Histogram Frames;

        public void Note(ulong entry, uint limit)
        {
            Pages++;
            if (PageEntry.State(entry) != PageState.Shared) return; // a patch: its reference frame is not known unlocked
            uint frame = PageEntry.Frame(entry);
            Frames[frame >= limit ? ColdSharedBuckets - 1 : (int)((ulong)frame * ColdSharedBuckets / limit)]++;
        }

        public void Add(in ColdSharedSeen other)
        {
            Pages += other.Pages;
            for (int b = 0; b < ColdSharedBuckets; b++) Frames[b] += other.Frames[b];
        }

        [InlineArray(ColdSharedBuckets)]
        public struct Histogram
        {
            private int _first;
        }
    }

    /// <summary>The bands the last pass with cold shared pages cut them into, and the most its buffer held at once (tests).</summary>
    internal int LastColdSharedBands { get; private set; }

    /// <inheritdoc cref="LastColdSharedBands"/>
    internal int LastColdSharedPeak { get; private set; }

    /// <summary>Most bands a pass cuts its cold shared frames into: each costs a walk of the pass's page tables.</summary>
    internal const int MaxColdSharedBands = 16;

    /// <summary>
    /// Cuts the frame numbers [0, <paramref name="limit"/>) into bands of about <paramref name="target"/> cold shared
    /// pages and patches each by the <paramref name="histogram"/> of the shared pages' frames (one count per equal range
    /// of frame numbers): the <paramref name="total"/> pages, patches included (whose reference frames are not known
    /// unlocked), are taken to follow the shared pages' spread (evenly, when there are none), and a band holds at least
    /// a sixteenth of them, so there are at most <see cref="MaxColdSharedBands"/>. Writes each band's first frame number
    /// into <paramref name="starts"/> (the first band's is 0; the last runs on past every frame number; each start above
    /// the one before) and returns how many bands there are.
    /// </summary>
    internal static int CutColdSharedBands(ReadOnlySpan<int> histogram, uint limit, long total, int target, Span<uint> starts)
    {
        long each = Math.Max(Math.Max(1, target), (total + MaxColdSharedBands - 1) / MaxColdSharedBands);
        long shared = 0;
        foreach (int count in histogram) shared += count;
        int bands = 1;
        starts[0] = 0;
        // In units of a page times the shared pages counted (a bucket's shared pages scaled to the total): exact integers.
        long scale = Math.Max(1, shared);
        long held = 0, left = total * scale;
        for (int b = 0; b < histogram.Length - 1 && bands < MaxColdSharedBands; b++)
        {
            long here = shared > 0 ? histogram[b] * total : total * scale / histogram.Length;
            held += here;
            left -= here;
            // A band ends once it holds its share, unless no page is left for a next one, or it would hold no frame number.
            uint start = (uint)((ulong)limit * (ulong)(b + 1) / (ulong)histogram.Length);
            if (held < each * scale || left <= 0 || start <= starts[bands - 1]) continue;
            starts[bands++] = start;
            held = 0;
        }
        return bands;
    }

    /// <summary>
    /// Compresses the cold shared frames of the pass (SharedCompression) band by band: the frame numbers cut where each
    /// band holds about <see cref="ColdSharedBandTarget"/> cold shared pages (<paramref name="seen"/>, the histogram the
    /// compression phase kept, unlocked: <see cref="CutColdSharedBands"/>), each band's collected by a walk of the pass's
    /// slices (<see cref="CollectColdShared"/>), compressed, and the buffer emptied for the next. A frame's pages and
    /// patches all fall in its band, so each frame is judged whole, as when one buffer held them all; the buffer holds one
    /// band at a time (session 37: in the first compressing pass of the program snapshots it held every cold shared page,
    /// 34,000 of them, 0.41 MiB of the 0.50 MiB of pass buffers at the engine's metadata peak).
    /// </summary>
    /// <remarks>Frames are numbered as the pool handed them out, so a band's frames are mostly pages loaded near one another:
    /// the blobs a worker groups at once (SharedCompression's AtOnceGroup, in the order of each frame's first page) still
    /// have their guest neighbours in the band; a group in progress is closed at a band's end.</remarks>
    private EncodeCounters CompressColdShared(List<(Domain Domain, long Start, long End)> slices, in ColdSharedSeen seen, ParallelOptions parallel)
    {
        var total = new EncodeCounters();
        long cpu0 = ThreadCpu.NowTicks(), t0 = Stopwatch.GetTimestamp();
        // Cut where the shared pages' frames are (a patch's reference frame, not known unlocked, falls in whichever band
        // its number does: the first band starts at 0, the last runs on past every frame number).
        Span<uint> starts = stackalloc uint[MaxColdSharedBands];
        int bands = CutColdSharedBands(seen.Frames, Math.Max(1, _listedLimit), seen.Pages, ColdSharedBandTarget, starts);
        long candidates = 0;
        for (int b = 0; b < bands; b++)
        {
            uint low = starts[b], high = b == bands - 1 ? uint.MaxValue : starts[b + 1];
            Parallel.ForEach(slices, parallel, slice => CollectColdShared(slice.Domain, slice.Start, slice.End, low, high));
            if (_coldShared.Count == 0) continue;
            NotePassMetadata(); // the band's cold shared pages
            candidates += _coldShared.Count;
            total.Add(SharedCompression.Run(this, _coldShared, _sharedRuns, parallel.MaxDegreeOfParallelism));
            NotePassMetadata(); // and their frames' runs, filled by the compression just done
            _coldShared.Clear();
            _sharedRuns.Clear();
        }
        LastColdSharedBands = bands;
        LastColdSharedPeak = _coldShared.Peak;
        // Needed no longer: given back now, before the groups of shared blobs and the re-packing.
        _coldShared.EndPass();
        _sharedRuns.EndPass();
        AddEngineTime(Mechanism.Compression, Stopwatch.GetTimestamp() - t0, candidates);
        Interlocked.Add(ref _engineCpuTicks, ThreadCpu.NowTicks() - cpu0);
        return total;
    }

    /// <summary>
    /// Adds to the pass's buffer the cold Shared pages and cold patches of a slice (a patch holds its reference frame as a
    /// shared page does) whose frame is numbered in [<paramref name="low"/>, <paramref name="high"/>): the frame is
    /// compressed when every page and patch holding it turned out cold (SharedCompression; a patch then names the
    /// compressed copy). Only a frame shared when the pass began (the sweep listed it): one the pass's own merges made may
    /// yet gain sharers in the next (a compressed frame takes no more), as a private page waits a pass before it is
    /// compressed. Each page is checked again under its lock.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void CollectColdShared(Domain domain, long start, long end, uint low, uint high)
    {
        var policy = domain.Policy;
        if (!policy.CompressionEnabled || domain.IsRemoved) return;
        Span<SharedCandidate> cold = stackalloc SharedCandidate[128];
        int count = 0;
        bool qemu = domain.Qemu is not null;
        // The sweep listed every frame shared when the pass began only when some domain shares or patches; when none does,
        // no page was merged this pass, and every shared page's frame is an old one.
        bool listing = _anyIndexing;
        for (long gfn = start; gfn < end; gfn++)
        {
            ulong peek = domain.PeekEntry(gfn);
            var peekState = PageEntry.State(peek);
            if (peekState is not (PageState.Shared or PageState.Patched) || !MayCompressPhase(peek, true, qemu)) continue;
            // A shared page's band is known from its entry; a patch's reference frame is read from its blob, under its lock.
            if (peekState == PageState.Shared && (PageEntry.Frame(peek) < low || PageEntry.Frame(peek) >= high)) continue;
            ulong e = domain.Lock(gfn);
            try
            {
                if (domain.IsRemoved) break;
                if (!MayCompressPhase(e, true, qemu) || !TryHeldFrame(e, out uint frame)) continue;
                bool patch = PageEntry.State(e) == PageState.Patched;
                if (frame < low || frame >= high || (listing && !IsListed(frame))) continue;
                if (count == cold.Length)
                {
                    _coldShared.Add(cold);
                    count = 0;
                }
                cold[count++] = patch ? SharedCandidate.ForPatch(frame, domain.Id, gfn) : new SharedCandidate(frame, domain.Id, gfn);
            }
            finally
            {
                domain.Unlock(gfn, e);
            }
        }
        _coldShared.Add(cold[..count]);
    }

    /// <summary>
    /// Whether a pass's mechanisms may look at a page at all: not written since the sweep, seen by a sweep and not recently
    /// modified (C2-C4), and for a guest's page cold (C4): whatever takes a guest's page out costs a fault at its next
    /// touch, read or write.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool MayTakeOut(ulong e, bool qemu)
    {
        var category = PageEntry.Category(e);
        return (e & PageEntry.Modified) == 0 && category is not (PageCategory.None or PageCategory.C1)
               && (!qemu || category == PageCategory.C4);
    }

    /// <summary>
    /// Whether the third phase has anything to do with a page (<see cref="CompressSlice"/>): an eligible private page to
    /// mark examined, or, with compression on, a cold private or shared page that may be compressed (not one found
    /// incompressible: most pages of a stable host are passed over on a peek, without their lock).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool MayCompressPhase(ulong e, bool compression, bool qemu)
    {
        if (!MayTakeOut(e, qemu)) return false;
        bool compressible = compression && (e & PageEntry.Incompressible) == 0 && PageClock.MayCompressOrSwap(PageEntry.Category(e));
        return PageEntry.State(e) switch
        {
            // To mark examined, or to compress.
            PageState.Private => (e & PageEntry.SharingSeen) == 0 || compressible,
            // Cold shared pages, and cold patches (their reference frame may be compressed: SharedCompression).
            PageState.Shared or PageState.Patched => compressible,
            _ => false,
        };
    }

    /// <summary>
    /// Whether a page (of a domain that compresses) is one a later pass compresses if it stays untouched: private, examined
    /// already, not written since the sweep nor marked incompressible, and aging toward C4 (C3: idle for the last sweep,
    /// fewer sweeps than C4Sweeps so far). A page read in the last sweep's interval (C2) or written (C1) is in use, and not
    /// waited for: a scan until stable must still end while a guest keeps using pages.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool AwaitsCompression(ulong e) =>
        PageEntry.State(e) == PageState.Private && PageEntry.Category(e) == PageCategory.C3
        && (e & (PageEntry.SharingSeen | PageEntry.Incompressible | PageEntry.Modified)) == PageEntry.SharingSeen;

    /// <summary>
    /// After a pass, gives back index memory nobody needs until the next one: the sweep's bitmaps of frames, and the
    /// sharing tables and filters should any still hold memory (RunPassBody gives them back as the sharing phase ends;
    /// the next pass starts them afresh, sized by this one's peaks; the pass's buffers of cold shared pages and
    /// nominations go in RunPass's finally). Steady passes allocate nothing on the managed heap here.
    /// </summary>
    private void TrimIndexes()
    {
        // Held only during a pass: the next pass's sweep lists the shared frames and its references afresh.
        foreach (var index in _sharing.Values) index.EndPass();
        FreeListedFrames();
    }

    /// <summary>
    /// Compacts the store when its fragmentation passes the host policy's threshold, or when whole slabs' worth of free
    /// slots reach 1/32 of it (at least 4 slabs): forming page groups frees single blobs all over the store, which the
    /// fragmentation threshold alone would leave held. Before that, settles its classes into the fewest slabs their blobs
    /// need (CompactStore.Settle) when that gives back 16 pages (64 KiB) or more: session 17, the slabs a class had
    /// grown kept 0.1 to 0.7 MiB of a small program's 1.7 to 7.6 MiB store free, and how much depended on the order blobs
    /// came and went, which the fleet's model could not know. Session 23: with 1/64, a last pass that stored a few dozen
    /// blobs after the store had settled (compressed patch references) left the new full-size slabs they took, 0.5 MiB of
    /// the program snapshots' 63 MiB store, under the threshold; at 1/256 (or 1/1024) it settles them, for no more CPU a
    /// pass measured. Session 27: at 1/256 (238 KB of that store) runs still ended with 0-197 KB unsettled, more often once
    /// shared blobs were grouped as they were made (their single copies freed among new ones); 16 pages alone settles
    /// them (63.09-63.11 MiB in three runs, against 63.15-63.34), and Compare's patch_page stayed where it was (0.3 B a
    /// page on the guest images, 1.1 B on the program snapshots).
    /// </summary>
    private Store.CompactionResult CompactStoreIfNeeded()
    {
        Store.CompactionResult result = default;
        // Settling first: it leaves nothing for compaction to do when every move is accepted (and compaction first would
        // move some blobs twice); compaction still runs when settling could not (no room for the slabs it makes, say).
        if (Store.UnsettledBytes >= 16L * DifferenceEngine.Store.CompactStore.FirstSlabSize)
            result = Store.Settle(_moveBlobs ??= MoveBlobs);
        if (Store.NeedsCompaction(Policy.CompactionThreshold)
            || Store.ReclaimableBytes >= Math.Max(4L * DifferenceEngine.Store.CompactStore.SlabSize, Store.AllocatedBytes / 32))
            result = result.Then(Store.Compact(_moveBlobs ??= MoveBlobs));
        return result;
    }

    /// <summary><see cref="MoveBlobs"/> as the store's walk, made once (a method group makes a new delegate each time).</summary>
    private Store.BlobWalk? _moveBlobs;

    /// <summary>Compacts the store as far as its free slots allow (after page groups went to swap, say).</summary>
    internal Store.CompactionResult CompactStoreNow() =>
        Store.ReclaimableBytes > 0 ? Store.Compact(_moveBlobs ??= MoveBlobs) : default;

    /// <summary>
    /// The host's walk of its blobs for a compaction (<see cref="Store.BlobWalk"/>): every page that holds a blob of its
    /// own (patched, or compressed alone), each group's pieces in the store and each shared blob, handed to the mover under
    /// the lock that guards it. A busy page is passed over (its blob stays, and so does its slab).
    /// </summary>
    internal void MoveBlobs(Store.BlobMover mover)
    {
        foreach (var domain in Domains)
        {
            if (domain.IsRemoved) continue;
            long pages = domain.PageCount;
            for (long gfn = 0; gfn < pages; gfn++)
            {
                ulong peek = domain.PeekEntry(gfn);
                if (!HoldsOwnBlob(peek) || !mover.Wants(PageEntry.Payload(peek))) continue;
                if (!domain.TryLock(gfn, out ulong e)) continue;
                try
                {
                    if (!domain.IsRemoved && HoldsOwnBlob(e))
                        e = PageEntry.WithPayload(e, PageEntry.State(e), mover.Move(PageEntry.Payload(e)));
                }
                finally
                {
                    domain.Unlock(gfn, e);
                }
            }
        }
        Groups.MoveBlobs(mover);
        SharedBlobs.MoveBlobs(mover);
    }

    /// <summary>Whether a page's entry names a blob of the store that is the page's alone (not a shared blob or a group).</summary>
    private static bool HoldsOwnBlob(ulong e) =>
        PageEntry.State(e) is PageState.Patched or PageState.Compressed && (e & PageEntry.SharedBlob) == 0;
}
