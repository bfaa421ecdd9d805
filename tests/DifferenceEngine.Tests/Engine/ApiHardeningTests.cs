using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Loading;
using DifferenceEngine.Scanning;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// What a read-only audit of the embedding API found (session 33): calls from a progress callback that waited for the
/// call they were part of, a disconnect that let a load run to its end, shared state callers could change, and
/// arguments and states answered with the wrong exception. Events only, no clock.
/// </summary>
public class ApiHardeningTests
{
    private static (DEHost Host, Domain Domain) NewHost(TempDir dir, int pages = 64)
    {
        var host = new DEHost();
        var d = TestMemory.LoadRaw(host, dir, "a", TestMemory.TextPages(pages, 5), new DomainOptions { SharingEnabled = true });
        return (host, d);
    }

    /// <summary>
    /// A Scan or SetHostPolicy from a scan's progress callback waited for the scan lock: for ever on a pool worker (the
    /// scan waits for its workers), and Dispose then too. Both are refused on every thread a callback runs on.
    /// </summary>
    [Fact]
    public void AScanOrAHostPolicyChangeFromAProgressCallbackIsRefused()
    {
        using var dir = new TempDir();
        var (host, d) = NewHost(dir);
        using var _host = host;
        Exception? scan = null, policy = null;
        int calls = 0;
        host.Scan([d], new ScanOptions { Parallelism = 1, SliceSize = 16, Passes = 1 }, _ =>
        {
            if (Interlocked.Increment(ref calls) != 1) return;
            scan = Record.Exception(() => host.Scan([d], new ScanOptions { Passes = 1 }));
            policy = Record.Exception(() => host.SetHostPolicy(candidates: 2));
        });
        Assert.Equal("CalledFromCallback", Assert.IsType<DEException>(scan).ErrorId);
        Assert.Equal(DEErrorKind.InvalidOperation, ((DEException)scan!).Kind);
        Assert.Equal("CalledFromCallback", Assert.IsType<DEException>(policy).ErrorId);
        host.SetHostPolicy(candidates: 2); // outside the call, as usual
        Assert.Equal(2, host.Policy.SimilarityCandidates);
    }

    /// <summary>
    /// Dispose waited for a load in progress to end, and the load then returned its domain, already removed. A disconnect
    /// ends the load at its next check with HostDisconnected, as it ends scans.
    /// </summary>
    [Fact]
    public void DisposeEndsALoadInProgress()
    {
        using var dir = new TempDir();
        var host = new DEHost();
        string image = TestMemory.WriteRaw(dir, "big.img", TestMemory.TextPages(4 * DEHost.LoadProgressPages, 6));
        using var source = MemorySource.OpenFile(image);
        Exception? failure = null;
        var loader = new Thread(() => failure = Record.Exception(() => host.LoadDomain("big", source, null, done =>
        {
            // The first report holds the load until the disconnect has begun.
            if (done == DEHost.LoadProgressPages) SpinWait.SpinUntil(() => host.IsClosing);
        })));
        loader.Start();
        SpinWait.SpinUntil(() => host.Domains.Count == 1);
        host.Dispose();
        loader.Join();
        Assert.Equal("HostDisconnected", Assert.IsType<DEException>(failure).ErrorId);
        Assert.False(host.IsConnected);
    }

    /// <summary>Static lists every host reads could be written through: the fault kinds, trust group separators and a
    /// host's similarity offsets (a scan then failed). They are read-only.</summary>
    [Fact]
    public void SharedListsCannotBeChangedByCallers()
    {
        Assert.Throws<NotSupportedException>(() => ((IList<FaultKind>)FaultCounters.Kinds)[0] = FaultKind.SwapIn);
        Assert.Throws<NotSupportedException>(() => ((IList<char>)DomainPolicy.TrustGroupSeparators)[0] = 'x');
        using var host = new DEHost();
        Assert.Throws<NotSupportedException>(() => ((IList<int>)host.Policy.SimilarityOffsets)[0] = 4095);
        Assert.Equal(FaultKind.ZeroFill, FaultCounters.Kinds[0]);
        Assert.Equal("PolicyTrustGroupInvalid",
            Assert.Throws<DEException>(() => host.CreateDomain("d", 4096, new DomainOptions { TrustGroup = "a,b" })).ErrorId);
    }

    /// <summary>FaultHistogram handed out the host's live histogram, which a caller could record into.</summary>
    [Fact]
    public void AFaultHistogramIsACopy()
    {
        using var host = new DEHost();
        var d = host.CreateDomain("d", 4 * 4096);
        d.WritePage(0, [1], 0); // one zero-fill fault
        var copy = host.FaultHistogram(FaultKind.ZeroFill);
        Assert.Equal(1, copy.Count);
        copy.RecordNanoseconds(3_600_000_000_000);
        Assert.Equal(1, host.FaultHistogram(FaultKind.ZeroFill).Count);
        Assert.Equal(1, host.GetStats().Faults.Single(f => f.Kind == FaultKind.ZeroFill).Count);
        Assert.Throws<ArgumentOutOfRangeException>(() => host.FaultHistogram((FaultKind)200));
        Assert.Throws<ArgumentOutOfRangeException>(() => copy.Percentile(double.NaN));
    }

    /// <summary>Null domains ended in NullReferenceException; a removed domain's pages read as zeros through GetPage,
    /// GetPages and PeekState (ReadPage said DomainRemoved).</summary>
    [Fact]
    public void NullAndRemovedDomainsGetTheirOwnErrors()
    {
        using var host = new DEHost();
        var d = host.CreateDomain("d", 4 * 4096);
        Assert.Throws<ArgumentNullException>(() => host.Scan([d, null!]));
        Assert.Throws<ArgumentNullException>(() => host.GetPageStats(null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => d.GetPages(0, -1));
        Assert.Equal("GfnOutOfRange", Assert.Throws<DEException>(() => d.GetPages(5)).ErrorId); // at the call, not at enumeration
        Assert.Empty(d.GetPages(4)); // from the end: none
        host.RemoveDomain(d);
        Assert.Equal("DomainRemoved", Assert.Throws<DEException>(() => d.GetPage(0)).ErrorId);
        Assert.Equal("DomainRemoved", Assert.Throws<DEException>(() => d.GetPages()).ErrorId);
        Assert.Equal("DomainRemoved", Assert.Throws<DEException>(() => d.PeekState(0)).ErrorId);
    }

    /// <summary>After Dispose, GetDomain and GetPageStats said DomainNotFound: the host is what is gone.</summary>
    [Fact]
    public void ADisposedHostSaysHostDisconnected()
    {
        var host = new DEHost();
        var d = host.CreateDomain("a", 4 * 4096);
        host.Dispose();
        Assert.Equal("HostDisconnected", Assert.Throws<DEException>(() => host.GetDomain("a")).ErrorId);
        Assert.Equal("HostDisconnected", Assert.Throws<DEException>(() => host.GetPageStats(d)).ErrorId);
    }

    /// <summary>A progress callback's exception reached the caller inside the workers' AggregateException.</summary>
    [Fact]
    public void AProgressCallbacksExceptionReachesTheCallerAsItIs()
    {
        using var dir = new TempDir();
        var (host, d) = NewHost(dir);
        using var _host = host;
        var thrown = Record.Exception(() => host.Scan([d], new ScanOptions { Parallelism = 2, SliceSize = 8 },
            _ => throw new TimeZoneNotFoundException("the callback's own")));
        Assert.Equal("the callback's own", Assert.IsType<TimeZoneNotFoundException>(thrown).Message);
        Assert.Equal(d.PageCount, host.Scan([d]).PassResults[0].PagesSwept); // the host still works
    }

    /// <summary>A swap size without a swap file was accepted and ignored.</summary>
    [Fact]
    public void ASwapSizeWithoutASwapFileIsRefused()
    {
        var e = Assert.Throws<DEException>(() => new DEHost(new HostOptions { SwapSizeBytes = 1 << 20 }));
        Assert.Equal("SwapSizeNeedsSwapPath", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidArgument, e.Kind);
    }

    /// <summary>
    /// The Xen host refuses it with the same id as the embedded one (it gave the cmdlet's, ConnectDEHostSwapSizeNeedsSwapPath):
    /// a .NET caller handles one error whichever host it connects. Its options are checked before Xen is opened.
    /// </summary>
    [Fact]
    public void TheXenHostRefusesASwapSizeWithoutASwapFileAsTheEmbeddedOneDoes()
    {
        var e = Assert.Throws<DEException>(() => DifferenceEngine.Xen.XenHost.Connect(new DifferenceEngine.Xen.XenHostOptions { SwapSizeBytes = 1 << 20 }, requirePrivcmd: false));
        Assert.Equal("SwapSizeNeedsSwapPath", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidArgument, e.Kind);
        Assert.Equal(1L << 20, Assert.IsType<long>(e.Target));
    }
}
