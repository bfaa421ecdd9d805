using DifferenceEngine.Clock;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Bench.Corpus;

/// <summary>
/// A host with one domain holding given pages as loaded memory (Private, one frame each), aged by one clock sweep
/// into C4 (C4Sweeps 1), so that every mechanism may act on every page: the state a scan's first pass finds.
/// The engine's internals are driven directly, so a benchmark times one operation and nothing around it.
/// </summary>
internal sealed class TestHost : IDisposable
{
    public TestHost(int pageCount, bool sharing = true, bool patching = false, bool compression = false,
        CompressionAlgorithm algorithm = CompressionAlgorithm.LZ4, HostOptions? hostOptions = null)
    {
        Host = new DEHost(hostOptions ?? new HostOptions { Name = "bench", SimilaritySeed = RealPages.Seed });
        Domain = Host.CreateDomain("guest", (long)pageCount * PageGeometry.PageSize, new DomainOptions
        {
            SharingEnabled = sharing,
            PatchingEnabled = patching,
            CompressionEnabled = compression,
            CompressionAlgorithm = algorithm,
            C4Sweeps = 1,
        });
        Index = Host.SharingIndexFor(Domain.Policy.TrustGroup);
    }

    public DEHost Host { get; }
    public Domain Domain { get; }
    internal SharingIndex Index { get; }

    /// <summary>Loads <paramref name="page"/> at <paramref name="gfn"/> as the loader does: a fresh frame, Private.</summary>
    public void Load(long gfn, ReadOnlySpan<byte> page)
    {
        uint frame = Domain.AllocateFrame(gfn);
        page.CopyTo(Host.Frames.Span(frame));
        Domain.InstallLoaded(gfn, frame);
    }

    /// <summary>Loads <paramref name="copies"/> copies of the corpus's representative pages, one copy after another.</summary>
    public void LoadCopies(int copies)
    {
        var pages = RealPages.Instance;
        for (int copy = 0; copy < copies; copy++)
            for (int i = 0; i < RealPages.Count; i++) Load((long)copy * RealPages.Count + i, pages.Page(i));
    }

    /// <summary>Reads pages [first, end) as a guest would; returns how many reads serviced <paramref name="fault"/>.</summary>
    public int ReadAll(long first, long end, FaultKind fault, byte[] buffer)
    {
        int faults = 0;
        for (long gfn = first; gfn < end; gfn++)
            if (Domain.ReadPage(gfn, buffer) == fault) faults++;
        return faults;
    }

    /// <summary>One clock sweep over every page: untouched loaded pages become C4.</summary>
    public void Sweep()
    {
        for (long gfn = 0; gfn < Domain.PageCount; gfn++)
        {
            ulong e = Domain.Lock(gfn);
            Domain.Unlock(gfn, PageClock.Sweep(e, Domain.Policy.C4Sweeps));
        }
    }

    /// <summary>The sharing step on one page, as a scan runs it.</summary>
    public void Share(long gfn, ref SharingCounters counters)
    {
        ulong e = Domain.Lock(gfn);
        try
        {
            e = SharingPass.SharePage(Host, Index, Domain, gfn, e, ref counters);
        }
        finally
        {
            Domain.Unlock(gfn, e);
        }
    }

    public PageState State(long gfn) => Domain.PeekState(gfn);

    public void Dispose() => Host.Dispose();
}
