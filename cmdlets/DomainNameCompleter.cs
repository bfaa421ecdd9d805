using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>Tab completion of domain names for -Domain and -Name, from -DEHost when typed or else the current host.</summary>
public sealed class DomainNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete,
        CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var host = (fakeBoundParameters?["DEHost"] is { } h ? (h is PSObject ps ? ps.BaseObject : h) : null) switch
        {
            IDEHost given => given,
            string name => HostRegistry.Find(name),
            _ => HostRegistry.Current,
        };
        if (host is null || !host.IsConnected) yield break;
        string typed = (wordToComplete ?? "").Trim('\'', '"');
        var pattern = new WildcardPattern(WildcardPattern.Escape(typed) + "*", WildcardOptions.IgnoreCase);
        foreach (var domain in host.Domains)
        {
            if (!pattern.IsMatch(domain.Name)) continue;
            string text = CompletionText.Quote(domain.Name);
            string source = domain switch
            {
                Domain d => d.Source,
                XenDomain x => $"Xen domain {x.DomainId}",
                _ => host.Kind,
            };
            yield return new CompletionResult(text, domain.Name, CompletionResultType.ParameterValue,
                $"{domain.Name}: {DisplayFormat.Bytes(domain.SizeBytes)}, {source}");
        }
    }
}
