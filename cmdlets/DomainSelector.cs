using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// The value of every -Domain parameter: a domain name (wildcards allowed; on a Xen host also a domain id),
/// an embedded Domain object or a XenDomain object. PowerShell converts strings, Domain and XenDomain objects
/// to it through the constructors, so <c>'web1' | Enable-DESharing</c> and <c>Get-DEDomain web* | Enable-DESharing</c>
/// both bind, on either kind of host.
/// </summary>
public sealed class DomainSelector
{
    public DomainSelector(string name)
    {
        Name = name ?? throw new ArgumentNullException(nameof(name));
    }

    public DomainSelector(Domain domain)
    {
        Domain = domain ?? throw new ArgumentNullException(nameof(domain));
        Name = domain.Name;
    }

    public DomainSelector(XenDomain domain)
    {
        Domain = domain ?? throw new ArgumentNullException(nameof(domain));
        Name = domain.Name;
    }

    /// <summary>A deserialized Domain or XenDomain (a domain object that came back through remoting), by its name.</summary>
    internal DomainSelector(string name, System.Management.Automation.PSObject deserialized) : this(name)
    {
        Deserialized = deserialized;
    }

    /// <summary>The deserialized domain object given (a property bag); null otherwise.</summary>
    internal System.Management.Automation.PSObject? Deserialized { get; }

    /// <summary>The name or pattern given, or the name of the domain object given.</summary>
    public string Name { get; }

    /// <summary>The domain object given (a Domain or a XenDomain); null when a name was given.</summary>
    public IDEDomain? Domain { get; }

    /// <summary>A selector for a domain object of either kind.</summary>
    public static DomainSelector For(IDEDomain domain) => domain switch
    {
        Domain d => new DomainSelector(d),
        XenDomain x => new DomainSelector(x),
        null => throw new ArgumentNullException(nameof(domain)),
        _ => throw new ArgumentException($"Domain '{domain.Name}' is a {domain.GetType().FullName}, which these cmdlets do not drive.", nameof(domain)),
    };

    public override string ToString() => Name;
}
