using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// The hosts connected in this process (embedded hosts and the local Xen) and the one connected last, which
/// every cmdlet uses unless given -DEHost. Process-wide on purpose: runspaces of one process share the hosts.
/// When the process ends (the shell's exit, SIGTERM, SIGHUP), hosts still connected are disconnected as by
/// Disconnect-DEHost: QEMU guests get their pages back and Xen's pager loads its pages back into the guests, rather
/// than waiting for the next engine.
/// </summary>
public static class HostRegistry
{
    private static readonly object Gate = new();
    private static readonly List<IDEHost> ConnectedHosts = [];

    // PowerShell ends on SIGTERM and SIGHUP (a closed terminal, a dropped SSH session) without raising ProcessExit (seen:
    // a ProcessExit handler in pwsh did not run on either): the hosts are disconnected first, then the signal does what
    // it would have done. Kept here so they stay registered.
    private static readonly List<System.Runtime.InteropServices.PosixSignalRegistration> EndingSignals = [];

    // Disconnects under way (Disconnect-DEHost on some thread): the process's end waits for them too, or it would cut
    // one short (a Xen pager half-way through loading its pages back).
    private static readonly List<Task> Disconnecting = [];

    // The one disconnect of everything at the process's end, whichever of ProcessExit and the signals comes first (a
    // second SIGTERM waits for the same one).
    private static Task? _ending;

    /// <summary>How long the process's end waits for its hosts to be disconnected; past it the process ends all the same.</summary>
    internal static readonly TimeSpan EndingPatience = TimeSpan.FromSeconds(30);

    static HostRegistry()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) => DisconnectAllAtEnd();
        foreach (var signal in new[] { System.Runtime.InteropServices.PosixSignal.SIGTERM, System.Runtime.InteropServices.PosixSignal.SIGHUP })
        {
            try
            {
                EndingSignals.Add(System.Runtime.InteropServices.PosixSignalRegistration.Create(signal, _ => DisconnectAllAtEnd()));
            }
            catch (Exception e) when (e is PlatformNotSupportedException or IOException)
            {
                // Not on this platform: ProcessExit is then the only hook.
            }
        }
    }

    /// <summary>
    /// At the process's end: disconnects every host still connected (once, however many times it is called) and waits
    /// for that and for any disconnect under way, at most <see cref="EndingPatience"/>: a host that cannot be
    /// disconnected in that time (a QEMU that does not answer) must not keep the shell from exiting. A QEMU guest whose
    /// pages were not handed back then waits for the next engine, which serves them from its crash journal.
    /// </summary>
    private static void DisconnectAllAtEnd()
    {
        Task ending;
        lock (Gate) ending = _ending ??= Task.Run(DisconnectAll);
        try
        {
            ending.Wait(EndingPatience);
        }
        catch (AggregateException)
        {
            // DisconnectAll reports nothing; nothing to report to at exit.
        }
    }

    /// <summary>
    /// Disconnects every host still connected, the newest first, then waits for the disconnects under way; nothing is
    /// written (the process is ending). A host whose disconnect fails is left as it is.
    /// </summary>
    internal static void DisconnectAll()
    {
        IDEHost[] hosts;
        Task[] underWay;
        lock (Gate)
        {
            hosts = [.. ConnectedHosts];
            ConnectedHosts.Clear();
            underWay = [.. Disconnecting];
        }
        for (int i = hosts.Length - 1; i >= 0; i--)
        {
            try
            {
                hosts[i].Dispose();
            }
            catch (Exception)
            {
                // Nowhere to report it at exit; the next host is still disconnected.
            }
        }
        Task.WaitAll(underWay);
    }

    /// <summary>The host connected last that is still connected; null when none is.</summary>
    public static IDEHost? Current
    {
        get
        {
            lock (Gate)
            {
                ConnectedHosts.RemoveAll(h => !h.IsConnected);
                return ConnectedHosts.Count == 0 ? null : ConnectedHosts[^1];
            }
        }
    }

    /// <summary>Every connected host, in the order they were connected.</summary>
    public static IReadOnlyList<IDEHost> Hosts
    {
        get
        {
            lock (Gate)
            {
                ConnectedHosts.RemoveAll(h => !h.IsConnected);
                return ConnectedHosts.ToArray();
            }
        }
    }

    /// <summary>The connected host named <paramref name="name"/> (ignoring case); null when none is.</summary>
    public static IDEHost? Find(string name) =>
        Hosts.FirstOrDefault(h => string.Equals(h.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// Fails with "HostExists" when a connected host already has <paramref name="name"/>, or, for a Xen host
    /// (<paramref name="xen"/>), when the local Xen is connected already: one connection to it per process, since a
    /// domain can have one pager only.
    /// </summary>
    internal static void CheckFree(string name, bool xen)
    {
        lock (Gate)
        {
            ConnectedHosts.RemoveAll(h => !h.IsConnected);
            CheckFreeLocked(name, xen);
        }
    }

    /// <summary>Adds a host and makes it current; fails when a connected host already has its name.</summary>
    internal static void Add(IDEHost host)
    {
        lock (Gate)
        {
            ConnectedHosts.RemoveAll(h => !h.IsConnected);
            CheckFreeLocked(host.Name, host is XenHost);
            ConnectedHosts.Add(host);
        }
    }

    /// <summary>
    /// Forgets a host (the one connected before it becomes current again) and disconnects it. A Xen host loads every
    /// page its pager holds back into the guests first; an error doing so is thrown after the host is forgotten.
    /// </summary>
    internal static void Remove(IDEHost host)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (Gate)
        {
            ConnectedHosts.Remove(host);
            Disconnecting.Add(done.Task);
        }
        try
        {
            host.Dispose();
        }
        finally
        {
            lock (Gate) Disconnecting.Remove(done.Task);
            done.SetResult();
        }
    }

    private static void CheckFreeLocked(string name, bool xen)
    {
        if (ConnectedHosts.FirstOrDefault(h => string.Equals(h.Name, name, StringComparison.OrdinalIgnoreCase)) is { } named)
            throw new DEException("HostExists", DEErrorKind.ResourceExists,
                $"A host named '{named.Name}' is already connected. Disconnect it first or choose another -Name.", name);
        if (xen && ConnectedHosts.OfType<XenHost>().FirstOrDefault() is { } other)
            throw new DEException("HostExists", DEErrorKind.ResourceExists,
                $"The local Xen is already connected as host '{other.Name}': one connection per process, since each domain " +
                "has one pager. Use that host (Get-DEHost), or disconnect it first.", name);
    }
}
