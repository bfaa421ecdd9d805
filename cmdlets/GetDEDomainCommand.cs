using DifferenceEngine.Hosting;
using System.Management.Automation;
using DifferenceEngine.Domains;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>Lists the domains of a host, by name or pattern; on a Xen host Xen's domains, domain 0 included, also by id (Get-DEDomain).</summary>
[Cmdlet(VerbsCommon.Get, "DEDomain")]
[OutputType(typeof(Domain), typeof(XenDomain))]
public sealed class GetDEDomainCommand : DECmdlet
{
    /// <summary>
    /// Domain names (wildcards), or on a Xen host domain ids too; all domains by default. A name without wildcards that
    /// matches nothing is an error.
    /// </summary>
    [Parameter(Position = 0, ValueFromPipeline = true)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[]? Name { get; set; }

    /// <summary>The host, by name or object; by default the current one. Takes hosts from Get-DEHost.</summary>
    [Parameter(ValueFromPipeline = true)]
    [ValidateNotNull]
    [ArgumentCompleter(typeof(HostNameCompleter))]
    public override IDEHost? DEHost { get; set; }

    protected override void ProcessRecord()
    {
        var domains = Name is null ? DomainsOf(TargetHost) : ResolveDomains(Name);
        WriteObject(domains, enumerateCollection: true);
    }
}
