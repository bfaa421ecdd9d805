namespace DifferenceEngine.Scanning;

/// <summary>
/// A host's pass gate: each engine pass holds it alone (<see cref="AsPass{T}"/>, inside the host's scan lock, which a scan
/// holds through all its passes), and what must not race a pass takes it between two passes (<see cref="Enter"/>):
/// a snapshot or an embedded host's policy change shared with others, a Xen host's change exclusively. So they wait for the
/// pass in progress, if any, never for the rest of its scan, and the scan's next pass sees them; a cancellable wait ends
/// on its token. Both hosts use it (the embedded host since session 28, Xen since session 35).
/// </summary>
internal sealed class PassGate
{
    private readonly ReaderWriterLockSlim _gate = new(LockRecursionPolicy.SupportsRecursion);
    // Callers waiting for the gate, counted from before they ask: the next pass lets them in first.
    private int _waiters;

    private static readonly TimeSpan Slice = TimeSpan.FromMilliseconds(20);

    /// <summary>Runs <paramref name="pass"/> as the host's pass in progress (the gate held alone).</summary>
    public T AsPass<T>(Func<T> pass)
    {
        // Callers waiting for the last pass go first: between a scan's passes the gate is free for an instant only, and this
        // thread would otherwise take it again before they wake (they would wait for the whole scan). No pass holds the gate
        // here (passes run one at a time, under the scan lock): they take it at once.
        var spin = new SpinWait();
        while (Volatile.Read(ref _waiters) > 0) spin.SpinOnce();
        _gate.EnterWriteLock();
        try
        {
            return pass();
        }
        finally
        {
            _gate.ExitWriteLock();
        }
    }

    /// <summary>
    /// Takes the gate between two passes: once the pass in progress, if any, has ended (not the rest of its scan); with
    /// <paramref name="exclusive"/> also once every other holder has left, and alone. A cancellable wait checks
    /// <paramref name="cancellationToken"/> every 20 ms (the gate has no wait on a token) and throws
    /// OperationCanceledException without the gate. The caller leaves with <see cref="Exit"/>, giving the same
    /// <paramref name="exclusive"/>.
    /// </summary>
    public void Enter(bool exclusive = false, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Interlocked.Increment(ref _waiters);
        try
        {
            if (!cancellationToken.CanBeCanceled)
            {
                if (exclusive) _gate.EnterWriteLock();
                else _gate.EnterReadLock();
            }
            else
            {
                while (!(exclusive ? _gate.TryEnterWriteLock(Slice) : _gate.TryEnterReadLock(Slice)))
                    cancellationToken.ThrowIfCancellationRequested();
            }
        }
        finally
        {
            Interlocked.Decrement(ref _waiters);
        }
    }

    /// <summary>Callers waiting for the gate now (tests: a change known to wait before the next pass begins).</summary>
    internal int Waiters => Volatile.Read(ref _waiters);

    /// <summary>Takes the gate, shared, only if no pass holds it or waits for it now.</summary>
    public bool TryEnter() => _gate.TryEnterReadLock(0);

    /// <summary>Leaves the gate taken with <see cref="Enter"/> or <see cref="TryEnter"/>.</summary>
    public void Exit(bool exclusive = false)
    {
        if (exclusive) _gate.ExitWriteLock();
        else _gate.ExitReadLock();
    }

    /// <summary>Waits for the pass in progress, if any, to end (not for the rest of its scan).</summary>
    public void WaitForPassInProgress()
    {
        Enter();
        Exit();
    }
}
