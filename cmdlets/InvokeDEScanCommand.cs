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
public sealed class InvokeDEScanCommand : PipedDomainCmdlet
{
    public const string PassesSet = "Passes";
    public const string UntilStableSet = "UntilStable";
    private const int ActivityId = 0x0DE2;
    private readonly GatheredDomains _domains = new();
    // Hosts a piped object without domains named (Get-DEHostStats output, a host policy): every domain of each is scanned.
    private readonly List<IDEHost> _wholeHosts = [];

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
        else if (HostOfRecordWithoutDomains() is { } whole && !_wholeHosts.Contains(whole)) _wholeHosts.Add(whole);
    }

    protected override void EndProcessing()
    {
        // -Domain given with a pipeline that brought nothing (@() | Invoke-DEScan -Domain b): ProcessRecord never ran.
        if (!_domains.Selected && Domain is not null) Gather(_domains, Domain);
        InputHost = null; // each record's host was used as it came; what follows is the whole scan's
        // Piped input that turned out empty (Get-DEDomain nomatch* | Invoke-DEScan) scans nothing, not every domain.
        bool all = !MyInvocation.BoundParameters.ContainsKey(nameof(Domain)) && !_domains.Selected && _wholeHosts.Count == 0
                   && !MyInvocation.ExpectingInput;
        if (all) _wholeHosts.Add(TargetHost);
        // Domain objects carry their host; a scan runs on one host, so objects from several make several scans. A whole
        // host is every domain of an embedded host, and a Xen host's own default: every domU with a mechanism on (domain 0
        // is never scanned).
        // A whole host is scanned as "every domain" (null), not as the list of its domains now: the host takes its domains
        // once the scan holds its lock, so a domain removed while this scan waits for another is left out, not an error.
        var whole = _wholeHosts.Select(h => (Host: h, Domains: h is XenHost ? null : (IDEDomain[]?)DomainsOf(h).ToArray()));
        List<(IDEHost Host, IDEDomain[]? Domains)> scans = [.. whole, .. _domains.Domains.Where(d => !_wholeHosts.Contains(d.Host))
            .GroupBy(d => d.Host).Select(g => (Host: g.Key, Domains: (IDEDomain[]?)g.ToArray()))];
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
                : _wholeHosts.Contains(host) ? $"all {domains.Length} domain(s) of host '{host.Name}'"
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
            // (A whole host's too: it takes its domains once the scan holds the lock, which may be after others came or went.)
            long known = host is XenHost || _wholeHosts.Contains(host) ? 0 : domains?.Sum(d => d.PageCount) ?? 0;
            const string activity = "Invoke-DEScan";
            try
            {
                var scanned = _wholeHosts.Contains(host) ? null : domains;
                var result = RunWithProgress(ActivityId, activity, report => host.Scan(scanned, options,
                    p => report(p.WaitingForOtherScan
                        ? new ProgressRecord(ActivityId, activity,
                            $"Waiting for another scan of host '{host.Name}' to end (another Invoke-DEScan, or the engine's background pass)")
                        : new ProgressRecord(ActivityId, activity,
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
