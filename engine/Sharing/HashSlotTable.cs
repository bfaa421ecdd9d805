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
    private const int InitialCapacity = 256;
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
                if (k == 0) { _keys[i] = key; _values[i] = value; Count++; return; }
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
