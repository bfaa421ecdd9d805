using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace DifferenceEngine.Sharing;

/// <summary>
/// A pass's filter of the values (content hashes, similarity keys) that more than one item marked: two bit arrays over the
/// same buckets, "seen" and "seen again", set lock-free, and two buckets a value. Every item marks its value once; a value
/// both of whose buckets were marked again may have a twin, one with a bucket marked once has none among the marked items.
/// So a pass lists in its unstable table only pages that another page of the pass may match (no false negatives: two
/// identical marked pages always share both buckets; buckets shared by chance only list a page that needed none).
/// </summary>
/// <remarks>
/// Sized at <see cref="Begin"/> for the most items the pass can mark, <see cref="BucketsPerItem"/> buckets each: a value
/// marked once still looks as if it had a twin when other items marked both its buckets, (1 - e^(-2/8))^2 = 4.9% of them
/// when the filter is full, for 2 bytes an item while marking and 1 byte after (the unstable table's slot is 24 bytes a
/// listed page at its load; with one bucket a value and 4 buckets an item, 22% looked so). The "seen" half is freed once
/// marking is over (<see cref="EndMarking"/>); the rest when the pass no longer asks (<see cref="End"/>). Not active
/// (between passes, or never begun) every value may have a twin, so a caller outside a pass lists everything, as before
/// the filter.
/// </remarks>
internal sealed unsafe class TwinFilter : IDisposable
{
    /// <summary>Buckets for each item the filter is sized for.</summary>
    public const int BucketsPerItem = 8;

    private ulong* _seen;
    private ulong* _twice;
    private ulong _buckets;
    private long _words;
    private bool _active;

    /// <summary>Whether <see cref="MayHaveTwin"/> answers from marks (between <see cref="Begin"/> and <see cref="End"/>).</summary>
    public bool Active => _active;

    /// <summary>Bytes the filter holds now.</summary>
    public long MetadataBytes => (_seen != null ? _words * sizeof(ulong) : 0) + (_twice != null ? _words * sizeof(ulong) : 0);

    /// <summary>Starts a pass's marking, sized for at most <paramref name="items"/> marks (fewer only fill it less).</summary>
    public void Begin(long items)
    {
        End();
        // At most 2^32 buckets (a bucket is a 32-bit fraction scaled to the count): past that, more look like twins.
        _words = Math.Clamp((Math.Max(0, items) * BucketsPerItem + 63) / 64, 1, 1L << 26);
        _buckets = (ulong)_words * 64;
        _seen = (ulong*)NativeMemory.AllocZeroed((nuint)(_words * sizeof(ulong)));
        _twice = (ulong*)NativeMemory.AllocZeroed((nuint)(_words * sizeof(ulong)));
        _active = true;
    }

    /// <summary>Marks a value once for one item (thread-safe). Ignored after <see cref="EndMarking"/> or when not active.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Mark(ulong value)
    {
        if (_seen == null) return;
        Buckets(value, out ulong first, out ulong second);
        MarkBucket(first);
        MarkBucket(second);
    }

    /// <summary>Whether a value may have been marked by more than one item (always true when the filter is not active).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool MayHaveTwin(ulong value)
    {
        if (!_active) return true;
        Buckets(value, out ulong first, out ulong second);
        return MarkedAgain(first) && MarkedAgain(second);
    }

    /// <summary>Marking is over: the "seen" half is freed; <see cref="MayHaveTwin"/> still answers.</summary>
    public void EndMarking()
    {
        if (_seen == null) return;
        NativeMemory.Free(_seen);
        _seen = null;
    }

    /// <summary>Frees the filter; every value may have a twin again.</summary>
    public void End()
    {
        _active = false;
        EndMarking();
        if (_twice != null)
        {
            NativeMemory.Free(_twice);
            _twice = null;
        }
        _words = 0;
    }

    public void Dispose() => End();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void MarkBucket(ulong bucket)
    {
        ulong bit = 1UL << (int)(bucket & 63);
        ulong word = bucket >> 6;
        if ((Interlocked.Or(ref _seen[word], bit) & bit) != 0 && (Volatile.Read(ref _twice[word]) & bit) == 0)
            Interlocked.Or(ref _twice[word], bit);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool MarkedAgain(ulong bucket) => (Volatile.Read(ref _twice[bucket >> 6]) & (1UL << (int)(bucket & 63))) != 0;

    /// <summary>
    /// A value's two buckets: two multiplicative hashes' 32 top bits scaled to the bucket count (other bits of the value
    /// than the tables' stripes and homes, well mixed), never the same bucket twice (a value would be its own twin).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Buckets(ulong value, out ulong first, out ulong second)
    {
        first = (((value * 0xD6E8FEB86659FD93UL) >> 32) * _buckets) >> 32;
        second = (((value * 0xA0761D6478BD642FUL) >> 32) * _buckets) >> 32;
        if (second == first) second = first + 1 == _buckets ? 0 : first + 1;
    }
}
