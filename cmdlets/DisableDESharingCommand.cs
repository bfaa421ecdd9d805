using System.Management.Automation;
using DifferenceEngine.Domains;

namespace DifferenceEngine.Commands;

/// <summary>
/// Stops scans from merging a domain's pages; with -Unshare also gives every Shared page its own frame
/// back, or changes nothing when the host's memory limit leaves too few frames (Disable-DESharing).
/// </summary>
[Cmdlet(VerbsLifecycle.Disable, "DESharing", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(Domain))]
public sealed class DisableDESharingCommand : DECmdlet
{
    /// <summary>The domains (names, patterns or Domain objects).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[] Domain { get; set; } = [];

    /// <summary>Also give every Shared page a frame of its own (Zero pages stay Zero: they hold no frame).</summary>
    [Parameter]
    public SwitchParameter Unshare { get; set; }

    /// <summary>Output each domain changed.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var domain in ResolveDomains(Domain))
        {
            string action = Unshare ? "Disable page sharing and unshare every shared page" : "Disable page sharing";
            if (!ShouldProcess(domain.Name, action)) continue;
            if (!TryItem(() => domain.Host.DisableSharing(domain, Unshare), out long unshared)) continue;
            if (Unshare) WriteVerbose($"Domain '{domain.Name}': {unshared} page(s) given their own frame.");
            if (PassThru) WriteObject(domain);
        }
    }
}
