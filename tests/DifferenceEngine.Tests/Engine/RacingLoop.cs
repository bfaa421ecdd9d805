namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// A background loop (engine passes, sharing passes) on a thread of its own, that threads racing it pace themselves by:
/// every so many operations a racing thread waits until the loop has finished one more pass. How many passes run under
/// the racing threads' feet is then a count the test sets, not whatever the machine's scheduling gave in some time, and
/// the racing threads do a fixed number of operations however slow the loop is.
/// </summary>
internal sealed class RacingLoop
{
    private static readonly TimeSpan HungPass = TimeSpan.FromMinutes(2);
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
                // Only a bound that turns a hung loop into a failure: a pass takes milliseconds to seconds here.
                if (!Monitor.Wait(gate, HungPass))
                {
                    throw new TimeoutException(
                        $"The racing loop finished no pass in {HungPass.TotalMinutes} minutes: {passes} passes, operation {op} waits for {op / burst}.");
                }
            }
        }
    }

    /// <summary>
    /// Starts <paramref name="threads"/> guests, each on a thread of its own (on a loaded machine the thread pool may
    /// start tasks long after each other), each calling <paramref name="operation"/>(its index, a page buffer of its own)
    /// while <paramref name="goOn"/>(its index) holds, paced by <paramref name="race"/> every <paramref name="burst"/>
    /// operations when given.
    /// </summary>
    public static Task[] StartGuests(int threads, Func<int, bool> goOn, Action<int, byte[]> operation, RacingLoop? race = null,
        int burst = 1) =>
        Enumerable.Range(0, threads).Select(t => Task.Factory.StartNew(() =>
        {
            var buffer = new byte[4096];
            for (int op = 0; goOn(t); op++)
            {
                race?.Pace(op, burst);
                operation(t, buffer);
            }
        }, TaskCreationOptions.LongRunning)).ToArray();

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
