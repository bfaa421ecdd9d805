namespace DifferenceEngine.Memory;

/// <summary>
/// A small locked map from a 32-bit key to a value, for the rare entry that does not fit a table's narrow field (a
/// frame's reference count of 255 or more, a shared blob's count of 65,535 or more, a page group's fourth piece), with
/// the bytes it is counted at in the engine's metadata.
/// </summary>
internal sealed class SideTable<TValue> where TValue : struct
{
    /// <summary>Bytes counted for an entry (a dictionary entry and its bucket).</summary>
    public const int EntryBytes = 24;

    private readonly Dictionary<uint, TValue> _map = new();
    private readonly Lock _gate = new();

    public bool TryGet(uint key, out TValue value)
    {
        lock (_gate) return _map.TryGetValue(key, out value);
    }

    public void Set(uint key, TValue value)
    {
        lock (_gate) _map[key] = value;
    }

    public void Remove(uint key)
    {
        lock (_gate) _map.Remove(key);
    }

    /// <summary>The entries' bytes, as the engine's metadata counts them.</summary>
    public long MetadataBytes
    {
        get { lock (_gate) return (long)_map.Count * EntryBytes; }
    }
}
