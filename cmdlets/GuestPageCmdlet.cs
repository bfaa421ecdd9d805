using System.Management.Automation;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>What Read-DEGuestPage and Write-DEGuestPage share: the domain and the pages they address.</summary>
public abstract class GuestPageCmdlet : PipedDomainCmdlet
{
    /// <summary>The domains (names, patterns, Domain or XenDomain objects; on a Xen host also domain ids): each is addressed in turn.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[] Domain { get; set; } = [];

    /// <summary>Guest frame numbers of the pages (Get-DEPage output binds by property name).</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public long[] Gfn { get; set; } = [];

    /// <summary>Every (domain, gfn) addressed, domains resolved (unknown names written as errors).</summary>
    protected IEnumerable<(IDEDomain Domain, long Gfn)> Pages()
    {
        foreach (var domain in ResolveDomains(Domain))
            foreach (long gfn in Gfn)
                yield return (domain, gfn);
    }

    /// <summary>
    /// <see cref="Pages"/> for a cmdlet that works on embedded hosts only: a Xen host or domain terminates with
    /// "NotSupportedOnXenHost", saying <paramref name="instead"/>.
    /// </summary>
    protected IEnumerable<(Domain Domain, long Gfn)> EmbeddedPages(string instead)
    {
        foreach (var domain in ResolveEmbeddedDomains(Domain, instead))
            foreach (long gfn in Gfn)
                yield return (domain, gfn);
    }
}
