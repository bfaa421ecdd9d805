namespace DifferenceEngine.Loading;

/// <summary>Page-size arithmetic shared by every memory source.</summary>
internal static class LoadGeometry
{
    public const int PageShift = 12;
    public const int PageSize = 1 << PageShift;
    public const long PageMask = PageSize - 1;

    /// <summary>Bytes read per I/O; one buffer of this size is reused for a whole copy.</summary>
    public const int ChunkBytes = 1 << 20;
    public const int ChunkPages = ChunkBytes / PageSize;

    /// <summary>Largest guest-physical space a source may describe: beyond it a domain is not worth building here.</summary>
    public const long MaxGuestBytes = 64L << 30;

    public static long PagesFor(long bytes) => (bytes + PageMask) >> PageShift;

    public static ulong PagesFor(ulong bytes) => (bytes >> PageShift) + ((bytes & PageMask) != 0 ? 1UL : 0UL);

    public static string Gib(ulong bytes) => $"{bytes / (double)(1L << 30):0.##} GiB";
}
