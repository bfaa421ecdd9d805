using System.Collections;
using System.Management.Automation;
using DifferenceEngine.Fleet;
using Newtonsoft.Json.Linq;

namespace DifferenceEngine.Commands;

/// <summary>
/// Fingerprints as cmdlets receive them: DomainFingerprint objects, the property bags remoting turns them into
/// (Deserialized.DifferenceEngine.Fleet.DomainFingerprint), or the objects ConvertFrom-Json makes of their JSON.
/// </summary>
internal static class FingerprintInput
{
    private static readonly string[] Properties = typeof(DomainFingerprint).GetProperties()
        .Where(p => p.CanWrite).Select(p => p.Name).ToArray();

    /// <summary>Copies a plain value (a string, number, date or flag); anything else is left out (its default stays).</summary>
    private static void Copy(JObject json, string name, object? value)
    {
        object? v = value is PSObject p ? p.BaseObject : value;
        if (v is string or bool or int or long or double or float or decimal or DateTime or DateTimeOffset or uint or ulong or short or ushort or byte)
            json[name] = JToken.FromObject(v);
    }

    /// <summary>
    /// The fingerprints a cmdlet goes on with: those of the fleet key and sampling most of them have
    /// (<see cref="ColocationModel.KeepCombinable"/>); each other one is written as its own error.
    /// </summary>
    public static List<DomainFingerprint> Combinable(IReadOnlyList<DomainFingerprint> fingerprints, Action<DEException> writeError)
    {
        var (kept, refused) = ColocationModel.KeepCombinable(fingerprints);
        foreach (var error in refused) writeError(error);
        return kept;
    }

    public static DomainFingerprint From(object? value)
    {
        object? inner = value is PSObject ps ? ps.BaseObject : value;
        if (inner is DomainFingerprint fingerprint)
        {
            fingerprint.Validate(); // its properties can be set like any object's
            return fingerprint;
        }
        var json = new JObject();
        if (inner is IDictionary dictionary)
        {
            foreach (string name in Properties)
                if (dictionary.Contains(name)) Copy(json, name, dictionary[name]);
        }
        else if (value is PSObject bag)
        {
            foreach (string name in Properties) Copy(json, name, bag.Properties[name]?.Value);
        }
        if (json["Schema"] is null || json["Sketch"] is null)
        {
            string missing = json["Schema"] is null && json["Sketch"] is null ? "no Schema and no Sketch" : json["Schema"] is null ? "no Schema" : "no Sketch";
            throw new DEException("FingerprintInvalid", DEErrorKind.InvalidData,
                $"A {inner?.GetType().Name ?? "null"} is not a fingerprint: it has {missing} (pass what Get-DEFingerprint writes, through remoting or JSON).",
                inner?.GetType().Name);
        }
        try
        {
            var result = json.ToObject<DomainFingerprint>()!;
            result.Validate(); // the sketch decodes and every field is in range, or the fingerprint is refused now
            return result;
        }
        catch (Exception e) when (e is Newtonsoft.Json.JsonException or FormatException or ArgumentException or OverflowException or InvalidCastException)
        {
            throw new DEException("FingerprintInvalid", DEErrorKind.InvalidData,
                $"The fingerprint of domain '{json["Domain"]}' of host '{json["HostName"]}' cannot be read: {e.Message}", $"{json["HostName"]}/{json["Domain"]}", e);
        }
    }
}
