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

    // PowerShell ends on SIGTERM and SIGHUP (a closed terminal, a dropped SSH session) without raising ProcessExit: the
    // hosts are disconnected first, then the signal does what it would have done. Kept here so they stay registered.
    private static readonly List<System.Runtime.InteropServices.PosixSignalRegistration> EndingSignals = [];

    static HostRegistry()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) => DisconnectAll();
        foreach (var signal in new[] { System.Runtime.InteropServices.PosixSignal.SIGTERM, System.Runtime.InteropServices.PosixSignal.SIGHUP })
        {
            try
            {
                EndingSignals.Add(System.Runtime.InteropServices.PosixSignalRegistration.Create(signal, _ => DisconnectAll()));
            }
            catch (PlatformNotSupportedException)
            {
                // Not on this platform: ProcessExit is then the only hook.
            }
        }
    }

    /// <summary>
    /// Disconnects every host still connected, the newest first; nothing is written (the process is ending). A host whose
    /// disconnect fails is left as it is: a QEMU guest then waits for the next engine, which serves it from the journal.
    /// </summary>
    internal static void DisconnectAll()
    {
        IDEHost[] hosts;
        lock (Gate)
        {
            hosts = [.. ConnectedHosts];
            ConnectedHosts.Clear();
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
        lock (Gate) ConnectedHosts.Remove(host);
        host.Dispose();
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
