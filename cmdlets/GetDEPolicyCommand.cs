using System.Management.Automation;

namespace DifferenceEngine.Commands;

/// <summary>
/// The policy of domains (mechanisms on or off, codec, thresholds, C4 period, trust group, with the
/// host's detector settings beside it), or with -HostPolicy the host's own policy (Get-DEPolicy).
/// </summary>
[Cmdlet(VerbsCommon.Get, "DEPolicy", DefaultParameterSetName = DomainSet)]
[OutputType(typeof(DomainPolicyView), ParameterSetName = [DomainSet])]
[OutputType(typeof(HostPolicyView), ParameterSetName = [HostSet])]
public sealed class GetDEPolicyCommand : PipedDomainCmdlet
{
    public const string DomainSet = "Domain";
    public const string HostSet = "HostPolicy";

    /// <summary>The domains (names, patterns, Domain or XenDomain objects); every domain of the host by default.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true, ParameterSetName = DomainSet)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[]? Domain { get; set; }

    /// <summary>Get the host's policy (similarity detector; store compaction and watermarks on embedded hosts) instead of the domains'.</summary>
    [Parameter(Mandatory = true, ParameterSetName = HostSet)]
    public SwitchParameter HostPolicy { get; set; }

    protected override void ProcessRecord()
    {
        if (ParameterSetName == HostSet)
        {
            if (InputHostConnected()) WriteObject(new HostPolicyView(TargetHost));
            return;
        }
        foreach (var domain in ResolveDomainsOrAll(Domain))
            WriteObject(new DomainPolicyView(domain));
    }
}
