using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Patching;

namespace DifferenceEngine.Hosting;

public sealed partial class DEHost
{
    /// <summary>Lets scans store this domain's similar pages as patches.</summary>
    public void EnablePatching(Domain domain)
    {
        using var op = EnterOperation();
        CheckOwned(domain);
        domain.ThrowIfQemuCannotEvict();
        ChangeMechanism(domain, p => p.PatchingEnabled = true);
    }

    /// <summary>Changes a mechanism flag of <paramref name="domain"/>'s, counted (<see cref="DomainPolicy.MechanismChanges"/>).</summary>
    internal static int ChangeMechanism(Domain domain, Action<DomainPolicy> change)
    {
        lock (domain.Policy.ChangeGate)
        {
            change(domain.Policy);
            return ++domain.Policy.MechanismChanges;
        }
    }

    /// <summary>
    /// Stops patching this domain's pages. With <paramref name="restore"/>, every Patched page is rebuilt
    /// into a frame; fails before changing anything when the limit leaves too few frames.
    /// </summary>
    /// <returns>Pages rebuilt.</returns>
    public long DisablePatching(Domain domain, bool restore)
    {
        using var op = EnterOperation();
        CheckOwned(domain);
        return TurnOff(domain, restore, "restore a domain's patched pages", p => p.PatchingEnabled, (p, on) => p.PatchingEnabled = on,
            () => domain.RestoreAll(PageState.Patched));
    }

    /// <summary>
    /// Turns a mechanism of <paramref name="domain"/> off, and with <paramref name="restore"/> rebuilds its pages: the flag
    /// goes off first, then the pass in progress is waited for (it may have read the flag on, and encode pages again behind
    /// the rebuild's walk, which nothing would rebuild after; later passes, even of the same scan, read it off), then
    /// <paramref name="rebuild"/> runs, passes going on meanwhile without the mechanism. When the rebuild fails before
    /// changing anything (too few frames), the flag is put back as it was, unless another call changed a flag meanwhile.
    /// </summary>
    private long TurnOff(Domain domain, bool restore, string what, Func<DomainPolicy, bool> get, Action<DomainPolicy, bool> set,
        Func<long> rebuild)
    {
        if (restore) HostCallbacks.ThrowIfInCallbackOf(this, Name, what);
        bool was = false;
        int change = ChangeMechanism(domain, p =>
        {
            was = get(p);
            set(p, false);
        });
        if (!restore) return 0;
        WaitForPassInProgress();
        try
        {
            return rebuild();
        }
        catch (DEException ex) when (ex.ErrorId.StartsWith("InsufficientMemoryTo", StringComparison.Ordinal))
        {
            lock (domain.Policy.ChangeGate)
            {
                if (was && domain.Policy.MechanismChanges == change)
                {
                    set(domain.Policy, true);
                    domain.Policy.MechanismChanges++;
                }
            }
            throw;
        }
    }

    /// <summary>Lets scans compress this domain's cold pages, with <paramref name="algorithm"/> when given.</summary>
    public void EnableCompression(Domain domain, CompressionAlgorithm? algorithm = null)
    {
        using var op = EnterOperation();
        CheckOwned(domain);
        domain.ThrowIfQemuCannotEvict();
        var checkedAlgorithm = algorithm is { } a ? CheckAlgorithm(a) : (CompressionAlgorithm?)null;
        bool changed = false;
        ChangeMechanism(domain, p =>
        {
            changed = !p.CompressionEnabled || (checkedAlgorithm is { } b && b != p.CompressionAlgorithm);
            if (checkedAlgorithm is { } c) p.CompressionAlgorithm = c;
            p.CompressionEnabled = true;
        });
        if (changed) ForgetIncompressible(domain);
    }

    /// <summary>
    /// Lets passes try again the pages marked incompressible under the old policy: those of <paramref name="domain"/>,
    /// and of the other domains of its trust group (a shared frame is compressed under the policies of all its pages).
    /// </summary>
    private void ForgetIncompressible(Domain domain)
    {
        string group = domain.Policy.TrustGroup;
        foreach (var d in Domains)
            if (d == domain || d.Policy.TrustGroup == group) d.ForgetIncompressible();
    }

    /// <summary>
    /// Stops compressing this domain's pages; with <paramref name="restore"/>, decompresses them into frames, and rebuilds
    /// its patches whose reference frame was compressed (they would decode through a compressed copy).
    /// </summary>
    /// <returns>Pages rebuilt.</returns>
    public long DisableCompression(Domain domain, bool restore)
    {
        using var op = EnterOperation();
        CheckOwned(domain);
        return TurnOff(domain, restore, "restore a domain's compressed pages", p => p.CompressionEnabled,
            (p, on) => p.CompressionEnabled = on, domain.RestoreAllCompressed);
    }

    /// <summary>
    /// Changes a domain's policy values; null leaves a value as it is. Every value is checked before
    /// any is changed. A domain's trust group can change only while it has no Shared or Patched pages
    /// (its frames are in its old group's index): restore and unshare first. A trust group change waits for the pass in
    /// progress, if any (not for the rest of its scan), as long as <paramref name="cancellationToken"/> allows
    /// (OperationCanceledException, nothing changed).
    /// </summary>
    public void SetPolicy(Domain domain, int? c4Sweeps = null, int? patchThreshold = null,
        double? compressionThreshold = null, CompressionAlgorithm? algorithm = null, string? trustGroup = null,
        int? groupSize = null, int? groupAfterSweeps = null, CompressionAlgorithm? groupAlgorithm = null,
        CancellationToken cancellationToken = default)
    {
        using var op = EnterOperation();
        CheckOwned(domain);
        var checkedAlgorithm = algorithm is { } a ? CheckAlgorithm(a) : (CompressionAlgorithm?)null;
        // Every value checked first (the trial is made again below, from the policy as it is then).
        domain.Policy.With(c4Sweeps, patchThreshold, compressionThreshold, checkedAlgorithm, trustGroup, groupSize, groupAfterSweeps, groupAlgorithm);
        // False, changing nothing, when the change would move the domain to another trust group and the caller does not
        // hold the pass gate (checkPages): another caller changed the group since it was looked at.
        bool Change(bool checkPages)
        {
            // Made and taken under the policy's gate: a change made meanwhile by another caller is not undone.
            lock (domain.Policy.ChangeGate)
            {
                var trial = domain.Policy.With(c4Sweeps, patchThreshold, compressionThreshold, checkedAlgorithm, trustGroup,
                    groupSize, groupAfterSweeps, groupAlgorithm);
                if (trial.TrustGroup != domain.Policy.TrustGroup)
                {
                    if (!checkPages) return false;
                    for (long gfn = 0; gfn < domain.PageCount; gfn++)
                    {
                        ulong e = domain.PeekEntry(gfn);
                        if (PageEntry.State(e) is PageState.Shared or PageState.Patched || PageEntry.IsSharedBlob(e))
                            throw new DEException("TrustGroupChangeNeedsUnshare", DEErrorKind.InvalidOperation,
                                $"Domain '{domain.Name}' still has Shared, shared-compressed or Patched pages in trust group '{domain.Policy.TrustGroup}'. " +
                                "Run Disable-DEPatching -Restore and then Disable-DESharing -Unshare first (with both off, no pass gives " +
                                "the domain Shared or Patched pages again), and change its trust group before turning them on again.", domain);
                    }
                }
                TakeTunables(domain, trial);
                return true;
            }
        }
        // A trust group named that is the domain's own changes nothing of the group, and needs no pass boundary; but should
        // another caller change the group meanwhile, this call would set it back: then between passes, with the pages checked,
        // as any group change (a review of the Xen host's same code found it there first).
        if ((trustGroup is null || trustGroup == domain.Policy.TrustGroup) && Change(checkPages: false)) return;
        // Checked and changed with no pass running. Only passes make pages Shared or Patched, and a pass reads each domain's
        // trust group once: one running between the check and the change could still share this domain's pages, or patch
        // against them, within the old group, and the next pass would list those frames in the new one. Between two passes
        // is enough (the pass gate, read): not the scan lock, which a scan holds through all its passes (an audit saw the
        // change wait for a whole scan of many passes, past Ctrl-C).
        HostCallbacks.ThrowIfInCallbackOf(this, Name, "change a domain's trust group");
        EnterPassGateToRead(cancellationToken);
        try
        {
            Change(checkPages: true);
        }
        finally
        {
            _passGate.Exit();
        }
    }

    /// <summary>
    /// Checks domain policy values as <see cref="SetPolicy"/> does, changing nothing: the same errors (PolicyC4SweepsInvalid
    /// and the like, InvalidArgument). Set-DEPolicy checks them before -WhatIf and -Confirm.
    /// </summary>
    public static void CheckPolicyValues(int? c4Sweeps = null, int? patchThreshold = null, double? compressionThreshold = null,
        CompressionAlgorithm? algorithm = null, string? trustGroup = null, int? groupSize = null, int? groupAfterSweeps = null,
        CompressionAlgorithm? groupAlgorithm = null)
    {
        var checkedAlgorithm = algorithm is { } a ? CheckAlgorithm(a) : (CompressionAlgorithm?)null;
        new DomainPolicy().With(c4Sweeps, patchThreshold, compressionThreshold, checkedAlgorithm, trustGroup, groupSize, groupAfterSweeps, groupAlgorithm);
    }

    private void TakeTunables(Domain domain, DomainPolicy trial)
    {
        bool compressionChanged = trial.CompressionThreshold != domain.Policy.CompressionThreshold
                                  || trial.CompressionAlgorithm != domain.Policy.CompressionAlgorithm
                                  || trial.TrustGroup != domain.Policy.TrustGroup
                                  || trial.GroupSize != domain.Policy.GroupSize || trial.GroupAlgorithm != domain.Policy.GroupAlgorithm;
        domain.Policy.TakeTunables(trial);
        if (compressionChanged) ForgetIncompressible(domain);
    }

    /// <summary>
    /// Refuses host policy values out of range (InvalidArgument), as <see cref="SetHostPolicy"/> would, without changing
    /// anything: what Set-DEPolicy -HostPolicy checks before -WhatIf and -Confirm. A watermark not given is taken as this
    /// host's (the two must satisfy 0 &lt; low &lt; high &lt; 1 together).
    /// </summary>
    public void CheckHostPolicyValues(int? keys = null, int? blocksPerKey = null, int? candidates = null,
        double? compactionThreshold = null, double? lowWatermark = null, double? highWatermark = null)
    {
        double low = lowWatermark ?? Policy.LowWatermark, high = highWatermark ?? Policy.HighWatermark;
        if (double.IsNaN(low) || double.IsNaN(high) || low <= 0 || high >= 1 || low >= high)
            throw new DEException("PolicyWatermarksInvalid", DEErrorKind.InvalidArgument,
                $"The watermarks must satisfy 0 < low < high < 1 (fractions of the memory limit); that would make low {low}" +
                $"{(lowWatermark is null ? " (the host's now)" : "")} and high {high}{(highWatermark is null ? " (the host's now)" : "")}.",
                lowWatermark ?? highWatermark);
        CheckSimilarityValues(keys, blocksPerKey, candidates);
        if (compactionThreshold is { } t && (double.IsNaN(t) || t is < 0.01 or > 0.99))
            throw new DEException("PolicyCompactionThresholdInvalid", DEErrorKind.InvalidArgument,
                $"The compaction threshold must be a fraction between 0.01 and 0.99; {t} was given.", t);
    }

    /// <summary>Refuses the similarity detector's k, s or c out of range (InvalidArgument); every host's check of them.</summary>
    public static void CheckSimilarityValues(int? keys, int? blocksPerKey, int? candidates)
    {
        Patching.SimilarityDetector.Check(keys, blocksPerKey);
        if (candidates is < 1 or > 8)
            throw new DEException("PolicySimilarityCandidatesInvalid", DEErrorKind.InvalidArgument,
                $"The detector's c (candidates per key) must be between 1 and 8; {candidates} was given.", candidates);
    }

    /// <summary>
    /// Changes the host's similarity detector (k keys of s blocks, c candidates per key, the seed), the
    /// compaction threshold and the paging watermarks. A new detector empties the similarity tables: keys of the old one mean
    /// nothing to the new one. Waits for the pass in progress, if any (not for the rest of its scan), as long as
    /// <paramref name="cancellationToken"/> allows (OperationCanceledException, nothing changed).
    /// </summary>
    public void SetHostPolicy(int? keys = null, int? blocksPerKey = null, int? candidates = null, int? seed = null,
        double? compactionThreshold = null, double? lowWatermark = null, double? highWatermark = null,
        CancellationToken cancellationToken = default)
    {
        using var op = EnterOperation();
        HostCallbacks.ThrowIfInCallbackOf(this, Name, "change the host's policy"); // it waits for the pass in progress
        CheckHostPolicyValues(keys, blocksPerKey, candidates, compactionThreshold, lowWatermark, highWatermark);
        double low = lowWatermark ?? Policy.LowWatermark, high = highWatermark ?? Policy.HighWatermark;
        var old = Policy.Detector;
        SimilarityDetector? detector = null;
        if ((keys ?? old.Keys) != old.Keys || (blocksPerKey ?? old.BlocksPerKey) != old.BlocksPerKey || (seed ?? old.Seed) != old.Seed)
            detector = new SimilarityDetector(keys ?? old.Keys, blocksPerKey ?? old.BlocksPerKey, seed ?? old.Seed);
        EnterPassGateToRead(cancellationToken);
        try
        {
            // The similarity tables hold nothing between passes (each pass frees them at its end): the next pass lists
            // references with the new detector and candidates. Between two passes of a scan is enough.
            if (detector is not null) Policy.Detector = detector;
            if (candidates is { } cc) Policy.SimilarityCandidates = cc;
            if (compactionThreshold is { } ct) Policy.CompactionThreshold = ct;
            Policy.LowWatermark = low;
            Policy.HighWatermark = high;
        }
        finally
        {
            _passGate.Exit();
        }
    }

    private static CompressionAlgorithm CheckAlgorithm(CompressionAlgorithm algorithm) =>
        Enum.IsDefined(algorithm)
            ? algorithm
            : throw new DEException("CompressionAlgorithmInvalid", DEErrorKind.InvalidArgument,
                $"'{algorithm}' is not a compression algorithm; use LZ4, WKdm or Zstd.", algorithm);
}
