using DifferenceEngine.Stats;

namespace DifferenceEngine.Hosting;

/// <summary>
/// A host's background engine and its stats history, the same for every kind of host: start, stop, status, samples.
/// </summary>
internal sealed class EngineControl
{
    private readonly IEngineService _host;
    private readonly Func<HostStats> _stats;
    private readonly Func<HostStats?> _statsNow;
    private readonly object _gate = new();
    private readonly Queue<StatsSample> _history = new();
    private BackgroundEngine? _engine;
    private BackgroundEngine? _stoppingEngine; // stopped by Stop and still ending its pass: Status says Stopping
    private EngineStatus? _lastRun;
    private bool _closed; // the host is being disconnected: no engine starts any more

    /// <param name="statsNow">
    /// The stats for the sample a stop records, or null when they cannot be had at once (another scan's pass is in
    /// progress: the stop does not wait for it, and records no sample); <paramref name="stats"/> when not given.
    /// </param>
    public EngineControl(IEngineService host, Func<HostStats> stats, Func<HostStats?>? statsNow = null)
    {
        _host = host;
        _stats = stats;
        _statsNow = statsNow ?? stats;
    }

    /// <summary>"EngineIntervalInvalid" unless <paramref name="interval"/> is 100 ms to 24 h (Start-DEEngine checks it before it asks to go on).</summary>
    public static void CheckInterval(TimeSpan interval)
    {
        if (interval < TimeSpan.FromMilliseconds(100) || interval > TimeSpan.FromHours(24))
            throw new DEException("EngineIntervalInvalid", DEErrorKind.InvalidArgument,
                $"The engine's interval must be between 100 ms and 24 h; {interval} was given.", interval);
    }

    public EngineStatus Start(TimeSpan interval)
    {
        CheckInterval(interval);
        lock (_gate)
        {
            if (_closed) throw DEHost.HostDisconnected(_host.Name);
            if (_engine is not null)
                throw new DEException("EngineAlreadyRunning", DEErrorKind.InvalidOperation,
                    $"The engine of host '{_host.Name}' is already running, a pass every {_engine.Interval.TotalSeconds.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture)} s; " +
                    "Stop-DEEngine first to start it with another interval.", _host.Name);
            if (_stoppingEngine is not null)
                throw new DEException("EngineAlreadyRunning", DEErrorKind.InvalidOperation,
                    $"The engine of host '{_host.Name}' is still stopping (its pass is ending); start it again when Stop-DEEngine has returned.",
                    _host.Name);
            TryRecordSample(); // the history's first point, unless a scan's pass is in progress (the engine's first pass records one)
            _engine = new BackgroundEngine(_host, interval);
            return _engine.Status(HistoryCount);
        }
    }

    /// <summary>
    /// For the host's disconnection: no engine starts from now on (HostDisconnected), and the one running is stopped. A
    /// Start-DEEngine racing the disconnection either started before (and is stopped here) or is refused.
    /// </summary>
    public void Close(bool sample)
    {
        lock (_gate) _closed = true;
        Stop(sample);
    }

    /// <summary>Stops the engine and returns its final status; null when it was not running.</summary>
    public EngineStatus? Stop(bool sample)
    {
        BackgroundEngine? engine;
        lock (_gate)
        {
            engine = _engine;
            _engine = null;
            if (engine is null) return null;
            engine.MarkStopping();
            _stoppingEngine = engine;
        }
        EngineStatus final;
        try
        {
            engine.Dispose();
        }
        finally
        {
            final = engine.Status(HistoryCount) with { State = EngineState.Stopped, Stopped = DateTimeOffset.Now };
            lock (_gate)
            {
                _lastRun = final;
                _stoppingEngine = null;
            }
        }
        if (sample) TryRecordSample();
        return final;
    }

    public EngineStatus Status
    {
        get
        {
            lock (_gate)
                return _engine?.Status(HistoryCount)
                       ?? _stoppingEngine?.Status(HistoryCount)
                       ?? (_lastRun is { } last ? last with { Samples = HistoryCount } : null)
                       ?? new EngineStatus(_host.Name, EngineState.Stopped, TimeSpan.Zero, null, 0, null, TimeSpan.Zero, TimeSpan.Zero, HistoryCount, null);
        }
    }

    public IReadOnlyList<StatsSample> History
    {
        get { lock (_history) return _history.ToArray(); }
    }

    private int HistoryCount
    {
        get { lock (_history) return _history.Count; }
    }

    public StatsSample RecordSample() => Record(StatsSample.From(_stats(), DateTimeOffset.Now));

    /// <summary>A sample now, or null (none recorded) when the stats cannot be had without waiting for a pass.</summary>
    public StatsSample? TryRecordSample() => _statsNow() is { } now ? Record(StatsSample.From(now, DateTimeOffset.Now)) : null;

    private StatsSample Record(StatsSample sample)
    {
        lock (_history)
        {
            _history.Enqueue(sample);
            while (_history.Count > BackgroundEngine.MaxSamples) _history.Dequeue();
        }
        return sample;
    }
}
