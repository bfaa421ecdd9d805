using System.Management.Automation;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>
/// The state of a host's background engine (passes run, last pass, busy time, samples kept), or with
/// -History the stats samples it took, oldest first (Get-DEEngine).
/// </summary>
[Cmdlet(VerbsCommon.Get, "DEEngine", DefaultParameterSetName = StatusSet)]
[OutputType(typeof(EngineStatus), ParameterSetName = [StatusSet])]
[OutputType(typeof(StatsSample), ParameterSetName = [HistorySet])]
public sealed class GetDEEngineCommand : DECmdlet
{
    public const string StatusSet = "Status";
    public const string HistorySet = "History";

    /// <summary>The host; by default the current one. Takes hosts from Get-DEHost.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true)]
    [ValidateNotNull]
    [ArgumentCompleter(typeof(HostNameCompleter))]
    public override IDEHost? DEHost { get; set; }

    /// <summary>Output the stats samples (one after each engine pass, and at start and stop) instead of the status.</summary>
    [Parameter(Mandatory = true, ParameterSetName = HistorySet)]
    public SwitchParameter History { get; set; }

    protected override void ProcessRecord()
    {
        var host = TargetHost;
        if (ParameterSetName == HistorySet) WriteObject(host.History, enumerateCollection: true);
        else WriteObject(host.EngineStatus);
    }
}
