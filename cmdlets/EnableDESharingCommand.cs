using System.Management.Automation;
using DifferenceEngine.Domains;

namespace DifferenceEngine.Commands;

/// <summary>Lets scans merge a domain's zero and identical pages, within its trust group (Enable-DESharing).</summary>
[Cmdlet(VerbsLifecycle.Enable, "DESharing", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(Domain))]
public sealed class EnableDESharingCommand : DECmdlet
{
    /// <summary>The domains (names, patterns or Domain objects).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[] Domain { get; set; } = [];

    /// <summary>Output each domain changed.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var domain in ResolveDomains(Domain))
        {
            if (!ShouldProcess(domain.Name, $"Enable page sharing in trust group '{domain.Policy.TrustGroup}'")) continue;
            if (TryItem(() => domain.Host.EnableSharing(domain)) && PassThru) WriteObject(domain);
        }
    }
}
