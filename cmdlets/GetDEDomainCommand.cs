using System.Management.Automation;
using DifferenceEngine.Domains;

namespace DifferenceEngine.Commands;

/// <summary>Lists the domains of a host, by name or pattern (Get-DEDomain).</summary>
[Cmdlet(VerbsCommon.Get, "DEDomain")]
[OutputType(typeof(Domain))]
public sealed class GetDEDomainCommand : DECmdlet
{
    /// <summary>Domain names (wildcards); all domains by default. A name without wildcards that matches nothing is an error.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public string[]? Name { get; set; }

    protected override void ProcessRecord()
    {
        var domains = Name is null ? TargetHost.Domains : ResolveDomains(Name.Select(n => new DomainSelector(n)));
        WriteObject(domains, enumerateCollection: true);
    }
}
