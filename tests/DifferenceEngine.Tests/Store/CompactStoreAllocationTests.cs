using DifferenceEngine.Store;

namespace DifferenceEngine.Tests.Store;

/// <summary>Allocate and free allocate no managed memory once the store has warmed up.</summary>
[Collection(nameof(DifferenceEngine.Tests.Engine.SerialCollection))] // measured alone: see Allocations.On
public class CompactStoreAllocationTests
{
    [Fact]
    public void SteadyStateAllocateAndFreeAllocateNothing()
    {
        using var store = new CompactStore();
        var rng = new Random(3);
        const int window = 4000;
        var lengths = Enumerable.Range(0, 1 << 16).Select(_ => CompactStoreModelTests.RandomLength(rng)).ToArray();
        var ring = new ulong[window];
        int next = 0;
        // Each op frees the oldest blob and stores one of a random size; slabs fill, drain and are released.
        void Run(int ops)
        {
            for (int i = 0; i < ops; i++, next++)
            {
                ref ulong slot = ref ring[next % window];
                if (slot != 0) store.Free(slot);
                if (!store.TryAllocate(lengths[next & (lengths.Length - 1)], out slot))
                    throw new InvalidOperationException("allocation failed");
                store.Get(slot)[0] = 1;
            }
        }
        Run(300_000);
        long releasedBefore = store.AllocatedBytes;
        long allocated = Allocations.On(() => Run(10_000));
        Assert.Equal(0, allocated);
        Assert.True(releasedBefore > 0);
    }

    [Fact]
    public void SteadyStateStoreAndFreeAllocateNothing()
    {
        using var store = new CompactStore();
        var payload = new byte[4096];
        new Random(4).NextBytes(payload);
        var handles = new ulong[1000];
        void Run(int rounds)
        {
            for (int r = 0; r < rounds; r++)
            {
                for (int i = 0; i < handles.Length; i++)
                    if (!store.TryStore(payload.AsSpan(0, 1 + (i * 37 + r) % 4096), out handles[i]))
                        throw new InvalidOperationException("allocation failed");
                // Everything goes: every slab is released and comes back from the cache next round.
                for (int i = 0; i < handles.Length; i++) store.Free(handles[i]);
            }
        }
        Run(5);
        long allocated = Allocations.On(() => Run(5));
        Assert.Equal(0, allocated);
        Assert.Equal(0, store.AllocatedBytes);
    }
}
