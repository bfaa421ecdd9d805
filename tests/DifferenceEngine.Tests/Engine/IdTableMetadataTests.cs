using DifferenceEngine.Compression;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// The page group and shared blob tables' metadata, and the figure the fleet's model computes for them without a table
/// (MetadataBytesFor): the same bytes for any number of ids, so a prediction counts the chunks a host really allocates.
/// </summary>
public class IdTableMetadataTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(127)]
    [InlineData(128)]
    [InlineData(129)]
    [InlineData(1000)]
    [InlineData(5000)]
    public void PageGroupTableMetadataIsWhatTheModelComputes(int groups)
    {
        var table = new PageGroupTable();
        for (int i = 0; i < groups; i++) table.Reserve();
        Assert.Equal(PageGroupTable.MetadataBytesFor(groups), table.MetadataBytes);
        // Whole chunks of 128 groups: a small host's few hundred groups take a few chunks, not one of 1,024.
        long chunks = groups == 0 ? 0 : groups / PageGroupTable.RecordsPerChunk + 1;
        Assert.InRange(table.MetadataBytes - chunks * PageGroupTable.ChunkBytes, 0, 2048);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(255)]
    [InlineData(256)]
    [InlineData(3000)]
    public void SharedBlobTableMetadataIsWhatTheModelComputes(int blobs)
    {
        var table = new SharedBlobTable();
        for (int i = 0; i < blobs; i++) table.Reserve();
        Assert.Equal(SharedBlobTable.MetadataBytesFor(blobs), table.MetadataBytes);
        Assert.InRange(table.MetadataBytes, blobs * 8L, blobs * 8L + 8L * 256 + 2048); // 8 bytes a blob (a 48-bit handle and a 16-bit count)
    }
}

/// <summary>A group record keeps three pieces itself and a fourth in a side table, through every change a record sees.</summary>
public class PageGroupRecordTests
{
    [Fact]
    public void PiecesPastTheSecondLiveInSideTablesThroughMovesSwapAndTheGroupsEnd()
    {
        using var store = new DifferenceEngine.Store.CompactStore();
        var table = new PageGroupTable();
        var bytes = Enumerable.Range(0, 4).Select(p => Enumerable.Repeat((byte)(p + 1), p == 3 ? 100 : 4096).ToArray()).ToArray();
        var pieces = new ulong[4];
        for (int p = 0; p < 4; p++) Assert.True(store.TryStore(bytes[p], out pieces[p]));
        var three = new ulong[3];
        for (int p = 0; p < 3; p++) Assert.True(store.TryStore(bytes[p], out three[p]));
        long empty = table.MetadataBytes;
        uint id = table.Reserve(), other = table.Reserve();
        table.Publish(id, 7, DifferenceEngine.Codecs.CompressionAlgorithm.Zstd, 4, pieces, 3 * 4096 + 100, 42, 4 * 3072);
        table.Publish(other, 7, DifferenceEngine.Codecs.CompressionAlgorithm.Zstd, 4, three, 3 * 4096, 43, 4 * 3072);
        Assert.True(table.MetadataBytes > empty, "the third and fourth pieces are counted");
        long withFourth = table.MetadataBytes;
        var stream = new byte[PageGroupTable.MaxStreamBytes];
        lock (table.StripeLock(id))
        {
            Assert.Equal(4, table.RecordLocked(id).Pieces);
            Assert.Equal(pieces[2], table.PieceLocked(id, 2));
            Assert.Equal(pieces[3], table.PieceLocked(id, 3));
            Assert.Equal(3 * 4096 + 100, table.ReadStreamLocked(id, store, null, stream, new byte[4096]));
        }
        Assert.True(stream.AsSpan(3 * 4096, 100).IndexOfAnyExcept((byte)4) < 0, "the stream's tail comes from the fourth piece");
        lock (table.StripeLock(other))
        {
            Assert.Equal(three[2], table.PieceLocked(other, 2)); // its third piece in the side table
            Assert.Throws<ArgumentOutOfRangeException>(() => table.PieceLocked(other, 3)); // three pieces: no fourth
        }

        // A compaction that moves the fourth piece: the side table follows. Its slab (the 128-byte class's first, 32 slots)
        // is filled, the next slab (64 slots) half, then the first emptied but for the piece: it drains into the second.
        var filler = new List<ulong>();
        for (int i = 0; i < 31 + 32; i++)
        {
            Assert.True(store.TryStore(new byte[100], out ulong h));
            filler.Add(h);
        }
        for (int i = 0; i < 31; i++) store.Free(filler[i]);
        var kept = filler.Skip(31).ToArray();
        ulong fourthBefore;
        lock (table.StripeLock(id)) fourthBefore = table.PieceLocked(id, 3);
        var moved = store.Compact(mover =>
        {
            table.MoveBlobs(mover);
            DifferenceEngine.Tests.Store.StoreWalks.All(kept)(mover);
        });
        Assert.Equal(1, moved.BlobsMoved);
        lock (table.StripeLock(id))
        {
            Assert.NotEqual(fourthBefore, table.PieceLocked(id, 3));
            Assert.Equal(3 * 4096 + 100, table.ReadStreamLocked(id, store, null, stream, new byte[4096]));
        }
        Assert.True(stream.AsSpan(3 * 4096, 100).IndexOfAnyExcept((byte)4) < 0);
        foreach (var h in kept) store.Free(h);

        // The group's last member leaves: every piece freed, the side tables' entries gone.
        lock (table.StripeLock(id))
            for (int m = 0; m < 4; m++) table.LeaveLocked(id, m, store, null);
        Assert.Equal(withFourth - 2 * 24, table.MetadataBytes);
        lock (table.StripeLock(other))
            for (int m = 0; m < 4; m++) table.LeaveLocked(other, m, store, null);
        Assert.Equal(withFourth - 3 * 24, table.MetadataBytes);
        Assert.Equal(0, store.LiveBlobs);
    }

    [Theory]
    [InlineData(65_534, false)] // the largest id a record holds itself
    [InlineData(65_535, true)]
    [InlineData(int.MaxValue, true)]
    public void ADomainIdPastTwoBytesLivesInASideTableUntilItsGroupEnds(int domainId, bool wide)
    {
        using var store = new DifferenceEngine.Store.CompactStore();
        var table = new PageGroupTable();
        Assert.True(store.TryStore(new byte[1000], out ulong piece));
        uint id = table.Reserve();
        long reserved = table.MetadataBytes;
        table.Publish(id, domainId, DifferenceEngine.Codecs.CompressionAlgorithm.Zstd, 2, [piece], 1000, 42, 2 * 3072);
        Assert.Equal(reserved + (wide ? 24 : 0), table.MetadataBytes);
        lock (table.StripeLock(id))
        {
            Assert.Equal(domainId, table.RecordLocked(id).DomainId);
            table.LeaveLocked(id, 0, store, null);
            Assert.Equal(domainId, table.RecordLocked(id).DomainId);
            table.LeaveLocked(id, 1, store, null);
        }
        // The group's end takes the side table's entry with it.
        Assert.Equal(reserved, table.MetadataBytes);
        Assert.Equal(0, store.LiveBlobs);
    }
}

/// <summary>A shared blob's count of pages fits 16 bits; a larger one lives in a side table, counted, and comes back.</summary>
public class SharedBlobCountTests
{
    [Fact]
    public void ACountOf65535OrMoreLivesInTheSideTableUntilItFallsBack()
    {
        using var store = new DifferenceEngine.Store.CompactStore();
        var table = new SharedBlobTable();
        Assert.True(store.TryStore(new byte[] { 1, 2, 3 }, out ulong handle));
        uint id = table.Reserve();
        long before = table.MetadataBytes;
        table.Publish(id, handle, 65_536);
        Assert.Equal(before + 24, table.MetadataBytes); // the side table's entry is counted
        lock (table.StripeLock(id))
        {
            Assert.Equal(65_536, table.ReferencesLocked(id));
            table.ReleaseLocked(id, store);
            Assert.Equal(65_535, table.ReferencesLocked(id));
            table.ReleaseLocked(id, store);
            Assert.Equal(65_534, table.ReferencesLocked(id));
        }
        Assert.Equal(before, table.MetadataBytes); // back in its 16 bits
        lock (table.StripeLock(id))
        {
            for (int n = 65_534; n > 1; n--) table.ReleaseLocked(id, store);
            Assert.True(table.IsLiveLocked(id));
            Assert.Equal(1, table.ReferencesLocked(id));
            table.ReleaseLocked(id, store); // the last name frees the blob
            Assert.False(table.IsLiveLocked(id));
            Assert.Throws<InvalidOperationException>(() => table.ReleaseLocked(id, store));
        }
        Assert.Equal(0, store.LiveBlobs);
    }
}
