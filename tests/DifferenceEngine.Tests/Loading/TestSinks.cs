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

/// <summary>
/// Counts pages and notes the gfns of pages that start with <paramref name="tag"/> and hash to <paramref name="sha256"/>,
/// for sources too big to keep (the test process itself). Only the hash is held, so the sink is no copy of the page it seeks.
/// </summary>
internal sealed class SearchingSink(byte[] tag, byte[] sha256) : IGuestPageSink
{
    private long _lastGfn = -1;

    public long Count { get; private set; }

    public List<long> Found { get; } = [];

    public void SetPage(long gfn, ReadOnlySpan<byte> page)
    {
        if (page.Length != 4096 || gfn <= _lastGfn)
        {
            throw new InvalidOperationException($"bad page: gfn {gfn} after {_lastGfn}, {page.Length} bytes");
        }

        _lastGfn = gfn;
        Count++;
        if (page.StartsWith(tag) && System.Security.Cryptography.SHA256.HashData(page).AsSpan().SequenceEqual(sha256))
        {
            Found.Add(gfn);
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
