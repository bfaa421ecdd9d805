using BenchmarkDotNet.Attributes;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Domains;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Bench.Sharing;

/// <summary>
/// cow_break (Table 2): a guest write to a Shared page: the write fault gives the writer a private copy (a frame
/// allocated, the shared bytes copied, a reference dropped), then the 8 bytes are written. Domain.WritePage, per page.
/// Every frame keeps one user that is never written, so each write copies (none takes the frame over as sole user).
/// </summary>
[MemoryDiagnoser]
public class CowBreakBenchmark
{
    private const int Count = RealPages.Count;
    private const int Copies = 4;
    private readonly byte[] _data = [1, 2, 3, 4, 5, 6, 7, 8];
    private TestHost? _host;

    [GlobalSetup]
    public void WarmUp() => Tiering.WarmUp(() =>
    {
        NewHost();
        CowBreak();
        Check();
    });

    [IterationSetup]
    public void NewHost()
    {
        _host = new TestHost(Count * Copies);
        _host.LoadCopies(Copies);
        _host.Sweep();
        var c = new SharingCounters();
        for (long gfn = 0; gfn < (long)Count * Copies; gfn++) _host.Share(gfn, ref c);
        for (long gfn = 0; gfn < (long)Count * Copies; gfn++)
            if (_host.State(gfn) != PageState.Shared)
                throw new InvalidOperationException($"cow_break setup: page {gfn} is {_host.State(gfn)}, not Shared.");
    }

    [Benchmark(OperationsPerInvoke = Count * (Copies - 1), Description = "cow_break")]
    public int CowBreak()
    {
        var domain = _host!.Domain;
        int faults = 0;
        for (long gfn = Count; gfn < (long)Count * Copies; gfn++)
            if (domain.WritePage(gfn, _data, 0) == FaultKind.CopyOnWrite) faults++;
        return faults;
    }

    [IterationCleanup]
    public void Check()
    {
        var host = _host!;
        _host = null;
        try
        {
            for (long gfn = Count; gfn < (long)Count * Copies; gfn++)
                if (host.State(gfn) != PageState.Private)
                    throw new InvalidOperationException($"cow_break: page {gfn} is {host.State(gfn)} after the write.");
        }
        finally
        {
            host.Dispose();
        }
    }
}
