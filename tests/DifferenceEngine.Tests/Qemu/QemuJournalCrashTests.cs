using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Hashing;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Qemu;
using DifferenceEngine.Tests.Engine;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// The crash journal when things go wrong around it: the engine killed right after a page came back and QEMU let it go,
/// a disk that fills up part-way through a write. After each, what the next engine replays must match what the guest has:
/// no page the guest let go comes back with old bytes, no page the engine took out is forgotten.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class QemuJournalCrashTests(ITestOutputHelper output) : IDisposable
{
    private const int PageSize = 4096;
    private readonly LibraryDeposits _library = new();

    public void Dispose() => _library.Dispose();

    /// <summary>
    /// A page that came back to the guest on a fault and that QEMU then let go (a balloon, free page reporting: it reads
    /// as zeros since) must not come back with its old bytes when the engine is killed and the next one replays the
    /// journal. Before: the drop record was only gathered in memory (written before the next put, or at Maintain), so the
    /// kill lost it; the next engine found the page a hole with a live record, took it over and put the stale copy back.
    /// The kill is the engine's fault thread stopped and its link closed (the library sees the engine gone) with its
    /// journal left as it is.
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public void APageQemuLetGoAfterItCameBackIsNotResurrectedByTheNextEngine()
    {
        var guest = FakeGuest.Start();
        var dead = new DEHost(new HostOptions { Name = "journal-crash-1" });
        try
        {
            var vm = dead.AttachQemu("fake", guest.SocketPath, new DomainOptions { C4Sweeps = 1, SharingEnabled = true });
            dead.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 2 });
            Assert.True(vm.Qemu!.Journal.IsHeld(1), "page 1 was not taken out: nothing to show");
            Assert.Equal("VERIFY mismatches=0", guest.Ask("verify")); // every page faults back, page 1 among them
            Assert.False(vm.Qemu.Journal.IsHeld(1));
            Assert.Equal("DISCARDED 1", guest.Ask("discard 1 1")); // QEMU lets page 1 go: it reads as zeros from now on
            // The engine is killed here: nothing more of it runs.
            vm.Qemu.StopFaults();
            vm.Qemu.Link.Dispose();

            using var next = new DEHost(new HostOptions { Name = "journal-crash-2" });
            var vm2 = next.AttachQemu("fake", guest.SocketPath);
            output.WriteLine($"recovered {vm2.QemuRecoveredPages}; page 1 {vm2.PeekState(1)}");
            Assert.Equal("VERIFY mismatches=0", guest.Ask("verify"));
            next.RemoveDomain(vm2);
        }
        finally
        {
            guest.Dispose(); // the guest first: the dead engine's host, let go now, finds no QEMU to hand pages to
            try { dead.Dispose(); } catch (DEException) { }
        }
    }

    /// <summary>
    /// A record of a page the engine holds changes on the disk (a failing disk). The next compaction leaves it out, and the
    /// pass's journal upkeep writes the page again from what the engine holds (Domain.QemuRejournal), so an engine killed
    /// after it loses nothing: the next one replays every page. Before: the compaction copied the damaged record into the
    /// new file, which the next engine then refused whole (QemuJournalCorrupt), every held page's fault left waiting.
    /// </summary>
    [RequiresFact(Requirement.QemuPager)]
    public unsafe void ARecordDamagedOnTheDiskIsWrittenAgainByTheNextCompaction()
    {
        var guest = FakeGuest.Start();
        var dead = new DEHost(new HostOptions { Name = "journal-damaged-1" });
        try
        {
            var vm = dead.AttachQemu("fake", guest.SocketPath, new DomainOptions { C4Sweeps = 1, SharingEnabled = true, CompressionEnabled = true });
            dead.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 3 });
            var journal = vm.Qemu!.Journal;
            var held = journal.HeldGfns();
            Assert.True(held.Count > 0, "no page was taken out: nothing to show");
            long gfn = held[held.Count / 2];
            var (offset, fd) = journal.RecordAt(gfn);
            byte b = 0;
            Assert.Equal(1, (int)LinuxNative.PRead(fd, &b, 1, offset + 8));
            b ^= 0x5a; // the record's length: its check fails
            Assert.Equal(1, (int)LinuxNative.PWrite(fd, &b, 1, offset + 8));
            // The next upkeep compacts (as after an fdatasync that failed: another page's record written again, with the
            // same bytes, so the upkeep has something to sync); it runs after each pass.
            Assert.True(vm.QemuRejournal(held[0] != gfn ? held[0] : held[^1]));
            var sync = journal.SyncData;
            journal.SyncData = _ => 5; // EIO
            journal.Maintain();
            journal.SyncData = sync;
            long generation = journal.Generation;
            dead.Scan([vm], new DifferenceEngine.Scanning.ScanOptions { Passes = 1 });
            Assert.True(journal.Generation > generation, "the journal was not compacted");
            Assert.Contains("changed on the disk", journal.LastError);
            Assert.True(journal.IsHeld(gfn), $"page {gfn} has no record after the upkeep");
            Assert.Equal(held, journal.HeldGfns());
            // The engine is killed here: nothing more of it runs.
            vm.Qemu.StopFaults();
            vm.Qemu.Link.Dispose();

            using var next = new DEHost(new HostOptions { Name = "journal-damaged-2" });
            var vm2 = next.AttachQemu("fake", guest.SocketPath);
            output.WriteLine($"held {held.Count}, page {gfn} damaged; recovered {vm2.QemuRecoveredPages}");
            Assert.Equal(held.Count, vm2.QemuRecoveredPages);
            Assert.Equal("VERIFY mismatches=0", guest.Ask("verify"));
            next.RemoveDomain(vm2);
        }
        finally
        {
            guest.Dispose();
            try { dead.Dispose(); } catch (DEException) { }
        }
    }

    /// <summary>
    /// A drop the full disk refuses to append marks the page's record dead where it is (its bytes are allocated already),
    /// so the next engine does not take over a page the guest has. Before: the drop was gathered in memory and lost when
    /// its write failed (the failure was ignored); the file went on saying the engine held the page, and a kill after QEMU
    /// let the page go would have resurrected its old bytes.
    /// </summary>
    [RequiresFact(Requirement.TmpfsMount)]
    public void ADropTheFullDiskRefusesIsWrittenOverThePagesRecordInPlace()
    {
        using var disk = new SmallTmpfs(64 << 10);
        var journal = QemuJournal.Create(disk.Path, 1024, _library.Deposit);
        try
        {
            // 168 zero pages: 64 + 168 * 24 = 4096, the file ends on a page boundary, so the next record needs a new page.
            for (long g = 0; g < 168; g++) Assert.True(journal.Put(g, new byte[PageSize]));
            Assert.Equal(PageSize, journal.FileBytes);
            disk.Fill();
            journal.Drop(5); // the guest has page 5 again
            Assert.False(journal.IsHeld(5));
            output.WriteLine($"failures {journal.Failures}: {journal.LastError}; file {journal.FileBytes} bytes");

            using var next = QemuJournal.Open(_library.Handed(), disk.Path, 1024, _library.Deposit);
            Assert.False(next.IsHeld(5), "the next engine takes over page 5 from a record the failed drop left live");
            Assert.Equal(Enumerable.Range(0, 168).Where(g => g != 5).Select(g => (long)g), next.HeldGfns());
        }
        finally
        {
            journal.Dispose();
            Dispose();
        }
    }

    /// <summary>
    /// A page taken out, put back, and taken out again after the disk filled up is still held after a replay. Before:
    /// the gathered drops were written together before the put; the full disk cut that write short, leaving whole drop
    /// records past the tail; the put's record, smaller, went into space the cut-short write had allocated, and the
    /// replay read on past it into the stale drops, one of which undid it: the page, punched out of the guest, was lost.
    /// </summary>
    [RequiresFact(Requirement.TmpfsMount)]
    public void APutAfterTheDiskFilledUpIsNotUndoneByEarlierDropsOnReplay()
    {
        using var disk = new SmallTmpfs(64 << 10);
        var journal = QemuJournal.Create(disk.Path, 4096, _library.Deposit);
        try
        {
            var zeros = new byte[PageSize];
            var uniform = new byte[PageSize];
            Array.Fill(uniform, (byte)0xAB);
            for (long g = 100; g < 200; g++) Assert.True(journal.Put(g, zeros));
            Assert.True(journal.Put(7, uniform));
            journal.Drop(100); // the guest faults them back: page 7's drop among the first
            journal.Drop(7);
            for (long g = 101; g < 200; g++) journal.Drop(g);
            disk.Fill();
            bool put = journal.Put(7, uniform); // taken out again
            output.WriteLine($"put {put}; failures {journal.Failures}: {journal.LastError}; file {journal.FileBytes} bytes");
            Assert.True(put); // room enough in the file's last page
            Assert.True(journal.IsHeld(7)); // the engine punches it out of the guest now

            using var next = QemuJournal.Open(_library.Handed(), disk.Path, 4096, _library.Deposit);
            Assert.True(next.IsHeld(7), "the replay undid the newer record of page 7 with a stale drop left past the tail");
            Assert.Equal([7L], next.HeldGfns());
        }
        finally
        {
            journal.Dispose();
            Dispose();
        }
    }

    /// <summary>
    /// What a write the full disk cut short left past the journal's end is cut off, so a replay never reads on into it.
    /// Before: it stayed; the next, smaller record went into the space it had allocated (so it was written, on the full
    /// disk), and a replay read on past that record into the rest of the cut-short one. Here that rest is a page the guest
    /// wrote (stored raw: it does not compress) that looks like a drop record of page 7: the replay undid the put of page
    /// 7 written before it, and the page the engine had punched out was lost. (The same with whole drop records, when
    /// drops were written together.)
    /// </summary>
    [RequiresFact(Requirement.TmpfsMount)]
    public void TheRemainsOfAWriteTheFullDiskCutShortAreNotReplayedAfterTheNextRecord()
    {
        using var disk = new SmallTmpfs(64 << 10);
        var journal = QemuJournal.Create(disk.Path, 64, _library.Deposit);
        try
        {
            // A page whose first 24 bytes are a whole drop record of page 7; the rest random (it stays raw).
            var page = new byte[PageSize];
            new Random(11).NextBytes(page);
            BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(4), 5); // Drop
            BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(8), 0);
            BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(12), 0);
            BinaryPrimitives.WriteInt64LittleEndian(page.AsSpan(16), 7);
            BinaryPrimitives.WriteUInt32LittleEndian(page, Crc32.HashToUInt32(page.AsSpan(4, 20)));
            disk.Fill(); // the journal has its first page (the header's); its record needs the next one
            long failures = journal.Failures;
            Assert.False(journal.Put(9, page)); // cut short: what fits in the first page is written
            Assert.Equal(failures + 1, journal.Failures);
            Assert.True(journal.Put(7, new byte[PageSize])); // 24 bytes, in the first page
            Assert.True(journal.IsHeld(7)); // the engine punches it out of the guest now

            using var next = QemuJournal.Open(_library.Handed(), disk.Path, 64, _library.Deposit);
            Assert.True(next.IsHeld(7), "the replay read on past page 7's record into the remains of the write cut short");
            Assert.Equal([7L], next.HeldGfns());
        }
        finally
        {
            journal.Dispose();
            Dispose();
        }
    }

    /// <summary>
    /// A compaction that fails (here its new file cannot be made: the journal's folder is gone; in life, most often, a
    /// disk too full for a second copy of the live records) still leaves the journal synced, its committed end moved up
    /// and its pages let go of the page cache, at this and every later Maintain. Before: the failure skipped all that,
    /// and as the compaction was tried again at every Maintain, the journal was never committed again.
    /// </summary>
    [Fact]
    public void AFailedCompactionStillLeavesTheJournalSyncedAndCommitted()
    {
        using var dir = new TempDir();
        string folder = Path.Combine(dir.Path, "journals");
        Directory.CreateDirectory(folder);
        var journal = QemuJournal.Create(folder, 16, _library.Deposit);
        try
        {
            var r = new Random(3);
            var page = new byte[PageSize];
            for (int i = 0; i < 1100; i++) // over 4 MiB of records of page 0, all but the last dead: worth a compaction
            {
                r.NextBytes(page);
                Assert.True(journal.Put(0, page));
            }
            Directory.Delete(folder); // the journal's own file has no name there (O_TMPFILE): it goes on
            for (int pass = 1; pass <= 2; pass++)
            {
                Assert.True(journal.Put(1, page));
                journal.Maintain();
                output.WriteLine($"pass {pass}: failures {journal.Failures}: {journal.LastError}");
                Assert.Equal(pass, journal.Failures); // the compaction, each time
                Assert.Equal(1, journal.Generation);
                Assert.Equal(journal.FileBytes, CommittedEnd());
            }
        }
        finally
        {
            journal.Dispose();
            Dispose();
        }
    }

    /// <summary>
    /// After a failed fdatasync the journal takes no more puts (their pages stay in the guest), still records drops, and
    /// is not committed: the next Maintain compacts it into a new file, and then it takes puts again. Before: puts went
    /// on into a file whose writes may not reach the disk, and the next Maintain's fdatasync, which returns 0 as the
    /// kernel tells an error only once, wrote a committed end vouching for them and let the page cache drop them.
    /// </summary>
    [Fact]
    public void AfterAFailedSyncTheJournalTakesNoPutsAndIsNotCommittedUntilCompactedIntoANewFile()
    {
        using var dir = new TempDir();
        var journal = QemuJournal.Create(dir.Path, 16, _library.Deposit);
        try
        {
            var r = new Random(5);
            var page = new byte[PageSize];
            r.NextBytes(page);
            Assert.True(journal.Put(1, page));
            journal.Maintain();
            Assert.True(journal.Put(2, page));
            long committed = CommittedEnd();
            int failing = 1;
            var sync = journal.SyncData;
            journal.SyncData = fd => failing-- > 0 ? LinuxNative.EIO : sync(fd);
            journal.Maintain(); // the fdatasync fails
            Assert.Equal(1, journal.Failures);
            Assert.Equal(committed, CommittedEnd());
            Assert.False(journal.Put(3, page), "a put after a failed fdatasync went into the same file");
            Assert.Contains("fdatasync", journal.LastError);
            journal.Drop(1); // the guest has page 1 again: still recorded
            Assert.False(journal.IsHeld(1));

            journal.Maintain(); // compacted into a new file, which is synced and committed
            output.WriteLine($"generation {journal.Generation}; failures {journal.Failures}: {journal.LastError}");
            Assert.Equal(2, journal.Generation);
            Assert.Equal(journal.FileBytes, CommittedEnd());
            Assert.True(journal.Put(3, page));
            using var next = QemuJournal.Open(_library.Handed(), dir.Path, 16, _library.Deposit);
            Assert.Equal([2L, 3L], next.HeldGfns());
        }
        finally
        {
            journal.Dispose();
            Dispose();
        }
    }

    /// <summary>The committed end the header of the deposited file records.</summary>
    private long CommittedEnd()
    {
        using var file = new Microsoft.Win32.SafeHandles.SafeFileHandle(_library.Held, ownsHandle: false);
        var header = new byte[64];
        Assert.Equal(64, RandomAccess.Read(file, header, 0));
        return BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(16));
    }

    /// <summary>
    /// A tmpfs of a few pages mounted on a folder of its own under /tmp (root), to be filled up; unmounted and removed on
    /// dispose (every descriptor of a file in it must be closed by then, or it is detached lazily).
    /// </summary>
    private sealed class SmallTmpfs : IDisposable
    {
        public SmallTmpfs(int bytes)
        {
            Path = Directory.CreateTempSubdirectory("de-journal-tmpfs-").FullName;
            if (Run("mount", "-t", "tmpfs", "-o", $"size={bytes},mode=0700", "tmpfs", Path) != 0)
            {
                Directory.Delete(Path);
                throw new InvalidOperationException($"could not mount a tmpfs on {Path}");
            }
        }

        public string Path { get; }

        /// <summary>Writes a file of whole pages until the tmpfs is full.</summary>
        public void Fill()
        {
            using var filler = new FileStream(System.IO.Path.Combine(Path, "filler"), FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 0);
            var chunk = new byte[PageSize];
            try
            {
                while (true)
                {
                    filler.Write(chunk);
                    filler.Flush();
                }
            }
            catch (IOException) { }
        }

        public void Dispose()
        {
            if (Run("umount", Path) != 0) Run("umount", "-l", Path);
            Directory.Delete(Path);
        }

        private static int Run(string file, params string[] args)
        {
            var start = new ProcessStartInfo(file) { RedirectStandardError = true };
            foreach (string a in args) start.ArgumentList.Add(a);
            using var p = Process.Start(start)!;
            p.StandardError.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode;
        }
    }
}
