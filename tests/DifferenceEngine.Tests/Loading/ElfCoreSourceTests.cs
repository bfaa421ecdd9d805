using DifferenceEngine.Loading;

namespace DifferenceEngine.Tests.Loading;

public sealed class ElfCoreSourceTests : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void QemuLikeCoreLandsAtPhysicalAddresses(bool is64)
    {
        var rng = new Random(42);
        var writer = new ElfCoreWriter { Is64 = is64 }
            // Unaligned file offsets everywhere (padding), as QEMU writes them.
            .Add(0x0, TestBytes.Random(rng, 0x3800), padBefore: 3)
            // Starts mid-page 3: that page is half the previous segment, half this one.
            .Add(0x3800, TestBytes.Random(rng, 0x1900), padBefore: 5)
            // After a hole: one page of data and two of zero tail (p_memsz > p_filesz).
            .Add(0x10000, TestBytes.Random(rng, 0x1000), memorySize: 0x3000, padBefore: 1)
            // A lone partial page at an unaligned address.
            .Add(0x20100, TestBytes.Random(rng, 0x100), padBefore: 7);
        string path = _temp.Write("qemu.img", writer.Build());

        using MemorySource source = MemorySource.OpenFile(path);
        var sink = new CollectingSink();
        LoadReport report = source.CopyTo(sink);

        Assert.Equal(MemorySourceFormat.ElfCore, source.Format);
        Assert.Contains(is64 ? "ELF64 guest-physical core" : "ELF32 guest-physical core", source.Description);
        Assert.Equal(0x21, source.PageCount);
        AssertPhysical(writer, sink);

        // 0..5 from the first two segments (page 3 merged), 0x10, and 0x20.
        Assert.Equal([0, 1, 2, 3, 4, 5, 0x10, 0x20], sink.Pages.Keys.Order());
        Assert.Equal(8, report.PagesLoaded);
        Assert.Equal(2, report.PagesNotResident); // the zero tail of the third segment
        Assert.Equal(2, report.PagesZeroFilled); // inside the domain, read as zeros: New-DEDomain warns
        Assert.Equal(4, report.RegionsRead);
        Assert.Equal(0, report.RegionsSkipped);
    }

    [Fact]
    public void SinglePtLoadAtZeroIsAMachineNotAProcess()
    {
        var writer = new ElfCoreWriter().Add(0, TestBytes.Random(new Random(3), 2 * 4096));
        using MemorySource source = MemorySource.OpenFile(_temp.Write("one.core", writer.Build()));
        var sink = new CollectingSink();
        source.CopyTo(sink);
        Assert.Contains("guest-physical", source.Description);
        AssertPhysical(writer, sink);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ProcessCoreIsPackedInFileOrder(bool is64)
    {
        var rng = new Random(7);
        var writer = new ElfCoreWriter { Is64 = is64 }
            .Add(0, TestBytes.Random(rng, 0x2000), virtualAddress: 0x7f0000000000 & (is64 ? ulong.MaxValue : 0xffffffff))
            // A partly dumped segment (kernel cores dump one page of file mappings): 2 pages laid out, 3 not dumped.
            .Add(0, TestBytes.Random(rng, 0x1800), memorySize: 0x5000, virtualAddress: 0x400000)
            // Not dumped at all: takes no space, 3 pages not resident.
            .Add(0, [], memorySize: 0x3000, virtualAddress: 0x600000)
            .Add(0, TestBytes.Random(rng, 0x1000), virtualAddress: 0x10000);
        string path = _temp.Write("gcore-like.bin", writer.Build());

        using MemorySource source = MemorySource.OpenFile(path);
        var sink = new CollectingSink();
        LoadReport report = source.CopyTo(sink);

        Assert.Contains("process core", source.Description);
        Assert.Equal(5, source.PageCount);
        byte[] expected = writer.ExpectedPacked();
        Assert.Equal(5 * 4096, expected.Length);
        Assert.Equal([0, 1, 2, 3, 4], sink.Pages.Keys.Order());
        foreach ((long gfn, byte[] page) in sink.Pages)
        {
            Assert.Equal(TestBytes.Page(expected, gfn), page);
        }

        Assert.Equal(5, report.PagesLoaded);
        Assert.Equal(6, report.PagesNotResident);
        Assert.Equal(0, report.PagesZeroFilled); // a process's pages left out are outside its layout
        Assert.Equal(3, report.RegionsRead);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ExtendedProgramHeaderCountIsReadFromSectionZero(bool is64)
    {
        var rng = new Random(8);
        var writer = new ElfCoreWriter { Is64 = is64, ExtendedNumbering = true }
            .Add(0, TestBytes.Random(rng, 0x1000))
            .Add(0, TestBytes.Random(rng, 0x2000));
        using MemorySource source = MemorySource.OpenFile(_temp.Write("xnum.core", writer.Build()));
        var sink = new CollectingSink();
        source.CopyTo(sink);
        Assert.Equal(3, source.PageCount);
        Assert.Equal(writer.ExpectedPacked(), sink.Pages.OrderBy(kv => kv.Key).SelectMany(kv => kv.Value).ToArray());
    }

    [Fact]
    public void SegmentsLargerThanAChunkAtUnalignedAddressesRoundTrip()
    {
        var rng = new Random(99);
        var writer = new ElfCoreWriter()
            .Add(0x1234, TestBytes.Random(rng, (5 << 19) + 0x321), padBefore: 11)
            .Add(0x400000 + 0x10, TestBytes.Random(rng, 3 << 20), memorySize: (3 << 20) + 0x5000, padBefore: 2);
        using MemorySource source = MemorySource.OpenFile(_temp.Write("big.core", writer.Build()));
        var sink = new CollectingSink();
        source.CopyTo(sink);
        AssertPhysical(writer, sink);
    }

    [Fact]
    public void RandomMachineLayoutsMatchAReferenceImage()
    {
        // Seeded property test: any non-overlapping layout, aligned or not, reads back byte for byte.
        var rng = new Random(2024);
        for (int round = 0; round < 60; round++)
        {
            var writer = new ElfCoreWriter { Is64 = rng.Next(2) == 0, WithNote = rng.Next(4) != 0 };
            ulong address = (ulong)rng.Next(0, 3 * 4096);
            int segments = rng.Next(1, 7);
            for (int i = 0; i < segments; i++)
            {
                int size = rng.Next(6) == 0 ? rng.Next(1, 3 << 20) : rng.Next(1, 5 * 4096);
                ulong tail = rng.Next(3) == 0 ? (ulong)rng.Next(0, 3 * 4096) : 0;
                writer.Add(address, TestBytes.Random(rng, size), memorySize: (ulong)size + tail, padBefore: rng.Next(0, 9));
                address += (ulong)size + tail + (ulong)(rng.Next(3) == 0 ? 0 : rng.Next(0, 4 * 4096));
            }

            // Program headers need not be sorted by address.
            if (rng.Next(2) == 0)
            {
                writer.Segments.Reverse();
            }

            string path = _temp.Write($"round{round}.core", writer.Build());
            using MemorySource source = MemorySource.OpenFile(path);
            var sink = new CollectingSink();
            LoadReport report = source.CopyTo(sink);
            AssertPhysical(writer, sink);
            Assert.Equal(sink.Pages.Count, report.PagesLoaded);
        }
    }

    private static void AssertPhysical(ElfCoreWriter writer, CollectingSink sink)
    {
        (byte[] memory, SortedSet<long> pagesWithData) = writer.ExpectedPhysical();
        Assert.Equal(pagesWithData, sink.Pages.Keys.Order());
        foreach ((long gfn, byte[] page) in sink.Pages)
        {
            Assert.True(TestBytes.Page(memory, gfn).AsSpan().SequenceEqual(page), $"gfn {gfn:x} differs from the reference");
        }
    }
}
