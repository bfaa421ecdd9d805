using BenchmarkDotNet.Attributes;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Domains;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Bench.Sharing;

/// <summary>
/// share_pages (Table 2): one Private page merged into an existing shared frame with the same content: hash,
/// look up, compare byte for byte, take a reference, free the page's frame. The scan's own sharing step
/// (SharingPass.SharePage) under the page's lock, per page.
/// </summary>
[MemoryDiagnoser]
public class SharePagesBenchmark
{
    private const int Count = RealPages.Count;
    private const int Copies = 3;
    private TestHost? _host;

    [GlobalSetup]
    public void WarmUp() => Tiering.WarmUp(() =>
    {
        NewHost();
        SharePage();
        Check();
    });

    /// <summary>Two copies of every page make the shared frames; <see cref="Copies"/> more wait to be merged into them.</summary>
    [IterationSetup]
    public void NewHost()
    {
        _host = new TestHost(Count * (2 + Copies));
        _host.LoadCopies(2 + Copies);
        _host.Sweep();
        var c = new SharingCounters();
        for (long gfn = 0; gfn < 2L * Count; gfn++) _host.Share(gfn, ref c);
        _host.Index.Unstable.Clear();
    }

    [Benchmark(OperationsPerInvoke = Count * Copies, Description = "share_pages")]
    public long SharePage()
    {
        var c = new SharingCounters();
        for (long gfn = 2L * Count; gfn < (2L + Copies) * Count; gfn++) _host!.Share(gfn, ref c);
        return c.PagesMerged;
    }

    [IterationCleanup]
    public void Check()
    {
        var host = _host!;
        _host = null;
        try
        {
            for (long gfn = 2L * Count; gfn < (2L + Copies) * Count; gfn++)
                if (host.State(gfn) != PageState.Shared)
                    throw new InvalidOperationException($"share_pages: page {gfn} was not merged ({host.State(gfn)}).");
        }
        finally
        {
            host.Dispose();
        }
    }
}
