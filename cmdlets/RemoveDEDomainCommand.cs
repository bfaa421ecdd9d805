using System.Management.Automation;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>Removes domains and gives their memory back (Remove-DEDomain). Embedded hosts only: Xen's toolstack ends Xen's domains.</summary>
[Cmdlet(VerbsCommon.Remove, "DEDomain", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High,
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

    /// <summary>
    /// Domain objects to remove, e.g. from Get-DEDomain; a XenDomain is refused (NotSupportedOnXenHost). Typed object[]
    /// because PowerShell binds piped objects to an interface-typed array only by converting them, after it has tried
    /// -Name, which would turn a Xen domain into its name and act on whatever domain of the current host has that name.
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = InputObjectSet, ValueFromPipeline = true)]
    [ValidateNotNull]
    public object[] InputObject { get; set; } = [];

    /// <summary>What to use on a Xen host instead.</summary>
    internal const string XenInstead =
        "Xen's domains are ended by its toolstack (xl shutdown, xl destroy): load their pages back first with Disable-DEPatching -Restore and Disable-DECompression -Restore, or Disconnect-DEHost.";

    protected override void ProcessRecord()
    {
        var selectors = ParameterSetName == InputObjectSet
            ? InputObject.Select(ToSelector).OfType<DomainSelector>().ToArray()
            : Name.Select(n => new DomainSelector(n));
        foreach (var domain in ResolveEmbeddedDomains(selectors, XenInstead))
        {
            if (ShouldProcess(domain.Name, $"Remove the domain ({DisplayFormat.Bytes(domain.SizeBytes)}) and free its memory"))
                TryItem(() => domain.Host.RemoveDomain(domain));
        }
    }

    /// <summary>A domain object as a selector; anything else is written as "InputObjectNotDomain" and skipped.</summary>
    private DomainSelector? ToSelector(object item)
    {
        object value = item is PSObject ps ? ps.BaseObject : item;
        if (value is IDEDomain domain) return DomainSelector.For(domain);
        WriteDEError(new DEException("InputObjectNotDomain", DEErrorKind.InvalidArgument,
            $"-InputObject takes domain objects (Get-DEDomain output); '{value}' is a {value.GetType().Name}. Give names to -Name.", value));
        return null;
    }
}
