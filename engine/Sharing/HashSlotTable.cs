using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace DifferenceEngine.Sharing;

/// <summary>
/// A map from 64-bit content hash to a 64-bit value, split into independently locked stripes of
/// open-addressed (linear probing) slots, so lookups and inserts allocate nothing once grown.
/// </summary>
/// <remarks>
/// Callers hold <see cref="StripeLock"/> of the key around every call: the lock is exposed
/// because a merge must make "look up, compare, insert or add a reference" one atomic step.
/// <para>Every table is a <b>pass table</b> (the stable, unstable and similarity tables, emptied at every pass's start
/// and end, as KSM's unstable tree; the stable table since session 21, when tables kept across passes, in pinned arrays,
/// went): it holds memory only during a pass: <see cref="BeginPass"/> allocates, in one native block, room for what each stripe held at its
/// peak in the pass before, and <see cref="EndPass"/> gives all of it back, so a host between passes holds none of it
/// (session 18: 0.5 MiB of a guest-image host's metadata at rest, 2 MiB with sharing alone) and a pass filled alike
/// still allocates nothing on the managed heap. A stripe of a pass table that outgrows its room moves to native memory
/// of its own until the pass ends.</para>
/// </remarks>
internal sealed unsafe class HashSlotTable : IDisposable
{
    private const int StripeBits = 6;
    // Small to start with: a trust group's tables cost 16 KiB each empty (they were 256 KiB at 256 a stripe, more than
    // a small host's savings); a stripe grows with what it holds.
    private const int InitialCapacity = 16;
    private readonly Stripe[] _stripes = new Stripe[1 << StripeBits];
    private byte* _block;
    private long _blockBytes;
    private bool _disposed;

    /// <summary>A table that holds memory only between <see cref="BeginPass"/> and <see cref="EndPass"/> (used outside
    /// them it works all the same, on native memory it gives back at the next <see cref="EndPass"/>).</summary>
    public HashSlotTable()
    {
        for (int i = 0; i < _stripes.Length; i++) _stripes[i] = new Stripe();
    }

    /// <summary>Bytes of a new table's first pass: every stripe's initial room.</summary>
    public static long EmptyMetadataBytes => (1L << StripeBits) * InitialCapacity * 2 * sizeof(ulong);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public object StripeLock(ulong key) => StripeOf(key);

    public bool TryGet(ulong key, out ulong value) => StripeOf(key).TryGet(Normalize(key), out value);

    public void Set(ulong key, ulong value) => StripeOf(key).Set(Normalize(key), value);

    /// <summary>Removes the key only if it still maps to <paramref name="expected"/>.</summary>
    public bool RemoveIf(ulong key, ulong expected) => StripeOf(key).RemoveIf(Normalize(key), expected);

    public void Clear()
    {
        foreach (var s in _stripes)
            lock (s) s.Clear();
    }

    /// <summary>
    /// A pass table's start of a pass: empties it and gives every stripe, in one native block, room for what it held at
    /// its peak in the pass before (at least the initial room), so a pass filled alike grows nothing.
    /// </summary>
    public void BeginPass()
    {
        EndPass();
        long slots = 0;
        foreach (var s in _stripes) slots += s.Planned;
        byte* block = (byte*)NativeMemory.AllocZeroed((nuint)(slots * Stripe.SlotBytes));
        _block = block;
        _blockBytes = slots * Stripe.SlotBytes;
        foreach (var s in _stripes)
            lock (s)
            {
                int planned = s.Planned; // what the block was sized with, whatever Adopt does to the plan
                s.Adopt((ulong*)block, planned);
                block += (long)planned * Stripe.SlotBytes;
            }
    }

    /// <summary>
    /// A pass table's end of a pass: empties it and frees all its memory, keeping for the next <see cref="BeginPass"/>
    /// each stripe's room for the most it held (entries also leave during a pass). A pass that did not finish
    /// (<paramref name="complete"/> false: cancelled or failed) saw only part of its pages, so a stripe's room only grows.
    /// </summary>
    public void EndPass(bool complete = true)
    {
        foreach (var s in _stripes)
            lock (s) s.Release(complete);
        if (_block != null)
        {
            NativeMemory.Free(_block);
            _block = null;
            _blockBytes = 0;
        }
    }

    public long Count
    {
        get { long n = 0; foreach (var s in _stripes) lock (s) n += s.Count; return n; }
    }

    /// <summary>
    /// Bytes of slots the table holds now (a pass table between passes: none): its block, all of it until the pass ends
    /// (a stripe that outgrew its part leaves it there), and the native memory of each stripe that grew.
    /// </summary>
    public long MetadataBytes
    {
        get
        {
            long n = Volatile.Read(ref _blockBytes);
            foreach (var s in _stripes) lock (s) n += s.OwnedBytes;
            return n;
        }
    }

    /// <summary>Frees the table's native memory.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        EndPass();
    }

    // Key 0 marks an empty slot; hash 0 is folded onto 1 (the bytes are compared anyway).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Normalize(ulong key) => key == 0 ? 1 : key;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Stripe StripeOf(ulong key) => _stripes[Normalize(key) >> (64 - StripeBits)];

    /// <summary>
    /// One stripe: <see cref="Capacity"/> slots (any number: a key's home slot is its Fibonacci hash scaled to it) of key
    /// then value, at <c>_slots</c>: a part of its table's block, or native memory of its own (<c>_owned</c>).
    /// </summary>
    private sealed class Stripe
    {
        public const int SlotBytes = 2 * sizeof(ulong);

        private ulong* _slots;
        private bool _owned;
        public int Capacity;
        public int Count;

        /// <summary>The most entries held since the last <see cref="Release"/> (entries also leave during a pass).</summary>
        private int _peak;

        /// <summary>The room for its next pass.</summary>
        public int Planned = InitialCapacity;

        /// <summary>Bytes of native memory of the stripe's own (it grew out of its part of the table's block).</summary>
        public long OwnedBytes => _owned ? (long)Capacity * SlotBytes : 0;

        /// <summary>The slot a key's probe starts at: its Fibonacci hash (the stripe took the top bits) scaled to the capacity.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static int Home(ulong key, int capacity) => (int)(((key * 0x9E3779B97F4A7C15UL) >> 32) * (uint)capacity >> 32);

        /// <summary>The slot after <paramref name="i"/>, wrapping at the capacity.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static int Next(int i, int capacity) => i + 1 == capacity ? 0 : i + 1;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public bool TryGet(ulong key, out ulong value)
        {
            int capacity = Capacity;
            if (capacity == 0)
            {
                value = 0;
                return false;
            }
            ulong* slots = _slots;
            for (int i = Home(key, capacity); ; i = Next(i, capacity))
            {
                ulong k = slots[2 * i];
                if (k == key) { value = slots[2 * i + 1]; return true; }
                if (k == 0) { value = 0; return false; }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Set(ulong key, ulong value)
        {
            if ((Count + 1) * 4 > Capacity * 3) Grow();
            int capacity = Capacity;
            ulong* slots = _slots;
            for (int i = Home(key, capacity); ; i = Next(i, capacity))
            {
                ulong k = slots[2 * i];
                if (k == key) { slots[2 * i + 1] = value; return; }
                if (k == 0)
                {
                    slots[2 * i] = key;
                    slots[2 * i + 1] = value;
                    if (++Count > _peak) _peak = Count;
                    return;
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public bool RemoveIf(ulong key, ulong expected)
        {
            int capacity = Capacity;
            if (capacity == 0) return false;
            ulong* slots = _slots;
            int i = Home(key, capacity);
            for (; ; i = Next(i, capacity))
            {
                ulong k = slots[2 * i];
                if (k == 0) return false;
                if (k == key) break;
            }
            if (slots[2 * i + 1] != expected) return false;
            // Backward-shift deletion keeps every probe chain unbroken without tombstones.
            int hole = i;
            for (int j = Next(i, capacity); slots[2 * j] != 0; j = Next(j, capacity))
            {
                int home = Home(slots[2 * j], capacity);
                bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
                if (movable)
                {
                    slots[2 * hole] = slots[2 * j];
                    slots[2 * hole + 1] = slots[2 * j + 1];
                    hole = j;
                }
            }
            slots[2 * hole] = 0;
            slots[2 * hole + 1] = 0;
            Count--;
            return true;
        }

        public void Clear()
        {
            if (Capacity > 0) NativeMemory.Clear(_slots, (nuint)((long)Capacity * SlotBytes));
            Count = 0;
        }

        /// <summary>
        /// The capacity for <paramref name="entries"/> entries: room for them at a load of 2/3 (at least the initial), under
        /// the 3/4 at which <see cref="Set"/> grows, so a pass that fills the stripe alike, or a little more, next time does
        /// not grow it, and the room is not rounded up to a power of two (session 18: the similarity table at rest was 39%
        /// to 46% full; the tables are most of the engine's metadata).
        /// </summary>
        private static int CapacityFor(int entries) => Math.Max(InitialCapacity, entries + entries / 2 + 2);

        /// <summary>The stripe takes <paramref name="capacity"/> zeroed slots of its table's block.</summary>
        public void Adopt(ulong* slots, int capacity)
        {
            Release();
            _slots = slots;
            Capacity = capacity;
        }

        /// <summary>
        /// The stripe lets its slots go, and plans its next pass's room from its peak (after a pass that did
        /// not finish, from its peak only where that is more than planned).
        /// </summary>
        public void Release(bool complete = true)
        {
            if (_peak > 0 || Capacity > 0) Planned = complete ? CapacityFor(_peak) : Math.Max(Planned, CapacityFor(_peak));
            _peak = 0;
            if (_owned) NativeMemory.Free(_slots);
            _owned = false;
            _slots = null;
            Capacity = 0;
            Count = 0;
        }

        /// <summary>Grows by half into native memory of the stripe's own (the block's part, if it had one, is left).</summary>
        private void Grow()
        {
            ulong* old = _slots;
            int oldCapacity = Capacity;
            bool oldOwned = _owned;
            int capacity = Math.Max(InitialCapacity, Capacity + Capacity / 2);
            _slots = (ulong*)NativeMemory.AllocZeroed((nuint)((long)capacity * SlotBytes));
            _owned = true;
            Capacity = capacity;
            Count = 0;
            for (int i = 0; i < oldCapacity; i++)
                if (old[2 * i] != 0) Set(old[2 * i], old[2 * i + 1]);
            if (oldOwned) NativeMemory.Free(old);
        }
    }
}
