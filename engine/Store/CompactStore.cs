using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace DifferenceEngine.Store;

/// <summary>
/// Holds variable-size blobs (patches and compressed pages, 1..4096 bytes) packed into size-class
/// slabs of native memory, so the bytes the store holds are counted exactly: what the engine saves
/// by patching or compressing a page is 4096 minus its share of <see cref="AllocatedBytes"/>, and
/// fragmentation (slot rounding, slab tails, partly empty slabs) counts against the savings.
/// </summary>
/// <remarks>
/// <para><b>Size classes.</b> Slot sizes are multiples of 32 bytes up to 1024 (32 classes) and of
/// 64 bytes from 1088 to 4096 (48 classes): 80 classes. Rounding wastes at most 31 bytes per blob up
/// to 1 KiB and 63 above (under 6.2% for any blob over 512 bytes); tiny blobs waste relatively more
/// (a 33-byte patch takes a 64-byte slot). Fewer, coarser classes would waste more per blob; more,
/// finer classes would leave more slabs partly empty (each class in use keeps at least one partly
/// filled slab).</para>
/// <para><b>Slabs.</b> A slab is page-aligned native memory holding the slots of one class. A class's
/// slabs grow as it fills: its first is 4 KiB, the next 8, 16 and 32 KiB, and every one after that
/// <see cref="SlabSize"/> (64 KiB) (<see cref="SlabBytesAt"/>), so a class holding a few blobs costs
/// a page or two, not 64 KiB: a small host's 80 classes no longer need 5 MiB of mostly empty slabs,
/// and a large store's classes fill 64 KiB slabs as before. The tail that no whole slot fits in
/// (at most 5.4% of a 64 KiB slab, for 3648-byte slots; more of a small slab of a large class,
/// whose one or two blobs would otherwise take 64 KiB) is counted as fragmentation. A class allocates from its fullest partly filled
/// slab (slabs sit in eight occupancy buckets), so sparse slabs drain by themselves; a slab whose last blob is freed is wiped
/// and returned to the OS at once, so <see cref="AllocatedBytes"/> falls as blobs go. Each slot's
/// exact length and generation live in a managed per-slab array (4 bytes a slot, counted in
/// <see cref="MetadataBytes"/>), never in the blob bytes; a free slot's length field holds the next free slot (its
/// generation field 0, which no handle has), so the free list costs nothing of its own. The store keeps no owner of a
/// blob: compaction asks the store's user to walk its references (session 21; an owner and a free list of their own
/// were 10 bytes a slot more).</para>
/// <para><b>Handles.</b> A handle fits in 48 bits: slab id (24 bits, ids from 1; up to 1 TiB of
/// slabs), slot (11 bits) and generation (13 bits, never 0), so 0 is never a handle. Generations
/// count on per slab id, also across a slab being released and its id reused, so a freed or moved
/// handle is rejected ("StoreHandleInvalid") unless 8192 further allocations happened to land on
/// the very same slab id and slot generation.</para>
/// <para><b>Threading.</b> Allocation and free take one lock per size class (and, only when a slab
/// is created or released, a store-wide lock for the slab table); <see cref="Get"/> and
/// <see cref="LengthOf"/> take no lock. The engine's contract: it calls Get and Free for a handle
/// only while holding the lock that guards the reference (a page's, a group's), never frees a
/// handle while another thread may still use it, and does not change a blob's bytes once the
/// handle is published. Under that contract the store never frees a blob under a reader, and
/// compaction, which moves a blob only when the reference's holder hands it over under that same
/// lock, never moves one under a reader either.</para>
/// <para><b>Compaction.</b> <see cref="Compact"/> empties the sparsest slabs of each class, only as
/// many as the free slots of the class's other slabs can absorb; then a class whose few blobs sit in
/// bigger slabs than they need gets one slab of their size and they move there (the one time
/// compaction makes a slab: subject to the limit and the growth gate like any other, and skipped when
/// refused). Once the slabs to empty are chosen (and take no new blobs), the caller's
/// <see cref="BlobWalk"/> visits every reference it holds, each under the lock that guards it, and
/// hands each to the <see cref="BlobMover"/>: a blob in a slab being emptied is copied to a slot of
/// the class's fullest other slab under the class lock, the old slot freed, and the new handle
/// returned for the caller to keep. A reference the walk does not hand over (busy, say) leaves its
/// slab in place. A blob filled through <see cref="Get"/> after <see cref="TryAllocate"/> must be
/// fully written before its reference is published; <see cref="TryStore"/> writes the bytes under
/// the class lock.</para>
/// <para><b>Secrets.</b> Blobs hold guest memory: a slot is wiped when freed (so a new blob always
/// starts zeroed), slabs are wiped before they are returned to the OS, and <see cref="Dispose"/>
/// wipes everything.</para>
/// <para>Steady-state allocate and free allocate no managed memory: released slabs keep their
/// managed bookkeeping in a small per-class cache for reuse (a new slab takes the kept bookkeeping of the size nearest
/// its own, at that size), until the end of the pass after the one that released them (<see cref="TrimSlabCache"/>),
/// and compaction keeps its work lists from one compaction to the next the same way. What is kept counts in
/// <see cref="MetadataBytes"/>, and a stable pass (which releases no slab) leaves none. What still allocates: a compaction
/// that makes a slab of a size no released slab had (a settle's fewest-slabs layout).</para>
/// </remarks>
public sealed unsafe class CompactStore : IDisposable
{
    /// <summary>Native bytes of a full-size slab: every slab of a class after its first four (<see cref="SlabBytesAt"/>).</summary>
    public const int SlabSize = 64 * 1024;

    /// <summary>Native bytes of a class's first slab: one page.</summary>
    public const int FirstSlabSize = 4096;

    /// <summary>Slabs of a class before its slabs are full-size: 4, 8, 16 and 32 KiB.</summary>
    private const int GrowingSlabs = 4;

    /// <summary>Longest blob the store holds (one page).</summary>
    public const int MaxBlobLength = 4096;

    /// <summary>Number of size classes.</summary>
    public const int SizeClassCount = FineClasses + (MaxBlobLength - FineLimit) / CoarseStep;

    /// <summary>Default occupancy below which <see cref="Compact"/> empties a slab.</summary>
    public const double DefaultOccupancyThreshold = 0.5;

    private const int FineStep = 32;
    private const int FineLimit = 1024;
    private const int CoarseStep = 64;
    private const int FineClasses = FineLimit / FineStep;
    private const int SlabAlignment = 4096;

    internal const int SlabIdBits = 24;
    internal const int SlotBits = 11;
    internal const int GenerationBits = 13;
    internal const int MaxSlabId = (1 << SlabIdBits) - 1;
    internal const int MaxGeneration = (1 << GenerationBits) - 1;
    private const int SlotShift = GenerationBits;
    private const int SlabIdShift = GenerationBits + SlotBits;
    private const int HandleBits = SlabIdBits + SlotBits + GenerationBits;
    private const uint LengthMask = 0xFFFF;
    private const int GenerationShift = 16;

    private const int Buckets = 8;
    private const int SlabCacheLimit = 8;

    private readonly SizeClass[] _classes;
    private readonly Lock _tableGate = new();
    private readonly Lock _compactGate = new();
    // Slab table: index = slab id; grown by copying references so readers index it without a lock.
    private Slab?[] _slabs = new Slab?[64];
    // Next generation per slab id while the id is not held by a slab (a slab carries it while it is).
    private ushort[] _generations = new ushort[64];
    private int[] _freeIds = new int[64];
    private int _freeIdCount;
    private int _nextId = 1;
    private long _allocated;
    private long _slabMetadata;
    private volatile bool _disposed;
    private int _disposeState;

    public CompactStore(long? limitBytes = null)
    {
        if (limitBytes is <= 0)
            throw new DEException("StoreLimitInvalid", DEErrorKind.InvalidArgument,
                $"The compact store's limit must be a positive number of bytes, not {limitBytes}.", limitBytes);
        LimitBytes = limitBytes;
        _classes = new SizeClass[SizeClassCount];
        for (int i = 0; i < _classes.Length; i++) _classes[i] = new SizeClass(i);
    }

    /// <summary>Most native bytes the store's slabs may take (whole slabs only); null when unlimited.</summary>
    public long? LimitBytes { get; }

    /// <summary>
    /// Asked before the store grows by a slab, with the store's total after growing; false refuses
    /// (the host's memory limit covers frames and the store together).
    /// </summary>
    public Func<long, bool>? GrowthGate { get; set; }

    /// <summary>
    /// Held while <see cref="GrowthGate"/> is asked and the growth counted, when set: the lock under which whatever else
    /// shares the budget (the host's frames) checks and takes its part, so that the two cannot both pass on the same room.
    /// </summary>
    public object? GrowthLock { get; set; }

    /// <summary>Native bytes held in slabs: a multiple of <see cref="FirstSlabSize"/> (a page).</summary>
    public long AllocatedBytes => Volatile.Read(ref _allocated);

    /// <summary>Sum of the exact lengths of the live blobs.</summary>
    public long StoredBytes
    {
        get
        {
            long sum = 0;
            foreach (var c in _classes) sum += Volatile.Read(ref c.Stored);
            return sum;
        }
    }

    /// <summary>Sum of the slot sizes of the live blobs.</summary>
    public long SlotBytes
    {
        get
        {
            long sum = 0;
            foreach (var c in _classes) sum += Volatile.Read(ref c.Live) * c.SlotSize;
            return sum;
        }
    }

    public long LiveBlobs
    {
        get
        {
            long sum = 0;
            foreach (var c in _classes) sum += Volatile.Read(ref c.Live);
            return sum;
        }
    }

    /// <summary>Per size class in use: its slot size, slabs and live blobs (diagnostics; not synchronised).</summary>
    internal IEnumerable<(int SlotSize, int Slabs, long Live, long Bytes)> Census()
    {
        foreach (var c in _classes)
            if (c.SlabCount > 0) yield return (c.SlotSize, c.SlabCount, Volatile.Read(ref c.Live), Volatile.Read(ref c.Bytes));
    }

    /// <summary>Native bytes held but not holding blob bytes: slot rounding, slab tails, free slots.</summary>
    public long FragmentationBytes => AllocatedBytes - StoredBytes;

    /// <summary><see cref="FragmentationBytes"/> as a share of <see cref="AllocatedBytes"/> (0 when empty).</summary>
    public double Fragmentation
    {
        get
        {
            long allocated = AllocatedBytes;
            if (allocated == 0) return 0;
            return Math.Clamp((allocated - StoredBytes) / (double)allocated, 0, 1);
        }
    }

    /// <summary>
    /// Native bytes compaction could release at best: per class, the sparsest slabs whose blobs the free slots of the
    /// class's other slabs could take, or, when there are none, what moving all its blobs into one smaller slab would
    /// give back (what <see cref="Compact"/> plans, with no occupancy threshold). <see cref="UnsettledBytes"/> is what
    /// <see cref="Settle"/> would.
    /// </summary>
    public long ReclaimableBytes
    {
        get
        {
            long bytes = 0;
            var scratch = t_reclaimScratch ??= new List<Slab>(); // read every pass: no allocation each time
            foreach (var c in _classes)
            {
                if (Volatile.Read(ref c.SlabCount) < 1) continue;
                lock (c.Gate)
                {
                    if (_disposed) return 0;
                    long drainable = 0;
                    foreach (var s in Drainable(c, 1, scratch)) drainable += s.Bytes;
                    scratch.Clear(); // holds no slab past the call (the list outlives this store)
                    int resize = drainable == 0 ? ResizeTarget(c, 1) : 0;
                    bytes += resize > 0 ? c.Bytes - resize : drainable;
                }
            }
            return bytes;
        }
    }

    /// <summary>
    /// Managed bookkeeping bytes (estimated from array and object sizes): per-slot length and generation
    /// (with the free list in them) of every slab (live or cached for reuse), the slab table and the
    /// size classes.
    /// </summary>
    public long MetadataBytes
    {
        get
        {
            long bytes = Volatile.Read(ref _slabMetadata) + (long)SizeClassCount * SizeClass.OverheadBytes + Volatile.Read(ref _compactionBytes);
            lock (_tableGate)
                bytes += ArrayBytes(_slabs.Length, IntPtr.Size) + ArrayBytes(_generations.Length, sizeof(ushort))
                         + ArrayBytes(_freeIds.Length, sizeof(int));
            return bytes;
        }
    }

    /// <summary>The slot size that holds a blob of <paramref name="length"/> bytes.</summary>
    public static int SlotSizeFor(int length)
    {
        CheckLength(length);
        return SlotSizeOfClass(ClassOf(length));
    }

    [ThreadStatic] private static List<Slab>? t_reclaimScratch;

    /// <summary>Slots of <paramref name="slotSize"/> bytes in a full-size slab (<see cref="SlabSize"/>).</summary>
    public static int SlotsPerSlab(int slotSize) => SlabSize / slotSize;

    /// <summary>Native bytes of a class's next slab when it holds <paramref name="slabs"/>: 4, 8, 16, 32 KiB, then 64 KiB.</summary>
    public static int SlabBytesAt(int slabs) => slabs >= GrowingSlabs ? SlabSize : FirstSlabSize << Math.Max(0, slabs);

    /// <summary>Managed bookkeeping of one slab of <paramref name="slots"/> slots (counted in <see cref="MetadataBytes"/>).</summary>
    private static long SlabMetadataBytes(int slots) => Slab.OverheadBytes + ArrayBytes(slots, sizeof(uint));

    /// <summary>A free slot's <c>Meta</c>: generation 0, and the next free slot + 1 where a live one keeps its length (0: none).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint FreeSlotMeta(int nextFree) => (uint)(nextFree + 1);

    /// <summary>The next free slot a free slot's <c>Meta</c> names; -1 for none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int NextFreeSlot(uint meta) => (int)(meta & LengthMask) - 1;

    /// <summary>
    /// The slabs a class of <paramref name="slotSize"/>-byte slots allocates for <paramref name="blobs"/> blobs stored one
    /// after another with none freed (each new slab once the others are full, sized by <see cref="SlabBytesAt"/>): their
    /// native bytes and their bookkeeping (what <see cref="AllocatedBytes"/> and <see cref="MetadataBytes"/> grow by).
    /// The fleet's model sizes a predicted store with it.
    /// </summary>
    public static (long Bytes, long Metadata) SlabsFor(int slotSize, long blobs)
    {
        int slot = SlotSizeFor(slotSize);
        long bytes = 0, metadata = 0;
        for (int n = 0; blobs > 0 && n < GrowingSlabs; n++)
        {
            int size = SlabBytesAt(n), slots = size / slot;
            bytes += size;
            metadata += SlabMetadataBytes(slots);
            blobs -= slots;
        }
        if (blobs > 0)
        {
            int slots = SlabSize / slot;
            long full = (blobs + slots - 1) / slots;
            bytes += full * SlabSize;
            metadata += full * SlabMetadataBytes(slots);
        }
        return (bytes, metadata);
    }

    /// <summary>
    /// The fewest slabs a class of <paramref name="slotSize"/>-byte slots can hold <paramref name="blobs"/> blobs in, and
    /// their bookkeeping: full-size slabs for as many blobs as fill them, and for the rest the slabs of 4, 8, 16 and 32 KiB
    /// (each once at most) or the one full-size slab that hold them in the fewest bytes (<see cref="LeastTail"/>).
    /// <see cref="Settle"/> puts every class into these slabs, so a settled store is exactly this for its blob counts; the
    /// fleet's model sizes a predicted store with it. Session 17: before, a class kept the slabs it had
    /// grown (4, 8, 16, 32 KiB, then 64 KiB each) and its last one's free room, about 12 KiB a class on the fleet bench's
    /// small programs (0.94 MiB of perl's 5.3 MiB store), and the room left depended on the order blobs came and went.
    /// </summary>
    public static (long Bytes, long Metadata) LeastSlabsFor(int slotSize, long blobs)
    {
        int slot = SlotSizeFor(slotSize);
        if (blobs <= 0) return (0, 0);
        var (full, tail) = LeastLayout(slot, blobs);
        long bytes = full * SlabSize, metadata = full * SlabMetadataBytes(SlabSize / slot);
        for (int i = 0; i < TailSizes.Length; i++)
            if ((tail & (1 << i)) != 0)
            {
                bytes += TailSizes[i];
                metadata += SlabMetadataBytes(TailSizes[i] / slot);
            }
        return (bytes, metadata);
    }

    /// <summary>
    /// The fewest slabs for <paramref name="blobs"/> blobs in <paramref name="slot"/>-byte slots: how many full-size slabs,
    /// and the rest's slabs as a mask over <see cref="TailSizes"/> (<see cref="LeastTail"/>).
    /// </summary>
    private static (long Full, int Tail) LeastLayout(int slot, long blobs)
    {
        int perSlab = SlabSize / slot;
        long full = blobs / perSlab;
        return (full, LeastTail(slot, blobs - full * perSlab));
    }

    /// <summary>The slab sizes a class's last blobs (those that fill no full-size slab) may take: one of each at most.</summary>
    private static readonly int[] TailSizes = [FirstSlabSize, 2 * FirstSlabSize, 4 * FirstSlabSize, 8 * FirstSlabSize, SlabSize];

    /// <summary>
    /// The slabs for <paramref name="rest"/> blobs of <paramref name="slot"/> bytes (fewer than a full-size slab holds), as
    /// a mask over <see cref="TailSizes"/>: of the sets of 4, 8, 16 and 32 KiB slabs (each once at most) and the one
    /// full-size slab, the one that holds them in the fewest bytes, then in the fewest slabs; 0 for none.
    /// </summary>
    private static int LeastTail(int slot, long rest)
    {
        if (rest <= 0) return 0;
        int best = 1 << (TailSizes.Length - 1), bestCount = 1;
        long bestBytes = SlabSize;
        for (int mask = 1; mask < 1 << (TailSizes.Length - 1); mask++)
        {
            long slots = 0, bytes = 0;
            for (int i = 0; i < TailSizes.Length - 1; i++)
                if ((mask & (1 << i)) != 0)
                {
                    slots += TailSizes[i] / slot;
                    bytes += TailSizes[i];
                }
            int count = BitOperations.PopCount((uint)mask);
            if (slots < rest || bytes > bestBytes || (bytes == bestBytes && count >= bestCount)) continue;
            (best, bestBytes, bestCount) = (mask, bytes, count);
        }
        return best;
    }

    /// <summary>The bytes of the smallest slab (<see cref="SlabBytesAt"/>) that holds <paramref name="blobs"/> slots of <paramref name="slot"/> bytes (at most a full-size slab's).</summary>
    private static int SmallestSlabFor(int slot, long blobs)
    {
        int n = 0;
        while (SlabBytesAt(n) / slot < blobs) n++;
        return SlabBytesAt(n);
    }

    /// <summary>Managed bookkeeping of the store itself, before any slab: its size classes.</summary>
    public static long FixedMetadataBytes => (long)SizeClassCount * SizeClass.OverheadBytes;

    /// <summary>
    /// Reserves a zero-filled blob of <paramref name="length"/> bytes (1..4096); fill it through
    /// <see cref="Get"/>. False, with handle 0 and nothing changed, when a new slab is needed and the
    /// limit would be exceeded.
    /// </summary>
    public bool TryAllocate(int length, out ulong handle)
    {
        CheckLength(length);
        var cls = _classes[ClassOf(length)];
        lock (cls.Gate)
        {
            if (!TryAllocateLocked(cls, length, out handle, out _, out _)) return false;
        }
        return true;
    }

    /// <summary>
    /// Stores a copy of <paramref name="bytes"/> (1..4096 bytes). The bytes are written under the
    /// store's lock. False, with handle 0, when the limit would be exceeded.
    /// </summary>
    public bool TryStore(ReadOnlySpan<byte> bytes, out ulong handle)
    {
        CheckLength(bytes.Length);
        var cls = _classes[ClassOf(bytes.Length)];
        lock (cls.Gate)
        {
            if (!TryAllocateLocked(cls, bytes.Length, out handle, out var slab, out int slot)) return false;
            bytes.CopyTo(new Span<byte>(SlotAddress(slab, slot), bytes.Length));
        }
        return true;
    }

    /// <summary>The blob's bytes, exactly its length; "StoreHandleInvalid" when the handle is not live.</summary>
    public Span<byte> Get(ulong handle)
    {
        var slab = Resolve(handle, out int slot, out uint meta);
        byte* data = slab.Data;
        if (data == null) throw InvalidHandle(handle);
        return new Span<byte>(data + (nint)slot * slab.Class.SlotSize, (int)(meta & LengthMask));
    }

    public int LengthOf(ulong handle)
    {
        Resolve(handle, out _, out uint meta);
        return (int)(meta & LengthMask);
    }

    /// <summary>True when the handle names a live blob of this store.</summary>
    public bool IsLive(ulong handle) => !_disposed && TryResolve(handle, out _, out _, out _);

    /// <summary>
    /// Frees a blob and wipes its bytes; a slab left empty is wiped and returned to the OS.
    /// "StoreHandleInvalid" for a handle that is not live (double free, moved, never allocated).
    /// Does nothing once the store is disposed.
    /// </summary>
    public void Free(ulong handle)
    {
        if (_disposed) return;
        if (!TryFree(handle, out _) && !_disposed) throw InvalidHandle(handle);
    }

    /// <summary>
    /// True when <see cref="Fragmentation"/> is above <paramref name="fragmentationThreshold"/> (0..1)
    /// and compaction could release at least one slab.
    /// </summary>
    public bool NeedsCompaction(double fragmentationThreshold)
    {
        if (!(fragmentationThreshold is >= 0 and <= 1))
            throw new DEException("StoreThresholdInvalid", DEErrorKind.InvalidArgument,
                $"A fragmentation threshold is a share between 0 and 1, not {fragmentationThreshold}.", fragmentationThreshold);
        return Fragmentation > fragmentationThreshold && ReclaimableBytes > 0;
    }

    /// <summary>
    /// Moves blobs out of slabs less than <paramref name="occupancyThreshold"/> full (0 &lt; t &lt;= 1)
    /// into fuller slabs of the same class and releases the slabs so emptied. A class none of whose slabs can be drained
    /// that way, less than the threshold full as a whole, whose blobs fit in one slab smaller than its slabs, has them
    /// moved into a new slab of that size (a class's slabs are sized when made, for what it held then). Per class, only as
    /// many of the sparsest slabs are drained as the other slabs' free slots can absorb, and drained slabs take no new
    /// blobs. The blobs move as <paramref name="walk"/> hands their references to the <see cref="BlobMover"/> (at most
    /// twice per compaction: once for the drains, once for the resizes). Safe alongside Allocate, Free and Get on other
    /// blobs; one compaction runs at a time. If <paramref name="walk"/> throws, the blobs moved so far stay moved, the
    /// rest stay where they were, and the exception propagates.
    /// </summary>
    public CompactionResult Compact(BlobWalk walk, double occupancyThreshold = DefaultOccupancyThreshold)
    {
        if (!(occupancyThreshold is > 0 and <= 1))
            throw new DEException("StoreThresholdInvalid", DEErrorKind.InvalidArgument,
                $"An occupancy threshold is a share above 0 and at most 1, not {occupancyThreshold}.", occupancyThreshold);
        var result = Rearrange(walk, occupancyThreshold, settle: false);
        TrimIfFreed();
        return result;
    }

    /// <summary>
    /// Settles every class that holds a page or more beyond the fewest slabs its blobs need (<see cref="LeastSlabsFor"/>,
    /// <see cref="UnsettledBytes"/>) into those slabs: for each slab size they have, the class's fullest slab of that size
    /// is kept, the sizes it has none of are made, and every other slab is drained into them, blob by blob as
    /// <see cref="Compact"/> moves them (one walk, the same contract). Once every reference is handed over, the store
    /// holds exactly <see cref="LeastSlabsFor"/> of each class's blob count; a slab that cannot be made (the limit, the
    /// growth gate) leaves its class as it is.
    /// </summary>
    public CompactionResult Settle(BlobWalk walk)
    {
        var result = Rearrange(walk, 1, settle: true);
        TrimIfFreed(); // with the compaction's lock left: other threads' allocations wait on glibc's arena lock only
        return result;
    }

    /// <summary>Slab bytes freed since the C library's heaps were last trimmed (<see cref="TrimIfFreed"/>).</summary>
    private long _freedSinceTrim;
    private long _trims;

    /// <summary>
    /// Slabs come from the C library's heaps (NativeMemory.AlignedAlloc), which keep what is freed for the next allocation:
    /// resident, but counted nowhere (a Compare audit: 7-10 MiB over 60 MiB of memory used, freed by malloc_trim). After a
    /// compaction or a settle (the end of a pass) that followed at least <see cref="TrimThresholdBytes"/> of slabs freed,
    /// the heaps are trimmed, so that memory used is what the process holds.
    /// </summary>
    private void TrimIfFreed()
    {
        if (Interlocked.Read(ref _freedSinceTrim) < TrimThresholdBytes) return;
        long freed = Interlocked.Exchange(ref _freedSinceTrim, 0);
        if (freed < TrimThresholdBytes)
        {
            Interlocked.Add(ref _freedSinceTrim, freed); // another thread's trim took it meanwhile: counted for the next
            return;
        }
        if (Qemu.LinuxNative.TryMallocTrim()) Interlocked.Increment(ref _trims);
    }

    /// <summary>Freed slab bytes after which the end of a compaction or settle trims the C library's heaps (1 MiB).</summary>
    internal const long TrimThresholdBytes = 1 << 20;

    /// <summary>How many times the C library's heaps were trimmed (tests).</summary>
    internal long Trims => Interlocked.Read(ref _trims);

    /// <summary>Bytes <see cref="Settle"/> would give back: per class, what it holds beyond <see cref="LeastSlabsFor"/>, when a page or more.</summary>
    public long UnsettledBytes
    {
        get
        {
            long bytes = 0;
            foreach (var c in _classes)
            {
                if (Volatile.Read(ref c.SlabCount) < 1) continue;
                lock (c.Gate)
                {
                    if (_disposed) return 0;
                    bytes += Unsettled(c);
                }
            }
            return bytes;
        }
    }

    private CompactionResult Rearrange(BlobWalk walk, double occupancyThreshold, bool settle)
    {
        ArgumentNullException.ThrowIfNull(walk);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_compactGate.IsHeldByCurrentThread)
            throw new DEException("StoreCompactionReentrant", DEErrorKind.InvalidOperation,
                "Compact was called from inside its own blob walk.");
        lock (_compactGate)
        {
            long before = AllocatedBytes;
            // Kept from one compaction to the next while the store holds slabs (TrimSlabCache): a compaction in steady
            // state allocates nothing.
            var w = _compaction ??= new CompactionScratch(this);
            _compactionUsed = true;
            w.Mover.Open();
            int drained = 0;
            long madeBytes = 0;
            bool done = false;
            try
            {
                if (settle)
                {
                    // Into the fewest slabs that hold its blobs (LeastSlabsFor).
                    foreach (var cls in _classes)
                    {
                        if (Volatile.Read(ref cls.SlabCount) < 1) continue;
                        int sources = w.Sources.Count, made = w.Made.Count;
                        if (PlanSettle(cls, w)) w.Plans.Add(new DrainPlan(cls, sources, w.Sources.Count, made, w.Made.Count));
                    }
                    Drain();
                }
                else
                {
                    // First into the classes' other slabs; then, with what is left, into one slab of the size each needs.
                    foreach (var cls in _classes)
                    {
                        if (Volatile.Read(ref cls.SlabCount) < 2) continue;
                        int sources = w.Sources.Count;
                        PlanDrain(cls, occupancyThreshold, w.Sources, w.Slabs);
                        if (w.Sources.Count > sources) w.Plans.Add(new DrainPlan(cls, sources, w.Sources.Count, 0, 0));
                    }
                    Drain();
                    foreach (var cls in _classes)
                    {
                        if (Volatile.Read(ref cls.SlabCount) < 1) continue;
                        int sources = w.Sources.Count, made = w.Made.Count;
                        if (PlanResize(cls, occupancyThreshold, w.Sources) is { } one)
                        {
                            w.Made.Add(one);
                            w.Plans.Add(new DrainPlan(cls, sources, w.Sources.Count, made, w.Made.Count));
                        }
                    }
                    Drain();
                }
                done = true;
            }
            finally
            {
                // Planning that failed part way (a slab refused by native memory, say) leaves no slab draining for good.
                Conclude();
                w.Mover.Close();
                if (!done) w.Left.Clear();
                // What the work lists hold now, counted whether or not the compaction completed (a walk that threw has
                // grown them as much).
                Volatile.Write(ref _compactionBytes, w.Bytes);
            }
            long refused = 0;
            foreach (long n in w.Left.Values) refused += n;
            w.Left.Clear(); // holds no slab past the call
            var mover = w.Mover;
            return new CompactionResult(drained, mover.Moved, refused, mover.BytesMoved, mover.Released, mover.BytesReleased, madeBytes,
                before, AllocatedBytes);

            // One walk moves the blobs of every planned source (into the slabs a resize or a settle made, when it did); then
            // the plans are settled.
            void Drain()
            {
                if (w.Plans.Count == 0) return;
                drained += w.Sources.Count;
                foreach (var m in w.Made) madeBytes += m.Slab.Bytes;
                try
                {
                    walk(w.Mover);
                }
                finally
                {
                    Conclude();
                }
            }

            // The planned sources take blobs again, what stayed in each is noted, and the slabs made and left empty go back.
            void Conclude()
            {
                var sources = CollectionsMarshal.AsSpan(w.Sources);
                var made = CollectionsMarshal.AsSpan(w.Made);
                foreach (var plan in w.Plans)
                {
                    Undrain(plan.Class, sources[plan.SourceStart..plan.SourceEnd], w.Left);
                    foreach (var kept in made[plan.MadeStart..plan.MadeEnd])
                        if (ReleaseIfEmpty(plan.Class, kept.Slab, kept.Incarnation, out int bytes)) madeBytes -= bytes;
                }
                w.Plans.Clear();
                w.Sources.Clear();
                w.Made.Clear();
            }
        }
    }

    /// <summary>
    /// The slabs a compaction empties in one class (<see cref="CompactionScratch.Sources"/> from SourceStart up to
    /// SourceEnd), and the slabs it made for their blobs (<see cref="CompactionScratch.Made"/> from MadeStart up to MadeEnd).
    /// </summary>
    private readonly record struct DrainPlan(SizeClass Class, int SourceStart, int SourceEnd, int MadeStart, int MadeEnd);

    /// <summary>
    /// What a compaction works in, kept between compactions (under the compaction gate) so that one in steady state
    /// allocates nothing; every list is emptied when a compaction ends, so it holds no slab in between.
    /// <see cref="TrimSlabCache"/> drops it once the store holds no slab (it is as large as the largest compaction's lists), and
    /// <see cref="MetadataBytes"/> counts it while it is held.
    /// </summary>
    private sealed class CompactionScratch(CompactStore store)
    {
        public readonly List<DrainPlan> Plans = new();
        public readonly List<(Slab Slab, int Incarnation)> Sources = new();
        public readonly List<(Slab Slab, int Incarnation)> Made = new();
        /// <summary>Blobs left behind, by source slab: a slab refused in the drains and planned again by a resize counts once.</summary>
        public readonly Dictionary<(Slab, int), long> Left = new();
        /// <summary>A class's slabs, as planning sorts them.</summary>
        public readonly List<Slab> Slabs = new();
        /// <summary>Slab sizes a settle makes.</summary>
        public readonly List<int> Missing = new();
        /// <summary>Per slab of <see cref="Slabs"/>: kept by a settle.</summary>
        public bool[] Keep = new bool[16];
        public readonly BlobMover Mover = new(store);

        /// <summary>Managed bytes held: the objects and their arrays as they have grown.</summary>
        public long Bytes =>
            6 * 40 + 48 + 56
            + ArrayBytes(Plans.Capacity, 32) + ArrayBytes(Sources.Capacity, 16) + ArrayBytes(Made.Capacity, 16)
            + ArrayBytes(Slabs.Capacity, IntPtr.Size) + ArrayBytes(Missing.Capacity, sizeof(int)) + ArrayBytes(Keep.Length, 1)
            + Left.EnsureCapacity(0) * (16 + 24 + 8);
    }

    private CompactionScratch? _compaction;
    private bool _compactionUsed;
    private long _compactionBytes;

    /// <summary>The bytes of compaction's work lists counted in <see cref="MetadataBytes"/> (tests).</summary>
    internal long CompactionScratchBytes => Volatile.Read(ref _compactionBytes);

    /// <summary>
    /// Bookkeeping made for slabs since the store was made, in bytes as <see cref="MetadataBytes"/> counts it: every slab
    /// whose bookkeeping did not come from the cache of released slabs. Only grows. Compare takes it off what a pass
    /// allocates to tell the store's growth from the allocations of the work that filled it (patch_page's goal).
    /// </summary>
    internal long SlabBookkeepingMadeBytes => Interlocked.Read(ref _slabBookkeepingMade);
    private long _slabBookkeepingMade;

    /// <summary>
    /// The blob <paramref name="handle"/> names, moved out of a slab this compaction empties when it is in one and the class
    /// has room: copied to the fullest other slab of its class under the class lock, the old slot freed (its slab released
    /// when that was its last blob); the new handle. Otherwise the handle itself. Called by <see cref="BlobMover.Move"/>.
    /// </summary>
    internal ulong MoveOut(ulong handle, BlobMover mover)
    {
        if (!TryResolve(handle, out var slab, out _, out _))
        {
            if (_disposed) return handle;
            throw InvalidHandle(handle);
        }
        if (!Volatile.Read(ref slab.Draining)) return handle;
        var cls = slab.Class;
        int id = (int)(handle >> SlabIdShift);
        lock (cls.Gate)
        {
            if (_disposed) return handle;
            // Under the class lock: the handle is still live (the caller holds its reference's lock, so it cannot be freed
            // meanwhile; checked all the same), and its slab still drains.
            if (!TryResolve(handle, out var s, out int slot, out uint meta) || s != slab || s.Id != id || s.Data == null)
                throw InvalidHandle(handle);
            if (!s.Draining) return handle;
            var target = FullestPartial(cls);
            if (target is null) return handle; // concurrent allocations took the room planned for it: it stays
            int length = (int)(meta & LengthMask);
            ulong moved = TakeSlot(cls, target, length, out int newSlot);
            Buffer.MemoryCopy(SlotAddress(s, slot), SlotAddress(target, newSlot), length, length);
            int bytes = s.Bytes;
            bool released = FreeSlot(cls, s, slot, meta);
            mover.Count(length, released ? bytes : 0);
            return moved;
        }
    }

    /// <summary>Whether the handle names a blob of a slab this compaction empties (no lock: a hint to skip by).</summary>
    internal bool InDrainingSlab(ulong handle)
    {
        if (handle == 0 || handle >> HandleBits != 0) return false;
        int id = (int)(handle >> SlabIdShift);
        var table = Volatile.Read(ref _slabs);
        return (uint)id < (uint)table.Length && Volatile.Read(ref table[id]) is { } s && Volatile.Read(ref s.Draining);
    }

    /// <summary>
    /// Test hook: true when the calling thread holds a lock that allocation, free or lookup may take (the slab table's or a
    /// size class's); a blob walk must run with none, or a page's holder working on another thread would deadlock.
    /// </summary>
    internal bool HoldsAllocationLockForTest() =>
        _tableGate.IsHeldByCurrentThread || Array.Exists(_classes, c => c.Gate.IsHeldByCurrentThread);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposeState, 1) != 0) return;
        _disposed = true;
        int entered = 0;
        try
        {
            for (; entered < _classes.Length; entered++) _classes[entered].Gate.Enter();
            lock (_tableGate)
            {
                for (int id = 1; id < _nextId; id++)
                {
                    var slab = _slabs[id];
                    if (slab is null) continue;
                    Volatile.Write(ref _slabs[id], null);
                    byte* data = slab.Data;
                    slab.Data = null;
                    Array.Clear(slab.Meta);
                    // Guest memory may hold secrets: wipe before handing it back.
                    NativeMemory.Clear(data, (nuint)slab.Bytes);
                    NativeMemory.AlignedFree(data);
                }
            }
            foreach (var cls in _classes)
            {
                Array.Clear(cls.Heads);
                cls.NonEmpty = 0;
                Array.Clear(cls.Cache);
                cls.CacheCount = 0;
                Volatile.Write(ref cls.SlabCount, 0);
                cls.Bytes = 0;
                Volatile.Write(ref cls.Live, 0);
                Volatile.Write(ref cls.Stored, 0);
            }
            Volatile.Write(ref _allocated, 0);
            Volatile.Write(ref _slabMetadata, 0);
        }
        finally
        {
            for (int i = entered - 1; i >= 0; i--) _classes[i].Gate.Exit();
        }
    }

    // ---- size classes and handles ----

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ClassOf(int length) =>
        length <= FineLimit ? (length - 1) / FineStep : FineClasses + (length - FineLimit - 1) / CoarseStep;

    private static int SlotSizeOfClass(int cls) =>
        cls < FineClasses ? (cls + 1) * FineStep : FineLimit + (cls - FineClasses + 1) * CoarseStep;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong MakeHandle(int slabId, int slot, int generation) =>
        ((ulong)(uint)slabId << SlabIdShift) | ((ulong)(uint)slot << SlotShift) | (uint)generation;

    private static void CheckLength(int length)
    {
        if ((uint)(length - 1) >= MaxBlobLength)
            throw new DEException("StoreBlobLengthInvalid", DEErrorKind.InvalidArgument,
                $"A stored blob is 1 to {MaxBlobLength} bytes long, not {length}.", length);
    }

    private static DEException InvalidHandle(ulong handle) =>
        new("StoreHandleInvalid", DEErrorKind.InvalidArgument,
            $"0x{handle:X} is not a live blob of this compact store (freed, moved by compaction, or never allocated).",
            handle);

    private static long ArrayBytes(long length, int elementSize) => 24 + length * elementSize;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* SlotAddress(Slab slab, int slot) => slab.Data + (nint)slot * slab.Class.SlotSize;

    // ---- lookup ----

    private Slab Resolve(ulong handle, out int slot, out uint meta)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!TryResolve(handle, out var slab, out slot, out meta)) throw InvalidHandle(handle);
        return slab;
    }

    private bool TryResolve(ulong handle, [NotNullWhen(true)] out Slab? slab, out int slot, out uint meta)
    {
        slab = null;
        meta = 0;
        slot = (int)(handle >> SlotShift) & ((1 << SlotBits) - 1);
        if (handle == 0 || handle >> HandleBits != 0) return false;
        int id = (int)(handle >> SlabIdShift);
        var table = Volatile.Read(ref _slabs);
        if ((uint)id >= (uint)table.Length) return false;
        var s = Volatile.Read(ref table[id]);
        if (s is null || slot >= s.Meta.Length) return false;
        meta = Volatile.Read(ref s.Meta[slot]);
        // A free slot's generation field is 0, which no handle has.
        if (meta >> GenerationShift != (uint)(handle & MaxGeneration)) return false;
        slab = s;
        return true;
    }

    // ---- allocation and free (class lock held) ----

    private bool TryAllocateLocked(SizeClass cls, int length, out ulong handle, out Slab slab, out int slot)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var s = FullestPartial(cls) ?? NewSlab(cls);
        if (s is null)
        {
            handle = 0;
            slab = null!;
            slot = 0;
            return false;
        }
        handle = TakeSlot(cls, s, length, out slot);
        slab = s;
        return true;
    }

    private static ulong TakeSlot(SizeClass cls, Slab s, int length, out int slot)
    {
        slot = s.FreeHead;
        s.FreeHead = NextFreeSlot(s.Meta[slot]);
        s.FreeCount--;
        int generation = s.NextGeneration;
        s.NextGeneration = generation == MaxGeneration ? 1 : generation + 1;
        Volatile.Write(ref s.Meta[slot], ((uint)generation << GenerationShift) | (uint)length);
        Volatile.Write(ref cls.Live, cls.Live + 1);
        Volatile.Write(ref cls.Stored, cls.Stored + length);
        Rebucket(cls, s);
        return MakeHandle(s.Id, slot, generation);
    }

    /// <summary>Frees a live blob; <paramref name="slabReleased"/> is the bytes of the slab it left empty and released, or 0.</summary>
    private bool TryFree(ulong handle, out int slabReleased)
    {
        slabReleased = 0;
        if (!TryResolve(handle, out var s, out int slot, out _)) return false;
        var cls = s.Class;
        int id = (int)(handle >> SlabIdShift);
        lock (cls.Gate)
        {
            if (_disposed || s.Id != id || s.Data == null) return false;
            uint meta = s.Meta[slot];
            if (meta >> GenerationShift != (uint)(handle & MaxGeneration)) return false;
            int bytes = s.Bytes;
            if (FreeSlot(cls, s, slot, meta)) slabReleased = bytes;
        }
        return true;
    }

    /// <summary>Wipes and frees one slot; releases the slab when it becomes empty (returns true then).</summary>
    private bool FreeSlot(SizeClass cls, Slab s, int slot, uint meta)
    {
        int length = (int)(meta & LengthMask);
        Volatile.Write(ref s.Meta[slot], FreeSlotMeta(s.FreeHead));
        s.FreeHead = slot;
        s.FreeCount++;
        // Only the blob's bytes were ever exposed; the rest of the slot is still zero.
        NativeMemory.Clear(SlotAddress(s, slot), (nuint)length);
        Volatile.Write(ref cls.Live, cls.Live - 1);
        Volatile.Write(ref cls.Stored, cls.Stored - length);
        if (s.FreeCount == s.SlotCount)
        {
            ReleaseSlab(cls, s);
            return true;
        }
        Rebucket(cls, s);
        return false;
    }

    // ---- slabs (class lock held) ----

    /// <summary>
    /// A new slab of the size <see cref="SlabBytesAt"/> gives the class's next slab; or, when the class keeps a released
    /// slab's bookkeeping of that size or smaller, of the biggest such size, so the bookkeeping serves again (slabs are
    /// released in any order, so what is kept seldom matches the next size the schedule gives; a smaller slab only
    /// means one more slab).
    /// </summary>
    private Slab? NewSlab(SizeClass cls)
    {
        int size = SlabBytesAt(cls.SlabCount), below = 0, above = int.MaxValue;
        for (int i = 0; i < cls.CacheCount; i++)
        {
            int bytes = cls.Cache[i]!.Bytes;
            if (bytes <= size) below = Math.Max(below, bytes);
            else above = Math.Min(above, bytes);
        }
        return NewSlab(cls, below > 0 ? below : above < int.MaxValue ? above : size);
    }

    /// <summary>Counts <paramref name="size"/> more bytes of slabs when the limit and the growth gate allow it.</summary>
    private bool TryCount(int size)
    {
        while (true)
        {
            long current = Volatile.Read(ref _allocated);
            long next = current + size;
            if (LimitBytes is long limit && next > limit) return false;
            if (GrowthGate is { } gate && !gate(next)) return false;
            if (Interlocked.CompareExchange(ref _allocated, next, current) == current) return true;
        }
    }

    private Slab? NewSlab(SizeClass cls, int size)
    {
        int slots = size / cls.SlotSize;
        if (GrowthLock is { } budget)
        {
            lock (budget)
                if (!TryCount(size)) return null;
        }
        else if (!TryCount(size)) return null;
        byte* data;
        try
        {
            data = (byte*)NativeMemory.AlignedAlloc((nuint)size, SlabAlignment);
        }
        catch
        {
            Interlocked.Add(ref _allocated, -size);
            throw;
        }
        // Written before it is cleared: the clear reads its first byte first (a null check), which for memory the kernel
        // has not given yet maps the shared zero page and makes the clear's first write fault a second time (FramePool).
        *data = 0;
        NativeMemory.Clear(data, (nuint)size);
        var slab = Cached(cls, slots);
        if (slab is null)
        {
            slab = new Slab(cls, slots);
            Interlocked.Add(ref _slabMetadata, SlabMetadataBytes(slots));
            Interlocked.Add(ref _slabBookkeepingMade, SlabMetadataBytes(slots));
        }
        slab.Bytes = size;
        lock (_tableGate)
        {
            int id;
            if (_freeIdCount > 0) id = _freeIds[--_freeIdCount];
            else if (_nextId <= MaxSlabId) id = _nextId++;
            else id = 0;
            if (id == 0)
            {
                NativeMemory.AlignedFree(data);
                Interlocked.Add(ref _allocated, -size);
                CacheSlab(cls, slab);
                return null;
            }
            if (id >= _slabs.Length)
            {
                int length = Math.Min(_slabs.Length * 2, MaxSlabId + 1);
                var slabs = new Slab?[length];
                Array.Copy(_slabs, slabs, _slabs.Length);
                Array.Resize(ref _generations, length);
                Array.Resize(ref _freeIds, length);
                Volatile.Write(ref _slabs, slabs);
            }
            slab.Id = id;
            slab.NextGeneration = _generations[id] == 0 ? 1 : _generations[id];
            slab.Data = data;
            slab.FreeCount = slots;
            // Chained in order so the lowest slots are handed out first.
            for (int i = 0; i < slots; i++) slab.Meta[i] = FreeSlotMeta(i + 1 < slots ? i + 1 : -1);
            slab.FreeHead = 0;
            slab.Draining = false;
            slab.Bucket = -1;
            Volatile.Write(ref _slabs[id], slab);
        }
        Volatile.Write(ref cls.SlabCount, cls.SlabCount + 1);
        cls.Bytes += size;
        return slab;
    }

    private void ReleaseSlab(SizeClass cls, Slab s)
    {
        if (s.Bucket >= 0) Unlink(cls, s);
        s.Draining = false;
        s.Incarnation++;
        byte* data = s.Data;
        s.Data = null;
        lock (_tableGate)
        {
            Volatile.Write(ref _slabs[s.Id], null);
            _generations[s.Id] = (ushort)s.NextGeneration;
            _freeIds[_freeIdCount++] = s.Id;
        }
        s.Id = 0;
        // Freed slots are wiped as they go; wipe the whole slab anyway before the OS gets it back.
        NativeMemory.Clear(data, (nuint)s.Bytes);
        NativeMemory.AlignedFree(data);
        Interlocked.Add(ref _allocated, -s.Bytes);
        Interlocked.Add(ref _freedSinceTrim, s.Bytes);
        Volatile.Write(ref cls.SlabCount, cls.SlabCount - 1);
        cls.Bytes -= s.Bytes;
        CacheSlab(cls, s);
    }

    /// <summary>
    /// Keeps a released slab's bookkeeping for reuse; with the cache full, the oldest kept goes (a class cycling between
    /// none and one small slab then reuses its own, whatever sizes the cache held before). The cache serves churn within
    /// a pass and from one pass to the next: <see cref="TrimSlabCache"/> drops what it kept through a whole pass unused.
    /// </summary>
    private void CacheSlab(SizeClass cls, Slab s)
    {
        if (cls.CacheCount == SlabCacheLimit)
        {
            var oldest = cls.Cache[0]!;
            Array.Copy(cls.Cache, 1, cls.Cache, 0, SlabCacheLimit - 1);
            cls.CacheCount--;
            Interlocked.Add(ref _slabMetadata, -SlabMetadataBytes(oldest.SlotCount));
        }
        s.KeptThroughTrim = false;
        cls.Cache[cls.CacheCount++] = s;
    }

    /// <summary>
    /// Drops the bookkeeping kept for released slabs, and what compaction works in (<see cref="MetadataBytes"/> falls by
    /// it) and returns its bytes: with <paramref name="all"/>, everything kept; otherwise what was already kept at the
    /// previous trim and has not been reused since (compaction's work lists only once the store holds no slab), while what was
    /// released since the previous trim is kept until the next one. The engine calls
    /// it at the end of each pass: slabs that guest reads emptied between two passes serve the next pass that
    /// compresses or patches those pages again (without a slab's bookkeeping being made anew: patch_page allocates
    /// nothing), and a pass that releases no slab (every stable pass) leaves nothing kept. Kept any longer, the cache
    /// would hold memory for slabs that no longer exist (on a small host it was a quarter of the store's bookkeeping
    /// once stable).
    /// </summary>
    public long TrimSlabCache(bool all = false)
    {
        if (_disposed) return 0;
        long dropped = 0;
        foreach (var cls in _classes)
        {
            if (Volatile.Read(ref cls.CacheCount) == 0) continue;
            lock (cls.Gate)
            {
                int kept = 0;
                for (int i = 0; i < cls.CacheCount; i++)
                {
                    var s = cls.Cache[i]!;
                    cls.Cache[i] = null;
                    if (!all && !s.KeptThroughTrim)
                    {
                        s.KeptThroughTrim = true;
                        cls.Cache[kept++] = s; // order kept: the oldest stays first
                        continue;
                    }
                    dropped += SlabMetadataBytes(s.SlotCount);
                }
                cls.CacheCount = kept;
            }
        }
        if (dropped > 0) Interlocked.Add(ref _slabMetadata, -dropped);
        lock (_compactGate)
        {
            // Compaction's work lists stay while the store holds slabs (they are as large as the largest compaction's slab
            // lists of slabs: a kilobyte or two on Compare's inputs): dropped after each pass without a compaction, they were made anew by the next pass
            // that stored blobs and settled them (session 35: 200-1,080 B a pass, all of what a re-patching pass allocated
            // beyond an idle one on the guest images).
            if (all || (!_compactionUsed && AllocatedBytes == 0))
            {
                dropped += _compactionBytes;
                _compaction = null;
                Volatile.Write(ref _compactionBytes, 0);
            }
            _compactionUsed = false;
        }
        return dropped;
    }

    /// <summary>A released slab's bookkeeping of <paramref name="slots"/> slots, taken out of the class's cache; null when none.</summary>
    private static Slab? Cached(SizeClass cls, int slots)
    {
        for (int i = cls.CacheCount - 1; i >= 0; i--)
        {
            var s = cls.Cache[i]!;
            if (s.SlotCount != slots) continue;
            cls.Cache[i] = cls.Cache[--cls.CacheCount];
            cls.Cache[cls.CacheCount] = null;
            return s;
        }
        return null;
    }

    private static Slab? FullestPartial(SizeClass cls) =>
        cls.NonEmpty == 0 ? null : cls.Heads[BitOperations.Log2(cls.NonEmpty)];

    /// <summary>Files a slab under its occupancy bucket; full and draining slabs are in no bucket.</summary>
    private static void Rebucket(SizeClass cls, Slab s)
    {
        int bucket = s.Draining || s.FreeCount == 0 ? -1 : (int)((long)(s.SlotCount - s.FreeCount) * Buckets / s.SlotCount);
        if (bucket == s.Bucket) return;
        if (s.Bucket >= 0) Unlink(cls, s);
        if (bucket >= 0) Link(cls, s, bucket);
    }

    private static void Link(SizeClass cls, Slab s, int bucket)
    {
        s.Prev = null;
        s.Next = cls.Heads[bucket];
        if (s.Next is not null) s.Next.Prev = s;
        cls.Heads[bucket] = s;
        cls.NonEmpty |= 1u << bucket;
        s.Bucket = bucket;
    }

    private static void Unlink(SizeClass cls, Slab s)
    {
        int bucket = s.Bucket;
        if (s.Prev is not null) s.Prev.Next = s.Next;
        else cls.Heads[bucket] = s.Next;
        if (s.Next is not null) s.Next.Prev = s.Prev;
        if (cls.Heads[bucket] is null) cls.NonEmpty &= ~(1u << bucket);
        s.Prev = s.Next = null;
        s.Bucket = -1;
    }

    // ---- compaction ----

    /// <summary>Marks the sparsest slabs of a class as draining, as many as the others can absorb.</summary>
    private void PlanDrain(SizeClass cls, double threshold, List<(Slab, int)> sources, List<Slab> scratch)
    {
        lock (cls.Gate)
        {
            if (_disposed) return;
            foreach (var s in Drainable(cls, threshold, scratch))
            {
                Unlink(cls, s);
                s.Draining = true;
                sources.Add((s, s.Incarnation));
            }
            scratch.Clear();
        }
    }

    /// <summary>
    /// When no slab of a class can be drained into the others but the class as a whole is less than
    /// <paramref name="threshold"/> full and its blobs fit in one slab smaller than what it holds (its slabs were made when
    /// it held more: single blobs a pass freed once it grouped their pages), makes that slab and marks every other slab of
    /// the class as draining into it.
    /// </summary>
    private (Slab, int)? PlanResize(SizeClass cls, double threshold, List<(Slab, int)> sources)
    {
        lock (cls.Gate)
        {
            if (_disposed) return null;
            int size = ResizeTarget(cls, threshold);
            if (size == 0) return null;
            var target = NewSlab(cls, size);
            if (target is null) return null;
            Rebucket(cls, target);
            lock (_tableGate)
            {
                for (int id = 1; id < _nextId; id++)
                {
                    var s = _slabs[id];
                    if (s is null || s == target || s.Class != cls || s.Data == null) continue;
                    if (s.Bucket >= 0) Unlink(cls, s);
                    s.Draining = true;
                    sources.Add((s, s.Incarnation));
                }
            }
            return (target, target.Incarnation);
        }
    }

    /// <summary>
    /// When a class holds at least a page more than the fewest slabs its blobs need (<see cref="LeastSlabsFor"/>), makes
    /// those slabs (class lock held): keeps, for each slab size they have, the fullest slab of that size the class has,
    /// makes the sizes it has none of, and marks every other slab as draining into them. Null when there is nothing to
    /// settle, or a slab cannot be made (the store's limit or growth gate; none is made then).
    /// </summary>
    private bool PlanSettle(SizeClass cls, CompactionScratch w)
    {
        var sources = w.Sources;
        lock (cls.Gate)
        {
            if (_disposed) return false;
            if (Unsettled(cls) == 0) return false;
            var (full, tail) = LeastLayout(cls.SlotSize, cls.Live);
            var slabs = w.Slabs;
            slabs.Clear();
            lock (_tableGate)
            {
                for (int id = 1; id < _nextId; id++)
                {
                    var s = _slabs[id];
                    if (s is not null && s.Class == cls && s.Data != null && !s.Draining) slabs.Add(s);
                }
            }
            // Fullest first: the slabs kept are those with the most blobs already in place. One walk: per size, the
            // first slabs of that size are kept, as many as the fewest slabs have of it.
            slabs.Sort((a, b) => (b.SlotCount - b.FreeCount).CompareTo(a.SlotCount - a.FreeCount));
            if (w.Keep.Length < slabs.Count) w.Keep = new bool[Math.Max(slabs.Count, 2 * w.Keep.Length)];
            var keep = w.Keep;
            Array.Clear(keep, 0, slabs.Count);
            long fullWanted = full;
            int tailWanted = tail;
            for (int i = 0; i < slabs.Count; i++)
            {
                int bytes = slabs[i].Bytes;
                if (bytes == SlabSize && fullWanted > 0)
                {
                    keep[i] = true;
                    fullWanted--;
                    continue;
                }
                int bit = Array.IndexOf(TailSizes, bytes);
                if (bit >= 0 && (tailWanted & (1 << bit)) != 0)
                {
                    keep[i] = true;
                    tailWanted &= ~(1 << bit);
                }
            }
            var missing = w.Missing;
            missing.Clear();
            for (long f = 0; f < fullWanted; f++) missing.Add(SlabSize);
            for (int i = 0; i < TailSizes.Length; i++)
                if ((tailWanted & (1 << i)) != 0) missing.Add(TailSizes[i]);
            long draining = 0, making = 0;
            for (int i = 0; i < slabs.Count; i++)
                if (!keep[i]) draining += slabs[i].Bytes;
            foreach (int size in missing) making += size;
            if (draining - making < FirstSlabSize)
            {
                slabs.Clear(); // holds no slab past the call
                return false;
            }
            var made = w.Made;
            int first = made.Count;
            try
            {
                foreach (int size in missing)
                {
                    var slab = NewSlab(cls, size);
                    if (slab is null)
                    {
                        ReleaseMade(cls, made, first);
                        slabs.Clear();
                        return false;
                    }
                    Rebucket(cls, slab);
                    made.Add((slab, slab.Incarnation));
                }
            }
            catch
            {
                // Native memory refused (AlignedAlloc): the slabs made so far are empty; none is left behind.
                ReleaseMade(cls, made, first);
                slabs.Clear();
                throw;
            }
            // Sparsest first: a drain cut short (owners refusing, concurrent allocations taking the room) has then
            // emptied, and released, as many slabs as its moves could.
            for (int i = slabs.Count - 1; i >= 0; i--)
            {
                if (keep[i]) continue;
                var s = slabs[i];
                if (s.Bucket >= 0) Unlink(cls, s);
                s.Draining = true;
                sources.Add((s, s.Incarnation));
            }
            slabs.Clear();
            return true;
        }
    }

    /// <summary>Releases the slabs a failed settle of one class made (class lock held), from <paramref name="first"/> on.</summary>
    private void ReleaseMade(SizeClass cls, List<(Slab Slab, int Incarnation)> made, int first)
    {
        for (int i = first; i < made.Count; i++) ReleaseSlab(cls, made[i].Slab);
        made.RemoveRange(first, made.Count - first);
    }


    /// <summary>The bytes a class holds beyond the fewest slabs its blobs need, when that is a page or more (class lock held).</summary>
    private static long Unsettled(SizeClass cls)
    {
        long extra = cls.Live == 0 ? 0 : cls.Bytes - LeastSlabsFor(cls.SlotSize, cls.Live).Bytes;
        return extra >= FirstSlabSize ? extra : 0;
    }

    /// <summary>Releases the slab a resize made when it still holds no blob (its blobs' owners freed them all first, say).</summary>
    private bool ReleaseIfEmpty(SizeClass cls, Slab slab, int incarnation, out int bytes)
    {
        bytes = 0;
        lock (cls.Gate)
        {
            if (_disposed || slab.Incarnation != incarnation || slab.Data == null || slab.FreeCount != slab.SlotCount) return false;
            bytes = slab.Bytes;
            ReleaseSlab(cls, slab);
            return true;
        }
    }

    /// <summary>
    /// The bytes of the one slab a class's blobs would move to (class lock held): the smallest size a class's slab can have
    /// (a page, doubled up to <see cref="SlabSize"/>) that holds them all, when that is less than the class holds and the
    /// class is less than <paramref name="threshold"/> full; else 0.
    /// </summary>
    private static int ResizeTarget(SizeClass cls, double threshold)
    {
        long live = cls.Live;
        if (live == 0 || live > SlabSize / cls.SlotSize || live * cls.SlotSize >= threshold * cls.Bytes) return 0;
        int size = SmallestSlabFor(cls.SlotSize, live);
        return size < cls.Bytes ? size : 0;
    }

    /// <summary>
    /// The partly filled slabs of a class that compaction can empty (class lock held): the sparsest first, each less than
    /// <paramref name="threshold"/> full, as long as the free slots of the slabs not chosen can take the blobs of those
    /// chosen. Listed in <paramref name="scratch"/>, which it returns.
    /// </summary>
    private static List<Slab> Drainable(SizeClass cls, double threshold, List<Slab> scratch)
    {
        scratch.Clear();
        long free = 0;
        for (int b = 0; b < Buckets; b++)
            for (var s = cls.Heads[b]; s is not null; s = s.Next)
            {
                scratch.Add(s);
                free += s.FreeCount;
            }
        // Sparsest first: the least full for its size (so the threshold stops the walk: every slab after is fuller), and
        // of two alike the larger, which gives back more.
        scratch.Sort(static (a, b) =>
        {
            int order = ((long)(a.SlotCount - a.FreeCount) * b.SlotCount).CompareTo((long)(b.SlotCount - b.FreeCount) * a.SlotCount);
            return order != 0 ? order : b.SlotCount.CompareTo(a.SlotCount);
        });
        int chosen = 0;
        long live = 0;
        for (int k = 0; k < scratch.Count; k++)
        {
            var s = scratch[k];
            int used = s.SlotCount - s.FreeCount;
            if (used >= threshold * s.SlotCount) break;
            // Emptied, the slab's own free slots are gone, and its blobs need room in the slabs left.
            if (live + used > free - s.FreeCount) continue;
            free -= s.FreeCount;
            live += used;
            // The chosen gathered at the front: one passed over (too full for the room left) stays out of the list
            // (session 21: keeping the first `chosen` of the list drained a slab passed over, and the room planned for
            // the blobs ran out: the drain then stopped with blobs left in slabs meant to empty).
            scratch[chosen++] = s;
        }
        scratch.RemoveRange(chosen, scratch.Count - chosen);
        return scratch;
    }

    /// <summary>Lets the sources still held take blobs again, noting in <paramref name="left"/> the blobs each still holds.</summary>
    private void Undrain(SizeClass cls, ReadOnlySpan<(Slab Slab, int Incarnation)> sources, Dictionary<(Slab, int), long> left)
    {
        lock (cls.Gate)
        {
            if (_disposed) return;
            foreach (var (slab, incarnation) in sources)
            {
                if (slab.Incarnation != incarnation || !slab.Draining) continue;
                left[(slab, incarnation)] = slab.SlotCount - slab.FreeCount;
                Volatile.Write(ref slab.Draining, false);
                Rebucket(cls, slab);
            }
        }
    }

    // ---- bookkeeping types ----

    private sealed class SizeClass
    {
        // Object header, fields and the bucket and cache arrays.
        public const int OverheadBytes = 16 + 96 + 24 + Buckets * 8 + 24 + SlabCacheLimit * 8;

        public SizeClass(int index) => SlotSize = SlotSizeOfClass(index);

        public readonly Lock Gate = new();
        public readonly int SlotSize;
        /// <summary>Partly filled, non-draining slabs by occupancy bucket (doubly linked).</summary>
        public readonly Slab?[] Heads = new Slab?[Buckets];
        /// <summary>Bit b set when bucket b is not empty.</summary>
        public uint NonEmpty;
        public int SlabCount;
        /// <summary>Native bytes of the class's slabs (class lock held to change).</summary>
        public long Bytes;
        public long Live;
        public long Stored;
        /// <summary>Released slabs whose managed arrays are kept for reuse.</summary>
        public readonly Slab?[] Cache = new Slab?[SlabCacheLimit];
        public int CacheCount;
    }

    private sealed class Slab(SizeClass cls, int slots)
    {
        // Object header and fields (session 21: narrow fields, 80 bytes; 96 with ints).
        public const int OverheadBytes = 80;

        public readonly SizeClass Class = cls;
        /// <summary>Per slot: generation &lt;&lt; 16 | exact length; when free, generation 0 and the next free slot + 1 (<see cref="FreeSlotMeta"/>).</summary>
        public readonly uint[] Meta = new uint[slots];
        public byte* Data;
        public int Id;
        /// <summary>Bumped when the slab is released, so compaction notices its slab went away.</summary>
        public int Incarnation;
        /// <summary>Cached (released) and already through one <see cref="TrimSlabCache"/>: the next drops it.</summary>
        public bool KeptThroughTrim;
        private readonly ushort _slotCount = (ushort)slots;
        private ushort _freeHead = ushort.MaxValue, _freeCount, _nextGeneration;
        private byte _pages;
        private sbyte _bucket = -1;

        /// <summary>Slots of the slab (its bytes over the class's slot size, rounded down; at most 2,048).</summary>
        public int SlotCount => _slotCount;
        /// <summary>Native bytes of the slab while it holds memory (<see cref="SlabBytesAt"/> when it was made: whole pages, at most 16).</summary>
        public int Bytes
        {
            get => _pages * FirstSlabSize;
            set => _pages = value % FirstSlabSize == 0 && value is >= 0 and <= SlabSize
                ? (byte)(value / FirstSlabSize)
                : throw new InvalidOperationException($"A slab of {value} bytes is not whole pages up to {SlabSize}.");
        }
        /// <summary>The first free slot; -1 when none.</summary>
        public int FreeHead { get => _freeHead == ushort.MaxValue ? -1 : _freeHead; set => _freeHead = value < 0 ? ushort.MaxValue : (ushort)value; }
        public int FreeCount { get => _freeCount; set => _freeCount = (ushort)value; }
        public int NextGeneration { get => _nextGeneration; set => _nextGeneration = (ushort)value; }
        public int Bucket { get => _bucket; set => _bucket = (sbyte)value; }
        public bool Draining;
        public Slab? Prev;
        public Slab? Next;
    }
}
