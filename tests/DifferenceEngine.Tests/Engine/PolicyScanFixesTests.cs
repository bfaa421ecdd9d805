using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;
using Xunit;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// Scans until stable that wait for pages still aging toward C4, the scan result's Stable flag, and the policy changes,
/// background passes and trust group changes an audit found wrong.
/// </summary>
public sealed class PolicyScanFixesTests(ITestOutputHelper output)
{
    private static DomainOptions Compressing(int c4Sweeps) => new()
    {
        CompressionEnabled = true, C4Sweeps = c4Sweeps, GroupSize = 0,
    };

    [Fact]
    public void UntilStableWaitsForPagesStillAgingTowardC4()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var d = TestMemory.LoadRaw(host, dir, "a", TestMemory.TextPages(64, 7), Compressing(5));
        var scan = host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 1 });
        foreach (var p in scan.PassResults)
            output.WriteLine($"pass {p.Pass}: examined {p.PagesExamined}, new {p.NewlyExamined}, awaiting {p.PagesAwaitingCompression}, compressed {p.PagesCompressed}");
        Assert.True(scan.Stable);
        // Every page reached C4 and was compressed before the scan called itself stable.
        Assert.Equal(64, scan.PagesCompressed);
        Assert.Contains(scan.PassResults, p => p.PagesAwaitingCompression > 0 && p.PagesCompressed == 0);
        // A further scan finds nothing left to do.
        var again = host.Scan(options: new ScanOptions { Passes = 1, Parallelism = 1 });
        Assert.Equal(0, again.PagesCompressed);
        Assert.Equal(0, again.PassResults[0].PagesAwaitingCompression);
    }

    [Fact]
    public void UntilStableStillEndsWhenPagesDoNotCompress()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var random = Enumerable.Range(0, 32).Select(i => TestMemory.RandomPage(new Random(i))).ToArray();
        TestMemory.LoadRaw(host, dir, "a", random, Compressing(5));
        var scan = host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 1, MaxPasses = 30 });
        foreach (var p in scan.PassResults)
            output.WriteLine($"pass {p.Pass}: awaiting {p.PagesAwaitingCompression}, incompressible {p.PagesIncompressible}");
        // The pages waited for C4, were tried once and marked incompressible; marked pages are not waited for.
        Assert.True(scan.Stable);
        Assert.True(scan.Passes < 30, $"{scan.Passes} passes");
        Assert.Equal(32, scan.PassResults.Sum(p => p.PagesIncompressible));
        Assert.Equal(0, scan.PassResults[^1].PagesAwaitingCompression);
    }

    private static PassResult Pass(int pass, long merged) => new(pass, 1, 1, 0, merged, merged, 0, 0, TimeSpan.Zero);

    [Fact]
    public void StableIsFalseWhenTheLastPassChangedSomething()
    {
        // Pass 2 changes nothing, pass 3 does: a scan of 3 passes did not end stable.
        long[] merged = [5, 0, 3];
        var (results, stable) = PassLoop.Run(new ScanOptions { Passes = 3 }, p => Pass(p, merged[p - 1]), CancellationToken.None);
        Assert.Equal(3, results.Count);
        Assert.False(stable);
        // Its last pass changing nothing: stable.
        long[] settled = [5, 3, 0];
        Assert.True(PassLoop.Run(new ScanOptions { Passes = 3 }, p => Pass(p, settled[p - 1]), CancellationToken.None).Stable);
        // A single pass is never stable (nothing to compare it with), whatever it did.
        Assert.False(PassLoop.Run(new ScanOptions { Passes = 1 }, p => Pass(p, 0), CancellationToken.None).Stable);
    }

    /// <summary>
    /// Pages still aging keep a scan until stable going (PagesAwaitingCompression), but a live guest touches some pages
    /// now and then and they age again and again: a scan until stable ran to its pass limit (a review's finding). Passes
    /// whose only change is aging pages stop keeping it going after as many as a page left alone can need (the clock's
    /// most idle sweeps); a pass that changes a page starts that count again.
    /// </summary>
    [Fact]
    public void PagesThatKeepAgingKeepAScanUntilStableGoingOnlyAsLongAsAPageCanAge()
    {
        PassResult Aging(int pass) => Pass(pass, pass == 1 ? 5 : 0) with { PagesAwaitingCompression = 7 };
        var (results, stable) = PassLoop.Run(new ScanOptions { UntilStable = true, MaxPasses = 64 }, Aging, CancellationToken.None);
        Assert.True(stable);
        Assert.Equal(1 + PageEntry.MaxIdle + 1, results.Count); // the first pass, then MaxIdle + 1 of only aging pages
        // A page changed in between starts the count again.
        PassResult AgingThenMerge(int pass) => Pass(pass, pass is 1 or 10 ? 5 : 0) with { PagesAwaitingCompression = 7 };
        Assert.Equal(10 + PageEntry.MaxIdle + 1, PassLoop.Run(new ScanOptions { UntilStable = true, MaxPasses = 64 }, AgingThenMerge, CancellationToken.None).Results.Count);
        // Aging pages alone for fewer passes than that: not stable yet.
        Assert.False(PassLoop.Run(new ScanOptions { Passes = 5 }, Aging, CancellationToken.None).Stable);
    }

    private static byte[] NearCopy(byte[] page, int seed)
    {
        var rng = new Random(seed);
        var copy = (byte[])page.Clone();
        for (int i = 0; i < 3; i++) copy[rng.Next(4096)] ^= (byte)(1 + rng.Next(255));
        return copy;
    }

    /// <summary>Pages of a domain in a state, read from its page table (no pass runs meanwhile here).</summary>
    private static long Count(Domain d, Func<ulong, bool> match)
    {
        long n = 0;
        for (long g = 0; g < d.PageCount; g++) if (match(d.PeekEntry(g))) n++;
        return n;
    }

    private static bool SharedOrPatched(ulong e) =>
        PageEntry.State(e) is PageState.Shared or PageState.Patched || PageEntry.IsSharedBlob(e);

    [Fact]
    public void ADomainThatDoesNotShareGetsNoSharedPagesAndItsTrustGroupChangesAfterTheDocumentedSteps()
    {
        using var dir = new TempDir();
        using var host = new DEHost(new HostOptions { SimilaritySeed = 1 });
        var both = new DomainOptions { SharingEnabled = true, PatchingEnabled = true, C4Sweeps = 1, TrustGroup = "g" };
        // a holds random pages; c, loaded later, near-copies of them: the only references c's pages find at first are a's.
        var originals = Enumerable.Range(0, 16).Select(i => TestMemory.RandomPage(new Random(100 + i))).ToArray();
        var a = TestMemory.LoadRaw(host, dir, "a", originals, both);
        var passes = new ScanOptions { Passes = 4, Parallelism = 1 };
        host.Scan(options: passes);
        // The documented steps, with passes between them as the background engine would run them.
        host.DisableSharing(a, unshare: true);
        Assert.Equal(0, Count(a, e => PageEntry.State(e) == PageState.Shared || PageEntry.IsSharedBlob(e)));
        var c = TestMemory.LoadRaw(host, dir, "c", originals.SelectMany((p, i) => new[] { NearCopy(p, i), NearCopy(p, 50 + i) }).ToArray(), both);
        host.Scan(options: passes);
        output.WriteLine($"a: {Count(a, e => PageEntry.State(e) == PageState.Shared)} shared; c: {Count(c, e => PageEntry.State(e) == PageState.Patched)} patched");
        Assert.False(a.Policy.SharingEnabled);
        Assert.Equal(0, Count(a, e => PageEntry.State(e) == PageState.Shared || PageEntry.IsSharedBlob(e)));
        // c still patches: against its own pages, which it shares.
        Assert.True(Count(c, e => PageEntry.State(e) == PageState.Patched) >= 8);
        host.DisablePatching(a, restore: true);
        host.Scan(options: passes);
        Assert.Equal(0, Count(a, SharedOrPatched));
        host.SetPolicy(a, trustGroup: "h");
        Assert.Equal("h", a.Policy.TrustGroup);
    }

    [Fact]
    public void TheTrustGroupChangeErrorGivesStepsThatWork()
    {
        using var dir = new TempDir();
        using var host = new DEHost();
        var sharing = new DomainOptions { SharingEnabled = true, PatchingEnabled = true, C4Sweeps = 1 };
        var page = TestMemory.RandomPage(new Random(3));
        var a = TestMemory.LoadRaw(host, dir, "a", [page, page], sharing);
        host.Scan(options: new ScanOptions { Passes = 3, Parallelism = 1 });
        var ex = Assert.Throws<DEException>(() => host.SetPolicy(a, trustGroup: "h"));
        Assert.Equal("TrustGroupChangeNeedsUnshare", ex.ErrorId);
        output.WriteLine(ex.Message);
        // The steps the message gives, in its order, with passes between them: then the change succeeds.
        int restore = ex.Message.IndexOf("Disable-DEPatching -Restore", StringComparison.Ordinal);
        int unshare = ex.Message.IndexOf("Disable-DESharing -Unshare", StringComparison.Ordinal);
        Assert.True(restore >= 0 && unshare >= 0, ex.Message);
        var steps = new List<Action> { () => host.DisablePatching(a, restore: true), () => host.DisableSharing(a, unshare: true) };
        if (unshare < restore) steps.Reverse();
        foreach (var step in steps)
        {
            step();
            host.Scan(options: new ScanOptions { Passes = 3, Parallelism = 1 });
        }
        host.SetPolicy(a, trustGroup: "h");
        Assert.Equal("h", a.Policy.TrustGroup);
    }

    [Fact]
    public void AScanOverEveryDomainSkipsADomainRemovedWhileItWaited()
    {
        using var dir = new TempDir();
        using var host = new DEHost();
        var sharing = new DomainOptions { SharingEnabled = true };
        var a = TestMemory.LoadRaw(host, dir, "a", TestMemory.PlantedImage(64, 1), sharing);
        var b = TestMemory.LoadRaw(host, dir, "b", TestMemory.PlantedImage(64, 2), sharing);
        ScanResult? result = null;
        Exception? failure = null;
        Thread scan;
        using (new HeldPass(host, [a]))
        {
            // A scan over every domain, started while another holds the scan lock: it has read the domains and waits.
            scan = new Thread(() => failure = Record.Exception(() => result = host.Scan(options: new ScanOptions { Passes = 2, Parallelism = 1 })));
            scan.Start();
            SpinWait.SpinUntil(() => (scan.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
            host.RemoveDomain(b);
        }
        scan.Join();
        Assert.Null(failure);
        Assert.Equal(["a"], result!.Domains);
        // Named explicitly, a removed domain is still refused.
        Assert.Equal("DomainNotFound", Assert.Throws<DEException>(() => host.Scan([a, b])).ErrorId);
    }

    [Fact]
    public void AChangeNamingTheOldTrustGroupDoesNotSetItBackUncheckedAfterAnotherCallerMovedTheDomain()
    {
        using var dir = new TempDir();
        using var host = new DEHost();
        var sharing = new DomainOptions { SharingEnabled = true };
        var image = TestMemory.PlantedImage(64, 1);
        var a = TestMemory.LoadRaw(host, dir, "a", image, sharing);
        TestMemory.LoadRaw(host, dir, "b", image, sharing);
        host.Scan(options: new ScanOptions { Passes = 2, Parallelism = 1 });
        Assert.True(TestMemory.Census([a]).Shared > 0, "a shares pages with b");
        Exception? failure = null;
        Thread change;
        lock (a.Policy.ChangeGate)
        {
            // A change that names a's group as it is now ("default"): it needs no pass boundary, and waits for the gate.
            change = new Thread(() => failure = Record.Exception(() => host.SetPolicy(a, c4Sweeps: 3, trustGroup: "default")));
            change.Start();
            SpinWait.SpinUntil(() => (change.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
            // Meanwhile another caller's change moved a (as if its pages had been checked then).
            a.Policy.TrustGroup = "elsewhere";
        }
        change.Join();
        // Setting "default" again is a move now, and a's Shared pages refuse it: before, it was set back unchecked.
        Assert.Equal("TrustGroupChangeNeedsUnshare", Assert.IsType<DEException>(failure).ErrorId);
        Assert.Equal("elsewhere", a.Policy.TrustGroup);
    }

    private sealed class FailingOncePassHost : IEngineService
    {
        public readonly ManualResetEventSlim SecondPassDone = new();
        private int _passes;
        public string Name => "failing";
        public TimeSpan EngineCpuTime => TimeSpan.Zero;

        public TimeSpan RunEnginePass(CancellationToken cancellationToken)
        {
            int pass = Interlocked.Increment(ref _passes);
            if (pass == 1) throw new DEException("QemuGuestExited", DEErrorKind.ConnectionError, "The guest exited.", null);
            return TimeSpan.Zero;
        }

        public StatsSample? RecordSampleAfterPass()
        {
            if (Volatile.Read(ref _passes) >= 2) SecondPassDone.Set();
            return null;
        }
    }

    [Fact]
    public void TheEnginesLastErrorHasItsTime()
    {
        var host = new FailingOncePassHost();
        var control = new EngineControl(host, () => new Stats.HostStats("failing", 0, null, 0, 0, 0, 0, 0, 0, 0, [], []));
        Assert.Null(control.Status.LastErrorTime);
        control.Start(TimeSpan.FromMilliseconds(100)); // the shortest interval
        Assert.True(host.SecondPassDone.Wait(TimeSpan.FromMinutes(1)), "the engine's second pass never ended");
        var status = control.Status;
        control.Stop(sample: false);
        Assert.StartsWith("QemuGuestExited: ", status.LastError);
        Assert.NotNull(status.LastErrorTime);
        Assert.True(status.LastErrorTime >= status.Started);
        // A pass succeeded after the failure: its time is later.
        Assert.True(status.LastPass >= status.LastErrorTime, $"{status.LastPass:o} {status.LastErrorTime:o}");
        Assert.Equal(status.LastErrorTime, control.Status.LastErrorTime); // kept once stopped
    }

    [Fact]
    public void TrustGroupAndHostPolicyChangesWaitForThePassInProgressNotTheWholeScan()
    {
        using var dir = new TempDir();
        using var host = new DEHost();
        var a = TestMemory.LoadRaw(host, dir, "a", TestMemory.PlantedImage(16, 1), new DomainOptions { CompressionEnabled = true });
        var b = TestMemory.LoadRaw(host, dir, "b", TestMemory.PlantedImage(16, 2), new DomainOptions { SharingEnabled = true });
        using var inPass1 = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        using var trustChanged = new ManualResetEventSlim();
        using var hostChanged = new ManualResetEventSlim();
        var seenAt = new Dictionary<int, bool>();
        // A scan of b, 10 passes: pass 1 is held until the changes wait for it; passes 2 and 3 each go on only once a
        // change is made (a change that waited for the whole scan would never let them: a safety timeout ends the wait).
        var scan = new Thread(() => host.Scan([b], new ScanOptions { Passes = 10, Parallelism = 1 }, p =>
        {
            if (p.Pass == 1 && !inPass1.IsSet)
            {
                inPass1.Set();
                go.Wait();
            }
            else if (p.Pass is 2 or 3 && !seenAt.ContainsKey(p.Pass))
            {
                seenAt[p.Pass] = (p.Pass == 2 ? trustChanged : hostChanged).Wait(TimeSpan.FromMinutes(1));
                // Pass 2 ends only once the host policy change waits for the gate (or is made): it then goes before pass 3. (Without
                // this, pass 3 could take the gate before the changer thread, just past trustChanged, asked for it: the
                // change then waited for pass 3, whose callback waited for the change, until the time-out; CI failed once.)
                if (p.Pass == 2)
                    seenAt[2] &= SpinWait.SpinUntil(() => host.PassGateWaiters > 0 || hostChanged.IsSet, TimeSpan.FromMinutes(1));
            }
        }));
        scan.Start();
        inPass1.Wait();
        var changer = new Thread(() =>
        {
            host.SetPolicy(a, trustGroup: "tenant");
            trustChanged.Set();
            host.SetHostPolicy(compactionThreshold: 0.4);
            hostChanged.Set();
        });
        changer.Start();
        SpinWait.SpinUntil(() => (changer.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
        go.Set();
        scan.Join();
        changer.Join();
        Assert.True(seenAt[2], "the trust group change waited past pass 2");
        Assert.True(seenAt[3], "the host policy change waited past pass 3");
        Assert.Equal("tenant", a.Policy.TrustGroup);
        Assert.Equal(0.4, host.Policy.CompactionThreshold);
    }

    [Fact]
    public void ATrustGroupOrHostPolicyChangeWaitingForAPassEndsWhenCancelled()
    {
        using var dir = new TempDir();
        using var host = new DEHost();
        var a = TestMemory.LoadRaw(host, dir, "a", TestMemory.PlantedImage(16, 1));
        var b = TestMemory.LoadRaw(host, dir, "b", TestMemory.PlantedImage(16, 2), new DomainOptions { SharingEnabled = true });
        double threshold = host.Policy.CompactionThreshold;
        using (new HeldPass(host, [b]))
        {
            foreach (var change in new Action<CancellationToken>[]
                     {
                         ct => host.SetPolicy(a, trustGroup: "tenant", cancellationToken: ct),
                         ct => host.SetHostPolicy(compactionThreshold: 0.4, cancellationToken: ct),
                     })
            {
                using var cts = new CancellationTokenSource();
                Exception? failure = null;
                var changer = new Thread(() => failure = Record.Exception(() => change(cts.Token)));
                changer.Start();
                SpinWait.SpinUntil(() => (changer.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
                cts.Cancel();
                changer.Join();
                Assert.IsAssignableFrom<OperationCanceledException>(failure);
            }
        }
        Assert.Equal(DomainPolicy.DefaultTrustGroup, a.Policy.TrustGroup);
        Assert.Equal(threshold, host.Policy.CompactionThreshold);
    }
}
