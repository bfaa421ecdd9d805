namespace DifferenceEngine.Compression;

/// <summary>
/// Stable ids for records kept in chunks that never move once allocated (shared blobs, page groups): ids are reserved and
/// recycled under a table-wide gate, a record changes only under its id's stripe lock, and readers index the chunks
/// without the gate.
/// </summary>
/// <remarks>The gate is taken after a stripe lock and never before one. Id 0 is never handed out.</remarks>
internal abstract class IdSlotTable<TChunk> where TChunk : class
{
    private const int StripeCount = 64;

    private readonly object[] _stripes;
    private readonly Lock _gate = new();
    private readonly int _chunkShift;
    private readonly uint _maxId;
    private readonly Func<TChunk> _newChunk;
    private const int InitialChunks = 4;
    private const int InitialFreeIds = 16;
    private TChunk?[] _chunks = new TChunk?[InitialChunks];
    private uint[] _freeIds = new uint[InitialFreeIds];
    private int _freeCount;
    private uint _nextId = 1;
    // Ids given back while held (HoldRecycled): reused only once ReleaseHeld puts them back.
    private uint[] _heldIds = [];
    private int _heldCount;
    private bool _holding;

    protected IdSlotTable(int chunkShift, uint maxId, Func<TChunk> newChunk)
    {
        _chunkShift = chunkShift;
        _maxId = maxId;
        _newChunk = newChunk;
        _stripes = new object[StripeCount];
        for (int i = 0; i < StripeCount; i++) _stripes[i] = new object();
    }

    /// <summary>The highest id reserved so far (0 before the first).</summary>
    protected uint HighestReserved
    {
        get
        {
            lock (_gate) return _nextId - 1;
        }
    }

    /// <summary>Records per chunk.</summary>
    protected int ChunkSize => 1 << _chunkShift;

    public object StripeLock(uint id) => _stripes[id & (StripeCount - 1)];

    /// <summary>A new id whose record the caller fills; given back with <see cref="Recycle"/>.</summary>
    public uint Reserve()
    {
        lock (_gate)
        {
            uint id;
            if (_freeCount > 0) id = _freeIds[--_freeCount];
            else
            {
                if (_nextId >= _maxId) throw new InvalidOperationException($"{GetType().Name}: ids exhausted.");
                id = _nextId++;
            }
            int chunk = (int)(id >> _chunkShift);
            if (chunk >= _chunks.Length)
            {
                var grown = new TChunk?[Math.Max(_chunks.Length * 2, chunk + 1)];
                Array.Copy(_chunks, grown, _chunks.Length);
                Volatile.Write(ref _chunks, grown);
            }
            _chunks[chunk] ??= _newChunk();
            return id;
        }
    }

    /// <summary>Gives an id back for reuse (after <see cref="ReleaseHeld"/> when ids are held).</summary>
    protected void Recycle(uint id)
    {
        lock (_gate)
        {
            if (_holding)
            {
                if (_heldCount == _heldIds.Length) Array.Resize(ref _heldIds, Math.Max(InitialFreeIds, _heldIds.Length * 2));
                _heldIds[_heldCount++] = id;
                return;
            }
            if (_freeCount == _freeIds.Length) Array.Resize(ref _freeIds, _freeIds.Length * 2);
            _freeIds[_freeCount++] = id;
        }
    }

    /// <summary>
    /// From now until <see cref="ReleaseHeld"/>, an id given back is not handed out again: so an id a caller read before
    /// (a pass's nomination of a shared blob, say) cannot come to name another record meanwhile.
    /// </summary>
    public void HoldRecycled()
    {
        lock (_gate) _holding = true;
    }

    /// <summary>Makes the ids given back since <see cref="HoldRecycled"/> reusable again.</summary>
    public void ReleaseHeld()
    {
        lock (_gate)
        {
            _holding = false;
            for (int i = 0; i < _heldCount; i++)
            {
                if (_freeCount == _freeIds.Length) Array.Resize(ref _freeIds, _freeIds.Length * 2);
                _freeIds[_freeCount++] = _heldIds[i];
            }
            _heldCount = 0;
            if (_heldIds.Length > 4 * InitialFreeIds) _heldIds = []; // a burst's room is not kept
        }
    }

    /// <summary>The chunk holding <paramref name="id"/> and its index there; null when the id was never reserved.</summary>
    protected TChunk? TryChunk(uint id, out int index)
    {
        index = (int)(id & (uint)(ChunkSize - 1));
        var chunks = Volatile.Read(ref _chunks);
        return id != 0 && (id >> _chunkShift) < (uint)chunks.Length ? chunks[id >> _chunkShift] : null;
    }

    protected (TChunk Chunk, int Index) Slot(uint id) =>
        (TryChunk(id, out int index) ?? throw new InvalidOperationException($"{GetType().Name}: id {id} was never reserved."), index);

    /// <summary>Bytes of the id bookkeeping: the recycled ids and the chunk table, plus <paramref name="chunkBytes"/> for each chunk.</summary>
    protected long IdMetadataBytes(long chunkBytes)
    {
        lock (_gate)
        {
            long chunks = 0;
            foreach (var c in _chunks) if (c is not null) chunks++;
            return chunks * chunkBytes + (long)(_freeIds.Length + _heldIds.Length) * sizeof(uint) + (long)_chunks.Length * IntPtr.Size;
        }
    }

    /// <summary>
    /// What <see cref="IdMetadataBytes"/> comes to for a table that handed out ids 1 to <paramref name="ids"/> and recycled
    /// none (the colocation model's figure for a table it predicts): the chunks they fill, the chunk table grown to hold
    /// them (4 entries, doubling), the recycled ids' first array.
    /// </summary>
    protected static long IdMetadataBytesFor(long ids, int chunkShift, long chunkBytes)
    {
        if (ids <= 0) return InitialFreeIds * sizeof(uint) + InitialChunks * IntPtr.Size;
        long chunks = (ids >> chunkShift) + 1; // ids start at 1: id >> chunkShift is its chunk
        long table = InitialChunks;
        while (table < chunks) table *= 2;
        return chunks * chunkBytes + InitialFreeIds * sizeof(uint) + table * IntPtr.Size;
    }
}
