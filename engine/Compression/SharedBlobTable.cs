using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Memory;
using DifferenceEngine.Store;

namespace DifferenceEngine.Compression;

/// <summary>
/// Compressed copies of shared frames. When every page that shares a frame is cold, the frame is compressed once
/// into one blob of the compact store and freed; each of those pages' entries then names the blob by a stable id in
/// this table (state Compressed with <c>PageEntry.SharedBlob</c> set), and the table keeps the blob's current store
/// handle (or, once the blob was grouped with other shared blobs, its page group and member: <see cref="SharedGrouping"/>)
/// and how many pages still name it.
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

    /// <summary>A chunk's four arrays' object headers and the chunk object's.</summary>
    private const int ChunkOverheadBytes = 4 * 24 + 16;

    /// <summary>Managed bytes of one chunk of slots: per slot its handle (6 bytes), count (2) and a bit (ungroupable).</summary>
    private const int ChunkBytes = (1 << ChunkShift) * (6 + sizeof(ushort)) + (1 << ChunkShift) / 8 + ChunkOverheadBytes;

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
            c.SetUngroupable(i, false);
        }
        Interlocked.Increment(ref _live);
    }

    /// <summary>Gives back an id that was reserved but never published.</summary>
    public void Abandon(uint id) => Recycle(id);

    /// <summary>The blob's store handle; the caller holds the id's stripe lock and has checked the blob is not grouped.</summary>
    public ulong HandleLocked(uint id)
    {
        var (c, i) = Slot(id);
        ulong handle = c.Handle(i);
        if (IsGroupRef(handle)) throw new InvalidOperationException($"Shared blob {id} lives in page group {GroupOf(handle)}, not in a blob of its own.");
        return handle;
    }

    // A slot whose blob was moved into a page group (SharedGrouping) keeps, instead of a store handle, the group's id and
    // the member's index with the generation bits 0, which no store handle has (a generation is never 0): 30 bits of id.
    private const int MemberShift = CompactStore.GenerationBits;
    private const int GroupShift = MemberShift + 5;

    /// <summary>Highest page group id a slot can name (30 bits).</summary>
    public const uint MaxGroupId = (1u << (48 - GroupShift)) - 1;

    private static bool IsGroupRef(ulong handle) => handle != 0 && (handle & CompactStore.MaxGeneration) == 0;
    private static uint GroupOf(ulong handle) => (uint)(handle >> GroupShift);
    private static int MemberOf(ulong handle) => (int)(handle >> MemberShift) & (PageGroupTable.MaxMembers - 1);

    /// <summary>
    /// Whether blob <paramref name="id"/> may still join a page group: not in one, and never found not to pay in one
    /// (<see cref="MarkUngroupableLocked"/>). Read without the stripe lock: only ever a hint.
    /// </summary>
    public bool IsGroupableHint(uint id) => TryChunk(id, out int i) is { } c && !IsGroupRef(c.Handle(i)) && !c.IsUngroupable(i);

    /// <summary>Whether live blob <paramref name="id"/> was found not to pay in a group; under the id's stripe lock.</summary>
    public bool IsUngroupableLocked(uint id)
    {
        var (c, i) = Slot(id);
        return c.IsUngroupable(i);
    }

    /// <summary>
    /// Marks live blob <paramref name="id"/> as not to be grouped again: a group of it with its neighbours came out no
    /// smaller than their blobs alone. Cleared when the id names another blob. Under the id's stripe lock.
    /// </summary>
    public void MarkUngroupableLocked(uint id)
    {
        var (c, i) = Slot(id);
        c.SetUngroupable(i, true);
    }

    /// <summary>Whether live blob <paramref name="id"/> is a member of a page group, and which; under the id's stripe lock.</summary>
    public bool TryGroupLocked(uint id, out uint group, out int member)
    {
        var (c, i) = Slot(id);
        ulong handle = c.Handle(i);
        group = IsGroupRef(handle) ? GroupOf(handle) : 0;
        member = IsGroupRef(handle) ? MemberOf(handle) : 0;
        return group != 0;
    }

    /// <summary>
    /// Names member <paramref name="member"/> of page group <paramref name="group"/> as where live blob
    /// <paramref name="id"/>'s bytes are (the caller then frees the blob's own handle); under the id's stripe lock.
    /// </summary>
    public void MoveToGroupLocked(uint id, uint group, int member)
    {
        if (group is 0 or > MaxGroupId) throw new ArgumentOutOfRangeException(nameof(group));
        if ((uint)member >= PageGroupTable.MaxMembers) throw new ArgumentOutOfRangeException(nameof(member));
        var (c, i) = Slot(id);
        if (c.Refs[i] == 0) throw new InvalidOperationException($"Shared blob {id} is not live.");
        c.SetHandle(i, ((ulong)group << GroupShift) | ((ulong)(uint)member << MemberShift));
    }

    /// <summary>Gives live blob <paramref name="id"/>, a group's member until now, a store blob of its own again; under the id's stripe lock.</summary>
    public void MoveOutOfGroupLocked(uint id, ulong handle)
    {
        if (handle == 0 || IsGroupRef(handle)) throw new ArgumentOutOfRangeException(nameof(handle));
        var (c, i) = Slot(id);
        if (c.Refs[i] == 0 || !IsGroupRef(c.Handle(i))) throw new InvalidOperationException($"Shared blob {id} is not a group's member.");
        c.SetHandle(i, handle);
    }

    /// <summary>Pages that still name the blob; the caller holds the id's stripe lock.</summary>
    public int ReferencesLocked(uint id)
    {
        var (c, i) = Slot(id);
        return References(id, c, i);
    }

    /// <summary>
    /// Drops one page's reference; with the last, frees the blob (or leaves its page group: <paramref name="groups"/>,
    /// whose stripe lock is taken after the id's, and the swap file its stream may be in) and recycles the id. The caller
    /// holds the id's stripe lock (and so may have just read the blob).
    /// </summary>
    public void ReleaseLocked(uint id, CompactStore store, PageGroupTable? groups = null, Paging.SwapSpace? swap = null)
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
        ulong handle = c.Handle(i);
        if (IsGroupRef(handle))
        {
            if (groups is null) throw new InvalidOperationException($"Shared blob {id} lives in page group {GroupOf(handle)}: its release needs the group table.");
            lock (groups.StripeLock(GroupOf(handle)))
                if (groups.IsMemberLocked(GroupOf(handle), MemberOf(handle))) groups.LeaveLocked(GroupOf(handle), MemberOf(handle), store, swap);
        }
        else store.Free(handle);
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
            // A blob kept in a page group has no handle of its own: the group's pieces move with the groups' walk.
            if (TryChunk(id, out int i) is not { } c || IsGroupRef(c.Handle(i)) || !mover.Wants(c.Handle(i))) continue;
            lock (StripeLock(id))
            {
                if (c.Refs[i] == 0 || IsGroupRef(c.Handle(i))) continue;
                c.SetHandle(i, mover.Move(c.Handle(i)));
            }
        }
    }

    /// <summary>
    /// What stats and page snapshots show of a live blob: its stored length, how many pages name it, its codec, and the
    /// page group it is kept in, if any (then its length is its equal share of the group's stream among the group's live
    /// members, 0 while the stream is in the swap file); null when <paramref name="id"/> names none. Takes the id's
    /// stripe lock (the blob cannot move meanwhile), then the group's.
    /// </summary>
    public SharedBlobInfo? Describe(uint id, CompactStore store, PageGroupTable groups)
    {
        lock (StripeLock(id))
        {
            if (!IsLiveLocked(id)) return null;
            if (TryGroupLocked(id, out uint group, out int member))
            {
                if (groups.Describe(group) is not { } r) return null;
                return new SharedBlobInfo((double)r.MemoryBytes / Math.Max(1, r.LiveCount), ReferencesLocked(id), r.Codec, group, member);
            }
            var blob = store.Get(HandleLocked(id));
            return new SharedBlobInfo(blob.Length, ReferencesLocked(id), EncodedPage.Algorithm(blob), null, null);
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
        /// <summary>Per slot, a bit: its blob is not to be grouped (changed under the stripe lock, read as a hint without).</summary>
        private readonly ulong[] _ungroupable = new ulong[(1 << ChunkShift) / 64];

        public bool IsUngroupable(int i) => (Volatile.Read(ref _ungroupable[i >> 6]) & (1UL << (i & 63))) != 0;

        public void SetUngroupable(int i, bool on)
        {
            ref ulong word = ref _ungroupable[i >> 6];
            // Other slots of the word change under other stripe locks: one atomic update.
            if (on) Interlocked.Or(ref word, 1UL << (i & 63));
            else Interlocked.And(ref word, ~(1UL << (i & 63)));
        }

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

/// <summary>
/// A shared blob as stats and page snapshots show it (<see cref="SharedBlobTable.Describe"/>): the bytes it takes (its
/// share of its page group's stream when it is kept in one), the pages and patches that name it, its codec, and its group.
/// </summary>
internal readonly record struct SharedBlobInfo(double Length, int References, CompressionAlgorithm Codec, uint? Group, int? GroupMember);
