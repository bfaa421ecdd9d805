using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;
using DifferenceEngine.Stats;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// The one place where the cmdlets tell the kinds of host apart: each call goes to the embedded host
/// (<see cref="DEHost"/>, <see cref="Domain"/>) or to the Xen host (<see cref="XenHost"/>, <see cref="XenDomain"/>),
/// which have the same operations with their own domain types. <see cref="IDEHost"/> carries only what both have in
/// common as properties; everything else is here.
/// </summary>
internal static class HostDispatch
{
    /// <summary>Every domain of the host (on Xen as Xen lists them now, domain 0 included), in id order.</summary>
    public static IReadOnlyList<IDEDomain> ListDomains(this IDEHost host) => host switch
    {
        DEHost h => h.Domains,
        XenHost x => x.Domains,
        _ => throw UnknownHost(host),
    };

    /// <summary>The domain of this name; on Xen also of this domain id ("3"). Null when there is none.</summary>
    public static IDEDomain? FindDomain(this IDEHost host, string nameOrId) => host switch
    {
        DEHost h => h.TryGetDomain(nameOrId),
        XenHost x => x.TryGetDomain(nameOrId),
        _ => throw UnknownHost(host),
    };

    /// <summary>A domain's size in bytes, for messages and completion.</summary>
    public static long SizeBytes(this IDEDomain domain) => domain switch
    {
        Domain d => d.SizeBytes,
        XenDomain x => x.SizeBytes,
        _ => 0,
    };

    /// <summary>A domain's pages, for progress.</summary>
    public static long PageCount(this IDEDomain domain) => domain switch
    {
        Domain d => d.PageCount,
        XenDomain x => x.PageCount,
        _ => 0,
    };

    public static void EnableSharing(IDEDomain domain)
    {
        switch (domain)
        {
            case Domain d: d.Host.EnableSharing(d); break;
            case XenDomain x: x.Host.EnableSharing(x); break;
            default: throw UnknownDomain(domain);
        }
    }

    public static long DisableSharing(IDEDomain domain, bool unshare) => domain switch
    {
        Domain d => d.Host.DisableSharing(d, unshare),
        XenDomain x => x.Host.DisableSharing(x, unshare),
        _ => throw UnknownDomain(domain),
    };

    public static void EnablePatching(IDEDomain domain)
    {
        switch (domain)
        {
            case Domain d: d.Host.EnablePatching(d); break;
            case XenDomain x: x.Host.EnablePatching(x); break;
            default: throw UnknownDomain(domain);
        }
    }

    public static long DisablePatching(IDEDomain domain, bool restore) => domain switch
    {
        Domain d => d.Host.DisablePatching(d, restore),
        XenDomain x => x.Host.DisablePatching(x, restore),
        _ => throw UnknownDomain(domain),
    };

    public static void EnableCompression(IDEDomain domain, CompressionAlgorithm? algorithm)
    {
        switch (domain)
        {
            case Domain d: d.Host.EnableCompression(d, algorithm); break;
            case XenDomain x: x.Host.EnableCompression(x, algorithm); break;
            default: throw UnknownDomain(domain);
        }
    }

    public static long DisableCompression(IDEDomain domain, bool restore) => domain switch
    {
        Domain d => d.Host.DisableCompression(d, restore),
        XenDomain x => x.Host.DisableCompression(x, restore),
        _ => throw UnknownDomain(domain),
    };

    public static void SetPolicy(IDEDomain domain, int? c4Sweeps, int? patchThreshold, double? compressionThreshold,
        CompressionAlgorithm? algorithm, string? trustGroup)
    {
        switch (domain)
        {
            case Domain d: d.Host.SetPolicy(d, c4Sweeps, patchThreshold, compressionThreshold, algorithm, trustGroup); break;
            case XenDomain x: x.Host.SetPolicy(x, c4Sweeps, patchThreshold, compressionThreshold, algorithm, trustGroup); break;
            default: throw UnknownDomain(domain);
        }
    }

    public static DomainPageStats GetPageStats(IDEDomain domain) => domain switch
    {
        Domain d => d.Host.GetPageStats(d),
        XenDomain x => x.Host.GetPageStats(x),
        _ => throw UnknownDomain(domain),
    };

    /// <summary>
    /// A guest page's bytes: through the engine as the guest reads it (embedded), or without disturbing the guest
    /// (Xen: a read-only mapping, or the pager's copy of a page it holds).
    /// </summary>
    public static byte[] ReadPage(IDEDomain domain, long gfn) => domain switch
    {
        Domain d => d.ReadPage(gfn),
        XenDomain x => x.Host.ReadPage(x, gfn),
        _ => throw UnknownDomain(domain),
    };

    public static HostStats GetStats(this IDEHost host) => host switch
    {
        DEHost h => h.GetStats(),
        XenHost x => x.GetStats(),
        _ => throw UnknownHost(host),
    };

    /// <summary>
    /// Engine passes over <paramref name="domains"/> of the host, or, when null, over the host's default set: every domain
    /// (embedded), every domU with a mechanism on (Xen).
    /// </summary>
    public static ScanResult Scan(this IDEHost host, IReadOnlyList<IDEDomain>? domains, ScanOptions options,
        Action<ScanProgress> progress, CancellationToken cancellationToken) => host switch
    {
        DEHost h => h.Scan(domains?.Cast<Domain>().ToArray() ?? h.Domains, options, progress, cancellationToken),
        XenHost x => x.Scan(domains?.Cast<XenDomain>().ToArray(), options, progress, cancellationToken),
        _ => throw UnknownHost(host),
    };

    public static void SetHostPolicy(this IDEHost host, int? keys, int? blocksPerKey, int? candidates, int? seed,
        double? compactionThreshold, double? lowWatermark, double? highWatermark)
    {
        switch (host)
        {
            case DEHost h: h.SetHostPolicy(keys, blocksPerKey, candidates, seed, compactionThreshold, lowWatermark, highWatermark); break;
            // The cmdlet refuses compaction and watermarks on Xen before it gets here: the pager has no store to compact
            // and no frames of its own to keep free.
            case XenHost x: x.SetHostPolicy(keys, blocksPerKey, candidates, seed); break;
            default: throw UnknownHost(host);
        }
    }

    public static EngineStatus StartEngine(this IDEHost host, TimeSpan interval) => host switch
    {
        DEHost h => h.StartEngine(interval),
        XenHost x => x.StartEngine(interval),
        _ => throw UnknownHost(host),
    };

    public static EngineStatus? StopEngine(this IDEHost host) => host switch
    {
        DEHost h => h.StopEngine(),
        XenHost x => x.StopEngine(),
        _ => throw UnknownHost(host),
    };

    public static EngineStatus EngineStatus(this IDEHost host) => host switch
    {
        DEHost h => h.EngineStatus,
        XenHost x => x.EngineStatus,
        _ => throw UnknownHost(host),
    };

    public static IReadOnlyList<StatsSample> History(this IDEHost host) => host switch
    {
        DEHost h => h.History,
        XenHost x => x.History,
        _ => throw UnknownHost(host),
    };

    private static DEException UnknownHost(IDEHost host) =>
        new("HostKindNotSupported", DEErrorKind.NotImplemented,
            $"Host '{host.Name}' is of kind '{host.Kind}' ({host.GetType().FullName}), which these cmdlets do not drive.", host.Name);

    private static DEException UnknownDomain(IDEDomain domain) =>
        new("HostKindNotSupported", DEErrorKind.NotImplemented,
            $"Domain '{domain.Name}' is a {domain.GetType().FullName}, which these cmdlets do not drive.", domain.Name);
}
