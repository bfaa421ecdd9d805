using DifferenceEngine.Fleet;
using DifferenceEngine.Loading;
using DifferenceEngine.Tests.Engine;
using Newtonsoft.Json;
using Xunit;

namespace DifferenceEngine.Tests.Fleet;

/// <summary>
/// DomainFingerprint.Validate: a real fingerprint with one field altered is refused (FingerprintInvalid, InvalidData, the
/// field named) wherever it is read or combined; the fingerprints the builder makes pass, and the largest valid values
/// predict without overflow.
/// </summary>
public sealed class FingerprintValidationTests
{
    private static readonly FleetKey Key = FleetKey.FromSecret(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray());

    /// <summary>A small domain (measured whole: SinglesMean and IncompressibleContents set) from real files, made once.</summary>
    private static readonly Lazy<DomainFingerprint> Real = new(() =>
    {
        using var dir = new TempDir();
        using var source = MemorySource.OpenFile(TestMemory.WriteRaw(dir, "real.img", FleetTests.RealImage(2048, 31)));
        return FingerprintBuilder.FromSource(source, Key, "real", "host1");
    });

    /// <summary>A file's fingerprint stands for a domain of a host: it takes only a trust group and host name one could have.</summary>
    [Theory]
    [InlineData(" ", "host1", "PolicyTrustGroupInvalid")]
    [InlineData("tenant\u0001", "host1", "PolicyTrustGroupInvalid")]
    [InlineData("default", " ", "HostNameInvalid")]
    [InlineData("default", "h*", "HostNameInvalid")]
    public void AFilesFingerprintTakesOnlyNamesADomainCouldHave(string trustGroup, string hostName, string errorId)
    {
        using var dir = new TempDir();
        using var source = MemorySource.OpenFile(TestMemory.WriteRaw(dir, "named.img", FleetTests.RealImage(64, 33)));
        Assert.Equal(errorId, Assert.Throws<DEException>(() => FingerprintBuilder.FromSource(source, Key, "d", hostName, trustGroup)).ErrorId);
    }

    /// <summary>A copy of the real fingerprint, as one read back from its JSON.</summary>
    private static DomainFingerprint Copy(string domain = "real")
    {
        var f = JsonConvert.DeserializeObject<DomainFingerprint>(JsonConvert.SerializeObject(Real.Value))!;
        f.Domain = domain;
        return f;
    }

    /// <summary>Another domain's fingerprint, whose sketch is put on a copy of the real one already read.</summary>
    private static readonly Lazy<DomainFingerprint> Other = new(() =>
    {
        using var dir = new TempDir();
        using var source = MemorySource.OpenFile(TestMemory.WriteRaw(dir, "other.img", FleetTests.RealImage(1024, 32)));
        return FingerprintBuilder.FromSource(source, Key, "other", "host1");
    });

    /// <summary>One field (or the fields that must move with it) altered, and the field the error names.</summary>
    private static readonly Dictionary<string, (string Field, Action<DomainFingerprint> Alter)> Cases = new()
    {
        ["SampleShift -1"] = ("SampleShift", f => f.SampleShift = -1),
        ["SampleShift 0"] = ("SampleShift", f => f.SampleShift = 0),
        ["SampleShift 1"] = ("SampleShift", f => f.SampleShift = FingerprintBuilder.MinSampleShift - 1),
        ["SampleShift 13"] = ("SampleShift", f => f.SampleShift = FingerprintBuilder.MaxSampleShift + 1),
        ["SampleShift 70"] = ("SampleShift", f => f.SampleShift = 70),
        ["SimilarityShift not SampleShift + 2"] = ("SimilarityShift", f => f.SimilarityShift = f.SampleShift + 1),
        ["SimilarityShift negative"] = ("SimilarityShift", f => f.SimilarityShift = -2),
        ["DetectorSeed"] = ("DetectorSeed", f => f.DetectorSeed = 1),
        ["PageCount negative"] = ("PageCount", f => f.PageCount = -1),
        ["PageCount max"] = ("PageCount", f => f.PageCount = long.MaxValue),
        ["PageCount over 2^40"] = ("PageCount", f => f.PageCount = DomainFingerprint.MaxPageCount + 1),
        ["GuestBytes negative"] = ("GuestBytes", f => f.GuestBytes = -20480),
        ["GuestBytes not PageCount pages"] = ("GuestBytes", f => f.GuestBytes += 1),
        ["PageCount without GuestBytes"] = ("GuestBytes", f => f.PageCount += 1),
        ["ZeroPages negative"] = ("ZeroPages", f => f.ZeroPages = -1),
        ["UniformPages over PageCount"] = ("UniformPages", f => f.UniformPages = f.PageCount + 1),
        ["ContentPages negative"] = ("ContentPages", f => f.ContentPages = -5),
        ["UnreadablePages over PageCount"] = ("UnreadablePages", f => f.UnreadablePages = f.PageCount + 1),
        ["kinds not adding up"] = ("ZeroPages + UniformPages + ContentPages + UnreadablePages + UntouchedPages", f => f.ZeroPages -= 1),
        ["UntouchedPages without GuestBytes"] = ("GuestBytes", f => { f.UntouchedPages += 1; f.ZeroPages -= 1; }),
        ["UntouchedPages past PageCount"] = ("UntouchedPages", f => f.UntouchedPages = f.PageCount + 1),
        ["DistinctContents over ContentPages"] = ("DistinctContents", f => f.DistinctContents = f.ContentPages + 1),
        ["DistinctContents under the sketch's"] = ("DistinctContents", f => f.DistinctContents = 1),
        ["DistinctContents negative"] = ("DistinctContents", f => f.DistinctContents = -1),
        ["IncompressibleContents over DistinctContents"] = ("IncompressibleContents", f => f.IncompressibleContents = f.DistinctContents + 1),
        ["SketchBytes"] = ("SketchBytes", f => f.SketchBytes += 1),
        ["SampledPages"] = ("SampledPages", f => f.SampledPages += 1),
        ["SampledPages negative"] = ("SampledPages", f => f.SampledPages = -1),
        ["SampledPages of an empty sketch"] = ("SampledPages", f =>
        {
            f.Sketch = Convert.ToBase64String("DEFP\u0001\u0000\u0000\u0000\u0000\u0000"u8.ToArray());
            f.SketchBytes = 10;
            f.SampledPages = 130;
        }),
        ["another domain's sketch"] = ("SketchBytes", f => f.Sketch = Other.Value.Sketch),
        ["GroupFactor NaN"] = ("GroupFactor", f => f.GroupFactor = double.NaN),
        ["GroupFactor over 1"] = ("GroupFactor", f => f.GroupFactor = 1.5),
        ["GroupFactor negative"] = ("GroupFactor", f => f.GroupFactor = -0.1),
        ["SharedGroupFactor infinite"] = ("SharedGroupFactor", f => f.SharedGroupFactor = double.PositiveInfinity),
        ["GroupRunsSampled negative"] = ("GroupRunsSampled", f => f.GroupRunsSampled = -1),
        ["GroupRunsSampled over a run in four pages"] = ("GroupRunsSampled", f => f.GroupRunsSampled = (int)(f.PageCount / 4) + 1),
        ["SharedGroupRunsSampled negative"] = ("SharedGroupRunsSampled", f => f.SharedGroupRunsSampled = -1),
        ["SinglesMean over a page"] = ("SinglesMean", f => f.SinglesMean = 4097),
        ["SinglesMean NaN"] = ("SinglesMean", f => f.SinglesMean = double.NaN),
        ["SampledSinglesMean negative"] = ("SampledSinglesMean", f => f.SampledSinglesMean = -1),
        ["SinglesMean of a large domain"] = ("SinglesMean", f => Grow(f, FingerprintBuilder.ExactSinglesPages + 1)),
        ["IncompressibleContents of a large domain"] = ("IncompressibleContents", f =>
        {
            Grow(f, FingerprintBuilder.ExactSinglesPages + 1);
            f.SinglesMean = 0;
            f.IncompressibleContents = 1;
        }),
        ["PredictedUsedBytes negative"] = ("PredictedUsedBytes", f => f.PredictedUsedBytes = -1),
        ["Seconds negative"] = ("Seconds", f => f.Seconds = -1),
    };

    public static TheoryData<string> CaseNames() => new(Cases.Keys);

    /// <summary>The domain made larger by zero pages (its bytes with it): every other field stays as it was.</summary>
    private static void Grow(DomainFingerprint f, long pages)
    {
        f.ZeroPages += pages - f.PageCount;
        f.PageCount = pages;
        f.GuestBytes = pages * 4096;
    }

    [Fact]
    public void The_fingerprints_the_builder_makes_pass_as_they_are_and_read_back_from_JSON()
    {
        Real.Value.Validate();
        Copy().Validate();
        Assert.True(Real.Value.SinglesMean > 0 && Real.Value.IncompressibleContents >= 0, "a small domain, measured whole");
        Assert.Equal(Real.Value.PredictedUsedBytes, ColocationModel.Predict([Copy()]).PredictedUsedBytes);
        // A fingerprint made before session 14 (the routes sampled at one rate) is still read.
        var old = Copy();
        old.SimilarityShift = 0;
        old.Validate();
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void A_fingerprint_with_one_field_altered_is_refused_naming_the_field(string name)
    {
        var (field, alter) = Cases[name];
        var f = Copy();
        f.GetEntries(); // read once before it is altered, as a fingerprint in a PowerShell variable is
        alter(f);
        var error = Assert.Throws<DEException>(f.Validate);
        Assert.Equal("FingerprintInvalid", error.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, error.Kind);
        Assert.Contains($"is invalid: {field} is ", error.Message);
        Assert.Contains("domain 'real' of host 'host1'", error.Message);
        Assert.Equal("host1/real", error.Target);
        // Combined with valid ones, by the model and by the placement, it is refused the same way.
        foreach (var combine in new Action[]
                 {
                     () => ColocationModel.Predict([Copy("a"), f, Copy("b")]),
                     () => Placement.Recommend([Copy("a"), f], [new PlacementHost("h1", 1L << 30)], PlacementGoal.FewestHosts),
                 })
        {
            var combined = Assert.Throws<DEException>(combine);
            Assert.Equal("FingerprintInvalid", combined.ErrorId);
            Assert.Equal(error.Message, combined.Message);
        }
    }

    [Fact]
    public void The_largest_valid_fingerprints_predict_without_overflow_and_a_larger_set_is_refused()
    {
        // 2^40 pages each, the sparsest sample, the largest weight (every content distinct): 2^8 of them are 2^48 pages.
        DomainFingerprint Largest(int i)
        {
            var f = Copy($"d{i:D3}");
            f.SampleShift = FingerprintBuilder.MaxSampleShift;
            f.SimilarityShift = f.SampleShift + FingerprintBuilder.SimilarityShiftExtra;
            f.ContentPages += DomainFingerprint.MaxPageCount - f.PageCount;
            f.DistinctContents = f.ContentPages;
            f.PageCount = DomainFingerprint.MaxPageCount;
            f.GuestBytes = f.PageCount * 4096;
            f.SinglesMean = 0;
            f.IncompressibleContents = 0;
            return f;
        }
        var set = Enumerable.Range(0, (int)(ColocationModel.MaxSetPages / DomainFingerprint.MaxPageCount)).Select(Largest).ToArray();
        var p = ColocationModel.Predict(set);
        Assert.Equal(ColocationModel.MaxSetPages * 4096, p.GuestBytes);
        foreach (long figure in new[]
                 {
                     p.PredictedUsedBytes, p.FrameBytes, p.StoreBytes, p.MetadataBytes, p.UsedWithSharingBytes, p.UsedWithSharingAndPatchingBytes,
                     p.SeparateUsedBytes, p.PatchedPages, p.ReferencePages, p.SharedContents, p.CompressedContents, p.FrameContents,
                     p.PredictedSavedBytes,
                 })
            Assert.InRange(figure, 0, p.GuestBytes);
        Assert.Equal(p.FrameBytes + p.StoreBytes + p.MetadataBytes, p.PredictedUsedBytes);

        var error = Assert.Throws<DEException>(() => ColocationModel.Predict([.. set, Largest(999)]));
        Assert.Equal("FingerprintSetTooLarge", error.ErrorId);
    }
}
