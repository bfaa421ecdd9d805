namespace DifferenceEngine.Domains;

/// <summary>Per-domain policy: which mechanisms run, the clock's extended period, and the trust group.</summary>
public sealed class DomainPolicy
{
    public const string DefaultTrustGroup = "default";
    public const int DefaultC4Sweeps = 2;

    private int _c4Sweeps = DefaultC4Sweeps;
    private string _trustGroup = DefaultTrustGroup;

    /// <summary>Whether scans merge this domain's identical and zero pages.</summary>
    public bool SharingEnabled { get; internal set; }

    /// <summary>
    /// Sweeps without access after which a page is C4 ("not accessed for an extended period").
    /// </summary>
    public int C4Sweeps
    {
        get => _c4Sweeps;
        internal set
        {
            if (value is < 1 or > 15)
                throw new DEException("PolicyC4SweepsInvalid", DEErrorKind.InvalidArgument,
                    $"The C4 period must be between 1 and 15 sweeps; {value} was given.", value);
            _c4Sweeps = value;
        }
    }

    /// <summary>
    /// Pages are shared only among domains of the same trust group. Sharing across groups is a side
    /// channel (Flush+Reload, Dedup Est Machina): put mutually distrusting tenants in different groups.
    /// </summary>
    public string TrustGroup
    {
        get => _trustGroup;
        internal set => _trustGroup = ValidateTrustGroup(value);
    }

    internal static string ValidateTrustGroup(string? value)
    {
        if (string.IsNullOrWhiteSpace(value) || value.Length > 64)
            throw new DEException("PolicyTrustGroupInvalid", DEErrorKind.InvalidArgument,
                "A trust group is a non-empty name of at most 64 characters.", value);
        return value;
    }

    public DomainPolicy Clone() => (DomainPolicy)MemberwiseClone();
}
