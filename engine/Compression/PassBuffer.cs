using System.Runtime.InteropServices;

namespace DifferenceEngine.Compression;

/// <summary>
/// Items one pass collects, appended from the pass's workers: the cold shared pages (<see cref="SharedCandidate"/>) and
/// the shared blobs nominated for groups (<see cref="SharedNomination"/>). The buffer holds memory only during a pass: it
/// is native memory taken at the first append (room for what the pass before collected, so a pass like the last one
/// does not grow it) and given back by <see cref="EndPass"/>, so a host between passes holds none of it. It is counted in
/// the engine's metadata while it exists.
/// </summary>
/// <remarks>Session 21: the cold shared pages kept between passes were the shared blobs' line's largest part (190-290 KB
/// at rest on Compare's inputs, room for twice the last pass's candidates). Session 26: the nominations were a managed
/// list kept between passes and counted nowhere (room for 33,000 nominations, 256 KB or more, on the program snapshots).</remarks>
internal sealed unsafe class PassBuffer<T> : IDisposable where T : unmanaged
{
    /// <summary>Least room the buffer takes when it is made.</summary>
    private const int MinimumCapacity = 256;

    private readonly Lock _gate = new();
    private T* _items;
    private int _capacity;
    private int _count;
    // The most the buffer held during this pass (a consumer may truncate or clear it before the pass ends).
    private int _peak;
    private int _nextCapacity = MinimumCapacity;

    public int Count => _count;

    /// <summary>The most items the buffer held at once since its pass began (a consumer's clearing or truncating aside).</summary>
    public int Peak
    {
        get { lock (_gate) return _peak; }
    }

    /// <summary>Bytes the buffer holds now: none between passes.</summary>
    public long MetadataBytes
    {
        get { lock (_gate) return (long)_capacity * sizeof(T); }
    }

    /// <summary>Empties the buffer (a pass's start), keeping whatever memory it holds.</summary>
    public void Clear() => _count = 0;

    /// <summary>
    /// Keeps only the first <paramref name="count"/> items (a consumer that compacted <see cref="Items"/> in place); only
    /// while no worker appends.
    /// </summary>
    public void Truncate(int count) => _count = Math.Clamp(count, 0, _count);

    /// <summary>
    /// A pass's end (or failure): empties the buffer and frees its memory; the next pass's buffer starts with room for the
    /// most this one held (whatever a consumer truncated or cleared since).
    /// </summary>
    public void EndPass()
    {
        lock (_gate)
        {
            // The peak and a sixteenth (rounded up to a power of two the room was up to twice what the pass needed:
            // session 36, 0.6 MiB of buffers at the guest images' peak).
            if (_peak > 0) _nextCapacity = (int)Math.Min(Array.MaxLength, Math.Max(MinimumCapacity, _peak + (long)_peak / 16));
            _peak = 0;
            Free();
        }
    }

    /// <summary>Appends a worker's batch.</summary>
    public void Add(ReadOnlySpan<T> batch)
    {
        if (batch.IsEmpty) return;
        lock (_gate)
        {
            if (_count + batch.Length > _capacity)
            {
                // By a quarter at a time: a pass that collects more than the last one holds at most a quarter more than it
                // needs (doubling held up to twice).
                int capacity = (int)Math.Min(Array.MaxLength,
                    Math.Max(Math.Max(_nextCapacity, _capacity + (long)_capacity / 4), _count + batch.Length));
                _items = (T*)NativeMemory.Realloc(_items, (nuint)capacity * (nuint)sizeof(T));
                _capacity = capacity;
            }
            batch.CopyTo(new Span<T>(_items + _count, batch.Length));
            _count += batch.Length;
            _peak = Math.Max(_peak, _count);
        }
    }

    /// <summary>The pass's items; only while no worker appends.</summary>
    public Span<T> Items => new(_items, _count);

    public void Dispose()
    {
        lock (_gate) Free();
    }

    private void Free()
    {
        NativeMemory.Free(_items);
        _items = null;
        _capacity = 0;
        _count = 0;
    }
}
