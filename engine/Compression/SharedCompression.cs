using DifferenceEngine.Clock;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Patching;

namespace DifferenceEngine.Compression;

/// <summary>A cold Shared page a pass saw, with the frame it shares (16 bytes).</summary>
internal readonly record struct SharedCandidate(uint Frame, int DomainId, long Gfn);

/// <summary>
/// The cold Shared pages one pass collects, appended from the pass's workers. The buffer holds memory only during a
/// pass: it is native memory taken at the first append (room for what the pass before collected, so a pass like the
/// last one does not grow it) and given back by <see cref="EndPass"/>, so a host between passes holds none of it. It is
/// counted in the engine's metadata while it exists.
/// </summary>
/// <remarks>Session 21: kept between passes it was the shared blobs' line's largest part (190-290 KB at rest on
/// Compare's inputs, room for twice the last pass's candidates).</remarks>
internal sealed unsafe class SharedCandidates : IDisposable
{
    /// <summary>Least room the buffer takes when it is made.</summary>
    private const int MinimumCapacity = 256;

    private readonly Lock _gate = new();
    private SharedCandidate* _items;
    private int _capacity;
    private int _count;
    private int _nextCapacity = MinimumCapacity;

    public int Count => _count;

    /// <summary>Bytes the buffer holds now: none between passes.</summary>
    public long MetadataBytes
    {
        get { lock (_gate) return (long)_capacity * sizeof(SharedCandidate); }
    }

    /// <summary>Empties the buffer (a pass's start), keeping whatever memory it holds.</summary>
    public void Clear() => _count = 0;

    /// <summary>A pass's end (or failure): empties the buffer and frees its memory; the next pass's buffer starts with room for this one's candidates.</summary>
    public void EndPass()
    {
        lock (_gate)
        {
            if (_count > 0) _nextCapacity = (int)Math.Max(MinimumCapacity, System.Numerics.BitOperations.RoundUpToPowerOf2((uint)_count));
            Free();
        }
    }

    /// <summary>Appends a worker's batch.</summary>
    public void Add(ReadOnlySpan<SharedCandidate> batch)
    {
        if (batch.IsEmpty) return;
        lock (_gate)
        {
            if (_count + batch.Length > _capacity)
            {
                int capacity = Math.Max(Math.Max(_nextCapacity, _capacity * 2), _count + batch.Length);
                _items = (SharedCandidate*)System.Runtime.InteropServices.NativeMemory.Realloc(_items, (nuint)capacity * (nuint)sizeof(SharedCandidate));
                _capacity = capacity;
            }
            batch.CopyTo(new Span<SharedCandidate>(_items + _count, batch.Length));
            _count += batch.Length;
        }
    }

    /// <summary>The pass's candidates; only while no worker appends.</summary>
    public Span<SharedCandidate> Items => new(_items, _count);

    public void Dispose()
    {
        lock (_gate) Free();
    }

    private void Free()
    {
        System.Runtime.InteropServices.NativeMemory.Free(_items);
        _items = null;
        _capacity = 0;
        _count = 0;
    }
}

/// <summary>
/// Compression of cold shared frames, run once per pass after the pages are swept. A shared frame is compressed when
/// every reference it has is a page the pass saw cold (C4, unmodified) in a domain with compression on: then the
/// frame is compressed once into a blob of the compact store, each of those pages names the blob
/// (<see cref="SharedBlobTable"/>), and the frame is freed. A frame that serves a patch as its reference has a
/// reference that is not a page, so it is never compressed.
/// </summary>
/// <remarks>
/// <para>The engine keeps no reverse map from frames to the pages that share them; the pass's sweep is that map for
/// the moment it needs one. Every page of a group is then try-locked (never waited for: a busy page leaves its frame
/// for the next pass) and checked again, and the frame's reference count is compared with the group's size under the
/// sharing index's stripe lock, the only place it changes: equal means no page or patch outside the group holds the
/// frame, and none can take it while the locks are held.</para>
/// <para>The codec is that of the group's first domain (lowest id; with page groups on, the groups' codec, Zstd by default: a shared blob is never grouped) and the threshold the strictest of the group's
/// domains. A page that names the blob gets a frame of its own again on its next access (a Decompress fault).</para>
/// <para>Allocates nothing per page: the candidates live in the pass's buffer (native memory, freed when the pass ends),
/// and groups are found in place.</para>
/// </remarks>
internal static class SharedCompression
{
    [ThreadStatic] private static ulong[]? t_entries;
    [ThreadStatic] private static Domain?[]? t_domains;

    private static readonly Comparison<SharedCandidate> ByFrameThenPage = static (a, b) =>
        a.Frame != b.Frame ? a.Frame.CompareTo(b.Frame)
        : a.DomainId != b.DomainId ? a.DomainId.CompareTo(b.DomainId)
        : a.Gfn.CompareTo(b.Gfn);

    /// <summary>Compresses the frames whose every sharer is among <paramref name="candidates"/> (sorted in place).</summary>
    public static EncodeCounters Run(DEHost host, SharedCandidates candidates, int parallelism)
    {
        var total = new EncodeCounters();
        int n = candidates.Count;
        if (n == 0) return total;
        candidates.Items.Sort(ByFrameThenPage);
        int chunks = Math.Max(1, Math.Min(parallelism * 4, n / 64));
        var gate = new object();
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, k =>
        {
            var items = candidates.Items;
            // Chunk k takes the groups that start in [k n / chunks, (k + 1) n / chunks).
            int start = GroupStart(items, (int)((long)k * n / chunks));
            int end = GroupStart(items, (int)((long)(k + 1) * n / chunks));
            var c = new EncodeCounters();
            for (int i = start; i < end;)
            {
                int j = i + 1;
                while (j < items.Length && items[j].Frame == items[i].Frame) j++;
                // The quick, unlocked filter: a frame with more references than the pass saw cold pages stays.
                if (host.Frames.RefCount(items[i].Frame) == j - i)
                    TryCompressGroup(host, items.Slice(i, j - i), ref c);
                i = j;
            }
            lock (gate) total.Add(c);
        });
        return total;
    }

    /// <summary>The first index at or after <paramref name="i"/> where a group (a run of one frame) begins.</summary>
    private static int GroupStart(Span<SharedCandidate> items, int i)
    {
        while (i > 0 && i < items.Length && items[i].Frame == items[i - 1].Frame) i++;
        return i;
    }

    private static void TryCompressGroup(DEHost host, Span<SharedCandidate> group, ref EncodeCounters c)
    {
        int count = group.Length;
        if (t_entries is null || t_entries.Length < count)
        {
            t_entries = new ulong[Math.Max(count, 64)];
            t_domains = new Domain?[Math.Max(count, 64)];
        }
        var entries = t_entries;
        var domains = t_domains!;
        int taken = 0;
        try
        {
            for (; taken < count; taken++)
            {
                var d = host.TryGetDomainById(group[taken].DomainId);
                if (d is null || d.IsRemoved || group[taken].Gfn >= d.PageCount) return;
                domains[taken] = d;
                if (!d.TryLock(group[taken].Gfn, out entries[taken]))
                {
                    c.Contended++;
                    return;
                }
            }
            uint frame = group[0].Frame;
            var first = domains[0]!;
            double threshold = double.MaxValue;
            for (int i = 0; i < count; i++)
            {
                var d = domains[i]!;
                ulong e = entries[i];
                if (d.IsRemoved || !d.Policy.CompressionEnabled || d.Policy.TrustGroup != first.Policy.TrustGroup
                    || PageEntry.State(e) != PageState.Shared || PageEntry.Frame(e) != frame
                    || (e & (PageEntry.Modified | PageEntry.Referenced)) != 0 || !PageClock.MayCompressOrSwap(PageEntry.Category(e)))
                    return;
                threshold = Math.Min(threshold, d.Policy.CompressionThreshold);
            }
            var frames = host.Frames;
            var index = host.SharingIndexFor(first.Policy.TrustGroup);
            ulong hash = index.HashOf(frame);
            lock (index.Stable.StripeLock(hash))
            {
                if (frames.RefCount(frame) != count) return;
                var page = frames.Span(frame);
                byte[] blob = Scratch.A;
                // The first domain's codecs (with page groups on, the groups': a shared blob is never grouped; else its own),
                // under the strictest threshold.
                if (!CompressionPass.TryEncode(first.Policy, threshold, page, blob, out int length, groupCodecFirst: true))
                {
                    // Not tried again until one of the pages is written or a domain's compression policy changes.
                    for (int i = 0; i < count; i++) entries[i] |= PageEntry.Incompressible;
                    c.Incompressible += count;
                    return;
                }
                var table = host.SharedBlobs;
                uint id = table.Reserve();
                if (!host.Store.TryStore(blob.AsSpan(0, length), out ulong handle))
                {
                    table.Abandon(id);
                    c.StoreFull++;
                    return;
                }
                table.Publish(id, handle, count);
                index.Stable.RemoveIf(hash, frame);
                frames.Free(frame);
                for (int i = 0; i < count; i++) entries[i] = PageEntry.WithSharedBlob(entries[i], id);
                c.SharedFramesCompressed++;
                c.PagesCompressed += count;
                c.CompressedBytes += length;
            }
        }
        finally
        {
            for (int i = 0; i < taken; i++) domains[i]!.Unlock(group[i].Gfn, entries[i]);
            // The one whose lock failed too: the thread-static array must not keep a removed domain alive.
            Array.Clear(domains, 0, Math.Min(taken + 1, count));
        }
    }
}
