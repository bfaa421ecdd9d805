namespace DifferenceEngine.Store;

/// <summary>
/// Asks the owner of a blob to swap its reference from <paramref name="oldHandle"/> to
/// <paramref name="newHandle"/>, whose bytes are already an exact copy of the old blob.
/// </summary>
/// <returns>
/// True when the owner now refers to <paramref name="newHandle"/> (the store then frees the old
/// blob); false when the owner no longer refers to <paramref name="oldHandle"/> or is busy (the store
/// then frees the new blob and leaves the old one where it is).
/// </returns>
/// <remarks>
/// The store calls this without holding any of its locks, so the callback may take the owner's lock
/// (a page lock) and may call <see cref="CompactStore.Get"/>, <see cref="CompactStore.Free"/> and
/// <see cref="CompactStore.TryAllocate"/> on other blobs. It must not call
/// <see cref="CompactStore.Compact"/>.
/// </remarks>
public delegate bool RelocateCallback(ulong owner, ulong oldHandle, ulong newHandle);

/// <summary>What one <see cref="CompactStore.Compact"/> or <see cref="CompactStore.Settle"/> call did.</summary>
/// <param name="SlabsDrained">Slabs chosen to be emptied (sparse enough, and room for their blobs elsewhere).</param>
/// <param name="BlobsMoved">Blobs copied to a new slot whose owner accepted the new handle.</param>
/// <param name="BlobsRefused">Blobs whose owner refused the move; they stay where they were, intact.</param>
/// <param name="BytesMoved">Sum of the lengths of the moved blobs.</param>
/// <param name="SlabsReleased">Slabs returned to the OS because compaction emptied them.</param>
/// <param name="BytesReleased">Native bytes of those slabs (slabs differ in size: <see cref="CompactStore.SlabBytesAt"/>).</param>
/// <param name="BytesMade">Native bytes of the slabs compaction made: a class whose few blobs sat in bigger slabs gets one
/// slab of the size they need, a class settled gets the sizes of its fewest slabs it had none of. One that went back in the same compaction (its owners refused every move, say) is counted
/// in BytesReleased too, or left out of both when it never took a blob; so the store holds AllocatedBytesBefore −
/// BytesReleased + BytesMade, less and more what other threads allocated and freed meanwhile.</param>
/// <param name="AllocatedBytesBefore">The store's <see cref="CompactStore.AllocatedBytes"/> when compaction began.</param>
/// <param name="AllocatedBytesAfter">The same when it ended (concurrent allocations and frees count too).</param>
public readonly record struct CompactionResult(
    int SlabsDrained,
    long BlobsMoved,
    long BlobsRefused,
    long BytesMoved,
    int SlabsReleased,
    long BytesReleased,
    long BytesMade,
    long AllocatedBytesBefore,
    long AllocatedBytesAfter)
{
    /// <summary>This compaction followed by <paramref name="next"/>, as one: counts added, from this one's start to the next one's end.</summary>
    public CompactionResult Then(CompactionResult next) => this == default ? next : next == default ? this
        : new(SlabsDrained + next.SlabsDrained, BlobsMoved + next.BlobsMoved, BlobsRefused + next.BlobsRefused, BytesMoved + next.BytesMoved,
            SlabsReleased + next.SlabsReleased, BytesReleased + next.BytesReleased, BytesMade + next.BytesMade, AllocatedBytesBefore,
            next.AllocatedBytesAfter);
}
