namespace DifferenceEngine.Store;

/// <summary>
/// The store's user visits every reference to a blob it holds, for one compaction: for each, while holding the lock that
/// guards that reference (the lock it takes to read or free the blob), it calls <see cref="BlobMover.Move"/> with the
/// handle and keeps the handle returned in place of the old one. <see cref="BlobMover.Wants"/> is a lock-free test it may
/// skip references by before taking their locks.
/// </summary>
/// <remarks>
/// Called with none of the store's locks held, so the walk may take page locks; it may call <see cref="CompactStore.Get"/>,
/// <see cref="CompactStore.Free"/> and <see cref="CompactStore.TryStore"/>, but not <see cref="CompactStore.Compact"/> or
/// <see cref="CompactStore.Settle"/>. A reference it does not hand over (a busy page, a blob not yet published) keeps its
/// blob where it is, and that blob's slab is not released.
/// </remarks>
public delegate void BlobWalk(BlobMover mover);

/// <summary>What a <see cref="BlobWalk"/> hands references to during one compaction.</summary>
public sealed class BlobMover
{
    private readonly CompactStore _store;
    private long _moved, _bytesMoved, _released, _bytesReleased;
    private volatile bool _closed;

    internal BlobMover(CompactStore store) => _store = store;

    /// <summary>Whether the blob may move: its slab is being emptied (no lock taken; the walk may skip a reference by it).</summary>
    public bool Wants(ulong handle) => !_closed && _store.InDrainingSlab(handle);

    /// <summary>
    /// The handle to keep for the blob <paramref name="handle"/> names: a new one when the blob was moved (the old handle is
    /// then freed and must not be used again), else the same. The caller holds the lock that guards the reference.
    /// "StoreHandleInvalid" when the handle is not live.
    /// </summary>
    public ulong Move(ulong handle)
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        return _store.MoveOut(handle, this);
    }

    internal long Moved => Interlocked.Read(ref _moved);
    internal long BytesMoved => Interlocked.Read(ref _bytesMoved);
    internal int Released => (int)Interlocked.Read(ref _released);
    internal long BytesReleased => Interlocked.Read(ref _bytesReleased);

    /// <summary>A blob of <paramref name="length"/> bytes moved; <paramref name="slabReleased"/> the bytes of the slab it left empty, or 0.</summary>
    internal void Count(int length, int slabReleased)
    {
        Interlocked.Increment(ref _moved);
        Interlocked.Add(ref _bytesMoved, length);
        if (slabReleased <= 0) return;
        Interlocked.Increment(ref _released);
        Interlocked.Add(ref _bytesReleased, slabReleased);
    }

    /// <summary>The compaction is over: a mover kept past it moves nothing (until the store's next compaction, which
    /// hands out the same mover again).</summary>
    internal void Close() => _closed = true;

    /// <summary>A compaction begins: the mover counts from zero and moves blobs until <see cref="Close"/>.</summary>
    internal void Open()
    {
        _moved = _bytesMoved = _released = _bytesReleased = 0;
        _closed = false;
    }
}

/// <summary>What one <see cref="CompactStore.Compact"/> or <see cref="CompactStore.Settle"/> call did.</summary>
/// <param name="SlabsDrained">Slabs chosen to be emptied (sparse enough, and room for their blobs elsewhere).</param>
/// <param name="BlobsMoved">Blobs moved to a new slot when the walk handed their reference over.</param>
/// <param name="BlobsRefused">Blobs left in a slab being emptied: the walk did not hand their reference over (busy, or not
/// yet published), or their class had no room left; they stay where they were, intact.</param>
/// <param name="BytesMoved">Sum of the lengths of the moved blobs.</param>
/// <param name="SlabsReleased">Slabs returned to the OS because compaction emptied them.</param>
/// <param name="BytesReleased">Native bytes of those slabs (slabs differ in size: <see cref="CompactStore.SlabBytesAt"/>).</param>
/// <param name="BytesMade">Native bytes of the slabs compaction made: a class whose few blobs sat in bigger slabs gets one
/// slab of the size they need, a class settled gets the sizes of its fewest slabs it had none of. One that went back in the same compaction (no blob was handed over, say) is counted
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
