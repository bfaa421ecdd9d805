using System.Management.Automation;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// Creates an embedded host, optionally with a memory limit and a swap file, or with -Xen connects to the local Xen
/// hypervisor from dom0, and makes the new host the current one (Connect-DEHost).
/// </summary>
[Cmdlet(VerbsCommunications.Connect, "DEHost", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low,
    DefaultParameterSetName = EmbeddedSet)]
[OutputType(typeof(DEHost), ParameterSetName = [EmbeddedSet])]
[OutputType(typeof(XenHost), ParameterSetName = [XenSet])]
public sealed class ConnectDEHostCommand : DECmdlet
{
    public const string EmbeddedSet = "Embedded";
    public const string XenSet = "Xen";

    /// <summary>
    /// Connect to the local Xen hypervisor (dom0) instead of creating an embedded host: its domains are Xen's, shared
    /// through memshr and paged by this host's pager. Fails at once with "XenNotAvailable" on a machine without Xen.
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = XenSet)]
    public SwitchParameter Xen { get; set; }

    /// <summary>The host's name; one connected host per name. "embedded" by default, "xen" with -Xen.</summary>
    [Parameter(Position = 0)]
    [ValidateNotNullOrEmpty]
    public string Name { get; set; } = new HostOptions().Name;

    /// <summary>
    /// Embedded: the most memory the host may use for guest pages (frames and the compact store), in bytes (2GB works);
    /// none by default. Xen: the most memory the pager may hold for the pages it took (compressed pages, patches,
    /// references) before it writes the oldest to -SwapPath; needs -SwapPath; none by default.
    /// </summary>
    [Parameter(ParameterSetName = EmbeddedSet)]
    [Parameter(ParameterSetName = XenSet)]
    public long MemoryLimit { get; set; }

    /// <summary>
    /// A new file to page guest memory out to (embedded: when the limit is reached; Xen: the pager's pages over its
    /// limit): created with mode 0600, removed by Disconnect-DEHost. Embedded hosts need -MemoryLimit with it.
    /// Resolved like other paths (relative to the current location).
    /// </summary>
    [Parameter(ParameterSetName = EmbeddedSet)]
    [Parameter(ParameterSetName = XenSet)]
    [ValidateNotNullOrEmpty]
    public string? SwapPath { get; set; }

    /// <summary>
    /// The folder for the crash journals of QEMU domains (unnamed files, mode 0600): every page the engine takes out of a
    /// guest is written there, so that an engine started after this one died serves it. On a disk, not tmpfs. The swap
    /// file's folder by default, else /var/tmp.
    /// </summary>
    [Parameter(ParameterSetName = EmbeddedSet)]
    [ValidateNotNullOrEmpty]
    public string? JournalPath { get; set; }

    /// <summary>Size of the swap file in bytes, a multiple of 4096 (4GB works); 4 GiB by default. Needs -SwapPath.</summary>
    [Parameter(ParameterSetName = EmbeddedSet)]
    [Parameter(ParameterSetName = XenSet)]
    public long SwapSize { get; set; }

    /// <summary>Seed of the similarity detector's block offsets, for repeatable runs; random by default (see Get-DEPolicy -HostPolicy).</summary>
    [Parameter(ParameterSetName = EmbeddedSet)]
    [Parameter(ParameterSetName = XenSet)]
    public int SimilaritySeed { get; set; }

    /// <summary>Output the new host.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>Not used: Connect-DEHost makes hosts.</summary>
    public override IDEHost? DEHost { get; set; }

    private bool Bound(string parameter) => MyInvocation.BoundParameters.ContainsKey(parameter);

    protected override void EndProcessing()
    {
        bool limited = Bound(nameof(MemoryLimit));
        bool sized = Bound(nameof(SwapSize));
        if (sized && SwapPath is null)
            ThrowDEError(new DEException("ConnectDEHostSwapSizeNeedsSwapPath", DEErrorKind.InvalidArgument,
                "-SwapSize sizes the swap file: give -SwapPath too.", SwapSize));
        string? swapPath = null, journalPath = null;
        try
        {
            if (SwapPath is not null) swapPath = GetFileSystemPath(SwapPath, "swap file", "SwapDirectoryNotFound");
            if (JournalPath is not null) journalPath = GetFileSystemPath(JournalPath, "journal folder", "JournalDirectoryNotFound");
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
        }
        int? seed = Bound(nameof(SimilaritySeed)) ? SimilaritySeed : null;
        if (Xen)
        {
            ConnectXen(limited ? MemoryLimit : null, swapPath, sized ? SwapSize : null, seed);
            return;
        }
        string limit = limited ? DisplayFormat.Bytes(MemoryLimit) : "no";
        string swap = swapPath is null ? "" : $" and a {(sized ? DisplayFormat.Bytes(SwapSize) + " " : "")}swap file '{swapPath}'";
        if (!ShouldProcess(Name, $"Connect an embedded host with {limit} memory limit{swap}")) return;
        DEHost? host = null;
        try
        {
            HostRegistry.CheckFree(Name, xen: false); // before a swap file is made for a name that is taken
            host = new DEHost(new HostOptions
            {
                Name = Name,
                MemoryLimitBytes = limited ? MemoryLimit : null,
                SwapPath = swapPath,
                SwapSizeBytes = sized ? SwapSize : null,
                SimilaritySeed = seed,
                JournalDirectory = journalPath,
            });
            HostRegistry.Add(host);
        }
        catch (DEException ex)
        {
            ConnectFailed(host, ex);
            return;
        }
        if (PassThru) WriteObject(host);
    }

    /// <summary>
    /// A name already taken (HostExists) is a failure of this one host, as New-Item's on an existing item: written, and
    /// -ErrorAction decides. Anything else is a bad argument or a machine that cannot give what was asked: the cmdlet stops.
    /// </summary>
    private void ConnectFailed(IDEHost? host, DEException ex)
    {
        host?.Dispose();
        if (ex.ErrorId == "HostExists") WriteDEError(ex);
        else ThrowDEError(ex);
    }

    /// <summary>
    /// Connects to the local Xen: "XenNotAvailable" at once without /dev/xen/privcmd, "XenPermissionDenied" when not
    /// root, "XenShimNotFound" without the shim or Xen's libraries. The host lists Xen's domains; the mechanisms are
    /// turned on per domain by the Enable- cmdlets.
    /// </summary>
    private void ConnectXen(long? limit, string? swapPath, long? swapSize, int? seed)
    {
        string name = Bound(nameof(Name)) ? Name : new XenHostOptions().Name;
        string pager = limit is { } l ? $"a pager limited to {DisplayFormat.Bytes(l)}" : "a pager without a memory limit";
        string swap = swapPath is null ? "" : $" and a {(swapSize is { } s ? DisplayFormat.Bytes(s) + " " : "")}swap file '{swapPath}'";
        if (!ShouldProcess(name, $"Connect to the local Xen hypervisor (dom0) with {pager}{swap}")) return;
        XenHost? host = null;
        try
        {
            HostRegistry.CheckFree(name, xen: true);
            host = XenHost.Connect(new XenHostOptions
            {
                Name = name,
                PagerMemoryLimitBytes = limit,
                SwapPath = swapPath,
                SwapSizeBytes = swapSize,
                SimilaritySeed = seed,
            });
            HostRegistry.Add(host);
        }
        catch (DEException ex)
        {
            ConnectFailed(host, ex);
            return;
        }
        WriteVerbose($"Connected to Xen as host '{name}': {host.Domains.Count} domain(s), domain 0 included.");
        if (PassThru) WriteObject(host);
    }
}
