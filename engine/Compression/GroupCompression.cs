using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.CompilerServices;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Paging;
using DifferenceEngine.Patching;
using DifferenceEngine.Sharing;
using DifferenceEngine.Store;

namespace DifferenceEngine.Compression;

/// <summary>
/// Page groups (docs/ARCHITECTURE.md, "Page groups"): a pass gathers the long-cold single compressed pages of a slice in
/// gfn order and compresses them together with the domain's group codec; a fault on a member decodes the group as far
/// as that page; a group that has lost enough members to hold more than its live members took alone is dissolved back
/// into single pages, which a later pass groups again with their neighbours.
/// </summary>
/// <remarks>
/// <para>The payload of a group of n pages: n checksums (32 bits of xxHash3 of each page, seeded with its domain and
/// gfn), n gfns (8 bytes each, little-endian), then the n pages in member order. The stream (the compressed payload) is cut into
/// pieces of at most 4096 bytes in the compact store; the group's record (<see cref="PageGroupTable"/>) keeps the
/// stream's length and an xxHash3 of it, checked before every decode, so a corrupted piece is found before its bytes
/// are trusted, and every page decoded is checked against its own checksum.</para>
/// <para>Forming a group never waits on a page: each member is locked in turn to decode its single blob, the group is
/// compressed with no lock held, then every member is try-locked and must be exactly as it was; a page the guest
/// touched meanwhile (or one that is busy) abandons the group, and its pieces are freed. Members' single blobs are
/// freed only once the group is published.</para>
/// </remarks>
internal static class GroupCompression
{
    /// <summary>
    /// The domain id a group of shared blobs is recorded under (<see cref="SharedGrouping"/>): no domain has it (ids run
    /// from 1), and its members are named by blob id where a page group's are named by gfn.
    /// </summary>
    public const int SharedBlobsDomain = 0;

    /// <summary>
    /// Payload bytes per member before the pages: a 32-bit checksum and a gfn (8 bytes). The checksums come first, then
    /// the gfns (<see cref="WriteMemberHeader"/>); 16 bytes until session 24, when the checksum went from 64 to 32 bits:
    /// checksums do not compress, and 4 bytes a member were 0.16 MiB of the guest images' store.
    /// </summary>
    public const int HeaderPerMember = 12;

    /// <summary>Largest payload a group has.</summary>
    public const int MaxPayload = PageGroupTable.MaxMembers * (HeaderPerMember + PageGeometry.PageSize);

    [ThreadStatic] private static byte[]? t_plain;
    [ThreadStatic] private static nint t_bounce;

    /// <summary>A page-aligned page of native memory per thread, for the swap file's direct I/O (never freed; wiped after use).</summary>
    internal static unsafe Span<byte> Bounce
    {
        get
        {
            if (t_bounce == 0) t_bounce = (nint)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(PageGeometry.PageSize, PageGeometry.PageSize);
            return new Span<byte>((void*)t_bounce, PageGeometry.PageSize);
        }
    }
    [ThreadStatic] private static byte[]? t_stream;

    /// <summary>Per-thread room for a whole group's payload.</summary>
    public static byte[] Plain => t_plain ??= new byte[MaxPayload];

    [ThreadStatic] private static byte[]? t_faultPlain;
    [ThreadStatic] private static DecodedGroup t_decoded;

    /// <summary>
    /// The group whose payload this thread's last group fault decoded, still in <see cref="t_faultPlain"/>: its table's
    /// serial (one table per host), id, the checksum and length of its stream and the handle of its first piece (which
    /// name its bytes: a group's stream never changes while it lives, and an id used again names another stream, whose
    /// checksum is seeded with the domain and id, in pieces whose store handles carry their slots' generations), codec
    /// and member count, and how many payload bytes are decoded. A group whose stream is in the swap file is decoded
    /// afresh every time (a swap slot has no generation).
    /// </summary>
    private readonly record struct DecodedGroup(long Table, uint Id, uint StreamHash, int Length, ulong FirstPiece, bool InSwap,
        CompressionAlgorithm Codec, int Count, int Decoded);

    /// <summary>Per-thread room for a group's stream while it is compressed or decoded.</summary>
    public static byte[] Stream => t_stream ??= new byte[Math.Max(GroupCodec.Bound(MaxPayload), PageGroupTable.MaxStreamBytes)];

    /// <summary>The gfn (for a group of shared blobs, the blob id) member <paramref name="k"/> of a group of <paramref name="count"/> was stored with (payload header).</summary>
    internal static long MemberGfn(ReadOnlySpan<byte> payload, int count, int k) =>
        (long)BinaryPrimitives.ReadUInt64LittleEndian(payload[(count * 4 + k * 8)..]);

    /// <summary>The checksum member <paramref name="k"/>'s page was stored with (payload header).</summary>
    internal static uint MemberChecksum(ReadOnlySpan<byte> payload, int k) => BinaryPrimitives.ReadUInt32LittleEndian(payload[(k * 4)..]);

    /// <summary>Writes member <paramref name="k"/>'s checksum and gfn into the header of a group of <paramref name="count"/>.</summary>
    internal static void WriteMemberHeader(Span<byte> payload, int count, int k, uint checksum, long gfn)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(payload[(k * 4)..], checksum);
        BinaryPrimitives.WriteUInt64LittleEndian(payload[(count * 4 + k * 8)..], (ulong)gfn);
    }

    /// <summary>Member <paramref name="k"/>'s page in a group's payload.</summary>
    private static Span<byte> MemberPage(Span<byte> payload, int count, int k) =>
        payload.Slice(count * HeaderPerMember + k * PageGeometry.PageSize, PageGeometry.PageSize);

    /// <summary>The checksum a member's page is stored with: 32 bits of xxHash3 seeded with its domain and gfn.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint PageChecksum(ReadOnlySpan<byte> page, int domainId, long gfn) =>
        (uint)XxHash3.HashToUInt64(page, (long)(((ulong)domainId << 40) ^ (ulong)gfn ^ 0x67726F7570000000UL));

    /// <summary>
    /// The checksum of a group's stream, bound to its domain and id: 32 bits of xxHash3 (a corrupt stream that slipped
    /// past it would still have to pass each decoded page's own 32-bit checksum; 4 bytes a group, session 24).
    /// </summary>
    public static uint StreamChecksum(ReadOnlySpan<byte> stream, int domainId, uint id) =>
        (uint)XxHash3.HashToUInt64(stream, (long)(((ulong)(uint)domainId << 32) | id));

    /// <summary>The idle sweeps after which a compressed page of this policy may be grouped.</summary>
    public static int GroupAfterIdle(DomainPolicy policy) => Math.Min(PageEntry.MaxIdle, policy.C4Sweeps + policy.GroupAfterSweeps);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Eligible(ulong e, int idle) =>
        PageEntry.IsSingleCompressed(e) && (e & (PageEntry.Incompressible | PageEntry.Modified | PageEntry.Referenced)) == 0
        && PageEntry.Category(e) == PageCategory.C4 && PageEntry.Idle(e) >= idle;

    /// <summary>
    /// Whether a private page goes into a group straight from its frame, not through a single blob first: a page the
    /// compression phase is about to compress (examined by an earlier pass, cold, not marked incompressible) that has
    /// already stayed untouched as long as a compressed page must before it is grouped (<see cref="GroupAfterIdle"/>;
    /// so with C4Sweeps and GroupAfterSweeps of 1, every page a pass compresses). Compressing it alone would be undone
    /// in the same slice: the single blob stored, decoded again and freed. The compression phase marks such pages in its slice's
    /// bitmap (<see cref="Deferred"/>) and leaves them to <see cref="GroupSlice"/>. Not for
    /// a QEMU guest's page (its writes do not go through the page's lock, so a group could not tell a page written while
    /// it was compressed; those pages are compressed alone first, under write-protection, as before), nor without page
    /// groups.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool GoesStraightToGroup(DomainPolicy policy, bool qemu, ulong e) =>
        !qemu && policy.GroupSize >= 2 && policy.CompressionEnabled && FrameEligible(e, GroupAfterIdle(policy));

    [ThreadStatic] private static ulong[]? t_deferred;

    /// <summary>
    /// This thread's bitmap of the pages of a slice of <paramref name="pages"/> pages that the compression phase left to
    /// the slice's grouping (bit gfn - start), cleared. Only those go into groups from their frames: a page the same
    /// phase examined for the first time (and so waits a pass, for sharing) never does.
    /// </summary>
    public static Span<ulong> Deferred(long pages)
    {
        int words = (int)((pages + 63) / 64);
        if (t_deferred is null || t_deferred.Length < words) t_deferred = new ulong[Math.Max(words, 128)];
        var bits = t_deferred.AsSpan(0, words);
        bits.Clear();
        return bits;
    }

    /// <summary>Marks page <paramref name="index"/> of its slice (gfn - start) in a <see cref="Deferred"/> bitmap.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Defer(Span<ulong> deferred, long index) => deferred[(int)(index >> 6)] |= 1UL << (int)(index & 63);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsDeferred(ReadOnlySpan<ulong> deferred, long index) => (deferred[(int)(index >> 6)] & (1UL << (int)(index & 63))) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool FrameEligible(ulong e, int idle) =>
        PageEntry.State(e) == PageState.Private
        && (e & (PageEntry.Incompressible | PageEntry.Modified | PageEntry.Referenced | PageEntry.SharingSeen)) == PageEntry.SharingSeen
        && PageEntry.Category(e) == PageCategory.C4 && PageEntry.Idle(e) >= idle;

    /// <summary>
    /// Groups the long-cold single compressed pages of one slice of a domain, and the private pages that go into a group
    /// straight from their frames (<see cref="GoesStraightToGroup"/>: the compression phase left them for this); returns
    /// pages grouped. A page from a frame that ends up in no group (the last of the slice, or a group refused) is
    /// compressed alone here, as the compression phase would have.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static long GroupSlice(DEHost host, Domain domain, DomainPolicy policy, long start, long end, ReadOnlySpan<ulong> deferred,
        ref EncodeCounters c)
    {
        int size = policy.GroupSize;
        // Without groups the compression phase deferred nothing (the same policy): nothing to compress alone either.
        if (size < 2 || !policy.CompressionEnabled) return 0;
        int idle = GroupAfterIdle(policy);
        var store = host.Store;
        byte[] plain = Plain;
        Span<long> gfns = stackalloc long[PageGroupTable.MaxMembers];
        Span<ulong> entries = stackalloc ulong[PageGroupTable.MaxMembers];
        int n = 0, singles = 0;
        long grouped = 0;
        int pagesAt = size * HeaderPerMember;
        var choice = new GroupCodecChoice();
        Span<SharedNomination> nominated = stackalloc SharedNomination[64];
        int nominations = 0;
        for (long gfn = start; gfn < end; gfn++)
        {
            ulong peek = domain.PeekEntry(gfn);
            bool fromFrame = IsDeferred(deferred, gfn - start);
            if (!fromFrame && !Eligible(peek, idle))
            {
                if (Eligible(peek, 0)) c.PagesAwaitingGroup++; // cold and compressed, not idle long enough yet
                else if (SharedGrouping.AwaitsGroup(host, peek))
                {
                    if (PageEntry.Idle(peek) < idle)
                    {
                        c.PagesAwaitingGroup++;
                        continue;
                    }
                    // Its shared blob, as long cold: grouped with other such blobs after the sweep (SharedGrouping).
                    if (nominations == nominated.Length)
                    {
                        host.NominateSharedBlobs(nominated);
                        nominations = 0;
                    }
                    nominated[nominations++] = SharedGrouping.Nomination(domain.Id, gfn, (uint)PageEntry.Payload(peek));
                }
                continue;
            }
            ulong e = domain.Lock(gfn);
            if (domain.IsRemoved)
            {
                domain.Unlock(gfn, e);
                return grouped;
            }
            if (fromFrame ? !FrameEligible(e, idle) : !Eligible(e, idle))
            {
                domain.Unlock(gfn, e);
                continue;
            }
            var member = plain.AsSpan(pagesAt + n * PageGeometry.PageSize, PageGeometry.PageSize);
            var page = fromFrame ? host.Frames.Span(PageEntry.Frame(e)) : default;
            int length;
            bool compresses = true;
            try
            {
                // What the page takes alone, by the compression phase's own rule (the fallback codec included); no blob
                // is kept. A page that rule refuses is marked incompressible and stays a frame, as that phase leaves it.
                if (fromFrame)
                {
                    compresses = CompressionPass.TryCompressBody(policy, policy.CompressionThreshold, page, Patching.Scratch.C, out int written, out _);
                    length = EncodedPage.CompressedHeader + written;
                }
                else length = store.LengthOf(PageEntry.Payload(e));
            }
            catch
            {
                domain.Unlock(gfn, e); // an unexpected failure (a bug) leaves the page as it was, and not locked for good
                throw;
            }
            if (!compresses)
            {
                c.Incompressible++;
                domain.Unlock(gfn, e | PageEntry.Incompressible);
                continue;
            }
            if (n > 0 && singles + length > PageGroupTable.MaxStreamBytes)
            {
                // The group has as much as its stream can surely hold: close it and start the next with this page.
                domain.Unlock(gfn, e);
                grouped += Form(host, domain, gfns[..n], entries[..n], plain, pagesAt, singles, ref choice, ref c);
                n = singles = 0;
                gfn--;
                continue;
            }
            bool read;
            try
            {
                read = fromFrame ? page.TryCopyTo(member) : domain.TryDecodeSingle(gfn, store.Get(PageEntry.Payload(e)), member);
            }
            finally
            {
                domain.Unlock(gfn, e);
            }
            if (!read) continue; // a corrupt blob is left for its fault to report
            gfns[n] = gfn;
            entries[n] = e;
            singles += length;
            if (++n == size)
            {
                grouped += Form(host, domain, gfns[..n], entries[..n], plain, pagesAt, singles, ref choice, ref c);
                n = singles = 0;
            }
        }
        if (n >= 2) grouped += Form(host, domain, gfns[..n], entries[..n], plain, pagesAt, singles, ref choice, ref c);
        else if (n == 1) LeaveSingle(host, domain, gfns[..1], entries[..1], refused: false, ref c);
        host.NominateSharedBlobs(nominated[..nominations]);
        return grouped;
    }

    /// <summary>
    /// Gathered members left out of a group, each as the compression phase would leave it: one gathered from its frame
    /// (a private entry) and still exactly as gathered is compressed alone (single blob, or marked incompressible),
    /// waiting for its lock as that phase does. With <paramref name="refused"/> (the group was no smaller than its pages
    /// alone) every member that is then a single blob is also marked not to be grouped again until written (bit 15); a
    /// member that was a single blob already is marked only if it is free and unchanged.
    /// </summary>
    private static void LeaveSingle(DEHost host, Domain domain, ReadOnlySpan<long> gfns, ReadOnlySpan<ulong> entries, bool refused,
        ref EncodeCounters c)
    {
        for (int k = 0; k < gfns.Length; k++)
        {
            if (PageEntry.State(entries[k]) != PageState.Private)
            {
                if (refused && domain.TryLock(gfns[k], out ulong single))
                    domain.Unlock(gfns[k], single == entries[k] ? single | PageEntry.Incompressible : single);
                continue;
            }
            ulong now = domain.Lock(gfns[k]);
            if (now != entries[k] || domain.IsRemoved)
            {
                domain.Unlock(gfns[k], now);
                continue;
            }
            ulong after;
            try
            {
                after = CompressionPass.TryCompress(host, domain, gfns[k], now, ref c);
            }
            catch
            {
                domain.Unlock(gfns[k], now); // an unexpected failure (a bug) leaves the page as it was, and not locked for good
                throw;
            }
            if (refused && PageEntry.IsSingleCompressed(after)) after |= PageEntry.Incompressible;
            domain.Unlock(gfns[k], after);
        }
    }

    /// <summary>
    /// Compresses the gathered pages (at <paramref name="pagesAt"/> in <paramref name="plain"/>) as one group and, when
    /// every member is still as gathered, makes them its members; returns pages grouped.
    /// </summary>
    private static long Form(DEHost host, Domain domain, ReadOnlySpan<long> gfns, ReadOnlySpan<ulong> entries, byte[] plain,
        int pagesAt, int singles, ref GroupCodecChoice choice, ref EncodeCounters c)
    {
        int n = gfns.Length;
        int header = n * HeaderPerMember;
        // The header goes right before the pages: move the pages down when the group is smaller than planned.
        if (header != pagesAt) plain.AsSpan(pagesAt, n * PageGeometry.PageSize).CopyTo(plain.AsSpan(header));
        for (int k = 0; k < n; k++)
        {
            WriteMemberHeader(plain, n, k, PageChecksum(MemberPage(plain, n, k), domain.Id, gfns[k]), gfns[k]);
        }
        var payload = plain.AsSpan(0, header + n * PageGeometry.PageSize);
        var codec = domain.Policy.GroupAlgorithm;
        byte[] stream = Stream;
        if (!GroupCodec.TryCompress(codec, payload, stream, ref choice, Math.Min(singles, PageGroupTable.MaxStreamBytes + 1), out int written) || written > PageGroupTable.MaxStreamBytes || written >= singles)
        {
            // Not smaller than the pages alone: they stay single (those from frames are compressed alone now), and are not
            // tried again until written.
            LeaveSingle(host, domain, gfns, entries, refused: true, ref c);
            c.GroupsRefused++;
            return 0;
        }
        host.GroupFormingHook?.Invoke(domain, gfns.ToArray());
        var table = host.Groups;
        var store = host.Store;
        uint id = table.Reserve();
        uint hash = StreamChecksum(stream.AsSpan(0, written), domain.Id, id);
        Span<ulong> pieces = stackalloc ulong[PageGroupTable.MaxPieces];
        if (!TryStorePieces(store, stream.AsSpan(0, written), pieces, out int pieceCount))
        {
            table.Abandon(id);
            c.StoreFull++;
            LeaveSingle(host, domain, gfns, entries, refused: false, ref c); // as they would have been: the store decides
            return 0;
        }
        // Every member must still be exactly as gathered (a guest access or a busy page abandons the group).
        int locked = 0;
        for (; locked < n; locked++)
        {
            if (!domain.TryLock(gfns[locked], out ulong now)) break;
            if (now != entries[locked] || domain.IsRemoved)
            {
                domain.Unlock(gfns[locked], now);
                break;
            }
        }
        if (locked < n)
        {
            for (int k = 0; k < locked; k++) domain.Unlock(gfns[k], entries[k]);
            for (int p = 0; p < pieceCount; p++) store.Free(pieces[p]);
            table.Abandon(id);
            c.Contended++;
            // Those from frames still as gathered are compressed alone, as the compression phase would have (a page the
            // guest touched meanwhile is no longer as gathered, and is left as it is now).
            LeaveSingle(host, domain, gfns, entries, refused: false, ref c);
            return 0;
        }
        table.Publish(id, domain.Id, codec, n, pieces[..pieceCount], written, hash, singles);
        for (int k = 0; k < n; k++)
        {
            if (PageEntry.State(entries[k]) == PageState.Private)
            {
                // Straight from its frame: compressed in this group (counted as compressed; its bytes are the group's, in
                // GroupStreamBytes, not CompressedBytes, which counts single blobs).
                host.Frames.Free(PageEntry.Frame(entries[k]));
                c.PagesCompressed++;
            }
            else store.Free(PageEntry.Payload(entries[k]));
            domain.Unlock(gfns[k], PageEntry.WithGroup(entries[k], id, k));
        }
        c.GroupsFormed++;
        c.PagesGrouped += n;
        c.GroupStreamBytes += written;
        c.GroupSinglesBytes += singles;
        return n;
    }

    /// <summary>
    /// Stores a group's stream cut into pieces of at most 4096 bytes (the store's largest blob) into
    /// <paramref name="pieces"/>; false, storing nothing, when the store is full.
    /// </summary>
    internal static bool TryStorePieces(CompactStore store, ReadOnlySpan<byte> stream, Span<ulong> pieces, out int count)
    {
        count = (stream.Length + CompactStore.MaxBlobLength - 1) / CompactStore.MaxBlobLength;
        for (int p = 0; p < count; p++)
        {
            int at = p * CompactStore.MaxBlobLength;
            if (store.TryStore(stream.Slice(at, Math.Min(CompactStore.MaxBlobLength, stream.Length - at)), out pieces[p])) continue;
            for (int q = 0; q < p; q++) store.Free(pieces[q]);
            return false;
        }
        return true;
    }

    /// <summary>
    /// Copies group <paramref name="id"/>'s stream for member <paramref name="member"/> of a page whose lock the caller
    /// holds, checks the stream, decodes it (a Zstd group whole, an LZ4 group as far as that page), checks the page, and
    /// copies it into <paramref name="page"/>. The group is not changed (see <see cref="PageGroupTable.LeaveLocked"/>).
    /// The decoded payload stays in a per-thread buffer: a fault on a neighbour that is still a member takes its page
    /// from there without reading or decoding the stream, which cannot have changed (the buffer is named by the stream's
    /// checksum and length; the page's gfn and checksum, from the same payload, are checked again, which guards the copy
    /// out, not the payload).
    /// Throws DEException describing what failed.
    /// </summary>
    public static void DecodeMember(DEHost host, int domainId, long gfn, uint id, int member, Span<byte> page)
    {
        var table = host.Groups;
        byte[] stream = Stream;
        byte[] buffer = t_faultPlain ??= new byte[MaxPayload];
        GroupRecord r;
        int length = 0;
        bool kept;
        ulong firstPiece;
        var last = t_decoded;
        lock (table.StripeLock(id))
        {
            if (!table.IsMemberLocked(id, member))
                throw new GroupDecodeException($"its page group {id} does not hold it (member {member})");
            r = table.RecordLocked(id);
            firstPiece = table.PieceLocked(id, 0);
            // A neighbour of the page this thread's last group fault decoded: its bytes are already decoded.
            kept = last.Table == table.Serial && last.Id == id && last.StreamHash == r.StreamHash && last.Length == r.Length
                && last.FirstPiece == firstPiece && !r.InSwap && !last.InSwap
                && last.Codec == r.Codec && last.Count == r.Count && last.Decoded >= r.Count * HeaderPerMember + (member + 1) * PageGeometry.PageSize;
            if (!kept)
            {
                try
                {
                    length = table.ReadStreamLocked(id, host.Store, host.Reclaimer?.Swap, stream, Bounce);
                }
                catch (Exception ex) when (ex is IOException or InvalidDataException)
                {
                    throw new GroupDecodeException($"its page group {id} cannot be read back from the swap file: {ex.Message}", ex);
                }
            }
        }
        if (r.DomainId != domainId)
            throw new GroupDecodeException($"its page group {id} belongs to domain id {r.DomainId}");
        int header = r.Count * HeaderPerMember;
        int decoded = last.Decoded;
        if (!kept)
        {
            t_decoded = default; // the buffer is about to hold another group
            // The stream's checksum first: a corrupt group is refused whichever member is asked for, before its bytes are
            // decoded (about a microsecond for a 16 KiB stream); then the page's own checksum vouches for the decoding.
            if (length != r.Length || StreamChecksum(stream.AsSpan(0, length), domainId, id) != r.StreamHash)
                throw new GroupDecodeException($"the stored bytes of its page group {id} do not match their checksum (the group is corrupt)");
            // Zstd decodes a group as one block, so a prefix costs what the whole payload does: all of it is decoded and
            // kept for the neighbours' faults. LZ4 stops at the page wanted.
            decoded = header + (r.Codec == CompressionAlgorithm.Zstd ? r.Count : member + 1) * PageGeometry.PageSize;
        }
        var plain = buffer.AsSpan(0, decoded);
        string? wrong = null;
        Exception? inner = null;
        try
        {
            if (!kept) GroupCodec.DecodePrefix(r.Codec, stream.AsSpan(0, length), plain);
            if (MemberGfn(plain, r.Count, member) != gfn)
                wrong = $"member {member} decodes as another page";
            else if (PageChecksum(MemberPage(plain, r.Count, member), domainId, gfn) != MemberChecksum(plain, member))
                wrong = "the decoded bytes do not match the page's stored checksum";
        }
        catch (DEException ex)
        {
            wrong = $"it does not decode ({ex.Message})";
            inner = ex;
        }
        if (wrong is not null)
        {
            t_decoded = default;
            throw new GroupDecodeException($"its page group {id} is stored intact but {wrong}", inner);
        }
        if (!kept) t_decoded = new DecodedGroup(table.Serial, id, r.StreamHash, r.Length, firstPiece, r.InSwap, r.Codec, r.Count, decoded);
        MemberPage(plain, r.Count, member).CopyTo(page);
    }

    /// <summary>
    /// After a pass: dissolves the groups that lost members and now hold more than their live members took alone. Each
    /// live member whose page is not busy goes back to a single blob with its domain's codec (so a later pass can group
    /// it with other neighbours); returns pages so moved.
    /// </summary>
    public static long Repack(DEHost host, List<uint> scratch, ref EncodeCounters c)
    {
        scratch.Clear();
        host.Groups.TakeDirty(scratch);
        long moved = 0;
        foreach (uint id in scratch) moved += Dissolve(host, id, ref c);
        scratch.Clear();
        return moved;
    }

    private static long Dissolve(DEHost host, uint id, ref EncodeCounters c)
    {
        var table = host.Groups;
        byte[] stream = Stream;
        GroupRecord r;
        int length;
        lock (table.StripeLock(id))
        {
            if (!table.IsLiveLocked(id)) return 0;
            r = table.RecordLocked(id);
            if (!r.PinsMemory) return 0; // (a group in the swap file holds no memory)
            length = table.ReadStreamLocked(id, host.Store, null, stream, Bounce);
        }
        var domain = r.DomainId == SharedBlobsDomain ? null : host.TryGetDomainById(r.DomainId);
        if (r.DomainId != SharedBlobsDomain && (domain is null || domain.IsRemoved)) return 0;
        if (length != r.Length || StreamChecksum(stream.AsSpan(0, length), r.DomainId, id) != r.StreamHash) return 0; // its faults report it
        int header = r.Count * HeaderPerMember;
        var plain = Plain.AsSpan(0, header + r.Count * PageGeometry.PageSize);
        try
        {
            GroupCodec.DecodePrefix(r.Codec, stream.AsSpan(0, length), plain);
        }
        catch (DEException)
        {
            return 0;
        }
        if (domain is null) return SharedGrouping.Dissolve(host, id, r, plain, ref c); // a group of shared blobs
        long moved = 0;
        bool skipped = false;
        var policy = domain.Policy;
        byte[] blob = Scratch.A;
        for (int k = 0; k < r.Count; k++)
        {
            if ((r.Live & (1u << k)) == 0) continue;
            long gfn = MemberGfn(plain, r.Count, k);
            if ((ulong)gfn >= (ulong)domain.PageCount || !domain.TryLock(gfn, out ulong e))
            {
                c.Contended++;
                skipped = true;
                continue;
            }
            try
            {
                if (!PageEntry.IsGrouped(e) || PageEntry.GroupId(e) != id || PageEntry.GroupMember(e) != k) continue;
                var page = MemberPage(plain, r.Count, k);
                if (PageChecksum(page, r.DomainId, gfn) != MemberChecksum(plain, k)) continue;
                // Stays in the group when it no longer compresses alone or the store is full: the group is judged again.
                if (!CompressionPass.TryEncode(policy, page, blob, out int blobLength)) continue;
                if (!host.Store.TryStore(blob.AsSpan(0, blobLength), out ulong handle))
                {
                    c.StoreFull++;
                    skipped = true;
                    continue;
                }
                // The reclaimer may have moved the group to swap meanwhile: its last member then releases the slots.
                lock (table.StripeLock(id)) table.LeaveLocked(id, k, host.Store, host.Reclaimer?.Swap);
                e = PageEntry.WithPayload(e, PageState.Compressed, handle);
                moved++;
            }
            finally
            {
                domain.Unlock(gfn, e);
            }
        }
        if (moved > 0) c.GroupsDissolved++;
        c.PagesUngrouped += moved;
        // A member left behind (busy, or the store full) keeps the group on the list for the next pass.
        if (skipped && moved == 0) lock (table.StripeLock(id)) table.RelistLocked(id);
        return moved;
    }

    /// <summary>
    /// Pages groups out to the swap file, coldest first in the sense that every group is long cold (its pages stayed
    /// untouched past C4 before they were grouped, and a touched member leaves): from <paramref name="hand"/> round the
    /// ids, each group whose stream is in the store has its pieces written to one slot each (zero-padded), flushed, and
    /// only then, if the group still has exactly those pieces, the pieces are freed and the group names the slots.
    /// Stops when <paramref name="wantedBytes"/> of streams have moved, the swap file is full or a write fails (the
    /// group stays in the store). Returns the stream bytes moved; the store gives back the slabs so emptied once it
    /// is compacted. Never takes a page lock.
    /// </summary>
    public static long PageOut(DEHost host, SwapSpace swap, long wantedBytes, ref uint hand, Action<IOException> failed)
    {
        var table = host.Groups;
        var store = host.Store;
        uint highest = table.HighestId;
        Span<ulong> handles = stackalloc ulong[PageGroupTable.MaxPieces];
        Span<ulong> current = stackalloc ulong[PageGroupTable.MaxPieces];
        Span<uint> slots = stackalloc uint[PageGroupTable.MaxPieces];
        Span<ulong> sums = stackalloc ulong[PageGroupTable.MaxPieces];
        var bounce = Bounce;
        long moved = 0;
        for (uint looked = 0; looked < highest && moved < wantedBytes; looked++)
        {
            uint id = hand = hand >= highest ? 1 : hand + 1;
            int pieces, length;
            lock (table.StripeLock(id))
            {
                if (!table.IsLiveLocked(id)) continue;
                pieces = table.PiecesInStoreLocked(id, handles);
                if (pieces == 0) continue;
                length = table.RecordLocked(id).Length;
            }
            int reserved = 0;
            while (reserved < pieces && swap.TryReserve(out slots[reserved])) reserved++;
            if (reserved < pieces)
            {
                for (int p = 0; p < reserved; p++) swap.Release(slots[p]);
                break; // the swap file is full
            }
            bool written = false, changed = false, kept = false, ioFailed = false;
            try
            {
                // Each piece is copied under the stripe lock, and only while the group still names exactly that handle:
                // a blob is read only under its owner's lock (compaction frees a moved blob's old copy without it).
                for (int p = 0; p < pieces && !changed; p++)
                {
                    lock (table.StripeLock(id))
                    {
                        if (!table.IsLiveLocked(id) || table.PiecesInStoreLocked(id, current) != pieces || current[p] != handles[p])
                        {
                            changed = true; // moved or freed meanwhile: tried again on the hand's next round
                            break;
                        }
                        bounce.Clear();
                        var piece = store.Get(handles[p]);
                        piece.CopyTo(bounce);
                        sums[p] = System.IO.Hashing.XxHash3.HashToUInt64(piece);
                    }
                    swap.Write(slots[p], bounce);
                }
                bounce.Clear();
                if (!changed)
                {
                    swap.Flush();
                    written = true;
                }
            }
            catch (IOException ex)
            {
                ioFailed = true;
                failed(ex);
            }
            finally
            {
                bounce.Clear();
                if (written)
                    lock (table.StripeLock(id)) kept = table.MoveToSwapLocked(id, handles[..pieces], slots[..pieces], sums[..pieces], store);
                if (!kept)
                    for (int p = 0; p < pieces; p++) swap.Release(slots[p]);
            }
            if (ioFailed) break; // the swap file failed: the rest stays in memory
            if (!kept) continue;
            moved += length;
        }
        return moved;
    }
}

/// <summary>Why a group member could not be decoded (the domain turns it into its PageIntegrityError).</summary>
internal sealed class GroupDecodeException(string why, Exception? inner = null) : Exception(why, inner);
