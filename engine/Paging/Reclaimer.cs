using System.Diagnostics;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Paging;

/// <summary>
/// Hypervisor paging for an overcommitted host: keeps free memory between the policy's low and high
/// watermarks by running an engine pass (share, patch, compress: cheap) and then paging out the
/// coldest pages the clock knows of, C4 before C3; and pages out on demand when a fault needs a frame.
/// </summary>
/// <remarks>
/// A page's frame is freed only after its bytes are written and fdatasync'ed. Victims are only ever
/// try-locked, so reclaim can run from a fault path that holds its own page's lock.
/// Only pages with a frame of their own (Private) are paged out: Shared frames serve several pages
/// and would have to be unshared first, and Patched or Compressed pages hold no frame (their 0.1-2 KiB
/// in the store is not worth a 4 KiB slot and a disk read on access).
/// </remarks>
internal sealed class Reclaimer : IDisposable
{
    /// <summary>Most pages written per fdatasync (1 MiB): amortizes the flush without holding many page locks long.</summary>
    public const int BatchPages = 256;

    // Categories accepted at each level: the hand relaxes only when a whole rotation found nothing colder.
    private static readonly PageCategory[][] Levels =
    [
        [PageCategory.C4],
        [PageCategory.C4, PageCategory.C3],
        [PageCategory.C4, PageCategory.C3, PageCategory.None],
        [PageCategory.C4, PageCategory.C3, PageCategory.None, PageCategory.C2],
        [PageCategory.C4, PageCategory.C3, PageCategory.None, PageCategory.C2, PageCategory.C1],
    ];

    private readonly DEHost _host;
    private readonly object _gate = new();
    private readonly Thread _thread;
    private readonly AutoResetEvent _wake = new(false);
    private volatile bool _stopping;
    private int _domainIndex;
    private long _gfn;
    private int _level;
    private long _levelAtPasses = -1;
    private long _pageOuts, _writeFailures, _runs, _enginePasses;
    private readonly (Domain Domain, long Gfn, ulong Entry, uint Slot)[] _victims = new (Domain, long, ulong, uint)[BatchPages];

    public Reclaimer(DEHost host, SwapSpace swap)
    {
        _host = host;
        Swap = swap;
        _thread = new Thread(BackgroundLoop) { IsBackground = true, Name = $"de-reclaim-{host.Name}" };
        _thread.Start();
    }

    public SwapSpace Swap { get; }
    public LatencyHistogram PageOutLatency { get; } = new();
    public long PageOuts => Interlocked.Read(ref _pageOuts);
    public long WriteFailures => Interlocked.Read(ref _writeFailures);
    public long Runs => Interlocked.Read(ref _runs);
    public long EnginePasses => Interlocked.Read(ref _enginePasses);
    public string? LastWriteError { get; private set; }

    /// <summary>Wakes the background reclaim when free memory fell under the low watermark.</summary>
    public void Poke()
    {
        if (_host.FreeBudgetBytes < _host.Policy.LowWatermark * _host.BudgetBytes) _wake.Set();
    }

    /// <summary>
    /// Pages out one batch for a fault that needs a frame now; false when nothing could be freed. A swap-in
    /// (<paramref name="exchange"/>) may use the slots kept in reserve, since it frees its own slot after.
    /// </summary>
    public bool ReclaimForFault(bool exchange = false)
    {
        _wake.Set();
        return exchange ? PageOutBatch(1, exchange: true, out _) > 0 : PageOutBatch(Math.Max(1, PagesToHighWatermark()), false, out _) > 0;
    }

    /// <summary>
    /// For a swap-in on a full host: pages one victim out into the exchange reserve and hands its frame to the caller
    /// (<paramref name="frame"/>, its reference count 1, its bytes the victim's: the caller overwrites the whole page),
    /// so that no other fault takes the room between the page-out and the swap-in, which would leave the reserve slot
    /// used for nothing. A QEMU guest's victim frame is its guest's memory: freed as usual (<paramref name="frame"/> is
    /// <see cref="NoFrame"/>; the caller takes a frame from the pool). False when nothing could be paged out.
    /// </summary>
    public bool ExchangeForFault(out uint frame)
    {
        _wake.Set();
        return PageOutBatch(1, exchange: true, out frame, handOver: true) > 0;
    }

    /// <summary>No frame handed over (<see cref="ExchangeForFault"/>).</summary>
    public const uint NoFrame = uint.MaxValue;

    /// <summary>Pages to write before free memory is back at the high watermark.</summary>
    private int PagesToHighWatermark()
    {
        double missing = _host.Policy.HighWatermark * _host.BudgetBytes - _host.FreeBudgetBytes;
        return missing <= 0 ? 0 : (int)Math.Min(BatchPages, Math.Ceiling(missing / PageGeometry.PageSize));
    }

    /// <summary>Pages out until free memory reaches the high watermark or nothing more can go; returns pages written.</summary>
    public long ReclaimToHighWatermark()
    {
        long total = 0;
        while (!_stopping)
        {
            int wanted = PagesToHighWatermark();
            if (wanted == 0) break;
            int n = PageOutBatch(wanted, false, out _);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    private void BackgroundLoop()
    {
        while (!_stopping)
        {
            _wake.WaitOne(TimeSpan.FromSeconds(1));
            if (_stopping) break;
            try
            {
                if (_host.FreeBudgetBytes >= _host.Policy.LowWatermark * _host.BudgetBytes) continue;
                Interlocked.Increment(ref _runs);
                // Cheapest first: one engine pass (sharing, patching, compression as each domain allows).
                if (_host.TryReclaimPass()) Interlocked.Increment(ref _enginePasses);
                // Then the coldest memory there is: page groups (pages that stayed untouched long past C4) go to swap
                // a stream at a time; then private pages by the clock.
                PageOutGroups();
                ReclaimToHighWatermark();
                _host.Frames.ReleaseFree();
                _host.MaintainJournals();
            }
            catch (DEException ex) when (ex.ErrorId == "HostDisconnected")
            {
                break;
            }
            catch (Exception ex)
            {
                // A pass or page-out that failed (a QEMU guest that exited, a corrupt page; or a bug) is recorded and the
                // reclaimer goes on: this thread runs in the admin's shell or the embedding program, and an exception
                // escaping it would end that process.
                Record(ex);
            }
        }
    }

    /// <summary>What the last page-out (background or for a fault) or background reclaim run that failed said (null if none did).</summary>
    public string? LastError { get; private set; }

    /// <summary>
    /// Writes up to <paramref name="wanted"/> (at most <see cref="BatchPages"/>) of the coldest Private pages to swap, flushes, and only then
    /// frees their frames and marks them Swapped. A failed write or flush leaves every page as it was.
    /// </summary>
    private int PageOutBatch(int wanted, bool exchange, out uint handed, bool handOver = false)
    {
        try
        {
            return PageOutBatchCore(wanted, exchange, handOver, out handed);
        }
        catch (Exception ex)
        {
            Record(ex);
            throw;
        }
    }

    /// <summary>Notes a failure as the last error (Get-DEHostStats: LastReclaimError); a host disconnected is no failure.</summary>
    private void Record(Exception ex)
    {
        if (ex is DEException { ErrorId: "HostDisconnected" }) return;
        LastError = ex is DEException de ? $"{de.ErrorId}: {de.Message}" : $"{ex.GetType().Name}: {ex.Message}";
    }

    private int PageOutBatchCore(int wanted, bool exchange, bool handOver, out uint handed)
    {
        handed = NoFrame;
        wanted = Math.Clamp(wanted, 1, BatchPages);
        lock (_gate)
        {
            long started = Stopwatch.GetTimestamp();
            if (_host.ScanPasses != _levelAtPasses)
            {
                // The clock moved: start again from the coldest category.
                _level = 0;
                _levelAtPasses = _host.ScanPasses;
            }
            var domains = _host.Domains;
            if (domains.Count == 0) return 0;
            long total = 0;
            for (int i = 0; i < domains.Count; i++) total += domains[i].PageCount; // by index: no enumerator allocated
            var frames = _host.Frames;
            int count = 0;
            long looked = 0;
            bool stop = false;
            // Every page of the batch stays locked (and a guest's write-protected) until it is Swapped or given back: should
            // anything throw on the way (a QEMU that exited), the pages gathered so far are given back as they were, so no
            // page lock is ever left held (a pass waiting on it would wait for good).
            try
            {
                while (count < wanted && !stop)
                {
                    if (looked >= total)
                    {
                        if (_level == Levels.Length - 1) break;
                        _level++;
                        looked = 0;
                    }
                    if (_domainIndex >= domains.Count) _domainIndex = 0;
                    var d = domains[_domainIndex];
                    if (_gfn >= d.PageCount)
                    {
                        _domainIndex++;
                        _gfn = 0;
                        continue;
                    }
                    long gfn = _gfn++;
                    looked++;
                    ulong peek = d.PeekEntry(gfn);
                    if (PageEntry.State(peek) != PageState.Private || !Accepts(PageEntry.Category(peek)) || d.IsRemoved) continue;
                    if (!d.TryLock(gfn, out ulong e)) continue;
                    bool keep;
                    try
                    {
                        keep = !d.IsRemoved && PageEntry.State(e) == PageState.Private && Accepts(PageEntry.Category(e))
                               // A QEMU guest's page is write-protected until it is on disk and punched out (a write waits for that).
                               && (d.Qemu is null || d.QemuProtect(gfn));
                    }
                    catch (DEException ex) when (ex.ErrorId == "QemuGuestExited")
                    {
                        // A guest whose QEMU exited (its domain not removed yet) has nothing to page out: its error is
                        // recorded (LastReclaimError) and the rest of its pages skipped this time round, so that the other
                        // domains' faults and the host's limit are not held hostage by it.
                        d.Unlock(gfn, e);
                        Record(ex);
                        looked += d.PageCount - _gfn;
                        _domainIndex++;
                        _gfn = 0;
                        continue;
                    }
                    catch
                    {
                        d.Unlock(gfn, e); // the batch so far is given back below
                        throw;
                    }
                    if (!keep)
                    {
                        d.Unlock(gfn, e);
                        continue;
                    }
                    if (!Swap.TryReserve(out uint slot, exchange))
                    {
                        GiveBackOne(d, gfn, e, reserved: false, slot);
                        break; // swap full
                    }
                    try
                    {
                        uint frame = PageEntry.Frame(e);
                        var bytes = frames.Span(frame);
                        if (frames.IsExternal(frame))
                        {
                            // A QEMU guest's page is read here, in user mode, before the write: should QEMU have let it go
                            // since the last sweep, the read guard gives the hole a zero page (a write from the mapping
                            // itself would fail with EFAULT, the kernel's own read of a hole).
                            var bounce = Compression.GroupCompression.Bounce;
                            bytes.CopyTo(bounce);
                            bytes = bounce;
                        }
                        Swap.Write(slot, bytes);
                    }
                    catch (Exception ex)
                    {
                        GiveBackOne(d, gfn, e, reserved: true, slot);
                        if (ex is not IOException io) throw;
                        RecordFailure(io);
                        stop = true;
                        break;
                    }
                    _victims[count++] = (d, gfn, e, slot);
                }
            }
            catch
            {
                GiveBack(count);
                throw;
            }
            if (count == 0) return 0;
            bool durable;
            try
            {
                Swap.Flush();
                durable = true;
                _writesFailing = false;
            }
            catch (IOException ex)
            {
                RecordFailure(ex);
                durable = false;
            }
            if (!durable)
            {
                GiveBack(count);
                return 0;
            }
            for (int i = 0; i < count; i++)
            {
                var (d, gfn, e, slot) = _victims[i];
                try
                {
                    uint victim = PageEntry.Frame(e);
                    if (handOver && handed == NoFrame && !frames.IsExternal(victim)) handed = victim; // the caller's now
                    else frames.Free(victim); // a guest's page: journalled, then punched out of the guest
                    e = PageEntry.WithPayload(e, PageState.Swapped, slot);
                }
                catch
                {
                    // Still the guest's (or the frame's): this one and the rest stay as they were.
                    _victims[i] = (d, gfn, e, slot);
                    GiveBack(count, from: i);
                    throw;
                }
                d.Unlock(gfn, e);
                _victims[i] = default;
            }
            Interlocked.Add(ref _pageOuts, count);
            long perPage = (Stopwatch.GetTimestamp() - started) / count;
            for (int i = 0; i < count; i++) PageOutLatency.RecordTicks(perPage);
            return count;
        }
    }

    /// <summary>
    /// Gives back the batch's pages from <paramref name="from"/> on, as they were: slot released, a guest's protection
    /// lifted (best effort: a QEMU that exited has nothing to lift), unlocked.
    /// </summary>
    private void GiveBack(int count, int from = 0)
    {
        for (int i = from; i < count; i++)
        {
            var (d, gfn, e, slot) = _victims[i];
            GiveBackOne(d, gfn, e, reserved: true, slot);
            _victims[i] = default;
        }
    }

    private void GiveBackOne(Domain d, long gfn, ulong e, bool reserved, uint slot)
    {
        if (reserved) Swap.Release(slot);
        if (d.Qemu is not null) d.QemuUnprotectIfAlive(gfn);
        d.Unlock(gfn, e);
    }

    /// <summary>Holds page-outs until disposed (tests and consistent snapshots).</summary>
    internal IDisposable Pause()
    {
        Monitor.Enter(_gate);
        return new Released(() => Monitor.Exit(_gate));
    }

    private sealed class Released(Action release) : IDisposable
    {
        public void Dispose() => release();
    }

    private bool Accepts(PageCategory category) => Array.IndexOf(Levels[_level], category) >= 0;

    private uint _groupHand;
    private long _groupPageOuts;

    /// <summary>Bytes of page-group streams written to the swap file (and freed from the store) so far.</summary>
    public long GroupBytesPagedOut => Interlocked.Read(ref _groupPageOuts);

    /// <summary>
    /// Pages out page groups until free memory would be back at the high watermark (or <paramref name="wantedBytes"/>,
    /// when given), then compacts the store so the slabs their pieces left empty go back; returns stream bytes moved.
    /// Not from a fault path: compaction copies blobs.
    /// </summary>
    public long PageOutGroups(long? wantedBytes = null)
    {
        long wanted = wantedBytes ?? (long)(_host.Policy.HighWatermark * _host.BudgetBytes) - _host.FreeBudgetBytes;
        if (wanted <= 0 || _host.Groups.Count == _host.Groups.InSwap) return 0;
        long moved;
        lock (_gate)
        {
            long failuresBefore = Interlocked.Read(ref _writeFailures);
            moved = Compression.GroupCompression.PageOut(_host, Swap, wanted, ref _groupHand, RecordFailure);
            if (moved == 0) return 0;
            if (Interlocked.Read(ref _writeFailures) == failuresBefore) _writesFailing = false; // written and flushed, none failed
            Interlocked.Add(ref _groupPageOuts, moved);
        }
        // Outside the gate: a compaction walks every page entry (DEHost.MoveBlobs), and faults that need a frame under the
        // limit wait on the gate; compaction is safe alongside them.
        _host.CompactStoreNow();
        return moved;
    }

    private void RecordFailure(IOException ex)
    {
        Interlocked.Increment(ref _writeFailures);
        LastWriteError = ex.Message;
        _writesFailing = true;
    }

    private volatile bool _writesFailing;

    /// <summary>
    /// Whether the swap file's last write (or flush) failed, with no page-out written since: what a HostOutOfMemory
    /// names as its cause (<see cref="LastWriteError"/> keeps the last failure for good, as history).
    /// </summary>
    public bool WritesFailing => _writesFailing;

    public void Dispose()
    {
        _stopping = true;
        _wake.Set();
        _thread.Join();
        _wake.Dispose();
        Swap.Dispose();
    }
}
