using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// Scans of one host run one at a time, and waiting for the scan lock ends when the waiter is cancelled: Ctrl-C on an
/// Invoke-DEScan that waits, and Stop-DEEngine of an engine whose pass waits, return while the other scan goes on (an
/// audit measured Stop-DEEngine waiting two seconds for a 600-pass scan in another runspace). The scan in the lock is
/// held by its progress callback until the test lets it go: events only, no clock.
/// </summary>
public class ScanGateTests
{
    private static (DEHost Host, Domain Domain) NewHost(TempDir dir)
    {
        // A scan's first wait is for the JIT warm-up (cancellable too): past it, the only wait left is the lock's.
        JitWarmup.Start();
        JitWarmup.WaitUntilWarm(Timeout.InfiniteTimeSpan);
        var host = new DEHost();
        var d = TestMemory.LoadRaw(host, dir, "d", TestMemory.TextPages(64, 5), new DomainOptions { SharingEnabled = true });
        return (host, d);
    }

    /// <summary>Runs <paramref name="whileHeld"/> while a scan holds the host's scan lock, then lets the scan finish.</summary>
    private static void WhileAScanIsHeld(DEHost host, Action whileHeld)
    {
        using var held = new HeldPass(host);
        whileHeld();
    }

    [Fact]
    public void AScanWaitingForTheLockEndsWhenCancelled()
    {
        using var dir = new TempDir();
        var (host, _) = NewHost(dir);
        using var _host = host;
        Exception? waiterFailure = null;
        bool ended = false;
        WhileAScanIsHeld(host, () =>
        {
            using var cancel = new CancellationTokenSource();
            var waiter = new Thread(() => waiterFailure = Record.Exception(() => host.Scan(cancellationToken: cancel.Token)));
            waiter.Start();
            SpinWait.SpinUntil(() => (waiter.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
            Assert.True(waiter.IsAlive, "the second scan did not wait for the first");
            cancel.Cancel();
            ended = waiter.Join(TimeSpan.FromMinutes(1)); // a bound for the failure only: it ends at once, or never
        });
        Assert.True(ended, "the cancelled scan went on waiting for the lock");
        Assert.IsType<OperationCanceledException>(waiterFailure, exactMatch: false);
    }

    [Fact]
    public void StoppingAnEngineWhosePassWaitsForTheLockReturnsWhileTheOtherScanGoesOn()
    {
        using var dir = new TempDir();
        var (host, _) = NewHost(dir);
        using var _host = host;
        long scanPassesBefore = host.GetStats().ScanPasses;
        EngineStatus? final = null;
        WhileAScanIsHeld(host, () =>
        {
            host.StartEngine(TimeSpan.FromMilliseconds(100));
            var stop = new Thread(() => final = host.StopEngine());
            stop.Start();
            bool stopped = stop.Join(TimeSpan.FromMinutes(1)); // a bound for the failure only
            Assert.True(stopped, "Stop-DEEngine waited for another scan to end");
        });
        Assert.NotNull(final);
        Assert.Equal(EngineState.Stopped, final!.State);
        Assert.Equal(0, final.PassesRun);
        Assert.Equal(scanPassesBefore + 1, host.GetStats().ScanPasses); // the held scan's pass only
    }

    [Fact]
    public void ASnapshotIsOfAMomentBetweenPasses()
    {
        // A pass that freed frames of pages the snapshot had measured left the domains charged for more than the host
        // held ("Uncharged" negative, -10 MB in an audit): the snapshot waits for the pass in progress.
        using var dir = new TempDir();
        var (host, _) = NewHost(dir);
        using var _host = host;
        Stats.HostSnapshot? taken = null;
        bool waited = false;
        var snapshot = new Thread(() => taken = host.TakeSnapshot());
        WhileAScanIsHeld(host, () =>
        {
            snapshot.Start();
            SpinWait.SpinUntil(() => (snapshot.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
            waited = snapshot.IsAlive && taken is null;
        });
        snapshot.Join();
        Assert.True(waited, "the snapshot did not wait for the pass in progress");
        Assert.NotNull(taken);
        Assert.Equal(0, taken!.Host.UnchargedBytes);
    }

    [Fact]
    public void ASnapshotWaitingForThePassInProgressEndsWhenCancelled()
    {
        // Ctrl-C on a Get-DEHostStats, Get-DEPageStats or Export-DEReport waiting for a pass (a review found it could not
        // be stopped): the wait checks the token; the pass goes on, and a snapshot after it is taken as usual.
        using var dir = new TempDir();
        var (host, domain) = NewHost(dir);
        using var _host = host;
        var failures = new Exception?[3];
        bool[] ended = new bool[3];
        Action<CancellationToken>[] waits =
        [
            ct => host.TakeSnapshot(ct),
            ct => host.GetStats(ct),
            ct => DifferenceEngine.Reports.ReportModel.FromHost(host, [domain], cancellationToken: ct),
        ];
        WhileAScanIsHeld(host, () =>
        {
            for (int i = 0; i < waits.Length; i++)
            {
                int k = i;
                using var cancel = new CancellationTokenSource();
                var waiter = new Thread(() => failures[k] = Record.Exception(() => waits[k](cancel.Token)));
                waiter.Start();
                SpinWait.SpinUntil(() => (waiter.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
                Assert.True(waiter.IsAlive, $"wait {k} did not wait for the pass in progress");
                cancel.Cancel();
                ended[k] = waiter.Join(TimeSpan.FromMinutes(1)); // a bound for the failure only: it ends at once, or never
            }
        });
        for (int i = 0; i < waits.Length; i++)
        {
            Assert.True(ended[i], $"wait {i} went on waiting for the pass after it was cancelled");
            Assert.IsType<OperationCanceledException>(failures[i], exactMatch: false);
        }
        Assert.Equal(0, host.TakeSnapshot(CancellationToken.None).Host.UnchargedBytes);
        Assert.Throws<OperationCanceledException>(() => host.TakeSnapshot(new CancellationToken(canceled: true)));
    }

    [Fact]
    public void ASnapshotTakenInAProgressCallbackOnAnotherWorkerDoesNotWaitForThePass()
    {
        // Callbacks run on the pass's workers: one on the scanning thread (which holds the pass gate, and may take it
        // again), the others on pool threads, which would wait for the pass they are part of. The scanning thread's first
        // callback waits until another worker's callback has taken its snapshot.
        using var dir = new TempDir();
        var (host, _) = NewHost(dir);
        using var _host = host;
        using var foreignTook = new ManualResetEventSlim();
        int scanThread = 0;
        bool sawForeign = false;
        var scan = new Thread(() => host.Scan(options: new ScanOptions { Parallelism = 2, SliceSize = 4 }, progress: _ =>
        {
            if (Environment.CurrentManagedThreadId == scanThread)
            {
                sawForeign |= foreignTook.Wait(TimeSpan.FromMinutes(1)); // a bound for the failure only
                return;
            }
            if (foreignTook.IsSet) return;
            host.TakeSnapshot();
            foreignTook.Set();
        }));
        scanThread = scan.ManagedThreadId;
        scan.Start();
        scan.Join();
        Assert.True(sawForeign, "no snapshot was taken in a callback on another worker (it waited for the pass)");
    }
}
