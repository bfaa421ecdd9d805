using System.Buffers.Binary;
using System.IO.Hashing;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;

namespace DifferenceEngine.Qemu;

/// <summary>What a journal record says about a guest page.</summary>
internal enum JournalKind : byte
{
    /// <summary>The engine took the page out; it is zeros.</summary>
    Zero = 1,
    /// <summary>The engine took the page out; it is one 32-bit word repeated.</summary>
    Uniform = 2,
    /// <summary>The engine took the page out; the payload is a compact-store blob (LZ4, with the page's checksum).</summary>
    Encoded = 3,
    /// <summary>The engine took the page out; the payload is the page itself (it did not compress).</summary>
    Raw = 4,
    /// <summary>
    /// The page is the guest's again (installed): no earlier record of it holds. Appended with no payload; or written over
    /// the page's own record where it is, when the drop could not be appended (<see cref="QemuJournal.Drop"/>): then it
    /// keeps that record's length, and its payload, which nothing reads.
    /// </summary>
    Drop = 5,
}

/// <summary>One page the journal says the engine holds: what a restarted engine serves it from.</summary>
internal readonly record struct JournalPage(long Gfn, JournalKind Kind, uint Word, byte[]? Payload);

/// <summary>
/// The crash journal of one QEMU domain: every page the engine takes out of the guest is written here, as the guest last
/// wrote it, before it is punched out of the guest's memory; every page put back is marked dropped after it is in. The
/// file is deposited with the guest's libdeqemu.so (which keeps a descriptor of it), so when the engine dies, even by
/// SIGKILL, the next engine that attaches gets it back and serves the pages the dead one held (<see cref="Open"/>).
/// </summary>
/// <remarks>
/// <para>The file is unlinked from the start (O_TMPFILE, mode 0600, in the host's journal folder: a disk, so what it
/// holds costs disk and, for a while, page cache, not the host's memory): only the engine and the guest's own QEMU hold
/// it, and it goes away with them. A process kill loses nothing written to it (the kernel's page cache holds it);
/// <see cref="Maintain"/> makes it durable up to a committed point and drops it from the page cache.</para>
/// <para>Layout (little endian): a 64-byte header [0] magic "DEQJ", [4] version 1, [8] the guest's page count, [16] the
/// committed end (every record before it was synced and must be whole), [24] generation, [60] CRC-32 of [0, 60). Then
/// records at 8-byte boundaries: [0] CRC-32 of [4, 24 + length), [4] kind, [8] payload length, [12] word (Uniform),
/// [16] gfn, [24] payload. The newest record of a gfn decides; a record that fails its CRC after the committed end is
/// the end of the journal (the one a crash cut short), before it the journal is corrupt. A drop is a record with no
/// payload, or a put record whose kind was made Drop in place (its CRC and kind, the first 8 bytes, rewritten).</para>
/// <para>Thread-safe: a record is encoded on the caller's thread and appended under one lock, in the order the page's
/// own lock gave (a page's records are written under its page lock).</para>
/// </remarks>
internal sealed unsafe class QemuJournal : IDisposable
{
    private const uint Magic = 0x4a514544; // "DEQJ"
    /// <summary>
    /// 2 since a drop record may carry the payload of the put it was written over (in place, when the disk refused an
    /// append): an engine of version 1 would take such a record for damage. Version 1 journals are read (they hold no such
    /// record); the header says 2 from the next commit on.
    /// </summary>
    private const uint Version = 2;
    private const int HeaderSize = 64;
    private const int RecordHeader = 24;
    private const int PageSize = Userfaultfd.PageSize;
    private const int MaxRecord = RecordHeader + PageSize;
    /// <summary>Record offsets are kept in 8-byte units in a uint: the journal file stays under 32 GiB.</summary>
    private const long MaxFileBytes = (long)uint.MaxValue * 8;
    /// <summary>Dead bytes below which compaction is not worth a rewrite.</summary>
    private const long CompactionSlack = 4 << 20;

    [ThreadStatic] private static byte[]? t_record;

    private readonly object _gate = new();
    private readonly string _directory;
    private readonly Action<int> _deposit;
    private readonly uint[] _at;      // the live record of each gfn: its offset / 8, 0 for none
    private readonly ushort[] _size;  // its size in bytes (8-aligned)
    private int _fd;
    private long _tail, _committed, _live, _generation;
    private long _failures;
    private string? _lastError;
    // Pages whose record a compaction found changed on the disk and left out: the engine writes them again (TakeDamaged).
    private readonly List<long> _damaged = [];
    /// <summary>
    /// Why puts are refused, drops written only in place and the file no longer committed, until a compaction writes a
    /// new file (<see cref="Maintain"/> tries at each call): a drop that could not be written, remains of a cut-short
    /// write that could not be cut off, a failed fdatasync. Null: none of that.
    /// </summary>
    private string? _refusing;
    private bool _disposed;

    private QemuJournal(string directory, long pageCount, Action<int> deposit, int fd)
    {
        _directory = directory;
        _deposit = deposit;
        _fd = fd;
        _at = new uint[pageCount];
        _size = new ushort[pageCount];
        _tail = _committed = HeaderSize;
    }

    /// <summary>Pages in the guest (the journal's gfns are 0 to this - 1).</summary>
    public long PageCount => _at.LongLength;

    /// <summary>Bytes of the journal file (on disk, not in the host's memory).</summary>
    public long FileBytes => Volatile.Read(ref _tail);

    /// <summary>Bytes of the records that still decide a page.</summary>
    public long LiveBytes => Volatile.Read(ref _live);

    /// <summary>The engine's memory for the journal: where each page's record is.</summary>
    public long MetadataBytes => _at.LongLength * (sizeof(uint) + sizeof(ushort));

    /// <summary>Records that could not be written (the page then stayed in the guest: nothing lost, nothing saved).</summary>
    public long Failures => Interlocked.Read(ref _failures);

    public string? LastError => Volatile.Read(ref _lastError);

    /// <summary>Which generation this file is (each compaction writes a new one and deposits it).</summary>
    public long Generation => _generation;

    /// <summary>fdatasync of a descriptor: 0, or the errno it failed with. Tests put a failing one in its place.</summary>
    internal Func<int, int> SyncData { get; set; } = static fd => LinuxNative.Fdatasync(fd) == 0 ? 0 : LinuxNative.Errno;

    /// <summary>
    /// A new, empty journal in <paramref name="directory"/> for a guest of <paramref name="pageCount"/> pages, handed to
    /// <paramref name="deposit"/> (the guest's library) before it is used.
    /// </summary>
    public static QemuJournal Create(string directory, long pageCount, Action<int> deposit)
    {
        int fd = NewFile(directory);
        return Prepared(directory, pageCount, deposit, fd, journal =>
        {
            journal.WriteHeader(fd, HeaderSize, 1);
            journal._generation = 1;
            deposit(fd);
        });
    }

    /// <summary>
    /// A journal on <paramref name="fd"/> (owned from here) once <paramref name="prepare"/> has run on it; whatever
    /// fails, the descriptor is closed (a leaked one would keep the file and a guest's pages on disk).
    /// </summary>
    private static QemuJournal Prepared(string directory, long pageCount, Action<int> deposit, int fd, Action<QemuJournal> prepare)
    {
        QemuJournal journal;
        try
        {
            journal = new QemuJournal(directory, pageCount, deposit, fd);
        }
        catch
        {
            LinuxNative.Close(fd);
            throw;
        }
        try
        {
            prepare(journal);
            return journal;
        }
        catch
        {
            journal.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Takes over the journal an earlier engine deposited (<paramref name="fd"/>, owned from here): checks it is a journal
    /// of this guest and replays it. Errors: "QemuJournalInvalid" (not a journal of a guest this size),
    /// "QemuJournalCorrupt" (a record before the committed end fails its check).
    /// </summary>
    public static QemuJournal Open(int fd, string directory, long pageCount, Action<int> deposit) =>
        Prepared(directory, pageCount, deposit, fd, journal => journal.Replay());

    /// <summary>
    /// The pages whose record the last compactions found changed on the disk since it was written (a failing disk, or a
    /// write by someone else): left out of the new file, they have no record now, though the engine still holds them.
    /// The caller writes each again from what it holds (Domain.QemuRejournal), after this call and with no page lock of
    /// the journal's taken meanwhile; the list is emptied.
    /// </summary>
    public List<long> TakeDamaged()
    {
        lock (_gate)
        {
            var taken = new List<long>(_damaged);
            _damaged.Clear();
            return taken;
        }
    }

    /// <summary>
    /// Hands page <paramref name="gfn"/> back to the next <see cref="TakeDamaged"/>: it still has no record (the engine
    /// could not write it again this time: the journal refused it, or its own copy could not be read).
    /// </summary>
    public void NoteDamaged(long gfn)
    {
        lock (_gate)
            if (_at[gfn] == 0 && !_damaged.Contains(gfn)) _damaged.Add(gfn);
    }

    /// <summary>Where the live record of page <paramref name="gfn"/> is in the file now (bytes), and the file's descriptor (tests).</summary>
    internal (long Offset, int Fd) RecordAt(long gfn)
    {
        lock (_gate) return ((long)_at[gfn] * 8, _fd);
    }

    /// <summary>The gfns the journal says the engine holds, in order.</summary>
    public List<long> HeldGfns()
    {
        var held = new List<long>();
        lock (_gate)
            for (long g = 0; g < _at.LongLength; g++)
                if (_at[g] != 0) held.Add(g);
        return held;
    }

    /// <summary>Whether the journal holds a live record of page <paramref name="gfn"/> (the engine took it out).</summary>
    public bool IsHeld(long gfn) => (ulong)gfn < (ulong)_at.LongLength && Volatile.Read(ref _at[gfn]) != 0;

    /// <summary>The record that decides page <paramref name="gfn"/> (which must be held).</summary>
    public JournalPage Read(long gfn)
    {
        byte[] record = new byte[MaxRecord];
        lock (_gate)
        {
            if (_at[gfn] == 0) throw new InvalidOperationException($"gfn {gfn} has no live record");
            long offset = (long)_at[gfn] * 8;
            ReadExactly(_fd, record.AsSpan(0, _size[gfn]), offset);
        }
        if (!TryParse(record, out var kind, out int length, out uint word, out long g) || g != gfn)
            throw Corrupt(gfn, "its record changed since it was replayed");
        return new JournalPage(gfn, kind, word, kind is JournalKind.Encoded or JournalKind.Raw ? record[RecordHeader..(RecordHeader + length)] : null);
    }

    /// <summary>
    /// Records that the engine takes page <paramref name="gfn"/> out of the guest with content <paramref name="page"/>.
    /// Call before the page leaves the guest; false when the record could not be written (then the page must stay).
    /// </summary>
    public bool Put(long gfn, ReadOnlySpan<byte> page)
    {
        byte[] record = t_record ??= new byte[MaxRecord + 64];
        var payload = record.AsSpan(RecordHeader);
        JournalKind kind;
        uint word = 0;
        int length = 0;
        if (Sharing.PageHasher.IsUniform(page, out word)) kind = word == 0 ? JournalKind.Zero : JournalKind.Uniform;
        else if (PageCompressors.Get(CompressionAlgorithm.LZ4).TryCompress(page,
                     payload.Slice(EncodedPage.CompressedHeader, PageSize - EncodedPage.CompressedHeader - 8), out int written))
        {
            kind = JournalKind.Encoded;
            EncodedPage.WriteCompressedHeader(payload, page, CompressionAlgorithm.LZ4);
            length = EncodedPage.CompressedHeader + written;
        }
        else
        {
            kind = JournalKind.Raw;
            page.CopyTo(payload);
            length = PageSize;
        }
        return Append(record, kind, gfn, word, length);
    }

    /// <summary>
    /// Records that page <paramref name="gfn"/> is the guest's again: a 24-byte drop record is written at once (in the
    /// page cache: a process kill loses nothing written). Call after the page is in the guest and before the guest is
    /// woken, where the caller can (UFFDIO_ZEROPAGE with DONTWAKE, then UFFDIO_WAKE). Never throws.
    /// </summary>
    /// <remarks>
    /// <para>Why at once: once the guest has the page back, QEMU may let it go (a balloon, free page reporting, a
    /// discard): it is a hole again, and reads as zeros. Were the drop still unwritten when the engine is killed, the next
    /// engine would find a hole with a live record, take it over as a page the dead engine held, and put the old bytes
    /// back. Why after the install: a drop written before it, and a kill between the two, leaves a hole with no record:
    /// the page is lost. After the install, a kill before the drop leaves a record of a page the guest has, which the next
    /// engine sees present and drops (the guest's page is newer). The one window left is a kill between the install and
    /// this write in which QEMU also let the page go: with the guest woken only after this write (every fault is installed
    /// with DONTWAKE), not even the faulting vCPU has run on it by then; another vCPU would have to let it go untouched.</para>
    /// <para>When the drop cannot be appended (the disk is full, the journal refuses records), the page's live record is
    /// made a drop where it is: its kind and CRC, its first 8 bytes, are rewritten in bytes the file has already
    /// allocated (so no ENOSPC on a filesystem that overwrites in place: not a copy-on-write one such as btrfs), in one
    /// 8-aligned write that no page boundary splits (a kill cannot tear it). Only if that fails too is the drop lost: the
    /// failure is counted and the journal refuses puts until a compaction writes it anew without that record.</para>
    /// </remarks>
    public void Drop(long gfn)
    {
        if (Volatile.Read(ref _at[gfn]) == 0) return; // nothing says otherwise
        byte[] record = t_record ??= new byte[MaxRecord + 64];
        Seal(record, JournalKind.Drop, gfn, 0, 0);
        lock (_gate)
        {
            if (_disposed || _at[gfn] == 0) return;
            if (_refusing is not null || !WriteAtTail(record.AsSpan(0, RecordHeader), count: false))
                if (!DropInPlace(gfn))
                    _refusing ??= $"the drop record of page {gfn} could not be written ({_lastError}): the journal takes no " +
                                  "more records until it is compacted into a new file";
            Index(JournalKind.Drop, gfn, 0, 0);
        }
    }

    /// <summary>Makes page <paramref name="gfn"/>'s live record a drop where it is (under the lock); false, counted, when it cannot.</summary>
    private bool DropInPlace(long gfn)
    {
        long offset = (long)_at[gfn] * 8;
        byte[] record = new byte[MaxRecord];
        try
        {
            ReadExactly(_fd, record.AsSpan(0, _size[gfn]), offset);
            if (!TryParse(record, out _, out int length, out _, out long g) || g != gfn)
                return Fail($"the record of page {gfn} changed since it was written");
            BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(4), (uint)JournalKind.Drop);
            BinaryPrimitives.WriteUInt32LittleEndian(record, Crc32.HashToUInt32(record.AsSpan(4, RecordHeader - 4 + length)));
            WriteExactly(_fd, record.AsSpan(0, 8), offset);
            return true;
        }
        catch (DEException e)
        {
            return Fail(e.Message);
        }
    }

    /// <summary>
    /// Writes <paramref name="data"/> at the end of the journal and moves the end past it (under the lock); false when it
    /// cannot (counted as a failure when <paramref name="count"/>; the reason is the last error either way).
    /// </summary>
    private bool WriteAtTail(ReadOnlySpan<byte> data, bool count = true)
    {
        string? failure = null;
        if (_tail + data.Length > MaxFileBytes) failure = "the journal file reached its largest size (32 GiB)";
        else
            try
            {
                WriteExactly(_fd, data, _tail);
            }
            catch (DEException e)
            {
                failure = e.Message;
                CutBackToTail();
            }
        if (failure is not null)
        {
            if (count) return Fail(failure);
            Volatile.Write(ref _lastError, failure);
            return false;
        }
        Volatile.Write(ref _tail, _tail + data.Length);
        return true;
    }

    /// <summary>
    /// After a write at the tail failed (under the lock): whatever part of it the disk took goes, so the file ends at the
    /// tail again. Left there, the next record, if smaller, would be written into the space that part allocated (even on
    /// a full disk) and a replay would read on past it into the rest: whole records, or bytes of a page the guest wrote,
    /// which may look like records. Should the cut fail, the journal refuses puts until a compaction writes a new file;
    /// drops are then written in place, so nothing is appended after those remains (a replay stops at them: they end
    /// in a record cut short).
    /// </summary>
    private void CutBackToTail()
    {
        if (LinuxNative.Ftruncate(_fd, _tail) == 0) return;
        int errno = LinuxNative.Errno;
        _refusing ??= $"what a write cut short left past the end of the journal could not be cut off (ftruncate: " +
                      $"{LinuxNative.Describe(errno)}, errno {errno}): the journal takes no more records until it is " +
                      "compacted into a new file";
    }

    /// <summary>Fills in a record's header and CRC around its payload; its size in the file.</summary>
    private static int Seal(byte[] record, JournalKind kind, long gfn, uint word, int length)
    {
        int size = Align8(RecordHeader + length);
        BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(4), (uint)kind);
        BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(8), (uint)length);
        BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(12), word);
        BinaryPrimitives.WriteInt64LittleEndian(record.AsSpan(16), gfn);
        record.AsSpan(RecordHeader + length, size - RecordHeader - length).Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(record, Crc32.HashToUInt32(record.AsSpan(4, RecordHeader - 4 + length)));
        return size;
    }

    /// <summary>Appends a put record.</summary>
    private bool Append(byte[] record, JournalKind kind, long gfn, uint word, int length)
    {
        int size = Seal(record, kind, gfn, word, length);
        lock (_gate)
        {
            if (_disposed) return Fail("the journal is closed");
            if (_refusing is { } why) return Fail(why);
            long at = _tail;
            if (!WriteAtTail(record.AsSpan(0, size))) return false;
            Index(kind, gfn, at, size);
            return true;
        }
    }

    /// <summary>The record at <paramref name="offset"/> now decides page <paramref name="gfn"/> (a drop: nothing does).</summary>
    private void Index(JournalKind kind, long gfn, long offset, int size)
    {
        if (_at[gfn] != 0) _live -= _size[gfn];
        bool drop = kind == JournalKind.Drop;
        _at[gfn] = drop ? 0 : (uint)(offset / 8);
        _size[gfn] = drop ? (ushort)0 : (ushort)size;
        if (!drop) _live += size;
    }

    private bool Fail(string why)
    {
        Interlocked.Increment(ref _failures);
        Volatile.Write(ref _lastError, why);
        return false;
    }

    /// <summary>
    /// Once a pass or a reclaim is done: makes what was written durable up to here (the committed end), lets the page cache
    /// drop it, and rewrites the journal with only its live records when most of it is dead (deposited before the old one
    /// is let go, so some whole generation is always with the guest's library), or when it refuses records.
    /// </summary>
    public void Maintain()
    {
        lock (_gate)
        {
            if (_disposed) return;
            if (_refusing is not null || _tail - HeaderSize - _live > Math.Max(_live, CompactionSlack))
                try
                {
                    Compact();
                }
                catch (DEException e)
                {
                    // Most often a disk too full for a second copy of the live records. The file in use goes on, and is
                    // synced and committed all the same: else, the compaction being tried again at every call, it never
                    // would be again.
                    Fail(e.Message);
                }
            // A file that refuses records is not committed: above all not one whose fdatasync failed (below).
            if (_tail == _committed || _refusing is not null) return;
            try
            {
                if (SyncData(_fd) is int errno and not 0)
                {
                    // What was written may never reach the disk, and the page cache may drop it (that is what
                    // FADV_DONTNEED would do at once); another fdatasync would say 0 (the kernel tells an error once), and
                    // a committed end written then would vouch for records that may be gone. So no more records go into
                    // this file, and it is never committed again: the next calls compact it into a new one, from the
                    // page cache while it still has the records.
                    _refusing = $"fdatasync of the journal failed ({LinuxNative.Describe(errno)}, errno {errno}): the " +
                                "journal takes no more records until it is compacted into a new file";
                    throw Failed("fdatasync", errno);
                }
                WriteHeader(_fd, _tail, _generation);
                _committed = _tail;
                LinuxNative.PosixFadvise(_fd, 0, 0, LinuxNative.POSIX_FADV_DONTNEED);
            }
            catch (DEException e)
            {
                Fail(e.Message);
            }
        }
    }

    /// <summary>Writes the live records to a new file, deposits it, and lets the old one go (under the lock).</summary>
    private void Compact()
    {
        int fd = NewFile(_directory);
        var at = new uint[_at.LongLength];
        byte[] buffer = new byte[1 << 20];
        try
        {
            long tail = HeaderSize;
            int fill = 0;
            long bufferAt = tail;
            long live = 0;
            List<long>? damaged = null;
            for (long g = 0; g < _at.LongLength; g++)
            {
                if (_at[g] == 0) continue;
                int size = _size[g];
                if (fill + size > buffer.Length)
                {
                    WriteExactly(fd, buffer.AsSpan(0, fill), bufferAt);
                    bufferAt += fill;
                    fill = 0;
                }
                // Each record checked as a replay would: one that changed on the disk since it was written, or that the
                // disk no longer gives back, is not copied (a new file vouching for it would make the whole journal corrupt
                // to the next engine); the engine, which holds the page, writes it again (TakeDamaged).
                if (!TryReadRecord(buffer.AsSpan(fill, size), (long)_at[g] * 8, g))
                {
                    (damaged ??= []).Add(g);
                    continue;
                }
                at[g] = (uint)(tail / 8);
                fill += size;
                tail += size;
                live += size;
            }
            WriteExactly(fd, buffer.AsSpan(0, fill), bufferAt);
            if (SyncData(fd) is int errno and not 0) throw Failed("fdatasync", errno);
            WriteHeader(fd, tail, _generation + 1);
            _deposit(fd);
            _refusing = null; // a new file, with none of the old one's troubles
            LinuxNative.Close(_fd);
            _fd = fd;
            at.CopyTo(_at, 0);
            _generation++;
            Volatile.Write(ref _tail, tail);
            _committed = tail;
            Volatile.Write(ref _live, live);
            if (damaged is not null)
            {
                foreach (long g in damaged) _damaged.Add(g);
                Fail($"{damaged.Count} record(s) of the crash journal changed on the disk since they were written (page " +
                     $"{damaged[0]}{(damaged.Count > 1 ? " and others" : "")}): left out of the compacted journal, to be written again");
            }
            LinuxNative.PosixFadvise(_fd, 0, 0, LinuxNative.POSIX_FADV_DONTNEED);
        }
        catch
        {
            LinuxNative.Close(fd);
            throw;
        }
    }

    /// <summary>Reads page <paramref name="gfn"/>'s record at <paramref name="offset"/> into <paramref name="record"/>: false when the read fails or the record fails its check.</summary>
    private bool TryReadRecord(Span<byte> record, long offset, long gfn)
    {
        try
        {
            ReadExactly(_fd, record, offset);
        }
        catch (DEException)
        {
            return false;
        }
        return TryParse(record, out _, out _, out _, out long recordGfn) && recordGfn == gfn;
    }

    private void Replay()
    {
        Span<byte> header = stackalloc byte[HeaderSize];
        long end = LinuxNative.Lseek(_fd, 0, LinuxNative.SEEK_END);
        if (end < HeaderSize) throw Invalid("it is shorter than a journal's header");
        ReadExactly(_fd, header, 0);
        if (BinaryPrimitives.ReadUInt32LittleEndian(header) != Magic || BinaryPrimitives.ReadUInt32LittleEndian(header[4..]) is not (1 or Version) ||
            BinaryPrimitives.ReadUInt32LittleEndian(header[60..]) != Crc32.HashToUInt32(header[..60]))
            throw Invalid($"it is not a DEQJ version 1 or {Version} journal");
        long pages = BinaryPrimitives.ReadInt64LittleEndian(header[8..]);
        // A guest may have more pages than its journal: RAM mapped after the engine that wrote it attached (hot-plugged
        // memory) comes after the RAM it had, whose pages keep their numbers while the library keeps its userfaultfd.
        if (pages < 1 || pages > _at.LongLength)
            throw Invalid($"it is the journal of a guest of {pages} pages, this guest has {_at.LongLength}");
        long committed = BinaryPrimitives.ReadInt64LittleEndian(header[16..]);
        _generation = BinaryPrimitives.ReadInt64LittleEndian(header[24..]);
        if (committed < HeaderSize || committed > end) throw Invalid($"its committed end {committed} is outside the file ({end} bytes)");
        byte[] record = new byte[MaxRecord + 64];
        long at = HeaderSize;
        while (at + RecordHeader <= end)
        {
            ReadExactly(_fd, record.AsSpan(0, RecordHeader), at);
            int length = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(record.AsSpan(8)), (uint)PageSize + 1);
            int size = Align8(RecordHeader + length);
            bool whole = length <= PageSize && at + size <= end;
            if (whole) ReadExactly(_fd, record.AsSpan(RecordHeader, size - RecordHeader), at + RecordHeader);
            if (!whole || !TryParse(record, out var kind, out _, out _, out long gfn) || (ulong)gfn >= (ulong)pages)
            {
                if (at < committed)
                    throw new DEException("QemuJournalCorrupt", DEErrorKind.InvalidData,
                        $"The crash journal of this QEMU guest is corrupt at byte {at}, before its committed end ({committed}): " +
                        "the pages an earlier engine held cannot be trusted. The guest's faults on them keep waiting.", at.ToString());
                break; // the record a crash cut short: the journal ends here
            }
            Index(kind, gfn, at, size);
            at += size;
        }
        _tail = at;
        _committed = Math.Min(committed, at);
        // Whatever a crash left past the last whole record goes: new records follow the last whole one.
        if (at != end && LinuxNative.Ftruncate(_fd, at) != 0) throw Failed("ftruncate", LinuxNative.Errno);
    }

    private static bool TryParse(ReadOnlySpan<byte> record, out JournalKind kind, out int length, out uint word, out long gfn)
    {
        kind = (JournalKind)BinaryPrimitives.ReadUInt32LittleEndian(record[4..]);
        length = (int)BinaryPrimitives.ReadUInt32LittleEndian(record[8..]);
        word = BinaryPrimitives.ReadUInt32LittleEndian(record[12..]);
        gfn = BinaryPrimitives.ReadInt64LittleEndian(record[16..]);
        // The length as the unsigned word it is (a damaged one with its top bit set is not a small negative number).
        if ((uint)length > PageSize || kind is < JournalKind.Zero or > JournalKind.Drop || RecordHeader + length > record.Length) return false;
        if (BinaryPrimitives.ReadUInt32LittleEndian(record) != Crc32.HashToUInt32(record.Slice(4, RecordHeader - 4 + length))) return false;
        return kind switch
        {
            JournalKind.Encoded => length > EncodedPage.CompressedHeader,
            JournalKind.Raw => length == PageSize,
            JournalKind.Drop => true, // with no payload, or the payload of the put it was written over
            _ => length == 0,
        };
    }

    private void WriteHeader(int fd, long committed, long generation)
    {
        Span<byte> header = stackalloc byte[HeaderSize];
        header.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(header, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], Version);
        BinaryPrimitives.WriteInt64LittleEndian(header[8..], _at.LongLength);
        BinaryPrimitives.WriteInt64LittleEndian(header[16..], committed);
        BinaryPrimitives.WriteInt64LittleEndian(header[24..], generation);
        BinaryPrimitives.WriteUInt32LittleEndian(header[60..], Crc32.HashToUInt32(header[..60]));
        WriteExactly(fd, header, 0);
    }

    /// <summary>An unnamed file (mode 0600) in <paramref name="directory"/>: O_TMPFILE, or a named one unlinked at once.</summary>
    private static int NewFile(string directory)
    {
        int fd = LinuxNative.Open(directory, LinuxNative.O_TMPFILE | LinuxNative.O_RDWR | LinuxNative.O_CLOEXEC, 0x180);
        if (fd >= 0) return fd;
        int errno = LinuxNative.Errno;
        if (errno is not (LinuxNative.EOPNOTSUPP or LinuxNative.EISDIR))
            throw new DEException("QemuJournalFailed", errno == LinuxNative.ENOENT ? DEErrorKind.ObjectNotFound : DEErrorKind.WriteError,
                $"The crash journal of a QEMU guest cannot be made in '{directory}': {LinuxNative.Describe(errno)} (errno {errno}).", directory);
        string path = Path.Combine(directory, $".de-journal-{Guid.NewGuid():n}");
        fd = LinuxNative.Open(path, LinuxNative.O_RDWR | LinuxNative.O_CREAT | LinuxNative.O_EXCL | LinuxNative.O_CLOEXEC, 0x180);
        if (fd < 0) throw Failed($"open {path}", LinuxNative.Errno);
        LinuxNative.Unlink(path);
        return fd;
    }

    private static void WriteExactly(int fd, ReadOnlySpan<byte> data, long offset)
    {
        fixed (byte* p = data) Transfer(fd, p, data.Length, offset, write: true);
    }

    private static void ReadExactly(int fd, Span<byte> data, long offset)
    {
        fixed (byte* p = data) Transfer(fd, p, data.Length, offset, write: false);
    }

    /// <summary>pwrite or pread of all <paramref name="length"/> bytes, across short transfers and EINTR.</summary>
    private static void Transfer(int fd, byte* p, int length, long offset, bool write)
    {
        for (int done = 0; done < length;)
        {
            nint n = write
                ? LinuxNative.PWrite(fd, p + done, (nuint)(length - done), offset + done)
                : LinuxNative.PRead(fd, p + done, (nuint)(length - done), offset + done);
            if (n < 0 && LinuxNative.Errno == LinuxNative.EINTR) continue;
            if (n <= 0) throw Failed(write ? "pwrite" : "pread", n < 0 ? LinuxNative.Errno : write ? LinuxNative.ENOSPC : LinuxNative.EIO);
            done += (int)n;
        }
    }

    private static int Align8(int n) => (n + 7) & ~7;

    private static DEException Failed(string call, int errno) =>
        new("QemuJournalFailed", DEErrorKind.WriteError, $"The crash journal of a QEMU guest: {call} failed: {LinuxNative.Describe(errno)} (errno {errno}).", call);

    private static DEException Invalid(string why) =>
        new("QemuJournalInvalid", DEErrorKind.InvalidData,
            $"The state this QEMU's library holds is not a crash journal of this guest: {why}. The guest's faults on pages an " +
            "earlier engine held keep waiting.", why);

    private static DEException Corrupt(long gfn, string why) =>
        new("QemuJournalCorrupt", DEErrorKind.InvalidData, $"The crash journal record of guest page {gfn} is corrupt: {why}.", gfn.ToString());

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            if (_fd >= 0) LinuxNative.Close(_fd);
            _fd = -1;
        }
    }
}
