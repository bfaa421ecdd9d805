using System.Management.Automation;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>What Start-DEEngine and Stop-DEEngine share: hosts from the pipeline, and -PassThru of the engine's status.</summary>
public abstract class EngineControlCmdlet : DECmdlet
{
    /// <summary>The host; by default the current one. Takes hosts from Get-DEHost.</summary>
    [Parameter(ValueFromPipeline = true)]
    [ValidateNotNull]
    [ArgumentCompleter(typeof(HostNameCompleter))]
    public override IDEHost? DEHost { get; set; }

    /// <summary>Output the engine's status.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }
}
