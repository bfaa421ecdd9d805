using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
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
/// the one handle here (<see cref="Relocate"/>). The blob's store owner is <see cref="OwnerTag"/> | id.</para>
/// <para>Threading: an id's handle and reference count change, and its blob is read or freed, only under the id's
/// stripe lock (<see cref="StripeLock"/>): so a read never races the blob's move or free. Ids are allocated and
/// recycled under a table-wide gate, taken after a stripe lock and never before one. Chunks of slots never move
/// once allocated, so a slot is read without the gate.</para>
/// <para>Metadata: 12 bytes a slot (handle and count) plus 4 for a recycled id.</para>
/// </remarks>
internal sealed class SharedBlobTable
{
    /// <summary>The store owner of a shared blob is this bit with its id; a page's owner (domain id &lt;&lt; 40 | gfn) never has it.</summary>
    public const ulong OwnerTag = 1UL << 63;

    private const int ChunkShift = 12;
    private const int ChunkSize = 1 << ChunkShift;
    private const int StripeCount = 64;

    private readonly object[] _stripes;
    private readonly Lock _gate = new();
    private Chunk?[] _chunks = new Chunk?[4];
    private uint[] _freeIds = new uint[16];
    private int _freeCount;
    private uint _nextId = 1; // 0 is never an id
    private long _live;

    public SharedBlobTable()
    {
        _stripes = new object[StripeCount];
        for (int i = 0; i < StripeCount; i++) _stripes[i] = new object();
    }

    /// <summary>Shared blobs that pages still name.</summary>
    public long Count => Interlocked.Read(ref _live);

    public long MetadataBytes
    {
        get
        {
            lock (_gate)
            {
                long chunks = 0;
                foreach (var c in _chunks) if (c is not null) chunks++;
                return chunks * ChunkSize * (sizeof(ulong) + sizeof(int)) + (long)_freeIds.Length * sizeof(uint)
                       + (long)_chunks.Length * IntPtr.Size;
            }
        }
    }

    public object StripeLock(uint id) => _stripes[id & (StripeCount - 1)];

    public static bool IsSharedOwner(ulong owner) => (owner & OwnerTag) != 0;

    public static uint IdOfOwner(ulong owner) => (uint)(owner & ~OwnerTag);

    /// <summary>A new id with no blob and no reference yet; <see cref="Publish"/> gives it both, <see cref="Abandon"/> gives it back.</summary>
    public uint Reserve()
    {
        lock (_gate)
        {
            uint id;
            if (_freeCount > 0) id = _freeIds[--_freeCount];
            else
            {
                if (_nextId == uint.MaxValue) throw new InvalidOperationException("Shared blob ids exhausted.");
                id = _nextId++;
            }
            int chunk = (int)(id >> ChunkShift);
            if (chunk >= _chunks.Length)
            {
                var grown = new Chunk?[Math.Max(_chunks.Length * 2, chunk + 1)];
                Array.Copy(_chunks, grown, _chunks.Length);
                Volatile.Write(ref _chunks, grown);
            }
            _chunks[chunk] ??= new Chunk();
            return id;
        }
    }

    /// <summary>Gives a reserved id its blob and the number of pages that name it.</summary>
    public void Publish(uint id, ulong handle, int references)
    {
        if (references < 1) throw new ArgumentOutOfRangeException(nameof(references));
        lock (StripeLock(id))
        {
            var c = ChunkOf(id);
            c.Handles[id & (ChunkSize - 1)] = handle;
            c.Refs[id & (ChunkSize - 1)] = references;
        }
        Interlocked.Increment(ref _live);
    }

    /// <summary>Gives back an id that was reserved but never published.</summary>
    public void Abandon(uint id) => Recycle(id);

    /// <summary>The blob's handle; the caller holds the id's stripe lock.</summary>
    public ulong HandleLocked(uint id) => ChunkOf(id).Handles[id & (ChunkSize - 1)];

    /// <summary>Pages that still name the blob; the caller holds the id's stripe lock.</summary>
    public int ReferencesLocked(uint id) => ChunkOf(id).Refs[id & (ChunkSize - 1)];

    /// <summary>
    /// Drops one page's reference; with the last, frees the blob and recycles the id. The caller holds the id's
    /// stripe lock (and so may have just read the blob).
    /// </summary>
    public void ReleaseLocked(uint id, CompactStore store)
    {
        var c = ChunkOf(id);
        int i = (int)(id & (ChunkSize - 1));
        if (c.Refs[i] <= 0) throw new InvalidOperationException($"Shared blob {id} released with reference count {c.Refs[i]}.");
        if (c.Refs[i] > 1)
        {
            c.Refs[i]--;
            return;
        }
        // The last name: the blob goes first, so a store that refuses the handle leaves the reference as it was.
        store.Free(c.Handles[i]);
        c.Refs[i] = 0;
        c.Handles[i] = 0;
        Interlocked.Decrement(ref _live);
        Recycle(id);
    }

    /// <summary>Store compaction moved the blob of <paramref name="id"/>: true when the table named the old handle and now names the new.</summary>
    public bool Relocate(uint id, ulong oldHandle, ulong newHandle)
    {
        if (id == 0) return false;
        var chunks = Volatile.Read(ref _chunks);
        if ((id >> ChunkShift) >= (uint)chunks.Length || chunks[id >> ChunkShift] is not { } c) return false;
        lock (StripeLock(id))
        {
            int i = (int)(id & (ChunkSize - 1));
            if (c.Refs[i] <= 0 || c.Handles[i] != oldHandle) return false;
            c.Handles[i] = newHandle;
            return true;
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
    public bool IsLiveLocked(uint id)
    {
        var chunks = Volatile.Read(ref _chunks);
        return id != 0 && (id >> ChunkShift) < (uint)chunks.Length && chunks[id >> ChunkShift] is { } c
               && c.Refs[id & (ChunkSize - 1)] > 0;
    }

    private Chunk ChunkOf(uint id) =>
        Volatile.Read(ref _chunks)[id >> ChunkShift] ?? throw new InvalidOperationException($"Shared blob id {id} was never reserved.");

    private void Recycle(uint id)
    {
        lock (_gate)
        {
            if (_freeCount == _freeIds.Length) Array.Resize(ref _freeIds, _freeIds.Length * 2);
            _freeIds[_freeCount++] = id;
        }
    }

    private sealed class Chunk
    {
        public readonly ulong[] Handles = new ulong[ChunkSize];
        public readonly int[] Refs = new int[ChunkSize];
    }
}
