namespace DifferenceEngine.Hosting;

/// <summary>
/// Runs a caller's callback (a scan's or a load's progress) marked as running inside a call of its host, so that the
/// host's Dispose, called from there, fails at once instead of waiting for the very call that waits for the callback.
/// </summary>
internal static class HostCallbacks
{
    [ThreadStatic] private static object? t_host;

    /// <summary>Calls <paramref name="callback"/> (when there is one) with <paramref name="value"/>, marked as <paramref name="host"/>'s.</summary>
    public static void Invoke<T>(object host, Action<T>? callback, T value)
    {
        if (callback is null) return;
        var outer = t_host;
        t_host = host;
        try
        {
            callback(value);
        }
        finally
        {
            t_host = outer;
        }
    }

    /// <summary>Whether this thread is running a callback of <paramref name="host"/>'s (a scan's or a load's progress).</summary>
    public static bool InCallbackOf(object host) => ReferenceEquals(t_host, host);

    /// <summary>
    /// Throws "CalledFromCallback" (InvalidOperation) when this thread is running a callback of <paramref name="host"/>'s:
    /// <paramref name="what"/> ("dispose of the host", "scan", "change a domain's trust group") waits for the host's scans,
    /// so done there it would wait forever for the call the callback is part of (on the call's own thread it would get in,
    /// the scan lock being its own: refused there too, so that the outcome does not depend on the thread a callback runs on).
    /// </summary>
    public static void ThrowIfInCallbackOf(object host, string hostName, string what)
    {
        if (ReferenceEquals(t_host, host))
            throw new DEException("CalledFromCallback", DEErrorKind.InvalidOperation,
                $"Cannot {what} from within a callback of host '{hostName}''s own call (a scan's or a load's progress): the call " +
                $"waits for the callback, and this would wait for the call. Cancel the call's token in the callback, and " +
                $"{what} once the call has returned.", hostName);
    }
}
