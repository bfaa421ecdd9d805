using BenchmarkDotNet.Attributes;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Hosting;
using DifferenceEngine.Patching;

namespace DifferenceEngine.Bench.Patching;

/// <summary>The similarity keys of a page: HashSimilarityDetector(2, 1), two 64-byte blocks hashed (xxHash3).</summary>
[MemoryDiagnoser]
public class SimilarityKeyBenchmark
{
    private const int Count = RealPages.Count;
    private readonly ulong[] _keys = new ulong[SimilarityDetector.MaxKeys];
    private SimilarityDetector _detector = null!;

    [GlobalSetup]
    public void Setup()
    {
        _ = RealPages.Instance;
        _detector = new SimilarityDetector(HostPolicy.DefaultKeys, HostPolicy.DefaultBlocksPerKey, RealPages.Seed);
    }

    [Benchmark(OperationsPerInvoke = Count, Description = "similarity_keys")]
    public ulong Keys()
    {
        var pages = RealPages.Instance;
        var keys = _keys.AsSpan(0, _detector.Keys);
        ulong x = 0;
        for (int i = 0; i < Count; i++)
        {
            _detector.ComputeKeys(pages.Page(i), keys);
            x ^= keys[0];
        }
        return x;
    }
}
