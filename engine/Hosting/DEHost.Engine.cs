namespace DifferenceEngine.Hosting;

public sealed partial class DEHost
{
    private readonly object _engineGate = new();
    private BackgroundEngine? _engine;
    private EngineStatus? _lastRun;
    private readonly Queue<StatsSample> _history = new();

    /// <summary>
    /// Starts the background engine: one pass over all domains every <paramref name="interval"/> (at
    /// least 100 ms), and a stats sample after each pass. Fails with "EngineAlreadyRunning" if it runs.
    /// </summary>
    public EngineStatus StartEngine(TimeSpan interval)
    {
        using var op = EnterOperation();
        if (interval < TimeSpan.FromMilliseconds(100) || interval > TimeSpan.FromHours(24))
            throw new DEException("EngineIntervalInvalid", DEErrorKind.InvalidArgument,
                $"The engine's interval must be between 100 ms and 24 h; {interval} was given.", interval);
        lock (_engineGate)
        {
            if (_engine is not null)
                throw new DEException("EngineAlreadyRunning", DEErrorKind.InvalidOperation,
                    $"The engine of host '{Name}' is already running (interval {_engine.Interval}).", Name);
            RecordSample();
            _engine = new BackgroundEngine(this, interval);
            return _engine.Status(HistoryCount);
        }
    }

    /// <summary>
    /// Stops the background engine (cancelling a pass in progress) and returns its final status, which
    /// <see cref="EngineStatus"/> keeps showing (as Stopped) until the next start; null when it was not running.
    /// </summary>
    public EngineStatus? StopEngine()
    {
        BackgroundEngine? engine;
        lock (_engineGate)
        {
            engine = _engine;
            _engine = null;
        }
        if (engine is null) return null;
        engine.Dispose();
        var final = engine.Status(HistoryCount) with { State = EngineState.Stopped };
        lock (_engineGate) _lastRun = final;
        if (!_disposed) RecordSample();
        return final;
    }

    /// <summary>The background engine's state, passes, last pass and busy time.</summary>
    public EngineStatus EngineStatus
    {
        get
        {
            lock (_engineGate)
                return _engine?.Status(HistoryCount)
                       ?? (_lastRun is { } last ? last with { Samples = HistoryCount } : null)
                       ?? new EngineStatus(Name, EngineState.Stopped, TimeSpan.Zero, null, 0, null, TimeSpan.Zero, TimeSpan.Zero, HistoryCount, null);
        }
    }

    /// <summary>Stats samples taken by the engine (oldest first), at most <see cref="BackgroundEngine.MaxSamples"/>.</summary>
    public IReadOnlyList<StatsSample> History
    {
        get { lock (_history) return _history.ToArray(); }
    }

    private int HistoryCount
    {
        get { lock (_history) return _history.Count; }
    }

    /// <summary>Adds a sample of the host's stats now (the engine does after every pass).</summary>
    public StatsSample RecordSample()
    {
        var s = GetStats();
        var sample = new StatsSample(DateTimeOffset.Now, s.GuestBytes, s.MemoryUsedBytes, s.SavedBytes, s.FramesInUse,
            s.StoreAllocatedBytes, s.SwapUsedBytes, s.Faults.Sum(f => f.Count), s.ScanPasses);
        lock (_history)
        {
            _history.Enqueue(sample);
            while (_history.Count > BackgroundEngine.MaxSamples) _history.Dequeue();
        }
        return sample;
    }
}
