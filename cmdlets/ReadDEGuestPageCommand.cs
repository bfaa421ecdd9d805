using System.Management.Automation;

namespace DifferenceEngine.Commands;

/// <summary>
/// Reads guest pages through the engine, as the guest would: the read sets the page's referenced
/// bit, which the clock sees (Read-DEGuestPage). On Xen the read leaves the guest alone: a read-only mapping,
/// or the pager's own copy of a page it holds (the page is not paged back in).
/// </summary>
[Cmdlet(VerbsCommunications.Read, "DEGuestPage")]
[OutputType(typeof(GuestPage))]
[OutputType(typeof(byte[]))]
public sealed class ReadDEGuestPageCommand : GuestPageCmdlet
{
    /// <summary>Output each page's bytes as a plain byte[] instead of a GuestPage object.</summary>
    [Parameter]
    public SwitchParameter Raw { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var (domain, gfn) in Pages())
        {
            if (!TryItem(() => domain.ReadPage(gfn), out byte[] bytes)) continue;
            if (Raw) WriteObject(bytes, enumerateCollection: false);
            else WriteObject(new GuestPage(domain.Host.Name, domain.Name, gfn, bytes));
        }
    }
}
