namespace DifferenceEngine.Memory;

/// <summary>Page and frame size constants shared by every part of the engine.</summary>
public static class PageGeometry
{
    public const int PageShift = 12;
    public const int PageSize = 1 << PageShift;
    public const long PageMask = PageSize - 1;

    /// <summary>Frames are carved out of native chunks of this many frames (2 MiB).</summary>
    internal const int ChunkShift = 9;
    internal const int FramesPerChunk = 1 << ChunkShift;
    internal const int ChunkBytes = FramesPerChunk * PageSize;

    public static long PagesFor(long bytes) => (bytes + PageMask) >> PageShift;
}
