using System.Management.Automation;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// Stops scans from compressing a domain's pages; with -Restore also decompresses every Compressed
/// page into a frame of its own (and rebuilds every patch whose reference frame was compressed), or changes nothing when the host's memory limit leaves too few
/// frames (Disable-DECompression). On Xen -Restore loads the pages the pager holds compressed back into the guest.
/// </summary>
[Cmdlet(VerbsLifecycle.Disable, "DECompression", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(Domain), typeof(XenDomain))]
public sealed class DisableDECompressionCommand : DomainMechanismCmdlet
{
    /// <summary>Also decompress every Compressed page into a frame of its own.</summary>
    [Parameter]
    public SwitchParameter Restore { get; set; }

    protected override string Action(IDEDomain domain) =>
        Restore ? "Disable page compression and decompress every compressed page" : "Disable page compression";

    // A restore on Xen waits for the pass in progress: Ctrl-C ends that wait.
    protected override long Apply(IDEDomain domain) =>
        domain is XenDomain xen ? xen.Host.DisableCompression(xen, Restore, StopToken) : domain.DisableCompression(Restore);

    protected override string? Report(IDEDomain domain, long pages) =>
        Restore ? $"Domain '{domain.Name}': {pages} compressed page(s) rebuilt into frames." : null;
}
