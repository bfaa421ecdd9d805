using System.Diagnostics;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Tests.Engine;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// What a read-only audit of the QEMU backend found (session 33), with the fake guest (tests/native/fakeguest, RAM in a
/// memfd, libdeqemu.so preloaded): a fault on a page whose copy in the engine is damaged, a fault whose page turns out
/// present, and a removal behind a journal compaction waiting for a stopped QEMU. Each left a guest thread, or the
/// removal, waiting for good. The waits on time are bounds for the failure only.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class QemuHardeningTests(Xunit.Abstractions.ITestOutputHelper output)
{
    /// <summary>
    /// A guest fault on a page whose engine copy cannot be rebuilt (its swap slot fails its checksum) is never answered:
    /// the guest thread waits for good, although the crash journal holds a good copy of the page (the very copy
    /// ReleaseQemu falls back to). Standard: never a hang; nothing is lost. Expected: the fault is served from the
    /// journal (or at least retried), and the guest's verify finishes with zero mismatches.
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public void AFaultOnAPageWhoseSwapSlotIsDamagedIsServedFromTheJournalNotLeftWaiting()
    {
        using var dir = new TempDir();
        using var guest = FakeGuest.Start();
        using var host = SwappedOut(dir, guest, "audit-bad-slot", out var vm);
        output.WriteLine($"journal holds gfn 1: {vm.Qemu!.Journal.IsHeld(1)}");

        var verify = Task.Run(() => guest.Ask("verify"));
        bool finished = verify.Wait(TimeSpan.FromSeconds(20));
        output.WriteLine($"verify finished within 20 s: {finished}; failed faults {vm.Qemu.FailedFaults}; " +
                         $"fault failure: {vm.Qemu.FaultFailure?.Message}");
        try
        {
            Assert.True(finished, $"a guest fault was never answered (FailedFaults={vm.Qemu.FailedFaults}: " +
                                  $"{vm.Qemu.FaultFailure?.Message}); the crash journal held a good copy of every such page");
            Assert.Equal("VERIFY mismatches=0", verify.Result);
            Assert.True(vm.Qemu.RepairedFromJournal > 0);
            Assert.Contains("SwapIntegrityError", vm.Qemu.LastRepair, StringComparison.Ordinal);
        }
        finally
        {
            // Unblocks the guest: the removal puts each page back, from the journal where the slot fails.
            try { host.RemoveDomain(vm); } catch (DEException e) { output.WriteLine($"removal: {e.ErrorId}: {e.Message}"); }
            output.WriteLine(verify.Wait(TimeSpan.FromSeconds(30)) ? $"after removal the guest says: {verify.Result}" : "still waiting after removal");
        }
    }

    /// <summary>
    /// A QEMU guest's fault the engine cannot serve (its copy fails its checksum, and the crash journal cannot give its
    /// copy either) leaves that guest thread waiting; it was counted in QemuRam.FailedFaults, which nothing showed.
    /// Get-DEHostStats counts it in PagerFailures with the last in LastPagerError, as the Xen pager's (a docs audit).
    /// Made here: a page compressed alone, its blob damaged, and the journal closed under the engine.
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public void AGuestFaultTheEngineCannotServeIsCountedInTheHostsPagerFailures()
    {
        using var dir = new TempDir();
        using var guest = FakeGuest.Start();
        using var host = SwappedOut(dir, guest, "qemu-failed-fault", out var vm);
        Assert.Equal(0, host.GetStats().PagerFailures);
        Assert.Null(host.GetStats().LastPagerError);
        vm.Qemu!.Journal.Dispose(); // with every swap slot damaged, no copy of a swapped page can be read

        guest.Send("verify"); // its thread waits on the first swapped page it reads, for good
        SpinWait.SpinUntil(() => vm.Qemu.FailedFaults > 0 || vm.Qemu.FaultFailure is not null);
        var stats = host.GetStats();
        output.WriteLine($"{stats.PagerFailures}: {stats.LastPagerError}");
        Assert.Equal(1, stats.PagerFailures);
        Assert.StartsWith("SwapIntegrityError: ", stats.LastPagerError);
    }

    /// <summary>
    /// QemuInstall and the Zero-page branch of ServeQemuFault are documented to let "the guest's bytes stand" when the page
    /// turns out present (UFFDIO_COPY / UFFDIO_ZEROPAGE refused with EEXIST: QEMU, or anything else, filled the hole through a
    /// path the engine does not watch). But the kernel wakes a fault's waiters only when the ioctl installs the page; on
    /// EEXIST nothing is woken, and neither path calls UFFDIO_WAKE (the Private branch does). The guest thread whose fault
    /// was being served waits for good. Made here: the guest faults on a held page while the test holds its lock, the hole
    /// is filled with the page's own bytes through the memfd (pwrite), then the lock is released.
    /// </summary>
    [RequiresTheory(Requirement.QemuPager)]
    [InlineData("Zero")]
    [InlineData("Shared")]
    public void AFaultWhosePageTurnsOutPresentIsWokenNotLeftWaiting(string state)
    {
        using var guest = FakeGuest.Start();
        using var host = new DEHost(new HostOptions { Name = "audit-eexist" });
        var vm = host.AttachQemu("fake", guest.SocketPath, new DomainOptions { C4Sweeps = 1, SharingEnabled = true });
        host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 3 });
        var want = Enum.Parse<PageState>(state);
        long gfn = Enumerable.Range(0, (int)vm.PageCount).First(g => vm.PeekState(g) == want);
        // Every page before it the guest's again, so the verify's first fault is on this page.
        var bytes = new byte[4096];
        for (long g = 0; g <= gfn; g++) vm.ReadPage(g, bytes); // Zero pages stay held; held others are put back
        Assert.Equal(want, vm.PeekState(gfn));
        output.WriteLine($"gfn {gfn} is {vm.PeekState(gfn)}; its bytes are all zero: {!bytes.AsSpan().ContainsAnyExcept((byte)0)}");
        string memfd = Directory.GetFiles($"/proc/{guest.Pid}/fd")
            .First(l => new FileInfo(l).LinkTarget is { } t && t.Contains("memory-backend-memfd", StringComparison.Ordinal));

        ulong e = vm.Lock(gfn);
        Task<string> verify;
        try
        {
            long read = vm.Qemu!.FaultsRead;
            verify = Task.Run(() => guest.Ask("verify"));
            // The guest faults on gfn, and the fault thread, having read the fault, waits for the page's lock.
            SpinWait.SpinUntil(() => vm.Qemu.FaultsRead > read);
            Assert.False(verify.IsCompleted);
            using var f = new FileStream(memfd, FileMode.Open, FileAccess.Write);
            f.Position = gfn * 4096;
            f.Write(bytes); // the page's own bytes: nothing changes for the guest but that the hole is filled
            f.Flush();
        }
        finally
        {
            vm.Unlock(gfn, e);
        }
        bool finished = verify.Wait(TimeSpan.FromSeconds(15));
        output.WriteLine($"verify finished within 15 s: {finished}; gfn {gfn} now {vm.PeekState(gfn)}; " +
                         $"install conflicts {vm.Qemu!.InstallConflicts}; fault failure {vm.Qemu.FaultFailure?.Message}");
        try
        {
            Assert.True(finished, $"the guest's fault on gfn {gfn} ({state}) was never woken after UFFDIO_* found the page present");
            Assert.Equal("VERIFY mismatches=0", verify.Result);
        }
        finally
        {
            host.RemoveDomain(vm); // unregistering wakes every waiter
            output.WriteLine(verify.Wait(TimeSpan.FromSeconds(15)) ? $"after removal: {verify.Result}" : "still waiting after removal");
        }
    }

    /// <summary>
    /// A host under a 2 MiB limit with a swap file, the fake guest attached and paged out, then every swap slot damaged (as
    /// a bad disk would: each fails its checksum; the unlinked file reached through this process's descriptor of it).
    /// </summary>
    private DEHost SwappedOut(TempDir dir, FakeGuest guest, string name, out Domain vm)
    {
        string swap = Path.Combine(dir.Path, "swap");
        var host = new DEHost(new HostOptions { Name = name, MemoryLimitBytes = 2L << 20, SwapPath = swap, SwapSizeBytes = 64L << 20 });
        vm = host.AttachQemu("fake", guest.SocketPath, new DomainOptions { C4Sweeps = 1 });
        host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 2 });
        host.Reclaimer!.ReclaimToHighWatermark();
        long swapped = host.GetPageStats(vm).SwappedPages;
        output.WriteLine($"{swapped} pages swapped");
        Assert.True(swapped > 100, $"only {swapped} pages were paged out");
        string open = Directory.GetFiles("/proc/self/fd").First(l => new FileInfo(l).LinkTarget is { } t && t.StartsWith(swap, StringComparison.Ordinal));
        using var f = new FileStream(open, FileMode.Open, FileAccess.Write);
        var junk = new byte[1 << 20];
        Array.Fill(junk, (byte)0xA5);
        for (long at = 0; at < Math.Min(f.Length, 16L << 20); at += junk.Length) f.Write(junk);
        return host;
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    /// <summary>
    /// A compaction of the crash journal deposits the new file with the library and awaits its answer without limit
    /// (QemuLink.Deposit, patience -1), holding the journal's lock (QemuJournal.Compact, called under _gate by Maintain).
    /// With QEMU stopped (SIGSTOP, a frozen cgroup) at that moment, every journal operation waits behind it: a fault's
    /// drop record, and Remove-DEDomain, whose puts go through Journal.Drop. Removing the domain of a stopped QEMU is
    /// documented and tested to end without waiting for QEMU's answer (the link's patience); with a compaction in flight it
    /// never ends. Expected: the removal ends (as it does with no compaction in flight).
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public void RemovingTheDomainOfAStoppedQemuEndsEvenWithAJournalCompactionInFlight()
    {
        using var dir = new TempDir();
        string socket = Path.Combine(dir.Path, "guest.sock");
        string folder = QemuNativeBuild.Folder;
        using var guest = Process.Start(new ProcessStartInfo(Path.Combine(folder, "fakeguest"))
        {
            ArgumentList = { "8192", "5" }, RedirectStandardInput = true, RedirectStandardOutput = true,
            Environment = { ["LD_PRELOAD"] = Path.Combine(folder, "libdeqemu.so"), ["DE_QEMU_SOCKET"] = socket },
        })!;
        bool stopped = false;
        try
        {
            Assert.StartsWith("READY ", guest.StandardOutput.ReadLine());
            using var host = new DEHost(new HostOptions { Name = "audit-compaction" });
            var vm = host.AttachQemu("fake", socket, new DomainOptions { C4Sweeps = 1, SharingEnabled = true });
            host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 2 });
            var journal = vm.Qemu!.Journal;
            output.WriteLine($"after the passes: shared {host.GetPageStats(vm).SharedPages}, journal {journal.FileBytes >> 10} KiB, live {journal.LiveBytes >> 10} KiB");
            guest.StandardInput.WriteLine("verify"); // every shared page faults back: its record is dead
            guest.StandardInput.Flush();
            Assert.Equal("VERIFY mismatches=0", guest.StandardOutput.ReadLine());
            long generation = journal.Generation;
            output.WriteLine($"after the verify: journal {journal.FileBytes >> 10} KiB, live {journal.LiveBytes >> 10} KiB, generation {generation}");

            vm.Qemu.Link.Patience = TimeSpan.FromMilliseconds(100);
            StoppedProcess.Stop(guest.Id);
            stopped = true;
            long deposits = vm.Qemu.Link.DepositsSent;
            var maintain = Task.Run(journal.Maintain); // what the end of a pass or a reclaim does: compacts, deposits
            SpinWait.SpinUntil(() => vm.Qemu.Link.DepositsSent > deposits || maintain.IsCompleted); // its deposit waits for QEMU
            Assert.False(maintain.IsCompleted, "the journal was not compacted (nothing to show)");
            var remove = Task.Run(() => host.RemoveDomain(vm));
            bool removed = remove.Wait(TimeSpan.FromSeconds(10));
            output.WriteLine($"removal finished within 10 s: {removed}");
            Kill(guest.Id, 18 /* SIGCONT */);
            stopped = false;
            output.WriteLine($"after SIGCONT: maintain {maintain.Wait(TimeSpan.FromSeconds(10))}, removal {remove.Wait(TimeSpan.FromSeconds(10))}, generation {journal.Generation}");
            Assert.True(removed, "Remove-DEDomain of a stopped QEMU waited for good behind the journal compaction's deposit");
            Assert.Equal(generation, journal.Generation); // the compaction was given up: the journal stays as it was

            // The guest runs on without an engine. The given-up deposit had left the link taking no requests, so the DETACH
            // was not sent: the userfaultfd stayed registered with nobody serving it, and the guest's next touch of a hole
            // (QEMU lets two pages go, as a balloon does; zero pages are holes too) waited for good (a read-only audit).
            guest.StandardInput.WriteLine("discard 0 2");
            guest.StandardInput.Flush();
            Assert.Equal("DISCARDED 2", guest.StandardOutput.ReadLine());
            guest.StandardInput.WriteLine("verify");
            guest.StandardInput.Flush();
            Assert.Equal("VERIFY mismatches=0", guest.StandardOutput.ReadLine());
        }
        finally
        {
            if (stopped) Kill(guest.Id, 18);
            if (!guest.HasExited) guest.Kill();
            guest.WaitForExit();
        }
    }

    /// <summary>
    /// Disconnect-DEHost (DEHost.Dispose; also what the module runs on SIGTERM, SIGHUP and exit) stops the background engine
    /// first and waits for its thread. A pass of it whose journal compaction deposits with a stopped QEMU waited without
    /// limit (the engine began leaving the guest only after that wait), so one stopped guest held the hand-back of every
    /// guest of the host until it resumed (a read-only audit). Every guest is now left before the engine is stopped: the
    /// deposit gives up after the link's patience, and the guest, detached, runs on by itself once it resumes.
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public void DisconnectingWhileTheBackgroundEnginesCompactionWaitsForAStoppedQemuEnds()
    {
        using var guest = FakeGuest.Start(8192);
        bool stopped = false;
        try
        {
            var host = new DEHost(new HostOptions { Name = "disconnect-compaction" });
            var vm = host.AttachQemu("fake", guest.SocketPath, new DomainOptions { C4Sweeps = 1, SharingEnabled = true });
            host.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 2 });
            Assert.Equal("VERIFY mismatches=0", guest.Ask("verify")); // every page taken out comes back: its record is dead
            host.DisableSharing(vm, unshare: false); // the engine's passes take nothing more out; the next compacts the journal
            vm.Qemu!.Link.Patience = TimeSpan.FromMilliseconds(100);
            StoppedProcess.Stop(guest.Pid);
            stopped = true;
            long deposits = vm.Qemu.Link.DepositsSent;
            host.StartEngine(TimeSpan.FromMilliseconds(100));
            SpinWait.SpinUntil(() => vm.Qemu.Link.DepositsSent > deposits || host.EngineStatus.State != EngineState.Running);
            Assert.True(vm.Qemu.Link.DepositsSent > deposits, $"no compaction: the engine is {host.EngineStatus.State} ({host.EngineStatus.LastError})");

            host.Dispose(); // waited for good, until SIGCONT

            Assert.Equal(0, Kill(guest.Pid, 18 /* SIGCONT */));
            stopped = false;
            Assert.Equal("DISCARDED 2", guest.Ask("discard 0 2")); // detached: QEMU's holes fill on touch again, with no engine
            Assert.Equal("VERIFY mismatches=0", guest.Ask("verify"));
        }
        finally
        {
            if (stopped) Kill(guest.Pid, 18);
        }
    }

    /// <summary>
    /// New-DEDomain -QemuProcessId finds the socket from QEMU's environment. A relative DE_QEMU_SOCKET was bound in the
    /// folder QEMU started in and looked for in its folder now: QEMU -daemonize goes to / after it made guest RAM, so the
    /// engine looked for /guest.sock (QemuSocketNotFound; a native audit's suspicion). The library binds it made absolute,
    /// and the engine finds the path bound among the sockets the process listens on.
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public void ARelativeSocketIsFoundAfterQemuLeftTheFolderItStartedIn()
    {
        using var guest = FakeGuest.StartWithRelativeSocket();
        Assert.Equal("CHDIR /", guest.Ask("chdir /"));
        Assert.Equal(guest.SocketPath, DifferenceEngine.Qemu.QemuLink.SocketOf(guest.Pid));
        using var host = new DEHost(new HostOptions { Name = "relative-socket" });
        var vm = host.AttachQemu("fake", DifferenceEngine.Qemu.QemuLink.SocketOf(guest.Pid));
        Assert.Equal("VERIFY mismatches=0", guest.Ask("verify"));
        host.RemoveDomain(vm);
    }

    /// <summary>
    /// An attach to a stopped QEMU gives up on the hello's reply after the link's patience, but its connection stays in the
    /// library's queue (listen backlog 4) until the library hangs up on it: once the queue was full, the next attach's
    /// connect waited for good, where it did not wait at all before (a read-only audit: the seventh attempt). The connect
    /// now waits the patience too, and says the queue is full.
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public void AttachingAgainAndAgainToAStoppedQemuNeverWaitsForGood()
    {
        using var guest = FakeGuest.Start();
        StoppedProcess.Stop(guest.Pid);
        var errors = new List<string>();
        try
        {
            for (int attempt = 0; attempt < 10; attempt++)
            {
                var e = Assert.Throws<DEException>(() => DifferenceEngine.Qemu.QemuLink.Attach(guest.SocketPath, TimeSpan.FromMilliseconds(50)));
                errors.Add($"{e.ErrorId}: {e.Message}");
            }
        }
        finally
        {
            Kill(guest.Pid, 18 /* SIGCONT */);
        }
        output.WriteLine(string.Join(Environment.NewLine, errors));
        Assert.StartsWith("QemuProtocolError: ", errors[0]); // connected, no reply to the hello
        Assert.Contains(errors, e => e.StartsWith("QemuLinkFailed: ", StringComparison.Ordinal) && e.Contains("queue of connections is full"));
        // Running again, the library hangs up on every engine it did not answer, and serves the next.
        using var host = new DEHost(new HostOptions { Name = "attach-after-stop" });
        var vm = host.AttachQemu("fake", guest.SocketPath);
        Assert.Equal("VERIFY mismatches=0", guest.Ask("verify"));
        host.RemoveDomain(vm);
    }

    /// <summary>
    /// Start-DEGuest returned once QEMU's first process exited, without checking the library listened: a library that
    /// could not bind its socket (it says so on QEMU's standard error, closed by -daemonize) left a guest no engine could
    /// attach, and the cmdlet said it had started. A script stands in for QEMU: it daemonizes a sleep, writes its pid file
    /// and exits 0, binding no socket. A socket path no Unix socket can have is refused before anything starts.
    /// </summary>
    [Fact]
    public void StartingAGuestWhoseLibraryDoesNotListenFails()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var dir = new TempDir();
        string script = Path.Combine(dir.Path, "qemu-system-x86_64");
        File.WriteAllText(script, "#!/bin/sh\npidfile=\"\"\nwhile [ $# -gt 0 ]; do [ \"$1\" = \"-pidfile\" ] && pidfile=\"$2\"; shift; done\n" +
                                  "sleep 600 </dev/null >/dev/null 2>&1 &\necho $! > \"$pidfile\"\nexit 0\n");
        File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string kernel = Path.Combine(dir.Path, "vmlinuz");
        File.WriteAllText(kernel, "not a kernel");
        DifferenceEngine.Qemu.QemuGuestStartInfo Info(string socket) => new()
        {
            Qemu = script, Kernel = kernel, Library = Path.Combine(dir.Path, "no-such-libdeqemu.so"), Socket = socket,
        };
        string console = Path.Combine(dir.Path, "console");
        var e = Assert.Throws<DEException>(() => DifferenceEngine.Qemu.QemuGuestProcess.StartDetached(Info(Path.Combine(dir.Path, "g.sock")), console, TimeSpan.FromMinutes(1)));
        Assert.Equal("QemuStartFailed", e.ErrorId);
        Assert.Contains("does not listen", e.Message, StringComparison.Ordinal);
        int pid = int.Parse(System.Text.RegularExpressions.Regex.Match(e.Message, @"\(pid (\d+)\)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        bool ended = true;
        try
        {
            using var daemon = Process.GetProcessById(pid);
            ended = daemon.WaitForExit(TimeSpan.FromMinutes(1)); // a bound for the failure only: it was killed
        }
        catch (ArgumentException)
        {
            // gone already
        }
        Assert.True(ended, "the daemon was left running");
        var tooLong = Assert.Throws<DEException>(() => DifferenceEngine.Qemu.QemuGuestProcess.StartDetached(Info(Path.Combine(dir.Path, new string('s', 120) + ".sock")), console, TimeSpan.FromMinutes(1)));
        Assert.Equal("QemuSocketPathInvalid", tooLong.ErrorId);
    }
}
