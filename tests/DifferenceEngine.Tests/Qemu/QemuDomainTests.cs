using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Stats;
using DifferenceEngine.Tests.Engine;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// A running QEMU guest as a domain of the embedded host (DEHost.AttachQemu): its pages are frames of the host read in
/// place, the engine serves its first-touch faults, and removing the domain hands the guest back, which verifies its
/// own memory throughout.
/// </summary>
public class QemuDomainTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [RequiresFact(Requirement.QemuGuests, Requirement.QemuPager)]
    public void AGuestAttachedAsADomainRunsOnWithItsPagesReadInPlaceAndItsFirstTouchesServed()
    {
        using var dir = new TempDir();
        string socket = Path.Combine(dir.Path, "qemu.sock");
        var environment = new Dictionary<string, string>
        {
            ["LD_PRELOAD"] = Path.Combine(QemuNativeBuild.Folder, "libdeqemu.so"),
            ["DE_QEMU_SOCKET"] = socket,
        };
        // 16 MiB filled at boot, 160 MiB more before round 3: more than the guest kernel has touched and freed by then
        // (it touches about half of its 256 MiB while booting), so many are pages it first touches with the engine attached.
        // de.gate=1: the guest grows only when the test lets it, after the engine has attached and counted.
        using var guest = TestGuest.Boot(workloadMiB: 16, rounds: 0, options: "de.grow=160 de.gate=1", environment: environment);
        guest.WaitFor(@"^deworkload ready pages=4096 ");

        using var host = new DEHost(new HostOptions { Name = "qemu-test" });
        var vm = host.AttachQemu("vm1", socket);
        Assert.Equal(256L * 256, vm.PageCount);
        Assert.Equal(guest.Pid, vm.QemuPid);
        var before = host.GetPageStats(vm);
        Assert.True(before.PrivatePages > 4096, $"the guest has its kernel and the workload's 16 MiB: {before.PrivatePages} pages");
        Assert.True(before.UntouchedPages > 16 * 256, $"and has never touched most of its 256 MiB: {before.UntouchedPages} pages");
        Assert.Equal(vm.PageCount, before.PrivatePages + before.UntouchedPages);
        Assert.Equal(before.PrivatePages * 4096, before.GuestBytes);
        Assert.Equal(before.PrivatePages * 4096, before.BytesUsed); // nothing taken out yet: the guest's pages are what it uses
        TestMemory.AssertNumbersAddUp(host.TakeSnapshot(), atRest: false); // the guest runs meanwhile

        // Pages read in place are the guest's own: the same bytes QEMU's process has at that page. QEMU is stopped
        // (SIGSTOP) meanwhile, so that the guest writes none of them between the two reads.
        var page = new byte[4096];
        long checkedPages = 0;
        StoppedProcess.Stop(guest.Pid);
        try
        {
            for (long gfn = 0; gfn < vm.PageCount && checkedPages < 64; gfn += 97)
            {
                if (vm.PeekState(gfn) != PageState.Private) continue;
                vm.ReadPage(gfn, page);
                Assert.True(page.AsSpan().SequenceEqual(QemuRamPage(guest.Pid, gfn)), $"page {gfn} read in place");
                checkedPages++;
            }
        }
        finally
        {
            Kill(guest.Pid, 18 /* SIGCONT */);
        }
        Assert.True(checkedPages > 10);

        // The guest grows into memory it never touched: each first touch is a fault the engine serves with a zero page.
        guest.LetGrow();
        guest.WaitFor(@"^deworkload grew pages=45056$");
        guest.WaitForCleanRound(45056, round: 4);
        var after = host.GetPageStats(vm);
        long zeroFills = host.GetStats().Faults.Single(f => f.Kind == FaultKind.ZeroFill).Count;
        Assert.True(zeroFills >= 16 * 256, $"the grown 16 MiB came through the engine's faults: {zeroFills}; private {before.PrivatePages} -> {after.PrivatePages}, untouched {before.UntouchedPages} -> {after.UntouchedPages}");
        Assert.True(after.PrivatePages >= before.PrivatePages + 16 * 256);
        Assert.Equal(vm.PageCount, after.PrivatePages + after.UntouchedPages);
        TestMemory.AssertNumbersAddUp(host.TakeSnapshot(), atRest: false); // the guest runs meanwhile

        // What the engine cannot do yet to a guest, it refuses.
        Assert.Equal("QemuMechanismNotYetSupported", Assert.Throws<DEException>(() => vm.WritePage(0, new byte[4096])).ErrorId);

        // Removed, the domain hands the guest back: it goes on, and still finds every page as it left it.
        host.RemoveDomain(vm);
        Assert.Equal(0, host.GetStats().FramesInUse);
        VerifiesOn(guest, 45056);
    }

    [RequiresFact(Requirement.QemuGuests, Requirement.QemuPager)]
    public void TheEngineTakesZeroAndCompressiblePagesOutOfARunningGuestThatKeepsVerifyingThem()
    {
        using var dir = new TempDir();
        using var guest = BootReady(dir, 48, out string socket);

        using var host = new DEHost(new HostOptions { Name = "qemu-compress" });
        var vm = AttachCompressing(host, socket);
        long touched = host.GetPageStats(vm).PrivatePages;

        // Passes while the guest verifies and rewrites its pages: the clock sees its writes, pages are taken out under
        // write protection, and the guest's reads of them fault back in.
        var taken = new List<long>();
        for (int pass = 0; pass < 4; pass++)
        {
            host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 1 });
            var s = host.GetPageStats(vm);
            taken.Add(s.ZeroPages + s.UniformPages + s.CompressedPages);
        }
        long most = taken.Max();
        Assert.True(most * 100 >= touched * 30,
            $"at least 30% of the {touched} pages the guest had were taken out at once: {string.Join(", ", taken)}");
        var stats = host.GetPageStats(vm);
        Assert.True(stats.BytesSaved > 0);
        output.WriteLine($"guest had {touched} pages; taken out after passes 1-4: {string.Join(", ", taken)}; " +
                         $"now {stats.CompressedPages} compressed, {stats.ZeroPages} zero, {stats.UniformPages} one-word; " +
                         $"saved {stats.BytesSaved >> 20} MiB of {stats.GuestBytes >> 20} MiB");
        TestMemory.AssertNumbersAddUp(host.TakeSnapshot(), atRest: false);
        ReadsOfHeldPagesThroughTheEnginesMappingFail(host, vm);

        // The guest reads every page each round: the pages taken out come back through the engine, and match.
        guest.WaitForCleanRound(12288, round: guest.WaitForCleanRound(12288) + 1);
        var faults = host.GetStats().Faults;
        Assert.True(faults.Single(f => f.Kind == FaultKind.Decompress).Count > 0, "compressed pages were read back by the guest");
        Assert.True(faults.Single(f => f.Kind == FaultKind.ZeroFill).Count > 0, "zero pages were read back by the guest");
        Assert.Null(vm.Qemu!.FaultFailure);
        foreach (var f in faults.Where(f => f.Count > 0))
            output.WriteLine($"{f.Kind}: {f.Count} faults, p50 {f.P50.TotalMicroseconds:0.0} us, p99 {f.P99.TotalMicroseconds:0.0} us");

        // Removed, the domain puts back every page it still holds before it lets go: the guest verifies on, clean.
        host.RemoveDomain(vm);
        Assert.Equal(0, host.GetStats().FramesInUse);
        Assert.Equal(0, host.GetStats().StoreStoredBytes);
        VerifiesOn(guest, 12288);
    }

    /// <summary>
    /// A page whose blob in the store fails its checksum when the domain is removed is put back from the crash journal's
    /// copy, the other pages as usual, and the guest verifies its memory on, clean. Before, the removal stopped at that
    /// page: every page after it stayed out of the guest, whose accesses to them waited for good.
    /// </summary>
    [RequiresFact(Requirement.QemuGuests, Requirement.QemuPager)]
    public void RemovingADomainPutsAPageItsCopyOfFailsBackFromTheCrashJournal()
    {
        using var dir = new TempDir();
        using var guest = BootReady(dir, 48, out string socket);
        using var host = new DEHost(new HostOptions { Name = "qemu-journal-back" });
        var vm = AttachCompressing(host, socket);
        for (int pass = 0; pass < 3; pass++) host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 1 });
        // Two pages compressed alone, their blobs damaged: the first and the last such page of the guest's memory. (Its
        // upper half may hold none: how far a TCG guest's boot has touched it when the passes run depends on the machine's
        // load, and a search of that half alone failed once under load.)
        var damaged = new List<long>();
        bool Damage(long g) // under the page's lock: the guest may have faulted it back meanwhile
        {
            if (!vm.TryLock(g, out ulong e)) return false;
            try
            {
                if (!PageEntry.IsSingleCompressed(e) || PageEntry.IsGrouped(e)) return false;
                var blob = host.Store.Get(PageEntry.Payload(e));
                blob[^1] ^= 0x5A;
                damaged.Add(g);
                return true;
            }
            finally
            {
                vm.Unlock(g, e);
            }
        }
        long first = -1;
        for (long g = 0; g < vm.PageCount && first < 0; g++) if (Damage(g)) first = g;
        for (long g = vm.PageCount - 1; g > first && damaged.Count < 2; g--) Damage(g);
        Assert.Equal(2, damaged.Count);
        output.WriteLine($"damaged the blobs of gfn {string.Join(", ", damaged)}; held: {host.GetPageStats(vm).CompressedPages} compressed");

        host.RemoveDomain(vm); // no error: both pages came back from the journal
        Assert.Equal(0, host.GetStats().FramesInUse);
        Assert.Equal(0, host.GetStats().StoreStoredBytes);
        VerifiesOn(guest, 12288);
    }

    /// <summary>
    /// A page the crash journal holds but the engine does not (what an attach leaves when its recovery of a dead engine's
    /// pages fails part-way: the pages not yet reached are Zero in its table) is put back from the journal when the domain
    /// is let go. Before, such a page was taken for a zero page and left a hole: the guest read zeros. The state is made
    /// directly: the fake guest's duplicate pages shared (taken out of it), then the engine's hold on each dropped and its
    /// entry zeroed, its journal record kept. The fake guest reads only when told to, so its verify sees every such page.
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public void APageOnlyTheCrashJournalHoldsIsPutBackFromItNotLeftAHole()
    {
        using var guest = FakeGuest.Start();
        using var host = new DEHost(new HostOptions { Name = "qemu-journal-only" });
        var vm = host.AttachQemu("fake", guest.SocketPath, new DomainOptions { C4Sweeps = 1, SharingEnabled = true });
        host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 2 });
        var forgotten = new List<long>();
        for (long g = 0; g < vm.PageCount; g++)
        {
            ulong e = vm.Lock(g);
            bool take = PageEntry.State(e) == PageState.Shared && vm.Qemu!.Journal.IsHeld(g);
            if (take)
            {
                vm.DropHeld(e);
                forgotten.Add(g);
            }
            vm.Unlock(g, take ? 0 : e);
        }
        Assert.True(forgotten.Count >= 64, $"only {forgotten.Count} of the fake guest's duplicate pages were shared");
        output.WriteLine($"the engine forgot {forgotten.Count} shared pages; the journal still holds them");

        host.RemoveDomain(vm); // no error: every one came back from the journal
        Assert.Equal(0, host.GetStats().FramesInUse);
        Assert.Equal("VERIFY mismatches=0", VerifyWithin(guest));
    }

    /// <summary>
    /// Pages QEMU lets go itself (a virtio-balloon, free page reporting: the fake QEMU punches them out of its memfd and
    /// drops them from its mapping, as ram_block_discard_range does) while the engine has them as the guest's read as
    /// zeros, whoever reads them first: the engine's next sweep (through its guarded mapping, whose guard thread gives
    /// the hole a zero page; before, the read got SIGBUS and the engine died), or the guest (whose fault gets a zero page;
    /// before, it was woken without one and faulted again, for good). The passes then take them out as zero pages,
    /// reads of held pages through /proc/self/mem still fail, and the guest verifies throughout.
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public void PagesQemuLetsGoItselfReadAsZerosWhetherTheEngineOrTheGuestReadsThemFirst()
    {
        using var guest = FakeGuest.Start();
        using var host = new DEHost(new HostOptions { Name = "qemu-discard" });
        var vm = host.AttachQemu("fake", guest.SocketPath, new DomainOptions
        {
            C4Sweeps = 1, SharingEnabled = true, CompressionEnabled = true, CompressionAlgorithm = DifferenceEngine.Codecs.CompressionAlgorithm.LZ4,
        });
        Assert.Null(vm.QemuUnguardedReason);
        Assert.True(vm.Qemu!.GuardIsNative, $"the read guard is libdeguard.so's thread: {vm.Qemu.ManagedGuardReason}");
        Assert.Equal(FakeGuest.Pages, host.GetPageStats(vm).PrivatePages); // the fake guest wrote every page

        // The engine reads first: 64 pages let go, then a pass, whose sweep reads every page the guest has.
        Assert.Equal("DISCARDED 64", guest.Ask("discard 100 64"));
        for (long gfn = 100; gfn < 164; gfn++) Assert.False(vm.Qemu!.IsPresent(gfn));
        host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 1 });
        Assert.Equal(64, vm.QemuHolesFilled);
        Assert.Equal("VERIFY mismatches=0", VerifyWithin(guest));

        // The guest reads first: 64 pages it still has, let go, then read by its verify (each a fault).
        var mine = Enumerable.Range(200, FakeGuest.Pages - 200).Where(g => vm.PeekState(g) == PageState.Private).Take(64).ToArray();
        Assert.Equal(64, mine.Length);
        foreach (int gfn in mine) Assert.Equal("DISCARDED 1", guest.Ask($"discard {gfn} 1"));
        Assert.Equal("VERIFY mismatches=0", VerifyWithin(guest));
        Assert.Equal(128, vm.QemuHolesFilled);
        Assert.Null(vm.Qemu!.FaultFailure);
        Assert.Equal(StatesAgree, vm.QemuConsistency());

        // Zero now, they are taken out as zero pages; nothing else changed; reads of held pages still fail.
        for (int pass = 0; pass < 4; pass++) host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 1 });
        foreach (long gfn in Enumerable.Range(100, 64).Concat(mine))
            Assert.True(vm.PeekState(gfn) == PageState.Zero, $"gfn {gfn}: {vm.PeekState(gfn)}");
        Assert.Equal(128, vm.QemuHolesFilled);
        ReadsOfHeldPagesThroughTheEnginesMappingFail(host, vm);
        TestMemory.AssertNumbersAddUp(host.TakeSnapshot(), atRest: false);
        Assert.Equal("WROTE 300", guest.Ask("write 300")); // some of them written again
        Assert.Equal("VERIFY mismatches=0", VerifyWithin(guest));

        host.RemoveDomain(vm);
        Assert.Equal(0, host.GetStats().FramesInUse);
        Assert.Equal("VERIFY mismatches=0", VerifyWithin(guest));
    }

    /// <summary>
    /// A QEMU that stops answering (SIGSTOP) while the engine holds its pages: removing the domain still puts every page
    /// back into the guest (the kernel does that, not QEMU) and ends although the library never answers the detach (its
    /// reply is awaited for the link's patience, here 100 ms, then given up: before, for good). Resumed, the guest's
    /// library takes the detach it had queued, and the guest verifies its memory with no engine.
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public void RemovingTheDomainOfAStoppedQemuHandsItsPagesBackWithoutWaitingForItsAnswer()
    {
        using var guest = FakeGuest.Start();
        using var host = new DEHost(new HostOptions { Name = "qemu-stopped" });
        var vm = host.AttachQemu("fake", guest.SocketPath, new DomainOptions
        {
            C4Sweeps = 1, SharingEnabled = true, CompressionEnabled = true, CompressionAlgorithm = DifferenceEngine.Codecs.CompressionAlgorithm.LZ4,
        });
        host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 3 });
        long held = FakeGuest.Pages - host.GetPageStats(vm).PrivatePages;
        Assert.True(held > 100, $"the passes took {held} pages out of the guest");
        vm.Qemu!.Link.Patience = TimeSpan.FromMilliseconds(100);
        StoppedProcess.Stop(guest.Pid);
        try
        {
            host.RemoveDomain(vm);
        }
        finally
        {
            Assert.Equal(0, Kill(guest.Pid, 18 /* SIGCONT */));
        }
        Assert.Equal(0, host.GetStats().FramesInUse);
        Assert.Equal("VERIFY mismatches=0", VerifyWithin(guest));
    }

    /// <summary>
    /// The fake guest's verify, given a minute: a fault left unanswered would make it wait for good, and the test says so
    /// instead of hanging (a failure detector only: a verify takes milliseconds).
    /// </summary>
    private static string VerifyWithin(FakeGuest guest)
    {
        var verify = Task.Run(() => guest.Ask("verify"));
        Assert.True(verify.Wait(TimeSpan.FromMinutes(1)), "the fake guest's verify did not finish: a fault of its was not answered");
        return verify.Result;
    }

    /// <summary>
    /// A crash journal that refuses every record (closed: each write fails as on a full disk) keeps every page the passes
    /// would take out in the guest: each is made the guest's again after the pass (Domain.QemuReconcile), so the engine
    /// holds nothing it does not have, its figures say nothing is saved, and the guest verifies on.
    /// </summary>
    [RequiresFact(Requirement.QemuGuests, Requirement.QemuPager)]
    public void PagesTheCrashJournalCannotRecordStayTheGuestsAndNothingIsCountedAsSaved()
    {
        using var dir = new TempDir();
        using var guest = BootReady(dir, 16, out string socket);

        using var host = new DEHost(new HostOptions { Name = "qemu-journal-refuses" });
        var vm = host.AttachQemu("vm1", socket, new DomainOptions
        {
            C4Sweeps = 1, SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true,
        });
        long had = host.GetPageStats(vm).PrivatePages;
        vm.Qemu!.Journal.Dispose();
        for (int pass = 0; pass < 4; pass++) host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 1 });

        var stats = host.GetStats();
        var pages = host.GetPageStats(vm);
        output.WriteLine($"journal failures {stats.JournalFailures}, made the guest's again {vm.Qemu.KeptInGuest}; " +
                         $"private {pages.PrivatePages} of {had} at attach; {stats.LastJournalError}");
        Assert.True(stats.JournalFailures > 100, $"the passes tried to take pages out: {stats.JournalFailures} refused");
        Assert.Equal(stats.JournalFailures, vm.Qemu.KeptInGuest);
        Assert.Equal(0, pages.SharedPages + pages.PatchedPages + pages.CompressedPages + pages.SwappedPages + pages.UniformPages);
        Assert.True(pages.PrivatePages >= had, $"every page the guest had is still Private: {pages.PrivatePages} of {had}");
        Assert.Equal(StatesAgree, vm.QemuConsistency());
        TestMemory.AssertNumbersAddUp(host.TakeSnapshot(), atRest: false);

        guest.WaitForCleanRound(4096, round: guest.WaitForCleanRound(4096) + 1);
        host.RemoveDomain(vm);
        Assert.Equal(0, host.GetStats().FramesInUse);
        VerifiesOn(guest, 4096);
    }

    [RequiresFact(Requirement.QemuGuests, Requirement.QemuPager)]
    public void TwoRunningGuestsShareTheirIdenticalPagesWhileTheyVerifyThem()
    {
        using var dir = new TempDir();
        var (a, b, socketA, socketB) = BootPair(dir);
        using var guestA = a;
        using var guestB = b;

        using var host = new DEHost(new HostOptions { Name = "qemu-share" });
        var options = new DomainOptions { C4Sweeps = 1, SharingEnabled = true };
        var vmA = host.AttachQemu("a", socketA, options);
        var vmB = host.AttachQemu("b", socketB, options);
        long before = host.GetStats().FramesInUse;
        for (int pass = 0; pass < 4; pass++) host.Scan([vmA, vmB], new DifferenceEngine.Scanning.ScanOptions { Passes = 1 });
        var sa = host.GetPageStats(vmA);
        var sb = host.GetPageStats(vmB);
        var h = host.GetStats();
        output.WriteLine($"frames {before} -> {h.FramesInUse}; a: {sa.SharedPages} shared, {sa.ZeroPages} zero; " +
                         $"b: {sb.SharedPages} shared, {sb.ZeroPages} zero; {h.SharedFrames} shared frames; saved {h.SavedBytes >> 20} MiB");
        Assert.True(sa.SharedPages > 64 && sb.SharedPages > 64, "both guests' copies of the shared contents are merged");
        Assert.True(h.SharedFrames < sa.SharedPages + sb.SharedPages, "a shared frame serves several pages");
        Assert.True(h.FramesInUse < before, "merged pages leave the guests");

        // Both guests read every page each round: shared pages come back through the engine, byte for byte.
        foreach (var guest in new[] { a, b })
        {
            guest.WaitForCleanRound(6144, round: guest.WaitForCleanRound(6144) + 1);
        }
        Assert.True(host.GetStats().Faults.Single(f => f.Kind == FaultKind.CopyOnWrite).Count > 0);
        Assert.Null(vmA.Qemu!.FaultFailure);
        Assert.Null(vmB.Qemu!.FaultFailure);

        host.RemoveDomain(vmA);
        host.RemoveDomain(vmB);
        Assert.Equal(0, host.GetStats().FramesInUse);
        VerifiesOn(a, 6144);
        VerifiesOn(b, 6144);
    }

    [RequiresFact(Requirement.QemuGuests, Requirement.QemuPager)]
    public void AGuestLargerThanTheHostsMemoryLimitIsPagedToSwapAndVerifiesItsMemory()
    {
        using var dir = new TempDir();
        using var guest = BootReady(dir, 48, out string socket);

        // The guest has touched more than the host may hold: its pages count against the limit, and go to swap.
        const long Limit = 64L << 20;
        using var host = new DEHost(new HostOptions
        {
            Name = "qemu-swap", MemoryLimitBytes = Limit, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 256L << 20,
        });
        var vm = host.AttachQemu("vm1", socket, new DomainOptions { C4Sweeps = 1 });
        long touched = host.GetPageStats(vm).PrivatePages;
        Assert.True(touched * 4096 > Limit, $"the guest has {touched} pages, more than the limit");
        host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 2 }); // the clock learns what is cold
        host.Reclaimer!.ReclaimToHighWatermark();
        var stats = host.GetPageStats(vm);
        output.WriteLine($"guest had {touched} pages; {stats.SwappedPages} swapped, {stats.PrivatePages} in the guest");
        Assert.True(stats.SwappedPages > 0);
        Assert.True(host.GetStats().FramesInUse * 4096 <= Limit, "the host is back under its limit");

        // The guest reads every page each round: the swapped ones come back through the engine, and match.
        guest.WaitForCleanRound(12288, round: guest.WaitForCleanRound(12288) + 1);
        Assert.True(host.GetStats().Faults.Single(f => f.Kind == FaultKind.SwapIn).Count > 0);
        Assert.Null(vm.Qemu!.FaultFailure);

        host.RemoveDomain(vm);
        Assert.Equal(0, host.GetStats().SwapUsedBytes);
        VerifiesOn(guest, 12288);
    }

    [RequiresFact(Requirement.QemuGuests, Requirement.QemuPager)]
    public void ADomainWhoseQemuDiedIsRemovedAndEverythingItHeldIsGivenBack()
    {
        using var dir = new TempDir();
        using var guest = BootReady(dir, 16, out string socket);
        using var host = new DEHost(new HostOptions
        {
            Name = "qemu-died", MemoryLimitBytes = 64L << 20, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 256L << 20,
        });
        var vm = host.AttachQemu("vm1", socket, new DomainOptions
        {
            C4Sweeps = 1, SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true,
        });
        // Pages held every way the engine holds them: shared, compressed (some grouped), zero, and paged out.
        for (int pass = 0; pass < 6; pass++) host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 1 });
        host.Reclaimer!.ReclaimToHighWatermark();
        var held = host.GetPageStats(vm);
        Assert.True(held.CompressedPages > 0 && held.ZeroPages > 0, $"compressed {held.CompressedPages}, zero {held.ZeroPages}");

        // QEMU dies (SIGKILL), its memory with it: removing the domain lets go of everything, and says nothing is lost
        // that anybody could still read.
        Assert.Equal(0, Kill(guest.Pid, 9));
        guest.WaitForExit();
        // A page-out that meets the dead guest pages nothing of it out, records why, and leaves every page unlocked (a pass
        // would otherwise wait for good); it does not fail, so other domains' faults needing a frame are not failed by it.
        Assert.True(host.GetPageStats(vm).PrivatePages > 0);
        long swapped = host.GetPageStats(vm).SwappedPages;
        Assert.False(host.Reclaimer.ReclaimForFault());
        Assert.Equal(swapped, host.GetPageStats(vm).SwappedPages);
        Assert.StartsWith("QemuGuestExited: ", host.GetStats().LastReclaimError);
        // The first page held as a blob of its own, damaged: a dead guest gets nothing back, so its removal does not report
        // pages not returned (the journal's copy meets the dead guest too).
        long firstHeld = -1;
        for (long gfn = 0; gfn < vm.PageCount; gfn++)
        {
            Assert.True(vm.TryLock(gfn, out ulong e), $"page {gfn} is left locked");
            if (firstHeld < 0 && PageEntry.State(e) is not (PageState.Private or PageState.Zero))
            {
                firstHeld = gfn;
                if (PageEntry.IsSingleCompressed(e) && !PageEntry.IsGrouped(e)) host.Store.Get(PageEntry.Payload(e))[^1] ^= 0x5A;
            }
            vm.Unlock(gfn, e);
        }
        host.RemoveDomain(vm);
        var stats = host.GetStats();
        Assert.Equal(0, stats.FramesInUse);
        Assert.Equal(0, stats.StoreStoredBytes);
        Assert.Equal(0, stats.SwapUsedBytes);
        Assert.True(vm.IsRemoved);
        Assert.Empty(host.Domains);
    }

    [RequiresFact(Requirement.QemuGuests, Requirement.QemuPager)]
    public void TwoGuestsRunThroughTenBackgroundPassesWithEveryMechanismAndLoseNothing()
    {
        using var dir = new TempDir();
        var (a, b, socketA, socketB) = BootPair(dir);
        using var guestA = a;
        using var guestB = b;

        var options = new DomainOptions
        {
            C4Sweeps = 1, SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true,
            CompressionAlgorithm = DifferenceEngine.Codecs.CompressionAlgorithm.Zstd,
        };

        // First, memory to spare: the engine's own passes choose every page (no reclaim racing them to swap). Pages shared,
        // patched, compressed, grouped (the guests' kernels keep pages they never touch again: those stay compressed
        // long enough to be grouped); the guests read every page each round, and each comes back on demand.
        using (var roomy = new DEHost(new HostOptions { Name = "qemu-all-roomy" }))
        {
            var first = new[] { roomy.AttachQemu("a", socketA, options), roomy.AttachQemu("b", socketB, options) };
            a.Diagnose = () => Diagnosis(roomy, first[0], a, b);
            b.Diagnose = () => Diagnosis(roomy, first[1], b, a);
            long grouped = 0;
            for (int pass = 0; pass < 16 && grouped == 0; pass++)
            {
                roomy.Scan(first, new DifferenceEngine.Scanning.ScanOptions { Passes = 1 });
                grouped = roomy.TakeSnapshot().Domains.Sum(d => d.GroupedPages);
            }
            Assert.True(grouped > 0, "long-cold pages of the guests were kept in page groups (the default policy)");
            foreach (var guest in new[] { a, b }) guest.WaitForCleanRound(6144, round: guest.WaitForCleanRound(6144) + 1);
            var roomyStats = roomy.GetStats();
            output.WriteLine($"with memory to spare: {grouped} pages in page groups; faults: " +
                             string.Join(", ", roomyStats.Faults.Select(f => $"{f.Kind} {f.Count}")));
            foreach (var kind in new[] { FaultKind.CopyOnWrite, FaultKind.Decompress })
                Assert.True(roomyStats.Faults.Single(f => f.Kind == kind).Count > 0, $"pages came back on demand: {kind}");
            Assert.All(first, vm => Assert.Null(vm.Qemu!.FaultFailure));
            Assert.All(first, vm => Assert.Equal(StatesAgree, vm.QemuConsistency()));
            foreach (var vm in first) roomy.RemoveDomain(vm);
        }

        // Then every mechanism, and less memory than even every mechanism brings the guests down to: paging too, the
        // guests handed to a second engine, which takes over what the first left in them.
        using var host = new DEHost(new HostOptions
        {
            Name = "qemu-all", MemoryLimitBytes = 40L << 20, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 512L << 20,
        });
        var vms = new[] { host.AttachQemu("a", socketA, options), host.AttachQemu("b", socketB, options) };
        a.Diagnose = () => Diagnosis(host, vms[0], a, b);
        b.Diagnose = () => Diagnosis(host, vms[1], b, a);
        long touched = vms.Sum(vm => host.GetPageStats(vm).PrivatePages + host.GetPageStats(vm).ZeroPages);
        host.Scan(vms, new DifferenceEngine.Scanning.ScanOptions { Passes = 2 });
        host.StartEngine(TimeSpan.FromMilliseconds(500));

        // The guests work on (a round verifies every page and rewrites some) through at least 10 background passes: counted,
        // not timed (a loaded machine only makes it take longer), and not by rounds either, since the guests' consoles hold
        // a backlog of rounds run before the engine started, read in a moment. After each round of each, how much of what
        // they had touched the engine holds. What goes to swap and what is compressed first is a race between the
        // reclaimer and the passes, left to them: the memory limit decides that most is out. An engine that stopped (an
        // error of its own) ends the wait with that error, a guest that stopped talking with its console.
        var started = System.Diagnostics.Stopwatch.StartNew();
        long mostOut = 0, mostGrouped = 0;
        int rounds = 0;
        while (true)
        {
            foreach (var guest in new[] { a, b }) guest.WaitForCleanRound(6144);
            rounds++;
            var snapshot = host.TakeSnapshot();
            long held = snapshot.Domains.Sum(d => d.ZeroPages + d.UniformPages + d.SharedPages + d.PatchedPages + d.CompressedPages + d.SwappedPages);
            mostOut = Math.Max(mostOut, held);
            mostGrouped = Math.Max(mostGrouped, snapshot.Domains.Sum(d => d.GroupedPages));
            var status = host.EngineStatus;
            if (status.PassesRun >= 10 && rounds >= 4) break;
            Assert.True(status.State == EngineState.Running,
                $"the background engine is {status.State} after {status.PassesRun} passes: {status.LastError}");
        }
        var engine = host.StopEngine()!;
        var stats = host.GetStats();
        string Count(FaultKind kind) => $"{kind} {stats.Faults.Single(f => f.Kind == kind).Count}";
        output.WriteLine($"{rounds} rounds each in {started.Elapsed.TotalSeconds:0} s, {engine.PassesRun} background passes; " +
                         $"touched {touched} pages, at most {mostOut} held by the engine at once ({mostGrouped} in page groups); faults: " +
                         string.Join(", ", FaultCounters.Kinds.Select(Count)));
        Assert.True(mostOut * 100 >= touched * 30, $"at least 30% of the {touched} touched pages were out at once: {mostOut}");
        Assert.True(stats.Faults.Single(f => f.Kind == FaultKind.SwapIn).Count > 0, "pages came back on demand: SwapIn");
        Assert.All(vms, vm => Assert.Null(vm.Qemu!.FaultFailure));
        Assert.All(vms, vm => Assert.Equal(StatesAgree, vm.QemuConsistency()));

        foreach (var vm in vms) host.RemoveDomain(vm);
        Assert.Equal(0, host.GetStats().FramesInUse);
        VerifiesOn(a, 6144);
        VerifiesOn(b, 6144);
    }

    /// <summary>
    /// Reading this process's memory where the engine maps a page it holds (as a debugger or a snapshot of the process
    /// would) fails, and the page stays out of the guest's memfd: unguarded, the read allocated it there as zeros, and
    /// the guest found zeros where the engine held its page (docs/QEMU.md, session 16). Each page is checked under its
    /// lock, so the guest cannot fault it back in meanwhile.
    /// </summary>
    private static unsafe void ReadsOfHeldPagesThroughTheEnginesMappingFail(DEHost host, Domain vm)
    {
        var ram = vm.Qemu!;
        Assert.Null(ram.UnguardedReason);
        using var mem = File.OpenHandle("/proc/self/mem", FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var page = new byte[4096];
        int tried = 0;
        for (long gfn = 0; gfn < vm.PageCount && tried < 64; gfn++)
        {
            if (vm.PeekState(gfn) == PageState.Private) continue;
            ulong e = vm.Lock(gfn);
            try
            {
                if (PageEntry.State(e) == PageState.Private) continue;
                Assert.False(ram.IsPresent(gfn), $"gfn {gfn} is held ({PageEntry.State(e)}), so a hole of the guest's memfd");
                long address = (long)host.Frames.Address(ram.FrameOf(gfn));
                Assert.Throws<IOException>(() => RandomAccess.Read(mem, page, address));
                Assert.False(ram.IsPresent(gfn), $"gfn {gfn}: the failed read left it a hole");
                tried++;
            }
            finally
            {
                vm.Unlock(gfn, e);
            }
        }
        Assert.Equal(64, tried);
        Assert.Equal(StatesAgree, vm.QemuConsistency());
    }

    /// <summary>What <see cref="Domain.QemuConsistency"/> says when every page's state agrees with the guest's memory.</summary>
    private const string StatesAgree = "every page's state agrees with the guest's memory";

    /// <summary>What the engine knows of a guest that stopped talking: faults it could not serve, its engine, its pages.</summary>
    private static string Diagnosis(DEHost host, Domain vm, TestGuest guest, TestGuest other)
    {
        // The engine's view of the pages the guest found changed (the MISMATCH line names their guest-physical frame).
        var frames = guest.Lines.Select(l => System.Text.RegularExpressions.Regex.Match(l, @"^deworkload MISMATCH .* pfn=(\d+) "))
            .Where(m => m.Success).Select(m => long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture))
            .Where(pfn => pfn < vm.PageCount).Distinct().Take(4);
        string pages = string.Join("; ", frames.Select(pfn => vm.IsRemoved ? $"gfn {pfn}: domain removed" : $"gfn {pfn}: {vm.GetPage(pfn)}"));
        var engine = host.EngineStatus;
        var stats = host.GetStats();
        string consistency = vm.IsRemoved || vm.Qemu is null ? "domain removed" : vm.QemuConsistency();
        return (pages.Length > 0 ? $"Engine, the pages found changed: {pages}.\n" : "") + $"Engine's states against the guest's memory: {consistency}.\n" +
               $"Engine: {vm.Qemu?.FailedFaults} faults of '{vm.Name}' not served (last: {vm.Qemu?.FaultFailure?.ToString() ?? "none"}); " +
               $"{vm.Qemu?.InstallConflicts} pages put back found there with other bytes (last: {vm.Qemu?.LastInstallConflict ?? "none"}); " +
               $"background engine {engine.State}, {engine.PassesRun} passes, last error {engine.LastError ?? "none"}; " +
               $"host frames {stats.FramesInUse} in use; faults: {string.Join(", ", stats.Faults.Select(f => $"{f.Kind} {f.Count}"))}; " +
               $"the other guest's QEMU {(other.ExitCode is { } code ? $"exited with {code}" : "runs")}, its console ends: " +
               string.Join(" | ", other.Lines.TakeLast(5));
    }

    /// <summary>The guest, handed back, goes on and finds every page as it left it: two more clean rounds.</summary>
    /// <summary>The guest behind <paramref name="socket"/> attached as "vm1", compressing with LZ4 from its first C4 sweep.</summary>
    private static Domain AttachCompressing(DEHost host, string socket)
    {
        var vm = host.AttachQemu("vm1", socket, new DomainOptions { C4Sweeps = 1, CompressionAlgorithm = DifferenceEngine.Codecs.CompressionAlgorithm.LZ4 });
        host.EnableCompression(vm);
        return vm;
    }

    private static void VerifiesOn(TestGuest guest, int pages)
    {
        guest.WaitForCleanRound(pages, round: guest.WaitForCleanRound(pages) + 2);
        Assert.DoesNotContain(guest.Lines, l => l.Contains("MISMATCH", StringComparison.Ordinal));
    }

    /// <summary>One guest with libdeqemu.so and a workload of <paramref name="workloadMiB"/>, ready; its socket in <paramref name="dir"/>.</summary>
    private static TestGuest BootReady(TempDir dir, int workloadMiB, out string socket)
    {
        socket = Path.Combine(dir.Path, "qemu.sock");
        var guest = TestGuest.Boot(workloadMiB: workloadMiB, rounds: 0, environment: Preload(socket));
        try
        {
            guest.WaitFor($@"^deworkload ready pages={workloadMiB * 256} ");
            return guest;
        }
        catch
        {
            guest.Dispose(); // its QEMU stopped, not left running
            throw;
        }
    }

    /// <summary>
    /// Two guests with libdeqemu.so, ready: different seeds, one layout, so both have the workload's 64 shared contents
    /// (and kernel pages alike), 24 MiB of workload each.
    /// </summary>
    private static (TestGuest A, TestGuest B, string SocketA, string SocketB) BootPair(TempDir dir)
    {
        string socketA = Path.Combine(dir.Path, "a.sock"), socketB = Path.Combine(dir.Path, "b.sock");
        var a = TestGuest.Boot(workloadMiB: 24, rounds: 0, seed: 1, environment: Preload(socketA));
        var b = TestGuest.Boot(workloadMiB: 24, rounds: 0, seed: 2, environment: Preload(socketB));
        a.WaitFor(@"^deworkload ready pages=6144 ");
        b.WaitFor(@"^deworkload ready pages=6144 ");
        return (a, b, socketA, socketB);
    }

    private static Dictionary<string, string> Preload(string socket) => new()
    {
        ["LD_PRELOAD"] = Path.Combine(QemuNativeBuild.Folder, "libdeqemu.so"),
        ["DE_QEMU_SOCKET"] = socket,
    };

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    /// <summary>Guest page <paramref name="gfn"/> as QEMU's process holds it (its memfd mapping, through /proc/PID/mem).</summary>
    private static byte[] QemuRamPage(int pid, long gfn)
    {
        var ram = File.ReadLines($"/proc/{pid}/maps").Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .First(f => f.Length >= 6 && f[5].StartsWith("/memfd:mem", StringComparison.Ordinal));
        long start = Convert.ToInt64(ram[0].Split('-')[0], 16);
        using var mem = new FileStream($"/proc/{pid}/mem", FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        mem.Position = start + gfn * 4096;
        var page = new byte[4096];
        mem.ReadExactly(page);
        return page;
    }
}
