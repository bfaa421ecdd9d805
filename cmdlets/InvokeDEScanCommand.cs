using System.Management.Automation;
using DifferenceEngine.Domains;
using DifferenceEngine.Scanning;

namespace DifferenceEngine.Commands;

/// <summary>
/// Runs the engine's passes (clock sweep, then merging of zero and identical pages where sharing is
/// on) over domains in parallel, synchronously, with progress (Invoke-DEScan). Pipeline input is
/// gathered; one scan runs over all the domains at the end.
/// </summary>
[Cmdlet(VerbsLifecycle.Invoke, "DEScan", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low,
    DefaultParameterSetName = PassesSet)]
[OutputType(typeof(ScanResult))]
public sealed class InvokeDEScanCommand : DECmdlet
{
    public const string PassesSet = "Passes";
    public const string UntilStableSet = "UntilStable";
    private const int ActivityId = 0x0DE2;
    private readonly List<DomainSelector> _selectors = [];

    /// <summary>The domains to scan (names, patterns or Domain objects); every domain of the host by default.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[]? Domain { get; set; }

    /// <summary>How many passes to run.</summary>
    [Parameter(ParameterSetName = PassesSet)]
    [ValidateRange(1, 100_000)]
    public int Passes { get; set; } = 1;

    /// <summary>Run passes until one changes no page.</summary>
    [Parameter(Mandatory = true, ParameterSetName = UntilStableSet)]
    public SwitchParameter UntilStable { get; set; }

    /// <summary>With -UntilStable, the most passes to run.</summary>
    [Parameter(ParameterSetName = UntilStableSet)]
    [ValidateRange(1, 100_000)]
    public int MaxPasses { get; set; } = new ScanOptions().MaxPasses;

    /// <summary>Worker threads; the processor count by default.</summary>
    [Parameter]
    [ValidateRange(1, 1024)]
    public int ThrottleLimit { get; set; } = Environment.ProcessorCount;

    protected override void ProcessRecord()
    {
        if (Domain is not null) _selectors.AddRange(Domain);
    }

    protected override void EndProcessing()
    {
        bool all = !MyInvocation.BoundParameters.ContainsKey(nameof(Domain)) && _selectors.Count == 0;
        // Domain objects carry their host; a scan runs on one host, so objects from several make several scans.
        List<(Hosting.DEHost Host, Domain[] Domains)> scans = all
            ? [(TargetHost, TargetHost.Domains.ToArray())]
            : ResolveDomains(_selectors).GroupBy(d => d.Host).Select(g => (Host: g.Key, Domains: g.ToArray())).ToList();
        var options = new ScanOptions
        {
            Passes = Passes,
            UntilStable = UntilStable,
            MaxPasses = MaxPasses,
            Parallelism = ThrottleLimit,
        };
        string passes = UntilStable ? $"passes until stable (at most {MaxPasses})" : $"{Passes} pass(es)";
        foreach (var (host, domains) in scans)
        {
            string target = all ? $"all {domains.Length} domain(s) of host '{host.Name}'" : string.Join(", ", domains.Select(d => d.Name));
            if (!ShouldProcess(target, $"Scan: {passes}")) continue;
            long pages = domains.Sum(d => d.PageCount);
            const string activity = "Invoke-DEScan";
            try
            {
                var result = RunWithProgress(ActivityId, activity, report => host.Scan(domains, options,
                    p => report(new ProgressRecord(ActivityId, activity,
                        $"Pass {p.Pass}: {DisplayFormat.Count(p.PagesDone)} of {DisplayFormat.Count(p.PagesTotal)} pages")
                    {
                        PercentComplete = UntilStable
                            ? (int)(100 * p.PagesDone / Math.Max(1, p.PagesTotal))
                            : (int)Math.Min(100, (100L * (p.Pass - 1) * pages + 100 * p.PagesDone) / Math.Max(1, (long)Passes * pages)),
                        CurrentOperation = UntilStable ? $"until stable, at most {MaxPasses} passes" : $"pass {p.Pass} of {Passes}",
                    }),
                    StopToken));
                WriteObject(result);
            }
            catch (DEException ex)
            {
                WriteDEError(ex);
            }
        }
    }
}
