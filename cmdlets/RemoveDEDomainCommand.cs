using System.Management.Automation;
using DifferenceEngine.Domains;

namespace DifferenceEngine.Commands;

/// <summary>Removes domains and gives their memory back (Remove-DEDomain).</summary>
[Cmdlet(VerbsCommon.Remove, "DEDomain", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium,
    DefaultParameterSetName = NameSet)]
[OutputType(typeof(void))]
public sealed class RemoveDEDomainCommand : DECmdlet
{
    public const string NameSet = "Name";
    public const string InputObjectSet = "InputObject";

    /// <summary>Names of the domains to remove (wildcards).</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = NameSet, ValueFromPipeline = true)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public string[] Name { get; set; } = [];

    /// <summary>Domain objects to remove, e.g. from Get-DEDomain.</summary>
    [Parameter(Mandatory = true, ParameterSetName = InputObjectSet, ValueFromPipeline = true)]
    [ValidateNotNull]
    public Domain[] InputObject { get; set; } = [];

    protected override void ProcessRecord()
    {
        var selectors = ParameterSetName == InputObjectSet
            ? InputObject.Select(d => new DomainSelector(d))
            : Name.Select(n => new DomainSelector(n));
        foreach (var domain in ResolveDomains(selectors))
        {
            if (ShouldProcess(domain.Name, $"Remove the domain ({DisplayFormat.Bytes(domain.SizeBytes)}) and free its memory"))
                TryItem(() => domain.Host.RemoveDomain(domain));
        }
    }
}
