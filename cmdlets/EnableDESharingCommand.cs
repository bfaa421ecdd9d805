using System.Management.Automation;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>Lets scans merge a domain's zero and identical pages, within its trust group (Enable-DESharing).</summary>
[Cmdlet(VerbsLifecycle.Enable, "DESharing", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(Domain), typeof(XenDomain))]
public sealed class EnableDESharingCommand : DomainMechanismCmdlet
{
    protected override string Action(IDEDomain domain) => $"Enable page sharing in trust group '{domain.Policy.TrustGroup}'";

    protected override long Apply(IDEDomain domain)
    {
        domain.EnableSharing();
        return 0;
    }
}
