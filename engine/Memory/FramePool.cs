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
/// Bookkeeping is 1.25 bytes a frame (session 21; 4.125 before): a one-byte reference count (255 says the count is kept
/// in a small side table, for the rare frame shared that widely) and two bits, free and released (given back to the
/// system), in per-chunk bitmaps changed only under the pool's gate. A frame is taken from the free frames whose memory
/// the process still holds first (no page fault on its first write), lowest number first, then from the released ones;
/// two hints (the lowest bitmap word that may hold such a frame) keep the search amortized constant. Frames hold no content hash: a shared frame's (its stable table key) is computed again from its
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

    /// <summary>
    /// The lock frames are taken under (against the limit): a store sharing the limit grows under it too
    /// (<see cref="Store.CompactStore.GrowthLock"/>), so that a frame and a slab cannot both take the last room. A leaf
    /// lock: nothing else is locked while it is held.
    /// </summary>
    internal object BudgetGate => _gate;
    private FrameChunk[] _chunks = new FrameChunk[16];
    private int _chunkCount;
    // The lowest bitmap words (frame / 64) that may hold a free frame still resident, and a released free frame.
    private long _hintUnreleased, _hintReleased;
    private long _freeCount;
    // Reference counts of 255 and more (a frame's byte reads 255).
    private readonly SideTable<int> _wide = new();
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

    /// <summary>One more than the highest frame number the pool has now (its own and external frames).</summary>
    public long FrameNumberLimit { get { lock (_gate) return (long)_chunkCount * PageGeometry.FramesPerChunk; } }

    /// <summary>Frames backed by native memory (in use or free).</summary>
    public long FramesAllocated { get { lock (_gate) return (long)(_chunkCount - _externalChunks) * PageGeometry.FramesPerChunk; } }

    public long FramesFree => LimitFrames is long l ? Math.Max(0, l - ReservedFrames - FramesInUse) : Interlocked.Read(ref _freeCount);

    /// <summary>Bytes of per-frame bookkeeping (reference counts, free and released bits, counts kept in the side table; an
    /// external frame's seen-content hash).</summary>
    public long MetadataBytes
    {
        get
        {
            lock (_gate)
                return (long)(_chunkCount * PageGeometry.FramesPerChunk * MetadataBytesPerFrame)
                       + (long)_externalChunks * PageGeometry.FramesPerChunk * sizeof(ulong) + (long)_chunks.Length * IntPtr.Size
                       + _wide.MetadataBytes;
        }
    }

    /// <summary>Bookkeeping bytes per frame of any chunk: its reference count and free and released bits (external frames
    /// also keep a seen-content hash; a frame with 255 references or more an entry in the side table). The fleet's model
    /// counts the same.</summary>
    public const double MetadataBytesPerFrame = sizeof(byte) + 2.0 / 8;

    /// <summary>A reference count byte of this value: the count is in the side table.</summary>
    private const byte Wide = byte.MaxValue;

    /// <summary>Frame numbers stay below this (chunk counts are ints).</summary>
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
        int batch = 0;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!overLimit && LimitFrames is long limit && _inUse + ReservedFrames >= limit)
            {
                frame = 0;
                return false;
            }
            // Free frames being given back (ReleaseFree's slice in flight) come back in a moment: wait for them rather
            // than grow the pool for good.
            while (_freeCount == 0 && _dropsInFlight > 0) Monitor.Wait(_gate);
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_freeCount == 0) AddChunk();
            released = _unreleased == 0;
            frame = released ? TakeFree(ref _hintReleased, released: true) : TakeFree(ref _hintUnreleased, released: false);
            if (!released) _unreleased--;
            _freeCount--;
            Interlocked.Increment(ref _inUse);
            // Not for a frame held only for an instant (overLimit: a QEMU guest's fault frees it at once and takes the
            // same frame next time, so its neighbours would never be used).
            if (released && !overLimit) batch = ReserveBatch(frame);
        }
        // The batch is mapped outside the gate (about 1 µs a frame on this project's VM): other threads take and free
        // frames meanwhile, and may take one of the batch, which the call leaves as it is.
        if (batch > 0 && Qemu.LinuxNative.Madvise(Address(frame), (nuint)(batch + 1) * PageGeometry.PageSize, Qemu.LinuxNative.MADV_POPULATE_WRITE) == 0)
            return true;
        // A frame given back to the system is first touched here, by a write, outside the gate: the kernel maps a new
        // zeroed page at once. Its first access would otherwise often be a read (.NET's copy and fill routines read a
        // byte of their destination first, as a null check), which maps the shared zero page, and the write right after
        // then faults again to replace it, with a TLB flush on every CPU: perf saw that pair on 228,651 of 228,652
        // group faults, about a quarter of a fault's kernel time.
        if (released) Volatile.Write(ref *Address(frame), (byte)0);
        return true;
    }

    /// <summary>Frames a taken released frame is mapped with, itself included (<see cref="ReserveBatch"/>).</summary>
    public const int PopulateBatch = 64;

    /// <summary>Whether this kernel maps frames in batches (MADV_POPULATE_WRITE, Linux 5.14 and later), asked once per process.</summary>
    internal static bool PopulateSupported { get; } = ProbePopulate();

    private static bool ProbePopulate()
    {
        if (!OperatingSystem.IsLinux()) return false;
        void* page = NativeMemory.AlignedAlloc(PageGeometry.PageSize, PageGeometry.PageSize);
        try
        {
            return Qemu.LinuxNative.Madvise(page, PageGeometry.PageSize, Qemu.LinuxNative.MADV_POPULATE_WRITE) == 0;
        }
        finally
        {
            NativeMemory.AlignedFree(page);
        }
    }

    /// <summary>Whether a taken released frame is mapped with its free neighbours (<see cref="ReserveBatch"/>); tests turn it off to take one frame at a time.</summary>
    internal bool PopulateBatches { get; set; } = true;

    /// <summary>
    /// For <paramref name="frame"/>, a released frame just taken: the released free frames right after it in its chunk
    /// (up to <see cref="PopulateBatch"/> - 1, and no more than the limit leaves room for), marked resident (unreleased:
    /// taken first from now on, given back by the next <see cref="ReleaseFree"/>), to be mapped together with it in one
    /// MADV_POPULATE_WRITE once the gate is left; returns how many (0: the frame is touched alone, as before). Gate held.
    /// </summary>
    /// <remarks>
    /// <para>A released frame's first write costs the kernel a page fault; on this project's VM (a Firecracker guest with
    /// free page reporting) the hypervisor maps the page then: 10-14 µs, most of every fault goal's figure. Mapped 64 at a
    /// time, about 1 µs a frame, and the first write to a frame so mapped about 5 µs (docs/PERFORMANCE.md, session 28),
    /// so a run of faults (or a domain's load) pays the call once for 64 frames. At most 63 free frames are held beyond
    /// what pages use, until frames are next given back (the end of every pass, page-outs, removals).</para>
    /// <para>They are marked before they are mapped: should the call fail (memory short, say), they are counted
    /// resident and are not, which only makes the next release give back pages it did not need to.</para>
    /// </remarks>
    private int ReserveBatch(uint frame)
    {
        if (!PopulateBatches || !PopulateSupported) return 0;
        var chunk = Chunk(frame);
        int first = (int)(frame & (PageGeometry.FramesPerChunk - 1));
        int room = PopulateBatch - 1;
        if (LimitFrames is long limit) room = (int)Math.Clamp(limit - ReservedFrames - _inUse, 0, room);
        int run = 0;
        for (int slot = first + 1; run < room && slot < PageGeometry.FramesPerChunk; slot++, run++)
        {
            ulong bit = 1UL << (slot & 63);
            if ((chunk.Free[slot >> 6] & chunk.Released[slot >> 6] & bit) == 0) break;
            chunk.Released[slot >> 6] &= ~bit;
        }
        _unreleased += run;
        if (run > 0) _hintUnreleased = Math.Min(_hintUnreleased, (frame + 1L) / 64);
        return run;
    }

    /// <summary>
    /// The lowest free frame (released or not, as asked) at or after the hint's word, taken (reference count 1, its bits
    /// cleared); the hint moves to its word. Under the gate, with such a frame known to exist.
    /// </summary>
    private uint TakeFree(ref long hint, bool released)
    {
        long words = (long)_chunkCount * FrameChunk.Words;
        for (long w = hint; w < words; w++)
        {
            var chunk = _chunks[w / FrameChunk.Words];
            if (chunk.External is not null)
            {
                w += FrameChunk.Words - 1 - w % FrameChunk.Words; // never free: the whole chunk skipped
                continue;
            }
            int k = (int)(w % FrameChunk.Words);
            ulong bits = chunk.Free[k] & (released ? chunk.Released[k] : ~chunk.Released[k]);
            if (bits == 0) continue;
            hint = w;
            int slot = k * 64 + System.Numerics.BitOperations.TrailingZeroCount(bits);
            ulong bit = 1UL << (slot & 63);
            chunk.Free[k] &= ~bit;
            chunk.Released[k] &= ~bit;
            Volatile.Write(ref chunk.RefCounts[slot], 1);
            return (uint)(w / FrameChunk.Words * PageGeometry.FramesPerChunk + slot);
        }
        throw new InvalidOperationException($"The frame pool lost count of its free frames (no {(released ? "released" : "resident")} free frame found).");
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
        ClearCount(chunk, (int)(frame & (PageGeometry.FramesPerChunk - 1)), frame);
        Interlocked.Decrement(ref _inUse);
    }

    /// <summary>Whether <paramref name="frame"/> is one of an external range (memory the pool does not own).</summary>
    public bool IsExternal(uint frame) => Chunk(frame).External is not null;

    /// <summary>
    /// Returns a frame to the free frames; its reference count must already be zero or one. An external frame goes back to
    /// its owner instead (<see cref="IExternalOwner.Released"/>).
    /// </summary>
    public void Free(uint frame)
    {
        var chunk = Chunk(frame);
        int i = (int)(frame & (PageGeometry.FramesPerChunk - 1));
        if (chunk.External is { } owner)
        {
            ClearCount(chunk, i, frame);
            Interlocked.Decrement(ref _inUse);
            owner.Released(frame - chunk.ExternalFirst);
            return;
        }
        lock (_gate)
        {
            if (_disposed) return;
            ulong bit = 1UL << (i & 63);
            // Free, or being given back by ReleaseFree (released, not free): not a frame in use either way.
            if (((chunk.Free[i >> 6] | chunk.Released[i >> 6]) & bit) != 0) throw new InvalidOperationException($"Frame {frame} freed twice.");
            ClearCount(chunk, i, frame);
            chunk.Free[i >> 6] |= bit;
            _hintUnreleased = Math.Min(_hintUnreleased, frame >> 6);
            _freeCount++;
            _unreleased++;
            Interlocked.Decrement(ref _inUse);
        }
    }

    /// <summary>Free frames whose memory the process still holds (freed since the last <see cref="ReleaseFree"/>).</summary>
    public long FramesUnreleased { get { lock (_gate) return _unreleased; } }

    /// <summary>
    /// Gives the memory of every free frame not yet given back to the operating system (madvise MADV_DONTNEED over runs
    /// of neighbouring frames; the kernel zeroes a page before anyone gets it again), in slices of at most
    /// <see cref="ReleaseSliceFrames"/> frames (a slice ends with the bitmap word that reaches it) and
    /// <see cref="ReleaseBatch"/> ranges. Each slice's frames are taken out of the free frames under the pool's gate
    /// (marked released but not free: no thread can take one, and write it, while its memory is dropped, and a double free
    /// of one is still refused), dropped with the gate left, and put back free under it again. Other threads take and
    /// free frames meanwhile: a fault waits for one slice's bookkeeping, not for the release (60,000 frames took 64-77 ms
    /// here, all of it under the gate until session 28); one that finds no free frame but those in flight waits for them
    /// rather than grow the pool. A frame freed meanwhile ahead of the slices is given back with them; one freed behind
    /// them waits for the next release. Returns the frames released; 0 where the system has no madvise (not Linux).
    /// </summary>
    public long ReleaseFree()
    {
        if (!OperatingSystem.IsLinux()) return 0;
        long total = 0;
        long cursor = -1;
        Span<Qemu.LinuxNative.IoVec> batch = stackalloc Qemu.LinuxNative.IoVec[ReleaseBatch];
        Span<long> sliceWords = stackalloc long[ReleaseSliceWords];
        Span<ulong> sliceBits = stackalloc ulong[ReleaseSliceWords];
        while (true)
        {
            int batched = 0, touched = 0;
            long taken = 0;
            lock (_gate)
            {
                if (_disposed || _unreleased == 0) return total;
                if (cursor < 0) cursor = _hintUnreleased;
                long words = (long)_chunkCount * FrameChunk.Words;
                if (cursor >= words) return total;
                if (s_vectoredRelease != false && _selfPidfd < 0) OpenSelfPidfd(); // opened (and closed) under the gate only
                // Every free frame not yet released, from the cursor on: a run of neighbours in one chunk is one range.
                uint runStart = 0, runLength = 0;
                long w = cursor;
                for (; w < words && taken < _unreleased && touched < ReleaseSliceWords && batched < ReleaseBatch - 64 && taken < ReleaseSliceFrames; w++)
                {
                    var chunk = _chunks[w / FrameChunk.Words];
                    int k = (int)(w % FrameChunk.Words);
                    if (chunk.External is not null) continue;
                    ulong bits = chunk.Free[k] & ~chunk.Released[k];
                    if (bits == 0) continue;
                    chunk.Free[k] &= ~bits; // out of the free frames until dropped: released, not free
                    chunk.Released[k] |= bits;
                    sliceWords[touched] = w;
                    sliceBits[touched++] = bits;
                    taken += System.Numerics.BitOperations.PopCount(bits);
                    uint first = (uint)(w / FrameChunk.Words * PageGeometry.FramesPerChunk + k * 64);
                    while (bits != 0)
                    {
                        int start = System.Numerics.BitOperations.TrailingZeroCount(bits);
                        int run = System.Numerics.BitOperations.TrailingZeroCount(~(bits >> start));
                        if (run == 64 - start) bits = 0;
                        else bits &= ~(((1UL << run) - 1) << start);
                        uint at = first + (uint)start;
                        if (runLength > 0 && at == runStart + runLength && (at & (PageGeometry.FramesPerChunk - 1)) != 0)
                        {
                            runLength += (uint)run;
                            continue;
                        }
                        if (runLength > 0) batch[batched++] = Range(runStart, runLength);
                        runStart = at;
                        runLength = (uint)run;
                    }
                }
                if (runLength > 0) batch[batched++] = Range(runStart, runLength);
                if (taken > _unreleased)
                    throw new InvalidOperationException($"The frame pool lost count of its resident free frames ({taken} found, {_unreleased} counted).");
                _unreleased -= taken;
                _freeCount -= taken;
                // The hint moves past the slice unless a frame was freed behind it since the last slice (Free lowered it).
                if (_hintUnreleased >= cursor) _hintUnreleased = _unreleased == 0 ? words : w;
                cursor = w;
                _dropsInFlight++;
            }
            try
            {
                DropMemory(batch[..batched]);
            }
            finally
            {
                lock (_gate)
                {
                    if (!_disposed)
                    {
                        for (int i = 0; i < touched; i++)
                        {
                            long w = sliceWords[i];
                            var chunk = _chunks[w / FrameChunk.Words];
                            int k = (int)(w % FrameChunk.Words);
                            chunk.Free[k] |= sliceBits[i];
                        }
                        if (touched > 0) _hintReleased = Math.Min(_hintReleased, sliceWords[0]);
                        _freeCount += taken;
                    }
                    total += taken;
                    if (--_dropsInFlight == 0) Monitor.PulseAll(_gate);
                }
            }
        }
    }

    /// <summary>A frame's reference count to 0 (a frame no longer in use), its side-table entry gone if it had one.</summary>
    private void ClearCount(FrameChunk chunk, int slot, uint frame)
    {
        if (chunk.RefCounts[slot] == Wide) _wide.Remove(frame);
        chunk.RefCounts[slot] = 0;
    }

    /// <summary>Ranges <see cref="ReleaseFree"/> gives back in one call (the kernel takes up to 1,024).</summary>
    private const int ReleaseBatch = 256;

    /// <summary>The range of <paramref name="count"/> neighbouring frames of one chunk from <paramref name="first"/>.</summary>
    private Qemu.LinuxNative.IoVec Range(uint first, uint count) =>
        new() { Base = Address(first), Length = (nuint)count * PageGeometry.PageSize };

    /// <summary>Frames after which <see cref="ReleaseFree"/> ends a slice (at the end of the bitmap word that reaches it: up to 63 more).</summary>
    internal const int ReleaseSliceFrames = 4096;

    /// <summary>Bitmap words <see cref="ReleaseFree"/> takes frames from in one slice at most (its record of them is on the stack).</summary>
    private const int ReleaseSliceWords = 128;

    // Slices of ReleaseFree whose frames are out of the free frames while their memory is dropped (gate left); Dispose
    // waits for them before it frees the chunks.
    private int _dropsInFlight;

    // This process's pidfd for process_madvise (opened by ReleaseFree under the gate, closed by Dispose once no slice is
    // in flight; -1: none), and whether the
    // kernel takes MADV_DONTNEED that way (Linux 6.13 and later; null until tried).
    private int _selfPidfd = -1;
    private static bool? s_vectoredRelease;

    /// <summary>Whether frames are given back with process_madvise (null: not tried yet); tests set false to take the madvise path.</summary>
    internal static bool? VectoredRelease
    {
        get => s_vectoredRelease;
        set => s_vectoredRelease = value;
    }

    /// <summary>
    /// Gives the memory of the batched ranges back to the system (frames no thread can take meanwhile; the gate left, or
    /// held). One process_madvise call over the batch where
    /// the kernel has it for MADV_DONTNEED: the kernel then flushes the TLB once per call, not once per range, which on
    /// this project's VM took a scattered page from 6-7 µs to about 1 µs (docs/PERFORMANCE.md, session 25). Otherwise, and
    /// for whatever the call did not cover, one madvise per range.
    /// </summary>
    private void DropMemory(ReadOnlySpan<Qemu.LinuxNative.IoVec> ranges)
    {
        if (ranges.Length == 0) return;
        int done = 0;
        int pidfd = _selfPidfd; // opened by ReleaseFree under the gate, closed only by Dispose once no drop is in flight
        if (ranges.Length > 1 && s_vectoredRelease != false && pidfd >= 0)
        {
            nuint total = 0;
            foreach (var r in ranges) total += r.Length;
            long advised;
            fixed (Qemu.LinuxNative.IoVec* v = ranges)
                advised = Qemu.LinuxNative.Syscall(Qemu.LinuxNative.SYS_process_madvise, pidfd, (long)v, ranges.Length,
                    Qemu.LinuxNative.MADV_DONTNEED, 0);
            if (advised < 0)
            {
                // Not there (ENOSYS), not for MADV_DONTNEED (EINVAL before 6.13), or refused (EPERM, a seccomp filter):
                // madvise from now on. Any other error leaves it to madvise this time only.
                int errno = Marshal.GetLastPInvokeError();
                if (errno is Qemu.LinuxNative.ENOSYS or Qemu.LinuxNative.EINVAL or Qemu.LinuxNative.EPERM) s_vectoredRelease = false;
            }
            else
            {
                s_vectoredRelease = true;
                if ((nuint)advised == total) return;
                // The ranges are advised in order: skip those the call covered whole.
                for (nuint covered = 0; done < ranges.Length && covered + ranges[done].Length <= (nuint)advised; done++)
                    covered += ranges[done].Length;
            }
        }
        for (int i = done; i < ranges.Length; i++)
            Qemu.LinuxNative.Madvise(ranges[i].Base, ranges[i].Length, Qemu.LinuxNative.MADV_DONTNEED);
    }

    private bool OpenSelfPidfd()
    {
        if (s_vectoredRelease == false) return false;
        long fd = Qemu.LinuxNative.Syscall(Qemu.LinuxNative.SYS_pidfd_open, Environment.ProcessId, 0, 0, 0, 0);
        if (fd < 0)
        {
            if (Marshal.GetLastPInvokeError() == Qemu.LinuxNative.ENOSYS) s_vectoredRelease = false;
            return false;
        }
        _selfPidfd = (int)fd;
        return true;
    }

    /// <summary>Whether <paramref name="frame"/> names an allocated frame that is in use (a guard before trusting a stored frame number).</summary>
    public bool IsInUse(uint frame)
    {
        var chunks = Volatile.Read(ref _chunks);
        uint chunk = frame >> PageGeometry.ChunkShift;
        return chunk < (uint)chunks.Length && chunks[chunk] is { } c
               && Volatile.Read(ref c.RefCounts[frame & (PageGeometry.FramesPerChunk - 1)]) > 0;
    }

    /// <summary>The frame's reference count (read without a lock: exact when the caller holds what guards the frame's
    /// count, the stripe lock of its hash, or owns the frame alone).</summary>
    public int RefCount(uint frame)
    {
        byte b = Volatile.Read(ref Chunk(frame).RefCounts[frame & (PageGeometry.FramesPerChunk - 1)]);
        if (b != Wide) return b;
        // Read racing a count that is coming down from the side table: the byte said 255 a moment ago.
        return _wide.TryGet(frame, out int n) ? n : Wide - 1;
    }

    /// <summary>Sets the reference count of a frame in use; the caller guards the frame's count (see <see cref="RefCount"/>).</summary>
    public void SetRefCount(uint frame, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        ref byte b = ref Chunk(frame).RefCounts[frame & (PageGeometry.FramesPerChunk - 1)];
        if (count >= Wide)
        {
            // The side table first, then the byte that sends readers there.
            _wide.Set(frame, count);
            Volatile.Write(ref b, Wide);
            return;
        }
        bool wasWide = b == Wide;
        Volatile.Write(ref b, (byte)count);
        if (wasWide) _wide.Remove(frame);
    }

    /// <summary>Adds a reference to a frame in use; returns the new count. The caller guards the frame's count.</summary>
    public int AddReference(uint frame)
    {
        int count = RefCount(frame) + 1;
        SetRefCount(frame, count);
        return count;
    }

    /// <summary>
    /// Drops a reference from a frame in use; returns the new count (at 0 the caller frees the frame). The caller guards
    /// the frame's count. Throws when the frame has none.
    /// </summary>
    public int DropReference(uint frame)
    {
        int count = RefCount(frame);
        if (count <= 0) throw new InvalidOperationException($"Frame {frame} released with reference count {count}.");
        if (count == 1)
        {
            Volatile.Write(ref Chunk(frame).RefCounts[frame & (PageGeometry.FramesPerChunk - 1)], (byte)0);
            return 0;
        }
        SetRefCount(frame, count - 1);
        return count - 1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* Address(uint frame) =>
        Chunk(frame).Data + ((long)(frame & (PageGeometry.FramesPerChunk - 1)) << PageGeometry.PageShift);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Span<byte> Span(uint frame) => new(Address(frame), PageGeometry.PageSize);

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
        // Fresh memory is not resident until touched: every frame free and released, nothing to give back.
        Array.Fill(chunk.Free, ulong.MaxValue);
        Array.Fill(chunk.Released, ulong.MaxValue);
        _hintReleased = Math.Min(_hintReleased, (long)_chunkCount * FrameChunk.Words);
        _chunkCount++;
        _freeCount += PageGeometry.FramesPerChunk;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            // A release dropping a slice's memory with the gate left: its pages must not be freed under it.
            while (_dropsInFlight > 0) Monitor.Wait(_gate);
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
            if (_selfPidfd >= 0)
            {
                Qemu.LinuxNative.Close(_selfPidfd);
                _selfPidfd = -1;
            }
            _externalChunks = 0;
            _hintUnreleased = _hintReleased = 0;
            _inUse = 0;
        }
    }

    private sealed class FrameChunk(byte* data, IExternalOwner? external)
    {
        public readonly byte* Data = data;

        /// <summary>For an external chunk: who holds its memory, and the first frame of its range.</summary>
        public IExternalOwner? External { get; } = external;
        public uint ExternalFirst { get; init; }

        /// <summary>Bitmap words a chunk has per bit kind.</summary>
        public const int Words = PageGeometry.FramesPerChunk / 64;

        /// <summary>Per frame: its references when in use (255: in the pool's side table); 0 when free.</summary>
        public readonly byte[] RefCounts = new byte[PageGeometry.FramesPerChunk];

        /// <summary>An external chunk's seen-content hashes (<see cref="SeenHash"/>); null for a chunk the pool owns.</summary>
        public readonly ulong[]? SeenHashes = external is null ? null : new ulong[PageGeometry.FramesPerChunk];

        /// <summary>One bit a frame: free (a chunk the pool owns; never set in an external chunk).</summary>
        public readonly ulong[] Free = new ulong[Words];

        /// <summary>
        /// One bit a frame: free and its memory given back (with the free bit); without the free bit, a frame
        /// <see cref="ReleaseFree"/> is giving back (neither free nor in use until it is done).
        /// </summary>
        public readonly ulong[] Released = new ulong[Words];
    }
}
