using System.Collections.Concurrent;
using DifferenceEngine.Codecs;
using DifferenceEngine.Memory;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Xen;

/// <summary>
/// The engine as Xen's pager: evicts guest pages it keeps compressed (with a checksum of the plain bytes) and serves them
/// back on a thread of its own when the guest touches them. Dispose loads every page back before paging is disabled.
/// </summary>
public sealed class XenPager : IDisposable
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(100);

    // A page compressed to more than this is kept plain: the codec's framing would make it no smaller.
    private const int MaxCompressed = PageGeometry.PageSize - 64;
    private const int LoadAttempts = 200;

    private readonly XenConnection connection;
    private readonly IPageCompressor compressor;
    private readonly ConcurrentDictionary<XenPageRef, StoredPage> pages = new();
    private readonly ConcurrentDictionary<uint, bool> domains = new();
    private readonly ConcurrentQueue<DEException> failures = new();
    // Held while a request is served or a domain restored, so a page is loaded by one of them only.
    private readonly Lock serving = new();
    private readonly Lock lifecycle = new();
    private Thread? thread;
    private volatile bool stopping;
    private bool disposed;
    private long storedBytes;
    private long evictions;
    private long pageIns;
    private long requestsAnswered;

    public XenPager(XenConnection connection, CompressionAlgorithm algorithm = CompressionAlgorithm.LZ4)
    {
        this.connection = connection;
        compressor = PageCompressors.Get(algorithm);
    }

    /// <summary>Pages evicted and held by this pager now.</summary>
    public int EvictedPages => pages.Count;

    /// <summary>Bytes this pager holds for them (compressed or plain).</summary>
    public long StoredBytes => Interlocked.Read(ref storedBytes);

    public long Evictions => Interlocked.Read(ref evictions);

    /// <summary>Pages loaded back because the guest (or a foreign mapping) asked for them.</summary>
    public long PageIns => Interlocked.Read(ref pageIns);

    public long RequestsAnswered => Interlocked.Read(ref requestsAnswered);

    /// <summary>Errors the service thread met (a corrupt copy, a failed load); it keeps serving other requests.</summary>
    public IReadOnlyCollection<DEException> Failures => failures.ToArray();

    /// <summary>The domains whose paging this pager serves.</summary>
    public IReadOnlyCollection<uint> Domains => domains.Keys.ToArray();

    /// <summary>True while the pager holds the page (evicted and not yet asked for).</summary>
    public bool IsEvicted(uint domainId, ulong gfn) => pages.ContainsKey(new XenPageRef(domainId, gfn));

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
    /// Evicts one page: nominates it (from then on a guest access cancels the eviction), reads and compresses it, keeps the
    /// copy, then has Xen free the frame. False when the page cannot go now (shared, mapped, touched meanwhile, or out already).
    /// Its bytes are read only after the nomination, so what is kept is exactly what the guest last saw.
    /// </summary>
    public bool Evict(uint domainId, ulong gfn)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (!domains.ContainsKey(domainId))
        {
            throw XenErrors.PagingNotEnabled(domainId);
        }
        var key = new XenPageRef(domainId, gfn);
        if (pages.ContainsKey(key) || !connection.NominateForPaging(domainId, gfn))
        {
            return false;
        }
        Span<byte> page = stackalloc byte[PageGeometry.PageSize];
        connection.ReadPage(domainId, gfn, page);
        var stored = Encode(page);
        // Kept before the frame goes: the guest may ask for it the moment Xen frees it.
        pages[key] = stored;
        Interlocked.Add(ref storedBytes, stored.Data.Length);
        if (!connection.Evict(domainId, gfn))
        {
            Forget(key);
            return false;
        }
        Interlocked.Increment(ref evictions);
        return true;
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
            Span<byte> page = stackalloc byte[PageGeometry.PageSize];
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
            else if (!request.EvictFailed && pages.ContainsKey(request.Page))
            {
                Span<byte> page = stackalloc byte[PageGeometry.PageSize];
                LoadBack(request.Page, page);
                Interlocked.Increment(ref pageIns);
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
        if (!pages.TryGetValue(key, out var stored))
        {
            return;
        }
        Decode(key, stored, page);
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

    private StoredPage Encode(ReadOnlySpan<byte> page)
    {
        ulong checksum = PageHasher.Hash(page);
        Span<byte> buffer = stackalloc byte[MaxCompressed];
        return compressor.TryCompress(page, buffer, out int written)
            ? new StoredPage(buffer[..written].ToArray(), Compressed: true, checksum)
            : new StoredPage(page.ToArray(), Compressed: false, checksum);
    }

    private void Decode(XenPageRef key, StoredPage stored, Span<byte> page)
    {
        try
        {
            if (stored.Compressed)
            {
                compressor.Decompress(stored.Data, page);
            }
            else
            {
                stored.Data.CopyTo(page);
            }
        }
        catch (DEException e)
        {
            XenErrors.ThrowPageCorrupt(key, e.Message, e);
        }
        if (PageHasher.Hash(page) != stored.Checksum)
        {
            XenErrors.ThrowPageCorrupt(key, "its checksum does not match the bytes evicted");
        }
    }

    private void Forget(XenPageRef key)
    {
        if (pages.TryRemove(key, out var stored))
        {
            Interlocked.Add(ref storedBytes, -stored.Data.Length);
        }
    }

    private void Record(DEException e)
    {
        failures.Enqueue(e);
        while (failures.Count > 100 && failures.TryDequeue(out _))
        {
        }
    }

    /// <summary>Test hook: flips a bit of the held copy, to show a corrupt copy is never loaded.</summary>
    internal bool CorruptForTest(uint domainId, ulong gfn)
    {
        if (!pages.TryGetValue(new XenPageRef(domainId, gfn), out var stored))
        {
            return false;
        }
        stored.Data[^1] ^= 0x40;
        return true;
    }

    private sealed record StoredPage(byte[] Data, bool Compressed, ulong Checksum);
}
