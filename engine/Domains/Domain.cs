using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading;
using DifferenceEngine.Hosting;
using DifferenceEngine.Loading;
using DifferenceEngine.Memory;
using DifferenceEngine.Sharing;

namespace DifferenceEngine.Domains;

/// <summary>
/// A virtual machine on the embedded host: a name, an id, a size, a policy and the P2M table that
/// maps each guest frame number to a packed <see cref="PageEntry"/>. Guest reads and writes go
/// through ReadPage and WritePage, which service the faults.
/// </summary>
/// <remarks>
/// Concurrency: every P2M entry carries a lock bit. Guest access, clock sweeps, merges and removal
/// all hold the entry's lock while they look at or change the page; a merge that needs a second
/// page only try-locks it, so no two threads ever wait on each other in a cycle.
/// </remarks>
public sealed partial class Domain : IDEDomain
{
    private readonly ulong[] _p2m;
    private volatile bool _removed;
    private long _sweeps;

    internal Domain(DEHost host, int id, string name, long pageCount, DomainPolicy policy, string source)
    {
        Host = host;
        Id = id;
        Name = name;
        PageCount = pageCount;
        Policy = policy;
        Source = source;
        Created = DateTimeOffset.Now;
        _p2m = new ulong[pageCount];
    }

    public DEHost Host { get; }
    IDEHost IDEDomain.Host => Host;

    void IDEDomain.EnableSharing() => Host.EnableSharing(this);
    long IDEDomain.DisableSharing(bool unshare) => Host.DisableSharing(this, unshare);
    void IDEDomain.EnablePatching() => Host.EnablePatching(this);
    long IDEDomain.DisablePatching(bool restore) => Host.DisablePatching(this, restore);
    void IDEDomain.EnableCompression(Codecs.CompressionAlgorithm? algorithm) => Host.EnableCompression(this, algorithm);
    long IDEDomain.DisableCompression(bool restore) => Host.DisableCompression(this, restore);

    void IDEDomain.SetPolicy(int? c4Sweeps, int? patchThreshold, double? compressionThreshold,
        Codecs.CompressionAlgorithm? algorithm, string? trustGroup, int? groupSize, int? groupAfterSweeps,
        Codecs.CompressionAlgorithm? groupAlgorithm) =>
        Host.SetPolicy(this, c4Sweeps, patchThreshold, compressionThreshold, algorithm, trustGroup, groupSize, groupAfterSweeps, groupAlgorithm);

    Stats.DomainPageStats IDEDomain.GetPageStats(CancellationToken cancellationToken) => Host.GetPageStats(this, cancellationToken);
    /// <summary>The domain's id: unique in the process (never given again, by any host), in the order domains were made.</summary>
    public int Id { get; }
    public string Name { get; }
    public long PageCount { get; }
    public long SizeBytes => PageCount * PageGeometry.PageSize;
    public DomainPolicy Policy { get; }

    /// <summary>Where the memory came from: "empty", an image path, or a process.</summary>
    public string Source { get; }

    public DateTimeOffset Created { get; }

    /// <summary>What loading reported (pages read, regions skipped); null for an empty domain.</summary>
    public LoadReport? LoadReport { get; internal set; }

    /// <summary>Clock sweeps done over this domain (the clock's logical time).</summary>
    public long Sweeps => Interlocked.Read(ref _sweeps);

    public bool IsRemoved => _removed;

    /// <summary>True while the domain's memory is being loaded.</summary>
    public bool Loading { get; internal set; }

    internal long P2MBytes => (long)_p2m.Length * sizeof(ulong);

    internal void CountSweep() => Interlocked.Increment(ref _sweeps);

    /// <summary>Copies guest page <paramref name="gfn"/> into <paramref name="destination"/> (at least 4096 bytes).</summary>
    /// <returns>The fault serviced to read it: Unpatch or Decompress for an encoded page, else None.</returns>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public unsafe FaultKind ReadPage(long gfn, Span<byte> destination)
    {
        CheckGfn(gfn);
        if (destination.Length < PageGeometry.PageSize)
            throw new DEException("BufferTooSmall", DEErrorKind.InvalidArgument,
                $"The destination holds {destination.Length} bytes; a page is {PageGeometry.PageSize}.", destination.Length);
        using var op = Host.EnterOperation();
        ulong e = Lock(gfn);
        var fault = FaultKind.None;
        try
        {
            ThrowIfRemoved();
            switch (PageEntry.State(e))
            {
                case PageState.Zero:
                    destination[..PageGeometry.PageSize].Clear();
                    break;
                case PageState.Private:
                case PageState.Shared:
                    Host.Frames.Span(PageEntry.Frame(e)).CopyTo(destination);
                    break;
                case PageState.Uniform:
                    FillUniform(destination[..PageGeometry.PageSize], (uint)PageEntry.Payload(e));
                    break;
                case PageState.Patched:
                case PageState.Compressed:
                case PageState.Swapped:
                    e = BringIn(gfn, e, readBack: true, out fault);
                    Host.Frames.Span(PageEntry.Frame(e)).CopyTo(destination);
                    if (Qemu is not null) e = QemuInstall(gfn, e); // back in the guest, as its own fault would put it
                    break;
                default:
                    throw UnsupportedState(gfn, e);
            }
            e |= PageEntry.Referenced;
            return fault;
        }
        finally
        {
            Unlock(gfn, e);
        }
    }

    /// <summary>Reads a page into a new array (convenience for scripts; the span overload allocates nothing).</summary>
    public byte[] ReadPage(long gfn)
    {
        var page = new byte[PageGeometry.PageSize];
        ReadPage(gfn, page);
        return page;
    }

    /// <summary>
    /// Writes <paramref name="data"/> at <paramref name="offset"/> within guest page <paramref name="gfn"/>,
    /// servicing a zero-fill or copy-on-write fault first when the page has no frame of its own.
    /// </summary>
    /// <exception cref="DEException">"HostOutOfMemory" when a fault needs a frame and the host's limit is reached.</exception>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public FaultKind WritePage(long gfn, ReadOnlySpan<byte> data, int offset = 0)
    {
        ThrowIfQemu("Writing guest memory from the engine");
        CheckGfn(gfn);
        if (offset < 0 || offset > PageGeometry.PageSize || data.Length > PageGeometry.PageSize - offset)
            throw new DEException("WriteOutsidePage", DEErrorKind.InvalidArgument,
                $"Writing {data.Length} bytes at offset {offset} would pass the end of the {PageGeometry.PageSize}-byte page.", offset);
        using var op = Host.EnterOperation();
        ulong e = Lock(gfn);
        var fault = FaultKind.None;
        try
        {
            ThrowIfRemoved();
            bool whole = offset == 0 && data.Length == PageGeometry.PageSize;
            switch (PageEntry.State(e))
            {
                case PageState.Private:
                    break;
                case PageState.Zero:
                {
                    long start = Stopwatch.GetTimestamp();
                    uint frame = AllocateFrame(gfn);
                    if (!whole) Host.Frames.Span(frame).Clear();
                    e = PageEntry.With(e, PageState.Private, frame);
                    fault = FaultKind.ZeroFill;
                    Host.Faults.Record(fault, Stopwatch.GetTimestamp() - start);
                    break;
                }
                case PageState.Shared:
                {
                    long start = Stopwatch.GetTimestamp();
                    e = BreakSharing(gfn, e, copy: !whole);
                    fault = FaultKind.CopyOnWrite;
                    Host.Faults.Record(fault, Stopwatch.GetTimestamp() - start);
                    break;
                }
                case PageState.Uniform:
                {
                    long start = Stopwatch.GetTimestamp();
                    uint frame = AllocateFrame(gfn);
                    if (!whole) FillUniform(Host.Frames.Span(frame), (uint)PageEntry.Payload(e));
                    e = PageEntry.With(e, PageState.Private, frame);
                    fault = FaultKind.PatternFill;
                    Host.Faults.Record(fault, Stopwatch.GetTimestamp() - start);
                    break;
                }
                case PageState.Patched:
                case PageState.Compressed:
                case PageState.Swapped:
                    e = BringIn(gfn, e, readBack: !whole, out fault);
                    break;
                default:
                    throw UnsupportedState(gfn, e);
            }
            data.CopyTo(Host.Frames.Span(PageEntry.Frame(e))[offset..]);
            e = (e | PageEntry.Referenced | PageEntry.Modified) & ~(PageEntry.SharingSeen | PageEntry.Incompressible);
            return fault;
        }
        finally
        {
            Unlock(gfn, e);
        }
    }

    /// <summary>A snapshot of one page's entry (state, category, reference count, hash); DomainRemoved once removed.</summary>
    public PageInfo GetPage(long gfn)
    {
        CheckGfn(gfn);
        using var op = Host.EnterOperation();
        ulong e = Lock(gfn);
        try
        {
            ThrowIfRemoved(); // its pages are gone, not zeros
            return DescribeLocked(gfn, e);
        }
        finally
        {
            Unlock(gfn, e);
        }
    }

    /// <summary>
    /// Snapshots of every page in [<paramref name="first"/>, <paramref name="first"/>+<paramref name="count"/>), cut at the
    /// domain's end; its arguments are checked at the call ("GfnOutOfRange" for a <paramref name="first"/> outside 0 to
    /// PageCount, ArgumentOutOfRangeException for a negative <paramref name="count"/>), each page as it is enumerated.
    /// </summary>
    public IEnumerable<PageInfo> GetPages(long first = 0, long count = long.MaxValue)
    {
        if (first != PageCount) CheckGfn(first);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ThrowIfRemoved();
        long end = count >= PageCount - first ? PageCount : first + count;
        return Pages(first, end);
    }

    private IEnumerable<PageInfo> Pages(long first, long end)
    {
        for (long gfn = first; gfn < end; gfn++) yield return GetPage(gfn);
    }

    /// <summary>The state of a page without locking it (a racy hint, for filters); DomainRemoved once removed.</summary>
    /// <summary>Whether the guest has never touched the page (neither guest memory nor saved), read without its lock.</summary>
    internal bool PeekUntouched(long gfn) => PageEntry.IsUntouched(PeekEntry(gfn));

    public PageState PeekState(long gfn)
    {
        CheckGfn(gfn);
        ThrowIfRemoved();
        return PageEntry.State(Volatile.Read(ref _p2m[gfn]));
    }

    public override string ToString() => Name;

    // ---- internals shared with the host, the clock and the sharing pass ----

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong Lock(long gfn)
    {
        ref ulong slot = ref _p2m[gfn];
        ulong e = Volatile.Read(ref slot);
        if ((e & PageEntry.Locked) == 0 && Interlocked.CompareExchange(ref slot, e | PageEntry.Locked, e) == e)
            return e;
        return LockContended(ref slot);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ulong LockContended(ref ulong slot)
    {
        var spin = new SpinWait();
        while (true)
        {
            ulong e = Volatile.Read(ref slot);
            if ((e & PageEntry.Locked) == 0 && Interlocked.CompareExchange(ref slot, e | PageEntry.Locked, e) == e)
                return e;
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    /// <summary>
    /// <see cref="TryLock"/>, retried for a moment (64 rounds of spinning, then yielding, never sleeping): for a second
    /// page's lock taken while holding one, where waiting unboundedly could deadlock but another engine worker usually
    /// holds it for microseconds.
    /// </summary>
    internal bool TryLockBriefly(long gfn, out ulong e)
    {
        var spin = new SpinWait();
        for (int attempt = 0; attempt < 64; attempt++)
        {
            if (TryLock(gfn, out e)) return true;
            spin.SpinOnce(sleep1Threshold: -1);
        }
        return TryLock(gfn, out e);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryLock(long gfn, out ulong e)
    {
        ref ulong slot = ref _p2m[gfn];
        e = Volatile.Read(ref slot);
        return (e & PageEntry.Locked) == 0 && Interlocked.CompareExchange(ref slot, e | PageEntry.Locked, e) == e;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Unlock(long gfn, ulong e) => Volatile.Write(ref _p2m[gfn], e & ~PageEntry.Locked);

    internal ulong PeekEntry(long gfn) => Volatile.Read(ref _p2m[gfn]);

    /// <summary>Marks every page untouched: the state of a new empty domain, whose pages the guest has not populated yet.</summary>
    internal void MarkUntouched() => Array.Fill(_p2m, PageEntry.Untouched);

    /// <summary>
    /// At the end of a load: the pages the source did not give (zeros in the image, or left out of a core) are the guest's
    /// zero pages, guest memory like any other, no longer untouched. A loading domain's pages are untouched until laid out,
    /// so that the host's figures taken meanwhile count only what is loaded (not the rest as zeros saved).
    /// </summary>
    internal void MarkLoadedZeros()
    {
        for (long gfn = 0; gfn < PageCount; gfn++)
        {
            if (!PageEntry.IsUntouched(PeekEntry(gfn))) continue;
            ulong e = Lock(gfn);
            Unlock(gfn, PageEntry.IsUntouched(e) ? PageEntry.WithPayload(e, PageState.Zero, 0) : e);
        }
    }

    /// <summary>
    /// Installs a loaded page as Private. Used only while the domain is being built; a domain removed meanwhile (its
    /// release may have passed this page already) gets no frame: it is freed, and the load ends with DomainRemoved, as
    /// the loader's own check before each page does.
    /// </summary>
    internal void InstallLoaded(long gfn, uint frame)
    {
        ulong e = Lock(gfn);
        if (IsRemoved)
        {
            Unlock(gfn, e);
            Host.Frames.Free(frame);
            ThrowIfRemoved();
        }
        Unlock(gfn, PageEntry.With(e, PageState.Private, frame));
    }

    /// <summary>Gives a Shared page a frame of its own; the caller holds the page's lock.</summary>
    internal ulong BreakSharing(long gfn, ulong e, bool copy)
    {
        uint shared = PageEntry.Frame(e);
        var index = Host.SharingIndexFor(Policy.TrustGroup);
        ulong hash = index.HashOf(shared); // once for both (a copy-on-write fault's cost)
        if (index.TryTakeSole(shared, hash)) return PageEntry.With(e, PageState.Private, shared);
        uint frame = AllocateFrame(gfn);
        if (copy) Host.Frames.Span(shared).CopyTo(Host.Frames.Span(frame));
        index.Release(shared, hash);
        return PageEntry.With(e, PageState.Private, frame);
    }

    /// <summary>
    /// A frame for a fault or a load. Under the limit with swap, pages out the coldest pages of the host
    /// (never waiting on a page lock) until one is free; when nothing can go, fails with
    /// "HostOutOfMemory" and marks this domain, leaving every page as it was.
    /// </summary>
    internal uint AllocateFrame(long gfn, bool swapIn = false)
    {
        var reclaimer = Host.Reclaimer;
        // A QEMU guest's page is rebuilt in a frame only to be installed in the guest and the frame freed at once: the
        // guest's fault is not refused for lack of memory (the guest would hang), and reclaim brings the host back under
        // its limit afterwards.
        if (Qemu is not null && Host.Frames.TryAllocate(out uint passing, overLimit: true))
        {
            reclaimer?.Poke();
            return passing;
        }
        for (int attempt = 0; ; attempt++)
        {
            if (Host.Frames.TryAllocate(out uint frame))
            {
                reclaimer?.Poke();
                _outOfMemory = false;
                return frame;
            }
            if (reclaimer is null || attempt >= 64) break;
            if (reclaimer.ReclaimForFault()) continue;
            if (swapIn && reclaimer.ExchangeForFault(out uint handed))
            {
                if (handed == Paging.Reclaimer.NoFrame) continue; // a QEMU guest's frame was freed: take one from the pool
                // The victim's frame, straight from its page-out: no other fault can take it in between.
                _outOfMemory = false;
                return handed;
            }
            // Nothing paged out by us may still mean another thread's reclaim freed frames meanwhile.
            if (Host.Frames.FramesFree == 0) break;
        }
        Interlocked.Increment(ref _outOfMemoryEvents);
        LastOutOfMemory = DateTimeOffset.Now;
        _outOfMemory = true;
        throw new DEException("HostOutOfMemory", DEErrorKind.ResourceUnavailable,
            $"The host is out of memory: domain '{Name}' needs a frame for page {gfn}, the limit of {Host.Frames.LimitFrames} frames " +
            $"(frames and store together) is reached, and {(reclaimer is null ? "the host has no swap file" : "nothing more can be paged out (swap full or every page busy)")}." +
            (reclaimer is { WritesFailing: true, LastWriteError: { } swapError } ? $" The last swap write failed: {swapError}" : ""),
            this);
    }

    private long _outOfMemoryEvents;

    /// <summary>How often an access or load of this domain failed for lack of host memory.</summary>
    public long OutOfMemoryEvents => Interlocked.Read(ref _outOfMemoryEvents);

    /// <summary>When that last happened; null if never.</summary>
    public DateTimeOffset? LastOutOfMemory { get; private set; }

    /// <summary>"Removed", "Loading", "OutOfMemory" (a fault that needed memory failed since the last one that got it), or "Running".</summary>
    public string Status => IsRemoved ? "Removed" : Loading ? "Loading" : _outOfMemory ? "OutOfMemory" : "Running";

    /// <summary>Set when a fault of this domain found no memory; cleared when a later one gets its frame.</summary>
    private volatile bool _outOfMemory;

    /// <summary>Marks the domain removed and gives back every frame it holds.</summary>
    internal void Release()
    {
        _removed = true;
        if (Qemu is not null)
        {
            ReleaseQemu();
            return;
        }
        for (long gfn = 0; gfn < _p2m.Length; gfn++)
        {
            ulong e = Lock(gfn);
            DropHeld(e);
            Unlock(gfn, 0);
        }
    }

    /// <summary>
    /// Lets go of what a locked page holds, for good: its frame (a QEMU guest's own frame is only forgotten: the memory
    /// is the guest's), its shared frame's reference, its encoding or its swap slot.
    /// </summary>
    internal void DropHeld(ulong e)
    {
        switch (PageEntry.State(e))
        {
            case PageState.Private:
                uint frame = PageEntry.Frame(e);
                if (Host.Frames.IsExternal(frame)) Host.Frames.ForgetExternal(frame);
                else Host.Frames.Free(frame);
                break;
            case PageState.Shared:
                Host.SharingIndexFor(Policy.TrustGroup).Release(PageEntry.Frame(e));
                break;
            case PageState.Patched:
            case PageState.Compressed:
                DropEncoded(e);
                break;
            case PageState.Swapped:
                Host.Reclaimer?.Swap.Release((uint)PageEntry.Payload(e));
                break;
        }
    }

    internal PageInfo DescribeLocked(long gfn, ulong e)
    {
        var state = PageEntry.State(e);
        int refs = 0;
        ulong? hash = null;
        uint? frame = null;
        if (state is PageState.Private or PageState.Shared)
        {
            uint f = PageEntry.Frame(e);
            frame = f;
            refs = Host.Frames.RefCount(f);
            hash = Sharing.PageHasher.Hash(Host.Frames.Span(f)); // a shared frame's is its stable table key too
        }
        var info = new PageInfo(Name, gfn, state, PageEntry.Category(e), (e & PageEntry.Referenced) != 0,
            (e & PageEntry.Modified) != 0, refs, hash, frame) { Host = Host.Name, Untouched = PageEntry.IsUntouched(e) };
        switch (state)
        {
            case PageState.Uniform:
                return info with { UniformWord = (uint)PageEntry.Payload(e) };
            case PageState.Swapped:
                return info with { SwapSlot = (long)PageEntry.Payload(e) };
            case PageState.Patched:
            {
                var blob = Host.Store.Get(PageEntry.Payload(e));
                var (refDomain, refGfn) = SharingIndex.UnpackPage(EncodedPage.ReferencePage(blob));
                uint reference = EncodedPage.ReferenceFrame(blob);
                bool inBlob = EncodedPage.ReferenceIsSharedBlob(blob);
                return info with
                {
                    StoredBytes = blob.Length,
                    Codec = "Delta",
                    ReferenceDomain = Host.TryGetDomainById(refDomain)?.Name ?? $"(removed domain {refDomain})",
                    ReferenceGfn = refGfn,
                    ReferenceCount = inBlob ? Host.SharedBlobs.Describe(reference, Host.Store, Host.Groups)?.References ?? 0 : Host.Frames.RefCount(reference),
                    SharedBlob = inBlob ? reference : null,
                };
            }
            case PageState.Compressed when PageEntry.IsGrouped(e):
            {
                uint id = PageEntry.GroupId(e);
                return Host.Groups.Describe(id) is { } group
                    ? info with
                    {
                        StoredBytes = group.MemoryBytes, Codec = group.Codec.ToString(), ReferenceCount = group.LiveCount, Group = id,
                        GroupMember = PageEntry.GroupMember(e),
                    }
                    : info;
            }
            case PageState.Compressed when PageEntry.IsSharedBlob(e):
            {
                uint id = (uint)PageEntry.Payload(e);
                return Host.SharedBlobs.Describe(id, Host.Store, Host.Groups) is { } blob
                    ? info with
                    {
                        StoredBytes = (int)Math.Round(blob.Length), Codec = blob.Codec.ToString(), ReferenceCount = blob.References, SharedBlob = id,
                        Group = blob.Group, GroupMember = blob.GroupMember,
                    }
                    : info;
            }
            case PageState.Compressed:
            {
                var blob = Host.Store.Get(PageEntry.Payload(e));
                return info with { StoredBytes = blob.Length, Codec = EncodedPage.Algorithm(blob).ToString() };
            }
            default:
                return info;
        }
    }

    internal void ThrowIfRemoved()
    {
        if (_removed)
            throw new DEException("DomainRemoved", DEErrorKind.ObjectNotFound,
                $"Domain '{Name}' has been removed.", Name);
    }

    private void CheckGfn(long gfn)
    {
        if ((ulong)gfn >= (ulong)PageCount)
            throw new DEException("GfnOutOfRange", DEErrorKind.InvalidArgument,
                $"Guest frame {gfn} is outside domain '{Name}', which has pages 0 to {PageCount - 1}.", gfn);
    }

    private DEException UnsupportedState(long gfn, ulong e) =>
        new("PageStateUnsupported", DEErrorKind.NotImplemented,
            $"Page {gfn} of domain '{Name}' is in state {PageEntry.State(e)}, which this version cannot serve.", gfn);
}
