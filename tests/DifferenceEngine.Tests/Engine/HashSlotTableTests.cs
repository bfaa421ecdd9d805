using DifferenceEngine.Sharing;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Tests.Engine;

public class HashSlotTableTests
{
    [Fact]
    public void BehavesLikeADictionaryUnderRandomInsertsAndRemovals()
    {
        var table = new HashSlotTable();
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
