using DifferenceEngine.Domains;

namespace DifferenceEngine.Hosting;

/// <summary>
/// What every kind of host has: the embedded host (<see cref="DEHost"/>, guest memory in this process) and a Xen host
/// (<see cref="Xen.XenHost"/>, guest memory in Xen's domains). The cmdlets take either.
/// </summary>
public interface IDEHost : IDisposable
{
    string Name { get; }

    /// <summary>"Embedded" or "Xen".</summary>
    string Kind { get; }

    DateTimeOffset Connected { get; }

    bool IsConnected { get; }

    /// <summary>Host-wide engine settings (similarity detector and the rest).</summary>
    HostPolicy Policy { get; }

    long ScanPasses { get; }
}

/// <summary>What every kind of domain has: an embedded <see cref="Domain"/> or a <see cref="Xen.XenDomain"/>.</summary>
public interface IDEDomain
{
    string Name { get; }

    int Id { get; }

    IDEHost Host { get; }

    DomainPolicy Policy { get; }

    bool IsRemoved { get; }

    /// <summary>"Running", "Loading", "OutOfMemory", "Paused", "Removed" and so on.</summary>
    string Status { get; }
}
