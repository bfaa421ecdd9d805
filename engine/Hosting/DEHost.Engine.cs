using DifferenceEngine.Stats;

namespace DifferenceEngine.Hosting;

public sealed partial class DEHost
{
    private EngineControl? _engineControl;

    private EngineControl EngineControl => LazyInitializer.EnsureInitialized(ref _engineControl, () => new EngineControl(this, () => GetStats(), () => TryTakeSnapshot()?.Host));

    /// <summary>"EngineIntervalInvalid" unless <paramref name="interval"/> is 100 ms to 24 h, the range every host's engine takes.</summary>
    public static void CheckEngineInterval(TimeSpan interval) => EngineControl.CheckInterval(interval);

    /// <summary>
    /// Starts the background engine: one pass over all domains every <paramref name="interval"/> (at
    /// least 100 ms), and a stats sample after each pass. Fails with "EngineAlreadyRunning" if it runs.
    /// </summary>
    public EngineStatus StartEngine(TimeSpan interval)
    {
        using var op = EnterOperation();
        return EngineControl.Start(interval);
    }

    /// <summary>
    /// Stops the background engine (cancelling a pass in progress) and returns its final status, which
    /// <see cref="EngineStatus"/> keeps showing (as Stopped) until the next start; null when it was not running.
    /// </summary>
    public EngineStatus? StopEngine() => EngineControl.Stop(sample: !_disposed);

    /// <summary>The background engine's state, passes, last pass and busy time.</summary>
    public EngineStatus EngineStatus => EngineControl.Status;

    /// <summary>Stats samples taken by the engine (oldest first), at most <see cref="BackgroundEngine.MaxSamples"/>.</summary>
    public IReadOnlyList<StatsSample> History => EngineControl.History;

    TimeSpan IEngineService.RunEnginePass(CancellationToken cancellationToken) =>
        Scan(options: new Scanning.ScanOptions { Passes = 1 }, cancellationToken: cancellationToken).WarmUpWait;

    /// <summary>Adds a sample of the host's stats now (the engine does after every pass).</summary>
    public StatsSample RecordSample() => EngineControl.RecordSample();

    StatsSample? IEngineService.RecordSampleAfterPass() => EngineControl.TryRecordSample();
}
