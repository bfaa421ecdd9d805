using System.Globalization;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Fleet;

/// <summary>A fingerprint's fields checked against what the builder makes (docs/FLEET.md, "Objects").</summary>
public sealed partial class DomainFingerprint
{
    /// <summary>
    /// The most pages a fingerprint may describe: 2^40 (4 PiB of guest memory, far beyond any guest), so that its bytes
    /// (PageCount × 4096) and the model's sums over a set of fingerprints cannot overflow (<see cref="ColocationModel.MaxSetPages"/>).
    /// </summary>
    public const long MaxPageCount = 1L << 40;

    private const int PageSize = PageGeometry.PageSize;

    /// <summary>
    /// The first domain given more than once among <paramref name="fingerprints"/> and how many times it is given, or null
    /// when each is given once. A domain is its host's name in any case (as every fleet cmdlet compares host names,
    /// <see cref="Placement.HostNames"/>) and its own name as written.
    /// </summary>
    public static (DomainFingerprint Fingerprint, int Count)? FirstDuplicate(IEnumerable<DomainFingerprint> fingerprints)
    {
        ArgumentNullException.ThrowIfNull(fingerprints);
        // Groups come in the order of their first fingerprints.
        return fingerprints.GroupBy(f => f, SameDomain.Instance).FirstOrDefault(g => g.Count() > 1) is { } twice
            ? (twice.First(), twice.Count())
            : null;
    }

    /// <summary>Fingerprints of the same domain: its host's name in any case, its own name as written.</summary>
    private sealed class SameDomain : IEqualityComparer<DomainFingerprint>
    {
        public static readonly SameDomain Instance = new();

        public bool Equals(DomainFingerprint? x, DomainFingerprint? y) =>
            Placement.HostNames.Equals(x?.HostName ?? "", y?.HostName ?? "") && string.Equals(x?.Domain ?? "", y?.Domain ?? "", StringComparison.Ordinal);

        public int GetHashCode(DomainFingerprint f) =>
            HashCode.Combine(Placement.HostNames.GetHashCode(f.HostName ?? ""), StringComparer.Ordinal.GetHashCode(f.Domain ?? ""));
    }

    private long _sampledCopies = -1;

    /// <summary>Pages the sketch's entries stand for: the sum of their copies (what <see cref="SampledPages"/> must say).</summary>
    private long SampledCopies
    {
        get
        {
            if (_sampledCopies >= 0) return _sampledCopies;
            long n = 0;
            foreach (var e in GetEntries()) n += e.Copies;
            return _sampledCopies = n;
        }
    }

    /// <summary>
    /// Refuses a fingerprint Get-DEFingerprint could not have made: another format (FingerprintSchemaUnknown), a sketch
    /// that cannot be read, or a field out of the range the builder makes it in, or at odds with the other fields or with
    /// the sketch (FingerprintInvalid, naming the fingerprint, the field, its value and what is allowed). The colocation
    /// model calls it on every fingerprint it combines and the cmdlets on every one they read, so an altered or hand-made
    /// fingerprint is an error rather than a wrong prediction (a shift that wraps, a sum that overflows). Each check is
    /// a comparison; the sketch is decoded and its copies summed once.
    /// </summary>
    public void Validate()
    {
        if (Schema != CurrentSchema)
            throw new DEException("FingerprintSchemaUnknown", DEErrorKind.InvalidData,
                $"The fingerprint of {Naming} is '{Schema}'; this module reads '{CurrentSchema}'.", ToString());

        // The sample: the rates -SampleRate makes (4 to 4096), the similarity route two powers of two sparser (or, made
        // before session 14, at the content route's rate), the detector every fingerprint is keyed on.
        const int min = FingerprintBuilder.MinSampleShift, max = FingerprintBuilder.MaxSampleShift, extra = FingerprintBuilder.SimilarityShiftExtra;
        if (SampleShift is < min or > max)
            throw FieldInvalid(nameof(SampleShift), SampleShift, $"{min} to {max} (-SampleRate {1 << min} to {1 << max})");
        if (SimilarityShift != 0 && SimilarityShift != SampleShift + extra)
            throw FieldInvalid(nameof(SimilarityShift), SimilarityShift, $"SampleShift + {extra} ({SampleShift + extra}), or 0 in a fingerprint made before session 14");
        if (DetectorSeed != FingerprintBuilder.FleetDetectorSeed)
            throw FieldInvalid(nameof(DetectorSeed), DetectorSeed, $"{FingerprintBuilder.FleetDetectorSeed}, the seed every fingerprint is keyed on");

        // The pages, by kind, adding up to the domain.
        Count(nameof(PageCount), PageCount, MaxPageCount, "2^40");
        Count(nameof(UntouchedPages), UntouchedPages, PageCount, nameof(PageCount));
        if (GuestBytes != (PageCount - UntouchedPages) * PageSize)
            throw FieldInvalid(nameof(GuestBytes), GuestBytes,
                $"(PageCount − UntouchedPages) × {PageSize} ({(PageCount - UntouchedPages) * PageSize})");
        Count(nameof(ZeroPages), ZeroPages, PageCount, nameof(PageCount));
        Count(nameof(UniformPages), UniformPages, PageCount, nameof(PageCount));
        Count(nameof(ContentPages), ContentPages, PageCount, nameof(PageCount));
        Count(nameof(UnreadablePages), UnreadablePages, PageCount, nameof(PageCount));
        long kinds = ZeroPages + UniformPages + ContentPages + UnreadablePages + UntouchedPages;
        if (kinds != PageCount)
            throw FieldInvalid("ZeroPages + UniformPages + ContentPages + UnreadablePages + UntouchedPages", kinds, $"PageCount ({PageCount})");
        Count(nameof(DistinctContents), DistinctContents, ContentPages, nameof(ContentPages));

        // The sketch, and the counts that describe it: each entry is a distinct content, its copies the sampled pages.
        var entries = GetEntries();
        if (SketchBytes != _sketchLength)
            throw FieldInvalid(nameof(SketchBytes), SketchBytes, $"the bytes of its sketch ({_sketchLength})");
        if (SampledPages != SampledCopies)
            throw FieldInvalid(nameof(SampledPages), SampledPages, $"the pages its sketch's {entries.Count} entries hold ({SampledCopies})");
        Count(nameof(SampledPages), SampledPages, ContentPages, nameof(ContentPages));
        if (DistinctContents != 0 && DistinctContents < entries.Count)
            throw FieldInvalid(nameof(DistinctContents), DistinctContents, $"at least the {entries.Count} distinct contents its sketch holds, or 0 (not counted)");
        Count(nameof(IncompressibleContents), IncompressibleContents, DistinctContents, nameof(DistinctContents));

        // What the pass measured: ratios of store bytes, runs of four pages, slot sizes of a page at most; a small
        // domain's whole-domain figures only in a small domain (the model's strata weigh its sample by them).
        Fraction(nameof(GroupFactor), GroupFactor);
        Fraction(nameof(SharedGroupFactor), SharedGroupFactor);
        Count(nameof(GroupRunsSampled), GroupRunsSampled, PageCount / 4, "PageCount / 4");
        Count(nameof(SharedGroupRunsSampled), SharedGroupRunsSampled, PageCount / 4, "PageCount / 4");
        if (!(SinglesMean >= 0 && SinglesMean <= PageSize))
            throw FieldInvalid(nameof(SinglesMean), SinglesMean, $"0 to {PageSize}");
        if (!(SampledSinglesMean >= 0 && SampledSinglesMean <= PageSize))
            throw FieldInvalid(nameof(SampledSinglesMean), SampledSinglesMean, $"0 to {PageSize}");
        const int small = FingerprintBuilder.ExactSinglesPages;
        if (PageCount > small && SinglesMean != 0)
            throw FieldInvalid(nameof(SinglesMean), SinglesMean, $"0 in a domain of more than {small} pages (only a smaller one is measured whole)");
        if (PageCount > small && IncompressibleContents != 0)
            throw FieldInvalid(nameof(IncompressibleContents), IncompressibleContents, $"0 in a domain of more than {small} pages (only a smaller one is measured whole)");

        if (PredictedUsedBytes < 0)
            throw FieldInvalid(nameof(PredictedUsedBytes), PredictedUsedBytes, "0 or more");
        if (!(Seconds >= 0 && double.IsFinite(Seconds)))
            throw FieldInvalid(nameof(Seconds), Seconds, "0 or more");
    }

    /// <summary>"domain 'x' of host 'y'": the fingerprint in an error's message.</summary>
    private string Naming => $"domain '{Domain}' of host '{HostName}'";

    private void Count(string field, long value, long max, string maxName)
    {
        if (value < 0 || value > max) throw FieldInvalid(field, value, $"0 to {maxName} ({max})");
    }

    private void Fraction(string field, double value)
    {
        if (!(value >= 0 && value <= 1)) throw FieldInvalid(field, value, "0 to 1");
    }

    private DEException FieldInvalid(string field, object value, string allowed) =>
        new("FingerprintInvalid", DEErrorKind.InvalidData,
            $"The fingerprint of {Naming} is invalid: {field} is {Convert.ToString(value, CultureInfo.InvariantCulture)}; it must be {allowed}.",
            ToString());
}
