using DifferenceEngine.Codecs;
using DifferenceEngine.Memory;
using DifferenceEngine.Paging;
using DifferenceEngine.Store;

namespace DifferenceEngine.Compression;

/// <summary>
/// Page groups: long-cold compressed pages of one domain compressed together into one stream (docs/ARCHITECTURE.md,
/// "Page groups"), or shared blobs compressed together (domain <see cref="GroupCompression.SharedBlobsDomain"/>, each
/// member a blob whose slot names the group: <see cref="SharedGrouping"/>). Each member's entry names its group by a stable id and its member index (state Compressed, see
/// <c>PageEntry.IsGrouped</c>); this table keeps, per id, the store handles of the stream's pieces (the stream is cut into
/// pieces of at most 4096 bytes, the store's largest blob), the stream's length and checksum, which members still live
/// in it, and what their single-page blobs took before they were grouped.
/// </summary>
/// <remarks>
/// <para>Threading: a group's record changes, and its pieces are read or freed, only under the id's stripe lock
/// (<see cref="IdSlotTable{TChunk}.StripeLock"/>); ids are reserved and recycled under a table-wide gate, taken after a stripe lock and never
/// before one. A page's lock is always taken before a stripe lock, never after. Chunks of records never move once
/// allocated, so records are indexed without the gate.</para>
/// <para>Metadata: <see cref="RecordBytes"/> a group (the piece handles dominate), in chunks of 128, plus 4 bytes for a
/// recycled id; groups that need re-packing wait in a list of ids.</para>
/// </remarks>
internal sealed class PageGroupTable() : IdSlotTable<PageGroupTable.Chunk>(ChunkShift, int.MaxValue, static () => new Chunk())
{
    private static long s_tables;

    /// <summary>A number no other table of this process has: what a thread's decoded group names its table by (a
    /// reference would keep a removed host's table alive).</summary>
    public long Serial { get; } = Interlocked.Increment(ref s_tables);

    /// <summary>Most members a group holds (its live members are a 32-bit mask).</summary>
    public const int MaxMembers = 32;

    /// <summary>Most pieces a group's stream is cut into: so a stream is at most 4 x 4096 = 16 KiB.</summary>
    public const int MaxPieces = 4;

    /// <summary>Longest stream a group may have.</summary>
    public const int MaxStreamBytes = MaxPieces * CompactStore.MaxBlobLength;

    /// <summary>
    /// Pieces a record holds itself; a third and a fourth live in side tables. A group of four at the default threshold
    /// (single blobs of at most 3,072 bytes, a stream smaller than their sum) never has more than three, and on real
    /// memory one group in eight to ten has three (session 24: 931 of 9,315 on the guest images, 1,319 of 11,361 on the
    /// program snapshots), so a third piece inline cost more than a side table entry for the groups that have one.
    /// </summary>
    public const int InlinePieces = 2;

    /// <summary>
    /// Managed bytes one group's record takes: two piece handles of 6 bytes (a store handle fits 48 bits, a swap slot 32),
    /// the stream's 32-bit checksum, the live-member mask, the stream's and the singles' lengths, the domain in 2 bytes
    /// (<see cref="WideDomain"/>), and the member count, piece count, codec and two flags in 2 bytes (57 bytes until
    /// session 21, then 46 with four pieces inline, 40 with three and a 64-bit checksum, 30 with two; 28 since session 26).
    /// </summary>
    public const int RecordBytes = InlinePieces * 6 + sizeof(uint) + sizeof(uint) + 4 * sizeof(ushort);

    /// <summary>
    /// A record's domain of this value: the domain's id is in a side table. Domain ids are never reused, so a host that
    /// has loaded 65,535 domains over its life has larger ones (session 26: 2 bytes a record less, 24 KB of the program
    /// snapshots' metadata, for ids no host on Compare's inputs comes near).
    /// </summary>
    internal const ushort WideDomain = ushort.MaxValue;

    // Pieces past the inline ones (the third, the fourth), by group id; changed under the id's stripe lock.
    private readonly SideTable<ulong>[] _beyond = [new(), new()];

    // Domain ids of WideDomain and up, by group id; changed under the id's stripe lock.
    private readonly SideTable<int> _wideDomains = new();

    /// <summary>
    /// 128 records a chunk (4 KiB): a small host holds a few hundred groups, and a chunk of 1,024 (57 KiB) was 3% of one
    /// of 2 MiB; the chunk table grows by one pointer per 512 grouped pages.
    /// </summary>
    private const int ChunkShift = 7;

    /// <summary>A chunk's arrays' object headers (8 arrays) and the chunk object's.</summary>
    private const int ChunkOverheadBytes = 8 * 24 + 16;

    /// <summary>Records a chunk holds.</summary>
    public const int RecordsPerChunk = 1 << ChunkShift;

    /// <summary>Managed bytes of one chunk of records.</summary>
    public const int ChunkBytes = RecordsPerChunk * RecordBytes + ChunkOverheadBytes;

    /// <summary>Length of the two lists of groups waiting to be re-packed when nothing has grown them.</summary>
    private const int InitialDirty = 16;
    private long _live;
    private long _members;
    private readonly Lock _dirtyGate = new();
    private uint[] _dirty = new uint[InitialDirty];
    private uint[] _dirtySpare = new uint[InitialDirty];
    private int _dirtyCount;

    /// <summary>Groups that still hold a live member (groups of pages and groups of shared blobs).</summary>
    public long Count => Interlocked.Read(ref _live);

    /// <summary>Of <see cref="Count"/>, the groups of shared blobs (<see cref="SharedGrouping"/>).</summary>
    public long SharedCount => Interlocked.Read(ref _shared);

    private long _shared;

    /// <summary>Pages that live in a group.</summary>
    public long Members => Interlocked.Read(ref _members);

    /// <summary>Live groups whose stream is in the swap file, not the store.</summary>
    public long InSwap => Interlocked.Read(ref _inSwap);

    /// <summary>Swap slots the streams of the groups in <see cref="InSwap"/> take (a stream's pieces, a slot each).</summary>
    public long SlotsInSwap => Interlocked.Read(ref _slotsInSwap);
    private long _slotsInSwap;

    private long _inSwap;

    /// <summary>The highest id handed out so far (ids run from 1): the range a hand over the groups goes round.</summary>
    public uint HighestId => HighestReserved;

    public long MetadataBytes
    {
        get
        {
            long bytes = IdMetadataBytes(ChunkBytes);
            lock (_dirtyGate) bytes += (long)(_dirty.Length + _dirtySpare.Length) * sizeof(uint);
            foreach (var side in _beyond) bytes += side.MetadataBytes;
            return bytes + _wideDomains.MetadataBytes;
        }
    }

    /// <summary>The table's <see cref="MetadataBytes"/> when it holds <paramref name="groups"/> groups (ids never recycled; nothing dirty).</summary>
    public static long MetadataBytesFor(long groups) =>
        IdMetadataBytesFor(groups, ChunkShift, ChunkBytes) + 2 * InitialDirty * sizeof(uint);

    /// <summary>Gives back an id that was reserved but never published.</summary>
    public void Abandon(uint id) => Recycle(id);

    /// <summary>Makes an id reserved with <see cref="IdSlotTable{TChunk}.Reserve"/> a live group of <paramref name="members"/> pages whose stream is in <paramref name="pieces"/>.</summary>
    public void Publish(uint id, int domainId, CompressionAlgorithm codec, int members, ReadOnlySpan<ulong> pieces,
        int length, uint streamHash, int singlesBytes)
    {
        if (members is < 1 or > MaxMembers) throw new ArgumentOutOfRangeException(nameof(members));
        if (pieces.Length is < 1 or > MaxPieces) throw new ArgumentOutOfRangeException(nameof(pieces));
        lock (StripeLock(id))
        {
            var (c, i) = Slot(id);
            for (int p = 0; p < pieces.Length; p++) SetPiece(id, c, i, p, pieces[p]);
            c.SetShape(i, members, pieces.Length, codec);
            c.Live[i] = members == 32 ? uint.MaxValue : (1u << members) - 1;
            c.Length[i] = (ushort)length;
            c.Hash[i] = streamHash;
            c.Singles[i] = (ushort)Math.Min(singlesBytes, ushort.MaxValue);
            if ((uint)domainId < WideDomain) c.Domain[i] = (ushort)domainId;
            else
            {
                c.Domain[i] = WideDomain;
                _wideDomains.Set(id, domainId);
            }
        }
        Interlocked.Increment(ref _live);
        Interlocked.Add(ref _members, members);
        if (domainId == GroupCompression.SharedBlobsDomain) Interlocked.Increment(ref _shared);
    }

    /// <summary>Whether <paramref name="id"/> names a live group; under the stripe lock.</summary>
    public bool IsLiveLocked(uint id) => TryChunk(id, out int i) is { } c && c.Live[i] != 0;

    /// <summary>Whether <paramref name="id"/> is a live group in which <paramref name="member"/> still lives; under the stripe lock.</summary>
    public bool IsMemberLocked(uint id, int member) =>
        TryChunk(id, out int i) is { } c && (uint)member < MaxMembers && (c.Live[i] & (1u << member)) != 0;

    /// <summary>What a live group is; the caller holds the stripe lock and has checked it is live.</summary>
    public GroupRecord RecordLocked(uint id)
    {
        var (c, i) = Slot(id);
        return new GroupRecord(DomainOf(id, c, i), c.Codec(i), c.Count(i), c.Live[i], c.Length[i], c.Hash[i],
            c.Singles[i], c.PieceCount(i), c.Swapped(i));
    }

    /// <summary>Record <paramref name="i"/>'s domain id (group <paramref name="id"/>); under the stripe lock.</summary>
    private int DomainOf(uint id, Chunk c, int i) =>
        c.Domain[i] != WideDomain ? c.Domain[i]
        : _wideDomains.TryGet(id, out int domainId) ? domainId
        : throw new InvalidOperationException($"Page group {id}'s domain is missing from its side table.");

    /// <summary>The store handle of one piece of a live group's stream; under the stripe lock.</summary>
    public ulong PieceLocked(uint id, int piece)
    {
        var (c, i) = Slot(id);
        if ((uint)piece >= c.PieceCount(i)) throw new ArgumentOutOfRangeException(nameof(piece));
        return Piece(id, c, i, piece);
    }

    /// <summary>A live group's record, read under its stripe lock; null when <paramref name="id"/> names none.</summary>
    public GroupRecord? Describe(uint id)
    {
        lock (StripeLock(id)) return IsLiveLocked(id) ? RecordLocked(id) : null;
    }

    /// <summary>
    /// Copies a live group's stream out of its pieces (in the store, or in the swap file: one slot a piece, read into
    /// <paramref name="bounce"/>, a page-aligned page) into <paramref name="destination"/>; under the stripe lock.
    /// A slot that does not match the checksum it was written with throws InvalidDataException; a failed read IOException.
    /// </summary>
    public int ReadStreamLocked(uint id, CompactStore store, SwapSpace? swap, Span<byte> destination, Span<byte> bounce)
    {
        var (c, i) = Slot(id);
        int at = 0;
        for (int p = 0; p < c.PieceCount(i); p++)
        {
            if (!c.Swapped(i))
            {
                var piece = store.Get(Piece(id, c, i, p));
                piece.CopyTo(destination[at..]);
                at += piece.Length;
                continue;
            }
            uint slot = (uint)Piece(id, c, i, p);
            if (swap is null || !swap.TryRead(slot, bounce))
                throw new InvalidDataException($"swap slot {slot} (piece {p} of page group {id}) does not match its checksum");
            int n = Math.Min(CompactStore.MaxBlobLength, c.Length[i] - at);
            bounce[..n].CopyTo(destination[at..]);
            at += n;
        }
        bounce.Clear();
        return at;
    }

    /// <summary>Whether group <paramref name="id"/>'s stream is in the swap file: a hint, read without the stripe lock.</summary>
    public bool IsInSwap(uint id)
    {
        var (c, i) = Slot(id);
        return c.Swapped(i);
    }

    /// <summary>The store handles of a live group's pieces, if its stream is in the store; under the stripe lock.</summary>
    public int PiecesInStoreLocked(uint id, Span<ulong> handles)
    {
        var (c, i) = Slot(id);
        if (c.Live[i] == 0 || c.Swapped(i)) return 0;
        for (int p = 0; p < c.PieceCount(i); p++) handles[p] = Piece(id, c, i, p);
        return c.PieceCount(i);
    }

    /// <summary>
    /// After the pieces were written to <paramref name="slots"/> and flushed: when the group still has exactly the pieces
    /// <paramref name="handles"/> in the store, and they still hold the bytes written (<paramref name="written"/>, each
    /// piece's XxHash3), frees them and keeps the slots instead (true); otherwise changes nothing (false: the caller
    /// releases the slots). Under the stripe lock. The bytes are compared, not only the id and handles: while the write
    /// was flushed the group could end, its id be reused, and a handle of the same slab come round again (13 bits of
    /// generation), naming a new group's stream that the slots do not hold.
    /// </summary>
    public bool MoveToSwapLocked(uint id, ReadOnlySpan<ulong> handles, ReadOnlySpan<uint> slots, ReadOnlySpan<ulong> written,
        CompactStore store)
    {
        var (c, i) = Slot(id);
        if (c.Live[i] == 0 || c.Swapped(i) || c.PieceCount(i) != handles.Length) return false;
        for (int p = 0; p < handles.Length; p++)
            if (Piece(id, c, i, p) != handles[p] || System.IO.Hashing.XxHash3.HashToUInt64(store.Get(handles[p])) != written[p]) return false;
        for (int p = 0; p < handles.Length; p++)
        {
            store.Free(handles[p]);
            SetPiece(id, c, i, p, slots[p]);
        }
        c.SetSwapped(i, true);
        Interlocked.Increment(ref _inSwap);
        Interlocked.Add(ref _slotsInSwap, handles.Length);
        return true;
    }

    /// <summary>
    /// Member <paramref name="member"/> leaves the group (its page got its bytes elsewhere). With the last member, the
    /// pieces are freed and the id recycled; otherwise the group is listed for the next pass to judge whether to re-pack it.
    /// Under the stripe lock.
    /// </summary>
    public void LeaveLocked(uint id, int member, CompactStore store, SwapSpace? swap)
    {
        var (c, i) = Slot(id);
        uint bit = 1u << member;
        if ((c.Live[i] & bit) == 0) throw new InvalidOperationException($"Member {member} of page group {id} left twice.");
        c.Live[i] &= ~bit;
        Interlocked.Decrement(ref _members);
        if (c.Live[i] != 0)
        {
            RelistLocked(id);
            return;
        }
        bool swapped = c.Swapped(i);
        if (swapped) Interlocked.Add(ref _slotsInSwap, -c.PieceCount(i));
        for (int p = 0; p < c.PieceCount(i); p++)
        {
            if (!swapped) store.Free(Piece(id, c, i, p));
            else swap?.Release((uint)Piece(id, c, i, p));
            SetPiece(id, c, i, p, 0);
        }
        if (swapped) Interlocked.Decrement(ref _inSwap);
        if (c.Domain[i] == GroupCompression.SharedBlobsDomain) Interlocked.Decrement(ref _shared);
        if (c.Domain[i] == WideDomain) _wideDomains.Remove(id);
        c.Domain[i] = 0;
        bool dirty = c.Dirty(i);
        c.SetShape(i, 0, 0, default);
        c.SetDirty(i, dirty); // a listed id is recycled when the list is taken (TakeDirty)
        c.Length[i] = 0;
        Interlocked.Decrement(ref _live);
        if (!dirty) Recycle(id); // a listed id is recycled when the list is taken (TakeDirty)
    }

    /// <summary>
    /// Lists a live group for the next pass to judge (a member left, or a dissolve could move none of its members), once
    /// until the list is taken; under the stripe lock.
    /// </summary>
    public void RelistLocked(uint id)
    {
        var (c, i) = Slot(id);
        if (c.Live[i] == 0 || c.Dirty(i)) return;
        c.SetDirty(i, true);
        lock (_dirtyGate)
        {
            if (_dirtyCount == _dirty.Length) Array.Resize(ref _dirty, _dirty.Length * 2);
            _dirty[_dirtyCount++] = id;
        }
    }

    /// <summary>
    /// The groups that lost a member since the last call, to judge whether to re-pack them; ids of groups that died
    /// meanwhile are recycled here and not returned. Only one caller at a time (the pass).
    /// </summary>
    public int TakeDirty(List<uint> into)
    {
        uint[] ids;
        int n;
        lock (_dirtyGate)
        {
            // Two lists in turn: steady passes allocate nothing.
            n = _dirtyCount;
            ids = _dirty;
            _dirty = _dirtySpare.Length >= InitialDirty ? _dirtySpare : new uint[InitialDirty];
            _dirtySpare = ids;
            _dirtyCount = 0;
        }
        for (int k = 0; k < n; k++)
        {
            uint id = ids[k];
            lock (StripeLock(id))
            {
                var (c, i) = Slot(id);
                c.SetDirty(i, false);
                if (c.Live[i] != 0)
                {
                    into.Add(id);
                    continue;
                }
            }
            Recycle(id);
        }
        return n;
    }

    /// <summary>
    /// A store compaction's walk over the groups (<see cref="Store.BlobWalk"/>): each live group's pieces in the store,
    /// handed to the mover under the group's stripe lock, and the handles it returns kept.
    /// </summary>
    public void MoveBlobs(Store.BlobMover mover)
    {
        uint highest = HighestId;
        for (uint id = 1; id <= highest && id != 0; id++)
        {
            if (TryChunk(id, out int i) is not { } c) continue;
            // Read without the lock first, a hint: most groups hold nothing the compaction moves.
            bool wanted = false;
            for (int p = 0; p < InlinePieces && !wanted; p++) wanted = mover.Wants(c.Piece(i, p));
            foreach (var side in _beyond) wanted |= side.TryGet(id, out ulong beyond) && mover.Wants(beyond);
            if (!wanted) continue;
            lock (StripeLock(id))
            {
                if (c.Live[i] == 0 || c.Swapped(i)) continue;
                for (int p = 0; p < c.PieceCount(i); p++)
                {
                    ulong piece = Piece(id, c, i, p);
                    if (mover.Wants(piece)) SetPiece(id, c, i, p, mover.Move(piece));
                }
            }
        }
    }

    /// <summary>Piece <paramref name="p"/> of group <paramref name="id"/> (record <paramref name="i"/> of chunk <paramref name="c"/>): a store handle or a swap slot; 0 for none.</summary>
    private ulong Piece(uint id, Chunk c, int i, int p)
    {
        if (p < InlinePieces) return c.Piece(i, p);
        return _beyond[p - InlinePieces].TryGet(id, out ulong h) ? h : 0;
    }

    private void SetPiece(uint id, Chunk c, int i, int p, ulong handle)
    {
        if (p < InlinePieces)
        {
            c.SetPiece(i, p, handle);
            return;
        }
        var side = _beyond[p - InlinePieces];
        if (handle == 0) side.Remove(id);
        else side.Set(id, handle);
    }

    internal sealed class Chunk
    {
        // Flags: member count (bits 0-5), piece count (6-8), codec (9-12), listed dirty (13), stream in swap (14).
        private const int PiecesShift = 6, CodecShift = 9;
        private const ushort DirtyBit = 1 << 13, SwappedBit = 1 << 14;

        /// <summary>Per piece, its handle's low 32 bits (a swap slot whole) and its high 16 bits.</summary>
        private readonly uint[] _piecesLow = new uint[(1 << ChunkShift) * InlinePieces];
        private readonly ushort[] _piecesHigh = new ushort[(1 << ChunkShift) * InlinePieces];
        public readonly uint[] Hash = new uint[1 << ChunkShift];
        public readonly uint[] Live = new uint[1 << ChunkShift];
        public readonly ushort[] Length = new ushort[1 << ChunkShift];
        public readonly ushort[] Singles = new ushort[1 << ChunkShift];
        /// <summary>Per record, its domain's id (<see cref="WideDomain"/>: the id is in the side table).</summary>
        public readonly ushort[] Domain = new ushort[1 << ChunkShift];
        private readonly ushort[] _flags = new ushort[1 << ChunkShift];

        /// <summary>Piece <paramref name="p"/> of record <paramref name="i"/>: a store handle, or a swap slot.</summary>
        public ulong Piece(int i, int p) =>
            Volatile.Read(ref _piecesLow[i * InlinePieces + p]) | ((ulong)Volatile.Read(ref _piecesHigh[i * InlinePieces + p]) << 32);

        public void SetPiece(int i, int p, ulong handle)
        {
            if (handle >> 48 != 0) throw new InvalidOperationException($"A piece handle of 0x{handle:X} does not fit the group record's 48 bits.");
            _piecesLow[i * InlinePieces + p] = (uint)handle;
            _piecesHigh[i * InlinePieces + p] = (ushort)(handle >> 32);
        }

        public int Count(int i) => _flags[i] & 0x3F;
        public int PieceCount(int i) => (_flags[i] >> PiecesShift) & 0x7;
        public CompressionAlgorithm Codec(int i) => (CompressionAlgorithm)((_flags[i] >> CodecShift) & 0xF);
        public bool Dirty(int i) => (_flags[i] & DirtyBit) != 0;
        public bool Swapped(int i) => (_flags[i] & SwappedBit) != 0;

        /// <summary>Sets member count, piece count and codec, and clears both flags.</summary>
        public void SetShape(int i, int members, int pieces, CompressionAlgorithm codec) =>
            _flags[i] = (ushort)(members | (pieces << PiecesShift) | ((int)codec << CodecShift));

        public void SetDirty(int i, bool on) => _flags[i] = (ushort)(on ? _flags[i] | DirtyBit : _flags[i] & ~DirtyBit);
        public void SetSwapped(int i, bool on) => _flags[i] = (ushort)(on ? _flags[i] | SwappedBit : _flags[i] & ~SwappedBit);
    }
}

/// <summary>A live group as its record has it.</summary>
internal readonly record struct GroupRecord(int DomainId, CompressionAlgorithm Codec, int Count, uint Live, int Length,
    uint StreamHash, int SinglesBytes, int Pieces, bool InSwap)
{
    /// <summary>Bytes the group holds in memory: its stream, unless the stream is in the swap file.</summary>
    public int MemoryBytes => InSwap ? 0 : Length;

    public int LiveCount => System.Numerics.BitOperations.PopCount(Live);

    /// <summary>
    /// Whether the group now holds more than its live members took as single pages (estimated as their share of what all
    /// members took when grouped): then it pins memory single-page compression would have freed, and is re-packed.
    /// </summary>
    public bool PinsMemory => !InSwap && (long)Length * Count > (long)SinglesBytes * LiveCount;
}
