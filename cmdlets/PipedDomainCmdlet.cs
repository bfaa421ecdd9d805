using System.Management.Automation;
using System.Reflection;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>
/// A cmdlet that takes domains from the pipeline and finds each on the host the piped object came from: pages, page stats,
/// policies and domains carry their host's name in a Host property, so <c>Get-DEPage -DEHost lab web1 | Write-DEGuestPage
/// ...</c> names web1 on "lab", whatever host is current. -DEHost, when given, wins. Cmdlets that work on hosts (Get-DEHost,
/// Start-DEEngine, Disconnect-DEHost, ...) and New-DEDomain (whose CSV rows may have a Host column meaning something else)
/// do not take it.
/// </summary>
public abstract class PipedDomainCmdlet : DECmdlet
{
    /// <summary>
    /// The Host property of a piped object. A name, not a host: bound to -DEHost, a name no connected host has (a host since
    /// disconnected) would fail to bind, which PowerShell ignores for a piped property, and the object would act on the
    /// current host. As a name it always binds, and an unknown one is "HostNotFound" for that object, the next going on.
    /// Hidden: -DEHost is the parameter to type.
    /// </summary>
    [Parameter(ValueFromPipelineByPropertyName = true, DontShow = true)]
    [Alias("Host")]
    public string? InputHost { get; set; }

    protected override string? PipedHost => InputHost;

    /// <summary>
    /// PowerShell's own note of the object being processed (Cmdlet.CurrentPipelineObject, set before the record's parameters
    /// are bound; not public, so read by reflection). Null if a PowerShell version no longer has it: then records are judged
    /// by what bound to -Domain alone.
    /// </summary>
    private static readonly PropertyInfo? CurrentPipelineObject =
        typeof(Cmdlet).BaseType?.GetProperty("CurrentPipelineObject", BindingFlags.Instance | BindingFlags.NonPublic);

    /// <summary>
    /// The object piped in for this record, as PowerShell wrapped it: what its -Domain, -InputHost and other values were bound
    /// from by property name. A page-stats row or policy names its domain by name and id (<see cref="DECmdlet.RecordedDomain"/>);
    /// Set-DEPolicy takes policy values only from a policy. Null when nothing is piped.
    /// </summary>
    protected override PSObject? PipedRecord =>
        MyInvocation.ExpectingInput && CurrentPipelineObject?.GetValue(this) is PSObject { BaseObject: not null } record ? record : null;

    /// <summary>Whether the object piped in for this record can be seen (<see cref="PipedRecord"/>).</summary>
    protected static bool PipedRecordVisible => CurrentPipelineObject is not null;

    /// <summary>
    /// The host of a piped record that has a Host but names no domain (Get-DEHostStats output, a host policy), which stands
    /// for every domain of it; null for any other record, and for one whose host is not connected ("HostNotFound" written).
    /// </summary>
    protected IDEHost? HostOfRecordWithoutDomains() =>
        InputHost is { Length: > 0 } && InputHostConnected() ? TargetHost : null;
}
