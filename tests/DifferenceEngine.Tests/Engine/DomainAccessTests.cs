using DifferenceEngine.Loading;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;

namespace DifferenceEngine.Tests.Engine;

public class DomainAccessTests
{
    [Fact]
    public void EmptyDomainReadsZeroAndHoldsNoFrame()
    {
        using var host = new DEHost();
        var d = host.CreateDomain("a", 64 * 4096);
        Assert.Equal(64, d.PageCount);
        Assert.All(TestMemory.ReadAll(d), p => Assert.True(p.All(b => b == 0)));
        Assert.Equal(0, host.GetStats().FramesInUse);
        Assert.Equal(PageState.Zero, d.GetPage(5).State);
    }

    [Fact]
    public void FirstWriteToZeroPageIsAZeroFillFaultThenNoFault()
    {
        using var host = new DEHost();
        var d = host.CreateDomain("a", 4 * 4096);
        Assert.Equal(FaultKind.ZeroFill, d.WritePage(2, [1, 2, 3], 100));
        Assert.Equal(FaultKind.None, d.WritePage(2, [9], 0));
        var page = d.ReadPage(2);
        Assert.Equal(9, page[0]);
        Assert.Equal(new byte[] { 1, 2, 3 }, page[100..103]);
        Assert.Equal(0, page[103]);
        Assert.Equal(1, host.GetStats().FramesInUse);
        var zf = host.GetStats().Faults.Single(f => f.Kind == FaultKind.ZeroFill);
        Assert.Equal(1, zf.Count);
        Assert.True(zf.P50 > TimeSpan.Zero);
    }

    [Fact]
    public void WriteToSharedPageCopiesOnWriteAndLeavesTheOtherUserIntact()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var content = TestMemory.RandomPage(new Random(5));
        var a = TestMemory.LoadRaw(host, dir, "a", [content, TestMemory.RandomPage(new Random(6))], new DomainOptions { SharingEnabled = true });
        var b = TestMemory.LoadRaw(host, dir, "b", [TestMemory.RandomPage(new Random(7)), content], new DomainOptions { SharingEnabled = true });
        host.Scan(options: new ScanOptions { UntilStable = true });
        Assert.Equal(PageState.Shared, a.GetPage(0).State);
        Assert.Equal(PageState.Shared, b.GetPage(1).State);
        Assert.Equal(2, a.GetPage(0).ReferenceCount);
        Assert.Equal(3, host.GetStats().FramesInUse);

        Assert.Equal(FaultKind.CopyOnWrite, a.WritePage(0, [0xAA], 4000));
        Assert.Equal(PageState.Private, a.GetPage(0).State);
        Assert.Equal(content, b.ReadPage(1));
        var expected = (byte[])content.Clone();
        expected[4000] = 0xAA;
        Assert.Equal(expected, a.ReadPage(0));
        // The last user of a shared frame takes it over without a copy.
        Assert.Equal(FaultKind.CopyOnWrite, b.WritePage(1, [1], 0));
        Assert.Equal(PageState.Private, b.GetPage(1).State);
        Assert.Equal(4, host.GetStats().FramesInUse);
        Assert.Equal(0, host.GetStats().SharedFrames);
        TestMemory.AssertFrameAccounting(host);
    }

    [Fact]
    public void ReadsSetReferencedAndWritesSetModified()
    {
        using var host = new DEHost();
        var d = host.CreateDomain("a", 4 * 4096);
        d.ReadPage(0);
        d.WritePage(1, [1]);
        Assert.True(d.GetPage(0).Referenced);
        Assert.False(d.GetPage(0).Modified);
        Assert.True(d.GetPage(1).Modified);
        host.Scan();
        Assert.False(d.GetPage(0).Referenced);
        Assert.False(d.GetPage(1).Modified);
    }

    [Theory]
    [InlineData(-1L)]
    [InlineData(4L)]
    [InlineData(long.MaxValue)]
    public void GfnOutOfRangeIsAClearError(long gfn)
    {
        using var host = new DEHost();
        var d = host.CreateDomain("a", 4 * 4096);
        Assert.Equal("GfnOutOfRange", Assert.Throws<DEException>(() => d.ReadPage(gfn)).ErrorId);
        Assert.Equal("GfnOutOfRange", Assert.Throws<DEException>(() => d.WritePage(gfn, [1])).ErrorId);
    }

    [Theory]
    [InlineData(4096, 1)]
    [InlineData(4000, 100)]
    [InlineData(-1, 1)]
    public void WritePastThePageIsRejected(int offset, int length)
    {
        using var host = new DEHost();
        var d = host.CreateDomain("a", 4 * 4096);
        var ex = Assert.Throws<DEException>(() => d.WritePage(0, new byte[length], offset));
        Assert.Equal("WriteOutsidePage", ex.ErrorId);
        Assert.Equal(PageState.Zero, d.GetPage(0).State);
    }

    [Fact]
    public void WriteBeyondTheMemoryLimitFailsWithHostOutOfMemoryAndLosesNothing()
    {
        using var host = new DEHost(new HostOptions { MemoryLimitBytes = 2 * 4096 });
        var d = host.CreateDomain("small", 8 * 4096);
        d.WritePage(0, [1]);
        d.WritePage(1, [2]);
        var ex = Assert.Throws<DEException>(() => d.WritePage(2, [3]));
        Assert.Equal("HostOutOfMemory", ex.ErrorId);
        Assert.Equal(DEErrorKind.ResourceUnavailable, ex.Kind);
        Assert.Contains("small", ex.Message);
        Assert.Equal(1, d.ReadPage(0)[0]);
        Assert.Equal(2, d.ReadPage(1)[0]);
        Assert.Equal(PageState.Zero, d.GetPage(2).State);
        Assert.Equal("OutOfMemory", d.Status);
        Assert.Equal(1, d.OutOfMemoryEvents);
    }

    [Fact]
    public void OutOfMemoryStatusClearsWhenALaterFaultGetsItsFrame()
    {
        using var host = new DEHost(new HostOptions { MemoryLimitBytes = 2 * 4096 });
        var filler = host.CreateDomain("filler", 4096);
        filler.WritePage(0, [1]);
        var d = host.CreateDomain("d", 4 * 4096);
        d.WritePage(0, [1]);
        Assert.Throws<DEException>(() => d.WritePage(1, [2]));
        Assert.Equal("OutOfMemory", d.Status);
        d.WritePage(0, [3]); // no fault, no frame needed: still out of memory
        Assert.Equal("OutOfMemory", d.Status);
        host.RemoveDomain(filler);
        Assert.Equal(FaultKind.ZeroFill, d.WritePage(1, [2])); // a zero-fill fault that gets its frame
        Assert.Equal("Running", d.Status);
        Assert.Equal(1, d.OutOfMemoryEvents);
    }

    [Fact]
    public void DomainNamesAreUniqueAndValidated()
    {
        using var host = new DEHost();
        host.CreateDomain("web1", 4096);
        Assert.Equal("DomainExists", Assert.Throws<DEException>(() => host.CreateDomain("WEB1", 4096)).ErrorId);
        Assert.Equal("DomainNameInvalid", Assert.Throws<DEException>(() => host.CreateDomain("web*", 4096)).ErrorId);
        Assert.Equal("DomainNameInvalid", Assert.Throws<DEException>(() => host.CreateDomain(" ", 4096)).ErrorId);
        // Characters no report can carry as they are (two such names would come out the same).
        foreach (string unprintable in new[] { "ctl\u0001x", "tab\tx", "del\u007fx", "c1\u0085x", "non\uFFFEx", "non\uFDD0x", "lone" + (char)0xD800 })
        {
            var e = Assert.Throws<DEException>(() => host.CreateDomain(unprintable, 4096));
            Assert.Equal("DomainNameInvalid", e.ErrorId);
            Assert.Contains("U+", e.Message, StringComparison.Ordinal);
            Assert.Equal("PolicyTrustGroupInvalid", Assert.Throws<DEException>(() => host.CreateDomain("ok", 4096, new DomainOptions { TrustGroup = unprintable })).ErrorId);
            Assert.Equal("HostNameInvalid", Assert.Throws<DEException>(() => new DEHost(new HostOptions { Name = unprintable })).ErrorId);
        }
        // ',' and ';' separate trust groups in a placement host's list: 'tenant a,b' would be read as two groups.
        foreach (string listed in new[] { "a,b", "tenant;x" })
            Assert.Equal("PolicyTrustGroupInvalid", Assert.Throws<DEException>(() => host.CreateDomain("ok", 4096, new DomainOptions { TrustGroup = listed })).ErrorId);
        host.CreateDomain("spaced", 4096, new DomainOptions { TrustGroup = "tenant a" }); // a space is part of a name
        foreach (string badHost in new[] { "a*b", "lab?", "[x]", " lab", "" })
            Assert.Equal("HostNameInvalid", Assert.Throws<DEException>(() => new DEHost(new HostOptions { Name = badHost })).ErrorId);
        host.CreateDomain("\u00e9t\u00e9 \U0001F600 <b> & 'q'", 4096); // printable, however unusual
        Assert.Equal("MemorySizeInvalid", Assert.Throws<DEException>(() => host.CreateDomain("x", 4097)).ErrorId);
        Assert.Equal("MemorySizeInvalid", Assert.Throws<DEException>(() => host.CreateDomain("x", 0)).ErrorId);
        Assert.Equal("DomainNotFound", Assert.Throws<DEException>(() => host.GetDomain("nope")).ErrorId);
    }

    [Fact]
    public void RemovedDomainGivesBackFramesAndRefusesAccess()
    {
        using var host = new DEHost();
        var d = host.CreateDomain("a", 16 * 4096);
        for (int g = 0; g < 16; g++) d.WritePage(g, [(byte)g]);
        Assert.Equal(16, host.GetStats().FramesInUse);
        host.RemoveDomain(d);
        Assert.Equal(0, host.GetStats().FramesInUse);
        Assert.Equal("DomainRemoved", Assert.Throws<DEException>(() => d.ReadPage(0)).ErrorId);
        Assert.Equal("DomainNotFound", Assert.Throws<DEException>(() => host.RemoveDomain(d)).ErrorId);
        Assert.Null(host.TryGetDomain("a"));
    }

    [Fact]
    public void DisconnectedHostRefusesEverything()
    {
        var host = new DEHost();
        var d = host.CreateDomain("a", 4096);
        host.Dispose();
        Assert.False(host.IsConnected);
        Assert.Equal("HostDisconnected", Assert.Throws<DEException>(() => d.ReadPage(0)).ErrorId);
        Assert.Equal("HostDisconnected", Assert.Throws<DEException>(() => host.CreateDomain("b", 4096)).ErrorId);
    }

    [Fact]
    public void DisconnectingAHostEndsItsScanInFlightWithHostDisconnected()
    {
        var host = new DEHost();
        using var dir = new TempDir();
        var d = TestMemory.LoadRaw(host, dir, "a", TestMemory.TextPages(512, 3), new DomainOptions { SharingEnabled = true });
        var failure = HeldScan.DisposeDuring(
            progress => host.Scan([d], new ScanOptions { UntilStable = true, Parallelism = 1, SliceSize = 64 }, progress),
            host.Dispose, () => host.IsClosing);
        Assert.Equal("HostDisconnected", Assert.IsType<DEException>(failure).ErrorId);
        Assert.False(host.IsConnected);
        host.Dispose(); // a second Dispose returns at once
    }

    [Fact]
    public void DisposingAHostFromItsOwnScansOrLoadsProgressFailsInsteadOfWaitingForever()
    {
        // Before: the scan waited for its worker, the worker (in the callback) for Dispose, and Dispose for the scan.
        var host = new DEHost();
        using var dir = new TempDir();
        var d = TestMemory.LoadRaw(host, dir, "a", TestMemory.TextPages(256, 5), new DomainOptions { SharingEnabled = true });
        var scanFailure = Record.Exception(() => host.Scan([d], new ScanOptions { Parallelism = 2, SliceSize = 64 }, _ => host.Dispose()));
        Assert.Equal("CalledFromCallback", Assert.IsType<DEException>(scanFailure).ErrorId); // the callback's own, unwrapped
        Assert.True(host.IsConnected); // refused before anything was let go
        string image = TestMemory.WriteRaw(dir, "b.img", TestMemory.TextPages(2 * DEHost.LoadProgressPages, 6));
        using (var source = MemorySource.OpenFile(image))
            Assert.Equal("CalledFromCallback", Assert.Throws<DEException>(() => host.LoadDomain("b", source, null, _ => host.Dispose())).ErrorId);
        Assert.True(host.IsConnected);
        Assert.Equal(d.PageCount, host.Scan([d]).PassResults[0].PagesSwept); // the host still works
        host.Dispose(); // and is disposed from outside its calls
        Assert.False(host.IsConnected);
    }

    [Fact]
    public void MemoryLimitMustHoldAPage()
    {
        Assert.Equal("MemoryLimitInvalid",
            Assert.Throws<DEException>(() => new DEHost(new HostOptions { MemoryLimitBytes = 100 })).ErrorId);
    }
}
