using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Qemu;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// The crash journal on its own (no QEMU): what a restarted engine reads back is exactly what the dead one last put,
/// whatever the mix of puts, drops, compactions and a record cut short; a journal that is not this guest's, or corrupt
/// before its committed end, is refused with a clear error.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed unsafe class QemuJournalTests : IDisposable
{
    private const int PageSize = 4096;
    private readonly string _dir = Directory.CreateTempSubdirectory("de-journal-").FullName;
    private readonly LibraryDeposits _library = new();

    public void Dispose()
    {
        _library.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private static byte[] Page(Random r, int kind)
    {
        var page = new byte[PageSize];
        switch (kind)
        {
            case 0: break; // zero
            case 1: Array.Fill(page, (byte)r.Next(1, 256)); break; // one word
            case 2: // compressible: text-like runs
                for (int i = 0; i < PageSize; i++) page[i] = (byte)('a' + (i / 16 + r.Next(3)) % 7);
                break;
            default: r.NextBytes(page); break; // does not compress
        }
        return page;
    }

    private static byte[] Rebuild(JournalPage p)
    {
        var page = new byte[PageSize];
        switch (p.Kind)
        {
            case JournalKind.Zero: break;
            case JournalKind.Uniform:
                for (int i = 0; i < PageSize; i += 4) BitConverter.TryWriteBytes(page.AsSpan(i), p.Word);
                break;
            case JournalKind.Encoded:
                Assert.Equal(CompressionAlgorithm.LZ4, EncodedPage.Algorithm(p.Payload));
                PageCompressors.Get(CompressionAlgorithm.LZ4).Decompress(p.Payload.AsSpan(EncodedPage.CompressedHeader), page);
                Assert.Equal(EncodedPage.StoredChecksum(p.Payload), EncodedPage.Checksum(page, p.Payload));
                break;
            case JournalKind.Raw:
                p.Payload!.CopyTo(page, 0);
                break;
            default:
                throw new InvalidOperationException(p.Kind.ToString());
        }
        return page;
    }

    private static void AssertHolds(QemuJournal journal, Dictionary<long, byte[]> shadow)
    {
        Assert.Equal(shadow.Keys.Order(), journal.HeldGfns());
        foreach (var (gfn, bytes) in shadow) Assert.Equal(bytes, Rebuild(journal.Read(gfn)));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void A_restarted_engine_reads_back_exactly_what_was_put_and_not_dropped(int seed)
    {
        var r = new Random(seed);
        const long pages = 512;
        var shadow = new Dictionary<long, byte[]>();
        var journal = QemuJournal.Create(_dir, pages, _library.Deposit);
        long generationBefore = journal.Generation;
        for (int step = 0; step < 6000; step++)
        {
            long gfn = r.Next((int)pages);
            if (r.Next(3) == 0)
            {
                journal.Drop(gfn);
                shadow.Remove(gfn);
            }
            else
            {
                var page = Page(r, r.Next(4));
                Assert.True(journal.Put(gfn, page));
                shadow[gfn] = page;
            }
            if (step % 500 == 499) journal.Maintain();
            if (step % 2000 == 1999)
            {
                // The engine dies (no more calls); the next one opens what the library holds.
                int handed = _library.Handed();
                journal.Dispose();
                journal = QemuJournal.Open(handed, _dir, pages, _library.Deposit);
                AssertHolds(journal, shadow);
            }
        }
        Assert.Equal(0, journal.Failures);
        Assert.True(journal.Generation > generationBefore, "most of the journal went dead: Maintain compacted it into a new generation");
        Assert.True(journal.FileBytes < 64 + 2 * journal.LiveBytes + (4 << 20) + PageSize * 600);
        AssertHolds(journal, shadow);
        journal.Dispose();
    }

    [Fact]
    public void A_record_cut_short_by_a_crash_ends_the_journal_and_the_next_records_follow_the_last_whole_one()
    {
        var r = new Random(7);
        var journal = QemuJournal.Create(_dir, 16, _library.Deposit);
        var a = Page(r, 2);
        var b = Page(r, 3);
        Assert.True(journal.Put(1, a));
        journal.Maintain(); // committed up to here
        long committed = journal.FileBytes;
        Assert.True(journal.Put(2, b));
        int handed = _library.Handed();
        journal.Dispose();
        // The last record's write was cut short: its end never reached the file.
        Assert.Equal(0, LinuxNative.Ftruncate(handed, journal.FileBytes - 100));
        journal = QemuJournal.Open(handed, _dir, 16, _library.Deposit);
        Assert.Equal(committed, journal.FileBytes);
        AssertHolds(journal, new Dictionary<long, byte[]> { [1] = a });
        // The new engine goes on writing where the whole records end.
        Assert.True(journal.Put(3, b));
        int again = _library.Handed();
        journal.Dispose();
        journal = QemuJournal.Open(again, _dir, 16, _library.Deposit);
        AssertHolds(journal, new Dictionary<long, byte[]> { [1] = a, [3] = b });
        journal.Dispose();
    }

    [Fact]
    public void A_record_that_fails_its_check_before_the_committed_end_is_an_error_not_a_shorter_journal()
    {
        var journal = QemuJournal.Create(_dir, 16, _library.Deposit);
        Assert.True(journal.Put(1, Page(new Random(1), 2)));
        Assert.True(journal.Put(2, Page(new Random(2), 2)));
        journal.Maintain();
        int handed = _library.Handed();
        journal.Dispose();
        byte flipped = 0x5a;
        Assert.Equal(1, (int)LinuxNative.PWrite(handed, &flipped, 1, 64 + 40)); // inside the first record's payload
        var e = Assert.Throws<DEException>(() => QemuJournal.Open(handed, _dir, 16, _library.Deposit));
        Assert.Equal("QemuJournalCorrupt", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
    }

    /// <summary>
    /// A record that changed on the disk after it was written (a failing disk) is not copied by a compaction: a new file
    /// vouching for it would make the whole journal corrupt to the next engine (QemuJournalCorrupt), every page with it.
    /// The compaction leaves it out, says so, and hands its page back for the engine to write again (TakeDamaged); the
    /// other pages come through whole, and once the page is written again a restarted engine reads back every page.
    /// </summary>
    /// <remarks>Damaged in its payload (the CRC fails), or in the top byte of its length (read as an int, negative: the
    /// check took it for a small length and sliced out of range, an exception the journal's upkeep did not catch).</remarks>
    [Theory]
    [InlineData(24 + 16, 0x5a)]
    [InlineData(11, 0x80)]
    public void A_compaction_leaves_out_a_record_that_changed_on_the_disk_and_hands_its_page_back(int at, int flip)
    {
        var r = new Random(11);
        var journal = QemuJournal.Create(_dir, 16, _library.Deposit);
        var shadow = new Dictionary<long, byte[]>();
        for (long g = 0; g < 4; g++)
        {
            shadow[g] = Page(r, 2);
            Assert.True(journal.Put(g, shadow[g]));
        }
        journal.Maintain();
        // A byte of gfn 0's record (the first: at byte 64, past the header) changes on the disk.
        int handed = _library.Handed();
        byte b = 0;
        Assert.Equal(1, (int)LinuxNative.PRead(handed, &b, 1, 64 + at));
        b ^= (byte)flip;
        Assert.Equal(1, (int)LinuxNative.PWrite(handed, &b, 1, 64 + at));
        LinuxNative.Close(handed);
        // A compaction, as after an fdatasync that failed (the journal then compacts at its next Maintain).
        var sync = journal.SyncData;
        journal.SyncData = _ => 5; // EIO
        Assert.True(journal.Put(4, shadow[4] = Page(r, 3)));
        journal.Maintain();
        journal.SyncData = sync;
        long generation = journal.Generation;
        journal.Maintain();
        Assert.Equal(generation + 1, journal.Generation);
        Assert.Equal([0L], journal.TakeDamaged());
        Assert.Empty(journal.TakeDamaged());
        // A page the engine could not write again this time is handed back to the next upkeep, until it has a record.
        journal.NoteDamaged(0);
        Assert.Equal([0L], journal.TakeDamaged());
        Assert.Contains("changed on the disk", journal.LastError);
        Assert.False(journal.IsHeld(0));
        var written = shadow[0];
        shadow.Remove(0);
        AssertHolds(journal, shadow);
        // The engine writes the page again from what it holds; a restarted engine reads back every page.
        Assert.True(journal.Put(0, shadow[0] = written));
        journal.NoteDamaged(0);
        Assert.Empty(journal.TakeDamaged());
        journal.Maintain();
        int again = _library.Handed();
        journal.Dispose();
        journal = QemuJournal.Open(again, _dir, 16, _library.Deposit);
        AssertHolds(journal, shadow);
        journal.Dispose();
    }

    [Fact]
    public void The_journal_of_another_guest_or_no_journal_at_all_is_refused()
    {
        var journal = QemuJournal.Create(_dir, 32, _library.Deposit);
        journal.Dispose();
        var e = Assert.Throws<DEException>(() => QemuJournal.Open(_library.Handed(), _dir, 16, _library.Deposit));
        Assert.Equal("QemuJournalInvalid", e.ErrorId);
        Assert.Contains("32 pages", e.Message);

        string path = Path.Combine(_dir, "not-a-journal");
        File.WriteAllBytes(path, new byte[4096]);
        int fd = LinuxNative.Open(path, LinuxNative.O_RDWR | LinuxNative.O_CLOEXEC, 0);
        e = Assert.Throws<DEException>(() => QemuJournal.Open(fd, _dir, 16, _library.Deposit));
        Assert.Equal("QemuJournalInvalid", e.ErrorId);
    }

    /// <summary>
    /// Memory hot-plugged after the engine that wrote the journal attached comes after the guest's RAM, whose pages keep
    /// their numbers: the journal of the smaller guest is replayed (it was QemuJournalInvalid, and the dead engine's pages
    /// were never served, a review's finding).
    /// </summary>
    [Fact]
    public void The_journal_of_the_guest_before_memory_was_added_is_replayed()
    {
        var journal = QemuJournal.Create(_dir, 16, _library.Deposit);
        var page = Page(new Random(4), 9);
        Assert.True(journal.Put(9, page));
        journal.Maintain();
        var grown = QemuJournal.Open(_library.Handed(), _dir, 24, _library.Deposit);
        Assert.True(grown.IsHeld(9));
        Assert.Equal(24, grown.PageCount);
        Assert.Equal([9L], grown.HeldGfns());
        grown.Dispose();
        journal.Dispose();
    }

    [Fact]
    public void The_journal_is_an_unnamed_file_only_its_holders_can_reach_created_0600()
    {
        var journal = QemuJournal.Create(_dir, 16, _library.Deposit);
        Assert.True(journal.Put(0, Page(new Random(3), 3)));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir)); // O_TMPFILE: no name in the folder
        string link = $"/proc/self/fd/{_library.Held}";
        var mode = File.GetUnixFileMode(link);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, mode);
        journal.Dispose();
    }

    [Fact]
    public void A_record_that_cannot_be_written_says_so_and_is_counted_so_the_page_stays_in_the_guest()
    {
        var journal = QemuJournal.Create(_dir, 16, _library.Deposit);
        journal.Dispose(); // a write after the close fails like one to a full disk: refused, counted, explained
        Assert.False(journal.Put(3, Page(new Random(5), 2)));
        Assert.Equal(1, journal.Failures);
        Assert.Equal("the journal is closed", journal.LastError);
    }

    [Fact]
    public void A_folder_that_does_not_exist_is_a_clear_error()
    {
        var e = Assert.Throws<DEException>(() => QemuJournal.Create(Path.Combine(_dir, "missing"), 16, _library.Deposit));
        Assert.Equal("QemuJournalFailed", e.ErrorId);
        Assert.Equal(DEErrorKind.ObjectNotFound, e.Kind);
    }
}
