using System.Management.Automation;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>Disconnects a host: its domains and all its memory go (Disconnect-DEHost).</summary>
[Cmdlet(VerbsCommunications.Disconnect, "DEHost", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(void))]
public sealed class DisconnectDEHostCommand : DECmdlet
{
    /// <summary>The host to disconnect; by default the current one.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true)]
    [ValidateNotNull]
    public override DEHost? DEHost { get; set; }

    protected override void ProcessRecord()
    {
        var host = TargetHost;
        if (!host.IsConnected) return; // already gone: disconnecting is idempotent
        int domains = host.Domains.Count;
        if (!ShouldProcess(host.Name, $"Disconnect the host and discard its {domains} domain(s)")) return;
        HostRegistry.Remove(host);
    }
}
