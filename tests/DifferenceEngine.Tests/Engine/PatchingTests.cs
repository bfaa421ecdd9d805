using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;

namespace DifferenceEngine.Tests.Engine;

public class PatchingTests
{
    private static readonly DomainOptions All = new() { SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true };

    /// <summary>Every mechanism, a page turning cold (C4) after <paramref name="sweeps"/> sweeps.</summary>
    private static DomainOptions AllCold(int sweeps) =>
        new() { SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true, C4Sweeps = sweeps };

    private static byte[] Similar(byte[] page, int seed, int changes)
    {
        var rng = new Random(seed);
        var copy = (byte[])page.Clone();
        for (int i = 0; i < changes; i++) copy[rng.Next(4096)] ^= (byte)(1 + rng.Next(255));
        return copy;
    }

    /// <summary>
    /// A reference candidate another worker holds is not waited for long and is not a reason for another pass: the pass
    /// counts it (ReferencesBusy), changes nothing, and the page stays eligible, patched by the pass after. Until session
    /// 19 such a candidate counted as Contended, and on a stable host with two workers one in a few thousand was busy in
    /// nearly every pass: scans until stable ran to their pass limit.
    /// </summary>
    [Fact]
    public void ABusyReferenceCandidateIsRetriedLaterAndIsNotAChange()
    {
        using var host = new DEHost(new HostOptions { SimilaritySeed = 1 });
        using var dir = new TempDir();
        var reference = TestMemory.RandomPage(new Random(3));
        var options = new DomainOptions { SharingEnabled = true, PatchingEnabled = true, C4Sweeps = 1 };
        var a = TestMemory.LoadRaw(host, dir, "a", [reference], options);
        host.Scan([a], new ScanOptions { Passes = 2 }); // listed under its similarity keys, and cold
        var b = TestMemory.LoadRaw(host, dir, "b", [Similar(reference, 4, 5)], options);
        host.Scan([b], new ScanOptions { Passes = 1, Parallelism = 1 }); // examined: eligible from the next pass
        Assert.Equal(PageState.Private, b.GetPage(0).State);

        // As a pass does: a's page listed under its similarity keys (the sweep), then b's page tried (the second phase),
        // with the candidate's lock held by the test in between, as another worker examining it would.
        var index = host.SharingIndexFor(a.Policy.TrustGroup);
        index.Similar.BeginPass();
        var c = new Patching.EncodeCounters();
        try
        {
            Assert.True(TestMemory.ListAsReference(host, index, a, 0) > 0);
            Assert.True(a.TryLock(0, out ulong held));
            try
            {
                ulong be = b.Lock(0);
                try
                {
                    be = Patching.PatchPass.TryPatch(host, index, b, 0, be, ref c);
                }
                finally
                {
                    b.Unlock(0, be);
                }
            }
            finally
            {
                a.Unlock(0, held);
            }
        }
        finally
        {
            index.Similar.EndPass();
        }
        Assert.InRange(c.ReferencesBusy, 1, host.Policy.Detector.Keys); // once for each similarity key that names it
        Assert.Equal(0, c.Contended);
        Assert.Equal(0, c.PagesPatched);
        Assert.Equal(PageState.Private, b.GetPage(0).State);
        // A pass with only busy references changed nothing.
        var busy = new PassResult(1, 1, 1, 0, 0, 0, 0, c.Contended, TimeSpan.Zero) { ReferencesBusy = c.ReferencesBusy };
        Assert.False(busy.Changed);

        var next = host.Scan([b], new ScanOptions { Passes = 1, Parallelism = 1 }).PassResults[0];
        Assert.Equal(1, next.PagesPatched);
        Assert.Equal(0, next.ReferencesBusy);
        Assert.Equal(PageState.Patched, b.GetPage(0).State);
        Assert.Equal("a", b.GetPage(0).ReferenceDomain);
        TestMemory.AssertFrameAccounting(host);
    }

    [Fact]
    public void SimilarPageIsPatchedAgainstAReferenceAndReadsBackExactly()
    {
        using var host = new DEHost(new HostOptions { SimilaritySeed = 1 });
        using var dir = new TempDir();
        var reference = TestMemory.RandomPage(new Random(1));
        var similar = Similar(reference, 2, 5);
        var a = TestMemory.LoadRaw(host, dir, "a", [reference], All);
        host.Scan([a]); // a's page is listed first: it becomes the reference, not the other way round
        var b = TestMemory.LoadRaw(host, dir, "b", [similar], All);
        host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 1 }); // one worker: which page serves as reference is fixed
        var info = b.GetPage(0);
        Assert.Equal(PageState.Patched, info.State);
        Assert.Equal("a", info.ReferenceDomain);
        Assert.Equal(0, info.ReferenceGfn);
        Assert.Equal("Delta", info.Codec);
        Assert.InRange(info.StoredBytes!.Value, 1, 200);
        Assert.Equal(PageState.Shared, a.GetPage(0).State); // the reference is immutable now
        Assert.Equal(2, a.GetPage(0).ReferenceCount);
        TestMemory.AssertFrameAccounting(host);
        Assert.Equal(similar, b.ReadPage(0));
        Assert.Equal(PageState.Private, b.GetPage(0).State);
        Assert.Equal(1, host.GetStats().Faults.Single(f => f.Kind == FaultKind.Unpatch).Count);
        TestMemory.AssertFrameAccounting(host);
    }

    /// <summary>A page LZ4 shrinks to about two thirds (2,560 seeded random bytes, then zeros): under the default threshold, but not far.</summary>
    private static byte[] PartlyRandom(int seed)
    {
        var page = new byte[4096];
        new Random(seed).NextBytes(page.AsSpan(0, 2560));
        return page;
    }

    /// <summary>A page every codec shrinks to a fraction (heap-like words), different for each seed.</summary>
    private static byte[] HeapLike(int seed) => SharedCompressionTests.Compressible(seed);

    /// <summary>Whether LZ4 shrinks <paramref name="page"/> under the default threshold (3,072 bytes).</summary>
    private static bool Lz4Admits(byte[] page) =>
        PageCompressors.Get(CompressionAlgorithm.LZ4).TryCompress(page, new byte[3072], out _);

    /// <summary>
    /// A pass patches every page it can before it compresses any: a page of a domain that does not patch, compressed
    /// earlier in the same pass, could no longer serve as the reference of a similar page later in it (until session 22
    /// each page was compressed as the pass reached it, and half the patches on the guest images were lost so).
    /// </summary>
    [Fact]
    public void PatchingComesBeforeCompressionInAPass()
    {
        using var host = new DEHost(new HostOptions { SimilaritySeed = 1 });
        using var dir = new TempDir();
        var reference = PartlyRandom(7);
        Assert.True(Lz4Admits(reference)); // it would be compressed, were it not a reference
        var similar = Similar(reference, 8, 5);
        // a's domain shares and compresses but does not patch: its page can only serve as a reference. It comes first in
        // the pass (lower id, one worker), both turn cold in the same sweep.
        var a = TestMemory.LoadRaw(host, dir, "a", [reference],
            new DomainOptions { SharingEnabled = true, CompressionEnabled = true, C4Sweeps = 1 });
        var b = TestMemory.LoadRaw(host, dir, "b", [similar], AllCold(1));
        var result = host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 1 });
        Assert.Equal(PageState.Patched, b.GetPage(0).State);
        Assert.Equal("a", b.GetPage(0).ReferenceDomain);
        // Both cold, the reference frame was then compressed for a's page and b's patch (SharedCompression).
        Assert.Equal(PageState.Compressed, a.GetPage(0).State);
        Assert.NotNull(a.GetPage(0).SharedBlob);
        Assert.Equal(a.GetPage(0).SharedBlob, b.GetPage(0).SharedBlob);
        Assert.Equal(2, a.GetPage(0).ReferenceCount);
        Assert.Equal(1, result.PassResults.Sum(p => p.PatchesOnCompressedReferences));
        Assert.Equal(0, result.PassResults.Sum(p => p.PatchesDeclined));
        TestMemory.AssertFrameAccounting(host);
        Assert.Equal(similar, b.ReadPage(0));
        Assert.Equal(reference, a.ReadPage(0));
    }

    /// <summary>
    /// A patch against a reference that would otherwise be compressed keeps that reference's whole frame: when the two
    /// pages compressed take less than the patch and the frame, the patch is declined and both are compressed.
    /// </summary>
    [Fact]
    public void APatchIsDeclinedWhenCompressingBothPagesTakesLess()
    {
        using var host = new DEHost(new HostOptions { SimilaritySeed = 1 });
        using var dir = new TempDir();
        var reference = HeapLike(5);
        var similar = Similar(reference, 6, 5);
        var a = TestMemory.LoadRaw(host, dir, "a", [reference], AllCold(1));
        var b = TestMemory.LoadRaw(host, dir, "b", [similar], AllCold(1));
        var result = host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 1 });
        Assert.True(result.PassResults.Sum(p => p.PatchesDeclined) > 0);
        Assert.Equal(0, result.PassResults.Sum(p => p.PagesPatched));
        Assert.Equal(PageState.Compressed, a.GetPage(0).State);
        Assert.Equal(PageState.Compressed, b.GetPage(0).State);
        Assert.True(a.GetPage(0).StoredBytes + b.GetPage(0).StoredBytes < 4096);
        TestMemory.AssertFrameAccounting(host);
        Assert.Equal(similar, b.ReadPage(0));
        Assert.Equal(reference, a.ReadPage(0));
    }

    /// <summary>
    /// The same two pages when the similar page's domain does not compress: there is nothing to weigh the patch against,
    /// and it is made. The reference, now serving a patch, costs nothing more to a third similar page of a domain that
    /// compresses: that one is patched against it too.
    /// </summary>
    [Fact]
    public void AReferenceAlreadyServingAPatchTakesMorePatchesEvenFromDomainsThatCompress()
    {
        using var host = new DEHost(new HostOptions { SimilaritySeed = 1 });
        using var dir = new TempDir();
        var reference = HeapLike(5);
        var similar = Similar(reference, 6, 5);
        var third = Similar(reference, 9, 5);
        var a = TestMemory.LoadRaw(host, dir, "a", [reference], AllCold(6));
        host.Scan([a]); // a's page is listed first: it serves as the reference
        var b = TestMemory.LoadRaw(host, dir, "b", [similar], new DomainOptions { SharingEnabled = true, PatchingEnabled = true, C4Sweeps = 1 });
        host.Scan(options: new ScanOptions { Passes = 3, Parallelism = 1 });
        Assert.Equal(PageState.Patched, b.GetPage(0).State);
        Assert.Equal("a", b.GetPage(0).ReferenceDomain);
        var c = TestMemory.LoadRaw(host, dir, "c", [third], AllCold(1));
        var result = host.Scan(options: new ScanOptions { Passes = 3, Parallelism = 1 });
        Assert.Equal(PageState.Patched, c.GetPage(0).State);
        Assert.Equal("a", c.GetPage(0).ReferenceDomain);
        Assert.Equal(0, result.PassResults.Sum(p => p.PatchesDeclined));
        Assert.Equal(3, a.GetPage(0).ReferenceCount);
        TestMemory.AssertFrameAccounting(host);
        Assert.Equal(third, c.ReadPage(0));
        Assert.Equal(similar, b.ReadPage(0));
        Assert.Equal(reference, a.ReadPage(0));
    }

    [Theory]
    [InlineData(CompressionAlgorithm.LZ4)]
    [InlineData(CompressionAlgorithm.WKdm)]
    [InlineData(CompressionAlgorithm.Zstd)]
    public void ColdCompressiblePageIsCompressedOnlyAfterAFullPassExaminedIt(CompressionAlgorithm algorithm)
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        // Heap-like: pointers sharing their upper bits, small integers and zeros (every codec's good case).
        var text = new byte[4096];
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(text.AsSpan());
        for (int i = 0; i < words.Length; i++)
            words[i] = (i % 4) switch { 0 => 0x00007F3A12000000UL + (ulong)(i * 64), 1 => (ulong)(i % 13), 2 => 0, _ => 0x00007F3A12000000UL + 0x40 };
        var d = TestMemory.LoadRaw(host, dir, "c", [text, TestMemory.RandomPage(new Random(4))],
            new DomainOptions { CompressionEnabled = true, CompressionAlgorithm = algorithm, C4Sweeps = 1 });
        host.Scan(); // first pass: C4 at once (C4Sweeps = 1), but no pass had examined it before
        Assert.Equal(PageState.Private, d.GetPage(0).State);
        host.Scan();
        var info = d.GetPage(0);
        Assert.Equal(PageState.Compressed, info.State);
        Assert.Equal(algorithm.ToString(), info.Codec);
        Assert.True(info.StoredBytes < 2048);
        Assert.Equal(PageState.Private, d.GetPage(1).State); // random bytes do not compress
        var stats = host.GetPageStats(d);
        Assert.Equal(1, stats.CompressedPages);
        Assert.Equal(info.StoredBytes!.Value, stats.StoredBytes);
        TestMemory.AssertFrameAccounting(host);
        Assert.Equal(text, d.ReadPage(0));
        Assert.Equal(1, host.GetStats().Faults.Single(f => f.Kind == FaultKind.Decompress).Count);
    }

    [Fact]
    public void RecentlyAccessedPagesAreNotPatchedOrCompressed()
    {
        using var host = new DEHost(new HostOptions { SimilaritySeed = 3 });
        using var dir = new TempDir();
        var reference = TestMemory.RandomPage(new Random(1));
        var a = TestMemory.LoadRaw(host, dir, "a", [reference], All);
        var b = TestMemory.LoadRaw(host, dir, "b", [Similar(reference, 3, 4), new byte[4096]], All);
        for (int i = 0; i < 4; i++)
        {
            b.ReadPage(0); // C2 every sweep: may serve as a reference (then Shared), never patched or compressed
            host.Scan();
            Assert.Contains(b.GetPage(0).State, new[] { PageState.Private, PageState.Shared });
        }
    }

    [Fact]
    public void UniformPagesHoldNoFrameAndFillOnWrite()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var page = new byte[4096];
        System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(page.AsSpan()).Fill(0xDEADBEEF);
        var bytes = new byte[4096];
        Array.Fill(bytes, (byte)0x41);
        var d = TestMemory.LoadRaw(host, dir, "u", [page, bytes], new DomainOptions { SharingEnabled = true });
        host.Scan();
        Assert.Equal(PageState.Uniform, d.GetPage(0).State);
        Assert.Equal(0xDEADBEEFu, d.GetPage(0).UniformWord);
        Assert.Equal(PageState.Uniform, d.GetPage(1).State);
        Assert.Equal(0, host.GetStats().FramesInUse);
        Assert.Equal(page, d.ReadPage(0));
        Assert.Equal(FaultKind.PatternFill, d.WritePage(1, [1], 10));
        var expected = (byte[])bytes.Clone();
        expected[10] = 1;
        Assert.Equal(expected, d.ReadPage(1));
    }

    [Fact]
    public void AFlippedBitInTheStoreIsDetectedAndThePageStaysEncoded()
    {
        using var host = new DEHost(new HostOptions { SimilaritySeed = 1 });
        using var dir = new TempDir();
        var reference = TestMemory.RandomPage(new Random(1));
        var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, 800).Select(i => $"row {i % 11};"))[..4096]);
        var a = TestMemory.LoadRaw(host, dir, "a", [reference], All);
        host.Scan([a]); // the reference is listed first
        var b = TestMemory.LoadRaw(host, dir, "b", [Similar(reference, 9, 6), text], new DomainOptions
        {
            SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true, C4Sweeps = 1,
        });
        // One worker: the similarity table is made afresh each pass, and with two the two domains' slices are listed at
        // once, so b's page could take the key's one slot first and a's page be patched against it (b's page then the
        // reference, Shared): seen once in a full test run under load.
        host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 1 });
        Assert.Equal(PageState.Patched, b.GetPage(0).State);
        Assert.Equal(PageState.Compressed, b.GetPage(1).State);
        foreach (long gfn in new long[] { 0, 1 })
        {
            // Flip one bit in the stored bytes, past the header (a header flip is caught the same way).
            var blob = host.Store.Get(PageEntry.Payload(b.PeekEntry(gfn)));
            blob[blob.Length - 1] ^= 0x10;
            var ex = Assert.Throws<DEException>(() => b.ReadPage(gfn));
            Assert.Equal("PageIntegrityError", ex.ErrorId);
            Assert.Equal(DEErrorKind.InvalidData, ex.Kind);
            Assert.Contains("'b'", ex.Message);
            Assert.Contains($"Page {gfn}", ex.Message);
            Assert.Throws<DEException>(() => b.WritePage(gfn, [1]));
            Assert.NotEqual(PageState.Private, b.GetPage(gfn).State); // never handed out wrong
            TestMemory.AssertFrameAccounting(host);
        }
        // A header flip (the reference frame field) is caught too.
        var patch = host.Store.Get(PageEntry.Payload(b.PeekEntry(0)));
        patch[^1] ^= 0x10; // undo the payload flip
        patch[10] ^= 0x01;
        Assert.Equal("PageIntegrityError", Assert.Throws<DEException>(() => b.ReadPage(0)).ErrorId);
        patch[10] ^= 0x01;
        Assert.Equal(Similar(reference, 9, 6), b.ReadPage(0)); // intact again: rebuilt exactly
    }

    [Fact]
    public void StaleSimilarityEntriesAreNeverUsed()
    {
        using var host = new DEHost(new HostOptions { SimilaritySeed = 5 });
        using var dir = new TempDir();
        var reference = TestMemory.RandomPage(new Random(1));
        var a = TestMemory.LoadRaw(host, dir, "a", [reference], new DomainOptions { SharingEnabled = true });
        host.Scan(); // a's page is listed under its keys
        a.WritePage(0, TestMemory.RandomPage(new Random(99))); // and then changes completely
        var b = TestMemory.LoadRaw(host, dir, "b", [Similar(reference, 2, 3)], All);
        host.Scan(options: new ScanOptions { Passes = 3 });
        Assert.Equal(PageState.Private, b.GetPage(0).State);
        Assert.Equal(PageState.Private, a.GetPage(0).State);
    }

    /// <summary>
    /// A domain of a reference and 20 pages like it, patched, on a host whose limit leaves room for the reference, the pages
    /// and a few 64 KiB store slabs, not for rebuilding everything once a filler takes the rest.
    /// </summary>
    private static (DEHost Host, Domain Domain, byte[][] Pages) PatchedOnATightHost(TempDir dir)
    {
        var reference = TestMemory.RandomPage(new Random(1));
        var pages = Enumerable.Range(0, 20).Select(i => Similar(reference, i, 3)).Prepend(reference).ToArray();
        var host = new DEHost(new HostOptions { SimilaritySeed = 1, MemoryLimitBytes = 200 * 4096 });
        var d = TestMemory.LoadRaw(host, dir, "p", pages, All);
        host.Scan(options: new ScanOptions { UntilStable = true });
        return (host, d, pages);
    }

    [Fact]
    public void RestoreRebuildsEveryEncodedPageAndChecksMemoryFirst()
    {
        using var dir = new TempDir();
        var (host, d, pages) = PatchedOnATightHost(dir);
        using var _host = host;
        long patched = host.GetPageStats(d).PatchedPages;
        Assert.True(patched >= 15, $"{patched} pages patched");
        var filler = host.CreateDomain("filler", 256 * 4096);
        long free = host.GetStats().FramesFree;
        for (int g = 0; g < free - 2; g++) filler.WritePage(g, [1]);
        var ex = Assert.Throws<DEException>(() => host.DisablePatching(d, restore: true));
        Assert.Equal("InsufficientMemoryToRestore", ex.ErrorId);
        Assert.True(d.Policy.PatchingEnabled);
        Assert.Equal(patched, host.GetPageStats(d).PatchedPages);
        host.RemoveDomain(filler);
        Assert.Equal(patched, host.DisablePatching(d, restore: true));
        Assert.False(d.Policy.PatchingEnabled);
        Assert.Equal(0, host.GetPageStats(d).PatchedPages);
        for (int g = 0; g < pages.Length; g++) Assert.Equal(pages[g], d.ReadPage(g));
        TestMemory.AssertFrameAccounting(host);
    }

    public enum Mechanism { Patching, Compression, Sharing }

    [Theory]
    [InlineData(Mechanism.Patching)]
    [InlineData(Mechanism.Compression)]
    [InlineData(Mechanism.Sharing)]
    public void ARestoreWaitsForThePassInFlightAndLeavesNothingEncoded(Mechanism mechanism)
    {
        // The flag goes off first, then the restore waits for the pass in flight: a pass that began with the mechanism on
        // would otherwise encode pages again behind the restore's walk (an audit found thousands left Patched or Compressed
        // after Disable-DEPatching -Restore returned, with the background engine running), and nothing would rebuild them.
        using var dir = new TempDir();
        var reference = TestMemory.RandomPage(new Random(1));
        var pages = mechanism == Mechanism.Patching
            ? Enumerable.Range(0, 40).Select(i => Similar(reference, i, 3)).Prepend(reference).ToArray()
            : TestMemory.TextPages(128, 21);
        using var host = new DEHost(new HostOptions { SimilaritySeed = 1 });
        var options = mechanism switch
        {
            // A Private page serves as a reference only in a domain that shares (it becomes Shared).
            Mechanism.Patching => new DomainOptions { PatchingEnabled = true, SharingEnabled = true },
            Mechanism.Compression => new DomainOptions { CompressionEnabled = true, C4Sweeps = 1 },
            _ => new DomainOptions { SharingEnabled = true },
        };
        var d = TestMemory.LoadRaw(host, dir, "d", pages, options);
        var twin = mechanism == Mechanism.Sharing ? TestMemory.LoadRaw(host, dir, "twin", pages, options) : null;
        host.Scan(options: new ScanOptions { UntilStable = true });
        // Counted from the page table itself: a snapshot waits for the pass in progress, which the test holds.
        long Encoded()
        {
            long n = 0;
            for (long g = 0; g < d.PageCount; g++)
            {
                ulong e = d.PeekEntry(g);
                var state = PageEntry.State(e);
                if (mechanism switch
                    {
                        Mechanism.Patching => state == PageState.Patched,
                        Mechanism.Compression => state == PageState.Compressed && !PageEntry.IsSharedBlob(e),
                        _ => state == PageState.Shared || PageEntry.IsSharedBlob(e),
                    }) n++;
            }
            return n;
        }
        bool Enabled() => mechanism switch
        {
            Mechanism.Patching => d.Policy.PatchingEnabled,
            Mechanism.Compression => d.Policy.CompressionEnabled,
            _ => d.Policy.SharingEnabled,
        };
        long encoded = Encoded();
        Assert.True(encoded >= 20, $"{encoded} pages {mechanism}");

        var held = new HeldPass(host);
        long restored = -1;
        var restore = new Thread(() => restored = mechanism switch
        {
            Mechanism.Patching => host.DisablePatching(d, restore: true),
            Mechanism.Compression => host.DisableCompression(d, restore: true),
            _ => host.DisableSharing(d, unshare: true),
        });
        restore.Start();
        long whileHeld;
        bool waited;
        try
        {
            SpinWait.SpinUntil(() => !Enabled());
            // Off; now blocked (waiting for the held pass), or done (before the fix: it had rebuilt under the pass).
            SpinWait.SpinUntil(() => (restore.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
            whileHeld = Encoded();
            waited = restore.IsAlive;
        }
        finally
        {
            held.Dispose();
            restore.Join();
        }
        // Off, and waiting for the pass: nothing rebuilt yet (before the fix the flag went off only after the walk).
        Assert.Equal(encoded, whileHeld);
        Assert.True(waited, "the restore did not wait for the pass in flight");
        Assert.Equal(encoded, restored);
        Assert.Equal(0, Encoded());
        Assert.False(Enabled());
        // Passes after it leave the domain alone.
        host.Scan(options: new ScanOptions { Passes = 3 });
        Assert.Equal(0, Encoded());
        for (int g = 0; g < pages.Length; g++) Assert.Equal(pages[g], d.ReadPage(g));
        TestMemory.AssertFrameAccounting(host);
    }

    [Fact]
    public void ARestoreWaitsForThePassInProgressNotForTheRestOfTheScan()
    {
        // Later passes of the same scan read the flag off: the restore need not wait for them (an Invoke-DEScan -Passes 100
        // in another runspace would otherwise hold it for every pass).
        using var dir = new TempDir();
        var pages = TestMemory.TextPages(128, 22);
        using var host = new DEHost();
        var d = TestMemory.LoadRaw(host, dir, "d", pages, new DomainOptions { CompressionEnabled = true, C4Sweeps = 1 });
        host.Scan(options: new ScanOptions { UntilStable = true });
        long compressed = host.GetPageStats(d).CompressedPages;
        Assert.True(compressed >= 64, $"{compressed} pages compressed");

        using var heldFirst = new ManualResetEventSlim();
        using var releaseFirst = new ManualResetEventSlim();
        using var heldSecond = new ManualResetEventSlim();
        using var releaseSecond = new ManualResetEventSlim();
        var scan = new Thread(() => host.Scan(null, new ScanOptions { Passes = 3, Parallelism = 1, SliceSize = 16 }, p =>
        {
            if (p.Pass == 1 && !heldFirst.IsSet)
            {
                heldFirst.Set();
                releaseFirst.Wait();
            }
            else if (p.Pass == 2 && !heldSecond.IsSet)
            {
                heldSecond.Set();
                releaseSecond.Wait();
            }
        }));
        scan.Start();
        heldFirst.Wait();
        long restored = -1;
        var restore = new Thread(() => restored = host.DisableCompression(d, restore: true));
        bool doneDuringSecond;
        try
        {
            restore.Start();
            SpinWait.SpinUntil(() => (restore.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
            Assert.True(restore.IsAlive, "the restore did not wait for the pass in progress");
            releaseFirst.Set();
            heldSecond.Wait();
            doneDuringSecond = restore.Join(TimeSpan.FromMinutes(1)); // a bound for the failure only
        }
        finally
        {
            releaseFirst.Set();
            releaseSecond.Set();
            scan.Join();
            restore.Join();
        }
        Assert.True(doneDuringSecond, "the restore waited for the scan's next pass too");
        Assert.Equal(compressed, restored);
        Assert.Equal(0, host.GetPageStats(d).CompressedPages);
        for (int g = 0; g < pages.Length; g++) Assert.Equal(pages[g], d.ReadPage(g));
    }

    [Fact]
    public void AFailedRestorePutsTheFlagBackOnlyWhenNothingChangedItMeanwhile()
    {
        using var dir = new TempDir();
        var (host, d, _) = PatchedOnATightHost(dir);
        using var _host = host;
        var filler = host.CreateDomain("filler", 256 * 4096);
        long free = host.GetStats().FramesFree;
        for (int g = 0; g < free - 2; g++) filler.WritePage(g, [1]);

        // A plain disable that comes in while the restore waits for the pass stays: the failed restore does not turn
        // patching back on.
        Exception? failure = null;
        var restore = new Thread(() => failure = Record.Exception(() => host.DisablePatching(d, restore: true)));
        using (new HeldPass(host, [filler]))
        {
            restore.Start();
            SpinWait.SpinUntil(() => (restore.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
            host.DisablePatching(d, restore: false);
        }
        restore.Join();
        Assert.Equal("InsufficientMemoryToRestore", Assert.IsType<DEException>(failure).ErrorId);
        Assert.False(d.Policy.PatchingEnabled);

        // With nothing in between, it is put back as it was.
        host.EnablePatching(d);
        Assert.Equal("InsufficientMemoryToRestore", Assert.Throws<DEException>(() => host.DisablePatching(d, restore: true)).ErrorId);
        Assert.True(d.Policy.PatchingEnabled);
    }

    [Fact]
    public void TrustGroupChangeNeedsUnsharedPagesAndPolicyValuesAreChecked()
    {
        using var host = new DEHost();
        using var dir = new TempDir();
        var page = TestMemory.RandomPage(new Random(1));
        var a = TestMemory.LoadRaw(host, dir, "a", [page, page], new DomainOptions { SharingEnabled = true });
        host.Scan();
        Assert.Equal("TrustGroupChangeNeedsUnshare",
            Assert.Throws<DEException>(() => host.SetPolicy(a, trustGroup: "other")).ErrorId);
        host.DisableSharing(a, unshare: true);
        host.SetPolicy(a, trustGroup: "other", patchThreshold: 1000, compressionThreshold: 0.25, c4Sweeps: 3);
        Assert.Equal("other", a.Policy.TrustGroup);
        Assert.Equal(1000, a.Policy.PatchThreshold);
        Assert.Equal("PolicyPatchThresholdInvalid", Assert.Throws<DEException>(() => host.SetPolicy(a, patchThreshold: 5000, c4Sweeps: 5)).ErrorId);
        Assert.Equal(3, a.Policy.C4Sweeps); // nothing changed by the failed call
        Assert.Equal("PolicyCompressionThresholdInvalid", Assert.Throws<DEException>(() => host.SetPolicy(a, compressionThreshold: 1.5)).ErrorId);
        Assert.Equal("PolicySimilarityKeysInvalid", Assert.Throws<DEException>(() => host.SetHostPolicy(keys: 0)).ErrorId);
        host.SetHostPolicy(keys: 4, blocksPerKey: 2, candidates: 2, seed: 7);
        Assert.Equal(4, host.Policy.SimilarityKeys);
        Assert.Equal(8, host.Policy.SimilarityOffsets.Count);
    }

    [Fact]
    public void ATrustGroupChangesOnlyBetweenPasses()
    {
        // A pass reads each domain's trust group once: a change in the middle of one could let it share or patch the
        // domain's pages within the old group. The change waits for the pass, and then finds what the pass shared.
        using var host = new DEHost();
        using var dir = new TempDir();
        var pages = TestMemory.TextPages(256, 11);
        var a = TestMemory.LoadRaw(host, dir, "a", pages, new DomainOptions { SharingEnabled = true });
        var b = TestMemory.LoadRaw(host, dir, "b", pages, new DomainOptions { SharingEnabled = true });
        using var holding = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var scan = new Thread(() => host.Scan([a, b], new ScanOptions { Parallelism = 1, SliceSize = 64 }, _ =>
        {
            if (holding.IsSet) return;
            holding.Set();
            release.Wait();
        }));
        scan.Start();
        holding.Wait(); // the pass is in flight (in its compression phase, after it shared a's pages with b's)
        Exception? refused = null;
        var change = new Thread(() => refused = Record.Exception(() => host.SetPolicy(a, trustGroup: "tenant")));
        change.Start();
        // The change blocks on the pass (or, without the pass's lock, would finish at once).
        SpinWait.SpinUntil(() => (change.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
        Assert.True(change.IsAlive, "the trust group change did not wait for the pass in flight");
        release.Set();
        scan.Join();
        change.Join();
        Assert.Equal("TrustGroupChangeNeedsUnshare", Assert.IsType<DEException>(refused).ErrorId);
        Assert.Equal("default", a.Policy.TrustGroup);
        Assert.True(host.GetPageStats(a).SharedPages > 0);
    }

    [Fact]
    public void ATrustGroupChangeWaitingForAPassDoesNotUndoAChangeMadeMeanwhile()
    {
        // The change is made from the policy as it is once the pass is over, not as it was when the call began.
        using var host = new DEHost();
        using var dir = new TempDir();
        var a = TestMemory.LoadRaw(host, dir, "a", TestMemory.TextPages(128, 12), new DomainOptions { C4Sweeps = 2 });
        using var holding = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var scan = new Thread(() => host.Scan([a], new ScanOptions { Parallelism = 1, SliceSize = 64 }, _ =>
        {
            if (holding.IsSet) return;
            holding.Set();
            release.Wait();
        }));
        scan.Start();
        holding.Wait();
        var change = new Thread(() => host.SetPolicy(a, trustGroup: "tenant"));
        change.Start();
        SpinWait.SpinUntil(() => (change.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0);
        Assert.True(change.IsAlive, "the trust group change did not wait for the pass in flight");
        host.SetPolicy(a, c4Sweeps: 6); // no trust group: made at once, while the other waits
        Assert.Equal(6, a.Policy.C4Sweeps);
        release.Set();
        scan.Join();
        change.Join();
        Assert.Equal("tenant", a.Policy.TrustGroup);
        Assert.Equal(6, a.Policy.C4Sweeps); // not set back to 2 by the trust group change
    }
}
