using System.Management.Automation;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>Creates an embedded host and makes it the current one (Connect-DEHost).</summary>
[Cmdlet(VerbsCommunications.Connect, "DEHost", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(DEHost))]
public sealed class ConnectDEHostCommand : DECmdlet
{
    /// <summary>The host's name; one connected host per name.</summary>
    [Parameter(Position = 0)]
    [ValidateNotNullOrEmpty]
    public string Name { get; set; } = new HostOptions().Name;

    /// <summary>The most memory the host may use for guest pages, in bytes (2GB works); none by default.</summary>
    [Parameter]
    public long MemoryLimit { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>Not used: Connect-DEHost makes hosts.</summary>
    public override DEHost? DEHost { get; set; }

    protected override void EndProcessing()
    {
        string limit = MyInvocation.BoundParameters.ContainsKey(nameof(MemoryLimit)) ? DisplayFormat.Bytes(MemoryLimit) : "no";
        if (!ShouldProcess(Name, $"Connect an embedded host with {limit} memory limit")) return;
        DEHost? host = null;
        try
        {
            host = new DEHost(new HostOptions
            {
                Name = Name,
                MemoryLimitBytes = MyInvocation.BoundParameters.ContainsKey(nameof(MemoryLimit)) ? MemoryLimit : null,
            });
            HostRegistry.Add(host);
        }
        catch (DEException ex)
        {
            host?.Dispose();
            ThrowDEError(ex);
            return;
        }
        if (PassThru) WriteObject(host);
    }
}
