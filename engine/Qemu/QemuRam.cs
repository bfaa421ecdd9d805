using DifferenceEngine.Memory;

namespace DifferenceEngine.Qemu;

/// <summary>
/// A running QEMU's guest RAM as frames of the host's pool: each memfd region mapped read-only into the engine and made
/// a range of external frames (<see cref="FramePool.AddExternal"/>), so a page the guest has is a Private page whose
/// frame is the guest's own memory, read in place by every pass; a page let go (its frame freed) is punched out of the
/// memfd. The mappings are guarded (<see cref="UnguardedReason"/>): a read of a hole through them is answered by the guard
/// thread (<see cref="StartGuard"/>) instead of allocating the page as zeros. The fault thread hands each of the guest's faults to its domain (<see cref="Domains.Domain"/>), which serves it
/// under the page's lock like any other access.
/// </summary>
internal sealed unsafe class QemuRam : IDisposable
{
    private readonly FramePool frames;
    private readonly Mapped[] mapped;
    private readonly int stopFd;
    private readonly Userfaultfd? readGuard;
    private readonly System.Collections.Concurrent.ConcurrentQueue<long> keptInGuest = new();
    private long reconciled;
    private Thread? faultThread;
    private Thread? guardThread;
    private int guardStopFd = -1;
    private long holesFilled;
    // Per gfn: the engine punched the page out of the memfd (or held it at attach) and it is not the guest's again yet
    // (NoteGuestHas). Native memory: the native guard reads it.
    private readonly ulong* punched;
    private readonly long punchedWords;
    private NativeGuard? nativeGuard;
    private Exception? faultFailure;
    private long failedFaults;
    private bool disposed;

    private sealed class Mapped(QemuLink link, QemuJournal journal, QemuRegion region, byte* data,
        System.Collections.Concurrent.ConcurrentQueue<long> kept, ulong* punched) : FramePool.IExternalOwner
    {
        public readonly QemuRegion Region = region;
        public readonly byte* Data = data;
        public uint FirstFrame;

        // A frame of the region is no longer the guest's page: the page leaves QEMU's memory, once the crash journal has
        // it as the guest last wrote it (the page is write-protected). Should the journal fail, the page stays in the guest:
        // nothing is lost, nothing saved (counted in the journal's failures), and its domain makes it the guest's again
        // once the operation that let it go is done (Domain.QemuReconcile: its entry says held until then).
        public void Released(long index)
        {
            long gfn = Region.FirstGfn + index;
            if (journal.Put(gfn, new ReadOnlySpan<byte>(Data + index * Userfaultfd.PageSize, Userfaultfd.PageSize)))
            {
                // Marked before the punch: from then until the page is the guest's again, a read of its hole by the engine
                // is a bug of the engine (the read guard stops the process), never a page QEMU let go.
                Interlocked.Or(ref punched[gfn >> 6], 1UL << (int)(gfn & 63));
                link.Punch(gfn);
            }
            else kept.Enqueue(gfn);
        }
    }

    public QemuRam(QemuLink link, FramePool frames, QemuJournal journal)
    {
        Link = link;
        Journal = journal;
        this.frames = frames;
        mapped = new Mapped[link.Regions.Count];
        stopFd = LinuxNative.EventFd(0, 0x80000 /* EFD_CLOEXEC */);
        if (stopFd < 0)
            throw new DEException("QemuLinkFailed", DEErrorKind.ConnectionError, $"eventfd failed: {LinuxNative.Describe(LinuxNative.Errno)}.", null);
        punchedWords = (link.PageCount + 63) / 64;
        punched = (ulong*)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)punchedWords, sizeof(ulong));
        readGuard = Userfaultfd.CreateReadGuard(out string? unguarded);
        try
        {
            for (int i = 0; i < mapped.Length; i++)
            {
                var region = link.Regions[i];
                mapped[i] = new Mapped(link, journal, region, link.MapRegion(region), keptInGuest, punched);
                unguarded ??= readGuard!.GuardReads(mapped[i].Data, (ulong)region.Length);
                mapped[i].FirstFrame = frames.AddExternal(mapped[i].Data, region.PageCount, mapped[i]);
            }
            UnguardedReason = unguarded;
        }
        catch
        {
            Unmap();
            readGuard?.Dispose();
            LinuxNative.Close(stopFd);
            System.Runtime.InteropServices.NativeMemory.Free(punched);
            journal.Dispose();
            throw;
        }
    }

    public QemuLink Link { get; }

    /// <summary>
    /// Why the engine's own mappings of the guest's RAM are not guarded against reads of holes, or null when they are.
    /// Guarded, a read of a page the engine took out (by anyone reading this process's memory: /proc/PID/mem,
    /// process_vm_readv, a debugger) fails, where unguarded it would allocate the page in the memfd as zeros, and the
    /// guest would find zeros where the engine holds its page (docs/QEMU.md).
    /// </summary>
    public string? UnguardedReason { get; }

    /// <summary>The crash journal: every page taken out of the guest, for a next engine should this one die.</summary>
    public QemuJournal Journal { get; }

    /// <summary>The last fault that could not be served, or what stopped the fault thread (the guest's faults then wait).</summary>
    public Exception? FaultFailure => Volatile.Read(ref faultFailure);

    private long installConflicts;
    private string? lastInstallConflict;

    /// <summary>
    /// Pages the engine put back into the guest but found there already with other bytes (UFFDIO_COPY refused: the page
    /// was present): the guest's stood. Only a write through a mapping the engine does not watch, or a read of the hole
    /// through the engine's own mapping (which makes the memfd allocate a zero page), puts a page there; the second would
    /// be a bug of the engine. Counted, with the last one described, to tell the two apart (session 14: a guest once found
    /// a page of zeros, under heavy load, without this evidence).
    /// </summary>
    public long InstallConflicts => Interlocked.Read(ref installConflicts);
    public string? LastInstallConflict => Volatile.Read(ref lastInstallConflict);

    internal void NoteInstallConflict(long gfn, ReadOnlySpan<byte> held, ReadOnlySpan<byte> present)
    {
        Interlocked.Increment(ref installConflicts);
        bool zeros = !present.ContainsAnyExcept((byte)0);
        Volatile.Write(ref lastInstallConflict,
            $"gfn {gfn}: the guest had {(zeros ? "a page of zeros" : "other bytes")}, the engine's copy differed at byte {held.CommonPrefixLength(present)}");
    }

    /// <summary>
    /// The next page whose take-out the crash journal refused, so it stayed in the guest while its entry says the engine
    /// holds it (<see cref="Domains.Domain.QemuReconcile"/> makes it the guest's again); false when there is none.
    /// </summary>
    internal bool TryTakeKeptInGuest(out long gfn) => keptInGuest.TryDequeue(out gfn);

    /// <summary>Pages made the guest's again after the journal refused their take-out (see <see cref="TryTakeKeptInGuest"/>).</summary>
    public long KeptInGuest => Interlocked.Read(ref reconciled);

    internal void NoteKeptInGuest() => Interlocked.Increment(ref reconciled);

    private long faultsRead;

    /// <summary>Fault messages read from the guest, counted before each is served (tests: a fault is in the engine's hands).</summary>
    internal long FaultsRead => Interlocked.Read(ref faultsRead);

    /// <summary>Faults that could not be served (their guest threads wait).</summary>
    public long FailedFaults => Interlocked.Read(ref failedFaults);

    private long repairedFromJournal;
    private string? lastRepair;

    /// <summary>
    /// Faults on pages whose copy in the engine was damaged (a stored blob or swap slot that failed its checksum, a swap
    /// read that failed), served from the crash journal's copy instead; the last one described.
    /// </summary>
    public long RepairedFromJournal => Interlocked.Read(ref repairedFromJournal);
    public string? LastRepair => Volatile.Read(ref lastRepair);

    internal void NoteRepairedFromJournal(long gfn, DEException damage)
    {
        Interlocked.Increment(ref repairedFromJournal);
        Volatile.Write(ref lastRepair, $"gfn {gfn}: {damage.ErrorId}: {damage.Message}");
    }

    /// <summary>The external frame that is guest page <paramref name="gfn"/>.</summary>
    public uint FrameOf(long gfn)
    {
        foreach (var m in mapped)
            if (gfn >= m.Region.FirstGfn && gfn < m.Region.FirstGfn + m.Region.PageCount)
                return m.FirstFrame + (uint)(gfn - m.Region.FirstGfn);
        throw new ArgumentOutOfRangeException(nameof(gfn));
    }

    /// <summary>Whether the memfd has guest page <paramref name="gfn"/> (SEEK_DATA from it lands on it).</summary>
    public bool IsPresent(long gfn) => Link.IsPresent(gfn);

    /// <summary>The pages the guest has now (runs of gfns), from the memfds.</summary>
    public IEnumerable<(long Gfn, long Pages)> PresentRuns() => Link.Regions.SelectMany(Link.PresentRuns);

    /// <summary>
    /// Starts serving the guest's faults: <paramref name="serve"/> gets the gfn and whether it is a write-protect fault,
    /// and must answer it (install the page, or lift the protection) so the guest is woken.
    /// </summary>
    public void StartFaults(Action<long, bool, long> serve)
    {
        // Faults an earlier engine read and never answered wait still: woken, they fault again and reach this one.
        if (Link.Reattached)
            foreach (var region in Link.Regions) Link.Faults.Wake(region.HostAddress, region.Length);
        faultThread = new Thread(() => ServeFaults(serve)) { IsBackground = true, Name = $"de-qemu-faults-{Link.Pid}" };
        faultThread.Start();
    }

    private void ServeFaults(Action<long, bool, long> serve)
    {
        var messages = new Userfaultfd.Message[32];
        try
        {
            while (Link.Faults.Wait(stopFd))
            {
                int n = Link.Faults.ReadMessages(messages);
                for (int i = 0; i < n; i++)
                {
                    if (messages[i].Event != Userfaultfd.EventPageFault) continue;
                    long started = System.Diagnostics.Stopwatch.GetTimestamp();
                    long gfn = Link.GfnOf(messages[i].Address & ~(ulong)(Userfaultfd.PageSize - 1));
                    if (gfn < 0) continue;
                    Interlocked.Increment(ref faultsRead);
                    try
                    {
                        serve(gfn, (messages[i].Flags & Userfaultfd.PageFaultFlagWriteProtect) != 0, started);
                    }
                    catch (Exception e) when (e is DEException or IOException)
                    {
                        // This page could not be served (no memory under the limit, a page that fails its checksum):
                        // its guest thread waits on it; the others are served on.
                        Interlocked.Increment(ref failedFaults);
                        Volatile.Write(ref faultFailure, e);
                    }
                }
            }
        }
        catch (Exception e)
        {
            // The fault thread itself stopped: every later fault of the guest waits. Counted as a failed fault, so that
            // Get-DEHostStats' PagerFailures shows it with the error.
            Interlocked.Increment(ref failedFaults);
            Volatile.Write(ref faultFailure, e);
        }
    }

    /// <summary>
    /// Pages the guest had (Private on its own frame) that were found missing from its memory, and got a zero page at
    /// their next read, the guest's or the engine's: QEMU let them go itself (a virtio-balloon, free page reporting,
    /// virtio-mem, a discard), and a page let go reads as zeros. The next passes take such a page out as a zero page.
    /// </summary>
    public long HolesFilled => Interlocked.Read(ref holesFilled) + (nativeGuard?.Filled ?? 0);

    internal void NoteHoleFilled() => Interlocked.Increment(ref holesFilled);

    /// <summary>Page <paramref name="gfn"/> is the guest's again (installed, or given a zero page): a hole there later is QEMU's doing.</summary>
    internal void NoteGuestHas(long gfn)
    {
        if (gfn >= 0 && gfn >> 6 < punchedWords) Interlocked.And(ref punched[gfn >> 6], ~(1UL << (int)(gfn & 63)));
    }

    private bool PunchedByEngine(long gfn) => gfn >= 0 && gfn >> 6 < punchedWords && (Volatile.Read(ref punched[gfn >> 6]) & (1UL << (int)(gfn & 63))) != 0;

    /// <summary>Whether the read guard is served by the native thread (libdeguard.so), not a managed one; and why not.</summary>
    public bool GuardIsNative => nativeGuard is not null;
    public string? ManagedGuardReason { get; private set; }

    /// <summary>
    /// Serves the engine's own reads of holes in its mappings (the read guard): where <paramref name="guestHas"/> says the
    /// guest has the page (QEMU let it go itself), a zero page is installed, as any reader of a discarded page sees; where
    /// the engine holds the page, the read is a bug of the engine, and the process stops with the reason rather than read
    /// zeros or wait for good. Must not take a page lock (the reading thread may hold it).
    /// </summary>
    public void StartGuard(Func<long, bool> guestHas)
    {
        if (readGuard is null || guardThread is not null || nativeGuard is not null) return;
        guardStopFd = LinuxNative.EventFd(0, 0x80000 /* EFD_CLOEXEC */);
        if (guardStopFd < 0)
            throw new DEException("QemuLinkFailed", DEErrorKind.ConnectionError, $"eventfd failed: {LinuxNative.Describe(LinuxNative.Errno)}.", null);
        // Every page the guest does not have now is the engine's (a zero page, untouched, or held by an engine before):
        // marked as punched by the engine until it is the guest's, so a read of its hole stops the process.
        for (long w = 0; w < punchedWords; w++) punched[w] = ulong.MaxValue;
        foreach (var (first, pages) in PresentRuns())
            for (long g = first; g < first + pages; g++) NoteGuestHas(g);
        var regions = mapped.Select(m => new NativeGuard.Region { Start = (ulong)m.Data, Length = (ulong)m.Region.Length, FirstGfn = m.Region.FirstGfn }).ToArray();
        nativeGuard = NativeGuard.TryStart(readGuard.Handle, guardStopFd, regions, punched, Link.PageCount, Link.Pid, out string? why);
        if (nativeGuard is not null) return;
        ManagedGuardReason = why;
        guardThread = new Thread(() => ServeGuard(guestHas)) { IsBackground = true, Name = $"de-qemu-guard-{Link.Pid}" };
        guardThread.Start();
    }

    private void ServeGuard(Func<long, bool> guestHas)
    {
        var messages = new Userfaultfd.Message[16];
        var guard = readGuard!;
        try
        {
            while (guard.Wait(guardStopFd))
            {
                int n = guard.ReadMessages(messages);
                for (int i = 0; i < n; i++)
                {
                    if (messages[i].Event != Userfaultfd.EventPageFault) continue;
                    ulong address = messages[i].Address & ~(ulong)(Userfaultfd.PageSize - 1);
                    long gfn = GfnOfMapped(address);
                    if (gfn >= 0 && !PunchedByEngine(gfn) && guestHas(gfn))
                    {
                        // Counted before the reader is woken, so whoever it is sees the count; filled meanwhile (the
                        // guest faulted on it too): only woken.
                        if (guard.ZeroPage(address, wake: false)) NoteHoleFilled();
                        guard.Wake(address, Userfaultfd.PageSize);
                        continue;
                    }
                    Environment.FailFast(gfn < 0
                        ? $"DifferenceEngine: a read of 0x{address:x} faulted on the guard of QEMU {Link.Pid}'s RAM, outside its mappings."
                        : $"DifferenceEngine: the engine read guest page {gfn} of QEMU {Link.Pid} through its mapping while it holds that page "
                          + "(the page is a hole in the guest's memory): a bug of the engine. Stopping rather than reading zeros; the crash journal keeps the pages it held.");
                }
            }
        }
        catch (Exception e)
        {
            // Reads of holes would wait for good: nothing may go on.
            Environment.FailFast($"DifferenceEngine: the read guard of QEMU {Link.Pid}'s RAM failed: {e.Message}", e);
        }
    }

    /// <summary>The gfn the engine's mapping maps at <paramref name="address"/>, or -1.</summary>
    private long GfnOfMapped(ulong address)
    {
        foreach (var m in mapped)
        {
            ulong start = (ulong)m.Data;
            if (address >= start && address < start + (ulong)m.Region.Length) return m.Region.FirstGfn + (long)((address - start) / Userfaultfd.PageSize);
        }
        return -1;
    }

    private void StopGuard()
    {
        if (nativeGuard is not null)
        {
            ulong one = 1;
            LinuxNative.Write(guardStopFd, &one, 8);
            Interlocked.Add(ref holesFilled, nativeGuard.Filled);
            nativeGuard.Dispose();
            nativeGuard = null;
        }
        else if (!Stop(ref guardThread, guardStopFd)) return;
        LinuxNative.Close(guardStopFd);
        guardStopFd = -1;
    }

    /// <summary>Signals <paramref name="stop"/> and waits for <paramref name="thread"/> to end; false when it was not running.</summary>
    private static bool Stop(ref Thread? thread, int stop)
    {
        if (thread is null) return false;
        ulong one = 1;
        LinuxNative.Write(stop, &one, 8);
        thread.Join();
        thread = null;
        return true;
    }

    /// <summary>
    /// Stops serving faults, once the one being served is answered: the guest's next faults wait (until a page is
    /// installed, the library lets the RAM go, or a next engine attaches).
    /// </summary>
    public void StopFaults() => Stop(ref faultThread, stopFd);

    /// <summary>Stops the fault thread (faults then wait for the next engine), unmaps the RAM and closes the link.</summary>
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        StopFaults();
        LinuxNative.Close(stopFd);
        Unmap();
        StopGuard(); // after the unmap: nothing reads the mappings any more
        readGuard?.Dispose(); // after the unmap: closing it first would leave the mappings unguarded for a moment
        System.Runtime.InteropServices.NativeMemory.Free(punched);
        Journal.Dispose();
        Link.Dispose();
    }

    private void Unmap()
    {
        foreach (var m in mapped)
            if (m is not null) LinuxNative.Munmap(m.Data, (nuint)m.Region.Length);
    }
}
