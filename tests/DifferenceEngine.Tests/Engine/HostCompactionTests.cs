using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// The host's compaction: the store keeps no owner of a blob, so the host walks its references (every page's own blob,
/// every group's pieces, every compressed shared frame) and hands each to the store's mover. Every page reads back,
/// slabs go back, and a page that is busy during the walk keeps its blob where it was.
/// </summary>
public class HostCompactionTests(ITestOutputHelper output)
{
    [Fact]
    public void ACompactionMovesPageBlobsGroupPiecesAndSharedBlobsAndEveryPageReadsBack()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        DomainOptions Options(int groupSize) => new()
        {
            SharingEnabled = true,
            CompressionEnabled = true,
            CompressionAlgorithm = CompressionAlgorithm.LZ4,
            C4Sweeps = 1,
            GroupSize = groupSize,
            GroupAfterSweeps = 1,
        };
        var clones = TestMemory.TextPages(600, 1);
        var singles = TestMemory.TextPages(1200, 2);
        var grouped = TestMemory.TextPages(1200, 3);
        var a = TestMemory.LoadRaw(host, dir, "a", clones, Options(0));
        var b = TestMemory.LoadRaw(host, dir, "b", clones, Options(0)); // a's twin: its frames are shared, then compressed once
        var c = TestMemory.LoadRaw(host, dir, "c", singles, Options(0));
        var g = TestMemory.LoadRaw(host, dir, "g", grouped, Options(4));
        var expected = new Dictionary<Domain, byte[][]> { [a] = clones, [b] = clones, [c] = singles, [g] = grouped };
        Assert.True(host.Scan(options: new ScanOptions { UntilStable = true }).Stable);
        var stats = host.GetStats();
        Assert.True(stats.SharedCompressedFrames > 500, $"{stats.SharedCompressedFrames} shared frames compressed");
        Assert.True(host.GetPageStats(g).GroupedPages > 1000);
        Assert.Equal(1200, host.GetPageStats(c).CompressedPages);

        // Three pages in four read back (each gets a frame of its own): every class's slabs are left sparse.
        foreach (var d in expected.Keys)
            for (long gfn = 0; gfn < d.PageCount; gfn++)
                if (gfn % 4 != 0)
                    Assert.Equal(expected[d][gfn], d.ReadPage(gfn));
        long before = host.Store.AllocatedBytes;

        // One page still compressed alone, whose blob sits in a slab the compaction empties, is busy from the walk that
        // finds it to the compaction's end (another thread would hold its lock): every walk passes it over, and its blob
        // stays where it is.
        long busy = -1;
        ulong held = 0;
        DifferenceEngine.Store.CompactionResult result;
        try
        {
            result = host.Store.Compact(mover =>
            {
                for (long gfn = 0; gfn < c.PageCount && busy < 0; gfn += 4)
                {
                    ulong e = c.PeekEntry(gfn);
                    if (!PageEntry.IsSingleCompressed(e) || !mover.Wants(PageEntry.Payload(e))) continue;
                    held = c.Lock(gfn);
                    busy = gfn;
                }
                host.MoveBlobs(mover);
            });
        }
        finally
        {
            if (busy >= 0) c.Unlock(busy, held);
        }
        Assert.True(busy >= 0, "no single page's blob was in a slab to empty");
        output.WriteLine($"store {before} -> {host.Store.AllocatedBytes} bytes: {result}");
        Assert.True(result.BlobsMoved > 0, "nothing moved");
        Assert.True(result.BlobsRefused >= 1, "the busy page's blob was not left behind");
        Assert.True(result.SlabsReleased > 0, "no slab went back");
        Assert.True(host.Store.AllocatedBytes < before);
        Assert.Equal(held, c.PeekEntry(busy)); // its blob was not moved
        Assert.Equal(singles[busy], c.ReadPage(busy));

        // Every page that stayed encoded reads back, page blobs, group members and shared blobs alike.
        TestMemory.AssertFrameAccounting(host);
        foreach (var d in expected.Keys)
            for (long gfn = 0; gfn < d.PageCount; gfn += 4)
                Assert.Equal(expected[d][gfn], d.ReadPage(gfn));
    }
}
