using DifferenceEngine.Bench.Peers;

namespace DifferenceEngine.Tests.Bench;

/// <summary>
/// Compare's restore of the kernel's KSM and zram (bench/Peers/RestoreSteps.cs), with steps that only record or throw:
/// no real knob is touched.
/// </summary>
public class RestoreStepsTests
{
    [Fact]
    public void EveryStepRunsWhenAnEarlierOneFails()
    {
        // As zram's restore after a setup that failed before swapon: swapoff fails, reset and the codec must still run.
        var ran = new List<string>();
        var errors = new StringWriter();
        var failed = RestoreSteps.Run("zram swap", errors,
            ("swapoff /dev/zram0", () => throw new InvalidOperationException("swapoff failed (255): Invalid argument")),
            ("reset zram0", () => ran.Add("reset")),
            ("restore comp_algorithm=lzo-rle", () => ran.Add("comp_algorithm")));
        Assert.Equal(["reset", "comp_algorithm"], ran);
        Assert.Equal(["swapoff /dev/zram0"], failed);
        Assert.Contains("zram swap: could not swapoff /dev/zram0: swapoff failed (255): Invalid argument", errors.ToString());
    }

    [Fact]
    public void EveryFailureIsReportedAndNoneStopsTheRest()
    {
        var ran = new List<string>();
        var errors = new StringWriter();
        var failed = RestoreSteps.Run("KSM", errors,
            ("unmerge (run=2)", () => throw new IOException("Device or resource busy")),
            ("stop (run=0)", () => ran.Add("run=0")),
            ("restore pages_to_scan=100", () => throw new UnauthorizedAccessException("denied")),
            ("restore sleep_millisecs=20", () => ran.Add("sleep")));
        Assert.Equal(["run=0", "sleep"], ran);
        Assert.Equal(["unmerge (run=2)", "restore pages_to_scan=100"], failed);
        Assert.Equal(2, errors.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [Fact]
    public void AFailedSetUpRestoresAtOnceAndRethrows()
    {
        // As ZramSwap's constructor when mkswap fails: the registered restore runs before the exception leaves.
        var guard = new Recorder();
        var e = Assert.Throws<InvalidOperationException>(() =>
            RestoreSteps.SetUpOrRestore(guard, () => throw new InvalidOperationException("mkswap /dev/zram0 failed (1)")));
        Assert.Equal("mkswap /dev/zram0 failed (1)", e.Message);
        Assert.Equal(1, guard.Disposed);
    }

    [Fact]
    public void ASetUpThatSucceedsLeavesTheRestoreForLater()
    {
        var guard = new Recorder();
        bool done = false;
        RestoreSteps.SetUpOrRestore(guard, () => done = true);
        Assert.True(done);
        Assert.Equal(0, guard.Disposed);
    }

    private sealed class Recorder : IDisposable
    {
        public int Disposed { get; private set; }
        public void Dispose() => Disposed++;
    }

    /// <summary>Restores that fail say so to the caller once every step has run: the comparison does not go on.</summary>
    [Fact]
    public void TheRestoreThrowsOnceEveryStepHasRunWhenOneFailed()
    {
        var ran = new List<string>();
        var e = Assert.Throws<InvalidOperationException>(() => RestoreSteps.Run("zram",
            ("reset zram0", () => { ran.Add("reset"); throw new IOException("Device or resource busy"); }),
            ("restore comp_algorithm=lzo-rle", () => ran.Add("algorithm"))));
        Assert.Equal(["reset", "algorithm"], ran);
        Assert.Contains("reset zram0", e.Message);
    }
}
