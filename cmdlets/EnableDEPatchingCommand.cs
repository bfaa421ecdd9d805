using System.Management.Automation;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// Lets scans store a domain's similar C3 and C4 pages as patches against a reference page of its
/// trust group (Enable-DEPatching).
/// </summary>
[Cmdlet(VerbsLifecycle.Enable, "DEPatching", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(Domain), typeof(XenDomain))]
public sealed class EnableDEPatchingCommand : DomainMechanismCmdlet
{
    protected override string Action(IDEDomain domain) => $"Enable page patching in trust group '{domain.Policy.TrustGroup}'";

    protected override long Apply(IDEDomain domain)
    {
        domain.EnablePatching();
        return 0;
    }
}
