using System.Management.Automation;
using DifferenceEngine.Domains;
using DifferenceEngine.Workload;

namespace DifferenceEngine.Commands;

/// <summary>
/// Drives guest reads and writes on domains from worker threads, like vCPUs, and reports what it
/// did and the faults it took (Invoke-DEWorkload). Pipeline input is gathered; one workload runs
/// over all the domains at the end. Embedded hosts only: Xen's guests run their own workloads.
/// </summary>
[Cmdlet(VerbsLifecycle.Invoke, "DEWorkload", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(WorkloadResult))]
public sealed class InvokeDEWorkloadCommand : PipedDomainCmdlet
{
    private const int ActivityId = 0x0DE1;
    private readonly GatheredDomains _domains = new();

    /// <summary>The domains to run on (names, patterns or Domain objects).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[] Domain { get; set; } = [];

    /// <summary>Guest accesses to make in all (reads plus writes).</summary>
    [Parameter]
    [ValidateRange(0, long.MaxValue)]
    public long Operations { get; set; } = new WorkloadOptions().Operations;

    /// <summary>The share of accesses that are writes, from 0 to 1.</summary>
    [Parameter]
    [ValidateRange(0.0, 1.0)]
    public double WriteFraction { get; set; } = new WorkloadOptions().WriteFraction;

    /// <summary>Which pages are touched: Uniform, Hotspot (90% to a tenth of the pages) or Sequential.</summary>
    [Parameter]
    public AccessPattern Pattern { get; set; } = AccessPattern.Uniform;

    /// <summary>Seed of the workers' random choices: the same seed makes the same accesses.</summary>
    [Parameter]
    public int Seed { get; set; }

    /// <summary>Worker threads (vCPUs); the processor count by default.</summary>
    [Parameter]
    [ValidateRange(1, 1024)]
    public int ThrottleLimit { get; set; } = Environment.ProcessorCount;

    /// <summary>Bytes per write, at a random offset in the page.</summary>
    [Parameter]
    [ValidateRange(1, 4096)]
    public int WriteSize { get; set; } = new WorkloadOptions().WriteSize;

    /// <summary>Keep a shadow copy of every page touched and check every read against it.</summary>
    [Parameter]
    public SwitchParameter Verify { get; set; }

    /// <summary>What to use on a Xen host instead.</summary>
    internal const string XenInstead =
        "Xen's guests run their own workloads; Start-DEEngine keeps the engine's passes going while they do, and Get-DEHostStats counts the page-ins.";

    protected override void ProcessRecord() => Gather(_domains, Domain, XenInstead);

    protected override void EndProcessing()
    {
        InputHost = null; // each record's host was used as it came
        var domains = _domains.Domains.Cast<Domain>().ToArray();
        if (domains.Length == 0) return;
        string names = string.Join(", ", domains.Select(d => d.Name));
        if (!ShouldProcess(names, $"Run {Operations} guest accesses ({(WriteFraction * 100).ToString("0.##", System.Globalization.CultureInfo.InvariantCulture)}% writes, {Pattern})")) return;
        var options = new WorkloadOptions
        {
            Operations = Operations,
            WriteFraction = WriteFraction,
            Pattern = Pattern,
            Seed = Seed,
            Threads = ThrottleLimit,
            WriteSize = WriteSize,
            Verify = Verify,
        };
        const string activity = "Invoke-DEWorkload";
        WorkloadResult result;
        try
        {
            result = RunWithProgress(ActivityId, activity, report => WorkloadRunner.Run(domains, options,
                done => report(new ProgressRecord(ActivityId, activity, $"{DisplayFormat.Count(done)} of {DisplayFormat.Count(Operations)} accesses on {names}")
                {
                    PercentComplete = Operations == 0 ? 100 : (int)Math.Min(100, 100 * done / Operations),
                }),
                StopToken));
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
            return;
        }
        WriteObject(result);
        if (result.Errors > 0) WriteAccessFailure(result);
        if (result.Mismatches > 0)
            WriteDEError(new DEException("WorkloadVerifyMismatch", DEErrorKind.InvalidData,
                $"{result.Mismatches} read(s) did not return what was last written: guest memory was corrupted.", result));
    }

    /// <summary>
    /// The first failed access as the engine raised it (its own id and category, e.g. HostOutOfMemory),
    /// with a message that says how many workers stopped.
    /// </summary>
    private void WriteAccessFailure(WorkloadResult result)
    {
        string stopped = $"{result.Errors} worker(s) stopped on a failed guest access; the first: ";
        // Every failed access records its exception, so there is one whenever Errors > 0.
        var first = result.FirstException!;
        var record = ToErrorRecord(first);
        record.ErrorDetails = new ErrorDetails(stopped + first.Message);
        WriteError(record);
    }
}
