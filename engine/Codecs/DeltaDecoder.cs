using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static DifferenceEngine.Codecs.DeltaCodec;

namespace DifferenceEngine.Codecs;

/// <summary>Applies a patch (format in DeltaCodec.cs): every length and offset is checked before a byte is copied.</summary>
[SkipLocalsInit]
internal static class DeltaDecoder
{
    /// <summary>Short copies move one vector, overshooting into page bytes a later sequence writes anyway.</summary>
    private const int WideCopy = 16;

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Decode(ReadOnlySpan<byte> reference, ReadOnlySpan<byte> patch, Span<byte> page)
    {
        ref byte output = ref MemoryMarshal.GetReference(page);
        ref byte source = ref MemoryMarshal.GetReference(reference);
        ref byte input = ref MemoryMarshal.GetReference(patch);
        int end = patch.Length;
        int ip = 0;
        int op = 0;
        bool lastSelf = false;
        int lastValue = 0;
        while (true)
        {
            if (ip >= end)
            {
                CodecErrors.ThrowCorrupt(Name, $"the patch ends at page offset {op}, before the page is complete");
            }

            int token = Unsafe.Add(ref input, ip++);
            int literals = token >> LiteralShift;
            if (literals == LiteralCodeMax)
            {
                literals += ReadVarint(patch, ref ip);
            }

            if (literals > PageSize - op || literals > end - ip)
            {
                CodecErrors.ThrowCorrupt(Name, $"a run of {literals} literals at page offset {op} overruns the page or the patch");
            }

            Copy(ref Unsafe.Add(ref output, op), PageSize - op, ref Unsafe.Add(ref input, ip), end - ip, literals);
            ip += literals;
            op += literals;
            if (op == PageSize)
            {
                if ((token & ((KindMask << KindShift) | LengthMask)) != 0)
                {
                    CodecErrors.ThrowCorrupt(Name, "the last sequence has a copy after the page is full");
                }

                break;
            }

            bool self;
            int value;
            switch ((token >> KindShift) & KindMask)
            {
                case KindSameOffset:
                    (self, value) = (false, 0);
                    break;
                case KindRepeat:
                    (self, value) = (lastSelf, lastValue);
                    break;
                case KindReference:
                    (self, value) = (false, UnZigZag(ReadVarint(patch, ref ip)));
                    (lastSelf, lastValue) = (self, value);
                    break;
                default:
                    (self, value) = (true, ReadVarint(patch, ref ip));
                    (lastSelf, lastValue) = (self, value);
                    break;
            }

            int length = (token & LengthMask) + MinCopy;
            if (length == LongCopy)
            {
                length += ReadVarint(patch, ref ip);
            }

            if (length > PageSize - op)
            {
                CodecErrors.ThrowCorrupt(Name, $"a copy of {length} bytes at page offset {op} runs past the page");
            }

            if (self)
            {
                if (value < 1 || value > op)
                {
                    CodecErrors.ThrowCorrupt(Name, $"a copy from {value} bytes back at page offset {op} starts outside the page");
                }

                CopyBack(ref Unsafe.Add(ref output, op), PageSize - op, value, length);
            }
            else
            {
                int from = op + value;
                if ((uint)from > (uint)(PageSize - length))
                {
                    CodecErrors.ThrowCorrupt(Name, $"a copy of {length} bytes from reference offset {from} is out of range");
                }

                Copy(ref Unsafe.Add(ref output, op), PageSize - op, ref Unsafe.Add(ref source, from), PageSize - from, length);
            }

            op += length;
            if (op == PageSize)
            {
                break;
            }
        }

        if (ip != end)
        {
            CodecErrors.ThrowCorrupt(Name, $"{end - ip} bytes follow the sequence that completes the page");
        }
    }

    /// <summary>
    /// Copies <paramref name="length"/> bytes; when both sides have room, a short copy is one 16-byte move (the extra
    /// bytes land inside the page, ahead of the cursor, where later sequences overwrite them).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Copy(ref byte destination, int destinationRoom, ref byte source, int sourceRoom, int length)
    {
        int room = Math.Min(destinationRoom, sourceRoom);
        if (length <= WideCopy && room >= WideCopy)
        {
            Unsafe.WriteUnaligned(ref destination, Unsafe.ReadUnaligned<Vector128<byte>>(ref source));
        }
        else if (length <= 2 * WideCopy && room >= 2 * WideCopy)
        {
            Unsafe.WriteUnaligned(ref destination, Unsafe.ReadUnaligned<Vector128<byte>>(ref source));
            Unsafe.WriteUnaligned(ref Unsafe.Add(ref destination, WideCopy), Unsafe.ReadUnaligned<Vector128<byte>>(ref Unsafe.Add(ref source, WideCopy)));
        }
        else
        {
            Unsafe.CopyBlockUnaligned(ref destination, ref source, (uint)length);
        }
    }

    /// <summary>
    /// page[op + i] = page[op - distance + i] for i below <paramref name="length"/>, the LZ77 way: when the distance is
    /// shorter than the copy, the bytes written repeat with that period, so each round copies twice as much.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CopyBack(ref byte destination, int destinationRoom, int distance, int length)
    {
        ref byte source = ref Unsafe.Subtract(ref destination, distance);
        if (length <= distance)
        {
            // No overlap: an ordinary copy, whose wide moves read at most `distance` bytes of source.
            Copy(ref destination, destinationRoom, ref source, distance, length);
            return;
        }

        int done = 0;
        while (done < length)
        {
            // source[0 .. distance + done) is final and periodic, so it can be copied from in one piece.
            int chunk = Math.Min(length - done, distance + done);
            Unsafe.CopyBlockUnaligned(ref Unsafe.Add(ref destination, done), ref source, (uint)chunk);
            done += chunk;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ReadVarint(ReadOnlySpan<byte> patch, ref int ip)
    {
        if ((uint)ip >= (uint)patch.Length)
        {
            CodecErrors.ThrowCorrupt(Name, "the patch ends inside a length or offset");
        }

        int first = patch[ip++];
        if (first < VarintContinue)
        {
            return first;
        }

        if ((uint)ip >= (uint)patch.Length)
        {
            CodecErrors.ThrowCorrupt(Name, "the patch ends inside a length or offset");
        }

        int second = patch[ip++];
        if (second >= VarintContinue)
        {
            CodecErrors.ThrowCorrupt(Name, "a length or offset is longer than two bytes");
        }

        return (first & VarintPayload) | (second << VarintShift);
    }
}
