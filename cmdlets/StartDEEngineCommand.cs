using System.Management.Automation;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>
/// Starts a host's background engine: one engine pass over every domain each interval while guests keep
/// running, and a stats sample after each pass for Export-DEReport (Start-DEEngine).
/// </summary>
[Cmdlet(VerbsLifecycle.Start, "DEEngine", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(EngineStatus))]
public sealed class StartDEEngineCommand : EngineControlCmdlet
{
    /// <summary>As in the paper: sweeps of the same memory at least 4 seconds apart.</summary>
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromSeconds(4);

    /// <summary>Time from the start of one pass to the start of the next, 100 ms to 24 h: a TimeSpan or seconds (0.5 works); 4 s by default.</summary>
    [Parameter(Position = 0)]
    [SecondsToTimeSpan]
    public TimeSpan Interval { get; set; } = DefaultInterval;

    protected override void ProcessRecord()
    {
        try
        {
            DifferenceEngine.Hosting.DEHost.CheckEngineInterval(Interval); // before -WhatIf or -Confirm says it would start
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
        }
        var host = TargetHost;
        if (!ShouldProcess(host.Name, $"Start the background engine: a pass over every domain every {DisplayFormat.Duration(Interval)}")) return;
        EngineStatus status;
        try
        {
            status = host.StartEngine(Interval);
        }
        catch (DEException ex) when (ex.Kind == DEErrorKind.InvalidArgument)
        {
            ThrowDEError(ex); // a bad interval is bad for every host
            return;
        }
        catch (DEException ex)
        {
            WriteDEError(ex); // this host's engine already runs: the next host goes on
            return;
        }
        if (PassThru) WriteObject(status);
    }
}
