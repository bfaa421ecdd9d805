using System.Management.Automation;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>Removes domains and gives their memory back (Remove-DEDomain). Embedded hosts only: Xen's toolstack ends Xen's domains.</summary>
[Cmdlet(VerbsCommon.Remove, "DEDomain", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High,
    DefaultParameterSetName = NameSet)]
[OutputType(typeof(void))]
public sealed class RemoveDEDomainCommand : DECmdlet
{
    public const string NameSet = "Name";
    public const string InputObjectSet = "InputObject";

    /// <summary>Names of the domains to remove (wildcards).</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = NameSet, ValueFromPipeline = true)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public string[] Name { get; set; } = [];

    /// <summary>
    /// Domain objects to remove, e.g. from Get-DEDomain, or the page stats and policies of domains (Get-DEPageStats,
    /// Get-DEPolicy), each naming its domain on its own host; a XenDomain is refused (NotSupportedOnXenHost). Typed object[]
    /// because PowerShell binds piped objects to an interface-typed array only by converting them, after it has tried
    /// -Name, which would turn a Xen domain into its name and act on whatever domain of the current host has that name.
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = InputObjectSet, ValueFromPipeline = true)]
    [ValidateNotNull]
    public object[] InputObject { get; set; } = [];

    /// <summary>What to use on a Xen host instead.</summary>
    internal const string XenInstead =
        "Xen's domains are ended by its toolstack (xl shutdown, xl destroy): load their pages back first with Disable-DEPatching -Restore and Disable-DECompression -Restore, or Disconnect-DEHost.";

    protected override void ProcessRecord()
    {
        var selectors = ParameterSetName == InputObjectSet
            ? InputObject.Select(ToSelector).OfType<DomainSelector>().ToArray()
            : Name.Select(n => new DomainSelector(n));
        foreach (var domain in ResolveEmbeddedDomains(selectors, XenInstead))
        {
            if (ShouldProcess(domain.Name, $"Remove the domain ({DisplayFormat.Bytes(domain.SizeBytes)}) and free its memory"))
                TryItem(() => domain.Host.RemoveDomain(domain));
        }
    }

    /// <summary>
    /// A domain object, or a domain's page stats or policy, as a selector; anything else is written as "InputObjectNotDomain"
    /// and skipped.
    /// </summary>
    private DomainSelector? ToSelector(object item)
    {
        object value = item is PSObject ps ? ps.BaseObject : item;
        switch (value)
        {
            case IDEDomain domain:
                return DomainSelector.For(domain);
            case Stats.DomainPageStats stats:
                return RecordedDomain(stats.Host, stats.Domain, stats.DomainId);
            case DomainPolicyView policy:
                return RecordedDomain(policy.Host, policy.Domain, policy.DomainId);
        }
        // The same objects after a trip through remoting (property bags): by their host, name and id, as above.
        if (item is PSObject bag)
        {
            if (Deserialized.Is(bag, typeof(Stats.DomainPageStats).FullName!) || Deserialized.Is(bag, typeof(DomainPolicyView).FullName!))
                return Recorded(bag, "Domain", "DomainId");
            if (Deserialized.Is(bag, typeof(Domains.Domain).FullName!) || Deserialized.Is(bag, typeof(Xen.XenDomain).FullName!))
                return Recorded(bag, "Name", "Id");
        }
        string type = item is PSObject { TypeNames.Count: > 0 } named ? named.TypeNames[0] : value.GetType().FullName!;
        WriteDEError(new DEException("InputObjectNotDomain", DEErrorKind.InvalidArgument,
            $"-InputObject takes domain objects (Get-DEDomain output), or the page stats or policies of domains (Get-DEPageStats, " +
            $"Get-DEPolicy); a {type} was given. Give names to -Name.", value));
        return null;
    }

    /// <summary>A deserialized record's domain (<see cref="RecordedDomain"/>), from its Host, name and id properties.</summary>
    private DomainSelector? Recorded(PSObject bag, string nameProperty, string idProperty)
    {
        object? host = bag.Properties["Host"]?.Value;
        string hostName = host is PSObject h && h.Properties["Name"]?.Value is string n ? n : host?.ToString() ?? "";
        string name = bag.Properties[nameProperty]?.Value as string ?? "";
        int id = bag.Properties[idProperty]?.Value is int i ? i : -1;
        return RecordedDomain(hostName, name, id, deserialized: true);
    }

    /// <summary>
    /// The domain a page-stats or policy record was taken of: by its name on its own host (-DEHost, when given, wins, as for
    /// every piped record), and only while it is the same domain (its id): a record of a domain since removed and made again
    /// under the same name does not remove the new one. Errors (HostNotFound, DomainRemoved, DomainNotFound) are written and null returned.
    /// </summary>
    private DomainSelector? RecordedDomain(string hostName, string name, int id, bool deserialized = false)
    {
        var host = DEHost ?? HostRegistry.Find(hostName);
        if (host is null)
        {
            WriteDEError(InputHostNotFound(hostName));
            return null;
        }
        if (!host.IsConnected)
        {
            WriteDEError(Hosting.DEHost.HostDisconnected(host.Name));
            return null;
        }
        if (!TryItem(() => host.TryGetDomain(name), out var domain)) return null;
        // Ids are a host's own: the record's id says something only of the record's host.
        bool recordsHost = string.Equals(host.Name, hostName, StringComparison.OrdinalIgnoreCase);
        if (domain is not null && (!recordsHost || domain.Id == id)) return DomainSelector.For(domain);
        // The record's domain is gone (removed, perhaps made again under its name): DomainRemoved, as every cmdlet says of
        // such a record; a name the record's host never had (no id to go by) is DomainNotFound.
        // A record that came back through remoting or from a file (Import-Clixml) may be of another process, whose ids say
        // nothing here: it is refused all the same (removing is not undone), saying so rather than that it was removed.
        WriteDEError(domain is null && (id < 0 || !recordsHost)
            ? DomainNotFound(name)
            : deserialized
                ? new DEException("DomainRemoved", DEErrorKind.ObjectNotFound,
                    $"The domain '{name}' that the piped record was taken of (id {id}) is not on host '{host.Name}' now" +
                    (domain is null ? "" : $": the domain of that name there is another (id {domain.Id})") +
                    ". It was removed, or the record is of another session (domain ids are a process's own). Get it again " +
                    "(Get-DEDomain, Get-DEPageStats) to remove that one, or remove it by -Name.", name)
                : RecordOfRemovedDomain(new RecordedDomainId(host.Name, name, id), host, domain));
        return null;
    }
}
