using DifferenceEngine.Store;

namespace DifferenceEngine.Tests.Store;

/// <summary>A seeded random run against a dictionary model: every byte read back, every counter exact.</summary>
public class CompactStoreModelTests
{
    private sealed class Blob(ulong handle, byte[] bytes)
    {
        public ulong Handle = handle;
        public readonly byte[] Bytes = bytes;
    }

    [Theory]
    [InlineData(1, 220_000)]
    [InlineData(2, 60_000)]
    public void RandomOperationsMatchTheModel(int seed, int operations)
    {
        var rng = new Random(seed);
        using var store = new CompactStore();
        var model = new Dictionary<ulong, Blob>();  // owner -> blob
        var owners = new List<ulong>();               // live owners, for picking at random
        ulong nextOwner = 1;
        int target = 3000;
        long modelStored = 0, modelSlots = 0;
        for (int op = 0; op < operations; op++)
        {
            // Swing the population between small and large so slabs fill, drain and are released.
            if (op % 40_000 == 0) target = rng.Next(200, 6000);
            int roll = rng.Next(100);
            bool allocate = owners.Count == 0 || (owners.Count < target ? roll < 55 : roll < 35);
            if (allocate)
            {
                int length = RandomLength(rng);
                var bytes = new byte[length];
                rng.NextBytes(bytes);
                ulong owner = nextOwner++;
                ulong handle;
                if (rng.Next(2) == 0)
                {
                    Assert.True(store.TryAllocate(length, out handle));
                    var span = store.Get(handle);
                    Assert.Equal(length, span.Length);
                    Assert.True(span.IndexOfAnyExcept((byte)0) < 0, "a new blob must start zeroed");
                    bytes.CopyTo(span);
                }
                else
                {
                    Assert.True(store.TryStore(bytes, out handle));
                }
                Assert.NotEqual(0UL, handle);
                Assert.True(handle < 1UL << 48, $"handle 0x{handle:X} does not fit in 48 bits");
                model.Add(owner, new Blob(handle, bytes));
                owners.Add(owner);
                modelStored += length;
                modelSlots += CompactStore.SlotSizeFor(length);
            }
            else if (roll < 75)
            {
                int i = rng.Next(owners.Count);
                ulong owner = owners[i];
                var freed = model[owner];
                store.Free(freed.Handle);
                model.Remove(owner);
                modelStored -= freed.Bytes.Length;
                modelSlots -= CompactStore.SlotSizeFor(freed.Bytes.Length);
                owners[i] = owners[^1];
                owners.RemoveAt(owners.Count - 1);
            }
            else
            {
                ulong owner = owners[rng.Next(owners.Count)];
                var blob = model[owner];
                Assert.True(store.Get(blob.Handle).SequenceEqual(blob.Bytes), $"blob of owner {owner} read back wrong");
                Assert.Equal(blob.Bytes.Length, store.LengthOf(blob.Handle));
            }

            if (op % 7 == 0) CheckCounters(store, model.Count, modelStored, modelSlots);
            if (op % 10_000 == 0) CheckCounters(store, model);
            if (op % 50_000 == 49_999)
            {
                // Compaction in the middle of the run: every blob handed over.
                var result = store.Compact(mover =>
                {
                    foreach (var blob in model.Values)
                        if (mover.Wants(blob.Handle)) blob.Handle = mover.Move(blob.Handle);
                }, 1.0);
                Assert.Equal(0, result.BlobsRefused);
                CheckCounters(store, model);
                VerifyAll(store, model);
            }
        }
        CheckCounters(store, model);
        VerifyAll(store, model);

        foreach (var blob in model.Values) store.Free(blob.Handle);
        model.Clear();
        CheckCounters(store, model);
        Assert.Equal(0, store.AllocatedBytes);
        Assert.Equal(0, store.StoredBytes);
        Assert.Equal(0, store.SlotBytes);
        Assert.Equal(0, store.LiveBlobs);
        Assert.Equal(0, store.Fragmentation);
    }

    [Fact]
    public void AClassSlabsGrowFromAPageSoASmallStoreHoldsLittleMoreThanItsBlobs()
    {
        using var store = new CompactStore();
        // One blob in each of the 80 classes: 80 first slabs of a page (320 KiB), where 64 KiB slabs took 5 MiB.
        var handles = new List<ulong>();
        for (int c = 0; c < CompactStore.SizeClassCount; c++)
        {
            int slot = c < 32 ? (c + 1) * 32 : 1024 + (c - 31) * 64;
            Assert.True(store.TryAllocate(slot, out ulong h));
            handles.Add(h);
        }
        Assert.Equal(CompactStore.SizeClassCount * 4096L, store.AllocatedBytes);
        foreach (var h in handles) store.Free(h);
        Assert.Equal(0, store.AllocatedBytes);
        Assert.Equal(new[] { 4096, 8192, 16384, 32768, 65536, 65536 }, Enumerable.Range(0, 6).Select(CompactStore.SlabBytesAt));
    }

    [Theory]
    [InlineData(3)]
    [InlineData(17)]
    public void SlabsForIsWhatTheStoreAllocatesAndCountsForBlobsStoredWithNoneFreed(int seed)
    {
        // The fleet's model sizes a store with SlabsFor: it must be what the store itself does, bytes and bookkeeping.
        var rng = new Random(seed);
        using var store = new CompactStore();
        long metadataEmpty = store.MetadataBytes;
        var counts = new Dictionary<int, long>();
        for (int i = 0; i < 20_000; i++)
        {
            int length = RandomLength(rng);
            // Most blobs in a few classes (many slabs), a few in the rest (one or two small slabs).
            if (rng.Next(4) != 0) length = 1 + rng.Next(3) * 1500;
            Assert.True(store.TryAllocate(length, out _));
            int slot = CompactStore.SlotSizeFor(length);
            counts[slot] = counts.GetValueOrDefault(slot) + 1;
        }
        long bytes = 0, metadata = 0;
        foreach (var (slot, count) in counts)
        {
            var (b, m) = CompactStore.SlabsFor(slot, count);
            bytes += b;
            metadata += m;
        }
        Assert.Equal(bytes, store.AllocatedBytes);
        Assert.Equal(0, store.FragmentationBytes - (bytes - store.StoredBytes));
        // The slab table grows with the slab ids in use; the rest of the bookkeeping is the slabs'.
        long table = store.MetadataBytes - metadataEmpty - metadata;
        Assert.InRange(table, 0, 64 * 1024);
    }

    [Theory]
    [InlineData(1024, 20)]   // 20 KiB of blobs: 16 + 4 KiB (a 32 KiB slab before session 17)
    [InlineData(1024, 3)]    // one 4 KiB slab
    [InlineData(3200, 17)]   // 17 of 3,200 bytes: 64 KiB holds 20; 32 + 16 + 8 + 4 KiB hold 18 in 60 KiB
    [InlineData(96, 600)]    // 600 of 96 bytes: 64 KiB
    [InlineData(96, 2000)]   // two full-size slabs (682 each), and 32 + 16 + 8 + 4 KiB for the other 636
    public void LeastSlabsForIsWhatCompactionLeavesAClass(int slot, int kept)
    {
        // The fleet's model sizes a stable store with LeastSlabsFor: a class that held many blobs, most freed (single
        // blobs whose pages were grouped), is settled into the fewest slabs that hold the rest.
        using var store = new CompactStore();
        int made = 8 * CompactStore.SlotsPerSlab(slot);
        var handles = new ulong[made];
        for (int i = 0; i < made; i++) Assert.True(store.TryAllocate(slot, out handles[i]));
        Assert.Equal(CompactStore.SlabsFor(slot, made).Bytes, store.AllocatedBytes);
        var rng = new Random(slot + kept);
        var keep = Enumerable.Range(0, made).OrderBy(_ => rng.Next()).Take(kept).ToHashSet();
        for (int i = 0; i < made; i++)
            if (!keep.Contains(i))
            {
                store.Free(handles[i]);
                handles[i] = 0;
            }
        store.Compact(StoreWalks.All(handles));
        Assert.Equal(store.AllocatedBytes - CompactStore.LeastSlabsFor(slot, kept).Bytes, store.UnsettledBytes);
        store.Settle(StoreWalks.All(handles));
        Assert.Equal(kept, store.LiveBlobs);
        Assert.Equal(CompactStore.LeastSlabsFor(slot, kept).Bytes, store.AllocatedBytes);
        Assert.Equal(0, store.UnsettledBytes);
        Assert.True(CompactStore.LeastSlabsFor(slot, kept).Bytes <= CompactStore.SlabsFor(slot, kept).Bytes);
        // Settling again finds nothing to do.
        var again = store.Settle(StoreWalks.Never);
        Assert.Equal(0, again.BlobsMoved);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void CompactionSettlesEveryClassIntoItsFewestSlabsAndEveryBlobReadsBack(int seed)
    {
        // Blobs of every size come and go in random order; settling, with every move accepted, then leaves each class in
        // exactly LeastSlabsFor of its blob count, with every blob's bytes where its owner now finds them.
        var rng = new Random(seed);
        using var store = new CompactStore();
        var live = new Dictionary<ulong, (ulong Handle, byte[] Bytes)>();
        ulong next = 1;
        for (int round = 0; round < 6; round++)
        {
            for (int i = 0; i < 4000; i++)
            {
                int length = CompactStoreModelTests.RandomLength(rng);
                var bytes = new byte[length];
                rng.NextBytes(bytes);
                Assert.True(store.TryStore(bytes, out ulong h));
                live[next++] = (h, bytes);
            }
            foreach (var owner in live.Keys.Where(_ => rng.Next(3) == 0).ToList())
            {
                store.Free(live[owner].Handle);
                live.Remove(owner);
            }
        }
        long expected = live.Values.GroupBy(v => CompactStore.SlotSizeFor(v.Bytes.Length))
            .Sum(g => CompactStore.LeastSlabsFor(g.Key, g.Count()).Bytes);
        long before = store.AllocatedBytes;
        Assert.True(store.UnsettledBytes > 0 && store.UnsettledBytes <= before - expected);
        var result = store.Settle(mover =>
        {
            foreach (var owner in live.Keys.ToList())
                if (mover.Wants(live[owner].Handle)) live[owner] = (mover.Move(live[owner].Handle), live[owner].Bytes);
        });
        Assert.True(result.BlobsMoved > 0);
        Assert.Equal(before - result.BytesReleased + result.BytesMade, store.AllocatedBytes);
        Assert.Equal(expected, store.AllocatedBytes);
        Assert.Equal(0, store.UnsettledBytes);
        foreach (var (handle, bytes) in live.Values) Assert.True(store.Get(handle).SequenceEqual(bytes));
    }

    [Theory]
    [InlineData(32)]
    [InlineData(1088)]
    [InlineData(2752)]
    [InlineData(3648)]
    [InlineData(4096)]
    public void LeastSlabsForIsTheFewestBytesOfAnyMixOfSlabSizes(int slot)
    {
        // Against every way of holding the blobs in slabs of 4, 8, 16, 32 and 64 KiB (up to three of each small size,
        // any number of full-size ones): none holds them in fewer bytes.
        int[] sizes = [4096, 8192, 16384, 32768];
        int perSlab = CompactStore.SlotsPerSlab(slot);
        foreach (long blobs in new long[] { 1, 2, 3, 5, 7, 11, perSlab - 1, perSlab, perSlab + 1, 3L * perSlab + perSlab / 3 })
        {
            if (blobs <= 0) continue;
            long least = CompactStore.LeastSlabsFor(slot, blobs).Bytes;
            long best = long.MaxValue;
            for (int code = 0; code < 256; code++)
            {
                long slots = 0, bytes = 0;
                for (int i = 0; i < 4; i++)
                {
                    int n = (code >> (2 * i)) & 3;
                    slots += n * (sizes[i] / slot);
                    bytes += n * sizes[i];
                }
                long rest = Math.Max(0, blobs - slots);
                long full = (rest + perSlab - 1) / perSlab;
                best = Math.Min(best, bytes + full * CompactStore.SlabSize);
            }
            Assert.Equal(best, least);
        }
    }

    [Fact]
    public void TrimSlabCacheDropsTheBookkeepingOfReleasedSlabsAndNothingElse()
    {
        using var store = new CompactStore();
        long empty = store.MetadataBytes;
        // Blobs of 40 lengths, three each; then all freed but the first length's, so every other class's slab is
        // released and its bookkeeping waits in the class's cache.
        var handles = new List<ulong>();
        var perSlot = new Dictionary<int, int>();
        for (int c = 0; c < 40; c++)
        {
            int length = 64 + c * 96;
            perSlot[CompactStore.SlotSizeFor(length)] = perSlot.GetValueOrDefault(CompactStore.SlotSizeFor(length)) + 3;
            for (int i = 0; i < 3; i++)
            {
                Assert.True(store.TryAllocate(length, out ulong h));
                handles.Add(h);
            }
        }
        int kept = CompactStore.SlotSizeFor(64);
        long released = perSlot.Where(kv => kv.Key != kept).Sum(kv => CompactStore.SlabsFor(kv.Key, kv.Value).Metadata);
        long full = store.MetadataBytes;
        for (int i = 3; i < handles.Count; i++) store.Free(handles[i]);
        Assert.Equal(CompactStore.FirstSlabSize, store.AllocatedBytes);
        Assert.Equal(full, store.MetadataBytes); // released slabs' arrays are still held, and counted

        // The first trim keeps what was released since the last one (for the next pass); the second drops it.
        Assert.Equal(0, store.TrimSlabCache());
        Assert.Equal(full, store.MetadataBytes);
        Assert.Equal(released, store.TrimSlabCache());
        Assert.Equal(full - released, store.MetadataBytes);
        // What is left: the empty store's, the live slab's bookkeeping and the slab table grown for the ids used.
        Assert.InRange(store.MetadataBytes - empty - CompactStore.SlabsFor(kept, 3).Metadata, 0, 1024);
        Assert.Equal(0, store.TrimSlabCache());
        // The blobs still in the store read back; a class whose cache was dropped makes a new slab as before.
        Assert.Equal(64, store.LengthOf(handles[0]));
        long madeBefore = store.SlabBookkeepingMadeBytes;
        Assert.True(store.TryAllocate(1000, out ulong again));
        Assert.Equal(1000, store.LengthOf(again));
        Assert.Equal(CompactStore.SlabsFor(CompactStore.SlotSizeFor(1000), 1).Metadata, store.SlabBookkeepingMadeBytes - madeBefore);
        Assert.Equal(full - released + CompactStore.SlabsFor(CompactStore.SlotSizeFor(1000), 1).Metadata, store.MetadataBytes);
    }

    [Fact]
    public void ReleasedSlabsServeTheNextPassWithoutNewBookkeepingAndAFullTrimDropsThem()
    {
        using var store = new CompactStore();
        long empty = store.MetadataBytes;
        var lengths = new[] { 48, 300, 1000, 2500 };
        var handles = new List<ulong>();
        foreach (int length in lengths)
            for (int i = 0; i < 40; i++)
            {
                Assert.True(store.TryAllocate(length, out ulong h));
                handles.Add(h);
            }
        long full = store.MetadataBytes;
        // Every slab's bookkeeping was made once: counted as the store's growth, as much as the metadata grew by.
        long made = store.SlabBookkeepingMadeBytes;
        Assert.InRange(full - empty - made, 0, 1024); // the slab table grown for the ids used
        foreach (ulong h in handles) store.Free(h); // guest reads between two passes empty every slab
        Assert.Equal(0, store.AllocatedBytes);
        Assert.Equal(0, store.TrimSlabCache());      // the pass after the reads keeps them
        handles.Clear();
        long before = GC.GetAllocatedBytesForCurrentThread();
        foreach (int length in lengths)              // the next pass stores as many blobs again
            for (int i = 0; i < 40; i++)
            {
                Assert.True(store.TryAllocate(length, out ulong h));
                handles.Add(h);
            }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(made, store.SlabBookkeepingMadeBytes); // all of it from the cache: nothing made
        Assert.Equal(full, store.MetadataBytes);
        Assert.Equal(0, store.TrimSlabCache());      // nothing was left over to drop
        foreach (ulong h in handles) store.Free(h);
        Assert.True(store.TrimSlabCache(all: true) > 0);
        Assert.Equal(0, store.TrimSlabCache(all: true));
        Assert.InRange(store.MetadataBytes - empty, 0, 1024); // the slab table grown for the ids used
    }

    internal static int RandomLength(Random rng) => rng.Next(4) switch
    {
        0 => rng.Next(1, 129),           // small patches
        1 => rng.Next(1, 1025),
        _ => rng.Next(1, CompactStore.MaxBlobLength + 1),
    };

    private static void CheckCounters(CompactStore store, Dictionary<ulong, Blob> model)
    {
        long stored = 0, slots = 0;
        foreach (var blob in model.Values)
        {
            stored += blob.Bytes.Length;
            slots += CompactStore.SlotSizeFor(blob.Bytes.Length);
        }
        CheckCounters(store, model.Count, stored, slots);
    }

    private static void CheckCounters(CompactStore store, long count, long stored, long slots)
    {
        Assert.Equal(stored, store.StoredBytes);
        Assert.Equal(slots, store.SlotBytes);
        Assert.Equal(count, store.LiveBlobs);
        long allocated = store.AllocatedBytes;
        Assert.True(allocated >= store.SlotBytes, $"allocated {allocated} < slot bytes {store.SlotBytes}");
        Assert.True(store.SlotBytes >= store.StoredBytes);
        Assert.Equal(0, allocated % CompactStore.FirstSlabSize);
        Assert.Equal(allocated - stored, store.FragmentationBytes);
        Assert.True(store.MetadataBytes > 0);
        if (count == 0) Assert.Equal(0, allocated);
    }

    private static void VerifyAll(CompactStore store, Dictionary<ulong, Blob> model)
    {
        foreach (var (owner, blob) in model)
        {
            Assert.True(store.Get(blob.Handle).SequenceEqual(blob.Bytes), $"blob of owner {owner} read back wrong");
        }
    }
}
