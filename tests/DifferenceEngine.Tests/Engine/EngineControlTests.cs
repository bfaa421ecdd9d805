using DifferenceEngine.Hosting;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// The background engine's states as Get-DEEngine shows them: Running, then Stopping while Stop-DEEngine waits for the
/// pass in progress to end, then Stopped. A fake host holds its pass until the test lets it go, so the Stopping state
/// lasts as long as the test needs it, whatever the machine's pace.
/// </summary>
public class EngineControlTests
{
    private sealed class HeldPassHost : IEngineService
    {
        public readonly ManualResetEventSlim PassEntered = new();
        public readonly ManualResetEventSlim ReleasePass = new();
        public string Name => "held";
        public TimeSpan EngineCpuTime => TimeSpan.Zero;

        public TimeSpan RunEnginePass(CancellationToken cancellationToken)
        {
            PassEntered.Set();
            ReleasePass.Wait(); // a pass that ends only when let go, cancelled or not
            cancellationToken.ThrowIfCancellationRequested();
            return TimeSpan.Zero;
        }

        public StatsSample? RecordSampleAfterPass() => new(DateTimeOffset.Now, 0, 0, 0, 0, 0, 0, 0, 0);
    }

    private static HostStats NoGuests() => new("held", 0, null, 0, 0, 0, 0, 0, 0, 0, [], []);

    [Fact]
    public async Task AnEngineWhosePassIsEndingShowsStoppingThenStopped()
    {
        var host = new HeldPassHost();
        var control = new EngineControl(host, NoGuests);
        Assert.Equal(EngineState.Stopped, control.Status.State);
        var running = control.Start(TimeSpan.FromSeconds(1));
        Assert.Equal(EngineState.Running, running.State);
        Assert.Null(running.Stopped);
        Assert.True(host.PassEntered.Wait(TimeSpan.FromMinutes(1)), "the engine's first pass never began");

        var stop = Task.Run(() => control.Stop(sample: false));
        // Stop marks the engine before it waits for the pass; the pass is held, so the state can only be Stopping now.
        SpinWait.SpinUntil(() => control.Status.State != EngineState.Running || stop.IsCompleted, TimeSpan.FromMinutes(1));
        Assert.False(stop.IsCompleted, "Stop returned while its engine's pass was held");
        Assert.Equal(EngineState.Stopping, control.Status.State);
        var ex = Assert.Throws<DEException>(() => control.Start(TimeSpan.FromSeconds(1)));
        Assert.Equal("EngineAlreadyRunning", ex.ErrorId);
        Assert.Contains("still stopping", ex.Message);

        host.ReleasePass.Set();
        var final = await stop.WaitAsync(TimeSpan.FromMinutes(1));
        Assert.NotNull(final);
        Assert.Equal(EngineState.Stopped, final!.State);
        Assert.NotNull(final.Stopped);
        Assert.True(final.Stopped >= final.Started);
        Assert.Equal(EngineState.Stopped, control.Status.State);

        // Stopped for good: it starts again.
        host.PassEntered.Reset();
        Assert.Equal(EngineState.Running, control.Start(TimeSpan.FromSeconds(1)).State);
        Assert.Equal(EngineState.Stopped, control.Stop(sample: false)!.State);
    }
}
