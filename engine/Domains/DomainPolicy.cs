namespace DifferenceEngine.Domains;

/// <summary>Per-domain policy: which mechanisms run, the clock's extended period, and the trust group.</summary>
public sealed class DomainPolicy
{
    public const string DefaultTrustGroup = "default";
    public const int DefaultC4Sweeps = 2;

    public const int DefaultPatchThreshold = 2048;
    /// <summary>
    /// Three quarters of a page: a page is kept compressed when it saves at least a quarter (a ratio of 4:3 or
    /// better). Measured on real memory (docs/PERFORMANCE.md): at half a page, the pages that compress only to between
    /// half and three quarters stayed whole, and with Zstd the whole run needed 17% more memory than at three quarters.
    /// </summary>
    public const double DefaultCompressionThreshold = 0.75;

    /// <summary>The codec of single compressed pages by default: LZ4, the cheapest to fault in.</summary>
    public const Codecs.CompressionAlgorithm DefaultAlgorithm = Codecs.CompressionAlgorithm.LZ4;

    /// <summary>Pages a page group holds at most by default (docs/PERFORMANCE.md, "Page groups").</summary>
    public const int DefaultGroupSize = 4;

    /// <summary>Sweeps past C4 a compressed page stays untouched before it is grouped, by default.</summary>
    public const int DefaultGroupAfterSweeps = 2;

    private int _c4Sweeps = DefaultC4Sweeps;
    private int _groupSize = DefaultGroupSize;
    private int _groupAfterSweeps = DefaultGroupAfterSweeps;
    /// <summary>The codec of page groups unless the policy says otherwise.</summary>
    public const Codecs.CompressionAlgorithm DefaultGroupAlgorithm = Codecs.CompressionAlgorithm.Zstd;

    private Codecs.CompressionAlgorithm _groupAlgorithm = DefaultGroupAlgorithm;
    /// <summary>Held while a policy change is checked and taken (SetPolicy), so two changes at once do not undo each other.</summary>
    internal readonly Lock ChangeGate = new();

    /// <summary>
    /// Counts the changes of the mechanism flags made through the host (enable, disable), under <see cref="ChangeGate"/>:
    /// a restore that fails puts its flag back only when no other change came in between.
    /// </summary>
    internal int MechanismChanges;

    private string _trustGroup = DefaultTrustGroup;
    private int _patchThreshold = DefaultPatchThreshold;
    private double _compressionThreshold = DefaultCompressionThreshold;

    /// <summary>Whether scans merge this domain's identical and zero pages.</summary>
    public bool SharingEnabled { get; internal set; }

    /// <summary>Whether scans store similar pages (C3, C4) as patches against a reference page.</summary>
    public bool PatchingEnabled { get; internal set; }

    /// <summary>Whether scans compress cold pages (C4) that matched nothing.</summary>
    public bool CompressionEnabled { get; internal set; }

    /// <summary>The codec for compressed pages.</summary>
    public Codecs.CompressionAlgorithm CompressionAlgorithm { get; internal set; } = DefaultAlgorithm;

    /// <summary>
    /// Most pages compressed together in one page group (2 to 32), or 0 for no groups: long-cold compressed pages of
    /// the domain are then compressed together, in gfn order, with <see cref="GroupAlgorithm"/> (docs/ARCHITECTURE.md,
    /// "Page groups"). Takes effect only while compression is on.
    /// </summary>
    public int GroupSize
    {
        get => _groupSize;
        internal set
        {
            if (value != 0 && value is < 2 or > Compression.PageGroupTable.MaxMembers)
                throw new DEException("PolicyGroupSizeInvalid", DEErrorKind.InvalidArgument,
                    $"A page group holds between 2 and {Compression.PageGroupTable.MaxMembers} pages (0 turns groups off); {value} was given.", value);
            _groupSize = value;
        }
    }

    /// <summary>
    /// Sweeps a compressed page must stay untouched past C4 before it may be grouped (1 to 13; the clock counts idle
    /// sweeps up to 15, so the wait is at most 15 sweeps in all).
    /// </summary>
    public int GroupAfterSweeps
    {
        get => _groupAfterSweeps;
        internal set
        {
            if (value is < 1 or > 13)
                throw new DEException("PolicyGroupAfterSweepsInvalid", DEErrorKind.InvalidArgument,
                    $"The wait before grouping must be between 1 and 13 sweeps past C4; {value} was given.", value);
            _groupAfterSweeps = value;
        }
    }

    /// <summary>The codec of page groups: Zstd (the default) or LZ4 (at a high-compression level; decoded as fast as any LZ4).</summary>
    public Codecs.CompressionAlgorithm GroupAlgorithm
    {
        get => _groupAlgorithm;
        internal set
        {
            if (value is not (Codecs.CompressionAlgorithm.Zstd or Codecs.CompressionAlgorithm.LZ4))
                throw new DEException("PolicyGroupAlgorithmInvalid", DEErrorKind.InvalidArgument,
                    $"Page groups are compressed with Zstd or LZ4; {value} was given.", value);
            _groupAlgorithm = value;
        }
    }

    /// <summary>Largest patch accepted, in bytes (the paper's static study used half a page).</summary>
    public int PatchThreshold
    {
        get => _patchThreshold;
        internal set
        {
            if (value is < 16 or > 4000)
                throw new DEException("PolicyPatchThresholdInvalid", DEErrorKind.InvalidArgument,
                    $"The patch threshold must be between 16 and 4000 bytes; {value} was given.", value);
            _patchThreshold = value;
        }
    }

    /// <summary>
    /// Largest compressed size accepted, as a fraction of the page (0.75 by default: a page must compress to three
    /// quarters of its size or better; 0.5 asks for a ratio of 2 or more).
    /// </summary>
    public double CompressionThreshold
    {
        get => _compressionThreshold;
        internal set
        {
            if (double.IsNaN(value) || value is < 0.01 or > 0.95)
                throw new DEException("PolicyCompressionThresholdInvalid", DEErrorKind.InvalidArgument,
                    $"The compression threshold must be a fraction between 0.01 and 0.95 of a page; {value} was given.", value);
            _compressionThreshold = value;
        }
    }

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

    private static readonly char[] Separators = [',', ';'];

    /// <summary>Characters that separate trust groups in a list (a placement host's TrustGroups in a CSV cell): no name holds them.</summary>
    public static IReadOnlyList<char> TrustGroupSeparators { get; } = Array.AsReadOnly(Separators);

    internal static string ValidateTrustGroup(string? value)
    {
        if (string.IsNullOrWhiteSpace(value) || value.Length > 64 || Hosting.NameRules.Unprintable(value) is not null)
            throw new DEException("PolicyTrustGroupInvalid", DEErrorKind.InvalidArgument,
                $"A trust group is a non-empty name of at most 64 printable characters{Hosting.NameRules.Why(value ?? "")}.", value);
        if (value.IndexOfAny(Separators) >= 0)
            throw new DEException("PolicyTrustGroupInvalid", DEErrorKind.InvalidArgument,
                $"A trust group's name may not hold ',' or ';': they separate trust groups in lists (Get-DEPlacement's " +
                $"-PlacementHost TrustGroups); '{value}' was given.", value);
        return value;
    }

    public DomainPolicy Clone() => (DomainPolicy)MemberwiseClone();

    /// <summary>
    /// A copy with the given values changed (null leaves a value as it is), each checked by its setter: a host checks every
    /// value this way before it changes any.
    /// </summary>
    internal DomainPolicy With(int? c4Sweeps, int? patchThreshold, double? compressionThreshold,
        Codecs.CompressionAlgorithm? algorithm, string? trustGroup, int? groupSize = null, int? groupAfterSweeps = null,
        Codecs.CompressionAlgorithm? groupAlgorithm = null)
    {
        var trial = Clone();
        if (groupSize is { } gs) trial.GroupSize = gs;
        if (groupAfterSweeps is { } ga) trial.GroupAfterSweeps = ga;
        if (groupAlgorithm is { } galg) trial.GroupAlgorithm = galg;
        if (c4Sweeps is { } c4) trial.C4Sweeps = c4;
        if (patchThreshold is { } pt) trial.PatchThreshold = pt;
        if (compressionThreshold is { } ct) trial.CompressionThreshold = ct;
        if (algorithm is { } a) trial.CompressionAlgorithm = a;
        if (trustGroup is not null) trial.TrustGroup = trustGroup;
        return trial;
    }

    /// <summary>Takes the tunable values of <paramref name="checkedPolicy"/> (from <see cref="With"/>), not the mechanism switches.</summary>
    internal void TakeTunables(DomainPolicy checkedPolicy)
    {
        C4Sweeps = checkedPolicy.C4Sweeps;
        PatchThreshold = checkedPolicy.PatchThreshold;
        CompressionThreshold = checkedPolicy.CompressionThreshold;
        CompressionAlgorithm = checkedPolicy.CompressionAlgorithm;
        TrustGroup = checkedPolicy.TrustGroup;
        GroupSize = checkedPolicy.GroupSize;
        GroupAfterSweeps = checkedPolicy.GroupAfterSweeps;
        GroupAlgorithm = checkedPolicy.GroupAlgorithm;
    }
}
