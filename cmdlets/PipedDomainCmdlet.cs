using System.Management.Automation;
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
    /// The host of a piped record that has a Host but names no domain (Get-DEHostStats output, a host policy), which stands
    /// for every domain of it; null for any other record, and for one whose host is not connected ("HostNotFound" written).
    /// </summary>
    protected IDEHost? HostOfRecordWithoutDomains() =>
        InputHost is { Length: > 0 } && InputHostConnected() ? TargetHost : null;
}
