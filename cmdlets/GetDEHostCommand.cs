using System.Management.Automation;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>Lists the connected hosts (embedded and Xen), oldest first; the last one is the current one (Get-DEHost).</summary>
[Cmdlet(VerbsCommon.Get, "DEHost")]
[OutputType(typeof(DEHost), typeof(XenHost))]
public sealed class GetDEHostCommand : DECmdlet
{
    /// <summary>Host names to list (wildcards); all by default.</summary>
    [Parameter(Position = 0)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(HostNameCompleter))]
    public string[]? Name { get; set; }

    /// <summary>Only the current host (the one connected last).</summary>
    [Parameter]
    public SwitchParameter Current { get; set; }

    /// <summary>Not used: Get-DEHost lists hosts.</summary>
    public override IDEHost? DEHost { get; set; }

    protected override void EndProcessing()
    {
        IReadOnlyList<IDEHost> hosts = Current ? (HostRegistry.Current is { } c ? [c] : []) : HostRegistry.Hosts;
        if (Name is null)
        {
            WriteObject(hosts, enumerateCollection: true);
            return;
        }
        foreach (string name in Name)
        {
            var pattern = new WildcardPattern(name, WildcardOptions.IgnoreCase);
            var matches = hosts.Where(h => pattern.IsMatch(h.Name)).ToArray();
            if (matches.Length == 0 && !WildcardPattern.ContainsWildcardCharacters(name))
                WriteDEError(new DEException("HostNotFound", DEErrorKind.ObjectNotFound, $"No connected host is named '{name}'.", name));
            WriteObject(matches, enumerateCollection: true);
        }
    }
}
