using DifferenceEngine.Loading;

namespace DifferenceEngine.Tests.Loading;

/// <summary>Keeps a copy of every page it is given, and fails on the contract's violations (wrong size, a gfn twice, out of order).</summary>
internal sealed class CollectingSink : IGuestPageSink
{
    private long _lastGfn = -1;

    public Dictionary<long, byte[]> Pages { get; } = [];

    public void SetPage(long gfn, ReadOnlySpan<byte> page)
    {
        Assert.Equal(4096, page.Length);
        Assert.True(gfn > _lastGfn, $"gfn {gfn} came after gfn {_lastGfn}: pages must come once each, in increasing order");
        _lastGfn = gfn;
        Pages.Add(gfn, page.ToArray());
    }
}

/// <summary>Counts pages and watches one gfn, for sources too big to keep (the test process itself).</summary>
internal sealed class WatchingSink(long watchedGfn, byte[] expected) : IGuestPageSink
{
    private long _lastGfn = -1;

    public long Count { get; private set; }

    public bool Seen { get; private set; }

    public bool Matched { get; private set; }

    public void SetPage(long gfn, ReadOnlySpan<byte> page)
    {
        if (page.Length != 4096 || gfn <= _lastGfn)
        {
            throw new InvalidOperationException($"bad page: gfn {gfn} after {_lastGfn}, {page.Length} bytes");
        }

        _lastGfn = gfn;
        Count++;
        if (gfn == watchedGfn)
        {
            Seen = true;
            Matched = page.SequenceEqual(expected);
        }
    }
}

/// <summary>Cancels its token after a given number of pages, to prove cancellation is honoured mid-copy.</summary>
internal sealed class CancellingSink(CancellationTokenSource cts, int afterPages) : IGuestPageSink
{
    public int Count { get; private set; }

    public void SetPage(long gfn, ReadOnlySpan<byte> page)
    {
        if (++Count == afterPages)
        {
            cts.Cancel();
        }
    }
}

/// <summary>Counts pages and keeps nothing: the sink for measuring what a copy itself allocates.</summary>
internal sealed class CountingSink : IGuestPageSink
{
    public long Count { get; private set; }

    public void SetPage(long gfn, ReadOnlySpan<byte> page) => Count++;
}
