using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace DifferenceEngine.Memory;

/// <summary>
/// Machine memory of the embedded host: 4 KiB frames in page-aligned native chunks, a free list,
/// a per-frame reference count, and an optional limit on frames in use.
/// </summary>
/// <remarks>
/// Chunks are never moved once allocated, so a frame's address is stable for the pool's lifetime;
/// the chunk table grows by copying references only, which lets readers index it without a lock.
/// The free list costs no memory of its own: a free frame's reference count slot holds the next free frame, encoded
/// negative (<see cref="FreeLink"/>; -1 ends the list), so a free frame never reads as in use. It is changed only under
/// the pool's gate. Frames hold no content hash: a shared frame's (its stable table key) is computed again from its
/// bytes, which never change while it is shared (session 18: 12 B of bookkeeping a frame became 4). External frames (a
/// QEMU guest's) keep one, the hash of the content the last sweep saw (<see cref="SeenHash"/>).
/// <para>A freed frame keeps its memory until <see cref="ReleaseFree"/> gives it back to the operating system
/// (madvise MADV_DONTNEED on Linux; the engine calls it at the end of every pass and after page-outs and removals), so
/// that the memory the process holds is the frames in use, as the statistics say, not the most it ever held. A
/// released frame reads as zeros when it is taken again.</para>
/// </remarks>
internal sealed unsafe class FramePool : IDisposable
{
    /// <summary>
    /// Who holds the memory of an external range (<see cref="AddExternal"/>): told when one of its frames stops being in
    /// use, so that it can let the memory go (a QEMU guest's memfd: punch the page out).
    /// </summary>
    internal interface IExternalOwner
    {
        /// <summary>The frame at <paramref name="index"/> of the range is no longer in use (called outside the pool's gate).</summary>
        void Released(long index);
    }

    private readonly object _gate = new();
    private FrameChunk[] _chunks = new FrameChunk[16];
    private int _chunkCount;
    private const uint NoFrame = uint.MaxValue;
    private uint _freeHead = NoFrame;
    private long _freeCount;
    private long _inUse;
    private long _unreleased;
    private int _externalChunks;
    private bool _disposed;

    public FramePool(long? limitFrames)
    {
        if (limitFrames is <= 0) throw new ArgumentOutOfRangeException(nameof(limitFrames));
        LimitFrames = limitFrames;
    }

    /// <summary>Most frames that may be in use at once; null when unlimited.</summary>
    public long? LimitFrames { get; }

    public long FramesInUse => Interlocked.Read(ref _inUse);

    /// <summary>
    /// Bytes of the same memory budget held elsewhere (the compact store's slabs): the limit covers
    /// both, so these count against the frames that may be taken.
    /// </summary>
    public Func<long>? ReservedBytes { get; set; }

    private long ReservedFrames => ReservedBytes is { } f ? (f() + PageGeometry.PageMask) >> PageGeometry.PageShift : 0;

    /// <summary>Frames backed by native memory (in use or on the free list).</summary>
    public long FramesAllocated { get { lock (_gate) return (long)(_chunkCount - _externalChunks) * PageGeometry.FramesPerChunk; } }

    public long FramesFree => LimitFrames is long l ? Math.Max(0, l - ReservedFrames - FramesInUse) : Interlocked.Read(ref _freeCount);

    /// <summary>Bytes of per-frame bookkeeping (reference counts with the free list in them, released bits; an external
    /// frame's seen-content hash).</summary>
    public long MetadataBytes
    {
        get
        {
            lock (_gate)
                return (long)(_chunkCount * PageGeometry.FramesPerChunk * MetadataBytesPerFrame)
                       + (long)_externalChunks * PageGeometry.FramesPerChunk * sizeof(ulong) + (long)_chunks.Length * IntPtr.Size;
        }
    }

    /// <summary>Bookkeeping bytes per frame of any chunk: its reference count and released bit (external frames also keep
    /// a seen-content hash). The fleet's model counts the same.</summary>
    public const double MetadataBytesPerFrame = sizeof(int) + 1.0 / 8;

    /// <summary>A free frame's reference count: the next free frame, negative (-1 ends the list).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int FreeLink(uint next) => next == NoFrame ? -1 : -2 - (int)next;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint NextFree(int link) => link == -1 ? NoFrame : (uint)(-2 - link);

    /// <summary>Frame numbers stay below this, so that a free frame's link fits its reference count.</summary>
    private const long MaxFrames = int.MaxValue - 1;

    /// <summary>Takes a frame with reference count 1; false when the limit is reached.</summary>
    public bool TryAllocate(out uint frame) => TryAllocate(out frame, overLimit: false);

    /// <summary>
    /// Takes a frame; with <paramref name="overLimit"/>, even past the limit (for a frame held only for an instant, as
    /// a QEMU guest's fault holds the page it installs: a guest's fault is never refused for lack of memory).
    /// </summary>
    public bool TryAllocate(out uint frame, bool overLimit)
    {
        bool released;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!overLimit && LimitFrames is long limit && _inUse + ReservedFrames >= limit)
            {
                frame = 0;
                return false;
            }
            if (_freeCount == 0) AddChunk();
            frame = _freeHead;
            var taken = _chunks[frame >> PageGeometry.ChunkShift];
            int slot = (int)(frame & (PageGeometry.FramesPerChunk - 1));
            _freeHead = NextFree(taken.RefCounts[slot]);
            Volatile.Write(ref taken.RefCounts[slot], 1);
            released = taken.TakeReleased(slot);
            if (!released) _unreleased--;
            _freeCount--;
            Interlocked.Increment(ref _inUse);
        }
        // A frame given back to the system is first touched here, by a write, outside the gate: the kernel maps a new
        // zeroed page at once. Its first access would otherwise often be a read (.NET's copy and fill routines read a
        // byte of their destination first, as a null check), which maps the shared zero page, and the write right after
        // then faults again to replace it, with a TLB flush on every CPU: perf saw that pair on 228,651 of 228,652
        // group faults, about a quarter of a fault's kernel time.
        if (released) Volatile.Write(ref *Address(frame), (byte)0);
        return true;
    }

    /// <summary>
    /// Makes <paramref name="frames"/> frames of memory the pool does not own (at <paramref name="data"/>, page aligned,
    /// mapped for as long as the pool lives) frames of the pool: numbered from the returned frame on, never handed out
    /// by <see cref="TryAllocate(out uint)"/>, in use only between <see cref="TakeExternal"/> and <see cref="Free"/> (which tells
    /// <paramref name="owner"/>), and never freed or wiped by the pool. Whole chunks are reserved: frames past
    /// <paramref name="frames"/> in the last one are never used.
    /// </summary>
    public uint AddExternal(byte* data, long frames, IExternalOwner owner)
    {
        ArgumentNullException.ThrowIfNull(owner);
        if (frames <= 0 || ((nuint)data & PageGeometry.PageMask) != 0) throw new ArgumentOutOfRangeException(nameof(frames));
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            long chunks = (frames + PageGeometry.FramesPerChunk - 1) >> PageGeometry.ChunkShift;
            if ((_chunkCount + chunks) * PageGeometry.FramesPerChunk > MaxFrames)
                throw new InvalidOperationException("Frame numbers exhausted.");
            uint first = (uint)(_chunkCount << PageGeometry.ChunkShift);
            for (long c = 0; c < chunks; c++)
            {
                var chunk = new FrameChunk(data + c * PageGeometry.ChunkBytes, owner) { ExternalFirst = first };
                if (_chunkCount == _chunks.Length)
                {
                    var grown = new FrameChunk[_chunks.Length * 2];
                    Array.Copy(_chunks, grown, _chunkCount);
                    Volatile.Write(ref _chunks, grown);
                }
                _chunks[_chunkCount++] = chunk;
                _externalChunks++;
            }
            return first;
        }
    }

    /// <summary>An external frame now holds a page (reference count 1, counted in use).</summary>
    public void TakeExternal(uint frame)
    {
        var chunk = Chunk(frame);
        if (chunk.External is null) throw new InvalidOperationException($"Frame {frame} is not external.");
        chunk.RefCounts[frame & (PageGeometry.FramesPerChunk - 1)] = 1;
        chunk.SeenHashes![frame & (PageGeometry.FramesPerChunk - 1)] = 0; // no content seen yet (the owner's use of it)
        Interlocked.Increment(ref _inUse);
    }

    /// <summary>
    /// An external frame no longer in use, without telling its owner: the page stays where it is (its domain is let go
    /// with its memory, as when the engine stops paging a QEMU guest).
    /// </summary>
    public void ForgetExternal(uint frame)
    {
        var chunk = Chunk(frame);
        if (chunk.External is null) throw new InvalidOperationException($"Frame {frame} is not external.");
        chunk.RefCounts[frame & (PageGeometry.FramesPerChunk - 1)] = 0;
        Interlocked.Decrement(ref _inUse);
    }

    /// <summary>Whether <paramref name="frame"/> is one of an external range (memory the pool does not own).</summary>
    public bool IsExternal(uint frame) => Chunk(frame).External is not null;

    /// <summary>
    /// Returns a frame to the free list; its reference count must already be zero or one. An external frame goes back to
    /// its owner instead (<see cref="IExternalOwner.Released"/>).
    /// </summary>
    public void Free(uint frame)
    {
        var chunk = Chunk(frame);
        int i = (int)(frame & (PageGeometry.FramesPerChunk - 1));
        // A free frame's count is its free-list link (negative): freeing it again would lose the rest of the list.
        if (chunk.External is null && Volatile.Read(ref chunk.RefCounts[i]) < 0)
            throw new InvalidOperationException($"Frame {frame} freed twice.");
        chunk.RefCounts[i] = 0;
        if (chunk.External is { } owner)
        {
            Interlocked.Decrement(ref _inUse);
            owner.Released(frame - chunk.ExternalFirst);
            return;
        }
        lock (_gate)
        {
            if (_disposed) return;
            chunk.RefCounts[i] = FreeLink(_freeHead);
            _freeHead = frame;
            _freeCount++;
            _unreleased++;
            Interlocked.Decrement(ref _inUse);
        }
    }

    /// <summary>Free frames whose memory the process still holds (freed since the last <see cref="ReleaseFree"/>).</summary>
    public long FramesUnreleased { get { lock (_gate) return _unreleased; } }

    /// <summary>
    /// Gives the memory of every free frame not yet given back to the operating system (madvise MADV_DONTNEED over runs
    /// of neighbouring frames; the kernel zeroes a page before anyone gets it again). Holds the pool's gate throughout,
    /// so no frame is taken, and written, while its memory is being dropped. Returns the frames released; 0 where the
    /// system has no madvise (not Linux).
    /// </summary>
    public long ReleaseFree()
    {
        if (!OperatingSystem.IsLinux()) return 0;
        lock (_gate)
        {
            if (_disposed || _unreleased == 0) return 0;
            var frames = new List<uint>((int)Math.Min(_unreleased, int.MaxValue));
            for (uint f = _freeHead; f != NoFrame; f = NextFree(Chunk(f).RefCounts[f & (PageGeometry.FramesPerChunk - 1)]))
                if (Chunk(f).MarkReleased((int)(f & (PageGeometry.FramesPerChunk - 1)))) frames.Add(f);
            frames.Sort();
            for (int i = 0; i < frames.Count;)
            {
                // A run of neighbouring frames in one chunk: one call.
                int j = i + 1;
                while (j < frames.Count && frames[j] == frames[j - 1] + 1 && (frames[j] & (PageGeometry.FramesPerChunk - 1)) != 0) j++;
                Qemu.LinuxNative.Madvise(Address(frames[i]), (nuint)(j - i) * PageGeometry.PageSize, Qemu.LinuxNative.MADV_DONTNEED);
                i = j;
            }
            _unreleased -= frames.Count;
            return frames.Count;
        }
    }

    /// <summary>Whether <paramref name="frame"/> names an allocated frame that is in use (a guard before trusting a stored frame number).</summary>
    public bool IsInUse(uint frame)
    {
        var chunks = Volatile.Read(ref _chunks);
        uint chunk = frame >> PageGeometry.ChunkShift;
        return chunk < (uint)chunks.Length && chunks[chunk] is { } c
               && Volatile.Read(ref c.RefCounts[frame & (PageGeometry.FramesPerChunk - 1)]) > 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* Address(uint frame) =>
        Chunk(frame).Data + ((long)(frame & (PageGeometry.FramesPerChunk - 1)) << PageGeometry.PageShift);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Span<byte> Span(uint frame) => new(Address(frame), PageGeometry.PageSize);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref int RefCount(uint frame) => ref Chunk(frame).RefCounts[frame & (PageGeometry.FramesPerChunk - 1)];

    /// <summary>
    /// An external frame's hash slot: the content its owner saw last (a QEMU guest's page, at the last sweep; 0 for not
    /// yet). Frames the pool owns have none.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref ulong SeenHash(uint frame) =>
        ref (Chunk(frame).SeenHashes ?? throw new InvalidOperationException($"Frame {frame} is not external."))[frame & (PageGeometry.FramesPerChunk - 1)];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private FrameChunk Chunk(uint frame) => Volatile.Read(ref _chunks)[frame >> PageGeometry.ChunkShift];

    private void AddChunk()
    {
        if ((long)(_chunkCount + 1) * PageGeometry.FramesPerChunk > MaxFrames)
            throw new InvalidOperationException("Frame numbers exhausted.");
        var data = (byte*)NativeMemory.AlignedAlloc(PageGeometry.ChunkBytes, PageGeometry.PageSize);
        // No transparent huge pages: khugepaged would fill the frames ReleaseFree gave back with zeros again.
        if (OperatingSystem.IsLinux()) Qemu.LinuxNative.Madvise(data, PageGeometry.ChunkBytes, Qemu.LinuxNative.MADV_NOHUGEPAGE);
        var chunk = new FrameChunk(data, null);
        if (_chunkCount == _chunks.Length)
        {
            var grown = new FrameChunk[_chunks.Length * 2];
            Array.Copy(_chunks, grown, _chunkCount);
            Volatile.Write(ref _chunks, grown);
        }
        _chunks[_chunkCount] = chunk;
        uint first = (uint)(_chunkCount << PageGeometry.ChunkShift);
        _chunkCount++;
        // Linked in order, ahead of the list, so the lowest frame numbers of the new chunk are handed out first.
        for (int i = PageGeometry.FramesPerChunk - 1; i >= 0; i--)
        {
            chunk.RefCounts[i] = FreeLink(_freeHead);
            _freeHead = first + (uint)i;
        }
        // Fresh memory is not resident until touched: count it as released, nothing to give back.
        chunk.MarkAllReleased();
        _freeCount += PageGeometry.FramesPerChunk;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            for (int i = 0; i < _chunkCount; i++)
            {
                if (_chunks[i].External is not null)
                {
                    _chunks[i] = null!; // not ours to wipe or free
                    continue;
                }
                // Guest memory may hold secrets: wipe before handing it back (dropping the pages reads back as zeros,
                // and touches none that were released already).
                if (!OperatingSystem.IsLinux()
                    || Qemu.LinuxNative.Madvise(_chunks[i].Data, PageGeometry.ChunkBytes, Qemu.LinuxNative.MADV_DONTNEED) != 0)
                    NativeMemory.Clear(_chunks[i].Data, PageGeometry.ChunkBytes);
                NativeMemory.AlignedFree(_chunks[i].Data);
                _chunks[i] = null!;
            }
            _chunkCount = 0;
            _freeCount = 0;
            _unreleased = 0;
            _externalChunks = 0;
            _freeHead = NoFrame;
            _inUse = 0;
        }
    }

    private sealed class FrameChunk(byte* data, IExternalOwner? external)
    {
        public readonly byte* Data = data;

        /// <summary>For an external chunk: who holds its memory, and the first frame of its range.</summary>
        public IExternalOwner? External { get; } = external;
        public uint ExternalFirst { get; init; }

        /// <summary>Per frame: its references when in use; when free (a chunk the pool owns), the free list's link.</summary>
        public readonly int[] RefCounts = new int[PageGeometry.FramesPerChunk];

        /// <summary>An external chunk's seen-content hashes (<see cref="SeenHash"/>); null for a chunk the pool owns.</summary>
        public readonly ulong[]? SeenHashes = external is null ? null : new ulong[PageGeometry.FramesPerChunk];

        /// <summary>One bit a frame: free and its memory given back (set only on free frames).</summary>
        private readonly ulong[] _released = new ulong[PageGeometry.FramesPerChunk / 64];

        /// <summary>Sets the frame's released bit; false when it was set already.</summary>
        public bool MarkReleased(int slot)
        {
            ulong bit = 1UL << (slot & 63);
            if ((_released[slot >> 6] & bit) != 0) return false;
            _released[slot >> 6] |= bit;
            return true;
        }

        /// <summary>Clears the frame's released bit (it is being taken); whether it was set.</summary>
        public bool TakeReleased(int slot)
        {
            ulong bit = 1UL << (slot & 63);
            bool was = (_released[slot >> 6] & bit) != 0;
            _released[slot >> 6] &= ~bit;
            return was;
        }

        public void MarkAllReleased() => Array.Fill(_released, ulong.MaxValue);
    }
}
