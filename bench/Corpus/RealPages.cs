using DifferenceEngine.Codecs;
using DifferenceEngine.Memory;
using DifferenceEngine.Patching;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Bench.Corpus;

/// <summary>
/// Pages from real memory for the micro-benchmarks, taken once per benchmark process: two python3 processes running
/// the same script are snapshotted. <see cref="Pages"/> are representative pages (non-zero, not one repeated word,
/// spread evenly over the first snapshot); the similar pairs (<see cref="References"/>, <see cref="Similar"/>) are pages
/// of the second snapshot and of the first, at the same gfn or sharing a similarity key, that differ, agree on at
/// least half their bytes at the same offsets, share a similarity key and patch within the default threshold.
/// Without python3 the benchmark process itself is snapshotted and the pairs are made by changing a few bytes.
/// </summary>
internal sealed class RealPages
{
    public const int PageSize = PageGeometry.PageSize;

    /// <summary>Pages per batch: 4 MiB, more than a core's L2, so the pages stream from memory as in a scan.</summary>
    public const int Count = 1024;

    /// <summary>The detector seed every benchmark host uses, so the pairs chosen here share a key there too.</summary>
    public const int Seed = 20081208;

    private const int MinRealPairs = 64;
    private const int PatchThreshold = 2048;
    private static readonly Lazy<RealPages> Shared = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    private RealPages(byte[] pages, byte[] references, byte[] similar, string description)
    {
        Pages = pages;
        References = references;
        Similar = similar;
        Description = description;
    }

    public static RealPages Instance => Shared.Value;

    /// <summary><see cref="Count"/> representative pages, back to back.</summary>
    public byte[] Pages { get; }

    /// <summary><see cref="Count"/> reference pages; page i of <see cref="Similar"/> is similar to page i here.</summary>
    public byte[] References { get; }

    public byte[] Similar { get; }

    /// <summary>Where the pages came from, for the log.</summary>
    public string Description { get; }

    public Span<byte> Page(int i) => Pages.AsSpan(i * PageSize, PageSize);

    public Span<byte> Reference(int i) => References.AsSpan(i * PageSize, PageSize);

    public Span<byte> SimilarPage(int i) => Similar.AsSpan(i * PageSize, PageSize);

    private static RealPages Load()
    {
        string? python = HelperPrograms.Python;
        PageCollector a, b;
        string source;
        if (python is not null)
        {
            using (var pa = HelperPrograms.Start(HelperPrograms.PythonWithData(python, "python-a")))
            using (var pb = HelperPrograms.Start(HelperPrograms.PythonWithData(python, "python-b")))
            {
                a = PageCollector.SnapshotProcess(pa.Id);
                b = PageCollector.SnapshotProcess(pb.Id);
            }
            source = $"two python3 processes ({a.Pages.Count} and {b.Pages.Count} pages)";
        }
        else
        {
            a = PageCollector.SnapshotProcess(Environment.ProcessId);
            b = new PageCollector();
            source = $"the benchmark process itself ({a.Pages.Count} pages; python3 not found)";
        }

        var representative = a.Pages.Values.Where(p => !PageHasher.IsUniform(p, out _)).ToList();
        if (representative.Count == 0) throw new InvalidOperationException($"No non-zero pages in {source}.");
        var pages = GC.AllocateUninitializedArray<byte>(Count * PageSize, pinned: true);
        for (int i = 0; i < Count; i++)
            representative[(int)((long)i * representative.Count / Count) % representative.Count].CopyTo(pages, i * PageSize);

        var detector = new SimilarityDetector(HostKeys, 1, Seed);
        var pairs = new List<(byte[] Reference, byte[] Page)>();
        var patch = new byte[DeltaCodec.MaxPatchSize];
        // Pages at the same gfn first; the layouts of two processes drift apart (a mapping more resident in one), so
        // then also any page of the first process sharing a similarity key, as the engine itself finds references.
        var paired = new HashSet<long>();
        foreach (var (gfn, page) in b.Pages)
        {
            if (a.Pages.TryGetValue(gfn, out var reference) && IsGoodPair(detector, reference, page, patch))
            {
                pairs.Add((reference, page));
                paired.Add(gfn);
            }
        }
        var byKey = new Dictionary<ulong, byte[]>();
        Span<ulong> keys = stackalloc ulong[HostKeys];
        foreach (var page in a.Pages.Values)
        {
            detector.ComputeKeys(page, keys);
            foreach (ulong key in keys) byKey.TryAdd(key, page);
        }
        foreach (var (gfn, page) in b.Pages)
        {
            if (paired.Contains(gfn)) continue;
            detector.ComputeKeys(page, keys);
            foreach (ulong key in keys)
            {
                if (byKey.TryGetValue(key, out var reference) && IsGoodPair(detector, reference, page, patch))
                {
                    pairs.Add((reference, page));
                    break;
                }
            }
        }
        int real = pairs.Count;
        // Too few real pairs: representative pages with a few bytes changed outside the key blocks.
        var rng = new Random(Seed);
        for (int i = 0; pairs.Count < MinRealPairs; i++)
        {
            var reference = representative[i % representative.Count];
            var page = (byte[])reference.Clone();
            for (int k = 0; k < 16; k++)
            {
                int at = rng.Next(PageSize);
                if (!InKeyBlock(detector, at)) page[at] ^= 0x5A;
            }
            if (IsGoodPair(detector, reference, page, patch)) pairs.Add((reference, page));
        }

        var references = GC.AllocateUninitializedArray<byte>(Count * PageSize, pinned: true);
        var similar = GC.AllocateUninitializedArray<byte>(Count * PageSize, pinned: true);
        for (int i = 0; i < Count; i++)
        {
            var (r, p) = pairs[(int)((long)i * pairs.Count / Count) % pairs.Count];
            r.CopyTo(references, i * PageSize);
            p.CopyTo(similar, i * PageSize);
        }
        string description = $"{source}; {Count} representative pages from {representative.Count} non-zero ones; " +
                             $"{real} real similar pairs" + (pairs.Count > real ? $" and {pairs.Count - real} made by changing 16 bytes" : "");
        Console.WriteLine($"// Corpus: {description}");
        return new RealPages(pages, references, similar, description);
    }

    /// <summary>k of the engine's default detector, HashSimilarityDetector(2, 1).</summary>
    private const int HostKeys = 2;

    private static bool IsGoodPair(SimilarityDetector detector, byte[] reference, byte[] page, byte[] patch)
    {
        if (reference.AsSpan().SequenceEqual(page) || PageHasher.IsUniform(page, out _) || PageHasher.IsUniform(reference, out _)) return false;
        int same = 0;
        for (int i = 0; i < PageSize; i++) if (reference[i] == page[i]) same++;
        if (same < PageSize / 2) return false;
        Span<ulong> ka = stackalloc ulong[HostKeys], kb = stackalloc ulong[HostKeys];
        detector.ComputeKeys(reference, ka);
        detector.ComputeKeys(page, kb);
        bool keyShared = false;
        for (int k = 0; k < HostKeys; k++) keyShared |= ka[k] == kb[k];
        return keyShared && DeltaCodec.TryEncode(reference, page, patch.AsSpan(0, PatchThreshold), out _);
    }

    private static bool InKeyBlock(SimilarityDetector detector, int offset)
    {
        foreach (int start in detector.Offsets)
            if (offset >= start && offset < start + SimilarityDetector.BlockSize) return true;
        return false;
    }
}
