using DifferenceEngine.Stats;

namespace DifferenceEngine.Tests.Engine;

/// <summary>The engine's CPU time is counted finely enough for a short pass (Get-DEEngine's CpuTime, EngineCpuTime).</summary>
public sealed class ThreadCpuTests
{
    [Fact]
    public void TheThreadsCpuTimeMovesInStepsFarBelowAMillisecond()
    {
        long first = ThreadCpu.NowTicks();
        long next = first;
        // Spin until the count moves: CPU time only grows while this thread runs, so the step seen is the clock's own
        // (a scheduler tick of 1-4 ms with getrusage on this kernel, nanoseconds with CLOCK_THREAD_CPUTIME_ID).
        while (next == first) next = ThreadCpu.NowTicks();
        Assert.True(next - first < TimeSpan.TicksPerMillisecond / 10, $"the thread's CPU time moved by {next - first} ticks at once");
    }
}
