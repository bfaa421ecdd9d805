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
    public override bool CanConvertFrom(object sourceValue, Type destinationType) =>
        Unwrap(sourceValue) is string && destinationType == typeof(IDEHost);

    public override object ConvertFrom(object sourceValue, Type destinationType, IFormatProvider formatProvider, bool ignoreCase)
    {
        string name = (string)Unwrap(sourceValue)!;
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
