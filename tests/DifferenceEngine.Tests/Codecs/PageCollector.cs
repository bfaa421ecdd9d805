using DifferenceEngine.Loading;

namespace DifferenceEngine.Tests.Codecs;

/// <summary>Keeps a copy of every page a memory source gives it, by gfn.</summary>
internal sealed class PageCollector : IGuestPageSink
{
    public SortedDictionary<long, byte[]> Pages { get; } = [];

    public void SetPage(long gfn, ReadOnlySpan<byte> page) => Pages.Add(gfn, page.ToArray());
}
