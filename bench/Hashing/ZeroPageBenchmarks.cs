using BenchmarkDotNet.Attributes;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Bench.Hashing;

/// <summary>
/// Zero-page detection. On zero pages every byte is read (the worst case); on real pages the scan stops at the first
/// non-zero byte. The engine folds a page when it is one repeated 32-bit word (zero is the common case): that test too.
/// </summary>
[MemoryDiagnoser]
public class ZeroPageBenchmarks
{
    private const int Count = RealPages.Count;
    private readonly byte[] _zeros = GC.AllocateArray<byte>(Count * RealPages.PageSize, pinned: true);

    [GlobalSetup]
    public void LoadCorpus() => _ = RealPages.Instance;

    [Benchmark(OperationsPerInvoke = Count, Description = "zero_check (zero pages)")]
    public int ZeroPages()
    {
        int zero = 0;
        for (int i = 0; i < Count; i++)
            if (PageHasher.IsZero(_zeros.AsSpan(i * RealPages.PageSize, RealPages.PageSize))) zero++;
        return zero;
    }

    [Benchmark(OperationsPerInvoke = Count, Description = "zero_check (real pages)")]
    public int RealPagesZero()
    {
        var pages = RealPages.Instance;
        int zero = 0;
        for (int i = 0; i < Count; i++)
            if (PageHasher.IsZero(pages.Page(i))) zero++;
        return zero;
    }

    [Benchmark(OperationsPerInvoke = Count, Description = "uniform_check (real pages)")]
    public int RealPagesUniform()
    {
        var pages = RealPages.Instance;
        int uniform = 0;
        for (int i = 0; i < Count; i++)
            if (PageHasher.IsUniform(pages.Page(i), out _)) uniform++;
        return uniform;
    }
}
