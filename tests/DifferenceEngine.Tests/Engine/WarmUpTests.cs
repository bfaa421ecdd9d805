using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// The JIT warm-up a host starts (docs/ARCHITECTURE.md, "JIT warm-up") and the wait for it before a scan's first pass:
/// it ends (on its own measure, or after ten seconds at the latest), and from then on no scan waits.
/// </summary>
public class WarmUpTests
{
    [Fact]
    public void OnceTheWarmUpHasEndedScansDoNotWaitAndTheirPassesAreAsWithoutIt()
    {
        using var host = new DEHost(new HostOptions());
        // The warm-up started with the first host of this process; it ends by itself, in ten seconds at the latest
        // (then scans stop waiting for it even if it goes on): a wait longer than that would mean it never signals.
        JitWarmup.WaitUntilWarm(TimeSpan.FromSeconds(30));
        Assert.True(JitWarmup.IsWarm, "the warm-up never let scans go");
        Assert.Equal(TimeSpan.Zero, JitWarmup.WaitUntilWarm(JitWarmup.MaxScanWait));

        var rng = new Random(28);
        var page = TestMemory.RandomPage(rng);
        var d = host.CreateDomain("d", 64 * 4096L, new DomainOptions { SharingEnabled = true });
        for (int g = 0; g < 64; g++) d.WritePage(g, g % 2 == 0 ? page : TestMemory.RandomPage(rng));
        var scan = host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(TimeSpan.Zero, scan.WarmUpWait);
        Assert.True(scan.Stable);
        Assert.Equal(32, scan.PagesMerged); // the 32 copies now share one frame
        Assert.Equal(31, scan.FramesFreed);
    }

    [Fact]
    public void TheWaitEndsAtOnceOnASignalAlreadyGivenAndOnACancelledScan()
    {
        using var given = new ManualResetEventSlim(true);
        Assert.Equal(TimeSpan.Zero, JitWarmup.WaitFor(given, TimeSpan.FromMinutes(10), CancellationToken.None));
        // Not given, and the scan cancelled: the wait ends with the cancellation, whatever its limit.
        using var pending = new ManualResetEventSlim(false);
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => JitWarmup.WaitFor(pending, TimeSpan.FromMinutes(10), cancelled.Token));
        // Not given and not cancelled: it waits out its limit (here none) and says how long it waited.
        Assert.True(JitWarmup.WaitFor(pending, TimeSpan.Zero, CancellationToken.None) >= TimeSpan.Zero);
    }
}
