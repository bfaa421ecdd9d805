using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>
/// The hosts connected in this process and the one connected last, which every cmdlet uses unless
/// given -DEHost. Process-wide on purpose: runspaces of one process share the embedded hosts.
/// </summary>
public static class HostRegistry
{
    private static readonly object Gate = new();
    private static readonly List<DEHost> ConnectedHosts = [];

    /// <summary>The host connected last that is still connected; null when none is.</summary>
    public static DEHost? Current
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
    public static IReadOnlyList<DEHost> Hosts
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

    /// <summary>Adds a host and makes it current; fails when a connected host already has its name.</summary>
    internal static void Add(DEHost host)
    {
        lock (Gate)
        {
            ConnectedHosts.RemoveAll(h => !h.IsConnected);
            if (ConnectedHosts.Any(h => string.Equals(h.Name, host.Name, StringComparison.OrdinalIgnoreCase)))
                throw new DEException("HostExists", DEErrorKind.ResourceExists,
                    $"A host named '{host.Name}' is already connected. Disconnect it first or choose another -Name.", host.Name);
            ConnectedHosts.Add(host);
        }
    }

    /// <summary>Forgets a host (the one connected before it becomes current again) and disconnects it.</summary>
    internal static void Remove(DEHost host)
    {
        lock (Gate) ConnectedHosts.Remove(host);
        host.Dispose();
    }
}
