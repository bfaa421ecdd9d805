using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using DifferenceEngine.Codecs;
using DifferenceEngine.Memory;
using DifferenceEngine.Paging;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Xen;

/// <summary>
/// The engine as Xen's pager: evicts guest pages and keeps them compressed, as patches against a reference page it keeps,
/// or in a swap file, each with a checksum of the plain bytes, and serves them back on a thread of its own when the guest
/// touches them. Dispose loads every page back before paging is disabled.
/// </summary>
public sealed class XenPager : IDisposable
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(100);

    // A page compressed to more than this is kept plain: the codec's framing would make it no smaller.
    private const int MaxCompressed = PageGeometry.PageSize - 64;
    private const int LoadAttempts = 200;
    private const int SwapBatch = 256;

    private readonly XenConnection connection;
    private readonly CompressionAlgorithm defaultAlgorithm;
    private readonly ConcurrentDictionary<XenPageRef, XenHeld> pages = new();
    private readonly ConcurrentDictionary<uint, bool> domains = new();
    private readonly ConcurrentQueue<DEException> failures = new();
    private readonly ConcurrentQueue<(XenPageRef Key, long Sequence)> evictionOrder = new();
    // Held while a request is served, a domain restored or pages swapped, so a page is changed by one of them only.
    private readonly Lock serving = new();
    private readonly Lock lifecycle = new();
    private readonly Lock references = new();
    private Thread? thread;
    private volatile bool stopping;
    private bool disposed;
    private long storedBytes;
    private long evictions;
    private long pageIns;
    private long requestsAnswered;
    private long sequence;
    private long swapOuts;
    private long liveReferences;
    private long failureCount;
    private string? lastFailure;
    private SwapSpace? swap;
    private long memoryLimit = long.MaxValue;

    public XenPager(XenConnection connection, CompressionAlgorithm algorithm = CompressionAlgorithm.LZ4)
    {
        this.connection = connection;
        PageCompressors.Get(algorithm);
        defaultAlgorithm = algorithm;
    }

    /// <summary>Pages evicted and held by this pager now (in memory or in its swap file).</summary>
    public int EvictedPages => pages.Count;

    /// <summary>Bytes of memory this pager holds for them: encoded pages, plain pages, and the reference pages patches use.</summary>
    public long StoredBytes => Interlocked.Read(ref storedBytes);

    public long Evictions => Interlocked.Read(ref evictions);

    /// <summary>Pages loaded back because the guest (or a foreign mapping) asked for them.</summary>
    public long PageIns => Interlocked.Read(ref pageIns);

    public long RequestsAnswered => Interlocked.Read(ref requestsAnswered);

    /// <summary>Pages moved from memory to the swap file to keep under the memory limit.</summary>
    public long SwapOuts => Interlocked.Read(ref swapOuts);

    /// <summary>Reference pages alive (each 4 KiB of <see cref="StoredBytes"/>).</summary>
    public long ReferencePages => Interlocked.Read(ref liveReferences);

    /// <summary>Errors the service thread met (a corrupt copy, a failed load); it keeps serving other requests. The last 100.</summary>
    public IReadOnlyCollection<DEException> Failures => failures.ToArray();

    /// <summary>
    /// How many errors the service thread has met since the pager started (<see cref="Failures"/> keeps only the last 100):
    /// each left a request unanswered, or the ring unread for a moment. Get-DEHostStats: PagerFailures.
    /// </summary>
    public long FailureCount => Interlocked.Read(ref failureCount);

    /// <summary>The last of them as "ErrorId: message" ("XenPageCorrupt: The pager's copy of ..."), or null. Get-DEHostStats: LastPagerError.</summary>
    public string? LastFailure => Volatile.Read(ref lastFailure);

    /// <summary>The domains whose paging this pager serves.</summary>
    public IReadOnlyCollection<uint> Domains => domains.Keys.ToArray();

    /// <summary>True while the pager holds the page (evicted and not yet asked for).</summary>
    public bool IsEvicted(uint domainId, ulong gfn) => pages.ContainsKey(new XenPageRef(domainId, gfn));

    /// <summary>
    /// How many consecutive gfns from <paramref name="gfn"/> (at most <paramref name="max"/>, none past <paramref name="last"/>)
    /// the pager does not hold: the run a scan may read without paging anything back in. 0 when gfn itself is held.
    /// </summary>
    internal static int UnheldRun(XenPager? pager, uint domainId, ulong gfn, ulong last, int max)
    {
        int run = 0;
        while (run < max && gfn + (ulong)run <= last && (pager is null || !pager.IsEvicted(domainId, gfn + (ulong)run)))
        {
            run++;
        }
        return run;
    }

    /// <summary>True when the pager serves this domain's paging.</summary>
    public bool IsAttached(uint domainId) => domains.ContainsKey(domainId);

    /// <summary>Page-ins the guests asked for, timed from taking the request to loading the page: Unpatch for patches and
    /// reference pages, Decompress for compressed (and plain) pages, SwapIn for swapped ones.</summary>
    internal Stats.FaultCounters Faults { get; } = new();

    /// <summary>Called on the service thread after a page went back to its guest on the guest's request.</summary>
    internal Action<XenPageRef>? PagedIn { get; set; }

    /// <summary>Called on the thread that met a failure once it is in <see cref="Failures"/>: a test waits on it instead of polling.</summary>
    internal Action<DEException>? FailureRecorded { get; set; }

    /// <summary>Enables Xen's paging for the domain with this pager serving it, and starts the service thread.</summary>
    public void Attach(uint domainId)
    {
        lock (lifecycle)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (domains.ContainsKey(domainId))
            {
                return;
            }
            connection.EnablePaging(domainId);
            domains[domainId] = true;
            if (thread is null)
            {
                thread = new Thread(Serve) { IsBackground = true, Name = "DE Xen pager" };
                thread.Start();
            }
        }
    }

    /// <summary>
    /// Evicts one page kept compressed with the pager's codec (or plain when it does not compress): nominates it (from then
    /// on a guest access cancels the eviction), reads and encodes it, keeps the copy, then has Xen free the frame. False when
    /// the page cannot go now (shared, mapped, touched meanwhile, or out already). Its bytes are read only after the
    /// nomination, so what is kept is exactly what the guest last saw.
    /// </summary>
    public bool Evict(uint domainId, ulong gfn) =>
        EvictCore(domainId, gfn, page => Compress(page, defaultAlgorithm, MaxCompressed)) is not null;

    /// <summary>Evicts the page compressed with <paramref name="algorithm"/>; its size (or 4096 when kept plain) in bytes.</summary>
    /// <remarks>
    /// <paramref name="prepared"/>, from <see cref="TryCompress"/> on the bytes the pass read before choosing the page, is kept
    /// as it is when the page still has those bytes after the nomination: the page is not compressed twice.
    /// </remarks>
    internal XenHeld? EvictCompressed(uint domainId, ulong gfn, CompressionAlgorithm algorithm, XenHeld? prepared = null) =>
        EvictCore(domainId, gfn, page =>
            prepared is not null && PageHasher.Hash(page) == prepared.Checksum ? prepared : Compress(page, algorithm, MaxCompressed));

    /// <summary>
    /// Evicts the page and keeps it as a new reference page, indexed under <paramref name="keys"/>; null when it could not go.
    /// </summary>
    internal XenReference? EvictAsReference(uint domainId, ulong gfn, string trustGroup, ulong[] keys)
    {
        var held = EvictCore(domainId, gfn, page =>
        {
            var reference = new XenReference(page.ToArray(), PageHasher.Hash(page), trustGroup, keys) { HeldBySource = true };
            Interlocked.Increment(ref liveReferences);
            Interlocked.Add(ref storedBytes, PageGeometry.PageSize);
            return new XenHeld { Kind = XenHeldKind.Reference, Reference = reference, Checksum = reference.Checksum };
        });
        return held?.Reference;
    }

    /// <summary>
    /// Evicts the page as a patch against <paramref name="reference"/>; when its bytes changed since they were chosen and the
    /// patch is now larger than <paramref name="maxPatch"/>, it is compressed with <paramref name="fallback"/> instead.
    /// </summary>
    /// <remarks>
    /// <paramref name="preparedPatch"/>, the patch of the bytes whose hash is <paramref name="preparedChecksum"/> (what the pass
    /// read before choosing the page), is kept as it is when the page still has those bytes after the nomination.
    /// </remarks>
    internal XenHeld? EvictPatched(uint domainId, ulong gfn, XenReference reference, int maxPatch, CompressionAlgorithm fallback,
        byte[]? preparedPatch = null, ulong preparedChecksum = 0) =>
        EvictCore(domainId, gfn, page =>
        {
            ulong checksum = PageHasher.Hash(page);
            byte[]? patch = preparedPatch is not null && checksum == preparedChecksum ? preparedPatch : null;
            if (patch is null)
            {
                Span<byte> buffer = stackalloc byte[DeltaCodec.MaxPatchSize];
                if (DeltaCodec.TryEncode(reference.Page, page, buffer, out int written) && written <= maxPatch)
                {
                    patch = buffer[..written].ToArray();
                }
            }
            return patch is not null && TryUse(reference)
                ? new XenHeld { Kind = XenHeldKind.Patched, Data = patch, Reference = reference, Checksum = checksum }
                : Compress(page, fallback, MaxCompressed);
        });

    // Nominate, read, encode, keep, evict: the copy is kept before the frame goes, as the guest may ask for it at once.
    private XenHeld? EvictCore(uint domainId, ulong gfn, Func<byte[], XenHeld> encode)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (!domains.ContainsKey(domainId))
        {
            throw XenErrors.PagingNotEnabled(domainId);
        }
        var key = new XenPageRef(domainId, gfn);
        if (pages.ContainsKey(key) || !connection.NominateForPaging(domainId, gfn))
        {
            return null;
        }
        byte[] page = new byte[PageGeometry.PageSize];
        connection.ReadPage(domainId, gfn, page);
        var held = encode(page);
        held.Sequence = Interlocked.Increment(ref sequence);
        pages[key] = held;
        Interlocked.Add(ref storedBytes, held.MemoryBytes);
        if (!connection.Evict(domainId, gfn))
        {
            Forget(key);
            return null;
        }
        evictionOrder.Enqueue((key, held.Sequence));
        Interlocked.Increment(ref evictions);
        return held;
    }

    /// <summary>Loads every page of the domain back, answers what waits and disables its paging.</summary>
    public void Detach(uint domainId)
    {
        lock (lifecycle)
        {
            if (domains.ContainsKey(domainId))
            {
                RestoreAndDisable(domainId);
            }
        }
    }

    /// <summary>Loads back the domain's held pages of the given kinds; the number loaded.</summary>
    internal long Restore(uint domainId, params XenHeldKind[] kinds)
    {
        lock (serving)
        {
            byte[] page = new byte[PageGeometry.PageSize];
            long loaded = 0;
            foreach (var (key, held) in pages.ToArray())
            {
                if (key.DomainId == domainId && kinds.Contains(held.Kind))
                {
                    LoadBack(key, page);
                    loaded++;
                }
            }
            return loaded;
        }
    }

    /// <summary>The domain is gone from Xen: its pages are dropped, not loaded.</summary>
    internal void ForgetDomain(uint domainId)
    {
        lock (serving)
        {
            foreach (var key in pages.Keys.Where(k => k.DomainId == domainId).ToArray())
            {
                Forget(key);
            }
            domains.TryRemove(domainId, out _);
        }
    }

    /// <summary>What the pager holds for the domain, by kind.</summary>
    internal XenPagerDomainStats GetDomainStats(uint domainId)
    {
        long plain = 0, compressed = 0, patched = 0, reference = 0, swapped = 0, bytes = 0;
        // References no longer held for their own page: (this domain's patches on it, all patches on it).
        Dictionary<XenReference, (int Mine, int All)>? orphans = null;
        foreach (var (key, held) in pages)
        {
            if (held.Kind == XenHeldKind.Patched && held.Reference is { HeldBySource: false, Released: false } orphan)
            {
                orphans ??= new(ReferenceEqualityComparer.Instance);
                var (mine, all) = orphans.GetValueOrDefault(orphan);
                orphans[orphan] = (mine + (key.DomainId == domainId ? 1 : 0), all + 1);
            }
            if (key.DomainId != domainId)
            {
                continue;
            }
            switch (held.Kind)
            {
                case XenHeldKind.Plain: plain++; break;
                case XenHeldKind.Compressed: compressed++; break;
                case XenHeldKind.Patched: patched++; break;
                case XenHeldKind.Reference: reference++; bytes += PageGeometry.PageSize; break;
                default: swapped++; break;
            }
            bytes += held.MemoryBytes;
        }
        double orphanBytes = orphans?.Values.Sum(o => (double)PageGeometry.PageSize * o.Mine / o.All) ?? 0;
        return new XenPagerDomainStats(domainId, plain, compressed, patched, reference, swapped, bytes) { OrphanReferenceBytes = orphanBytes };
    }

    /// <summary>The plain bytes of a page the pager holds, without loading it back; false when it does not hold it.</summary>
    internal bool TryReadHeld(XenPageRef key, Span<byte> page)
    {
        lock (serving)
        {
            if (!pages.TryGetValue(key, out var held))
            {
                return false;
            }
            Decode(key, held, page);
            return true;
        }
    }

    /// <summary>Gives the pager a swap file and the memory it may hold before it writes pages there.</summary>
    internal void UseSwap(SwapSpace? swapSpace, long memoryLimitBytes)
    {
        swap = swapSpace;
        memoryLimit = memoryLimitBytes;
    }

    /// <summary>
    /// Moves the oldest held pages (not references) to the swap file until the pager's memory is under its limit; each batch
    /// is made durable before its memory is freed. Returns the pages moved; <paramref name="full"/> when swap ran out first.
    /// </summary>
    internal unsafe long EnforceBudget(out bool full)
    {
        full = false;
        if (swap is null || StoredBytes <= memoryLimit)
        {
            return 0;
        }
        long moved = 0;
        byte* buffer = (byte*)NativeMemory.AlignedAlloc(SwapBatch * PageGeometry.PageSize, PageGeometry.PageSize);
        try
        {
            lock (serving)
            {
                var batch = new List<(XenPageRef Key, XenHeld Held, uint Slot)>(SwapBatch);
                while (StoredBytes > memoryLimit && !full)
                {
                    batch.Clear();
                    long pending = 0;
                    while (batch.Count < SwapBatch && StoredBytes - pending > memoryLimit && evictionOrder.TryDequeue(out var next))
                    {
                        if (!pages.TryGetValue(next.Key, out var held) || held.Sequence != next.Sequence
                            || held.Kind is XenHeldKind.Reference or XenHeldKind.Swapped)
                        {
                            continue;
                        }
                        if (!swap.TryReserve(out uint slot))
                        {
                            evictionOrder.Enqueue(next);
                            full = true;
                            break;
                        }
                        var plain = new Span<byte>(buffer + batch.Count * PageGeometry.PageSize, PageGeometry.PageSize);
                        Decode(next.Key, held, plain);
                        swap.Write(slot, plain);
                        batch.Add((next.Key, held, slot));
                        pending += held.MemoryBytes;
                    }
                    if (batch.Count == 0)
                    {
                        break;
                    }
                    swap.Flush();
                    foreach (var (key, held, slot) in batch)
                    {
                        var swapped = new XenHeld { Kind = XenHeldKind.Swapped, Slot = slot, Checksum = held.Checksum, Sequence = held.Sequence };
                        pages[key] = swapped;
                        Release(held);
                    }
                    moved += batch.Count;
                    Interlocked.Add(ref swapOuts, batch.Count);
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
        return moved;
    }

    /// <summary>
    /// Stops the service thread, then loads every held page back and disables paging for each domain. Throws
    /// "XenPagerRestoreFailed" if a page could not be loaded back; that domain's paging then stays on.
    /// </summary>
    public void Dispose()
    {
        lock (lifecycle)
        {
            if (disposed)
            {
                return;
            }
            disposed = true;
            stopping = true;
            thread?.Join();
            var errors = new List<DEException>();
            foreach (uint domainId in domains.Keys.ToArray())
            {
                try
                {
                    RestoreAndDisable(domainId);
                }
                catch (DEException e)
                {
                    errors.Add(e);
                }
            }
            if (errors.Count == 1)
            {
                throw errors[0];
            }
            if (errors.Count > 1)
            {
                throw new DEException(XenErrors.PagerRestoreFailedId, DEErrorKind.WriteError,
                    $"The Xen pager could not load the pages of {errors.Count} domains back: {errors[0].Message}",
                    errors.Select(e => e.Target).ToArray(), new AggregateException(errors));
            }
        }
    }

    // Paging stays on while any page could not be loaded back: Xen crashes a domain that touches a paged-out page with
    // no pager, and the copy is still here for another attempt.
    private void RestoreAndDisable(uint domainId)
    {
        lock (serving)
        {
            var errors = new List<DEException>();
            byte[] page = new byte[PageGeometry.PageSize];
            foreach (var key in pages.Keys.Where(k => k.DomainId == domainId).ToArray())
            {
                try
                {
                    LoadBack(key, page);
                }
                catch (DEException e)
                {
                    errors.Add(e);
                }
            }
            // Requests posted meanwhile (any domain of this pager) find their pages back: answer them.
            while (connection.TryGetRequest(out var request))
            {
                Answer(request);
            }
            if (errors.Count > 0)
            {
                throw new DEException(XenErrors.PagerRestoreFailedId, DEErrorKind.WriteError,
                    $"The Xen pager could not load {errors.Count} page(s) of domain {domainId} back, so its paging stays on: " +
                    errors[0].Message, domainId, new AggregateException(errors));
            }
            connection.DisablePaging(domainId);
            domains.TryRemove(domainId, out _);
        }
    }

    private void Serve()
    {
        while (!stopping)
        {
            try
            {
                connection.WaitForRequest(PollInterval);
                lock (serving)
                {
                    while (!stopping && connection.TryGetRequest(out var request))
                    {
                        Answer(request);
                    }
                }
            }
            catch (ObjectDisposedException)
            {
                // The connection was closed under the pager: nothing left to serve.
                return;
            }
            catch (DEException e)
            {
                Record(e);
                Thread.Sleep(PollInterval);
            }
        }
    }

    // One request: load the page if this pager holds it, then resume the vCPU. A page that cannot be rebuilt is not
    // answered: the vCPU stays paused rather than run on wrong bytes.
    private void Answer(in XenPagingRequest request)
    {
        try
        {
            if (request.DropPage)
            {
                Forget(request.Page);
            }
            else if (!request.EvictFailed && pages.TryGetValue(request.Page, out var held))
            {
                long started = System.Diagnostics.Stopwatch.GetTimestamp();
                Span<byte> page = stackalloc byte[PageGeometry.PageSize];
                LoadBack(request.Page, page);
                Faults.Record(held.Kind switch
                {
                    XenHeldKind.Patched or XenHeldKind.Reference => DifferenceEngine.Domains.FaultKind.Unpatch,
                    XenHeldKind.Swapped => DifferenceEngine.Domains.FaultKind.SwapIn,
                    _ => DifferenceEngine.Domains.FaultKind.Decompress,
                }, System.Diagnostics.Stopwatch.GetTimestamp() - started);
                Interlocked.Increment(ref pageIns);
                PagedIn?.Invoke(request.Page);
            }
            connection.Respond(request);
            Interlocked.Increment(ref requestsAnswered);
        }
        catch (DEException e)
        {
            Record(e);
        }
    }

    private void LoadBack(XenPageRef key, Span<byte> page)
    {
        if (!pages.TryGetValue(key, out var held))
        {
            return;
        }
        Decode(key, held, page);
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                connection.Load(key.DomainId, key.Gfn, page);
                break;
            }
            catch (XenException e) when (e.Errno == Errno.ENOMEM && attempt < LoadAttempts)
            {
                // Xen has no free frame this instant (as xenpaging, wait and retry).
                Thread.Sleep(10);
            }
            catch (XenException e) when (e.Errno == Errno.ENOENT)
            {
                // Not paged out any more (the domain was torn down, or loaded by Xen's own means).
                break;
            }
        }
        Forget(key);
    }

    // Compressed, or plain when it does not compress below MaxCompressed.
    private static XenHeld Compress(ReadOnlySpan<byte> page, CompressionAlgorithm algorithm, int maxBytes) =>
        TryCompress(page, algorithm, maxBytes) ?? new XenHeld { Kind = XenHeldKind.Plain, Data = page.ToArray(), Checksum = PageHasher.Hash(page) };

    /// <summary>The page compressed with <paramref name="algorithm"/> into at most <paramref name="maxBytes"/>, or null when it does not fit.</summary>
    internal static XenHeld? TryCompress(ReadOnlySpan<byte> page, CompressionAlgorithm algorithm, int maxBytes)
    {
        Span<byte> buffer = stackalloc byte[MaxCompressed];
        return PageCompressors.Get(algorithm).TryCompress(page, buffer[..Math.Min(maxBytes, MaxCompressed)], out int written)
            ? new XenHeld { Kind = XenHeldKind.Compressed, Data = buffer[..written].ToArray(), Algorithm = algorithm, Checksum = PageHasher.Hash(page) }
            : null;
    }

    private unsafe void Decode(XenPageRef key, XenHeld held, Span<byte> page)
    {
        try
        {
            switch (held.Kind)
            {
                case XenHeldKind.Compressed:
                    PageCompressors.Get(held.Algorithm).Decompress(held.Data, page);
                    break;
                case XenHeldKind.Plain:
                    held.Data.CopyTo(page);
                    break;
                case XenHeldKind.Patched:
                    DeltaCodec.Decode(held.Reference!.Page, held.Data, page);
                    break;
                case XenHeldKind.Reference:
                    held.Reference!.Page.CopyTo(page);
                    break;
                case XenHeldKind.Swapped:
                    byte* buffer = (byte*)NativeMemory.AlignedAlloc(PageGeometry.PageSize, PageGeometry.PageSize);
                    try
                    {
                        var aligned = new Span<byte>(buffer, PageGeometry.PageSize);
                        if (!swap!.TryRead(held.Slot, aligned))
                        {
                            XenErrors.ThrowPageCorrupt(key, $"swap slot {held.Slot} does not match the checksum written with it");
                        }
                        aligned.CopyTo(page);
                    }
                    finally
                    {
                        NativeMemory.AlignedFree(buffer);
                    }
                    break;
            }
        }
        catch (DEException e) when (e.ErrorId != XenErrors.PageCorruptId)
        {
            XenErrors.ThrowPageCorrupt(key, e.Message, e);
        }
        catch (IOException e)
        {
            XenErrors.ThrowPageCorrupt(key, $"reading it from the swap file failed: {e.Message}", e);
        }
        if (held.Kind == XenHeldKind.Patched && PageHasher.Hash(held.Reference!.Page) != held.Reference.Checksum)
        {
            XenErrors.ThrowPageCorrupt(key, "the reference page its patch decodes against does not match its checksum");
        }
        if (PageHasher.Hash(page) != held.Checksum)
        {
            XenErrors.ThrowPageCorrupt(key, "its checksum does not match the bytes evicted");
        }
    }

    private void Forget(XenPageRef key)
    {
        if (pages.TryRemove(key, out var held))
        {
            Release(held);
        }
    }

    // What a held page no longer being held gives back: its memory, its swap slot, its claim on a reference.
    private void Release(XenHeld held)
    {
        Interlocked.Add(ref storedBytes, -held.MemoryBytes);
        switch (held.Kind)
        {
            case XenHeldKind.Patched:
                lock (references)
                {
                    held.Reference!.Users--;
                    ReleaseIfUnused(held.Reference);
                }
                break;
            case XenHeldKind.Reference:
                lock (references)
                {
                    held.Reference!.HeldBySource = false;
                    ReleaseIfUnused(held.Reference);
                }
                break;
            case XenHeldKind.Swapped:
                swap?.Release(held.Slot);
                break;
        }
    }

    private bool TryUse(XenReference reference)
    {
        lock (references)
        {
            if (reference.Released)
            {
                return false;
            }
            reference.Users++;
            return true;
        }
    }

    private void ReleaseIfUnused(XenReference reference)
    {
        if (reference.Users == 0 && !reference.HeldBySource && !reference.Released)
        {
            reference.Released = true;
            Interlocked.Decrement(ref liveReferences);
            Interlocked.Add(ref storedBytes, -PageGeometry.PageSize);
        }
    }

    private void Record(DEException e)
    {
        Volatile.Write(ref lastFailure, $"{e.ErrorId}: {e.Message}");
        Interlocked.Increment(ref failureCount);
        failures.Enqueue(e);
        while (failures.Count > 100 && failures.TryDequeue(out _))
        {
        }
        FailureRecorded?.Invoke(e);
    }

    /// <summary>Test hook: flips a bit of the held copy (its encoded bytes, or its reference page), to show a corrupt copy is never loaded.</summary>
    internal bool CorruptForTest(uint domainId, ulong gfn)
    {
        if (!pages.TryGetValue(new XenPageRef(domainId, gfn), out var held))
        {
            return false;
        }
        byte[]? bytes = held.Kind == XenHeldKind.Reference ? held.Reference!.Page : held.Data;
        if (bytes is null)
        {
            return false;
        }
        bytes[^1] ^= 0x40;
        return true;
    }

    /// <summary>Test hook: the kind the pager keeps the page as, or null.</summary>
    internal XenHeldKind? HeldKindForTest(uint domainId, ulong gfn) =>
        pages.TryGetValue(new XenPageRef(domainId, gfn), out var held) ? held.Kind : null;
}
