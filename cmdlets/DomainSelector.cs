using DifferenceEngine.Domains;

namespace DifferenceEngine.Commands;

/// <summary>
/// The value of every -Domain parameter: a domain name (wildcards allowed) or a Domain object.
/// PowerShell converts strings and Domain objects to it through the constructors, so
/// <c>'web1' | Enable-DESharing</c> and <c>Get-DEDomain web* | Enable-DESharing</c> both bind.
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

    /// <summary>The name or pattern given, or the name of the Domain given.</summary>
    public string Name { get; }

    /// <summary>The Domain object given; null when a name was given.</summary>
    public Domain? Domain { get; }

    public override string ToString() => Name;
}
