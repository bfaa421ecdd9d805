using System.Management.Automation;
using DifferenceEngine.Domains;

namespace DifferenceEngine.Commands;

/// <summary>
/// Snapshots of guest pages' entries (state, clock category, referenced/modified bits, reference count,
/// hash), streamed in gfn order; never the page bytes (see Read-DEGuestPage) (Get-DEPage). Embedded hosts only.
/// </summary>
[Cmdlet(VerbsCommon.Get, "DEPage")]
[OutputType(typeof(PageInfo))]
public sealed class GetDEPageCommand : PipedDomainCmdlet
{
    /// <summary>The domains (names, patterns or Domain objects), listed one after the other.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[] Domain { get; set; } = [];

    /// <summary>
    /// Only these guest frame numbers; every page by default. Binds by property name, so a piped page (Get-DEPage output, a
    /// CSV of it) gives its own gfn, and a piped domain (no Gfn property) every page.
    /// </summary>
    [Parameter(Position = 1, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public long[]? Gfn { get; set; }

    /// <summary>Only pages in these states.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public PageState[]? State { get; set; }

    /// <summary>Only pages in these clock categories.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public PageCategory[]? Category { get; set; }

    /// <summary>What to use on a Xen host instead.</summary>
    internal const string XenInstead =
        "The engine keeps no page entries for Xen domains; Get-DEPageStats counts their pages per state and Read-DEGuestPage reads a page.";

    protected override void ProcessRecord()
    {
        foreach (var domain in ResolveEmbeddedDomains(Domain, XenInstead))
        {
            IEnumerable<long> gfns = Gfn ?? LongRange(domain.PageCount);
            foreach (long gfn in gfns)
            {
                if (StopToken.IsCancellationRequested) return;
                PageInfo page;
                try
                {
                    // The unlocked peek skips most non-matching pages cheaply; the locked snapshot decides.
                    if (State is not null && Gfn is null && Array.IndexOf(State, domain.PeekState(gfn)) < 0) continue;
                    page = domain.GetPage(gfn);
                }
                catch (DEException ex)
                {
                    WriteDEError(ex);
                    if (ex.ErrorId is "DomainRemoved" or "HostDisconnected") break;
                    continue;
                }
                if (State is not null && Array.IndexOf(State, page.State) < 0) continue;
                if (Category is not null && Array.IndexOf(Category, page.Category) < 0) continue;
                WriteObject(page);
            }
        }
    }

    private static IEnumerable<long> LongRange(long count)
    {
        for (long i = 0; i < count; i++) yield return i;
    }
}
