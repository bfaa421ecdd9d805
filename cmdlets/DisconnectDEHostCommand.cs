using System.Management.Automation;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// Disconnects a host (Disconnect-DEHost): an embedded host's domains and all its memory go; a Xen host loads every page
/// its pager holds back into the guests, hands paging back to Xen and closes the connection, while the domains run on.
/// </summary>
[Cmdlet(VerbsCommunications.Disconnect, "DEHost", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(void))]
public sealed class DisconnectDEHostCommand : DECmdlet
{
    /// <summary>The host to disconnect; by default the current one.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true)]
    [ValidateNotNull]
    [ArgumentCompleter(typeof(HostNameCompleter))]
    public override IDEHost? DEHost { get; set; }

    protected override void ProcessRecord()
    {
        var host = GivenOrCurrentHost;
        if (!host.IsConnected) return; // already gone: disconnecting is idempotent
        string action = host is XenHost xen
            ? $"Disconnect from Xen: load the {xen.Pager.EvictedPages} page(s) the pager holds back into their domains; the domains keep running"
            : $"Disconnect the host and discard its {host.Domains.Count} domain(s)";
        if (!ShouldProcess(host.Name, action)) return;
        try
        {
            HostRegistry.Remove(host);
        }
        catch (DEException ex)
        {
            // A Xen pager that could not load every page back keeps those domains paged (XenPagerRestoreFailed).
            WriteDEError(ex);
        }
    }
}
