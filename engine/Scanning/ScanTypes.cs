namespace DifferenceEngine.Scanning;

/// <summary>How many engine passes to run and how wide.</summary>
public sealed class ScanOptions
{
    /// <summary>Passes to run; ignored when <see cref="UntilStable"/> is set.</summary>
    public int Passes { get; init; } = 1;

    /// <summary>Run passes until one changes no page (or <see cref="MaxPasses"/> is reached).</summary>
    public bool UntilStable { get; init; }

    public int MaxPasses { get; init; } = 64;

    /// <summary>Worker threads; defaults to the processor count.</summary>
    public int Parallelism { get; init; } = Environment.ProcessorCount;

    /// <summary>Pages per work item (a slice of one domain).</summary>
    public int SliceSize { get; init; } = 8192;
}

/// <summary>The pass loop every host's Scan runs: checks the options, runs passes, stops when asked and stable.</summary>
internal static class PassLoop
{
    /// <summary>
    /// Before a scan's first pass (outside its host's scan lock): waits for the engine's JIT warm-up to end, at most
    /// <see cref="Hosting.JitWarmup.MaxScanWait"/>, and not at all when there is nothing to scan; returns the wait
    /// (<see cref="ScanResult.WarmUpWait"/>). A cancelled scan stops waiting (OperationCanceledException).
    /// </summary>
    public static TimeSpan WaitForWarmUp(int domains, CancellationToken cancellationToken) =>
        domains == 0 ? TimeSpan.Zero : Hosting.JitWarmup.WaitUntilWarm(Hosting.JitWarmup.MaxScanWait, cancellationToken);

    public static void Check(ScanOptions options)
    {
        if (options.Passes < 1 || options.MaxPasses < 1 || options.Parallelism < 1 || options.SliceSize < 1)
            throw new DEException("ScanOptionsInvalid", DEErrorKind.InvalidArgument,
                "Passes, MaxPasses, Parallelism and SliceSize must all be at least 1.", options);
    }

    /// <summary>
    /// A whole scan as every host runs it: the warm-up wait, then <see cref="Run"/> inside the host's scan lock
    /// (<paramref name="gate"/>, waited for as long as the token allows: <see cref="EnterGate"/>), with
    /// <paramref name="underGate"/> first (a host's own checks), on a token that is the caller's or the host's disconnection
    /// (<paramref name="closing"/>), whichever comes first. A scan the disconnection stopped ends with "HostDisconnected".
    /// <paramref name="waiting"/> is called once when another scan holds the lock, before this one waits for it (the
    /// cmdlet's progress says what it waits for).
    /// </summary>
    public static ScanResult Scan(string hostName, IEnumerable<string> domainNames, int domainCount, ScanOptions options,
        Lock gate, Action? underGate, Func<int, CancellationToken, PassResult> runPass, CancellationToken cancellationToken,
        CancellationToken closing, Action? waiting = null)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, closing);
        var ct = linked.Token;
        try
        {
            var warmUpWait = WaitForWarmUp(domainCount, ct);
            List<PassResult> results = [];
            bool stable = false;
            EnterGate(gate, ct, waiting);
            try
            {
                underGate?.Invoke();
                (results, stable) = Run(options, pass => runPass(pass, ct), ct);
            }
            finally
            {
                gate.Exit();
            }
            return new ScanResult(domainNames.ToArray(), results, stable) { WarmUpWait = warmUpWait };
        }
        catch (OperationCanceledException) when (closing.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw Hosting.DEHost.HostDisconnected(hostName);
        }
    }

    /// <summary>
    /// Takes a host's scan lock, waiting while another scan holds it, for as long as <paramref name="cancellationToken"/>
    /// allows: Ctrl-C on a waiting Invoke-DEScan, Stop-DEEngine of an engine whose pass waits, and a disconnection end the
    /// wait (OperationCanceledException) instead of waiting for the other scan's every pass. Re-entrant, as the lock is.
    /// <paramref name="waiting"/>, when given, is called once, before the first wait, when the lock is held.
    /// </summary>
    public static void EnterGate(Lock gate, CancellationToken cancellationToken, Action? waiting = null)
    {
        if (gate.TryEnter()) return;
        waiting?.Invoke();
        // The lock has no wait that a token ends: each try waits a slice, and a cancellation is seen at the next try.
        while (!gate.TryEnter(GateSlice))
            cancellationToken.ThrowIfCancellationRequested();
    }

    private static readonly TimeSpan GateSlice = TimeSpan.FromMilliseconds(20);

    /// <summary>
    /// Runs <paramref name="runPass"/> for passes 1, 2, ...: options.Passes of them, or until a pass after the first
    /// changes nothing (at most MaxPasses) with UntilStable. Returns every pass and whether the last one was stable: it
    /// changed nothing, and was not the first (a pass after passes that changed something may change something again).
    /// </summary>
    public static (List<PassResult> Results, bool Stable) Run(ScanOptions options, Func<int, PassResult> runPass,
        CancellationToken cancellationToken)
    {
        int passCount = options.UntilStable ? options.MaxPasses : options.Passes;
        var results = new List<PassResult>();
        bool stable = false;
        int aging = 0; // passes in a row whose only change was pages still aging toward C4 or their group
        for (int pass = 1; pass <= passCount; pass++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var result = runPass(pass);
            results.Add(result);
            aging = result.OnlyAging ? aging + 1 : 0;
            // Whether the latest pass changed nothing: a pass that changes something after a stable one ends that. Pages
            // still aging keep it going as long as a page left alone can take to reach C4 and its group (the clock's most
            // idle sweeps) and no longer: pages a live guest touches now and then age again and again, and would
            // otherwise keep a scan until stable going to its pass limit (a review's finding).
            stable = pass > 1 && (!result.Changed || aging > Domains.PageEntry.MaxIdle);
            if (stable && options.UntilStable) break;
        }
        return (results, stable);
    }
}

/// <summary>Progress of a running scan, reported from worker threads.</summary>
public readonly record struct ScanProgress(int Pass, long PagesDone, long PagesTotal)
{
    /// <summary>
    /// The scan has not begun: another scan of the host (another Invoke-DEScan, or the background engine's pass) holds
    /// the host's scan lock, and this one waits for it to end. Reported once, with <see cref="Pass"/> 0, before the wait.
    /// </summary>
    public bool WaitingForOtherScan { get; init; }
}

/// <summary>What one pass over the chosen domains did.</summary>
public sealed record PassResult(
    int Pass,
    long PagesSwept,
    long PagesExamined,
    long ZeroPagesFound,
    long PagesMerged,
    // Frames sharing gave back: merged pages, zero and uniform pages (patching and compression free theirs too, counted as PagesPatched and PagesCompressed).
    long FramesFreed,
    long HashCollisions,
    long Contended,
    TimeSpan Elapsed)
{
    /// <summary>Pages found to be one repeated 32-bit word (non-zero), now Uniform.</summary>
    public long UniformPagesFound { get; init; }
    public long PagesPatched { get; init; }
    /// <summary>Bytes of the patches stored this pass (headers included).</summary>
    public long PatchBytes { get; init; }
    /// <summary>Pages compressed this pass, each private page alone and the pages of a compressed shared frame together.</summary>
    public long PagesCompressed { get; init; }
    public long CompressedBytes { get; init; }
    /// <summary>Shared frames compressed this pass: every page sharing one was cold, so the frame became one blob they all name.</summary>
    public long SharedFramesCompressed { get; init; }
    /// <summary>
    /// Patches whose reference frame was compressed this pass (with the pages sharing it: every one of them, and every
    /// patch against it, was cold): they stay patches, now against the frame's compressed copy.
    /// </summary>
    public long PatchesOnCompressedReferences { get; init; }
    /// <summary>
    /// Pages tried for compression this pass whose content did not compress within the threshold: marked, they are not
    /// tried again until written or until their domain's compression policy changes.
    /// </summary>
    public long PagesIncompressible { get; init; }
    /// <summary>Encodings dropped because the compact store had no room.</summary>
    public long StoreFull { get; init; }
    /// <summary>
    /// Xen hosts: similarity slots filled or taken over by a shared page (references the next pass may use; that
    /// backend's table is kept across passes). Always 0 on the embedded host and QEMU guests, whose similarity table
    /// holds only one pass's references (<see cref="ReferencesListed"/>).
    /// </summary>
    public long SimilarityIndexChanges { get; init; }
    /// <summary>
    /// Embedded host and QEMU guests: similarity slots filled at this pass's start with the pages that may serve as patch
    /// references (the table is made afresh each pass and freed at its end; the same pages listed again are no change).
    /// </summary>
    public long ReferencesListed { get; init; }
    /// <summary>
    /// Patches found but not made because compression saves more: the page's domain compresses, and the patch plus what
    /// keeping its reference whole costs (a compressible page that serves no patch yet) came to no less than the page
    /// compressed (docs/ARCHITECTURE.md, "Patching or compression"). The page is compressed instead.
    /// </summary>
    public long PatchesDeclined { get; init; }
    /// <summary>Pages examined for the first time with patching or compression on: the next pass may encode them.</summary>
    public long NewlyExamined { get; init; }
    /// <summary>
    /// Patch reference candidates another engine worker held past a brief wait. The page they were for was examined and
    /// stays eligible, so a later pass tries again; unlike <see cref="Contended"/> (pages passed over), these do not make
    /// <see cref="Changed"/> true: on a stable host with two workers, one in a few thousand candidates was busy in
    /// nearly every pass, and scans until stable ran to their pass limit.
    /// </summary>
    public long ReferencesBusy { get; init; }
    /// <summary>Blobs the store compaction after the pass moved.</summary>
    public long BlobsCompacted { get; init; }

    /// <summary>Page groups formed this pass (docs/ARCHITECTURE.md, "Page groups"), and the compressed pages that went into them.</summary>
    public long GroupsFormed { get; init; }
    public long PagesGrouped { get; init; }
    /// <summary>Bytes of the streams of the groups formed this pass, and what their pages took as single blobs before.</summary>
    public long GroupStreamBytes { get; init; }
    public long GroupSinglesBytes { get; init; }
    /// <summary>Gathered groups (of pages, or of shared blobs) that came out no smaller than their members alone (those members are marked and not tried again: a page until written, a blob for its life).</summary>
    public long GroupsRefused { get; init; }
    /// <summary>Groups dissolved after the pass because they held more than their live members took alone, and the pages so moved back to single blobs.</summary>
    public long GroupsDissolved { get; init; }
    public long PagesUngrouped { get; init; }
    /// <summary>
    /// Single compressed pages that will be grouped once they stay untouched a few sweeps more (the policy's
    /// GroupAfterSweeps), and pages naming a shared blob not in a group yet that will be grouped with other such blobs then.
    /// </summary>
    public long PagesAwaitingGroup { get; init; }

    /// <summary>
    /// Private pages examined already, in a domain that compresses, that are aging toward C4 (C3: untouched for the last
    /// sweep, fewer than the policy's C4Sweeps so far) and not marked incompressible: each will be compressed once it
    /// reaches C4 if it stays untouched. Like <see cref="PagesAwaitingGroup"/>, they make the pass <see cref="Changed"/>, so
    /// a scan until stable does not stop before compression starts when C4Sweeps is above 2. Pages the guest keeps reading
    /// stay C2 and are not counted (nor are written pages, C1), so a scan until stable still ends; a page touched now and
    /// then while the scan runs can keep it going up to its pass limit, as a written page's new examination does.
    /// </summary>
    public long PagesAwaitingCompression { get; init; }

    /// <summary>
    /// Groups of shared blobs formed this pass (docs/ARCHITECTURE.md, "Page groups"): compressed shared frames whose pages
    /// stayed untouched as long as a page must before it is grouped, compressed together; and the blobs moved into them
    /// (their <see cref="GroupStreamBytes"/> and <see cref="GroupSinglesBytes"/> are counted with the page groups').
    /// </summary>
    public long SharedBlobGroupsFormed { get; init; }
    public long SharedBlobsGrouped { get; init; }
    /// <summary>Shared blobs moved back to blobs of their own from groups of shared blobs dissolved after the pass (counted in <see cref="GroupsDissolved"/>).</summary>
    public long SharedBlobsUngrouped { get; init; }

    /// <summary>
    /// True when the pass changed a page, skipped one because it was busy, gave the similarity index references it did
    /// not have, or saw pages that later passes will compress or group once they have aged enough
    /// (<see cref="PagesAwaitingCompression"/>, <see cref="PagesAwaitingGroup"/>): in each case another pass may still find more.
    /// </summary>
    public bool Changed => ChangedPages + PagesAwaitingGroup + PagesAwaitingCompression > 0;

    /// <summary>True when the pass's only change was pages still aging (<see cref="PagesAwaitingCompression"/>, <see cref="PagesAwaitingGroup"/>).</summary>
    public bool OnlyAging => ChangedPages == 0 && PagesAwaitingGroup + PagesAwaitingCompression > 0;

    private long ChangedPages => ZeroPagesFound + UniformPagesFound + PagesMerged + PagesPatched + PagesCompressed + Contended
        + SimilarityIndexChanges + NewlyExamined + PagesGrouped + PagesUngrouped + PatchesOnCompressedReferences
        + SharedBlobsGrouped + SharedBlobsUngrouped;
    public double PagesPerSecond => Elapsed.TotalSeconds == 0 ? 0 : PagesSwept / Elapsed.TotalSeconds;
}

/// <summary>The result of <c>Invoke-DEScan</c>: every pass, the totals, and whether the last pass changed nothing.</summary>
public sealed record ScanResult(IReadOnlyList<string> Domains, IReadOnlyList<PassResult> PassResults, bool Stable)
{
    /// <summary>
    /// How long the scan waited before its first pass for the engine's code to be optimized (the JIT warm-up a host
    /// starts when it is made; docs/ARCHITECTURE.md, "JIT warm-up"): zero for every scan once the warm-up has ended, at most
    /// about 2 s. Not part of <see cref="Elapsed"/>, which is the passes' time.
    /// </summary>
    public TimeSpan WarmUpWait { get; init; }

    public int Passes => PassResults.Count;
    public TimeSpan Elapsed => TimeSpan.FromTicks(PassResults.Sum(p => p.Elapsed.Ticks));

    /// <summary>
    /// The passes' time up to the end of the last one that changed anything (<see cref="PassResult.Changed"/>): a scan
    /// that became stable ends with passes that found nothing left to do, and they are left out (the first pass always
    /// counts). For a scan that did not become stable, <see cref="Elapsed"/>. Compare sets it against KSM's convergence,
    /// which is likewise the full scan its counters last moved in.
    /// </summary>
    public TimeSpan ConvergedElapsed
    {
        get
        {
            int last = PassResults.Count;
            if (Stable) while (last > 1 && !PassResults[last - 1].Changed) last--;
            long ticks = 0;
            for (int i = 0; i < last; i++) ticks += PassResults[i].Elapsed.Ticks;
            return TimeSpan.FromTicks(ticks);
        }
    }
    public long PagesSwept => PassResults.Sum(p => p.PagesSwept);
    public long ZeroPagesFound => PassResults.Sum(p => p.ZeroPagesFound);
    public long PagesMerged => PassResults.Sum(p => p.PagesMerged);
    public long FramesFreed => PassResults.Sum(p => p.FramesFreed);
    public long UniformPagesFound => PassResults.Sum(p => p.UniformPagesFound);
    public long PagesPatched => PassResults.Sum(p => p.PagesPatched);
    public long PagesCompressed => PassResults.Sum(p => p.PagesCompressed);
    public long SharedFramesCompressed => PassResults.Sum(p => p.SharedFramesCompressed);
    public long PagesGrouped => PassResults.Sum(p => p.PagesGrouped);
    public double PagesPerSecond => Elapsed.TotalSeconds == 0 ? 0 : PagesSwept / Elapsed.TotalSeconds;
}
