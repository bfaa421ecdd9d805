using DifferenceEngine.Hosting;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Xen;

public sealed partial class XenHost
{
    private EngineControl? engineControl;

    private EngineControl EngineControl => LazyInitializer.EnsureInitialized(ref engineControl, () => new EngineControl(this, () => GetStats()));

    /// <summary>Starts the background engine: one pass over every treated domain each <paramref name="interval"/>, and a stats sample.</summary>
    public EngineStatus StartEngine(TimeSpan interval)
    {
        CheckConnected();
        return EngineControl.Start(interval);
    }

    /// <summary>Stops the background engine; its final status, or null when it was not running.</summary>
    public EngineStatus? StopEngine() => EngineControl.Stop(sample: !disposed);

    public EngineStatus EngineStatus => EngineControl.Status;

    public IReadOnlyList<StatsSample> History => EngineControl.History;

    public StatsSample RecordSample() => EngineControl.RecordSample();

    StatsSample? IEngineService.RecordSampleAfterPass() => EngineControl.TryRecordSample();
}
