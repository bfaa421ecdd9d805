using System.Management.Automation;
using DifferenceEngine.Fleet;
using DifferenceEngine.Loading;

namespace DifferenceEngine.Commands;

/// <summary>
/// A compact, fleet-keyed sketch of each domain from one read-only pass over its pages (Get-DEFingerprint): the input of
/// Measure-DEColocation and Get-DEPlacement. Of the current host's domains, or of memory images and cores given with -Path.
/// A piped object's domain is found on the host its Host property names (<see cref="PipedDomainCmdlet"/>), as for every
/// cmdlet that takes domains: <c>Get-DEPageStats -DEHost lab web1 | Get-DEFingerprint</c> fingerprints lab's web1, and a row
/// of a host not connected is "HostNotFound". With -Path the Host names the host the images stand for
/// (<see cref="FileHostName"/>), so -Host stays short for -HostName there.
/// </summary>
[Cmdlet(VerbsCommon.Get, "DEFingerprint", DefaultParameterSetName = DomainSet)]
[OutputType(typeof(DomainFingerprint))]
public sealed class GetDEFingerprintCommand : PipedDomainCmdlet
{
    private const string DomainSet = "Domain";
    private const string PathSet = "Path";
    private const int ActivityId = 7;
    private FleetKey? _key;
    private int _shift;

    /// <summary>The domains (names, patterns, Domain or XenDomain objects); every domain of the host by default (on Xen, domain 0 only when given).</summary>
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true, ParameterSetName = DomainSet)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    [Alias("Name")]
    public DomainSelector[]? Domain { get; set; }

    /// <summary>Memory images or ELF cores to fingerprint without loading them (each named by its file name).</summary>
    [Parameter(Mandatory = true, ParameterSetName = PathSet, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [Alias("FullName", "PSPath", "LiteralPath")]
    public string[] Path { get; set; } = [];

    /// <summary>
    /// -Path: the host the images stand for in the fingerprints; by default the Host of the piped object (-Host typed, a CSV
    /// row's Host column), else this machine's name.
    /// </summary>
    [Parameter(ParameterSetName = PathSet)]
    public string? HostName { get; set; } // an empty one is HostNameInvalid, as the help says (no binding error)

    /// <summary>
    /// -Path: the images' trust group (domains of different trust groups never share). An empty one is PolicyTrustGroupInvalid,
    /// as New-DEDomain's and Set-DEPolicy's are (no [ValidateNotNullOrEmpty], whose binding error would say otherwise).
    /// </summary>
    [Parameter(ParameterSetName = PathSet)]
    public string TrustGroup { get; set; } = Domains.DomainPolicy.DefaultTrustGroup;

    /// <summary>The fleet key file (New-DEFleetKey); it must be readable by its owner only.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? FleetKeyPath { get; set; }

    /// <summary>The fleet secret itself, as Get-Secret returns it: a SecureString or a byte[] of at least 16 bytes.</summary>
    [Parameter]
    [ValidateNotNull]
    public object? FleetKey { get; set; }

    /// <summary>One page in this many is sampled (a power of two, 4 to 4096; 16 by default). Every fingerprint combined must use the same.</summary>
    [Parameter]
    [ValidateRange(4, 4096)]
    public int SampleRate { get; set; } = 1 << FingerprintBuilder.DefaultSampleShift;

    protected override void BeginProcessing()
    {
        if (!System.Numerics.BitOperations.IsPow2(SampleRate))
            ThrowDEError(new DEException("FingerprintSampleInvalid", DEErrorKind.InvalidArgument,
                $"-SampleRate must be a power of two (4, 8, 16, ... 4096); {SampleRate} is not.", SampleRate));
        _shift = System.Numerics.BitOperations.Log2((uint)SampleRate);
        try
        {
            // Wrong for every file: one terminating error before any is read.
            // -Host typed is bound by now (a piped one is checked with its file).
            if (ParameterSetName == PathSet) FingerprintBuilder.CheckNames(FileHostName, TrustGroup);
            string? path = FleetKeyPath is null ? null : GetFileSystemPath(FleetKeyPath, "fleet key file", "FleetKeyFileNotFound");
            _key = FleetKeyParameters.Resolve(path, FleetKey);
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
        }
    }

    protected override void ProcessRecord()
    {
        if (ParameterSetName == PathSet)
        {
            foreach (string given in Path) FingerprintFile(given);
            return;
        }
        foreach (var domain in DomainsToFingerprint())
        {
            string activity = $"Get-DEFingerprint {domain.Name}";
            if (TryItem(() => RunWithProgress(ActivityId, activity, report => FingerprintBuilder.FromDomain(domain, _key!, _shift,
                    (done, total) => report(new ProgressRecord(ActivityId, activity, $"{DisplayFormat.Count(done)} of {DisplayFormat.Count(total)} pages")
                    {
                        PercentComplete = (int)(100 * done / Math.Max(1, total)),
                    }),
                    StopToken)), out var fingerprint))
                WriteObject(fingerprint);
        }
    }

    /// <summary>
    /// The domains given, or every domain of the host but a Xen host's domain 0 (it runs the engine and the toolstack,
    /// and no placement moves it: reports and scans leave it out too); named, by name, id or object, it is fingerprinted.
    /// </summary>
    private IEnumerable<Hosting.IDEDomain> DomainsToFingerprint() =>
        Domain is not null ? ResolveDomainsOrAll(Domain) : ResolveDomainsOrAll(null).Where(d => d is not Xen.XenDomain { IsControlDomain: true });

    /// <summary>
    /// The HostName of an image's fingerprint: -HostName, else the Host of the piped object (or -Host, the hidden -InputHost's
    /// alias, which thus stays short for -HostName with -Path), else this machine's name.
    /// </summary>
    private string FileHostName => HostName ?? (InputHost is { Length: > 0 } piped ? piped : Environment.MachineName);

    private void FingerprintFile(string given)
    {
        TryItem(() =>
        {
            string hostName = FileHostName;
            FingerprintBuilder.CheckNames(hostName, TrustGroup); // a piped Host: HostNameInvalid for this file, the next goes on
            string path = GetFileSystemPath(given, "memory image", "FileNotFound");
            using var source = MemorySource.OpenFile(path);
            string name = System.IO.Path.GetFileNameWithoutExtension(path);
            string activity = $"Get-DEFingerprint {name}";
            var fingerprint = RunWithProgress(ActivityId, activity, _ =>
                FingerprintBuilder.FromSource(source, _key!, name, hostName, TrustGroup, _shift, StopToken));
            WriteObject(fingerprint);
        });
    }
}
