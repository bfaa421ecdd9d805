using DifferenceEngine.Loading;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Loading;

/// <summary>The copy loops touch every page of every VM: what they allocate must not grow with the page count.</summary>
[Collection(nameof(DifferenceEngine.Tests.Engine.SerialCollection))] // measured alone: see Allocations.On
public sealed class CopyAllocationTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void RawImageCopyAllocatesNothingPerPage()
    {
        string small = _temp.Write("small.img", new byte[16 * 4096]);
        string large = _temp.Write("large.img", new byte[4096 * 4096]);
        AssertFlat(small, large, 16, 4096);
    }

    [Fact]
    public void ElfCopyWithPartialPagesAllocatesNothingPerPage()
    {
        var rng = new Random(11);
        string small = _temp.Write("small.core", UnalignedCore(rng, 4));
        string large = _temp.Write("large.core", UnalignedCore(rng, 1000));
        AssertFlat(small, large, 4 * 2, 1000 * 2);
    }

    [Fact]
    public void ProcessCopyAllocatesNothingPerPage()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        using var child = LiveProcess.Cat();
        using MemorySource source = MemorySource.OpenProcess(child.Id);
        var sink = new CountingSink();
        source.CopyTo(sink);
        long allocated = Allocations.On(() => source.CopyTo(sink));
        long pages = sink.Count / 2;
        output.WriteLine($"{pages} pages: {allocated} bytes allocated");
        Assert.True(allocated < pages * 8, $"{allocated} bytes allocated for {pages} pages");
    }

    // Segments of ~1.5 pages at addresses that are not page aligned: every other page is a merged partial one.
    private static byte[] UnalignedCore(Random rng, int segments)
    {
        var writer = new ElfCoreWriter();
        for (int i = 0; i < segments; i++)
        {
            writer.Add((ulong)(i * 0x2000) + 0x800, TestBytes.Random(rng, 0x1800), padBefore: 3);
        }

        return writer.Build();
    }

    private void AssertFlat(string small, string large, long smallPages, long largePages)
    {
        long smallBytes = Measure(small, smallPages);
        long largeBytes = Measure(large, largePages);
        output.WriteLine($"{smallPages} pages: {smallBytes} bytes allocated; {largePages} pages: {largeBytes} bytes");
        Assert.True(largeBytes - smallBytes < 256, $"{largeBytes - smallBytes} more bytes for {largePages - smallPages} more pages");
    }

    private static long Measure(string path, long expectedPages)
    {
        using MemorySource source = MemorySource.OpenFile(path);
        var sink = new CountingSink();
        source.CopyTo(sink); // warm the buffer pool and the JIT
        long allocated = Allocations.On(() => source.CopyTo(sink));
        Assert.Equal(expectedPages * 2, sink.Count);
        return allocated;
    }
}
