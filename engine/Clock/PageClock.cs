using System.Runtime.CompilerServices;
using DifferenceEngine.Domains;

namespace DifferenceEngine.Clock;

/// <summary>
/// The not-recently-used clock of PAPER.md: each sweep reads and clears a page's referenced and
/// modified bits and files the page under C1..C4, which decides what the engine may do to it.
/// </summary>
public static class PageClock
{
    /// <summary>Ages one entry (the caller holds its lock) and returns it with R/M cleared.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong Sweep(ulong e, int c4Sweeps)
    {
        PageCategory category;
        int idle;
        if ((e & PageEntry.Modified) != 0)
        {
            category = PageCategory.C1;
            idle = 0;
        }
        else if ((e & PageEntry.Referenced) != 0)
        {
            category = PageCategory.C2;
            idle = 0;
        }
        else
        {
            idle = Math.Min(PageEntry.Idle(e) + 1, PageEntry.MaxIdle);
            category = idle >= c4Sweeps ? PageCategory.C4 : PageCategory.C3;
        }
        return PageEntry.WithClock(e & ~(PageEntry.Referenced | PageEntry.Modified), category, idle);
    }

    /// <summary>Whether a page of this category may be merged with an identical page (C2, C3, C4).</summary>
    public static bool MayShare(PageCategory category) => category is PageCategory.C2 or PageCategory.C3 or PageCategory.C4;

    /// <summary>Whether a page of this category may be stored as a patch (C3, C4).</summary>
    public static bool MayPatch(PageCategory category) => category is PageCategory.C3 or PageCategory.C4;

    /// <summary>Whether a page of this category may be compressed or swapped (C4 only).</summary>
    public static bool MayCompressOrSwap(PageCategory category) => category is PageCategory.C4;

    /// <summary>Whether a page of this category may serve as a patch reference (C2, C3, C4).</summary>
    public static bool MayBeReference(PageCategory category) => category is PageCategory.C2 or PageCategory.C3 or PageCategory.C4;
}
