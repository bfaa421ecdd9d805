using System.Management.Automation;
using DifferenceEngine.Domains;

namespace DifferenceEngine.Commands;

/// <summary>
/// Writes bytes into guest pages through the engine, servicing a zero-fill or copy-on-write fault
/// first when the page has no frame of its own (Write-DEGuestPage). Every page addressed gets the same data.
/// Embedded hosts only: on Xen the guest writes its own memory.
/// </summary>
[Cmdlet(VerbsCommunications.Write, "DEGuestPage", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(GuestPageWrite))]
public sealed class WriteDEGuestPageCommand : GuestPageCmdlet
{
    /// <summary>The bytes to write (at most 4096 - Offset). Bytes of a GuestPage bind by property name.</summary>
    [Parameter(Mandatory = true, Position = 2, ValueFromPipelineByPropertyName = true)]
    [Alias("Bytes")]
    [ValidateNotNull]
    public byte[] Data { get; set; } = [];

    /// <summary>Where in the page the data goes.</summary>
    [Parameter]
    [ValidateRange(0, 4095)]
    public int Offset { get; set; }

    /// <summary>Output a GuestPageWrite per page, with the fault the write took.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>What to use on a Xen host instead.</summary>
    internal const string XenInstead = "On Xen the guest writes its own memory; Read-DEGuestPage reads it.";

    protected override void ProcessRecord()
    {
        // Data that does not fit in a page from Offset is wrong for every page: one terminating error, before any is touched.
        if (Offset + Data.Length > Memory.PageGeometry.PageSize)
            ThrowDEError(new DEException("WriteOutsidePage", DEErrorKind.InvalidArgument,
                $"{Data.Length} bytes at offset {Offset} go past the end of a page ({Memory.PageGeometry.PageSize} bytes): give at most {Memory.PageGeometry.PageSize - Offset} bytes.",
                Data.Length));
        foreach (var (domain, gfn) in EmbeddedPages(XenInstead))
        {
            if (!ShouldProcess($"{domain.Name} page {gfn}", $"Write {Data.Length} bytes at offset {Offset}")) continue;
            if (!TryItem(() => domain.WritePage(gfn, Data, Offset), out FaultKind fault)) continue;
            if (PassThru) WriteObject(new GuestPageWrite(domain.Host.Name, domain.Name, gfn, Offset, Data.Length, fault));
        }
    }
}
