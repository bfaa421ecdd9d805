using DifferenceEngine.Store;

namespace DifferenceEngine.Tests.Store;

/// <summary>Handles, limits, size classes and misuse: clear errors, never a crash, nothing changed.</summary>
public class CompactStoreHandleTests
{
    private static void AssertInvalid(Action action)
    {
        var e = Assert.Throws<DEException>(action);
        Assert.Equal("StoreHandleInvalid", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidArgument, e.Kind);
    }

    private static void AssertAllInvalid(CompactStore store, ulong handle)
    {
        Assert.False(store.IsLive(handle));
        AssertInvalid(() => store.Get(handle));
        AssertInvalid(() => store.LengthOf(handle));
        AssertInvalid(() => store.Free(handle));
    }

    [Fact]
    public void InvalidHandlesAreRejected()
    {
        using var store = new CompactStore();
        Assert.True(store.TryAllocate(100, out ulong live));
        foreach (ulong bad in new[] { 0UL, 1UL, ulong.MaxValue, 1UL << 48, live | 1UL << 48, live + 1, live ^ (1UL << 13),
                     live + (1UL << 24), 0xFFFF_FFFF_FFFFUL, CompactStore.MakeHandle(CompactStore.MaxSlabId, 0, 1) })
            AssertAllInvalid(store, bad);
        // Nothing changed.
        Assert.Equal(1, store.LiveBlobs);
        Assert.Equal(100, store.LengthOf(live));
    }

    [Fact]
    public void DoubleFreeIsRejected()
    {
        using var store = new CompactStore();
        Assert.True(store.TryAllocate(10, out ulong a));
        Assert.True(store.TryAllocate(10, out ulong b));
        store.Free(a);
        AssertAllInvalid(store, a);
        Assert.Equal(1, store.LiveBlobs);
        Assert.Equal(10, store.StoredBytes);
        Assert.True(store.IsLive(b));
    }

    [Fact]
    public void StaleHandleToAReusedSlotIsRejected()
    {
        using var store = new CompactStore();
        Assert.True(store.TryAllocate(50, out ulong keep));
        Assert.True(store.TryStore(new byte[] { 1, 2, 3 }, out ulong old));
        store.Free(old);
        Assert.True(store.TryStore(new byte[] { 9, 9 }, out ulong reused));
        // Same slab and slot, new generation.
        Assert.Equal(old >> CompactStore.GenerationBits, reused >> CompactStore.GenerationBits);
        Assert.NotEqual(old, reused);
        AssertAllInvalid(store, old);
        Assert.Equal(new byte[] { 9, 9 }, store.Get(reused).ToArray());
        Assert.True(store.IsLive(keep));
    }

    [Fact]
    public void StaleHandleToAReleasedAndReusedSlabIsRejected()
    {
        using var store = new CompactStore();
        Assert.True(store.TryAllocate(4096, out ulong old));
        store.Free(old);
        Assert.Equal(0, store.AllocatedBytes);
        AssertAllInvalid(store, old);
        // The slab id comes back for another class: the old handle stays dead.
        var handles = new List<ulong>();
        for (int i = 0; i < 2000; i++)
        {
            Assert.True(store.TryAllocate(32, out ulong h));
            handles.Add(h);
        }
        Assert.Equal(old >> (CompactStore.GenerationBits + CompactStore.SlotBits), handles[0] >> (CompactStore.GenerationBits + CompactStore.SlotBits));
        AssertAllInvalid(store, old);
        // Freed last to first, so that the first slab (the old handle's id) is the last released and the next one reused.
        foreach (var h in Enumerable.Reverse(handles)) store.Free(h);
        Assert.Equal(0, store.AllocatedBytes);
        // And back to the first class, same slab id and slot: the generation carried on.
        Assert.True(store.TryAllocate(4096, out ulong again));
        Assert.Equal(old >> CompactStore.GenerationBits, again >> CompactStore.GenerationBits);
        Assert.NotEqual(old, again);
        AssertAllInvalid(store, old);
        foreach (var h in handles) AssertAllInvalid(store, h);
    }

    [Fact]
    public void HandlesFitIn48BitsAndAreNeverZero()
    {
        using var store = new CompactStore();
        var rng = new Random(5);
        var seen = new HashSet<ulong>();
        // 40k tiny blobs span 23 slabs of the smallest class; a round of frees and reallocations wraps generations.
        var handles = new List<ulong>();
        for (int i = 0; i < 40_000; i++)
        {
            Assert.True(store.TryAllocate(rng.Next(1, 33), out ulong h));
            Assert.InRange(h, 1UL, (1UL << 48) - 1);
            Assert.True(seen.Add(h));
            handles.Add(h);
        }
        for (int round = 0; round < 5; round++)
            for (int i = 0; i < handles.Count; i++)
            {
                store.Free(handles[i]);
                Assert.True(store.TryAllocate(rng.Next(1, CompactStore.MaxBlobLength + 1), out ulong h));
                Assert.InRange(h, 1UL, (1UL << 48) - 1);
                handles[i] = h;
            }
        Assert.Equal(handles.Count, handles.Distinct().Count());
        foreach (var h in handles) store.Free(h);
        Assert.Equal(0, store.AllocatedBytes);
    }

    [Fact]
    public void TheLimitStopsAllocationAndChangesNothing()
    {
        // 4096-byte slots: the class's first four slabs (4, 8, 16 and 32 KiB) hold 15 and fit the limit; a page more would not.
        using var store = new CompactStore(60L * 1024 + 1000);
        var handles = new List<ulong>();
        for (int i = 0; i < 15; i++)
        {
            Assert.True(store.TryAllocate(4096, out ulong h));
            handles.Add(h);
        }
        long allocated = store.AllocatedBytes, stored = store.StoredBytes, live = store.LiveBlobs, slots = store.SlotBytes;
        Assert.Equal(60L * 1024, allocated);
        Assert.False(store.TryAllocate(4096, out ulong none));
        Assert.Equal(0UL, none);
        Assert.False(store.TryStore(new byte[100], out none));
        Assert.Equal(0UL, none);
        Assert.False(store.TryAllocate(1, out none));
        Assert.Equal(0UL, none);
        Assert.Equal(allocated, store.AllocatedBytes);
        Assert.Equal(stored, store.StoredBytes);
        Assert.Equal(live, store.LiveBlobs);
        Assert.Equal(slots, store.SlotBytes);
        foreach (var h in handles) Assert.Equal(4096, store.LengthOf(h));

        // A free slot in an existing slab is still usable at the limit (handles 1 and 2 share the 8 KiB slab).
        store.Free(handles[1]);
        Assert.True(store.TryAllocate(4090, out _));
        Assert.Equal(allocated, store.AllocatedBytes);
        Assert.False(store.TryAllocate(4090, out _));
        // Releasing a whole slab (the first, 4 KiB, of one blob) makes room for another class's first slab.
        store.Free(handles[0]);
        Assert.Equal(56L * 1024, store.AllocatedBytes);
        Assert.True(store.TryAllocate(1, out _));
        Assert.Equal(allocated, store.AllocatedBytes);
    }

    [Fact]
    public void LengthsOutsideOneToAPageAreRejected()
    {
        using var store = new CompactStore();
        foreach (int bad in new[] { 0, -1, 4097, int.MaxValue, int.MinValue })
        {
            var e = Assert.Throws<DEException>(() => store.TryAllocate(bad, out _));
            Assert.Equal("StoreBlobLengthInvalid", e.ErrorId);
        }
        Assert.Equal("StoreBlobLengthInvalid", Assert.Throws<DEException>(() => store.TryStore(ReadOnlySpan<byte>.Empty, out _)).ErrorId);
        Assert.Equal("StoreBlobLengthInvalid", Assert.Throws<DEException>(() => store.TryStore(new byte[4097], out _)).ErrorId);
        Assert.Equal(0, store.AllocatedBytes);
        Assert.Equal("StoreLimitInvalid", Assert.Throws<DEException>(() => new CompactStore(0)).ErrorId);
        Assert.Equal("StoreThresholdInvalid", Assert.Throws<DEException>(() => store.NeedsCompaction(double.NaN)).ErrorId);
        Assert.Equal("StoreThresholdInvalid", Assert.Throws<DEException>(() => store.Compact(_ => { }, 0)).ErrorId);
        Assert.Equal("StoreThresholdInvalid", Assert.Throws<DEException>(() => store.Compact(_ => { }, 1.5)).ErrorId);
    }

    [Fact]
    public void SizeClassesRoundUpToMultiplesOf32ThenOf64()
    {
        Assert.Equal(80, CompactStore.SizeClassCount);
        Assert.Equal(32, CompactStore.SlotSizeFor(1));
        Assert.Equal(32, CompactStore.SlotSizeFor(32));
        Assert.Equal(64, CompactStore.SlotSizeFor(33));
        Assert.Equal(1024, CompactStore.SlotSizeFor(1024));
        Assert.Equal(1088, CompactStore.SlotSizeFor(1025));
        Assert.Equal(1152, CompactStore.SlotSizeFor(1089));
        Assert.Equal(4096, CompactStore.SlotSizeFor(4096));
        var sizes = new HashSet<int>();
        for (int length = 1; length <= 4096; length++)
        {
            int slot = CompactStore.SlotSizeFor(length);
            Assert.True(slot >= length);
            Assert.True(slot - length < (length <= 1024 ? 32 : 64));
            Assert.True(CompactStore.SlotsPerSlab(slot) >= 16);
            sizes.Add(slot);
        }
        Assert.Equal(CompactStore.SizeClassCount, sizes.Count);
    }

    [Fact]
    public void ExactLengthsAndOwnersAreKeptOutsideTheBytes()
    {
        using var store = new CompactStore();
        var handles = new ulong[4096];
        for (int length = 1; length <= 4096; length++)
        {
            var bytes = new byte[length];
            bytes.AsSpan().Fill((byte)length);
            Assert.True(store.TryStore(bytes, out handles[length - 1]));
        }
        for (int length = 1; length <= 4096; length++)
        {
            ulong h = handles[length - 1];
            Assert.Equal(length, store.LengthOf(h));
            var span = store.Get(h);
            Assert.Equal(length, span.Length);
            Assert.True(span.IndexOfAnyExcept((byte)length) < 0);
        }
        Assert.Equal(4096L * 4097 / 2, store.StoredBytes);
    }

    [Fact]
    public void FreedSlotsAreWipedBeforeReuse()
    {
        using var store = new CompactStore();
        Assert.True(store.TryAllocate(64, out ulong keep));
        var secret = Enumerable.Repeat((byte)0xA5, 64).ToArray();
        Assert.True(store.TryStore(secret, out ulong h));
        store.Free(h);
        Assert.True(store.TryAllocate(64, out ulong again));
        Assert.Equal(h >> CompactStore.GenerationBits, again >> CompactStore.GenerationBits);
        Assert.True(store.Get(again).IndexOfAnyExcept((byte)0) < 0);
        store.Free(keep);
    }

    [Fact]
    public void DisposeReleasesEverything()
    {
        var store = new CompactStore();
        Assert.True(store.TryAllocate(1000, out ulong h));
        store.Dispose();
        Assert.Equal(0, store.AllocatedBytes);
        Assert.Equal(0, store.LiveBlobs);
        Assert.Throws<ObjectDisposedException>(() => store.Get(h));
        Assert.Throws<ObjectDisposedException>(() => store.TryAllocate(1, out _));
        store.Free(h); // a no-op once disposed
        store.Dispose();
    }
}
