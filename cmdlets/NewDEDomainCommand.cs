using System.Management.Automation;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Loading;

namespace DifferenceEngine.Commands;

/// <summary>
/// Creates a domain: empty, loaded from a raw image or ELF core (detected by content), or a snapshot
/// of a live Linux process (New-DEDomain). Embedded hosts only: Xen's domains are made by its toolstack.
/// </summary>
[Cmdlet(VerbsCommon.New, "DEDomain", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low,
    DefaultParameterSetName = EmptySet)]
[OutputType(typeof(Domain))]
public sealed class NewDEDomainCommand : DECmdlet
{
    public const string EmptySet = "Empty";
    public const string PathSet = "Path";
    public const string ProcessSet = "Process";

    /// <summary>The new domain's name: 1 to 64 characters, no wildcards or slashes.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string Name { get; set; } = "";

    /// <summary>Size of an empty domain in bytes, a multiple of 4096 (256MB works); every page starts Zero.</summary>
    [Parameter(Mandatory = true, ParameterSetName = EmptySet, ValueFromPipelineByPropertyName = true)]
    public long MemorySize { get; set; }

    /// <summary>A raw page-aligned image or an ELF core dump; taken literally (no wildcards).</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = PathSet, ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "FullName", "LiteralPath")]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    /// <summary>
    /// How to read -Path: Auto detects by content (a file is a core when its ELF header says ET_CORE, anything
    /// else is raw); Raw takes the bytes as they are; ElfCore insists on a core.
    /// </summary>
    [Parameter(ParameterSetName = PathSet)]
    public ImageFormat Format { get; set; } = ImageFormat.Auto;

    /// <summary>A live Linux process whose readable memory is copied (a snapshot, not a live view).</summary>
    [Parameter(Mandatory = true, ParameterSetName = ProcessSet, ValueFromPipelineByPropertyName = true)]
    public int ProcessId { get; set; }

    /// <summary>Pages are only ever shared among domains of one trust group ("default" unless given).</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string TrustGroup { get; set; } = DomainPolicy.DefaultTrustGroup;

    /// <summary>Sweeps without access after which a page counts as C4 (1 to 15).</summary>
    [Parameter]
    [ValidateRange(1, 15)]
    public int C4Sweeps { get; set; } = DomainPolicy.DefaultC4Sweeps;

    /// <summary>Let scans merge this domain's pages from the start (see Enable-DESharing).</summary>
    [Parameter]
    public SwitchParameter EnableSharing { get; set; }

    /// <summary>Let scans store this domain's similar pages as patches from the start (see Enable-DEPatching).</summary>
    [Parameter]
    public SwitchParameter EnablePatching { get; set; }

    /// <summary>Let scans compress this domain's cold pages from the start (see Enable-DECompression).</summary>
    [Parameter]
    public SwitchParameter EnableCompression { get; set; }

    /// <summary>The codec for compressed pages: LZ4 (the default), WKdm or Zstd.</summary>
    [Parameter]
    public CompressionAlgorithm CompressionAlgorithm { get; set; } = new DomainOptions().CompressionAlgorithm;

    /// <summary>What to use on a Xen host instead.</summary>
    internal const string XenInstead =
        "Xen's domains are created by its toolstack (xl create); Get-DEDomain lists them, and the Enable- cmdlets treat them.";

    protected override void ProcessRecord()
    {
        var host = EmbeddedHost(XenInstead);
        var options = new DomainOptions
        {
            TrustGroup = TrustGroup,
            C4Sweeps = C4Sweeps,
            SharingEnabled = EnableSharing,
            PatchingEnabled = EnablePatching,
            CompressionEnabled = EnableCompression,
            CompressionAlgorithm = CompressionAlgorithm,
        };
        try
        {
            Domain? domain = ParameterSetName switch
            {
                PathSet => FromFile(host, options),
                ProcessSet => FromProcess(host, options),
                _ => ShouldProcess(Name, $"Create an empty domain of {DisplayFormat.Bytes(MemorySize)}")
                    ? host.CreateDomain(Name, MemorySize, options)
                    : null,
            };
            if (domain is null) return;
            if (domain.LoadReport is { } report) WriteVerbose($"Domain '{domain.Name}': {report}");
            if (domain.LoadReport is { RegionsSkipped: > 0 } skipped)
                foreach (string region in skipped.SkippedRegions) WriteVerbose($"Skipped {region}");
            WriteObject(domain);
        }
        catch (DEException ex)
        {
            WriteDEError(ex);
        }
    }

    private Domain? FromFile(DEHost host, DomainOptions options)
    {
        string path = GetFileSystemPath(Path, "memory image", "FileNotFound");
        if (!ShouldProcess(Name, $"Create a domain from '{path}'")) return null;
        using var source = MemorySource.OpenFile(path, Format switch
        {
            ImageFormat.Raw => MemorySourceFormat.RawImage,
            ImageFormat.ElfCore => MemorySourceFormat.ElfCore,
            _ => null,
        });
        return Cancellable(() => host.LoadDomain(Name, source, options, StopToken));
    }

    private Domain? FromProcess(DEHost host, DomainOptions options)
    {
        if (!ShouldProcess(Name, $"Create a domain from a snapshot of process {ProcessId}")) return null;
        using var source = MemorySource.OpenProcess(ProcessId);
        return Cancellable(() => host.LoadDomain(Name, source, options, StopToken));
    }
}
