using System.Management.Automation;
using DifferenceEngine.Hosting;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Commands;

/// <summary>
/// Host-wide frames, memory, savings, metadata, faults with latency percentiles and engine time; on Xen the domUs' frames,
/// what the pager holds and its page-ins (Get-DEHostStats).
/// </summary>
[Cmdlet(VerbsCommon.Get, "DEHostStats")]
[OutputType(typeof(HostStats))]
public sealed class GetDEHostStatsCommand : DECmdlet
{
    /// <summary>The host; by default the current one. Takes hosts from Get-DEHost.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true)]
    [ValidateNotNull]
    [ArgumentCompleter(typeof(HostNameCompleter))]
    public override IDEHost? DEHost { get; set; }

    protected override void ProcessRecord()
    {
        var host = TargetHost;
        if (TryItem(() => host.GetStats(StopToken), out var stats)) WriteObject(stats);
    }
}
