namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// A background loop (engine passes, sharing passes) on a thread of its own, that threads racing it pace themselves by:
/// every so many operations a racing thread waits until the loop has finished one more pass. How many passes run under
/// the racing threads' feet is then a count the test sets, not whatever the machine's scheduling gave in some time, and
/// the racing threads do a fixed number of operations however slow the loop is.
/// </summary>
internal sealed class RacingLoop
{
    private readonly object gate = new();
    private readonly CancellationTokenSource stop = new();
    private readonly Task task;
    private long passes;
    private bool ended;

    private RacingLoop(Action pass)
    {
        task = Task.Factory.StartNew(() => Run(pass), TaskCreationOptions.LongRunning);
    }

    /// <summary>Starts running <paramref name="pass"/> over and over until <see cref="StopAsync"/>.</summary>
    public static RacingLoop Start(Action pass) => new(pass);

    /// <summary>Passes finished so far.</summary>
    public long Passes
    {
        get
        {
            lock (gate)
            {
                return passes;
            }
        }
    }

    /// <summary>
    /// Called by a racing thread before its operation <paramref name="op"/> (counted from 0 when the race began): at every
    /// <paramref name="burst"/>-th operation it waits until the loop has finished op / burst passes. A loop that ended
    /// (it failed: <see cref="StopAsync"/> rethrows why) holds no one up.
    /// </summary>
    public void Pace(int op, int burst)
    {
        if (op == 0 || op % burst != 0)
        {
            return;
        }
        lock (gate)
        {
            while (passes < op / burst && !ended)
            {
                Monitor.Wait(gate);
            }
        }
    }

    /// <summary>Stops the loop after its current pass and waits for it; rethrows what it failed with.</summary>
    public async Task StopAsync()
    {
        stop.Cancel();
        try
        {
            await task;
        }
        finally
        {
            stop.Dispose();
        }
    }

    private void Run(Action pass)
    {
        try
        {
            while (!stop.IsCancellationRequested)
            {
                pass();
                lock (gate)
                {
                    passes++;
                    Monitor.PulseAll(gate);
                }
            }
        }
        finally
        {
            lock (gate)
            {
                ended = true;
                Monitor.PulseAll(gate);
            }
        }
    }
}
