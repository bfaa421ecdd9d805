using BenchmarkDotNet.Attributes;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Domains;
using DifferenceEngine.Patching;

namespace DifferenceEngine.Bench.Patching;

/// <summary>
/// patch_page and unpatch (Table 2) on real similar page pairs. A host holds the reference pages, listed in the
/// similarity index as a pass lists them, and the similar pages. patch_page: the patching step of a scan
/// (PatchPass.TryPatch) on each similar page: its similarity keys, the candidate looked up and checked, the delta
/// built, the reference made an immutable shared frame, the patch stored, the frame freed. unpatch: Domain.ReadPage of
/// each Patched page: rebuilt from reference and patch into a new frame, checksum checked, copied out.
/// </summary>
[MemoryDiagnoser]
public class PatchPageBenchmarks
{
    private const int Count = RealPages.Count;
    private readonly byte[] _buffer = new byte[RealPages.PageSize];
    private TestHost? _host;
    private int[] _pairs = [];

    /// <summary>
    /// The corpus's pairs, less those whose key slot another reference holds (c = 1 keeps the first page seen, and a
    /// patch against that one would not fit): every measured call then builds and stores a patch.
    /// </summary>
    [GlobalSetup]
    public void ChoosePairs()
    {
        var chosen = Enumerable.Range(0, Count).ToList();
        for (int round = 0; round < 4; round++)
        {
            _pairs = Enumerable.Range(0, Count).Select(i => chosen[i % chosen.Count]).ToArray();
            NewHost();
            var patched = new List<int>();
            try
            {
                var c = new EncodeCounters();
                for (int i = 0; i < Count; i++)
                    if (TryPatch(Count + i, ref c)) patched.Add(_pairs[i]);
            }
            finally
            {
                Dispose();
            }
            if (patched.Count == Count)
            {
                Tiering.WarmUp(() =>
                {
                    NewPatchedHost();
                    Unpatch();
                    Dispose();
                });
                return;
            }
            chosen = patched.Distinct().ToList();
            if (chosen.Count == 0) throw new InvalidOperationException("patch_page: no similar pair of the corpus patches.");
        }
        throw new InvalidOperationException("patch_page: could not choose pairs that all patch.");
    }

    [IterationSetup(Target = nameof(PatchPage))]
    public void NewHost()
    {
        var pages = RealPages.Instance;
        _host = new TestHost(2 * Count, sharing: true, patching: true);
        for (int i = 0; i < Count; i++)
        {
            _host.Load(i, pages.Reference(_pairs[i]));
            _host.Load(Count + i, pages.SimilarPage(_pairs[i]));
        }
        _host.Sweep();
        var host = _host.Host;
        for (long gfn = 0; gfn < Count; gfn++)
        {
            ulong e = _host.Domain.Lock(gfn);
            PatchPass.Remember(host, _host.Index, _host.Domain, gfn, host.Frames.Span(PageEntry.Frame(e)), shared: false);
            _host.Domain.Unlock(gfn, e);
        }
    }

    [IterationSetup(Target = nameof(Unpatch))]
    public void NewPatchedHost()
    {
        NewHost();
        PatchAll();
    }

    /// <summary>
    /// A host that has patched and unpatched every page once: its references already immutable, its store's slabs and
    /// tables grown. patch_page_steady is patching as a pass repeats it, and what it allocates is what a page costs
    /// (patch_page's allocations in a fresh host are the tables' and slabs' first growth, once per host).
    /// </summary>
    [IterationSetup(Target = nameof(PatchPageSteady))]
    public void NewWarmHost()
    {
        NewHost();
        PatchAll();
        _host!.ReadAll(Count, 2L * Count, FaultKind.Unpatch, _buffer);
    }

    [Benchmark(OperationsPerInvoke = Count, Description = "patch_page")]
    public long PatchPage() => PatchAll();

    [Benchmark(OperationsPerInvoke = Count, Description = "patch_page_steady")]
    public long PatchPageSteady() => PatchAll();

    [Benchmark(OperationsPerInvoke = Count, Description = "unpatch")]
    public int Unpatch() => _host!.ReadAll(Count, 2L * Count, FaultKind.Unpatch, _buffer);

    [IterationCleanup]
    public void Dispose()
    {
        _host?.Dispose();
        _host = null;
    }

    private long PatchAll()
    {
        var c = new EncodeCounters();
        for (long gfn = Count; gfn < 2L * Count; gfn++) TryPatch(gfn, ref c);
        if (c.PagesPatched != Count) throw new InvalidOperationException($"patch_page: {c.PagesPatched} of {Count} similar pages patched.");
        return c.PatchBytes;
    }

    private bool TryPatch(long gfn, ref EncodeCounters c)
    {
        var t = _host!;
        ulong e = t.Domain.Lock(gfn);
        try
        {
            e = PatchPass.TryPatch(t.Host, t.Index, t.Domain, gfn, e, ref c);
            return PageEntry.State(e) == PageState.Patched;
        }
        finally
        {
            t.Domain.Unlock(gfn, e);
        }
    }
}
