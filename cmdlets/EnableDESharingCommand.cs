using System.Management.Automation;
using DifferenceEngine.Domains;

namespace DifferenceEngine.Commands;

/// <summary>Lets scans merge a domain's zero and identical pages, within its trust group (Enable-DESharing).</summary>
[Cmdlet(VerbsLifecycle.Enable, "DESharing", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(Domain))]
public sealed class EnableDESharingCommand : DomainMechanismCmdlet
{
    protected override string Action(Domain domain) => $"Enable page sharing in trust group '{domain.Policy.TrustGroup}'";

    protected override long Apply(Domain domain)
    {
        domain.Host.EnableSharing(domain);
        return 0;
    }
}
