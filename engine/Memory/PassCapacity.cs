using System.Numerics;

namespace DifferenceEngine.Memory;

/// <summary>How much room a table or buffer refilled by every engine pass keeps once the pass is over.</summary>
internal static class PassCapacity
{
    /// <summary>
    /// Twice <paramref name="entries"/> (what the pass held), as a power of two, at least <paramref name="minimum"/>:
    /// a pass that fills it alike next time allocates nothing, and one whose fill fell away lets it shrink.
    /// </summary>
    public static int For(int entries, int minimum) =>
        (int)Math.Max(minimum, BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, entries * 2)));
}
