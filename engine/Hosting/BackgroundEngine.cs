using System.Diagnostics;
using DifferenceEngine.Scanning;
using DifferenceEngine.Stats;
using Newtonsoft.Json;
using Newtonsoft.Json.Converters;

namespace DifferenceEngine.Hosting;

/// <summary>Whether a host's background engine runs.</summary>
[JsonConverter(typeof(StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum EngineState
{
    Stopped,
    Running,
    Stopping,
}

/// <summary>A snapshot of the background engine, as shown by Get-DEEngine.</summary>
public sealed record EngineStatus(
    string Host,
    EngineState State,
    TimeSpan Interval,
    DateTimeOffset? Started,
    long PassesRun,
    DateTimeOffset? LastPass,
    TimeSpan LastPassDuration,
    TimeSpan BusyTime,
    int Samples,
    string? LastError)
{
    /// <summary>CPU time (user + system) the engine's passes used since it started, measured per worker thread.</summary>
    public TimeSpan CpuTime { get; init; }

    /// <summary>When the engine stopped (Stop-DEEngine, Disconnect-DEHost); null while it runs and before it ever ran.</summary>
    public DateTimeOffset? Stopped { get; init; }

    /// <summary>
    /// When the pass that failed with <see cref="LastError"/> ended; null when no pass of this run failed. LastError is
    /// kept after later passes succeed (a failure now and then stays visible): a LastErrorTime before
    /// <see cref="LastPass"/> means passes have succeeded since.
    /// </summary>
    public DateTimeOffset? LastErrorTime { get; init; }
}

/// <summary>One point of the host's history: what the guests hold and what it costs, for reports over time.</summary>
public sealed record StatsSample(
    DateTimeOffset Time,
    long GuestBytes,
    long MemoryUsedBytes,
    long SavedBytes,
    long FramesInUse,
    long StoreAllocatedBytes,
    long SwapUsedBytes,
    long Faults,
    long ScanPasses)
{
    /// <summary>The sample of <paramref name="stats"/> taken at <paramref name="time"/>.</summary>
    public static StatsSample From(HostStats stats, DateTimeOffset time) =>
        new(time, stats.GuestBytes, stats.MemoryUsedBytes, stats.SavedBytes, stats.FramesInUse, stats.StoreAllocatedBytes,
            stats.SwapUsedBytes, stats.Faults.Sum(f => f.Count), stats.ScanPasses);
}

/// <summary>What a host gives its background engine: one pass over every domain, and a stats sample.</summary>
internal interface IEngineService
{
    string Name { get; }

    /// <summary>CPU time the host's engine passes have used so far.</summary>
    TimeSpan EngineCpuTime { get; }

    /// <returns>How long the pass waited for the JIT warm-up before it began (ScanResult.WarmUpWait): not busy time.</returns>
    TimeSpan RunEnginePass(CancellationToken cancellationToken);

    /// <summary>
    /// Records a sample after an engine pass, without waiting for another scan's pass (null then: the next pass records
    /// one), so that stopping the engine never waits for a scan it does not run.
    /// </summary>
    StatsSample? RecordSampleAfterPass();
}

/// <summary>
/// The engine as a service: a thread that runs one engine pass over every domain each interval (so
/// sweeps of the same memory are at least an interval apart, as in the paper), while guests keep
/// running, and records a stats sample after each pass. Stops within a pass's slice.
/// </summary>
internal sealed class BackgroundEngine : IDisposable
{
    public const int MaxSamples = 10_000;
    private readonly IEngineService _host;
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;
    private readonly object _gate = new();
    private long _passes;
    private long _busyTicks;
    private DateTimeOffset? _lastPass;
    private TimeSpan _lastDuration;
    private string? _lastError;
    private DateTimeOffset? _lastErrorTime;
    private volatile bool _stopping;
    private readonly TimeSpan _cpuAtStart;

    public BackgroundEngine(IEngineService host, TimeSpan interval)
    {
        _host = host;
        Interval = interval;
        Started = DateTimeOffset.Now;
        _cpuAtStart = host.EngineCpuTime;
        _thread = new Thread(Run) { IsBackground = true, Name = $"de-engine-{host.Name}" };
        _thread.Start();
    }

    public TimeSpan Interval { get; }
    public DateTimeOffset Started { get; }

    public EngineStatus Status(int samples)
    {
        lock (_gate)
            return new EngineStatus(_host.Name, _stopping ? EngineState.Stopping : EngineState.Running, Interval, Started,
                _passes, _lastPass, _lastDuration, Stopwatch.GetElapsedTime(0, _busyTicks), samples, _lastError)
            {
                CpuTime = _host.EngineCpuTime - _cpuAtStart,
                LastErrorTime = _lastErrorTime,
            };
    }

    private void Run()
    {
        var token = _stop.Token;
        long next = Stopwatch.GetTimestamp();
        while (!token.IsCancellationRequested)
        {
            try
            {
                long started = Stopwatch.GetTimestamp();
                var waited = _host.RunEnginePass(token);
                long ended = Stopwatch.GetTimestamp();
                // The first passes of a process may wait for the JIT warm-up: idle, so not busy time.
                started = Math.Min(ended, started + (long)(waited.TotalSeconds * Stopwatch.Frequency));
                lock (_gate)
                {
                    _passes++;
                    _busyTicks += ended - started;
                    _lastPass = DateTimeOffset.Now;
                    _lastDuration = Stopwatch.GetElapsedTime(started, ended);
                }
                _host.RecordSampleAfterPass();
            }
            catch (OperationCanceledException)
            {
                break;
            }
            catch (DEException ex) when (ex.ErrorId == "HostDisconnected")
            {
                break;
            }
            catch (Exception ex)
            {
                // A failing pass (a corrupt page, a QEMU guest that exited; or a bug: a domain removed meanwhile is
                // skipped, DEHost.Scan) is recorded, with its time, and the engine goes on: this thread runs in the admin's shell or the embedding program, and an
                // exception escaping it would end that process.
                lock (_gate)
                {
                    _lastError = ex is DEException de ? $"{de.ErrorId}: {de.Message}" : $"{ex.GetType().Name}: {ex.Message}";
                    _lastErrorTime = DateTimeOffset.Now;
                }
            }
            next += (long)(Interval.TotalSeconds * Stopwatch.Frequency);
            long wait = next - Stopwatch.GetTimestamp();
            if (wait > 0) token.WaitHandle.WaitOne(TimeSpan.FromSeconds((double)wait / Stopwatch.Frequency));
            else next = Stopwatch.GetTimestamp();
        }
    }

    /// <summary>From now on <see cref="Status"/> says Stopping (before <see cref="Dispose"/> waits for the pass).</summary>
    public void MarkStopping() => _stopping = true;

    /// <summary>Cancels the pass in progress and waits for the thread; returns within a slice of work.</summary>
    public void Dispose()
    {
        _stopping = true;
        _stop.Cancel();
        _thread.Join();
        _stop.Dispose();
    }
}
