using System.Management.Automation;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// Stops scans from merging a domain's pages; with -Unshare also gives every Shared page its own frame
/// back, or changes nothing when the host's memory limit leaves too few frames (Disable-DESharing).
/// On Xen shared pages stay shared until the guest writes them: -Unshare is refused (XenUnshareNotSupported).
/// </summary>
[Cmdlet(VerbsLifecycle.Disable, "DESharing", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(Domain), typeof(XenDomain))]
public sealed class DisableDESharingCommand : DomainMechanismCmdlet
{
    /// <summary>Also give every Shared page a frame of its own (Zero pages stay Zero: they hold no frame). Embedded hosts only.</summary>
    [Parameter]
    public SwitchParameter Unshare { get; set; }

    protected override string Action(IDEDomain domain) =>
        Unshare ? "Disable page sharing and unshare every shared page" : "Disable page sharing";

    protected override long Apply(IDEDomain domain) => domain.DisableSharing(Unshare);

    protected override string? Report(IDEDomain domain, long pages) =>
        Unshare ? $"Domain '{domain.Name}': {pages} page(s) given their own frame." : null;
}
