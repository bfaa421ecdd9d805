using System.Management.Automation;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>
/// Lets every -DEHost take a host by name as well as a host object: <c>-DEHost lab</c> is the connected host named
/// "lab" (names compared ignoring case, without wildcards: the parameter names one host). Registered for IDEHost in
/// DifferenceEngine.types.ps1xml, so it is PowerShell's own conversion of a string to a host: a host object piped to a
/// cmdlet binds as itself, a string piped binds where strings go, and a name that no connected host has fails with a
/// message that says so.
/// </summary>
public sealed class HostNameConverter : PSTypeConverter
{
    // A host that came back through remoting (a property bag) names a host of the machine it came from.
    private static readonly string[] HostTypes = ["Deserialized.DifferenceEngine.Hosting.DEHost", "Deserialized.DifferenceEngine.Xen.XenHost"];

    public override bool CanConvertFrom(object sourceValue, Type destinationType) =>
        destinationType == typeof(IDEHost) && (Unwrap(sourceValue) is string || Deserialized.NameOf(sourceValue, HostTypes) is not null);

    public override object ConvertFrom(object sourceValue, Type destinationType, IFormatProvider formatProvider, bool ignoreCase)
    {
        string name = Unwrap(sourceValue) as string ?? Deserialized.NameOf(sourceValue, HostTypes)!;
        return HostRegistry.Find(name) ?? throw new PSArgumentException(
            $"No connected host is named '{name}'. Get-DEHost lists the connected hosts; Connect-DEHost connects one.");
    }

    public override bool CanConvertTo(object sourceValue, Type destinationType) => false;

    public override object ConvertTo(object sourceValue, Type destinationType, IFormatProvider formatProvider, bool ignoreCase) =>
        throw new PSInvalidCastException($"A host converts to no {destinationType}.");

    private static object? Unwrap(object? value) => value is PSObject ps ? ps.BaseObject : value;
}

/// <summary>Tab completion of -DEHost (and Get-DEHost -Name): the names of the connected hosts, oldest first.</summary>
public sealed class HostNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete,
        System.Management.Automation.Language.CommandAst commandAst, System.Collections.IDictionary fakeBoundParameters)
    {
        string typed = (wordToComplete ?? "").Trim('\'', '"');
        var pattern = new WildcardPattern(WildcardPattern.Escape(typed) + "*", WildcardOptions.IgnoreCase);
        foreach (var host in HostRegistry.Hosts)
        {
            if (!pattern.IsMatch(host.Name)) continue;
            yield return new CompletionResult(CompletionText.Quote(host.Name), host.Name, CompletionResultType.ParameterValue,
                $"{host.Name}: {host.Kind} host, {host.Domains.Count} domain(s), connected {host.Connected:u}");
        }
    }
}

/// <summary>What the completers share.</summary>
internal static class CompletionText
{
    private static readonly char[] NeedQuotes = [' ', '\'', '"', '$', '`', ',', ';', '(', ')', '{', '}', '@', '&', '#', '|', '<', '>'];

    /// <summary>A name as it can be typed: in single quotes when it holds a character PowerShell would read otherwise.</summary>
    public static string Quote(string name) =>
        name.IndexOfAny(NeedQuotes) >= 0 ? "'" + name.Replace("'", "''") + "'" : name;
}

/// <summary>
/// Brings domain objects that came back through remoting (CLIXML: property bags whose type names begin with
/// "Deserialized.") back to what every -Domain takes, by name: a deserialized Domain or XenDomain converts to a
/// <see cref="DomainSelector"/> of its name, on the host its Host property names (the piping cmdlets bind that too).
/// Registered for DomainSelector in DifferenceEngine.types.ps1xml; no other object converts through it, so
/// <c>Invoke-Command -ArgumentList $domain { param($d) $d | Get-DEPageStats }</c> gives that domain's stats on the
/// machine it came from, where it used to bind no domain and give every domain of the host.
/// </summary>
public sealed class DomainSelectorConverter : PSTypeConverter
{
    private static readonly string[] DomainTypes =
        ["Deserialized.DifferenceEngine.Domains.Domain", "Deserialized.DifferenceEngine.Xen.XenDomain"];

    public override bool CanConvertFrom(object sourceValue, Type destinationType) =>
        destinationType == typeof(DomainSelector) && Deserialized.NameOf(sourceValue, DomainTypes) is not null;

    public override object ConvertFrom(object sourceValue, Type destinationType, IFormatProvider formatProvider, bool ignoreCase) =>
        new DomainSelector(Deserialized.NameOf(sourceValue, DomainTypes)
                           ?? throw new PSInvalidCastException("Only a deserialized Domain or XenDomain converts to a domain selector."),
            (PSObject)sourceValue);

    public override bool CanConvertTo(object sourceValue, Type destinationType) => false;

    public override object ConvertTo(object sourceValue, Type destinationType, IFormatProvider formatProvider, bool ignoreCase) =>
        throw new PSInvalidCastException($"A domain selector converts to no {destinationType}.");
}

/// <summary>What a module object that came back through remoting (a property bag) is, by its type names.</summary>
internal static class Deserialized
{
    /// <summary>The Name of <paramref name="value"/> when it is a deserialized object of one of <paramref name="types"/>; else null.</summary>
    public static string? NameOf(object? value, IReadOnlyList<string> types) =>
        value is PSObject ps && types.Any(ps.TypeNames.Contains) ? ps.Properties["Name"]?.Value as string : null;

    /// <summary>Whether <paramref name="value"/> is a deserialized object of <paramref name="type"/> (its full .NET name).</summary>
    public static bool Is(object? value, string type) => value is PSObject ps && ps.TypeNames.Contains("Deserialized." + type);
}
