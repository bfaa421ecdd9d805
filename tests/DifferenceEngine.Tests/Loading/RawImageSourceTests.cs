using DifferenceEngine.Loading;

namespace DifferenceEngine.Tests.Loading;

public sealed class RawImageSourceTests : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void RoundTripsEveryPageIncludingZeroPages()
    {
        // 300 pages span more than one 1 MiB read chunk; every seventh page is zero and must still be passed.
        var rng = new Random(1234);
        byte[] image = TestBytes.Random(rng, 300 * 4096);
        for (int gfn = 0; gfn < 300; gfn += 7)
        {
            image.AsSpan(gfn * 4096, 4096).Clear();
        }

        // The extension says core; the content says raw, and content wins.
        string path = _temp.Write("guest.core", image);
        using MemorySource source = MemorySource.OpenFile(path);
        var sink = new CollectingSink();
        LoadReport report = source.CopyTo(sink);

        Assert.Equal(MemorySourceFormat.RawImage, source.Format);
        Assert.Equal(300, source.PageCount);
        Assert.EndsWith("guest.core (raw image)", source.Description);
        Assert.Equal(300, sink.Pages.Count);
        for (long gfn = 0; gfn < 300; gfn++)
        {
            Assert.Equal(TestBytes.Page(image, gfn), sink.Pages[gfn]);
        }

        Assert.Equal(MemorySourceFormat.RawImage, report.Format);
        Assert.Equal(300, report.PagesLoaded);
        Assert.Equal(0, report.PagesNotResident);
        Assert.Equal(1, report.RegionsRead);
        Assert.Equal(0, report.RegionsSkipped);
        Assert.Equal(0, report.BytesSkipped);
        Assert.Empty(report.SkippedRegions);
    }

    [Theory]
    [InlineData((ushort)1, true)]  // ET_REL, an object file
    [InlineData((ushort)2, true)]  // ET_EXEC, an executable
    [InlineData((ushort)3, true)]  // ET_DYN, a shared object or PIE executable
    [InlineData((ushort)1, false)]
    [InlineData((ushort)2, false)]
    [InlineData((ushort)3, false)]
    public void ImageThatBeginsWithAnElfHeaderOfAnotherTypeIsRaw(ushort type, bool is64)
    {
        // A raw snapshot of a process begins with its executable's header: whole ELF headers of every type but ET_CORE.
        byte[] header = new ElfCoreWriter { Type = type, Is64 = is64 }.Add(0, TestBytes.Random(new Random(type), 4096)).Build();
        byte[] image = TestBytes.Random(new Random(type + 10), 3 * 4096);
        header.AsSpan(0, Math.Min(header.Length, 4096)).CopyTo(image);
        AssertLoadsBitExact(_temp.Write($"elf{type}.raw", image), image);
    }

    [Fact]
    public void RawSnapshotOfALiveProcessIsRawAndBitExact()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        // The resident pages of a live program in address order: the first is its executable's ELF header (ET_DYN).
        byte[] image;
        using (var child = LiveProcess.Cat())
        using (MemorySource process = MemorySource.OpenProcess(child.Id))
        {
            var sink = new CollectingSink();
            process.CopyTo(sink);
            image = sink.Pages.OrderBy(p => p.Key).SelectMany(p => p.Value).ToArray();
        }

        Assert.True(image.AsSpan(0, 4).SequenceEqual(new byte[] { 0x7F, (byte)'E', (byte)'L', (byte)'F' }), "a process's first mapped page is its executable's header");
        Assert.NotEqual(4, BitConverter.ToUInt16(image, 16));
        AssertLoadsBitExact(_temp.Write("cat.raw", image), image);
    }

    private static void AssertLoadsBitExact(string path, byte[] image)
    {
        using MemorySource source = MemorySource.OpenFile(path);
        Assert.Equal(MemorySourceFormat.RawImage, source.Format);
        Assert.Equal(image.Length / 4096, source.PageCount);
        var sink = new CollectingSink();
        source.CopyTo(sink);
        Assert.Equal(image.Length / 4096, sink.Pages.Count);
        for (long gfn = 0; gfn < source.PageCount; gfn++)
        {
            Assert.Equal(TestBytes.Page(image, gfn), sink.Pages[gfn]);
        }
    }

    [Fact]
    public void CopyCanBeRepeated()
    {
        string path = _temp.Write("twice.img", TestBytes.Random(new Random(5), 3 * 4096));
        using MemorySource source = MemorySource.OpenFile(path);
        var first = new CollectingSink();
        var second = new CollectingSink();
        source.CopyTo(first);
        source.CopyTo(second);
        Assert.Equal(first.Pages.Keys, second.Pages.Keys);
        Assert.All(first.Pages, kv => Assert.Equal(kv.Value, second.Pages[kv.Key]));
    }

    [Fact]
    public void HonoursCancellationBetweenChunks()
    {
        string path = _temp.Write("big.img", new byte[600 * 4096]);
        using MemorySource source = MemorySource.OpenFile(path);
        using var cts = new CancellationTokenSource();
        var sink = new CancellingSink(cts, afterPages: 1);

        Assert.ThrowsAny<OperationCanceledException>(() => source.CopyTo(sink, cts.Token));
        Assert.True(sink.Count < 600, $"the copy went on for {sink.Count} pages after cancellation");
    }

    [Fact]
    public void AlreadyCancelledTokenCopiesNothing()
    {
        string path = _temp.Write("one.img", new byte[4096]);
        using MemorySource source = MemorySource.OpenFile(path);
        var sink = new CollectingSink();
        Assert.ThrowsAny<OperationCanceledException>(() => source.CopyTo(sink, new CancellationToken(canceled: true)));
        Assert.Empty(sink.Pages);
    }
}
