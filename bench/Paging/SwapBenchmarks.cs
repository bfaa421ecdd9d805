using BenchmarkDotNet.Attributes;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Paging;

namespace DifferenceEngine.Bench.Paging;

/// <summary>
/// swap_out_page and swap_in_page (Table 2) through the engine's reclaimer. swap_out_page: the clock-ordered
/// page-out of every page of a full host, in the reclaimer's batches of 256 (write each page, checksum it, one
/// fdatasync per batch, then free the frames and mark the pages Swapped), per page. swap_in_page: Domain.ReadPage of
/// each Swapped page (frame, read, checksum, slot freed). Storage "memory" is an in-memory slot array: the paper's
/// swap_out_page was measured without the disk write. Storage "file" is the engine's real swap file on this VM's
/// disk (O_DIRECT, fdatasync).
/// </summary>
[MemoryDiagnoser]
public class SwapBenchmarks
{
    private const int Count = RealPages.Count;
    private readonly byte[] _buffer = new byte[RealPages.PageSize];
    private TestHost? _host;
    private string? _dir;

    [Params("memory", "file")]
    public string Storage { get; set; } = "memory";

    [GlobalSetup]
    public void Setup()
    {
        _ = RealPages.Instance;
        _dir = Directory.CreateTempSubdirectory("de-bench-swap-").FullName;
        Tiering.WarmUp(() =>
        {
            NewSwappedHost();
            SwapIn();
            Dispose();
        });
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        if (_dir is not null) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>A host limited to twice the pages, so nothing pages out until asked; every page loaded and aged to C4.</summary>
    [IterationSetup(Target = nameof(SwapOut))]
    public void NewHost()
    {
        var pages = RealPages.Instance;
        var options = new HostOptions
        {
            Name = "bench",
            SimilaritySeed = RealPages.Seed,
            MemoryLimitBytes = 2L * Count * RealPages.PageSize,
            SwapPath = Path.Combine(_dir!, "swap"),
            SwapSizeBytes = 2L * Count * RealPages.PageSize,
            SwapStorageFactory = Storage == "memory" ? static (path, size) => new MemorySwapStorage(path, size) : null,
        };
        _host = new TestHost(Count, sharing: false, hostOptions: options);
        for (int i = 0; i < Count; i++) _host.Load(i, pages.Page(i));
        _host.Sweep();
    }

    [IterationSetup(Target = nameof(SwapIn))]
    public void NewSwappedHost()
    {
        NewHost();
        SwapOut();
    }

    [Benchmark(OperationsPerInvoke = Count, Description = "swap_out_page")]
    public long SwapOut()
    {
        var host = _host!.Host;
        // High watermark at the whole budget: the reclaimer pages out until nothing Private is left.
        host.Policy.HighWatermark = 1.0;
        long n = host.Reclaimer!.ReclaimToHighWatermark();
        host.Policy.HighWatermark = 0.10;
        if (n != Count) throw new InvalidOperationException($"swap_out_page: {n} of {Count} pages paged out.");
        return n;
    }

    [Benchmark(OperationsPerInvoke = Count, Description = "swap_in_page")]
    public int SwapIn()
    {
        int faults = _host!.ReadAll(0, Count, FaultKind.SwapIn, _buffer);
        if (faults != Count) throw new InvalidOperationException($"swap_in_page: {faults} of {Count} reads were swap-ins.");
        return faults;
    }

    [IterationCleanup]
    public void Dispose()
    {
        _host?.Dispose();
        _host = null;
    }

    /// <summary>Swap slots in memory: the page-out path without the disk.</summary>
    private sealed class MemorySwapStorage(string path, long length) : ISwapStorage
    {
        private readonly byte[] _bytes = GC.AllocateArray<byte>((int)length, pinned: true);

        public string Path { get; } = path;
        public long Length { get; } = length;
        public bool DirectIo => false;

        public void Write(long offset, ReadOnlySpan<byte> page) => page.CopyTo(_bytes.AsSpan((int)offset, page.Length));

        public void Read(long offset, Span<byte> page) => _bytes.AsSpan((int)offset, page.Length).CopyTo(page);

        public void Flush()
        {
        }

        public void Dispose()
        {
        }
    }
}
