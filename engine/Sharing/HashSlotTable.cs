using System.Runtime.CompilerServices;

namespace DifferenceEngine.Sharing;

/// <summary>
/// A map from 64-bit content hash to a 64-bit value, split into independently locked stripes of
/// open-addressed (linear probing) arrays, so lookups and inserts allocate nothing once grown.
/// </summary>
/// <remarks>
/// Callers hold <see cref="StripeLock"/> of the key around every call: the lock is exposed
/// because a merge must make "look up, compare, insert or add a reference" one atomic step.
/// </remarks>
internal sealed class HashSlotTable
{
    private const int StripeBits = 6;
    // Small to start with: a trust group's three tables cost 48 KiB empty (they were 768 KiB at 256 a stripe, more than
    // a small host's savings); a stripe grows with what it holds and keeps twice the last pass's fill (PassCapacity).
    private const int InitialCapacity = 16;
    private readonly Stripe[] _stripes = new Stripe[1 << StripeBits];

    public HashSlotTable()
    {
        for (int i = 0; i < _stripes.Length; i++) _stripes[i] = new Stripe();
    }

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
    /// Empties the table and gives back the room the last fill did not need: a stripe keeps a capacity of twice what it
    /// held (at least the initial one), so a table filled alike every pass allocates nothing, and one whose fill fell
    /// away shrinks.
    /// </summary>
    public void ClearAndShrink()
    {
        foreach (var s in _stripes)
            lock (s) s.ClearAndShrink();
    }

    /// <summary>
    /// Drops the entries <paramref name="keep"/> refuses (when more than half of a stripe's are) and shrinks stripes
    /// that hold less than a quarter of their capacity. Allocates only for the stripes it rebuilds.
    /// </summary>
    public void Trim(Func<ulong, ulong, bool>? keep = null)
    {
        foreach (var s in _stripes)
            lock (s) s.Trim(keep);
    }

    public long Count
    {
        get { long n = 0; foreach (var s in _stripes) lock (s) n += s.Count; return n; }
    }

    public long MetadataBytes
    {
        get { long n = 0; foreach (var s in _stripes) lock (s) n += s.Capacity * 2L * sizeof(ulong); return n; }
    }

    // Key 0 marks an empty slot; hash 0 is folded onto 1 (the bytes are compared anyway).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Normalize(ulong key) => key == 0 ? 1 : key;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Stripe StripeOf(ulong key) => _stripes[Normalize(key) >> (64 - StripeBits)];

    private sealed class Stripe
    {
        private ulong[] _keys = new ulong[InitialCapacity];
        private ulong[] _values = new ulong[InitialCapacity];
        public int Count;

        /// <summary>The most entries held since the last <see cref="ClearAndShrink"/> (entries also leave during a pass).</summary>
        private int _peak;

        public int Capacity => _keys.Length;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public bool TryGet(ulong key, out ulong value)
        {
            int mask = _keys.Length - 1;
            for (int i = (int)key & mask; ; i = (i + 1) & mask)
            {
                ulong k = _keys[i];
                if (k == key) { value = _values[i]; return true; }
                if (k == 0) { value = 0; return false; }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Set(ulong key, ulong value)
        {
            if ((Count + 1) * 4 > _keys.Length * 3) Grow();
            int mask = _keys.Length - 1;
            for (int i = (int)key & mask; ; i = (i + 1) & mask)
            {
                ulong k = _keys[i];
                if (k == key) { _values[i] = value; return; }
                if (k == 0)
                {
                    _keys[i] = key;
                    _values[i] = value;
                    if (++Count > _peak) _peak = Count;
                    return;
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public bool RemoveIf(ulong key, ulong expected)
        {
            int mask = _keys.Length - 1;
            int i = (int)key & mask;
            for (; ; i = (i + 1) & mask)
            {
                ulong k = _keys[i];
                if (k == 0) return false;
                if (k == key) break;
            }
            if (_values[i] != expected) return false;
            // Backward-shift deletion keeps every probe chain unbroken without tombstones.
            int hole = i;
            for (int j = (i + 1) & mask; _keys[j] != 0; j = (j + 1) & mask)
            {
                int home = (int)_keys[j] & mask;
                bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
                if (movable)
                {
                    _keys[hole] = _keys[j];
                    _values[hole] = _values[j];
                    hole = j;
                }
            }
            _keys[hole] = 0;
            _values[hole] = 0;
            Count--;
            return true;
        }

        public void Clear()
        {
            Array.Clear(_keys);
            Array.Clear(_values);
            Count = 0;
        }

        /// <summary>
        /// The capacity for <paramref name="entries"/> entries: the smallest power of two (at least the initial) that holds
        /// them under the 3/4 load at which <see cref="Set"/> grows, so a pass that fills the stripe alike next time neither
        /// grows it nor keeps twice the room it needs (the tables are most of the engine's metadata).
        /// </summary>
        private static int CapacityFor(int entries) =>
            (int)Math.Max(InitialCapacity, System.Numerics.BitOperations.RoundUpToPowerOf2((uint)(entries + entries / 3 + 2)));

        public void ClearAndShrink()
        {
            int target = CapacityFor(_peak);
            _peak = 0;
            if (_keys.Length >= target * 2)
            {
                _keys = new ulong[target];
                _values = new ulong[target];
                Count = 0;
            }
            else Clear();
        }

        public void Trim(Func<ulong, ulong, bool>? keep)
        {
            int live = Count;
            if (keep is not null)
            {
                live = 0;
                for (int i = 0; i < _keys.Length; i++)
                    if (_keys[i] != 0 && keep(_keys[i], _values[i])) live++;
            }
            int target = CapacityFor(live);
            bool shrink = _keys.Length >= target * 4;
            bool purge = (Count - live) * 2 > Count;
            if (!shrink && !purge) return;
            var oldKeys = _keys;
            var oldValues = _values;
            int capacity = shrink ? target : _keys.Length;
            _keys = new ulong[capacity];
            _values = new ulong[capacity];
            Count = 0;
            for (int i = 0; i < oldKeys.Length; i++)
                if (oldKeys[i] != 0 && (keep is null || keep(oldKeys[i], oldValues[i]))) Set(oldKeys[i], oldValues[i]);
        }

        private void Grow()
        {
            var oldKeys = _keys;
            var oldValues = _values;
            _keys = new ulong[oldKeys.Length * 2];
            _values = new ulong[oldKeys.Length * 2];
            Count = 0;
            for (int i = 0; i < oldKeys.Length; i++)
                if (oldKeys[i] != 0) Set(oldKeys[i], oldValues[i]);
        }
    }
}
