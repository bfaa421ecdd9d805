using System.Management.Automation;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Loading;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Commands;

/// <summary>
/// Creates a domain: empty, loaded from a raw image or ELF core (detected by content), a snapshot
/// of a live Linux process, or a running QEMU guest attached through libdeqemu.so (New-DEDomain). Embedded hosts only: Xen's domains are made by its toolstack.
/// </summary>
[Cmdlet(VerbsCommon.New, "DEDomain", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low,
    DefaultParameterSetName = EmptySet)]
[OutputType(typeof(Domain))]
public sealed class NewDEDomainCommand : DECmdlet
{
    public const string EmptySet = "Empty";
    public const string PathSet = "Path";
    public const string ProcessSet = "Process";
    public const string QemuSet = "Qemu";
    public const string QemuProcessSet = "QemuProcess";

    /// <summary>
    /// The new domain's name: 1 to 64 characters, no wildcards or slashes. Loading files, it may be left out: each
    /// domain is then named after its file, extension and all, as a piped file's Name names it
    /// (./images/*.img makes one domain per image: vm-a.img, vm-b.img).
    /// </summary>
    /// <remarks>
    /// Declared for every parameter set and checked in code: a Name that is mandatory in the default set only would make
    /// PowerShell bind piped files (which have a Name) to the empty-domain set and never try -Path.
    /// </remarks>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string Name { get; set; } = "";

    /// <summary>Size of an empty domain in bytes, a multiple of 4096 (256MB works); every page starts Zero.</summary>
    [Parameter(Mandatory = true, ParameterSetName = EmptySet, ValueFromPipelineByPropertyName = true)]
    public long MemorySize { get; set; }

    /// <summary>
    /// Raw page-aligned images or ELF core dumps. A path that names no file but holds wildcards (./images/*.img) loads
    /// every file that matches, one domain each; a file whose name holds wildcard characters is still taken as it is.
    /// </summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = PathSet, ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "FullName", "LiteralPath")]
    [SupportsWildcards]
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

    /// <summary>
    /// The socket of a running QEMU that has libdeqemu.so preloaded (its DE_QEMU_SOCKET): its guest becomes the domain,
    /// paged by this host from then on (docs/QEMU.md says what works yet).
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = QemuSet, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string QemuSocket { get; set; } = "";

    /// <summary>
    /// A running QEMU with libdeqemu.so preloaded, by process id: its socket is the DE_QEMU_SOCKET in its environment.
    /// </summary>
    /// <remarks>
    /// Taken from the pipeline by property name, as every other set's mandatory parameter is: a set whose mandatory
    /// parameter could not come from the pipeline would keep PowerShell from choosing among the others for piped files.
    /// </remarks>
    [Parameter(Mandatory = true, ParameterSetName = QemuProcessSet, ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, int.MaxValue)]
    public int QemuProcessId { get; set; }

    /// <summary>
    /// Pages are only ever shared among domains of one trust group ("default" unless given). Not [ValidateNotNullOrEmpty]:
    /// an empty name is the engine's PolicyTrustGroupInvalid, as every other name no trust group may have.
    /// </summary>
    [Parameter]
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
        if (ParameterSetName != PathSet && !MyInvocation.BoundParameters.ContainsKey(nameof(Name)))
            ThrowDEError(new DEException("NewDEDomainNameRequired", DEErrorKind.InvalidArgument,
                "Give the new domain a -Name: only domains loaded from files are named after them.", null));
        if (ParameterSetName == PathSet)
        {
            // A domain named after its file: a file name no domain can have is that file's failure, not a bad argument.
            bool named = MyInvocation.BoundParameters.ContainsKey(nameof(Name));
            foreach (string file in ImageFiles()) Create(() => FromFile(host, options, file), nameGiven: named);
            return;
        }
        Create(() => ParameterSetName switch
        {
            ProcessSet => FromProcess(host, options),
            QemuSet => ShouldProcess(Name, $"Attach to the QEMU guest at '{QemuSocket}' and serve its memory")
                ? host.AttachQemu(Name, GetFileSystemPath(QemuSocket, "QEMU socket", "QemuSocketNotFound"), options)
                : null,
            QemuProcessSet => ShouldProcess(Name, $"Attach to the guest of QEMU process {QemuProcessId} and serve its memory")
                ? host.AttachQemu(Name, QemuProcessId, options)
                : null,
            _ => ShouldProcess(Name, $"Create an empty domain of {DisplayFormat.Bytes(MemorySize)}")
                ? host.CreateDomain(Name, MemorySize, options)
                : null,
        });
    }

    /// <summary>
    /// Creates one domain; its failure is written and the next one goes on, but a bad argument stops the cmdlet (a
    /// DomainNameInvalid only when the name was given, not taken from a file's name).
    /// </summary>
    private void Create(Func<Domain?> create, bool nameGiven = true)
    {
        try
        {
            Domain? domain = create();
            if (domain is null) return;
            if (domain.LoadReport is { } report) WriteVerbose($"Domain '{domain.Name}': {report}");
            if (domain.LoadReport is { PagesZeroFilled: > 0 } zeroFilled)
                WriteWarning($"Domain '{domain.Name}': {zeroFilled.PagesZeroFilled:N0} of its pages have no bytes in the core (PT_LOAD " +
                             "segments whose memory, p_memsz, goes past their file bytes, p_filesz) and read as zeros: the dump left them out.");
            if (domain.QemuUnguardedReason is { } unguarded)
                WriteWarning($"Domain '{domain.Name}': the engine's mapping of the guest's RAM is not guarded ({unguarded}): " +
                             "do not read this process's memory with other tools while it serves the guest (about_DifferenceEngine).");
            if (EnableDEPatchingCommand.WithoutReferences(domain) is { } withoutReferences) WriteWarning(withoutReferences);
            if (domain.LoadReport is { RegionsSkipped: > 0 } skipped)
                foreach (string region in skipped.SkippedRegions) WriteVerbose($"Skipped {region}");
            WriteObject(domain);
        }
        catch (DEException ex) when (IsBadArgument(ex) && (nameGiven || ex.ErrorId != "DomainNameInvalid"))
        {
            ThrowDEError(ex);
        }
        catch (DEException ex)
        {
            WriteDEError(ex);
        }
        catch (OperationCanceledException) when (StopToken.IsCancellationRequested)
        {
            throw new PipelineStoppedException(); // Ctrl-C while a source was opened (a process's page map, a core's headers)
        }
    }

    /// <summary>
    /// A value of this call that no domain could be made with (a size, a name, a process id, a policy value): it stops
    /// the cmdlet, as a bad argument does everywhere. A file that cannot be loaded is that file's failure only.
    /// </summary>
    private static bool IsBadArgument(DEException ex) =>
        ex.ErrorId is "MemorySizeInvalid" or "DomainNameInvalid" or "ProcessIdInvalid" or "CompressionAlgorithmInvalid"
            or "CompressionAlgorithmUnknown" or "QemuSocketPathInvalid" or "QemuMechanismNotYetSupported" || ex.ErrorId.StartsWith("Policy", StringComparison.Ordinal);

    /// <summary>
    /// The files to load: -Path as it is when it names a file, or that does not exist and holds no wildcards (then
    /// FileNotFound, written); otherwise every file it matches (none is no error). -Name with several files is a bad argument.
    /// </summary>
    private IReadOnlyList<string> ImageFiles()
    {
        string literal;
        try
        {
            literal = GetFileSystemPath(Path, "memory image", "FileNotFound");
        }
        catch (DEException ex)
        {
            WriteDEError(ex);
            return [];
        }
        if (File.Exists(literal) || !WildcardPattern.ContainsWildcardCharacters(Path)) return [literal];
        List<string> files;
        try
        {
            files = SessionState.Path.GetResolvedProviderPathFromPSPath(Path, out ProviderInfo provider)
                .Where(f => provider.Name == "FileSystem" && File.Exists(f)).Order(StringComparer.Ordinal).ToList();
        }
        catch (ItemNotFoundException)
        {
            files = [];
        }
        if (files.Count > 1 && MyInvocation.BoundParameters.ContainsKey(nameof(Name)))
            ThrowDEError(new DEException("NewDEDomainNameForSeveralFiles", DEErrorKind.InvalidArgument,
                $"'{Path}' matches {files.Count} files, and one -Name cannot name them all: leave -Name out to name each " +
                "domain after its file.", Path));
        return files;
    }

    private Domain? FromFile(DEHost host, DomainOptions options, string path)
    {
        string name = MyInvocation.BoundParameters.ContainsKey(nameof(Name)) ? Name : System.IO.Path.GetFileName(path);
        if (!ShouldProcess(name, $"Create a domain from '{path}'")) return null;
        using var source = MemorySource.OpenFile(path, Format switch
        {
            ImageFormat.Raw => MemorySourceFormat.RawImage,
            ImageFormat.ElfCore => MemorySourceFormat.ElfCore,
            _ => null,
        }, StopToken);
        return Load(host, name, source, options);
    }

    private Domain? FromProcess(DEHost host, DomainOptions options)
    {
        if (!ShouldProcess(Name, $"Create a domain from a snapshot of process {ProcessId}")) return null;
        using var source = MemorySource.OpenProcess(ProcessId, StopToken);
        return Load(host, Name, source, options);
    }

    /// <summary>Loads on a worker while the pipeline thread shows how much is laid out; Ctrl-C stops the load.</summary>
    private Domain Load(DEHost host, string name, MemorySource source, DomainOptions options)
    {
        string activity = $"New-DEDomain {name}: loading {source.Description}";
        long total = source.PageCount;
        return RunWithProgress(ActivityId, activity, report => host.LoadDomain(name, source, options, done =>
            report(new ProgressRecord(ActivityId, activity,
                $"{DisplayFormat.Bytes(done * PageGeometry.PageSize)} of {DisplayFormat.Bytes(total * PageGeometry.PageSize)}")
            {
                PercentComplete = total == 0 ? 100 : (int)Math.Min(100, 100 * done / total),
            }), StopToken));
    }

    private const int ActivityId = 0x0DE3;
}
