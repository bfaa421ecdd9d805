using Newtonsoft.Json;
using Newtonsoft.Json.Converters;

namespace DifferenceEngine.Xen;

/// <summary>What xc_domain_getinfolist says about the domain's state.</summary>
[Flags]
[JsonConverter(typeof(StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum XenDomainFlags : uint
{
    None = 0,
    Dying = 1 << 0,
    Hvm = 1 << 1,
    Shutdown = 1 << 2,
    Paused = 1 << 3,
    Blocked = 1 << 4,
    Running = 1 << 5,
    /// <summary>Hardware-assisted paging: sharing and paging need it.</summary>
    Hap = 1 << 6,
}

/// <summary>One domain on the Xen host, in 4 KiB pages, as of the listing.</summary>
public sealed record XenDomainInfo(
    uint DomainId,
    XenDomainFlags Flags,
    ulong TotalPages,
    ulong MaxPages,
    ulong SharedPages,
    ulong PagedPages)
{
    /// <summary>True when Xen can share and page this domain's memory (an HVM guest with HAP).</summary>
    public bool SupportsSharingAndPaging => (Flags & (XenDomainFlags.Hvm | XenDomainFlags.Hap)) == (XenDomainFlags.Hvm | XenDomainFlags.Hap);
}
