using System.Globalization;
using System.Management.Automation;
using DifferenceEngine.Codecs;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// Changes domains' policy values (C4 period, patch and compression thresholds, codec, trust group), or
/// with -HostPolicy the host's similarity detector and store compaction threshold; values not given stay
/// as they are (Set-DEPolicy). A value out of range stops the cmdlet before anything changes. On a Xen host the
/// compaction threshold, the watermarks and page groups do not exist: given, they stop it the same way (NotSupportedOnXenHost).
/// </summary>
[Cmdlet(VerbsCommon.Set, "DEPolicy", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low,
    DefaultParameterSetName = DomainSet)]
[OutputType(typeof(DomainPolicyView), ParameterSetName = [DomainSet])]
[OutputType(typeof(HostPolicyView), ParameterSetName = [HostSet])]
public sealed class SetDEPolicyCommand : PipedDomainCmdlet
{
    public const string DomainSet = "Domain";
    public const string HostSet = "HostPolicy";

    /// <summary>The domains (names, patterns, Domain or XenDomain objects).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true, ParameterSetName = DomainSet)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[] Domain { get; set; } = [];

    /// <summary>Sweeps without access after which a page counts as C4 (1 to 15).</summary>
    [Parameter(ParameterSetName = DomainSet, ValueFromPipelineByPropertyName = true)]
    public int? C4Sweeps { get; set; }

    /// <summary>Largest patch accepted, in bytes (16 to 4000).</summary>
    [Parameter(ParameterSetName = DomainSet, ValueFromPipelineByPropertyName = true)]
    public int? PatchThreshold { get; set; }

    /// <summary>Largest compressed size accepted, as a fraction of the page (0.01 to 0.95).</summary>
    [Parameter(ParameterSetName = DomainSet, ValueFromPipelineByPropertyName = true)]
    public double? CompressionThreshold { get; set; }

    /// <summary>The codec for pages compressed from now on: LZ4, WKdm or Zstd.</summary>
    [Parameter(ParameterSetName = DomainSet, ValueFromPipelineByPropertyName = true)]
    public CompressionAlgorithm? CompressionAlgorithm { get; set; }

    /// <summary>
    /// A new trust group; only for a domain without Shared or Patched pages (run Disable-DEPatching -Restore and then
    /// Disable-DESharing -Unshare first).
    /// </summary>
    [Parameter(ParameterSetName = DomainSet, ValueFromPipelineByPropertyName = true)]
    public string? TrustGroup { get; set; }

    /// <summary>
    /// Most pages compressed together in one page group (2 to 32), or 0 for no new groups (groups already made stay until
    /// their pages are touched). Not on Xen (NotSupportedOnXenHost).
    /// </summary>
    [Parameter(ParameterSetName = DomainSet, ValueFromPipelineByPropertyName = true)]
    public int? GroupSize { get; set; }

    /// <summary>Sweeps a compressed page must stay untouched past C4 before it may be grouped (1 to 13).</summary>
    [Parameter(ParameterSetName = DomainSet, ValueFromPipelineByPropertyName = true)]
    public int? GroupAfterSweeps { get; set; }

    /// <summary>The codec of page groups formed from now on: Zstd (level 3, or level 1 with no match under 7 bytes, chosen per slice of a pass) or LZ4 (high-compression level 3, LZ4's decode speed).</summary>
    [Parameter(ParameterSetName = DomainSet, ValueFromPipelineByPropertyName = true)]
    public CompressionAlgorithm? GroupAlgorithm { get; set; }

    /// <summary>Change the host's policy instead of domains'.</summary>
    [Parameter(Mandatory = true, ParameterSetName = HostSet)]
    public SwitchParameter HostPolicy { get; set; }

    /// <summary>k: similarity keys per page (1 to 8). Changing k, s or the seed empties the similarity tables.</summary>
    [Parameter(ParameterSetName = HostSet)]
    public int? SimilarityKeys { get; set; }

    /// <summary>s: 64-byte blocks per key (1 to 8).</summary>
    [Parameter(ParameterSetName = HostSet)]
    public int? SimilarityBlocksPerKey { get; set; }

    /// <summary>c: candidate pages kept per key (1 to 8).</summary>
    [Parameter(ParameterSetName = HostSet)]
    public int? SimilarityCandidates { get; set; }

    /// <summary>The seed the block offsets are drawn from.</summary>
    [Parameter(ParameterSetName = HostSet)]
    public int? SimilaritySeed { get; set; }

    /// <summary>Store fragmentation (0.01 to 0.99) above which a pass ends with a compaction.</summary>
    [Parameter(ParameterSetName = HostSet)]
    public double? CompactionThreshold { get; set; }

    /// <summary>Free memory (fraction of the limit) under which background reclaim starts.</summary>
    [Parameter(ParameterSetName = HostSet)]
    public double? LowWatermark { get; set; }

    /// <summary>Free memory (fraction of the limit) at which background reclaim stops.</summary>
    [Parameter(ParameterSetName = HostSet)]
    public double? HighWatermark { get; set; }

    /// <summary>Output the policy of each domain (or the host) changed.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    private HashSet<string> _commandLine = [];

    /// <summary>What this record's values left out were, for SetDEPolicyNoValue; empty when none were.</summary>
    private string _leftOut = "";

    /// <summary>Notes the parameters given on the command line: only they are bound before the first record.</summary>
    protected override void BeginProcessing() =>
        _commandLine = new HashSet<string>(MyInvocation.BoundParameters.Keys, StringComparer.OrdinalIgnoreCase);

    /// <summary>The columns of a policy row: the properties of Get-DEPolicy output (DomainPolicyView).</summary>
    private static readonly HashSet<string> PolicyColumns = new(
        typeof(DomainPolicyView).GetProperties().Select(p => p.Name), StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// Whether a piped object carries policy values to set, bound by property name: Get-DEPolicy output (a DomainPolicyView,
    /// or one back through remoting), and a row (Import-Csv, a custom object) every column of which is a column of
    /// Get-DEPolicy output: Domain with some of C4Sweeps, PatchThreshold, ..., TrustGroup, and any other column Get-DEPolicy
    /// writes. Any other object only names its domain: a Domain or XenDomain (its TrustGroup and CompressionAlgorithm are
    /// its current values), page stats (Get-DEPageStats: TrustGroup, CompressionAlgorithm, a moment's values), a page, a row
    /// with a column Get-DEPolicy does not write (a CSV of page stats has PageCount, BytesUsed, ...).
    /// </summary>
    internal static bool CarriesPolicyValues(PSObject record)
    {
        if (record.BaseObject is DomainPolicyView || Deserialized.Is(record, typeof(DomainPolicyView).FullName!)) return true;
        // A custom object, live or back through remoting (whose type names are then Deserialized.System.Management.Automation.PSCustomObject
        // and Deserialized.System.Object); not a deserialized object of any other type.
        bool row = record.BaseObject is PSCustomObject
                   && !record.TypeNames.Any(t => t.StartsWith("Deserialized.", StringComparison.Ordinal)
                                                 && t != "Deserialized." + typeof(PSCustomObject).FullName
                                                 && t != "Deserialized." + typeof(object).FullName);
        return row && record.Properties.All(p => PolicyColumns.Contains(p.Name));
    }

    /// <summary>
    /// Values bound by property name from a piped object that is not a policy (<see cref="CarriesPolicyValues"/>) are not
    /// changes: <c>Get-DEPageStats web1 | Set-DEPolicy -C4Sweeps 3</c> would set web1's trust group and codec back to what
    /// the row recorded (a stale row reverting a change, or failing with TrustGroupChangeNeedsUnshare), and
    /// <c>Get-DEDomain web1 | Set-DEPolicy</c> without a value would succeed doing nothing. Those values are dropped (said
    /// with -Verbose); values given on the command line are kept.
    /// </summary>
    private void DropValuesOfRecordsOtherThanPolicies()
    {
        _leftOut = "";
        if (PipedRecord is { } record)
        {
            if (CarriesPolicyValues(record)) return;
            DropBoundValues(record.Properties, record.TypeNames.Count > 0 ? record.TypeNames[0] : record.BaseObject.GetType().FullName!);
            return;
        }
        // PowerShell did not show the piped object: a domain object, or one back through remoting, still only names its domain.
        if (PipedRecordVisible || !MyInvocation.ExpectingInput || _commandLine.Contains(nameof(Domain))
            || Domain.FirstOrDefault(s => s.Domain is not null || s.Deserialized is not null) is not { } selector) return;
        var domainObject = selector.Deserialized ?? PSObject.AsPSObject(selector.Domain!);
        DropBoundValues(domainObject.Properties, domainObject.TypeNames[0]);
    }

    private void DropBoundValues(PSMemberInfoCollection<PSPropertyInfo> properties, string type)
    {
        var dropped = new List<string>();
        bool FromObject(string name)
        {
            if (_commandLine.Contains(name) || properties[name] is null) return false;
            dropped.Add(name);
            return true;
        }
        if (C4Sweeps is not null && FromObject(nameof(C4Sweeps))) C4Sweeps = null;
        if (PatchThreshold is not null && FromObject(nameof(PatchThreshold))) PatchThreshold = null;
        if (CompressionThreshold is not null && FromObject(nameof(CompressionThreshold))) CompressionThreshold = null;
        if (CompressionAlgorithm is not null && FromObject(nameof(CompressionAlgorithm))) CompressionAlgorithm = null;
        if (TrustGroup is not null && FromObject(nameof(TrustGroup))) TrustGroup = null;
        if (GroupSize is not null && FromObject(nameof(GroupSize))) GroupSize = null;
        if (GroupAfterSweeps is not null && FromObject(nameof(GroupAfterSweeps))) GroupAfterSweeps = null;
        if (GroupAlgorithm is not null && FromObject(nameof(GroupAlgorithm))) GroupAlgorithm = null;
        if (dropped.Count == 0) return;
        _leftOut = $" The piped {type} is not a policy (Get-DEPolicy output, or a row of only its columns): its " +
                   $"{string.Join(", ", dropped)} name what it recorded, not values to set, and were left out.";
        WriteVerbose(_leftOut.TrimStart());
    }

    /// <summary>
    /// Without pipeline input a call with no value to change is refused before anything runs; with it, values may come
    /// from each piped object's properties (Get-DEPolicy output, or a CSV of it through Import-Csv), so each record is checked.
    /// </summary>
    private void RequireAValue()
    {
        if (Changes().Length == 0)
            ThrowDEError(new DEException("SetDEPolicyNoValue", DEErrorKind.InvalidArgument,
                ParameterSetName == HostSet
                    ? "Give at least one of -SimilarityKeys, -SimilarityBlocksPerKey, -SimilarityCandidates, -SimilaritySeed, -CompactionThreshold, -LowWatermark, -HighWatermark."
                    : "Give at least one of -C4Sweeps, -PatchThreshold, -CompressionThreshold, -CompressionAlgorithm, -TrustGroup, -GroupSize, -GroupAfterSweeps, -GroupAlgorithm." + _leftOut,
                null));
    }

    protected override void ProcessRecord()
    {
        if (ParameterSetName == DomainSet) DropValuesOfRecordsOtherThanPolicies();
        RequireAValue();
        string changes = string.Join(", ", Changes());
        if (ParameterSetName == HostSet)
        {
            if (!InputHostConnected()) return; // a piped host policy of a host not connected: written, the next goes on
            var host = TargetHost;
            if (host is XenHost && (CompactionThreshold is not null || LowWatermark is not null || HighWatermark is not null))
                ThrowDEError(NotSupportedOnXenHost(host.Name,
                    "On Xen the pager keeps no slab store to compact and no frames of its own to keep free: its memory is bounded " +
                    "by Connect-DEHost -Xen -MemoryLimit. Of the host policy, the similarity detector's values apply there.",
                    "Set-DEPolicy -HostPolicy with -CompactionThreshold, -LowWatermark or -HighWatermark"));
            // Values out of range stop the cmdlet before -WhatIf and -Confirm, as the domain values do.
            try
            {
                if (host is Hosting.DEHost checkedHost)
                    checkedHost.CheckHostPolicyValues(SimilarityKeys, SimilarityBlocksPerKey, SimilarityCandidates, CompactionThreshold,
                        LowWatermark, HighWatermark);
                else
                    Hosting.DEHost.CheckSimilarityValues(SimilarityKeys, SimilarityBlocksPerKey, SimilarityCandidates);
            }
            catch (DEException ex)
            {
                ThrowDEError(ex);
            }
            if (!ShouldProcess(host.Name, $"Set host policy: {changes}")) return;
            try
            {
                // The host waits for the pass in progress, if any: Ctrl-C ends that wait.
                if (host is Hosting.DEHost embedded)
                    embedded.SetHostPolicy(SimilarityKeys, SimilarityBlocksPerKey, SimilarityCandidates, SimilaritySeed,
                        CompactionThreshold, LowWatermark, HighWatermark, StopToken);
                else if (host is XenHost xenHost)
                    xenHost.SetHostPolicy(SimilarityKeys, SimilarityBlocksPerKey, SimilarityCandidates, SimilaritySeed, StopToken);
                else
                    host.SetHostPolicy(SimilarityKeys, SimilarityBlocksPerKey, SimilarityCandidates, SimilaritySeed, CompactionThreshold,
                        LowWatermark, HighWatermark);
            }
            catch (DEException ex)
            {
                ThrowDEError(ex);
            }
            catch (OperationCanceledException) when (StopToken.IsCancellationRequested)
            {
                throw new PipelineStoppedException(); // Ctrl-C while the change waited for the pass in progress
            }
            if (PassThru) WriteObject(new HostPolicyView(host));
            return;
        }
        // Values out of range stop the cmdlet before -WhatIf and -Confirm, and before this record changes any domain (a
        // piped row's bad value stops it at that row: the rows before it stay changed).
        try
        {
            Hosting.DEHost.CheckPolicyValues(C4Sweeps, PatchThreshold, CompressionThreshold, CompressionAlgorithm, TrustGroup,
                GroupSize, GroupAfterSweeps, GroupAlgorithm);
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
        }
        var domains = ResolveDomains(Domain);
        // Page groups are not built for Xen domains: like the host policy's values Xen has no use for, a bad argument for the
        // call, which stops once before any domain is changed (not an error per domain, the others changed).
        if ((GroupSize is not null || GroupAfterSweeps is not null || GroupAlgorithm is not null)
            && domains.Select(d => d.Host).OfType<XenHost>().FirstOrDefault() is { } xen)
            ThrowDEError(NotSupportedOnXenHost(xen.Name,
                "Page groups are not built for Xen domains: the Xen pager compresses each page alone. Of the domain policy, the " +
                "other values apply there.",
                "Set-DEPolicy with -GroupSize, -GroupAfterSweeps or -GroupAlgorithm"));
        foreach (var domain in domains)
        {
            if (!ShouldProcess(domain.Name, $"Set policy: {changes}")) continue;
            try
            {
                // A trust group change waits for the pass in progress, if any: Ctrl-C ends that wait.
                if (domain is Domains.Domain embedded)
                    embedded.Host.SetPolicy(embedded, C4Sweeps, PatchThreshold, CompressionThreshold, CompressionAlgorithm, TrustGroup,
                        GroupSize, GroupAfterSweeps, GroupAlgorithm, StopToken);
                else if (domain is XenDomain xenDomain)
                    xenDomain.Host.SetPolicy(xenDomain, C4Sweeps, PatchThreshold, CompressionThreshold, CompressionAlgorithm, TrustGroup, StopToken);
                else
                    domain.SetPolicy(C4Sweeps, PatchThreshold, CompressionThreshold, CompressionAlgorithm, TrustGroup, GroupSize,
                        GroupAfterSweeps, GroupAlgorithm);
            }
            catch (OperationCanceledException) when (StopToken.IsCancellationRequested)
            {
                throw new PipelineStoppedException(); // Ctrl-C while the change waited for the pass in progress
            }
            catch (DEException ex) when (ex.Kind == DEErrorKind.InvalidArgument)
            {
                // A bad value is bad for every domain: stop before any is changed.
                ThrowDEError(ex);
            }
            catch (DEException ex)
            {
                // This domain's state refuses the change (its trust group holds shared pages): the others go on.
                WriteDEError(ex);
                continue;
            }
            if (PassThru) WriteObject(new DomainPolicyView(domain));
        }
    }

    /// <summary>The values given, as "Name=value" for -WhatIf and -Confirm.</summary>
    private string[] Changes()
    {
        var changes = new List<string>();
        void Add(string name, object? value)
        {
            if (value is not null) changes.Add(string.Create(CultureInfo.InvariantCulture, $"{name}={value}"));
        }
        if (ParameterSetName == HostSet)
        {
            Add(nameof(SimilarityKeys), SimilarityKeys);
            Add(nameof(SimilarityBlocksPerKey), SimilarityBlocksPerKey);
            Add(nameof(SimilarityCandidates), SimilarityCandidates);
            Add(nameof(SimilaritySeed), SimilaritySeed);
            Add(nameof(CompactionThreshold), CompactionThreshold);
            Add(nameof(LowWatermark), LowWatermark);
            Add(nameof(HighWatermark), HighWatermark);
        }
        else
        {
            Add(nameof(C4Sweeps), C4Sweeps);
            Add(nameof(PatchThreshold), PatchThreshold);
            Add(nameof(CompressionThreshold), CompressionThreshold);
            Add(nameof(CompressionAlgorithm), CompressionAlgorithm);
            Add(nameof(TrustGroup), TrustGroup is null ? null : $"'{TrustGroup}'");
            Add(nameof(GroupSize), GroupSize);
            Add(nameof(GroupAfterSweeps), GroupAfterSweeps);
            Add(nameof(GroupAlgorithm), GroupAlgorithm);
        }
        return [.. changes];
    }
}
