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
        if (_fingerprints.Count == 0) return; // each refused input was written as its own error
        var duplicate = _fingerprints.GroupBy(f => (f.HostName, f.Domain)).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
            ThrowDEError(new DEException("FingerprintDuplicate", DEErrorKind.InvalidArgument,
                $"Domain '{duplicate.Key.Domain}' of host '{duplicate.Key.HostName}' was given {duplicate.Count()} times; each domain counts once.",
                $"{duplicate.Key.HostName}/{duplicate.Key.Domain}"));
        try
        {
            WriteObject(ColocationModel.Predict(_fingerprints));
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
        }
    }
}
