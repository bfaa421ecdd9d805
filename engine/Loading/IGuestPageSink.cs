namespace DifferenceEngine.Loading;

/// <summary>Where a memory source puts the pages it reads: a domain being populated, or a test's collector.</summary>
public interface IGuestPageSink
{
    /// <summary>
    /// Stores one full page (exactly 4096 bytes) at guest frame <paramref name="gfn"/>.
    /// Called at most once per gfn, in any order. Pages never set stay zero (no frame).
    /// </summary>
    void SetPage(long gfn, ReadOnlySpan<byte> page);
}
