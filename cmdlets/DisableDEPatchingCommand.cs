using System.Management.Automation;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// Stops scans from patching a domain's pages; with -Restore also rebuilds every Patched page into a
/// frame of its own, or changes nothing when the host's memory limit leaves too few frames (Disable-DEPatching).
/// On Xen -Restore loads the patched pages (and the references taken from the domain) back into the guest.
/// </summary>
[Cmdlet(VerbsLifecycle.Disable, "DEPatching", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(Domain), typeof(XenDomain))]
public sealed class DisableDEPatchingCommand : DomainMechanismCmdlet
{
    /// <summary>Also rebuild every Patched page into a frame of its own.</summary>
    [Parameter]
    public SwitchParameter Restore { get; set; }

    protected override string Action(IDEDomain domain) =>
        Restore ? "Disable page patching and rebuild every patched page" : "Disable page patching";

    // A restore on Xen waits for the pass in progress: Ctrl-C ends that wait.
    protected override long Apply(IDEDomain domain) =>
        domain is XenDomain xen ? xen.Host.DisablePatching(xen, Restore, StopToken) : domain.DisablePatching(Restore);

    protected override string? Report(IDEDomain domain, long pages) =>
        Restore ? $"Domain '{domain.Name}': {pages} patched page(s) rebuilt into frames." : null;
}
