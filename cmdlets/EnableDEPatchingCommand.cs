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
        if (WithoutReferences(domain) is { } warning) WriteWarning(warning);
        return 0;
    }

    /// <summary>
    /// The warning for a domain of the embedded host with patching on that can find no reference, or null. There a
    /// reference is a Shared page, and only a domain with sharing on has its pages made Shared: a domain with patching on
    /// finds references only while some domain of its trust group (itself included) shares. Nothing else would tell why
    /// its pages are never patched. (A Xen pager keeps references of its own: no warning there.)
    /// </summary>
    internal static string? WithoutReferences(IDEDomain domain) =>
        domain is Domain { Policy: { PatchingEnabled: true, SharingEnabled: false } } embedded
        && !embedded.Host.Domains.Any(d => d.Policy.SharingEnabled && d.Policy.TrustGroup == embedded.Policy.TrustGroup)
            ? $"Domain '{domain.Name}': no domain of trust group '{embedded.Policy.TrustGroup}' has sharing on, and only such a domain " +
              "gives patch references: this domain's pages are not patched until one does (Enable-DESharing)."
            : null;
}
