using DifferenceEngine.Codecs;
using DifferenceEngine.Reports;
using DifferenceEngine.Scanning;
using DifferenceEngine.Tests.Engine;
using DifferenceEngine.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Xen;

/// <summary>
/// The engine on the Xen backend (<see cref="XenHost"/>) over the fake Xen: listing and names, sharing through memshr,
/// patching and compression through the pager, swap under a memory limit, policy and the errors it gives.
/// </summary>
[Collection(nameof(FakeXenCollection))]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class XenHostTests(ITestOutputHelper output)
{
    private const int PageSize = FakeXen.PageSize;

    private static XenHost Connect(XenHostOptions? options = null) =>
        XenHost.Connect(options ?? new XenHostOptions { SimilaritySeed = 7 }, requirePrivcmd: false);

    private static readonly ScanOptions OnePass = new() { Passes = 1 };

    /// <summary>A page like <paramref name="basePage"/> with <paramref name="bytes"/> bytes changed from offset 100·variant.</summary>
    internal static byte[] Variant(byte[] basePage, int variant, int bytes = 24)
    {
        byte[] page = (byte[])basePage.Clone();
        for (int i = 0; i < bytes; i++)
        {
            page[(variant * 100 + i) % PageSize] ^= (byte)(variant * 31 + i + 1);
        }
        return page;
    }

    [RequiresFact(Requirement.XenBuild)]
    public void AFingerprintOfADomainWithAHoleInItsPhysmapTakesEveryPageItHolds()
    {
        // An HVM guest's physmap has a hole (MMIO below 4 GiB) with RAM above it: Xen counts the pages it holds, not its
        // highest gfn. The fingerprint read gfns 0 to the count less one: the hole's gfns came out unreadable and the
        // pages above them were never read.
        var fake = FakeXen.Get();
        fake.CreateDomain(3, 64, seed: 4);
        fake.RemovePages(3, 16, 16);
        using var host = Connect();
        var domain = host.GetDomain("Domain-3");
        Assert.Equal(48, domain.PageCount);
        var key = DifferenceEngine.Fleet.FleetKey.FromSecret(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray());
        var fromDomain = DifferenceEngine.Fleet.FingerprintBuilder.FromDomain(domain, key, DifferenceEngine.Fleet.FingerprintBuilder.MinSampleShift);

        // The same 48 pages, in gfn order, as an image.
        using var dir = new TempDir();
        var held = Enumerable.Range(0, 64).Where(g => g is < 16 or >= 32).Select(g => FakeXen.Pattern(4, g)).ToArray();
        using var source = DifferenceEngine.Loading.MemorySource.OpenFile(TestMemory.WriteRaw(dir, "held.img", held));
        var fromImage = DifferenceEngine.Fleet.FingerprintBuilder.FromSource(source, key, "held", "test", sampleShift: DifferenceEngine.Fleet.FingerprintBuilder.MinSampleShift);

        Assert.Equal(0, fromDomain.UnreadablePages);
        Assert.Equal(48, fromDomain.PageCount);
        Assert.Equal(fromImage.ContentPages, fromDomain.ContentPages);
        Assert.Equal(fromImage.ZeroPages, fromDomain.ZeroPages);
        Assert.NotEmpty(fromImage.Sketch);
        Assert.Equal(fromImage.Sketch, fromDomain.Sketch);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void ListsDomainsWithXenstoreNamesOrTheirIdAndResolvesBoth()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(3, 8, seed: 1);
        fake.CreateDomain(5, 16, seed: 2);
        fake.SetDomainName(3, "web-01");
        using var host = Connect(new XenHostOptions { Name = "x1" });
        Assert.Equal("Xen", host.Kind);
        Assert.Equal(["web-01", "Domain-5"], host.Domains.Select(d => d.Name));
        Assert.Equal(16, host.GetDomain("Domain-5").PageCount);
        Assert.Same(host.GetDomain("web-01"), host.GetDomain("3"));
        Assert.Equal("Running", host.GetDomain("3").Status);
        var missing = Assert.Throws<DEException>(() => host.GetDomain("nope"));
        Assert.Equal("DomainNotFound", missing.ErrorId);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void DisconnectingEndsAScanInFlightAndRefusesDisposalFromItsOwnProgress()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(6, 64, seed: 5);
        var host = Connect(new XenHostOptions { Name = "x-closing" });
        var d = host.GetDomain("6");
        host.EnableSharing(d);
        // From the scan's own progress: refused at once (disposal would wait for the scan, the scan for the callback).
        var inCallback = Record.Exception(() => host.Scan([d], OnePass, _ => host.Dispose()));
        Assert.Equal("CalledFromCallback", Assert.IsType<DEException>(inCallback).ErrorId);
        Assert.True(host.IsConnected);
        // From another thread while a scan is held in its progress: the scan ends with HostDisconnected, not after its
        // 64 passes.
        var failure = DifferenceEngine.Tests.Engine.HeldScan.DisposeDuring(
            progress => host.Scan([d], new ScanOptions { UntilStable = true }, progress), host.Dispose, () => host.IsClosing);
        Assert.Equal("HostDisconnected", Assert.IsType<DEException>(failure).ErrorId);
        Assert.False(host.IsConnected);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void SharingPassesShareIdenticalPagesWithinATrustGroupOnly()
    {
        var fake = FakeXen.Get();
        // Domains 1 and 2 have the same 8 pages; domain 3 too, but in another trust group.
        foreach (uint id in new uint[] { 1, 2, 3 })
        {
            fake.CreateDomain(id, 8, seed: 40);
        }
        using var host = Connect();
        var (d1, d2, d3) = (host.GetDomain("1"), host.GetDomain("2"), host.GetDomain("3"));
        host.SetPolicy(d3, trustGroup: "tenant-b");
        foreach (var d in new[] { d1, d2, d3 })
        {
            host.EnableSharing(d);
        }
        ulong before = fake.FrameCount;
        var result = host.Scan(options: OnePass);
        output.WriteLine($"merged {result.PagesMerged}, frames {before} -> {fake.FrameCount}");
        Assert.Equal(8, result.PagesMerged);
        Assert.Equal(before - 8, fake.FrameCount);
        var s1 = host.GetPageStats(d1);
        var s3 = host.GetPageStats(d3);
        Assert.Equal(host.Name, s1.Host); // piped on, the stats name their host
        Assert.Equal(8, s1.SharedPages + host.GetPageStats(d2).SharedPages - 8); // 8 gfns of each of 1 and 2 on 8 frames
        Assert.Equal(0, s3.SharedPages);
        Assert.True(s1.BytesSaved > 0, "sharing saved nothing in the stats");
        // A guest write to a shared page gets a copy; the other domain still sees the old bytes.
        byte[] mine = FakeXen.Pattern(99, 0);
        fake.GuestWrite(1, 0, mine);
        Assert.Equal(mine, fake.GuestRead(1, 0));
        Assert.Equal(FakeXen.Pattern(40, 0), fake.GuestRead(2, 0));
        Assert.Equal(mine, host.ReadPage(d1, 0));
    }

    [RequiresFact(Requirement.XenBuild)]
    public void ZeroPagesAreFoundOnceAndScansUntilStableStopWhenNothingChanges()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(11, 8, seed: 41);
        fake.CreateDomain(12, 8, seed: 42);
        foreach (ulong gfn in new ulong[] { 1, 4, 6 }) fake.GuestWrite(11, gfn, new byte[PageSize]);
        fake.GuestWrite(12, 2, new byte[PageSize]);
        using var host = Connect();
        foreach (var d in host.Domains.Where(d => d.Name is "Domain-11" or "Domain-12")) host.EnableSharing(d);
        var scan = host.Scan(host.Domains.Where(d => d.Name is "Domain-11" or "Domain-12"), new ScanOptions { UntilStable = true });
        output.WriteLine(string.Join("; ", scan.PassResults.Select(p => $"pass {p.Pass}: zero {p.ZeroPagesFound}, merged {p.PagesMerged}, contended {p.Contended}")));
        Assert.True(scan.Stable, $"not stable after {scan.Passes} passes");
        // Found when first read: the four written, and each domain's gfn past its last page, the fake's paging ring
        // page (fakexen.c: gfn `pages`, a special page as Xen's ring is): a zero page Xen will not nominate for sharing. Offered once, then left
        // alone while it stays as it is: before, every pass met the same refusal, counted as contention, to 64 passes.
        Assert.Equal(6, scan.PassResults[0].ZeroPagesFound);
        Assert.All(scan.PassResults.Skip(1), p => Assert.Equal(0, p.ZeroPagesFound));
        Assert.Equal(2, scan.Passes);
        Assert.Equal(0, scan.PassResults[^1].Contended);
        // A page written to zero since is found again, once.
        fake.GuestWrite(12, 5, new byte[PageSize]);
        var again = host.Scan(host.Domains.Where(d => d.Name == "Domain-12"), new ScanOptions { UntilStable = true });
        Assert.True(again.Stable);
        Assert.Equal(1, again.ZeroPagesFound);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void TheMetadataPeakIsMeasuredAtEachPassAndNeverBelowWhatIsHeld()
    {
        var fake = FakeXen.Get();
        byte[] basePage = FakeXen.Pattern(6, 0);
        const int Pages = 12;
        byte[] content = new byte[Pages * PageSize];
        for (int g = 0; g < Pages; g++) Variant(basePage, g + 1).CopyTo(content, g * PageSize);
        fake.CreateDomain(9, content);
        using var host = Connect();
        var d = host.GetDomain("9");
        host.EnablePatching(d);
        long before = host.GetStats().MetadataPeakBytes;
        host.Scan(options: new ScanOptions { Passes = 2 });
        var stats = host.GetStats();
        Assert.True(stats.Metadata.Similarity > 0, "the references patches were made against are metadata");
        Assert.True(stats.MetadataPeakBytes >= stats.MetadataBytes && stats.MetadataPeakBytes > before,
            $"peak {stats.MetadataPeakBytes} B, held {stats.MetadataBytes} B, peak before the passes {before} B");
        Assert.Equal(stats.MetadataPeakBytes, stats.MetadataPeak.Total);
        Assert.True(stats.MetadataPeak.Similarity >= stats.Metadata.Similarity);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void PatchingKeepsSimilarPagesAsPatchesAgainstAReferenceAndPagesThemBackRight()
    {
        var fake = FakeXen.Get();
        byte[] basePage = FakeXen.Pattern(5, 0);
        const int Pages = 12;
        byte[] content = new byte[Pages * PageSize];
        var expected = new byte[Pages][];
        for (int g = 0; g < Pages; g++)
        {
            expected[g] = Variant(basePage, g + 1);
            expected[g].CopyTo(content, g * PageSize);
        }
        fake.CreateDomain(9, content);
        using var host = Connect();
        var d = host.GetDomain("9");
        host.EnablePatching(d);
        var first = host.Scan(options: OnePass);
        Assert.Equal(0, first.PagesPatched); // nothing is old enough on the first pass
        Assert.Equal(Pages, first.PassResults[0].NewlyExamined);
        var second = host.Scan(options: OnePass);
        var stats = host.GetPageStats(d);
        output.WriteLine($"patched {second.PagesPatched} ({second.PassResults[0].PatchBytes} bytes), references {stats.ReferencePages}, " +
                         $"stored {stats.StoredBytes}, used {stats.BytesUsed} of {stats.GuestBytes}");
        Assert.Equal(Pages - 1, second.PagesPatched);
        Assert.Equal(Pages - 1, stats.PatchedPages);
        Assert.Equal(1, stats.ReferencePages);
        Assert.True(stats.BytesSaved > (Pages - 2) * PageSize, $"patching saved only {stats.BytesSaved} bytes");
        // Reading through the engine does not page in; a guest read does, and gets its bytes.
        Assert.Equal(expected[3], host.ReadPage(d, 3));
        Assert.Equal(0, host.GetStats().UnchargedBytes);
        for (int g = 0; g < Pages; g++)
        {
            Assert.Equal(expected[g], fake.GuestRead(9, (ulong)g));
            // Once the reference's own page is back, the pager keeps its copy for the patches still held: those patches
            // are charged it, so every byte the pager holds is still some domain's.
            Assert.Equal(0, host.GetStats().UnchargedBytes);
        }
        Assert.Equal(0, host.GetPageStats(d).PatchedPages);
        Assert.True(host.Pager.PageIns >= Pages, $"{host.Pager.PageIns} page-ins");
        Assert.True(host.GetStats().Faults.Single(f => f.Kind == Domains.FaultKind.Unpatch).Count >= Pages - 1);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void APageThatDoesNotCompressIsTriedOnceUntilItChangesOrThePolicyDoes()
    {
        var fake = FakeXen.Get();
        byte[] content = new byte[4 * PageSize];
        RandomPage(1).CopyTo(content, 0); // gfn 0 never compresses
        for (int g = 1; g < 4; g++) TextPage(g).CopyTo(content, g * PageSize);
        fake.CreateDomain(4, content);
        using var host = Connect();
        var d = host.GetDomain("4");
        host.EnableCompression(d);
        host.SetPolicy(d, c4Sweeps: 1);
        long Tried(int passes) => host.Scan(options: new ScanOptions { Passes = passes }).PassResults.Sum(p => p.PagesIncompressible);
        Assert.Equal(1, Tried(4)); // tried once, then left alone
        Assert.Equal(3, host.GetPageStats(d).CompressedPages);
        Assert.Equal(0, Tried(3));
        host.SetPolicy(d, compressionThreshold: 0.9); // a new policy: worth a new try
        Assert.Equal(1, Tried(3));
        host.SetPolicy(d, c4Sweeps: 1); // not a compression setting: no new try
        Assert.Equal(0, Tried(3));
        fake.GuestWrite(4, 0, RandomPage(2)); // new content: young again, then one new try
        Assert.Equal(1, Tried(4));
        Assert.Equal(RandomPage(2), fake.GuestRead(4, 0));
    }

    [RequiresFact(Requirement.XenBuild)]
    public void AReportOfAXenHostCoversTheGuestDomainsAndThePagersPageIns()
    {
        var fake = FakeXen.Get();
        const int Pages = 8;
        byte[] content = new byte[Pages * PageSize];
        for (int g = 0; g < Pages; g++) TextPage(g).CopyTo(content, g * PageSize);
        fake.CreateDomain(0, 2, seed: 9); // dom0: listed, never treated, left out of a report of every domain
        fake.CreateDomain(4, content);
        fake.CreateDomain(5, 4, seed: 3);
        using var host = Connect(new XenHostOptions { Name = "xr" });
        var d = host.GetDomain("4");
        host.EnableCompression(d);
        host.SetPolicy(d, c4Sweeps: 1);
        host.Scan(options: new ScanOptions { Passes = 2 });
        Assert.True(host.GetPageStats(d).CompressedPages > 0);
        Assert.Equal(TextPage(3), fake.GuestRead(4, 3)); // a page-in the pager serves

        var model = ReportModel.FromHost(host);
        Assert.Equal("Xen", model.HostKind);
        Assert.Equal("xr", model.HostName);
        Assert.True(model.AllDomains);
        Assert.Equal(["4", "5"], model.Domains.Select(r => r.Stats.Domain.Replace("Domain-", "")).Order().ToArray());
        Assert.Equal(host.GetPageStats(d).CompressedPages, model.Domains.Single(r => r.Stats.DomainId == 4).Stats.CompressedPages);
        Assert.Equal(1, model.Faults.Single(f => f.Kind == Domains.FaultKind.Decompress).Count);
        Engine.TestMemory.AssertNumbersAddUp(host.TakeSnapshot()); // the same identities as on the embedded host
        var json = Newtonsoft.Json.Linq.JObject.Parse(DifferenceEngine.Tests.Reports.ReportHosts.Render(model, ReportFormat.Json));
        Assert.Equal("Xen", (string?)json["host"]!["kind"]);
        Assert.Contains("Xen dom0 service", DifferenceEngine.Tests.Reports.ReportHosts.Render(model, ReportFormat.Html));

        // Named domains only, domain 0 included when named; a domain of another host is not found.
        var dom0 = host.GetDomain("0");
        var only = ReportModel.FromHost(host, [dom0, d]);
        Assert.False(only.AllDomains);
        Assert.Equal([0, 4], only.Domains.Select(r => r.Stats.DomainId).ToArray());
        using var embedded = new Hosting.DEHost();
        var stranger = embedded.CreateDomain("stranger", 4096);
        Assert.Equal("DomainNotFound", Assert.Throws<DEException>(() => ReportModel.FromHost(host, [stranger])).ErrorId);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void CompressionTakesPagesUnchangedForTheC4PeriodAndRestoreGivesThemBack()
    {
        var fake = FakeXen.Get();
        const int Pages = 16;
        byte[] content = new byte[Pages * PageSize];
        for (int g = 0; g < Pages; g++)
        {
            // Text-like pages compress well; page 15 is random and must stay with the guest.
            byte[] page = g == 15 ? RandomPage(g) : TextPage(g);
            page.CopyTo(content, g * PageSize);
        }
        fake.CreateDomain(4, content);
        using var host = Connect();
        var d = host.GetDomain("4");
        host.EnableCompression(d, CompressionAlgorithm.Zstd);
        host.SetPolicy(d, c4Sweeps: 2);
        Assert.Equal(0, host.Scan(options: OnePass).PagesCompressed); // seen
        Assert.Equal(0, host.Scan(options: OnePass).PagesCompressed); // unchanged one pass: still warm
        fake.GuestWrite(4, 0, TextPage(100)); // page 0 changes: young again
        var third = host.Scan(options: OnePass);
        Assert.Equal(Pages - 2, third.PagesCompressed); // not page 0 (just written) nor page 15 (does not compress)
        Assert.Equal(Pages - 2, host.GetPageStats(d).CompressedPages);
        Assert.True(host.GetPageStats(d).StoredBytes < (Pages - 2) * PageSize / 2);
        long restored = host.DisableCompression(d, restore: true);
        Assert.Equal(Pages - 2, restored);
        Assert.Equal(0, host.GetPageStats(d).CompressedPages);
        Assert.Equal(0ul, d.Info.PagedPages);
        Assert.Equal(TextPage(100), fake.GuestRead(4, 0));
        for (int g = 1; g < Pages; g++)
        {
            Assert.Equal(g == 15 ? RandomPage(g) : TextPage(g), fake.GuestRead(4, (ulong)g));
        }
        Assert.False(host.Pager.IsAttached(4)); // nothing held and no mechanism left: paging handed back to Xen
    }

    [RequiresFact(Requirement.XenBuild)]
    public void OverItsMemoryLimitThePagerSwapsTheOldestPagesAndServesThemBack()
    {
        var fake = FakeXen.Get();
        const int Pages = 32;
        byte[] content = new byte[Pages * PageSize];
        for (int g = 0; g < Pages; g++)
        {
            TextPage(g).CopyTo(content, g * PageSize);
        }
        fake.CreateDomain(6, content);
        string swapPath = Path.Combine(Path.GetTempPath(), $"de-xen-swap-{Guid.NewGuid():N}");
        using (var host = Connect(new XenHostOptions { PagerMemoryLimitBytes = 8 * 1024, SwapPath = swapPath, SwapSizeBytes = 1 << 20 }))
        {
            Assert.False(File.Exists(swapPath)); // only the pager's descriptor has it
            using (var file = OpenSwapFile.Open(swapPath))
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file.SafeFileHandle));
            var d = host.GetDomain("6");
            host.EnableCompression(d);
            host.SetPolicy(d, c4Sweeps: 1);
            host.Scan(options: new ScanOptions { Passes = 2 });
            var stats = host.GetPageStats(d);
            var hostStats = host.GetStats();
            output.WriteLine($"compressed {stats.CompressedPages}, swapped {stats.SwappedPages}, pager holds {host.Pager.StoredBytes} bytes, " +
                             $"swap used {hostStats.SwapUsedBytes}");
            Assert.True(stats.SwappedPages > 0, "nothing went to swap");
            Assert.True(host.Pager.StoredBytes <= 8 * 1024);
            Assert.Equal(Pages, stats.SwappedPages + stats.CompressedPages);
            Assert.Equal(stats.SwappedPages * PageSize, hostStats.SwapUsedBytes);
            for (int g = 0; g < Pages; g++)
            {
                Assert.Equal(TextPage(g), fake.GuestRead(6, (ulong)g));
            }
            Assert.True(host.GetStats().Faults.Single(f => f.Kind == Domains.FaultKind.SwapIn).Count > 0);
            Assert.Equal(0, host.GetStats().SwapUsedBytes);
        }
        Assert.Null(OpenSwapFile.Descriptor(swapPath)); // closed with the host
        Assert.False(File.Exists(swapPath));
    }

    [RequiresFact(Requirement.XenBuild)]
    public void ACorruptSwapSlotIsNeverLoaded()
    {
        var fake = FakeXen.Get();
        byte[] content = new byte[8 * PageSize];
        for (int g = 0; g < 8; g++)
        {
            TextPage(g).CopyTo(content, g * PageSize);
        }
        fake.CreateDomain(6, content);
        fake.TimeoutMs = 500;
        string swapPath = Path.Combine(Path.GetTempPath(), $"de-xen-swap-{Guid.NewGuid():N}");
        var host = Connect(new XenHostOptions { PagerMemoryLimitBytes = 4096, SwapPath = swapPath, SwapSizeBytes = 1 << 20 });
        using var failed = new ManualResetEventSlim();
        host.Pager.FailureRecorded = _ => failed.Set();
        var d = host.GetDomain("6");
        host.EnableCompression(d);
        host.SetPolicy(d, c4Sweeps: 1);
        host.Scan(options: new ScanOptions { Passes = 2 });
        Assert.True(host.GetPageStats(d).SwappedPages > 0);
        // Flip a byte of every slot in the file behind the pager's back.
        using (var file = OpenSwapFile.Open(swapPath))
        {
            for (long offset = 0; offset < file.Length; offset += PageSize)
            {
                file.Position = offset + 17;
                int b = file.ReadByte();
                file.Position = offset + 17;
                file.WriteByte((byte)(b ^ 0x10));
            }
        }
        var swapped = Enumerable.Range(0, 8).First(g => host.Pager.HeldKindForTest(6, (ulong)g) == XenHeldKind.Swapped);
        Assert.Equal(-110, fake.GuestRead(6, (ulong)swapped, new byte[PageSize])); // ETIMEDOUT: the vCPU stays paused
        // The guest giving up says nothing of when the pager took the request: wait for the pager to say it failed.
        failed.Wait();
        var failure = Assert.Single(host.Pager.Failures);
        Assert.Equal("XenPageCorrupt", failure.ErrorId);
        // Where an admin sees it: Get-DEHostStats.
        var stats = host.GetStats();
        Assert.Equal(1, stats.PagerFailures);
        Assert.StartsWith("XenPageCorrupt: ", stats.LastPagerError);
        Assert.Contains($"domain 6 gfn 0x{swapped:x}", stats.LastPagerError);
        var e = Assert.Throws<DEException>(() => host.Dispose());
        Assert.Equal("XenPagerRestoreFailed", e.ErrorId);
    }

    [RequiresFact(Requirement.XenBuild)]
    public void PolicyAndMechanismErrorsAreClear()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(2, 4, seed: 1);
        using var host = Connect();
        var d = host.GetDomain("2");
        host.EnableSharing(d);
        var unshare = Assert.Throws<DEException>(() => host.DisableSharing(d, unshare: true));
        Assert.Equal("XenUnshareNotSupported", unshare.ErrorId);
        Assert.Equal(DEErrorKind.NotImplemented, unshare.Kind);
        Assert.True(d.Policy.SharingEnabled, "a refused unshare changed the policy");
        Assert.Equal("PolicyC4SweepsInvalid", Assert.Throws<DEException>(() => host.SetPolicy(d, c4Sweeps: 0)).ErrorId);
        Assert.Equal("CompressionAlgorithmUnknown",
            Assert.Throws<DEException>(() => host.EnableCompression(d, (CompressionAlgorithm)77)).ErrorId);
        Assert.False(d.Policy.CompressionEnabled);
        Assert.Equal("XenMemoryLimitNeedsSwap",
            Assert.Throws<DEException>(() => Connect(new XenHostOptions { PagerMemoryLimitBytes = 1 << 20 })).ErrorId);
        // Xen refusing paging for the domain surfaces from Enable-, and the policy stays off.
        fake.FailNext("xc_mem_paging_enable", 18); // EXDEV: passthrough or populate-on-demand
        var refused = Assert.Throws<XenException>(() => host.EnablePatching(d));
        Assert.Equal("XenCallFailed", refused.ErrorId);
        Assert.False(d.Policy.PatchingEnabled);
    }

    [RequiresTheory(Requirement.XenBuild)]
    [InlineData(false, false)] // PV
    [InlineData(true, false)] // HVM on shadow paging
    public void OnlyHvmDomainsWithHapAreTreated(bool hvm, bool hap)
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(2, 4, seed: 1);
        fake.CreateDomain(3, 4, seed: 1);
        fake.SetDomainKind(2, hvm, hap);
        using var host = Connect();
        var d = host.GetDomain("2");
        Assert.False(d.SupportsSharingAndPaging);
        Assert.True(host.GetDomain("3").SupportsSharingAndPaging);
        foreach (var enable in new Action[] { () => host.EnableSharing(d), () => host.EnablePatching(d), () => host.EnableCompression(d) })
        {
            var e = Assert.Throws<DEException>(enable);
            Assert.Equal("XenDomainNotHvmHap", e.ErrorId);
            Assert.Equal(DEErrorKind.InvalidOperation, e.Kind);
        }
        Assert.False(d.Policy.SharingEnabled || d.Policy.PatchingEnabled || d.Policy.CompressionEnabled);
        Assert.False(host.Pager.IsAttached(2));
    }

    [RequiresFact(Requirement.XenBuild)]
    public void ADomainThatGoesAwayIsMarkedRemoved()
    {
        var fake = FakeXen.Get();
        fake.CreateDomain(2, 4, seed: 1);
        using var host = Connect();
        var d = host.GetDomain("2");
        Assert.Single(host.Domains);
        fake.Reset();
        Assert.Empty(host.Domains);
        Assert.True(d.IsRemoved);
        Assert.Equal("Removed", d.Status);
        Assert.Equal("DomainNotFound", Assert.Throws<DEException>(() => host.EnableSharing(d)).ErrorId);
    }

    internal static byte[] TextPage(int seed)
    {
        var random = new Random(seed);
        string[] words = ["memory", "page", "share", "the", "of", "guest", "xen", "frame", "patch", "kernel", "and", "to"];
        var text = new System.Text.StringBuilder();
        while (text.Length < PageSize)
        {
            text.Append(words[random.Next(words.Length)]).Append(' ');
        }
        return System.Text.Encoding.ASCII.GetBytes(text.ToString(0, PageSize));
    }

    private static byte[] RandomPage(int seed)
    {
        byte[] page = new byte[PageSize];
        new Random(seed).NextBytes(page);
        return page;
    }
}
