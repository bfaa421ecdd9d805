using System.IO.Hashing;
using System.Runtime.CompilerServices;

namespace DifferenceEngine.Sharing;

/// <summary>Whole-page content hash (vectorized xxHash3, 64-bit) and the zero-page test.</summary>
public static class PageHasher
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Hash(ReadOnlySpan<byte> page) => XxHash3.HashToUInt64(page);

    /// <summary>True when every byte is zero (vectorized scan that stops at the first non-zero byte).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsZero(ReadOnlySpan<byte> page) => !page.ContainsAnyExcept((byte)0);

    /// <summary>True when the page is one 32-bit word repeated (a repeated byte is a special case).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsUniform(ReadOnlySpan<byte> page, out uint word)
    {
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(page);
        word = words[0];
        return !words.ContainsAnyExcept(word);
    }
}
