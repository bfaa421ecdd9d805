using System.Collections;
using System.Management.Automation;
using DifferenceEngine.Fleet;

namespace DifferenceEngine.Commands;

/// <summary>
/// Recommends which domain goes on which host, from their fingerprints and the hosts' capacities (Get-DEPlacement): to
/// need the fewest hosts or the least memory, domains of different trust groups never sharing, against today's placement
/// (each fingerprint's HostName).
/// </summary>
[Cmdlet(VerbsCommon.Get, "DEPlacement", DefaultParameterSetName = CapacitySet)]
[OutputType(typeof(PlacementResult))]
public sealed class GetDEPlacementCommand : DECmdlet
{
    private const string CapacitySet = "HostCapacity";
    private const string HostSet = "PlacementHost";
    private const int ActivityId = 8;
    private readonly List<DomainFingerprint> _fingerprints = new();

    /// <summary>Fingerprints from Get-DEFingerprint (also as they come back from remoting, or from their JSON).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    [ValidateNotNull]
    public object[] Fingerprint { get; set; } = [];

    /// <summary>The hosts to place on, as host name = capacity in bytes (e.g. @{ h1 = 64GB; h2 = 48GB }).</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = CapacitySet)]
    [ValidateNotNullOrEmpty]
    public Hashtable HostCapacity { get; set; } = new();

    /// <summary>The hosts to place on, as objects with Name and CapacityBytes, and optionally TrustGroups (the only trust groups the host may run; any when absent), e.g. from Import-Csv.</summary>
    [Parameter(Mandatory = true, ParameterSetName = HostSet)]
    [ValidateNotNullOrEmpty]
    public PSObject[] PlacementHost { get; set; } = [];

    /// <summary>FewestHosts (default): as few hosts as the domains fit on; LeastMemory: the least memory in all, on any number of hosts.</summary>
    [Parameter]
    public PlacementGoal Goal { get; set; } = PlacementGoal.FewestHosts;

    protected override void ProcessRecord()
    {
        foreach (var value in Fingerprint)
            if (TryItem(() => FingerprintInput.From(value), out var fingerprint)) _fingerprints.Add(fingerprint);
    }

    protected override void EndProcessing()
    {
        if (_fingerprints.Count == 0) return; // each refused input was written as its own error
        IReadOnlyList<PlacementHost> hosts;
        try
        {
            hosts = ParameterSetName == CapacitySet ? FromCapacities(HostCapacity) : PlacementHost.Select(FromObject).ToList();
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
            return;
        }
        PlacementResult result;
        try
        {
            const string activity = "Get-DEPlacement";
            result = RunWithProgress(ActivityId, activity, _ => Placement.Recommend(_fingerprints, hosts, Goal, StopToken));
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
            return;
        }
        foreach (string domain in result.Unplaced) // "host/domain": the host it runs on today, and its name
            WriteDEError(new DEException("DomainDoesNotFit", DEErrorKind.ResourceUnavailable,
                $"Domain '{domain}' (host/domain) fits on none of the hosts given (too large for the room left, or no host runs its trust group); it is left out of the placement.",
                domain));
        WriteObject(result);
    }

    private static List<PlacementHost> FromCapacities(Hashtable capacities)
    {
        var hosts = new List<PlacementHost>();
        foreach (DictionaryEntry entry in capacities)
            hosts.Add(new PlacementHost(Unwrap(entry.Key)?.ToString() ?? "", Capacity(Unwrap(entry.Value), entry.Key?.ToString())));
        return hosts.OrderBy(h => h.Name, StringComparer.Ordinal).ToList();
    }

    private static PlacementHost FromObject(PSObject value)
    {
        string? name = (value.Properties["Name"] ?? value.Properties["HostName"])?.Value?.ToString();
        if (string.IsNullOrWhiteSpace(name))
            throw new DEException("PlacementHostInvalid", DEErrorKind.InvalidArgument,
                "Each -PlacementHost needs a Name (or HostName) and a CapacityBytes.", value.ToString());
        long capacity = Capacity(Unwrap(value.Properties["CapacityBytes"]?.Value), name);
        object? groups = Unwrap(value.Properties["TrustGroups"]?.Value);
        var trust = groups switch
        {
            null => null,
            string one => one.Split([',', ';', ' '], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            IEnumerable many => many.Cast<object>().Select(o => Unwrap(o)?.ToString() ?? "").Where(g => g.Length > 0).ToArray(),
            _ => [groups.ToString()!],
        };
        return new PlacementHost(name, capacity) { TrustGroups = trust is { Length: > 0 } ? trust : null };
    }

    private static object? Unwrap(object? value) => value is PSObject ps ? ps.BaseObject : value;

    private static long Capacity(object? value, string? host)
    {
        try
        {
            return value switch
            {
                null => throw new FormatException("none given"),
                string text => long.Parse(text, System.Globalization.CultureInfo.InvariantCulture),
                _ => Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture),
            };
        }
        catch (Exception e) when (e is FormatException or InvalidCastException or OverflowException)
        {
            throw new DEException("PlacementCapacityInvalid", DEErrorKind.InvalidArgument,
                $"The capacity of host '{host}' must be a number of bytes (e.g. 64GB); '{value}' is not.", host, e);
        }
    }
}
