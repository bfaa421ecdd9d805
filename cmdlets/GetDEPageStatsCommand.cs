using System.Management.Automation;
using DifferenceEngine.Hosting;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Commands;

/// <summary>Pages per state and the memory each domain uses and saves, one object per domain (Get-DEPageStats).</summary>
[Cmdlet(VerbsCommon.Get, "DEPageStats")]
[OutputType(typeof(DomainPageStats))]
public sealed class GetDEPageStatsCommand : PipedDomainCmdlet
{
    /// <summary>
    /// The domains (names, patterns, Domain or XenDomain objects, domain ids on Xen); by default every domain of the host
    /// but a Xen host's domain 0, which is not treated and not in the host's figures (Get-DEHostStats, reports), so that the
    /// rows add up to them. Given (by name, id, pattern or object), domain 0 gets a row too, measured alone.
    /// </summary>
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[]? Domain { get; set; }

    protected override void ProcessRecord()
    {
        // One snapshot per host for all the domains asked for at once, so that their rows add up with each other and with
        // Get-DEHostStats to the byte (docs/REPORT-SCHEMA.md): measured one by one, with the engine running, each row would
        // be of another moment, and a page merged in between would be charged twice. A domain the snapshot does not have
        // (one made after it was taken) is measured alone; one removed meanwhile is DomainRemoved.
        var snapshots = new Dictionary<IDEHost, HostSnapshot?>(ReferenceEqualityComparer.Instance);
        var domains = Domain is not null ? ResolveDomainsOrAll(Domain)
            : ResolveDomainsOrAll(null).Where(d => d is not Xen.XenDomain { IsControlDomain: true });
        foreach (var domain in domains)
        {
            if (!snapshots.TryGetValue(domain.Host, out var snapshot))
                snapshots[domain.Host] = snapshot = TryItem(() => domain.Host.TakeSnapshot(StopToken), out var taken) ? taken : null;
            if (snapshot?.Find(domain.Id) is { } row) WriteObject(row);
            else if (snapshot is not null && Measured(domain) is { } alone) WriteObject(alone);
        }
    }

    /// <summary>
    /// A domain's page stats measured alone; null, after writing the error, when that fails. A domain removed since it was
    /// found is "DomainRemoved", as for a removed domain object (the engine calls it DomainNotFound).
    /// </summary>
    private DomainPageStats? Measured(IDEDomain domain)
    {
        try
        {
            if (!domain.IsRemoved) return domain.GetPageStats(StopToken);
        }
        catch (DEException ex) when (!domain.IsRemoved)
        {
            WriteDEError(ex);
            return null;
        }
        catch (DEException)
        {
            // removed while it was measured: said as below
        }
        catch (OperationCanceledException) when (StopToken.IsCancellationRequested)
        {
            throw new PipelineStoppedException();
        }
        WriteDEError(DomainRemoved(domain));
        return null;
    }
}
