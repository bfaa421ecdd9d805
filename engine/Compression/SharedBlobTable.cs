using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Memory;
using DifferenceEngine.Store;

namespace DifferenceEngine.Compression;

/// <summary>
/// Compressed copies of shared frames. When every page that shares a frame is cold, the frame is compressed once
/// into one blob of the compact store and freed; each of those pages' entries then names the blob by a stable id in
/// this table (state Compressed with <c>PageEntry.SharedBlob</c> set), and the table keeps the blob's current store
/// handle and how many pages still name it.
/// </summary>
/// <remarks>
/// <para>Why an id and not the handle: store compaction moves blobs, and a moved blob's new handle would have to be
/// written into every entry that names it, which no reverse map records. The id never changes; compaction updates
/// the one handle here (<see cref="MoveBlobs"/>).</para>
/// <para>Threading: an id's handle and reference count change, and its blob is read or freed, only under the id's
/// stripe lock (<see cref="IdSlotTable{TChunk}.StripeLock"/>): so a read never races the blob's move or free. Ids are allocated and
/// recycled under a table-wide gate, taken after a stripe lock and never before one. Chunks of slots never move
/// once allocated, so a slot is read without the gate.</para>
/// <para>Metadata: 8 bytes a slot (a 48-bit handle and a 16-bit count; a count of 65,535 or more lives in a side
/// table; 12 bytes until session 21), in chunks of 256, plus 4 for a recycled id.</para>
/// </remarks>
internal sealed class SharedBlobTable() : IdSlotTable<SharedBlobTable.Chunk>(ChunkShift, uint.MaxValue, static () => new Chunk())
{
    /// <summary>256 slots a chunk (2.6 KiB): a chunk of 4,096 (48 KiB) was most of a small host's shared-blob bookkeeping.</summary>
    private const int ChunkShift = 8;

    /// <summary>A chunk's three arrays' object headers and the chunk object's.</summary>
    private const int ChunkOverheadBytes = 3 * 24 + 16;

    /// <summary>Managed bytes of one chunk of slots: per slot its handle (6 bytes) and count (2).</summary>
    private const int ChunkBytes = (1 << ChunkShift) * (6 + sizeof(ushort)) + ChunkOverheadBytes;

    /// <summary>A slot's count of this value: the count is in the side table.</summary>
    private const ushort Wide = ushort.MaxValue;

    // Counts of 65,535 and more, by id; changed under the id's stripe lock.
    private readonly SideTable<int> _wide = new();
    private long _live;

    /// <summary>Shared blobs that pages still name.</summary>
    public long Count => Interlocked.Read(ref _live);

    public long MetadataBytes => IdMetadataBytes(ChunkBytes) + _wide.MetadataBytes;

    /// <summary>The table's <see cref="MetadataBytes"/> when it holds <paramref name="blobs"/> blobs (ids never recycled).</summary>
    public static long MetadataBytesFor(long blobs) => IdMetadataBytesFor(blobs, ChunkShift, ChunkBytes);

    /// <summary>Gives a reserved id (<see cref="IdSlotTable{TChunk}.Reserve"/>) its blob and the number of pages that name it.</summary>
    public void Publish(uint id, ulong handle, int references)
    {
        if (references < 1) throw new ArgumentOutOfRangeException(nameof(references));
        lock (StripeLock(id))
        {
            var (c, i) = Slot(id);
            c.SetHandle(i, handle);
            SetReferences(id, c, i, references);
        }
        Interlocked.Increment(ref _live);
    }

    /// <summary>Gives back an id that was reserved but never published.</summary>
    public void Abandon(uint id) => Recycle(id);

    /// <summary>The blob's handle; the caller holds the id's stripe lock.</summary>
    public ulong HandleLocked(uint id)
    {
        var (c, i) = Slot(id);
        return c.Handle(i);
    }

    /// <summary>Pages that still name the blob; the caller holds the id's stripe lock.</summary>
    public int ReferencesLocked(uint id)
    {
        var (c, i) = Slot(id);
        return References(id, c, i);
    }

    /// <summary>
    /// Drops one page's reference; with the last, frees the blob and recycles the id. The caller holds the id's
    /// stripe lock (and so may have just read the blob).
    /// </summary>
    public void ReleaseLocked(uint id, CompactStore store)
    {
        var (c, i) = Slot(id);
        int refs = References(id, c, i);
        if (refs <= 0) throw new InvalidOperationException($"Shared blob {id} released with reference count {refs}.");
        if (refs > 1)
        {
            SetReferences(id, c, i, refs - 1);
            return;
        }
        // The last name: the blob goes first, so a store that refuses the handle leaves the reference as it was.
        store.Free(c.Handle(i));
        SetReferences(id, c, i, 0);
        c.SetHandle(i, 0);
        Interlocked.Decrement(ref _live);
        Recycle(id);
    }

    /// <summary>
    /// A store compaction's walk over the shared blobs (<see cref="Store.BlobWalk"/>): each live blob handed to the mover
    /// under its id's stripe lock, and the handle it returns kept.
    /// </summary>
    public void MoveBlobs(Store.BlobMover mover)
    {
        uint highest = HighestReserved;
        for (uint id = 1; id <= highest && id != 0; id++)
        {
            if (TryChunk(id, out int i) is not { } c || !mover.Wants(c.Handle(i))) continue;
            lock (StripeLock(id))
            {
                if (c.Refs[i] == 0) continue;
                c.SetHandle(i, mover.Move(c.Handle(i)));
            }
        }
    }

    /// <summary>
    /// What stats and page snapshots show of a live blob: its stored length, how many pages name it and its codec;
    /// null when <paramref name="id"/> names none. Takes the id's stripe lock (the blob cannot move meanwhile).
    /// </summary>
    public (int Length, int References, CompressionAlgorithm Codec)? Describe(uint id, CompactStore store)
    {
        lock (StripeLock(id))
        {
            if (!IsLiveLocked(id)) return null;
            var blob = store.Get(HandleLocked(id));
            return (blob.Length, ReferencesLocked(id), EncodedPage.Algorithm(blob));
        }
    }

    /// <summary>Whether <paramref name="id"/> names a live blob (a guard before trusting an id read from an entry).</summary>
    public bool IsLiveLocked(uint id) => TryChunk(id, out int i) is { } c && c.Refs[i] != 0;

    /// <summary>The pages that name blob <paramref name="id"/> (slot <paramref name="i"/> of <paramref name="c"/>); under its stripe lock.</summary>
    private int References(uint id, Chunk c, int i)
    {
        ushort n = c.Refs[i];
        if (n != Wide) return n;
        return _wide.TryGet(id, out int wide) ? wide : throw new InvalidOperationException($"Shared blob {id}'s count is missing from its side table.");
    }

    /// <summary>Sets the count of blob <paramref name="id"/>; under its stripe lock.</summary>
    private void SetReferences(uint id, Chunk c, int i, int references)
    {
        if (references >= Wide)
        {
            _wide.Set(id, references);
            c.Refs[i] = Wide;
            return;
        }
        if (c.Refs[i] == Wide) _wide.Remove(id);
        c.Refs[i] = (ushort)references;
    }

    internal sealed class Chunk
    {
        /// <summary>Per slot, its store handle's low 32 and high 16 bits (a handle fits 48).</summary>
        private readonly uint[] _handlesLow = new uint[1 << ChunkShift];
        private readonly ushort[] _handlesHigh = new ushort[1 << ChunkShift];
        /// <summary>Per slot, the pages that name its blob (<see cref="Wide"/>: the count is in the side table).</summary>
        public readonly ushort[] Refs = new ushort[1 << ChunkShift];

        /// <summary>The slot's handle (read without the stripe lock, a torn value is only ever a hint).</summary>
        public ulong Handle(int i) => Volatile.Read(ref _handlesLow[i]) | ((ulong)Volatile.Read(ref _handlesHigh[i]) << 32);

        public void SetHandle(int i, ulong handle)
        {
            if (handle >> 48 != 0) throw new InvalidOperationException($"A store handle of 0x{handle:X} does not fit the shared blob table's 48 bits.");
            _handlesLow[i] = (uint)handle;
            _handlesHigh[i] = (ushort)(handle >> 32);
        }
    }
}
