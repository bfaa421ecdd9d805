using System.Diagnostics;
using DifferenceEngine.Qemu;

namespace DifferenceEngine.Domains;

/// <summary>
/// A domain whose memory is a running QEMU guest's RAM (<see cref="QemuRam"/>): a Private page is a page the guest has,
/// its frame the guest's own memory read in place; every other state is a page the engine took out of the guest (its
/// hole in the memfd faults to the engine); an Untouched page is a hole the guest never filled.
/// </summary>
/// <remarks>
/// <para><b>Taking a page out</b>: a pass write-protects a QEMU page (<see cref="QemuProtect"/>) under its lock before it
/// reads it, and lifts the protection when the page stays. Freeing its frame punches it out of the memfd
/// (<see cref="QemuRam"/>). A guest write meanwhile faults, and the fault waits for the page's lock: it comes after the
/// pass, and finds the page either still there (the write goes on) or gone (the guest's retry faults again and the page
/// is installed before the write lands). No write is lost.</para>
/// <para><b>Faults</b> (<see cref="ServeQemuFault"/>) are served under the page's lock like any access: the page is
/// rebuilt in a frame of the engine as on the embedded host (zero, pattern, copy of a shared frame, unpatch,
/// decompress, swap-in), installed in the guest with UFFDIO_COPY (which wakes it), and the engine's frame freed.</para>
/// <para><b>The clock</b>: the guest's writes do not pass through the engine, so a sweep marks a page written and
/// referenced when its content changed since the last sweep (<see cref="QemuNoteWrites"/>).</para>
/// <para>Built: zero and one-word pages, sharing (a guest's page never becomes the shared frame itself: its bytes are
/// copied to a frame of the engine and the page taken out, SharingPass), compression, and paging to the swap file under
/// the host's memory limit (the guest's pages count against it; a first touch is never refused, the reclaimer brings the
/// host back under the limit), patching (a reference is copied out the same way, PatchPass.MakeReference). Writes from
/// the engine's side refuse with "QemuMechanismNotYetSupported".</para>
/// </remarks>
public sealed partial class Domain
{
    /// <summary>The QEMU guest this domain pages, or null for an embedded domain.</summary>
    internal QemuRam? Qemu { get; private set; }

    /// <summary>The QEMU process whose guest this domain is (0 for an embedded domain).</summary>
    public int QemuPid => Qemu?.Link.Pid ?? 0;

    /// <summary>
    /// For a QEMU domain whose RAM the engine could not guard against reads of its holes, why (null when guarded, and
    /// for an embedded domain). Unguarded, anything reading the engine process's memory where it maps a page the engine
    /// holds (a debugger, /proc/PID/mem) puts zeros in the guest's page (docs/QEMU.md).
    /// </summary>
    public string? QemuUnguardedReason => Qemu?.UnguardedReason;

    /// <summary>
    /// Takes over <paramref name="ram"/>: every page the guest has becomes Private on its own (external) frame, every
    /// hole Untouched; then the guest's faults are served. Called once, before the domain is registered.
    /// </summary>
    internal void AttachQemu(QemuRam ram)
    {
        Qemu = ram;
        _qemuRefaults = new byte[PageCount];
        // The guard first: from here on the engine reads the guest's pages through its mappings.
        ram.StartGuard(QemuGuestHas);
        MarkUntouched();
        foreach (var (first, pages) in ram.PresentRuns())
        {
            for (long gfn = first; gfn < first + pages; gfn++)
            {
                uint frame = ram.FrameOf(gfn);
                Host.Frames.TakeExternal(frame);
                ulong e = Lock(gfn);
                Unlock(gfn, PageEntry.With(e, PageState.Private, frame));
            }
        }
        RecoverQemuPages(ram);
        ram.StartFaults(ServeQemuFault);
    }

    /// <summary>Pages the guest had that QEMU let go itself and that read as zeros since (<see cref="QemuRam.HolesFilled"/>).</summary>
    public long QemuHolesFilled => Qemu?.HolesFilled ?? 0;

    /// <summary>Whether the guest has page <paramref name="gfn"/> (Private on its own frame), read without its lock (the read guard's question).</summary>
    private bool QemuGuestHas(long gfn)
    {
        if (gfn >= PageCount) return false;
        ulong e = PeekEntry(gfn);
        return PageEntry.State(e) == PageState.Private && Host.Frames.IsExternal(PageEntry.Frame(e));
    }

    /// <summary>Per page: how often it came back on a fault soon after being taken out (0 to 3), decaying while it stays out.</summary>
    private byte[]? _qemuRefaults;

    /// <summary>Bytes of the per-page refault counts (engine metadata).</summary>
    internal long QemuMetadataBytes => (_qemuRefaults?.LongLength ?? 0) + (Qemu?.Journal.MetadataBytes ?? 0);

    /// <summary>
    /// The sweeps a locked page of this guest must go unwritten before it is cold (C4) and may be taken out: the domain's
    /// C4Sweeps, doubled for each recent refault (up to 8 times, and the clock's 15 at most). The guest's reads do not
    /// reach the engine, so a page it only reads looks idle; one that came back on a fault each time it was taken out is
    /// hot after all, and waits longer. While a page stays out for the clock's longest idle count, it loses one refault.
    /// </summary>
    internal ulong QemuSweep(long gfn, ulong e, int c4Sweeps)
    {
        ref byte refaults = ref _qemuRefaults![gfn];
        e = Clock.PageClock.Sweep(e, Math.Min(PageEntry.MaxIdle, c4Sweeps << refaults));
        if (refaults > 0 && PageEntry.State(e) != PageState.Private && PageEntry.Idle(e) == PageEntry.MaxIdle) refaults--;
        return e;
    }

    /// <summary>Pages this engine took over from the crash journal of an engine that died (see <see cref="RecoverQemuPages"/>).</summary>
    public long QemuRecoveredPages { get; private set; }

    /// <summary>
    /// Takes over the pages an earlier engine held, from the crash journal it deposited with the guest's library: each
    /// page the journal says was taken out, and that the guest does not have (a page it has is the guest's, newer than any
    /// record), becomes a page this engine holds: zero, one word, or its compressed blob in the store; one that did not
    /// compress (or finds the store full) is put back into the guest. Faults waiting on them are woken afterwards.
    /// </summary>
    private void RecoverQemuPages(QemuRam ram)
    {
        var journal = ram.Journal;
        foreach (long gfn in journal.HeldGfns())
        {
            ulong e = Lock(gfn);
            try
            {
                if (PageEntry.State(e) == PageState.Private)
                {
                    journal.Drop(gfn); // in the guest after all (put back before the record of that was written)
                    continue;
                }
                var page = journal.Read(gfn);
                switch (page.Kind)
                {
                    case JournalKind.Zero:
                        e = PageEntry.With(e, PageState.Zero, 0);
                        break;
                    case JournalKind.Uniform:
                        e = PageEntry.WithPayload(e, PageState.Uniform, page.Word);
                        break;
                    case JournalKind.Encoded when Host.Store.TryStore(page.Payload, out ulong handle):
                        e = PageEntry.WithPayload(e, PageState.Compressed, handle);
                        break;
                    default:
                        e = QemuInstall(gfn, PageEntry.With(e, PageState.Private, FrameFromJournal(gfn, page)));
                        break;
                }
                QemuRecoveredPages++;
            }
            finally
            {
                Unlock(gfn, e);
            }
        }
    }

    /// <summary>
    /// Answers one fault of the guest on page <paramref name="gfn"/>, under its lock, and wakes the guest: a missing page
    /// is rebuilt and installed (Zero and untouched pages get a zero page); a write-protect fault (the guest wrote a page
    /// a pass was deciding on) lifts the protection, and marks the page written.
    /// </summary>
    private void ServeQemuFault(long gfn, bool writeProtect, long started)
    {
        var ram = Qemu!;
        ulong address = ram.Link.AddressOf(gfn);
        ulong e = Lock(gfn);
        try
        {
            if (writeProtect)
            {
                // After the pass that protected it: the page is still here (protection lifted, the write goes on) or was
                // taken out (the guest's retry faults as missing). Either way the guest is woken.
                ram.Link.Faults.WriteProtect(address, Userfaultfd.PageSize, on: false);
                if (PageEntry.State(e) == PageState.Private) e |= PageEntry.Referenced | PageEntry.Modified;
                return;
            }
            // A page the engine took out came back: the guest uses it (the first touch of a page never taken is not that).
            if (PageEntry.State(e) != PageState.Private && !PageEntry.IsUntouched(e) && _qemuRefaults![gfn] < 3) _qemuRefaults[gfn]++;
            switch (PageEntry.State(e))
            {
                case PageState.Private when !Host.Frames.IsExternal(PageEntry.Frame(e)):
                    // Rebuilt by an earlier fault whose install failed: the bytes are in a frame of the engine still.
                    e = QemuInstall(gfn, e);
                    break;
                case PageState.Private:
                    // Another vCPU faulted on it too and it is in already (the zero page is refused: woken); or QEMU let
                    // the page go itself (a balloon, free page reporting, a discard), and it reads as zeros, as a page
                    // let go does. Woken without a page it would fault again, for good.
                    // Counted before the guest is woken, so what it tells afterwards finds the count.
                    if (ram.Link.Faults.ZeroPage(address, wake: false))
                    {
                        ram.NoteHoleFilled();
                        e |= PageEntry.Modified;
                    }
                    ram.Link.Faults.Wake(address, Userfaultfd.PageSize);
                    break;
                case PageState.Zero:
                {
                    ram.Link.Faults.ZeroPage(address, wake: false);
                    DropThenWake(ram, gfn, address);
                    uint frame = ram.FrameOf(gfn);
                    Host.Frames.TakeExternal(frame);
                    ram.NoteGuestHas(gfn);
                    e = PageEntry.With(e, PageState.Private, frame);
                    Host.Faults.Record(FaultKind.ZeroFill, Stopwatch.GetTimestamp() - started);
                    break;
                }
                case PageState.Uniform:
                {
                    e = WithUniformFrame(gfn, e);
                    e = QemuInstall(gfn, e);
                    Host.Faults.Record(FaultKind.PatternFill, Stopwatch.GetTimestamp() - started);
                    break;
                }
                // Each rebuild lets go of what held the page (its blob, reference or swap slot) and returns it Private in a
                // frame of the engine; the entry says so before the install, so that an install that fails (QEMU exited)
                // leaves the page in that frame, never naming what was let go (which DropHeld would let go twice).
                case PageState.Shared:
                    e = BreakSharing(gfn, e, copy: true);
                    e = QemuInstall(gfn, e);
                    Host.Faults.Record(FaultKind.CopyOnWrite, Stopwatch.GetTimestamp() - started);
                    break;
                case PageState.Patched:
                case PageState.Compressed:
                {
                    var kind = PageEntry.State(e) == PageState.Patched ? FaultKind.Unpatch : FaultKind.Decompress;
                    e = RebuildOrFromJournal(gfn, e);
                    e = QemuInstall(gfn, e);
                    // Timed from the fault's message to the guest woken, like every fault of a QEMU guest.
                    Host.Faults.Record(kind, Stopwatch.GetTimestamp() - started);
                    break;
                }
                case PageState.Swapped:
                    e = RebuildOrFromJournal(gfn, e); // SwapIn counts and times the read
                    e = QemuInstall(gfn, e);
                    break;
                default:
                    throw UnsupportedState(gfn, e);
            }
            e |= PageEntry.Referenced;
        }
        finally
        {
            Unlock(gfn, e);
        }
    }

    /// <summary>
    /// Puts a locked page that a rebuild left Private on a frame of the engine into the guest (UFFDIO_COPY; whoever waits
    /// on it is woken once the crash journal's drop record is written), frees the engine's frame, and returns the entry on the guest's own frame. Should the guest
    /// have the page already (QEMU wrote it through a mapping the engine does not watch), the guest's bytes stand.
    /// </summary>
    internal ulong QemuInstall(long gfn, ulong e)
    {
        var ram = Qemu!;
        uint frame = PageEntry.Frame(e);
        if (Host.Frames.IsExternal(frame)) return e;
        ulong address = ram.Link.AddressOf(gfn);
        bool installed = ram.Link.Faults.Copy(address, Host.Frames.Span(frame), wake: false);
        DropThenWake(ram, gfn, address);
        uint own = ram.FrameOf(gfn);
        if (!installed)
        {
            // Refused: the page is there, and the guest's bytes stand. They are read through the memfd, not the engine's
            // mapping: QEMU may let the page go again meanwhile, and the entry still says the engine holds it.
            Span<byte> present = stackalloc byte[Userfaultfd.PageSize];
            ram.Link.ReadPage(gfn, present);
            if (!present.SequenceEqual(Host.Frames.Span(frame))) ram.NoteInstallConflict(gfn, Host.Frames.Span(frame), present);
        }
        Host.Frames.Free(frame);
        Host.Frames.TakeExternal(own);
        ram.NoteGuestHas(gfn);
        return PageEntry.With(e, PageState.Private, own);
    }

    /// <summary>
    /// After page <paramref name="gfn"/> was installed without waking its faulting threads (DONTWAKE): its crash journal
    /// drop record, then the wake. A crash before the drop leaves a record of a page the guest has (the guest's page
    /// stands); woken only once it is written, the guest cannot use the page, let it go and have QEMU discard it for a
    /// killed engine's journal to resurrect (see QemuJournal.Drop). Woken whatever became of the record: nobody waits for good.
    /// </summary>
    private static void DropThenWake(QemuRam ram, long gfn, ulong address)
    {
        try
        {
            ram.Journal.Drop(gfn);
        }
        finally
        {
            ram.Link.Faults.Wake(address, Userfaultfd.PageSize);
        }
    }

    /// <summary>Whether the guest's link can write-protect its pages: without it a pass leaves every private page alone.</summary>
    internal bool QemuCanProtect => Qemu!.Link.WriteProtect;

    /// <summary>Write-protects a locked Private page of the guest before a pass reads it; true when it did.</summary>
    internal bool QemuProtect(long gfn)
    {
        var ram = Qemu!;
        if (!QemuCanProtect) return false;
        ram.Link.Faults.WriteProtect(ram.Link.AddressOf(gfn), Userfaultfd.PageSize, on: true);
        return true;
    }

    /// <summary>Lifts the protection of a locked page that stays the guest's (and wakes a write that waited on it).</summary>
    internal void QemuUnprotect(long gfn)
    {
        var ram = Qemu!;
        ram.Link.Faults.WriteProtect(ram.Link.AddressOf(gfn), Userfaultfd.PageSize, on: false);
    }

    /// <summary>Lifts a locked page's protection, unless the guest is gone (then its page has no protection left to lift).</summary>
    internal void QemuUnprotectIfAlive(long gfn)
    {
        try
        {
            QemuUnprotect(gfn);
        }
        catch (DEException)
        {
            // QEMU exited.
        }
    }

    /// <summary>
    /// Unlocks a page a pass protected (<paramref name="guarded"/>: <see cref="QemuProtect"/> said so), lifting the
    /// protection first when the page stays the guest's. The page is unlocked even when lifting fails (QEMU exited):
    /// a lock left held would stop every later pass, fault and the domain's removal at this page for good.
    /// </summary>
    internal void QemuUnlock(long gfn, ulong e, bool guarded)
    {
        try
        {
            if (guarded && PageEntry.State(e) == PageState.Private) QemuUnprotect(gfn);
        }
        finally
        {
            Unlock(gfn, e);
        }
    }

    /// <summary>
    /// The clock's view of a locked Private page of the guest: written and referenced when its content changed since
    /// the last sweep (its hash is kept in its frame's seen-content slot, which only external frames have).
    /// </summary>
    internal ulong QemuNoteWrites(ulong e)
    {
        uint frame = PageEntry.Frame(e);
        // A page rebuilt in a frame of the engine (an install the kernel refused) is not the guest's to write.
        if (!Host.Frames.IsExternal(frame)) return e;
        ulong hash = Sharing.PageHasher.Hash(Host.Frames.Span(frame)) | 1; // never 0: 0 is "not seen yet"
        ref ulong seen = ref Host.Frames.SeenHash(frame);
        if (seen != 0 && seen != hash) e |= PageEntry.Referenced | PageEntry.Modified;
        seen = hash;
        return e;
    }

    /// <summary>
    /// For diagnosis: the pages whose state disagrees with the guest's memory, each checked under its lock (busy pages are
    /// skipped): a page the engine says the guest has (Private on the guest's frame) that is a hole in the memfd, and a page
    /// the engine holds (any other state) that the memfd has, with whether that page is all zeros. Either is a bug: the
    /// first makes the guest's next touch find zeros once nothing pages the guest, the second lets the guest read bytes
    /// the engine did not put there.
    /// </summary>
    internal string QemuConsistency(int examples = 4)
    {
        var ram = Qemu!;
        var present = new bool[PageCount];
        foreach (var (first, pages) in ram.PresentRuns())
            for (long g = first; g < first + pages && g < PageCount; g++) present[g] = true;
        long holes = 0, held = 0, heldZeros = 0;
        var seen = new List<string>();
        var bytes = new byte[Userfaultfd.PageSize];
        // The guest has the page: Private on its own (external) frame.
        bool GuestHas(ulong entry) => PageEntry.State(entry) == PageState.Private && Host.Frames.IsExternal(PageEntry.Frame(entry));
        for (long gfn = 0; gfn < PageCount && !IsRemoved; gfn++)
        {
            if (present[gfn] == GuestHas(PeekEntry(gfn)) || !TryLock(gfn, out ulong e)) continue;
            try
            {
                bool guestOwn = GuestHas(e); // again under the lock: the peek may be stale
                bool isPresent = ram.IsPresent(gfn);
                if (guestOwn == isPresent) continue;
                if (guestOwn)
                {
                    holes++;
                    if (seen.Count < examples) seen.Add($"gfn {gfn} Private but a hole");
                }
                else
                {
                    // Through the memfd: QEMU may let the page go between the check and the read.
                    ram.Link.ReadPage(gfn, bytes);
                    bool zeros = !bytes.ContainsAnyExcept((byte)0);
                    held++;
                    if (zeros) heldZeros++;
                    if (seen.Count < examples) seen.Add($"gfn {gfn} {PageEntry.State(e)} but present{(zeros ? " (zeros)" : "")}");
                }
            }
            finally
            {
                Unlock(gfn, e);
            }
        }
        return holes + held == 0
            ? "every page's state agrees with the guest's memory"
            : $"{holes} pages the engine says the guest has are holes, {held} pages the engine holds are in the guest's memory ({heldZeros} of them zeros): " +
              string.Join("; ", seen);
    }

    /// <summary>
    /// Makes the guest's again every page whose take-out the crash journal refused (a full disk, a journal closed): the
    /// page stayed in the guest's memfd while the operation that let it go recorded it as held (Zero, Shared, Compressed,
    /// ...). Each becomes Private on its own frame, written as far as the clock knows, and what the engine made of it is
    /// let go; the guest's bytes are the page (a write since went through a write-protect fault). Called after every pass
    /// and reclaim (<see cref="Hosting.DEHost.MaintainJournals"/>). Returns how many it made the guest's.
    /// </summary>
    internal int QemuReconcile()
    {
        var ram = Qemu;
        if (ram is null) return 0;
        int made = 0;
        while (ram.TryTakeKeptInGuest(out long gfn))
        {
            if (IsRemoved) continue;
            ulong e = Lock(gfn);
            try
            {
                // Removed meanwhile (its removal handles each page under its lock, as this does), the guest's already, or
                // taken out after all by a later operation (the page is a hole): nothing to mend.
                if (IsRemoved || (PageEntry.State(e) == PageState.Private && Host.Frames.IsExternal(PageEntry.Frame(e))) || !ram.IsPresent(gfn)) continue;
                DropHeld(e);
                uint frame = ram.FrameOf(gfn);
                Host.Frames.TakeExternal(frame);
                // Written as far as the clock knows; "does not compress" was said of the held copy, not of the guest's page.
                e = (PageEntry.With(e, PageState.Private, frame) | PageEntry.Referenced | PageEntry.Modified) & ~PageEntry.Incompressible;
                ram.NoteKeptInGuest();
                made++;
                QemuUnprotectIfAlive(gfn);
            }
            finally
            {
                Unlock(gfn, e);
            }
        }
        return made;
    }

    /// <summary>
    /// Writes page <paramref name="gfn"/> to the crash journal again from what the engine holds of it (decoded as
    /// <see cref="PeekPage"/> does), after a compaction found its record changed on the disk and left it out
    /// (QemuJournal.TakeDamaged): without a record the page would be lost to the next engine should this one die. Nothing to
    /// write when the guest has the page (Private on its own frame: no record was due). False when the engine's own copy
    /// cannot be read either, or the journal refuses the record (counted and said in the journal's failures).
    /// </summary>
    internal bool QemuRejournal(long gfn)
    {
        var ram = Qemu;
        if (ram is null || IsRemoved || (ulong)gfn >= (ulong)PageCount) return false;
        Span<byte> page = stackalloc byte[Memory.PageGeometry.PageSize];
        ulong e = Lock(gfn);
        try
        {
            if (IsRemoved) return false;
            if (PageEntry.State(e) == PageState.Private && Host.Frames.IsExternal(PageEntry.Frame(e))) return true;
            return PeekLocked(gfn, e, page) && ram.Journal.Put(gfn, page);
        }
        finally
        {
            Unlock(gfn, e);
        }
    }

    /// <summary>Refuses to take pages out of a guest whose kernel gives no write-protect faults on shared memory.</summary>
    internal void ThrowIfQemuCannotEvict()
    {
        if (Qemu is { Link.WriteProtect: false })
            throw new DEException("QemuWriteProtectUnavailable", DEErrorKind.NotImplemented,
                $"This kernel gives no write-protect faults on shared memory (Linux 5.19 and later do): pages cannot be taken " +
                $"out of QEMU domain '{Name}' without risking a write of the guest.", Name);
    }

    /// <summary>Refuses what QEMU domains cannot do yet (see the remarks).</summary>
    internal void ThrowIfQemu(string what)
    {
        if (Qemu is not null)
            throw new DEException("QemuMechanismNotYetSupported", DEErrorKind.NotImplemented,
                $"{what} is not yet supported on QEMU domain '{Name}': the guest owns its memory; the engine takes pages out " +
                "of it and puts them back, but does not write into it (docs/QEMU.md).", Name);
    }

    /// <summary>
    /// Hands the guest back: every page the engine holds goes back into it (a zero page stays a hole, which reads as
    /// zeros once the library lets go), its frames are forgotten (never punched), the library unregisters the RAM, and
    /// the RAM is unmapped. Should QEMU have exited (its memory gone with it), what the engine holds is let go instead,
    /// so a domain whose guest died is removed cleanly.
    /// </summary>
    /// <remarks>
    /// A page the engine cannot rebuild from its own copy (a blob that fails its checksum, a swap slot that cannot be
    /// read, no frame to rebuild it in) is put back from the crash journal's copy, written when the page was taken out,
    /// and the engine's copy is let go; the other pages go on being put back either way. Should the journal's copy fail
    /// too, the page keeps its journal record, the library is not told to unregister the RAM (its holes would then read
    /// as zeros), and the call ends with "QemuPagesNotReturned" naming the pages: the guest's faults on them wait, as
    /// after an engine crash, for the next engine attached to it, which serves them from the journal.
    /// </remarks>
    private void ReleaseQemu()
    {
        var ram = Qemu!;
        // A journal compaction whose deposit waits for a stopped QEMU would hold the journal, which every page put back
        // below drops from: it gives up now.
        ram.Link.BeginLeaving();
        // No fault is served from here on: the guest's faults wait until their page is put back (UFFDIO_COPY wakes them)
        // or the library unregisters the RAM (which wakes the rest, to find zeros in the holes of zero pages).
        ram.StopFaults();
        // Set once QEMU turns out to have exited: its memory is gone, so what the engine holds is only let go.
        bool gone = false;
        var notReturned = new List<long>();
        DEException? firstFailure = null;
        for (long gfn = 0; gfn < PageCount; gfn++)
        {
            ulong e = Lock(gfn);
            try
            {
                if (gone)
                {
                    DropHeld(e);
                    continue;
                }
                ulong rebuilt = e;
                try
                {
                    if (PageEntry.State(e) == PageState.Zero && ram.Journal.IsHeld(gfn))
                    {
                        // A page the journal holds that this engine does not: one an attach that failed part-way through
                        // its recovery had not reached yet (a zero page's record is Zero, which stays a hole). Its content is
                        // the journal's; put back from there, not left a hole that would read as zeros.
                        if (!TryInstallFromJournal(gfn, ram))
                        {
                            notReturned.Add(gfn);
                            firstFailure ??= new DEException("QemuJournalRecordUnusable", DEErrorKind.ReadError,
                                $"The crash journal record of gfn {gfn}, a page this engine had not yet taken over, could not be used.", Name);
                        }
                        continue;
                    }
                    rebuilt = PageEntry.State(e) switch
                    {
                        PageState.Uniform => WithUniformFrame(gfn, e),
                        PageState.Shared => BreakSharing(gfn, e, copy: true),
                        PageState.Patched or PageState.Compressed or PageState.Swapped => BringIn(gfn, e, readBack: true, out _),
                        _ => e,
                    };
                    e = PageEntry.State(rebuilt) == PageState.Private ? QemuInstall(gfn, rebuilt) : rebuilt;
                }
                catch (DEException ex) when (ex.ErrorId == "QemuGuestExited")
                {
                    gone = true;
                    DropHeld(rebuilt); // rebuilt in a frame of the engine (or not yet), for nobody: let go
                    continue;
                }
                catch (DEException ex)
                {
                    firstFailure ??= ex;
                    DropHeld(rebuilt); // the engine's copy, or the frame it was being rebuilt in
                    e = 0;
                    try
                    {
                        if (!TryInstallFromJournal(gfn, ram)) notReturned.Add(gfn);
                    }
                    catch (DEException exited) when (exited.ErrorId == "QemuGuestExited")
                    {
                        gone = true; // nothing to put back any more: the rest is only let go
                    }
                    continue;
                }
                if (PageEntry.State(e) == PageState.Private) Host.Frames.ForgetExternal(PageEntry.Frame(e));
            }
            finally
            {
                Unlock(gfn, 0);
            }
        }
        if (notReturned.Count > 0)
        {
            ram.Dispose(); // the link closes without unregistering: to the library, as if this engine had died
            string pages = string.Join(", ", notReturned.Take(8)) + (notReturned.Count > 8 ? $" and {notReturned.Count - 8} more" : "");
            throw new DEException("QemuPagesNotReturned", DEErrorKind.ReadError,
                $"{notReturned.Count} page(s) of domain '{Name}' could not be put back into the guest (gfn {pages}): {firstFailure!.Message} " +
                "Nor could the crash journal's copy. The guest's accesses to them wait for the next engine attached to it " +
                "(New-DEDomain -QemuSocket), which serves them from the journal.", Name);
        }
        try
        {
            // The library unregisters the guest's RAM: its holes fill on touch again, with no engine.
            ram.Link.Detach();
        }
        catch (DEException)
        {
            // QEMU is gone (or went away meanwhile): nothing waits on this engine.
        }
        ram.Dispose();
    }

    /// <summary>A copy of a page the engine holds that cannot be read back: a stored blob or swap slot damaged, a swap read failed.</summary>
    private static bool IsDamage(DEException ex) => ex.ErrorId is "PageIntegrityError" or "SwapIntegrityError" or "SwapReadError";

    /// <summary>
    /// A locked Patched, Compressed or Swapped page rebuilt in a frame of the engine for a fault; from the crash journal when
    /// the engine's own copy is damaged (<see cref="TryRebuildFromJournal"/>), which otherwise is the fault's error.
    /// </summary>
    private ulong RebuildOrFromJournal(long gfn, ulong e)
    {
        try
        {
            return PageEntry.State(e) == PageState.Swapped ? BringIn(gfn, e, readBack: true, out _) : Rebuild(gfn, e);
        }
        catch (DEException ex) when (IsDamage(ex))
        {
            if (!TryRebuildFromJournal(gfn, ref e, ex)) throw;
            return e;
        }
    }

    /// <summary>
    /// A fault on a locked page whose copy in the engine is damaged (<paramref name="damage"/>): when the crash journal
    /// holds the page (it does for every page taken out of the guest), the page is rebuilt from it in a frame of the
    /// engine, the damaged copy is let go, and <paramref name="e"/> says Private on that frame (true): the fault is
    /// served, instead of its guest thread waiting for good. False when the journal cannot give it.
    /// </summary>
    private bool TryRebuildFromJournal(long gfn, ref ulong e, DEException damage)
    {
        var ram = Qemu!;
        uint frame;
        try
        {
            if (!ram.Journal.IsHeld(gfn)) return false;
            var page = ram.Journal.Read(gfn);
            if (page.Kind == JournalKind.Zero)
            {
                frame = AllocateFrame(gfn);
                Host.Frames.Span(frame).Clear();
            }
            else frame = FrameFromJournal(gfn, page);
        }
        catch (Exception ex) when (ex is DEException or IOException or InvalidOperationException)
        {
            return false;
        }
        DropHeld(e); // the damaged blob or slot
        e = PageEntry.With(e, PageState.Private, frame);
        ram.NoteRepairedFromJournal(gfn, damage);
        return true;
    }

    /// <summary>
    /// Puts page <paramref name="gfn"/> back into the guest from its crash journal record (page lock held; the engine's
    /// own copy already let go): a zero page stays a hole; any other is rebuilt in a frame of the engine, checked,
    /// installed, and the frame freed. False when there is no record or it cannot be used; QemuGuestExited (the guest is
    /// gone, so there is nothing to put back) is thrown on.
    /// </summary>
    private bool TryInstallFromJournal(long gfn, QemuRam ram)
    {
        uint frame = 0;
        try
        {
            if (!ram.Journal.IsHeld(gfn)) return false;
            var page = ram.Journal.Read(gfn);
            if (page.Kind == JournalKind.Zero) return true;
            frame = FrameFromJournal(gfn, page);
            ulong e = QemuInstall(gfn, PageEntry.With(0, PageState.Private, frame));
            frame = 0; // installed: QemuInstall freed it
            Host.Frames.ForgetExternal(PageEntry.Frame(e)); // the guest's own frame, forgotten as every page put back is
            return true;
        }
        catch (Exception ex) when (ex is DEException or IOException or InvalidOperationException)
        {
            if (frame != 0) Host.Frames.Free(frame);
            if (ex is DEException { ErrorId: "QemuGuestExited" }) throw;
            return false;
        }
    }

    /// <summary>
    /// Page <paramref name="gfn"/> rebuilt from its crash journal record (one word, the page itself, or a blob that is
    /// decoded and checked) in a new frame of the engine; the frame is freed again if that fails.
    /// </summary>
    private uint FrameFromJournal(long gfn, JournalPage page)
    {
        uint frame = AllocateFrame(gfn);
        try
        {
            var bytes = Host.Frames.Span(frame);
            switch (page.Kind)
            {
                case JournalKind.Uniform:
                    FillUniform(bytes, page.Word);
                    break;
                case JournalKind.Raw:
                    page.Payload.CopyTo(bytes);
                    break;
                default:
                    Decompress(gfn, page.Payload, bytes, "its crash journal record");
                    CheckRebuilt(gfn, bytes, page.Payload, "the bytes rebuilt from its crash journal record");
                    break;
            }
            return frame;
        }
        catch
        {
            Host.Frames.Free(frame);
            throw;
        }
    }

    /// <summary>A locked Uniform page rebuilt in a frame of the engine.</summary>
    private ulong WithUniformFrame(long gfn, ulong e)
    {
        uint frame = AllocateFrame(gfn);
        FillUniform(Host.Frames.Span(frame), (uint)PageEntry.Payload(e));
        return PageEntry.With(e, PageState.Private, frame);
    }
}
