using BenchmarkDotNet.Attributes;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Codecs;
using DifferenceEngine.Compression;
using DifferenceEngine.Domains;
using DifferenceEngine.Patching;

namespace DifferenceEngine.Bench.Compression;

/// <summary>
/// uncompress as the guest pays it: Domain.ReadPage of a Compressed page, which rebuilds it into a frame (frame
/// allocated, decompressed, checksum checked, blob freed) and copies it out. Pages compressed by the engine's own
/// compression pass beforehand.
/// </summary>
[MemoryDiagnoser]
public class UncompressFaultBenchmark
{
    private const int Count = RealPages.Count;
    private readonly byte[] _buffer = new byte[RealPages.PageSize];
    private byte[][] _compressible = [];
    private TestHost? _host;

    [Params(CompressionAlgorithm.LZ4, CompressionAlgorithm.WKdm, CompressionAlgorithm.Zstd)]
    public CompressionAlgorithm Codec { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var pages = RealPages.Instance;
        var codec = PageCompressors.Get(Codec);
        int limit = (int)(RealPages.PageSize * DomainPolicy.DefaultCompressionThreshold) - EncodedPage.CompressedHeader;
        var scratch = new byte[RealPages.PageSize];
        var fitting = Enumerable.Range(0, Count).Where(i => codec.TryCompress(pages.Page(i), scratch.AsSpan(0, limit), out _))
            .Select(i => pages.Page(i).ToArray()).ToList();
        if (fitting.Count == 0) throw new InvalidOperationException($"{Codec}: no representative page compresses to half a page.");
        _compressible = Enumerable.Range(0, Count).Select(i => fitting[i % fitting.Count]).ToArray();
        Tiering.WarmUp(() =>
        {
            NewHost();
            ReadCompressed();
            Dispose();
        });
    }

    [IterationSetup]
    public void NewHost()
    {
        _host = new TestHost(Count, sharing: false, compression: true, algorithm: Codec);
        for (int i = 0; i < Count; i++) _host.Load(i, _compressible[i]);
        _host.Sweep();
        var c = new EncodeCounters();
        var domain = _host.Domain;
        for (long gfn = 0; gfn < Count; gfn++)
        {
            ulong e = domain.Lock(gfn);
            domain.Unlock(gfn, CompressionPass.TryCompress(_host.Host, domain, gfn, e, ref c));
        }
        if (c.PagesCompressed != Count) throw new InvalidOperationException($"{Codec}: {c.PagesCompressed} of {Count} pages compressed.");
    }

    [Benchmark(OperationsPerInvoke = Count, Description = "uncompress_fault")]
    public int ReadCompressed() => _host!.ReadAll(0, Count, FaultKind.Decompress, _buffer);

    [IterationCleanup]
    public void Dispose()
    {
        _host?.Dispose();
        _host = null;
    }
}
