using System.Management.Automation;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>
/// Stops a host's background engine, cancelling a pass in progress; returns within a second. Stopping an
/// engine that does not run does nothing (Stop-DEEngine).
/// </summary>
[Cmdlet(VerbsLifecycle.Stop, "DEEngine", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(EngineStatus))]
public sealed class StopDEEngineCommand : EngineControlCmdlet
{
    protected override void ProcessRecord()
    {
        var host = TargetHost;
        var last = host.EngineStatus;
        if (last.State == EngineState.Stopped)
        {
            WriteVerbose($"The engine of host '{host.Name}' is not running.");
            if (PassThru) WriteObject(last);
            return;
        }
        if (!ShouldProcess(host.Name, $"Stop the background engine after {last.PassesRun} pass(es)")) return;
        if (!TryItem(host.StopEngine, out var final)) return;
        // The final status of the run (Get-DEEngine keeps showing it until the next start).
        if (PassThru) WriteObject(final ?? last with { State = EngineState.Stopped });
    }
}
