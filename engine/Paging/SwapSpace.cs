using System.IO.Hashing;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Paging;

/// <summary>
/// Page-sized slots of the swap storage: a slot allocator and, in memory, the checksum of every page
/// written, checked on every read so a damaged swap file is a loud error, never wrong bytes.
/// </summary>
internal sealed class SwapSpace : IDisposable
{
    private readonly object _gate = new();
    private readonly ulong[] _checksums;
    private readonly uint[] _free;
    private int _freeCount;

    public SwapSpace(ISwapStorage storage)
    {
        Storage = storage;
        long slots = storage.Length / PageGeometry.PageSize;
        if (slots < 1 || slots > MaxSlots)
            throw new DEException("SwapSizeInvalid", DEErrorKind.InvalidArgument,
                $"A swap file must hold between 1 and {MaxSlots} pages; {storage.Length} bytes were given.", storage.Length);
        SlotCount = slots;
        _checksums = new ulong[slots];
        _free = new uint[slots];
        for (long i = 0; i < slots; i++) _free[i] = (uint)(slots - 1 - i); // lowest slots first
        _freeCount = (int)slots;
    }

    /// <summary>The most pages a swap file holds: the slot tables are arrays of one entry a slot (about 8 TiB of swap).</summary>
    public const long MaxSlots = 0x7FFFFFC7; // Array.MaxLength

    /// <summary>Default swap file size: 4 GiB.</summary>
    public const long DefaultSizeBytes = 4L << 30;

    /// <summary>
    /// Creates the swap file (or the factory's storage, in tests) of <paramref name="sizeBytes"/> (4 GiB when null), a positive
    /// multiple of the page size, and the slots over it.
    /// </summary>
    public static SwapSpace Create(string path, long? sizeBytes, Func<string, long, ISwapStorage>? factory = null)
    {
        if (string.IsNullOrWhiteSpace(path) || Path.GetFileName(path).Trim().Length == 0)
            throw new DEException("SwapPathInvalid", DEErrorKind.InvalidArgument,
                $"'{path}' cannot name a swap file: give the path of a new file.", path);
        long size = sizeBytes ?? DefaultSizeBytes;
        if (size < PageGeometry.PageSize || (size & PageGeometry.PageMask) != 0 || size / PageGeometry.PageSize > MaxSlots)
            throw new DEException("SwapSizeInvalid", DEErrorKind.InvalidArgument,
                $"The swap size must be a positive multiple of {PageGeometry.PageSize} bytes, at most {MaxSlots} pages; {size} was given.", size);
        var storage = factory?.Invoke(path, size) ?? SwapFile.Create(path, size);
        try
        {
            return new SwapSpace(storage);
        }
        catch
        {
            storage.Dispose();
            throw;
        }
    }

    public ISwapStorage Storage { get; }
    public long SlotCount { get; }
    public long SlotsUsed { get { lock (_gate) return SlotCount - _freeCount; } }
    public long MetadataBytes => SlotCount * (sizeof(ulong) + sizeof(uint));

    /// <summary>
    /// Slots kept back from ordinary page-outs so that a page can always be swapped in, even with memory
    /// and swap both full, by exchanging it with a victim (a swap-in frees its own slot after).
    /// </summary>
    public int ExchangeReserve => (int)Math.Min(64, Math.Max(1, SlotCount / 8));

    public bool TryReserve(out uint slot, bool exchange = false)
    {
        lock (_gate)
        {
            if (_freeCount == 0 || (!exchange && _freeCount <= ExchangeReserve))
            {
                slot = 0;
                return false;
            }
            slot = _free[--_freeCount];
            return true;
        }
    }

    public void Release(uint slot)
    {
        lock (_gate)
        {
            _checksums[slot] = 0;
            _free[_freeCount++] = slot;
        }
    }

    /// <summary>Writes a page into a reserved slot and records its checksum (not durable until <see cref="Flush"/>).</summary>
    public void Write(uint slot, ReadOnlySpan<byte> page)
    {
        Storage.Write((long)slot * PageGeometry.PageSize, page);
        _checksums[slot] = XxHash3.HashToUInt64(page);
    }

    public void Flush() => Storage.Flush();

    /// <summary>Reads a slot; false when the bytes do not match the checksum written with them.</summary>
    public bool TryRead(uint slot, Span<byte> page)
    {
        Storage.Read((long)slot * PageGeometry.PageSize, page);
        return XxHash3.HashToUInt64(page) == _checksums[slot];
    }

    public void Dispose() => Storage.Dispose();
}
