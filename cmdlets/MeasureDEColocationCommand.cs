using System.Management.Automation;
using DifferenceEngine.Fleet;

namespace DifferenceEngine.Commands;

/// <summary>
/// Predicts the memory a set of domains needs placed together on one host, all mechanisms on, from their fingerprints
/// (Measure-DEColocation): the domains of one host, or any set being considered.
/// </summary>
[Cmdlet(VerbsDiagnostic.Measure, "DEColocation")]
[OutputType(typeof(ColocationPrediction))]
public sealed class MeasureDEColocationCommand : DECmdlet
{
    private readonly List<DomainFingerprint> _fingerprints = new();

    /// <summary>Fingerprints from Get-DEFingerprint (also as they come back from remoting, or from their JSON).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    [ValidateNotNull]
    public object[] Fingerprint { get; set; } = [];

    protected override void ProcessRecord()
    {
        foreach (var value in Fingerprint)
            if (TryItem(() => FingerprintInput.From(value), out var fingerprint)) _fingerprints.Add(fingerprint);
    }

    protected override void EndProcessing()
    {
        // Of another fleet key or sample rate than most: each its own error, the rest predicted.
        var fingerprints = FingerprintInput.Combinable(_fingerprints, WriteDEError);
        if (fingerprints.Count == 0) return; // each refused input was written as its own error
        // The same domain of the same host (its name in any case, as every fleet cmdlet compares host names).
        if (DomainFingerprint.FirstDuplicate(fingerprints) is var (duplicate, count))
            ThrowDEError(new DEException("FingerprintDuplicate", DEErrorKind.InvalidArgument,
                $"Domain '{duplicate.Domain}' of host '{duplicate.HostName}' was given {count} times; each domain counts once.",
                duplicate.ToString()));
        try
        {
            // One order whatever the order given, as Get-DEPlacement predicts each host's domains.
            WriteObject(ColocationModel.Predict(ColocationModel.InModelOrder(fingerprints)));
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
        }
    }
}
