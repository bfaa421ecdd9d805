using System.Management.Automation;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>Creates an embedded host, optionally with a memory limit and a swap file, and makes it the current one (Connect-DEHost).</summary>
[Cmdlet(VerbsCommunications.Connect, "DEHost", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low,
    DefaultParameterSetName = EmbeddedSet)]
[OutputType(typeof(DEHost))]
public sealed class ConnectDEHostCommand : DECmdlet
{
    public const string EmbeddedSet = "Embedded";
    public const string XenSet = "Xen";

    /// <summary>Connect to the local Xen hypervisor (dom0) instead of creating an embedded host.</summary>
    [Parameter(Mandatory = true, ParameterSetName = XenSet)]
    public SwitchParameter Xen { get; set; }

    /// <summary>The host's name; one connected host per name.</summary>
    [Parameter(Position = 0)]
    [ValidateNotNullOrEmpty]
    public string Name { get; set; } = new HostOptions().Name;

    /// <summary>The most memory the host may use for guest pages (frames and the compact store), in bytes (2GB works); none by default.</summary>
    [Parameter(ParameterSetName = EmbeddedSet)]
    public long MemoryLimit { get; set; }

    /// <summary>
    /// A new file to page guest memory out to when the limit is reached: created with mode 0600, removed
    /// by Disconnect-DEHost. Needs -MemoryLimit. Resolved like other paths (relative to the current location).
    /// </summary>
    [Parameter(ParameterSetName = EmbeddedSet)]
    [ValidateNotNullOrEmpty]
    public string? SwapPath { get; set; }

    /// <summary>Size of the swap file in bytes, a multiple of 4096 (4GB works); 4 GiB by default. Needs -SwapPath.</summary>
    [Parameter(ParameterSetName = EmbeddedSet)]
    public long SwapSize { get; set; }

    /// <summary>Seed of the similarity detector's block offsets, for repeatable runs; random by default (see Get-DEPolicy -HostPolicy).</summary>
    [Parameter(ParameterSetName = EmbeddedSet)]
    public int SimilaritySeed { get; set; }

    /// <summary>Output the new host.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>Not used: Connect-DEHost makes hosts.</summary>
    public override DEHost? DEHost { get; set; }

    protected override void EndProcessing()
    {
        if (Xen)
        {
            ConnectXen();
            return;
        }
        bool limited = MyInvocation.BoundParameters.ContainsKey(nameof(MemoryLimit));
        bool sized = MyInvocation.BoundParameters.ContainsKey(nameof(SwapSize));
        if (sized && SwapPath is null)
            ThrowDEError(new DEException("ConnectDEHostSwapSizeNeedsSwapPath", DEErrorKind.InvalidArgument,
                "-SwapSize sizes the swap file: give -SwapPath too.", SwapSize));
        string? swapPath = null;
        try
        {
            if (SwapPath is not null) swapPath = GetFileSystemPath(SwapPath, "swap file", "SwapDirectoryNotFound");
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
        }
        string limit = limited ? DisplayFormat.Bytes(MemoryLimit) : "no";
        string swap = swapPath is null ? "" : $" and a {(sized ? DisplayFormat.Bytes(SwapSize) + " " : "")}swap file '{swapPath}'";
        if (!ShouldProcess(Name, $"Connect an embedded host with {limit} memory limit{swap}")) return;
        DEHost? host = null;
        try
        {
            host = new DEHost(new HostOptions
            {
                Name = Name,
                MemoryLimitBytes = limited ? MemoryLimit : null,
                SwapPath = swapPath,
                SwapSizeBytes = sized ? SwapSize : null,
                SimilaritySeed = MyInvocation.BoundParameters.ContainsKey(nameof(SimilaritySeed)) ? SimilaritySeed : null,
            });
            HostRegistry.Add(host);
        }
        catch (DEException ex)
        {
            host?.Dispose();
            ThrowDEError(ex);
            return;
        }
        if (PassThru) WriteObject(host);
    }

    /// <summary>
    /// Opens the local Xen (fails at once with "XenNotAvailable" without /dev/xen/privcmd). The engine's
    /// Xen backend (DifferenceEngine.Xen: listing, sharing through memshr, the mem_paging pager) is a .NET
    /// API so far; driving Xen domains through these cmdlets is not built yet, and the cmdlet says so.
    /// </summary>
    private void ConnectXen()
    {
        if (!ShouldProcess("local Xen hypervisor", "Connect")) return;
        try
        {
            using var connection = DifferenceEngine.Xen.XenConnection.Open();
            int domains = connection.ListDomains().Count;
            ThrowDEError(new DEException("XenCmdletsNotBuilt", DEErrorKind.NotImplemented,
                $"Connected to Xen ({domains} domains), but managing Xen domains through the cmdlets is not built yet: " +
                "use the DifferenceEngine.Xen API (XenConnection, XenSharing, XenPager) from .NET. See docs/XEN.md.", "xen"));
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
        }
    }
}
