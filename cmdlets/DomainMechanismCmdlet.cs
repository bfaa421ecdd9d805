using System.Management.Automation;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>
/// What the cmdlets that turn a mechanism on or off per domain share (Enable-/Disable-DESharing,
/// -DEPatching, -DECompression) on either kind of host: -Domain from the pipeline, ShouldProcess per domain, a failure on
/// one domain written and the next one done, -PassThru.
/// </summary>
public abstract class DomainMechanismCmdlet : PipedDomainCmdlet
{
    /// <summary>The domains (names, patterns, Domain or XenDomain objects; on a Xen host also domain ids).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[] Domain { get; set; } = [];

    /// <summary>Output each domain changed.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>What -WhatIf and -Confirm say is done to <paramref name="domain"/>.</summary>
    protected abstract string Action(IDEDomain domain);

    /// <summary>The engine call for one domain; returns the pages it changed (given frames back, rebuilt).</summary>
    protected abstract long Apply(IDEDomain domain);

    /// <summary>A verbose line on the pages <see cref="Apply"/> changed, or null for none.</summary>
    protected virtual string? Report(IDEDomain domain, long pages) => null;

    protected override void ProcessRecord()
    {
        foreach (var domain in ResolveDomains(Domain))
        {
            if (!ShouldProcess(domain.Name, Action(domain))) continue;
            if (!TryItem(() => Apply(domain), out long pages)) continue;
            if (Report(domain, pages) is { } line) WriteVerbose(line);
            if (PassThru) WriteObject(domain);
        }
    }
}
