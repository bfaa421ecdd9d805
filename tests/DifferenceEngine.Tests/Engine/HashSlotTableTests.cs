using DifferenceEngine.Sharing;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Tests.Engine;

public class HashSlotTableTests
{
    private static ulong Key(Random rng) => (ulong)rng.NextInt64() | 1;

    [Fact]
    public void APassTableHoldsMemoryOnlyDuringAPassAndGrowsNothingForAnAlikeFill()
    {
        using var table = new HashSlotTable();
        Assert.Equal(0, table.MetadataBytes); // nothing before the first pass
        var rng = new Random(1);
        var pass = Enumerable.Range(0, 100_000).Select(_ => Key(rng)).ToArray();
        table.BeginPass();
        Assert.Equal(HashSlotTable.EmptyMetadataBytes, table.MetadataBytes); // the initial room, in one block
        foreach (ulong k in pass) table.Set(k, k);
        long full = table.MetadataBytes;
        Assert.True(full > 100_000 * 16, $"{full} bytes for 100,000 entries");
        table.EndPass();
        Assert.Equal(0, table.Count);
        Assert.Equal(0, table.MetadataBytes); // between passes: none
        Assert.False(table.TryGet(pass[0], out _));
        Assert.False(table.RemoveIf(pass[0], pass[0]));

        table.BeginPass(); // room for what each stripe held at its peak (2/3 full): the same fill grows nothing
        long planned = table.MetadataBytes;
        // 1.5 slots an entry, plus 2 a stripe and the initial 16 for a stripe that held none (these keys leave the top
        // bit clear: half the stripes get none).
        Assert.InRange(planned, (100_000 * 3 / 2 - 64) * 16, (100_000 * 3 / 2 + 64 * 18) * 16);
        foreach (ulong k in pass) table.Set(k, k);
        Assert.Equal(planned, table.MetadataBytes);
        foreach (ulong k in pass.Take(1000))
        {
            Assert.True(table.TryGet(k, out var v));
            Assert.Equal(k, v);
        }
        table.EndPass();

        table.BeginPass(); // a small fill this pass...
        for (int i = 0; i < 1_000; i++) table.Set(Key(rng), (ulong)i);
        table.EndPass();
        table.BeginPass(); // ...and the next pass gets room for that only
        long small = table.MetadataBytes;
        Assert.True(small < full / 8, $"{small} bytes planned of {full}");
        var left = new Dictionary<ulong, ulong>();
        for (int i = 0; i < 5_000; i++) // outgrows its room: the stripes move to memory of their own
        {
            ulong k = Key(rng);
            table.Set(k, (ulong)i);
            left[k] = (ulong)i;
        }
        foreach (var (k, v) in left)
        {
            Assert.True(table.TryGet(k, out var got));
            Assert.Equal(v, got);
        }
        // Counted: the block, still held until the pass ends, and every grown stripe's memory (at most 3/4 full).
        Assert.True(table.MetadataBytes >= small + 5_000 * 4 / 3 * 16, $"{table.MetadataBytes} bytes counted, the block {small}");
        table.EndPass();
        Assert.Equal(0, table.MetadataBytes);

        // Used outside a pass it works as well, on memory the next pass's end gives back.
        table.Set(pass[1], 7);
        Assert.True(table.TryGet(pass[1], out var seven) && seven == 7);
        Assert.True(table.MetadataBytes > 0);
        table.EndPass();
        Assert.Equal(0, table.MetadataBytes);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BehavesLikeADictionaryUnderRandomInsertsAndRemovals(bool inPass)
    {
        // In a pass (room from the table's block, grown into memory of a stripe's own) or outside one (all its own).
        using var table = new HashSlotTable();
        if (inPass) table.BeginPass();
        var model = new Dictionary<ulong, ulong>();
        var rng = new Random(42);
        // Few distinct keys with clustered low bits force long probe chains and backward shifts.
        ulong RandomKey() => rng.Next(4) == 0 ? 0 : ((ulong)(uint)rng.Next(64) << 58) | (uint)rng.Next(3000);
        for (int i = 0; i < 200_000; i++)
        {
            ulong k = RandomKey();
            ulong nk = k == 0 ? 1 : k;
            if (rng.Next(3) == 0 && model.TryGetValue(nk, out var v))
            {
                Assert.False(table.RemoveIf(k, v + 1));
                Assert.True(table.RemoveIf(k, v));
                model.Remove(nk);
            }
            else
            {
                ulong val = (ulong)rng.NextInt64();
                table.Set(k, val);
                model[nk] = val;
            }
        }
        Assert.Equal(model.Count, table.Count);
        foreach (var (k, v) in model)
        {
            Assert.True(table.TryGet(k, out var got));
            Assert.Equal(v, got);
        }
        Assert.False(table.TryGet(ulong.MaxValue - 7, out _));
        table.Clear();
        Assert.Equal(0, table.Count);
    }

    [Fact]
    public void LatencyPercentilesAreWithinTheBucketResolution()
    {
        var h = new LatencyHistogram();
        for (int i = 1; i <= 1000; i++) h.RecordNanoseconds(i * 1000L); // 1 us .. 1 ms
        Assert.Equal(1000, h.Count);
        double p50 = h.Percentile(50).TotalMicroseconds;
        double p99 = h.Percentile(99).TotalMicroseconds;
        Assert.InRange(p50, 500, 500 * 1.15);
        Assert.InRange(p99, 990, 990 * 1.15);
        Assert.InRange(h.Mean.TotalMicroseconds, 500.4, 500.6);
        Assert.Equal(TimeSpan.Zero, new LatencyHistogram().Percentile(99));
    }
}
