using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Scanning;
using DifferenceEngine.Tests.Engine;
using DifferenceEngine.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Xen;

/// <summary>
/// On a Xen host, the changes that must not race a pass (a trust group change, the host policy, a restore) wait for the pass
/// in progress, not for the whole scan, and the wait ends when cancelled, as on the embedded host
/// (Engine/PolicyScanFixesTests). Before, each took the scan lock, which a scan holds through all its passes: Set-DEPolicy
/// -TrustGroup waited for a whole Invoke-DEScan -UntilStable, past Ctrl-C. No clock decides anything here: a change that
/// waited for the whole scan makes a test fail, or hang.
/// </summary>
[Collection(nameof(FakeXenCollection))]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class XenPassGateTests(ITestOutputHelper output)
{
    private const int Pages = 8;

    private static XenHost Connect() => XenHost.Connect(new XenHostOptions { SimilaritySeed = 7 }, requirePrivcmd: false);

    /// <summary>Domains 1 and 2 holding the same <see cref="Pages"/> pages (each page once in each), sharing on, 2 in group "tenant".</summary>
    private static (XenHost Host, XenDomain D1, XenDomain D2) Twins()
    {
        var fake = FakeXen.Get();
        byte[] content = TestMemory.TextPages(Pages, 21).SelectMany(p => p).ToArray();
        fake.CreateDomain(1, content);
        fake.CreateDomain(2, content);
        var host = Connect();
        var (d1, d2) = (host.GetDomain("1"), host.GetDomain("2"));
        host.SetPolicy(d2, trustGroup: "tenant");
        host.EnableSharing(d1);
        host.EnableSharing(d2);
        return (host, d1, d2);
    }

    /// <summary>
    /// Until <paramref name="thread"/> waits or has ended. A change of these tests blocks on nothing before the pass gate (its
    /// code ran once already, in <see cref="Twins"/>, or a cancellation seen before the gate ends it all the same).
    /// </summary>
    private static void UntilWaitingOrEnded(Thread thread) =>
        SpinWait.SpinUntil(() => (thread.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);

    [RequiresFact(Requirement.XenBuild)]
    public void AScanOfEveryDomainTakesTheDomainsAsTheyAreOnceItHoldsTheScanLock()
    {
        var fake = FakeXen.Get();
        byte[] content = TestMemory.TextPages(Pages, 21).SelectMany(p => p).ToArray();
        fake.CreateDomain(1, content);
        fake.CreateDomain(2, content);
        using var host = Connect();
        var (d1, d2) = (host.GetDomain("1"), host.GetDomain("2"));
        host.EnableSharing(d1); // domain 2 has no mechanism on yet
        using var inPass = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        using var waiting = new ManualResetEventSlim();
        ScanResult? whole = null;
        Exception? firstFailure = null, wholeFailure = null;
        var first = new Thread(() => firstFailure = Record.Exception(() => host.Scan([d1], new ScanOptions { Passes = 1 }, _ =>
        {
            if (inPass.IsSet) return;
            inPass.Set();
            go.Wait();
        })));
        first.Start();
        inPass.Wait();
        // Every domain with a mechanism on, asked for while the first scan holds the lock: it says it waits.
        var second = new Thread(() => wholeFailure = Record.Exception(() => whole = host.Scan(null, new ScanOptions { Passes = 1 }, p =>
        {
            if (p.WaitingForOtherScan) waiting.Set();
        })));
        second.Start();
        waiting.Wait();
        host.EnableSharing(d2); // while it waits
        go.Set();
        first.Join();
        second.Join();
        Assert.Null(firstFailure);
        Assert.Null(wholeFailure);
        output.WriteLine($"scanned {string.Join(", ", whole!.Domains)}");
        // Before, the domains were taken when the scan was called: domain 2, given sharing while it waited, was left out.
        Assert.Equal([d1.Name, d2.Name], whole.Domains);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void ATrustGroupChangeDuringAScanIsMadeBetweenTwoOfItsPasses()
    {
        var (host, d1, d2) = Twins();
        using var _ = host;
        using var inPass1 = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        string? groupInPass2 = null;
        ScanResult? scan = null;
        // Three passes over both; pass 1 is held (before it reads domain 2's group) until the change waits for it. The change's
        // code ran once already (Twins), so the changer waits for nothing else: it is counted at the gate before pass 1 ends.
        Exception? scanFailure = null, changeFailure = null;
        var scanner = new Thread(() => scanFailure = Record.Exception(() => scan = host.Scan([d1, d2], new ScanOptions { Passes = 3 }, p =>
        {
            if (p.Pass == 1 && !inPass1.IsSet)
            {
                inPass1.Set();
                go.Wait();
            }
            else if (p.Pass == 2)
            {
                groupInPass2 ??= d2.Policy.TrustGroup;
            }
        })));
        scanner.Start();
        inPass1.Wait();
        var changer = new Thread(() => changeFailure = Record.Exception(() => host.SetPolicy(d2, trustGroup: DomainPolicy.DefaultTrustGroup)));
        changer.Start();
        UntilWaitingOrEnded(changer);
        go.Set();
        scanner.Join();
        changer.Join();
        Assert.Null(scanFailure);
        Assert.Null(changeFailure);
        output.WriteLine($"group in pass 2: {groupInPass2}; merged by pass: {string.Join(", ", scan!.PassResults.Select(p => p.PagesMerged))}");
        // Made between passes 1 and 2: pass 1 read the old group whole (no twin in it), pass 2 the new one (every page a twin).
        Assert.Equal(DomainPolicy.DefaultTrustGroup, groupInPass2);
        Assert.Equal(0, scan.PassResults[0].PagesMerged);
        Assert.Equal(Pages, scan.PassResults[1].PagesMerged);
        Assert.Equal(DomainPolicy.DefaultTrustGroup, d2.Policy.TrustGroup);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void ATrustGroupChangeWaitingForAPassEndsWhenCancelledAndChangesNothing()
    {
        var (host, d1, d2) = Twins();
        using var _ = host;
        using (new HeldXenPass(host, [d1, d2]))
        {
            var failure = CancelledWhileWaiting(ct => host.SetPolicy(d2, trustGroup: DomainPolicy.DefaultTrustGroup, cancellationToken: ct));
            Assert.IsAssignableFrom<OperationCanceledException>(failure);
            Assert.Equal("tenant", d2.Policy.TrustGroup);
        }
        // The held scan's passes went on with it as it was: no page of domain 2 shared with domain 1's.
        Assert.Equal(0, host.GetPageStats(d2).SharedPages);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void AHostPolicyChangeWaitingForAPassEndsWhenCancelledAndChangesNothing()
    {
        var (host, d1, d2) = Twins();
        using var _ = host;
        var detector = host.Policy.Detector;
        int candidates = host.Policy.SimilarityCandidates;
        using (new HeldXenPass(host, [d1, d2]))
        {
            var failure = CancelledWhileWaiting(ct => host.SetHostPolicy(seed: 8, candidates: 3, cancellationToken: ct));
            Assert.IsAssignableFrom<OperationCanceledException>(failure);
            Assert.Same(detector, host.Policy.Detector);
            Assert.Equal(candidates, host.Policy.SimilarityCandidates);
        }
        host.SetHostPolicy(seed: 8); // with no pass in progress: at once
        Assert.Equal(8, host.Policy.Detector.Seed);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void ARestoreWaitingForAPassEndsWhenCancelledWithTheMechanismStillOn()
    {
        var (host, d1, d2) = Twins();
        using var _ = host;
        host.EnablePatching(d2);
        host.EnableCompression(d2);
        using (new HeldXenPass(host, [d1, d2]))
        {
            var patching = CancelledWhileWaiting(ct => host.DisablePatching(d2, restore: true, ct));
            var compression = CancelledWhileWaiting(ct => host.DisableCompression(d2, restore: true, ct));
            Assert.IsAssignableFrom<OperationCanceledException>(patching);
            Assert.IsAssignableFrom<OperationCanceledException>(compression);
            Assert.True(d2.Policy.PatchingEnabled);
            Assert.True(d2.Policy.CompressionEnabled);
        }
        host.DisableCompression(d2, restore: true); // with no pass in progress: at once
        Assert.False(d2.Policy.CompressionEnabled);
        Assert.Equal(0, host.GetPageStats(d2).CompressedPages);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void StatsAndChangesThatNeedNoPassBoundaryDoNotWaitForThePassInProgress()
    {
        var (host, d1, d2) = Twins();
        using var _ = host;
        using (new HeldXenPass(host, [d1, d2]))
        {
            // On this thread: each returns while the pass is held (a wait for the pass would never end).
            Assert.Equal(2, host.GetStats().Domains);
            host.EnableCompression(d1, CompressionAlgorithm.Zstd);
            host.SetPolicy(d1, c4Sweeps: 3, compressionThreshold: 0.5);
            host.EnableSharing(d1);
            host.DisableCompression(d1, restore: false);
            Assert.Equal(3, d1.Policy.C4Sweeps);
            Assert.False(d1.Policy.CompressionEnabled);
        }
    }

    /// <summary>
    /// Runs <paramref name="change"/> on a thread of its own, cancels its token once it waits (or has ended), and returns what
    /// it threw.
    /// </summary>
    private static Exception? CancelledWhileWaiting(Action<CancellationToken> change)
    {
        using var cts = new CancellationTokenSource();
        Exception? failure = null;
        var changer = new Thread(() => failure = Record.Exception(() => change(cts.Token)));
        changer.Start();
        UntilWaitingOrEnded(changer);
        cts.Cancel();
        changer.Join();
        return failure;
    }

    /// <summary>A scan of a Xen host held in its first pass (in its first progress report) until disposed.</summary>
    private sealed class HeldXenPass : IDisposable
    {
        private readonly ManualResetEventSlim holding = new();
        private readonly ManualResetEventSlim release = new();
        private readonly Thread scan;
        private Exception? failure;

        public HeldXenPass(XenHost host, IEnumerable<XenDomain> domains)
        {
            scan = new Thread(() => failure = Record.Exception(() => host.Scan(domains, new ScanOptions { Passes = 2 }, _ =>
            {
                if (holding.IsSet) return;
                holding.Set();
                release.Wait();
            })));
            scan.Start();
            holding.Wait();
        }

        public void Dispose()
        {
            release.Set();
            scan.Join();
            holding.Dispose();
            release.Dispose();
            Assert.Null(failure);
        }
    }
}
