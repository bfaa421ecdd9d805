using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// The hosts connected in this process (embedded hosts and the local Xen) and the one connected last, which
/// every cmdlet uses unless given -DEHost. Process-wide on purpose: runspaces of one process share the hosts.
/// </summary>
public static class HostRegistry
{
    private static readonly object Gate = new();
    private static readonly List<IDEHost> ConnectedHosts = [];

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
