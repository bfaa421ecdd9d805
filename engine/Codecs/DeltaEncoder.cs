using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static DifferenceEngine.Codecs.DeltaCodec;

namespace DifferenceEngine.Codecs;

/// <summary>
/// Builds a patch (format in DeltaCodec.cs) greedily, left to right. At each position it weighs the same-offset run,
/// a run at the last copy's source, a run found through a hash index of the reference's aligned 4-byte words, and a
/// run found through a hash index of the page's own earlier bytes, and takes whichever saves most bytes.
/// </summary>
[SkipLocalsInit]
internal static class DeltaEncoder
{
    /// <summary>Both indexes are keyed by 4 bytes: the reference's words at multiples of 4, the page's at any offset passed.</summary>
    private const int KeySize = sizeof(uint);
    private const int IndexBits = 11;
    private const int IndexSlots = 1 << IndexBits;
    private const uint HashMultiplier = 2654435761;

    /// <summary>Runs are compared 8 bytes at a time up to this length, then vectorized: most candidates are short.</summary>
    private const int LongMatch = 32;

    /// <summary>A same-offset run this long is taken without looking for a better one elsewhere.</summary>
    private const int GoodRun = 32;

    /// <summary>After every 2^SkipShift positions without a copy, the search steps one byte further (LZ4's acceleration).</summary>
    private const int SkipShift = 4;

    private const int MaxStep = 32;

    /// <summary>
    /// How far a copy may be extended backwards into the pending literals: past the positions the search stepped over,
    /// and the up to 3 bytes before a run whose reference offset is not one of the indexed multiples of 4. Older
    /// literals are certain, which makes the early "does not fit" exact: a destination as long as the patch suffices.
    /// </summary>
    private const int MaxBackward = MaxStep + KeySize;

    /// <summary>After a copy, this many of its last bytes are indexed (every KeySize), so what follows can refer back to it.</summary>
    private const int IndexCopyTail = 64;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static bool TryEncode(ReadOnlySpan<byte> reference, ReadOnlySpan<byte> page, Span<byte> destination, out int written)
    {
        written = 0;

        // Offsets + 1 by hashed 4-byte key (0 = empty): the reference's, built when a same-offset run is not enough,
        // and the page's own, filled in as the encoder passes.
        Span<ushort> referenceIndex = stackalloc ushort[IndexSlots];
        Span<ushort> pageIndex = stackalloc ushort[IndexSlots];
        bool indexed = false;
        ref byte refBase = ref MemoryMarshal.GetReference(reference);
        ref byte pageBase = ref MemoryMarshal.GetReference(page);

        int op = 0;
        int pos = 0;
        int anchor = 0;
        bool lastSelf = false;
        int lastValue = 0;
        int misses = 0;
        while (pos < PageSize)
        {
            // The literals that no copy can take back already overflow: the page does not patch well enough.
            if (op + (pos - anchor - MaxBackward) > destination.Length)
            {
                return false;
            }

            // A candidate is (self, value, length, gain): value = delta into the reference, or distance back in the page.
            bool bestSelf = false;
            int bestValue = 0;
            int bestLength = 0;
            int bestGain = 0;
            if (Unsafe.Add(ref refBase, pos) == Unsafe.Add(ref pageBase, pos))
            {
                bestLength = MatchLength(ref Unsafe.Add(ref refBase, pos), ref Unsafe.Add(ref pageBase, pos), PageSize - pos);
                bestGain = bestLength - 1;
            }

            // The first byte of a difference does not search: isolated changed bytes never pay for the indexes.
            if (bestLength < GoodRun && pos <= PageSize - KeySize && (indexed || misses > 0))
            {
                if (!indexed)
                {
                    BuildIndex(ref refBase, referenceIndex);
                    pageIndex.Clear();
                    indexed = true;
                }

                uint key = Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref pageBase, pos));
                int hash = Hash(key);

                if (lastSelf || lastValue != 0)
                {
                    int from = lastSelf ? pos - lastValue : pos + lastValue;
                    if ((uint)from < PageSize && Unsafe.Add(ref (lastSelf ? ref pageBase : ref refBase), from) == Unsafe.Add(ref pageBase, pos))
                    {
                        int length = MatchLength(ref Unsafe.Add(ref (lastSelf ? ref pageBase : ref refBase), from), ref Unsafe.Add(ref pageBase, pos), PageSize - Math.Max(from, pos));
                        if (length - 1 > bestGain)
                        {
                            (bestSelf, bestValue, bestLength, bestGain) = (lastSelf, lastValue, length, length - 1);
                        }
                    }
                }

                int slot = referenceIndex[hash];
                if (slot != 0)
                {
                    int from = slot - 1;
                    int delta = from - pos;
                    if (delta != 0 && Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref refBase, from)) == key)
                    {
                        int length = KeySize + MatchLength(ref Unsafe.Add(ref refBase, from + KeySize), ref Unsafe.Add(ref pageBase, pos + KeySize), PageSize - KeySize - Math.Max(from, pos));
                        int gain = length - 1 - VarintLength(ZigZag(delta));
                        if (gain > bestGain)
                        {
                            (bestSelf, bestValue, bestLength, bestGain) = (false, delta, length, gain);
                        }
                    }
                }

                slot = pageIndex[hash];
                pageIndex[hash] = (ushort)(pos + 1);
                if (slot != 0)
                {
                    int from = slot - 1;
                    int distance = pos - from;
                    if (distance > 0 && Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref pageBase, from)) == key)
                    {
                        int length = KeySize + MatchLength(ref Unsafe.Add(ref pageBase, from + KeySize), ref Unsafe.Add(ref pageBase, pos + KeySize), PageSize - KeySize - pos);
                        int gain = length - 1 - VarintLength(distance);
                        if (gain > bestGain)
                        {
                            (bestSelf, bestValue, bestLength, bestGain) = (true, distance, length, gain);
                        }
                    }
                }
            }

            if (bestLength < MinCopy || bestGain < 1)
            {
                misses++;
                pos += Math.Min(1 + (misses >> SkipShift), MaxStep);
                continue;
            }

            // Positions skipped by the acceleration, or a run that began inside the literals: take them back.
            int start = bestSelf ? pos - bestValue : pos + bestValue;
            ref byte sourceBase = ref bestSelf ? ref pageBase : ref refBase;
            int backLimit = Math.Max(anchor, pos - MaxBackward);
            while (pos > backLimit && start > 0 && Unsafe.Add(ref pageBase, pos - 1) == Unsafe.Add(ref sourceBase, start - 1))
            {
                pos--;
                start--;
                bestLength++;
            }

            int kind = !bestSelf && bestValue == 0 ? KindSameOffset
                : bestSelf == lastSelf && bestValue == lastValue ? KindRepeat
                : bestSelf ? KindSelf : KindReference;
            int encodedValue = bestSelf ? bestValue : ZigZag(bestValue);
            if (!TryEmit(destination, ref op, page[anchor..pos], kind, encodedValue, bestLength))
            {
                return false;
            }

            if (kind is KindReference or KindSelf)
            {
                (lastSelf, lastValue) = (bestSelf, bestValue);
            }

            pos += bestLength;
            anchor = pos;
            misses = 0;
            if (indexed)
            {
                for (int p = Math.Max(pos - bestLength, pos - IndexCopyTail); p < pos && p <= PageSize - KeySize; p += KeySize)
                {
                    pageIndex[Hash(Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref pageBase, p)))] = (ushort)(p + 1);
                }
            }
        }

        if (anchor < PageSize && !TryEmit(destination, ref op, page[anchor..], KindSameOffset, 0, 0))
        {
            return false;
        }

        written = op;
        return true;
    }

    /// <summary>How many bytes from a and b on are equal, up to max.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int MatchLength(ref byte a, ref byte b, int max)
    {
        int n = 0;
        while (n <= max - sizeof(ulong))
        {
            ulong x = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref a, n)) ^ Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref b, n));
            if (x != 0)
            {
                return n + (BitOperations.TrailingZeroCount(x) >> 3);
            }

            n += sizeof(ulong);
            if (n == LongMatch)
            {
                return n + MemoryMarshal.CreateReadOnlySpan(ref Unsafe.Add(ref a, n), max - n)
                    .CommonPrefixLength(MemoryMarshal.CreateReadOnlySpan(ref Unsafe.Add(ref b, n), max - n));
            }
        }

        while (n < max && Unsafe.Add(ref a, n) == Unsafe.Add(ref b, n))
        {
            n++;
        }

        return n;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Hash(uint key) => (int)((key * HashMultiplier) >> (32 - IndexBits));

    private static void BuildIndex(ref byte reference, Span<ushort> index)
    {
        index.Clear();
        for (int offset = 0; offset <= PageSize - KeySize; offset += KeySize)
        {
            index[Hash(Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref reference, offset)))] = (ushort)(offset + 1);
        }
    }

    /// <summary>
    /// Writes one sequence: the literals, then a copy of <paramref name="length"/> bytes (0 = no copy: the last
    /// sequence). False when it does not fit.
    /// </summary>
    private static bool TryEmit(Span<byte> destination, ref int op, ReadOnlySpan<byte> literals, int kind, int value, int length)
    {
        int literalCount = literals.Length;
        int literalCode = Math.Min(literalCount, LiteralCodeMax);
        int lengthCode = length == 0 ? 0 : Math.Min(length - MinCopy, LengthCodeMax);
        bool hasValue = kind is KindReference or KindSelf;
        int need = 1 + literalCount
            + (literalCode == LiteralCodeMax ? VarintLength(literalCount - LiteralCodeMax) : 0)
            + (hasValue ? VarintLength(value) : 0)
            + (lengthCode == LengthCodeMax ? VarintLength(length - LongCopy) : 0);
        if (need > destination.Length - op)
        {
            return false;
        }

        destination[op++] = (byte)((literalCode << LiteralShift) | (kind << KindShift) | lengthCode);
        if (literalCode == LiteralCodeMax)
        {
            WriteVarint(destination, ref op, literalCount - LiteralCodeMax);
        }

        literals.CopyTo(destination[op..]);
        op += literalCount;
        if (hasValue)
        {
            WriteVarint(destination, ref op, value);
        }

        if (lengthCode == LengthCodeMax)
        {
            WriteVarint(destination, ref op, length - LongCopy);
        }

        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WriteVarint(Span<byte> destination, ref int op, int value)
    {
        if (value <= VarintPayload)
        {
            destination[op++] = (byte)value;
        }
        else
        {
            destination[op++] = (byte)(value | VarintContinue);
            destination[op++] = (byte)(value >> VarintShift);
        }
    }
}
