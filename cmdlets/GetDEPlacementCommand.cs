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

    /// <summary>The hosts to place on, as objects or hashtables with Name and CapacityBytes (bytes, or a string such as '64GB'), and optionally TrustGroups (the only trust groups the host may run, a list or a string separated by ',' or ';'; any when absent), e.g. from Import-Csv.</summary>
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
        // Of another fleet key or sample rate than most: each its own error, the rest placed.
        var fingerprints = FingerprintInput.Combinable(_fingerprints, WriteDEError);
        if (fingerprints.Count == 0) return; // each refused input was written as its own error
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
            result = RunWithProgress(ActivityId, activity, _ => Placement.Recommend(fingerprints, hosts, Goal, StopToken));
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
        string? name = Unwrap(Member(value, "Name") ?? Member(value, "HostName"))?.ToString();
        if (string.IsNullOrWhiteSpace(name))
            throw new DEException("PlacementHostInvalid", DEErrorKind.InvalidArgument,
                $"Each -PlacementHost needs a Name (or HostName) and a CapacityBytes, as an object's properties or a hashtable's keys; '{value}' has no Name.",
                value.ToString());
        long capacity = Capacity(Unwrap(Member(value, "CapacityBytes")), name);
        object? groups = Unwrap(Member(value, "TrustGroups"));
        var trust = groups switch
        {
            null => null,
            // Trust group names may hold spaces ('tenant a'): a string is split on ',' and ';' only.
            string one => one.Split([',', ';'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            IEnumerable many => many.Cast<object>().Select(o => Unwrap(o)?.ToString() ?? "").Where(g => g.Length > 0).ToArray(),
            _ => [groups.ToString()!],
        };
        return new PlacementHost(name, capacity) { TrustGroups = trust is { Length: > 0 } ? trust : null };
    }

    private static object? Unwrap(object? value) => value is PSObject ps ? ps.BaseObject : value;

    /// <summary>A -PlacementHost's member: a hashtable's (any dictionary's) key, ignoring case, or an object's property.</summary>
    private static object? Member(PSObject value, string name)
    {
        if (value.BaseObject is IDictionary dictionary)
        {
            foreach (DictionaryEntry entry in dictionary)
                if (string.Equals(Unwrap(entry.Key)?.ToString(), name, StringComparison.OrdinalIgnoreCase)) return entry.Value;
            return null;
        }
        return value.Properties[name]?.Value;
    }

    private static readonly string[] Units = ["KB", "MB", "GB", "TB", "PB"];

    /// <summary>A number of bytes as text: digits (a decimal point allowed before a unit), and optionally KB, MB, GB, TB or PB, as PowerShell's numeric literals mean them (powers of 1024).</summary>
    private static long ParseBytes(string text)
    {
        string t = text.Trim();
        decimal scale = 1;
        for (int u = 0; u < Units.Length; u++)
            if (t.EndsWith(Units[u], StringComparison.OrdinalIgnoreCase))
            {
                t = t[..^2].TrimEnd();
                scale = (decimal)Math.Pow(1024, u + 1);
                break;
            }
        var style = scale == 1 ? System.Globalization.NumberStyles.None : System.Globalization.NumberStyles.AllowDecimalPoint;
        if (t.Length == 0 || !decimal.TryParse(t, style, System.Globalization.CultureInfo.InvariantCulture, out decimal number))
            throw new FormatException($"'{text}' is not a number of bytes");
        decimal bytes = number * scale;
        if (bytes > long.MaxValue) throw new OverflowException($"'{text}' is more than {long.MaxValue} bytes");
        if (bytes != decimal.Truncate(bytes)) throw new FormatException($"'{text}' is not a whole number of bytes");
        return (long)bytes;
    }

    private static long Capacity(object? value, string? host)
    {
        try
        {
            return value switch
            {
                null => throw new FormatException("none given"),
                string text => ParseBytes(text),
                _ => Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture),
            };
        }
        catch (Exception e) when (value is null)
        {
            throw new DEException("PlacementCapacityInvalid", DEErrorKind.InvalidArgument,
                $"Host '{host}' has no capacity: give its memory for guests in bytes, a number or a string such as '64GB' (-PlacementHost: its CapacityBytes; -HostCapacity: the value of its key).",
                host, e);
        }
        catch (Exception e) when (e is FormatException or InvalidCastException or OverflowException)
        {
            throw new DEException("PlacementCapacityInvalid", DEErrorKind.InvalidArgument,
                $"The capacity of host '{host}' must be a number of bytes, alone or with KB, MB, GB, TB or PB (powers of 1024, as in PowerShell: 64GB, '64GB', 68719476736); '{value}' is not.", host, e);
        }
    }
}
