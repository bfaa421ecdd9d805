using BenchmarkDotNet.Attributes;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Bench.Hashing;

/// <summary>Whole-page content hashing (xxHash3, 64-bit), as the sharing step hashes every candidate page.</summary>
[MemoryDiagnoser]
public class PageHashBenchmark
{
    private const int Count = RealPages.Count;

    [GlobalSetup]
    public void LoadCorpus() => _ = RealPages.Instance;

    [Benchmark(OperationsPerInvoke = Count, Description = "page_hash")]
    public ulong Hash()
    {
        var pages = RealPages.Instance;
        ulong x = 0;
        for (int i = 0; i < Count; i++) x ^= PageHasher.Hash(pages.Page(i));
        return x;
    }
}
