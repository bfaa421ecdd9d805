using System.Runtime.CompilerServices;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Codecs;

/// <summary>
/// A page's order-0 entropy: the fewest bytes any code that spends a fixed number of bits on each byte value (Huffman,
/// as Zstd codes literals) can write the page's bytes in, repeats not counted. A cheap bound (about a microsecond) on
/// what an entropy coder can make of a page that has no repeats to exploit.
/// </summary>
internal static class PageEntropy
{
    /// <summary>c·log2(c) for every count a page can have.</summary>
    private static readonly double[] CountBits = MakeCountBits();

    private static double[] MakeCountBits()
    {
        var bits = new double[PageGeometry.PageSize + 1];
        for (int c = 1; c <= PageGeometry.PageSize; c++) bits[c] = c * Math.Log2(c);
        return bits;
    }

    /// <summary>The page's bytes times their order-0 entropy, in bytes: Σ over byte values of c·log2(n / c), over 8.</summary>
    [SkipLocalsInit]
    public static double Order0Bytes(ReadOnlySpan<byte> page)
    {
        CodecErrors.CheckPage(page.Length, nameof(page));
        // Four histograms, so that runs of one byte value do not wait on one counter.
        Span<int> counts = stackalloc int[4 * 256];
        counts.Clear();
        ref byte p = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(page);
        for (int i = 0; i < PageGeometry.PageSize; i += 4)
        {
            counts[Unsafe.Add(ref p, i)]++;
            counts[256 + Unsafe.Add(ref p, i + 1)]++;
            counts[512 + Unsafe.Add(ref p, i + 2)]++;
            counts[768 + Unsafe.Add(ref p, i + 3)]++;
        }
        double sum = 0;
        for (int v = 0; v < 256; v++) sum += CountBits[counts[v] + counts[256 + v] + counts[512 + v] + counts[768 + v]];
        return (CountBits[PageGeometry.PageSize] - sum) / 8;
    }
}
