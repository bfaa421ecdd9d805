using System.Management.Automation;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;
using DifferenceEngine.Scanning;

namespace DifferenceEngine.Commands;

/// <summary>
/// Runs the engine's passes (clock sweep, then merging of zero and identical pages where sharing is
/// on) over domains in parallel, synchronously, with progress (Invoke-DEScan). Pipeline input is
/// gathered; one scan runs over all the domains at the end. On a Xen host a pass reads each domain's pages through
/// Xen, ages them by content, shares through memshr, and patches and compresses by evicting pages to the pager.
/// </summary>
[Cmdlet(VerbsLifecycle.Invoke, "DEScan", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low,
    DefaultParameterSetName = PassesSet)]
[OutputType(typeof(ScanResult))]
public sealed class InvokeDEScanCommand : DECmdlet
{
    public const string PassesSet = "Passes";
    public const string UntilStableSet = "UntilStable";
    private const int ActivityId = 0x0DE2;
    private readonly GatheredDomains _domains = new();

    /// <summary>
    /// The domains to scan (names, patterns, Domain or XenDomain objects); by default every domain of an embedded host, and
    /// every domU with a mechanism on of a Xen host.
    /// </summary>
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
        if (Domain is not null) Gather(_domains, Domain);
    }

    protected override void EndProcessing()
    {
        // -Domain given with a pipeline that brought nothing (@() | Invoke-DEScan -Domain b): ProcessRecord never ran.
        if (!_domains.Selected && Domain is not null) Gather(_domains, Domain);
        // Piped input that turned out empty (Get-DEDomain nomatch* | Invoke-DEScan) scans nothing, not every domain.
        bool all = !MyInvocation.BoundParameters.ContainsKey(nameof(Domain)) && !_domains.Selected && !MyInvocation.ExpectingInput;
        // Domain objects carry their host; a scan runs on one host, so objects from several make several scans.
        // A Xen host's default is its own: every domU with a mechanism on (domain 0 is never scanned).
        List<(IDEHost Host, IDEDomain[]? Domains)> scans = all
            ? [(TargetHost, TargetHost is XenHost ? null : DomainsOf(TargetHost).ToArray())]
            : _domains.Domains.GroupBy(d => d.Host)
                .Select(g => (Host: g.Key, Domains: (IDEDomain[]?)g.ToArray())).ToList();
        var options = new ScanOptions
        {
            Passes = Passes,
            UntilStable = UntilStable,
            MaxPasses = MaxPasses,
            Parallelism = ThrottleLimit,
        };
        string passes = UntilStable ? $"passes until stable (at most {MaxPasses})" : $"{Passes} pass(es)";
        foreach (var (host, given) in scans)
        {
            var domains = given;
            string target = domains is null ? $"every domain with a mechanism on of Xen host '{host.Name}'"
                : all ? $"all {domains.Length} domain(s) of host '{host.Name}'"
                : string.Join(", ", domains.Select(d => d.Name));
            if (!ShouldProcess(target, $"Scan: {passes}")) continue;
            if (domains is not null && host is XenHost)
            {
                // Domain 0 runs the engine and is never scanned: it is written as an error and the others are scanned.
                foreach (var control in domains.OfType<XenDomain>().Where(d => d.IsControlDomain))
                    WriteDEError(new DEException("XenControlDomainNotTreated", DEErrorKind.InvalidOperation,
                        $"Domain 0 ('{control.Name}') runs the engine itself: scans are only for guest domains (domUs).", control.Name));
                domains = domains.Where(d => d is not XenDomain { IsControlDomain: true }).ToArray();
                if (domains.Length == 0) continue;
            }
            // Progress in the embedded host's pages; a Xen scan reports its own total (every gfn up to each domain's highest).
            long known = host is XenHost ? 0 : domains?.Sum(d => d.PageCount) ?? 0;
            const string activity = "Invoke-DEScan";
            try
            {
                var result = RunWithProgress(ActivityId, activity, report => host.Scan(domains, options,
                    p => report(new ProgressRecord(ActivityId, activity,
                        $"Pass {p.Pass}: {DisplayFormat.Count(p.PagesDone)} of {DisplayFormat.Count(p.PagesTotal)} pages")
                    {
                        PercentComplete = UntilStable
                            ? (int)(100 * p.PagesDone / Math.Max(1, p.PagesTotal))
                            : Percent(p, known > 0 ? known : p.PagesTotal),
                        CurrentOperation = UntilStable ? $"until stable, at most {MaxPasses} passes" : $"pass {p.Pass} of {Passes}",
                    }),
                    StopToken));
                if (result.WarmUpWait >= TimeSpan.FromMilliseconds(1))
                    WriteVerbose($"Waited {result.WarmUpWait.TotalMilliseconds:N0} ms before the first pass for the engine's code to be optimized " +
                                 $"(the warm-up of a new session; at most {DifferenceEngine.Hosting.DEHost.MaxWarmUpWait.TotalSeconds:0} s).");
                WriteObject(result);
            }
            catch (DEException ex)
            {
                WriteDEError(ex);
            }
        }
    }

    // Done of all passes: the passes before this one are whole.
    private int Percent(ScanProgress p, long pagesPerPass) =>
        (int)Math.Min(100, (100L * (p.Pass - 1) * pagesPerPass + 100 * p.PagesDone) / Math.Max(1, (long)Passes * pagesPerPass));
}
