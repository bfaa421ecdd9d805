using BenchmarkDotNet.Attributes;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;

namespace DifferenceEngine.Bench.Compression;

/// <summary>
/// compress_page and uncompress (Table 2) for each codec, on the codec alone. compress_page: every representative
/// page, into a destination sized to the default acceptance threshold as the compression pass does for a codec without
/// page groups (0.75 of a page less the blob header: a page that will not fit stops early, as in the engine). Compare's
/// compress_page (LZ4) goal is the other definition the engine has: LZ4 given a page's room, as the default setting
/// (page groups on, a Zstd fallback) gives it; table2.md says which is which. uncompress: the pages that did fit.
/// </summary>
[MemoryDiagnoser]
public class CompressPageBenchmarks
{
    private const int Count = RealPages.Count;
    private readonly byte[] _destination = new byte[RealPages.PageSize * 2];
    private readonly byte[] _page = new byte[RealPages.PageSize];
    private IPageCompressor _codec = null!;
    private byte[][] _compressed = [];
    private int _limit;

    [Params(CompressionAlgorithm.LZ4, CompressionAlgorithm.WKdm, CompressionAlgorithm.Zstd)]
    public CompressionAlgorithm Codec { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var pages = RealPages.Instance;
        _codec = PageCompressors.Get(Codec);
        _limit = (int)(RealPages.PageSize * DomainPolicy.DefaultCompressionThreshold) - EncodedPage.CompressedHeader;
        var fitting = new List<byte[]>();
        for (int i = 0; i < Count; i++)
            if (_codec.TryCompress(pages.Page(i), _destination.AsSpan(0, _limit), out int n)) fitting.Add(_destination[..n]);
        if (fitting.Count == 0) throw new InvalidOperationException($"{Codec}: no representative page compresses within the threshold.");
        _compressed = Enumerable.Range(0, Count).Select(i => fitting[i % fitting.Count]).ToArray();
        Console.WriteLine($"// {Codec}: {fitting.Count} of {Count} pages compress within {_limit} bytes, " +
                          $"ratio {(double)fitting.Count * RealPages.PageSize / fitting.Sum(f => f.Length):0.00} on those");
    }

    [Benchmark(OperationsPerInvoke = Count, Description = "compress_page")]
    public int Compress()
    {
        var pages = RealPages.Instance;
        var destination = _destination.AsSpan(0, _limit);
        int fit = 0;
        for (int i = 0; i < Count; i++)
            if (_codec.TryCompress(pages.Page(i), destination, out _)) fit++;
        return fit;
    }

    [Benchmark(OperationsPerInvoke = Count, Description = "uncompress")]
    public byte Uncompress()
    {
        for (int i = 0; i < Count; i++) _codec.Decompress(_compressed[i], _page);
        return _page[0];
    }
}
