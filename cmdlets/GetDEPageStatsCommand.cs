using System.Management.Automation;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Commands;

/// <summary>Pages per state and the memory each domain uses and saves, one object per domain (Get-DEPageStats).</summary>
[Cmdlet(VerbsCommon.Get, "DEPageStats")]
[OutputType(typeof(DomainPageStats))]
public sealed class GetDEPageStatsCommand : PipedDomainCmdlet
{
    /// <summary>The domains (names, patterns, Domain or XenDomain objects); every domain of the host by default.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[]? Domain { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var domain in ResolveDomainsOrAll(Domain))
            if (TryItem(() => domain.GetPageStats(), out var stats)) WriteObject(stats);
    }
}
