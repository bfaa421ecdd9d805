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
        // Each host once, in the order they were connected, however many names match it (Get-DEHost emb*, *bed* | Start-DEEngine
        // would otherwise start the same engine twice). A name without wildcard characters is taken literally: host names
        // may hold a backtick or brackets, which a wildcard pattern would read as an escape or a set.
        var chosen = new HashSet<IDEHost>(ReferenceEqualityComparer.Instance);
        foreach (string name in Name)
        {
            bool literal = !WildcardPattern.ContainsWildcardCharacters(name);
            var pattern = literal ? null : new WildcardPattern(name, WildcardOptions.IgnoreCase);
            // A host named exactly so is taken whatever the name holds (a host named x[1] by Get-DEHost 'x[1]' too).
            // A name without wildcards may still escape characters ('a``b'): its unescaped form is the name.
            string exact = literal ? WildcardPattern.Unescape(name) : name;
            var matches = hosts.Where(h => string.Equals(h.Name, name, StringComparison.OrdinalIgnoreCase)
                                           || string.Equals(h.Name, exact, StringComparison.OrdinalIgnoreCase) || pattern?.IsMatch(h.Name) == true)
                .ToArray();
            if (matches.Length == 0 && literal)
                WriteDEError(new DEException("HostNotFound", DEErrorKind.ObjectNotFound, $"No connected host is named '{name}'.", name));
            chosen.UnionWith(matches);
        }
        WriteObject(hosts.Where(chosen.Contains), enumerateCollection: true);
    }
}
