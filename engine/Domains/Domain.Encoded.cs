using System.Runtime.CompilerServices;
using System.Diagnostics;
using System.Runtime.InteropServices;
using DifferenceEngine.Codecs;
using DifferenceEngine.Compression;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Domains;

public sealed partial class Domain
{
    /// <summary>
    /// Gives a locked Patched, Compressed or Swapped page a frame again (the unpatch, decompress or swap-in
    /// fault). <paramref name="readBack"/> false skips reading a swapped page the caller overwrites whole.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private ulong BringIn(long gfn, ulong e, bool readBack, out FaultKind fault)
    {
        fault = PageEntry.State(e) switch
        {
            PageState.Patched => FaultKind.Unpatch,
            PageState.Compressed => FaultKind.Decompress,
            _ => FaultKind.SwapIn,
        };
        return fault == FaultKind.SwapIn ? SwapIn(gfn, e, readBack) : RebuildTimed(gfn, e, fault);
    }

    /// <summary>Rebuilds a Patched or Compressed page into a frame, counting and timing the fault.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private ulong RebuildTimed(long gfn, ulong e, FaultKind fault)
    {
        long start = Stopwatch.GetTimestamp();
        e = Rebuild(gfn, e);
        Host.Faults.Record(fault, Stopwatch.GetTimestamp() - start);
        return e;
    }

    /// <summary>
    /// Turns a locked Patched or Compressed page back into a Private page: decode into a new frame,
    /// check the checksum, and only then free the blob and drop the reference. On any failure the
    /// page is left exactly as it was, and the error names the domain and page.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal ulong Rebuild(long gfn, ulong e)
    {
        if (PageEntry.IsSharedBlob(e)) return RebuildShared(gfn, e);
        if (PageEntry.IsGrouped(e)) return RebuildGrouped(gfn, e);
        var store = Host.Store;
        ulong handle = PageEntry.Payload(e);
        var blob = store.Get(handle);
        uint frame = AllocateFrame(gfn);
        var page = Host.Frames.Span(frame);
        uint reference = 0;
        bool referenceInBlob = false;
        try
        {
            if (blob.Length < EncodedPage.CompressedHeader)
                throw IntegrityError(gfn, "its stored header is truncated");
            if (PageEntry.State(e) == PageState.Patched)
            {
                DecodePatch(gfn, blob, page);
                reference = EncodedPage.ReferenceFrame(blob);
                referenceInBlob = EncodedPage.ReferenceIsSharedBlob(blob);
            }
            else
            {
                Decompress(gfn, blob, page, "its stored header");
            }
            CheckRebuilt(gfn, page, blob, "the rebuilt bytes");
        }
        catch (Exception ex)
        {
            Host.Frames.Free(frame);
            if (ex is DEException { ErrorId: not "PageIntegrityError" } de) throw IntegrityError(gfn, de.Message, de);
            throw;
        }
        store.Free(handle);
        if (PageEntry.State(e) == PageState.Patched) ReleasePatchReference(reference, referenceInBlob);
        // On an encoded page the incompressible mark meant "grouping did not pay"; in a frame it would mean "does not compress".
        return PageEntry.With(e & ~PageEntry.Incompressible, PageState.Private, frame);
    }

    [ThreadStatic] private static byte[]? t_reference;

    /// <summary>
    /// Decodes a locked Patched page's patch <paramref name="blob"/> into <paramref name="page"/> (not yet checked against
    /// the page's checksum): against its reference frame, or, once that frame was compressed (a shared blob the patch
    /// holds a reference of), against the blob decoded into a per-thread page and checked first. Throws
    /// "PageIntegrityError" naming this page when the patch or its reference does not hold.
    /// </summary>
    private void DecodePatch(long gfn, ReadOnlySpan<byte> blob, Span<byte> page)
    {
        if (blob.Length < EncodedPage.PatchHeader || EncodedPage.Kind(blob) != EncodedKind.Patch)
            throw IntegrityError(gfn, "its stored header does not describe a patch");
        uint reference = EncodedPage.ReferenceFrame(blob);
        if (!EncodedPage.ReferenceIsSharedBlob(blob))
        {
            if (blob[9] != EncodedPage.ReferenceInFrame)
                throw IntegrityError(gfn, $"its stored header names no known place for its reference ({blob[9]})");
            if (!Host.Frames.IsInUse(reference))
                throw IntegrityError(gfn, $"its reference frame {reference} is not in use");
            DeltaCodec.Decode(Host.Frames.Span(reference), blob[EncodedPage.PatchHeader..], page);
            return;
        }
        var plain = t_reference ??= new byte[PageGeometry.PageSize];
        lock (Host.SharedBlobs.StripeLock(reference))
            DecodeSharedBlobLocked(gfn, reference, plain, "its reference's compressed copy");
        DeltaCodec.Decode(plain, blob[EncodedPage.PatchHeader..], page);
    }

    /// <summary>
    /// Decodes shared blob <paramref name="id"/>, which page <paramref name="gfn"/> names (<paramref name="what"/>: what
    /// the error calls it), into <paramref name="page"/> and checks it; the caller holds the id's stripe lock. Throws
    /// "PageIntegrityError" naming the page when the blob is gone, does not decode or does not hold.
    /// </summary>
    private void DecodeSharedBlobLocked(long gfn, uint id, Span<byte> page, string what)
    {
        var table = Host.SharedBlobs;
        if (!table.IsLiveLocked(id))
            throw IntegrityError(gfn, $"{what} {id} does not exist");
        if (table.TryGroupLocked(id, out uint group, out int member))
        {
            // Kept in a page group of shared blobs (SharedGrouping): decoded from the group, its stream and its member's
            // checksum checked (the member names the blob, seeded with the blob's id), under the group's stripe lock.
            try
            {
                GroupCompression.DecodeMember(Host, GroupCompression.SharedBlobsDomain, id, group, member, page);
            }
            catch (GroupDecodeException ex)
            {
                throw IntegrityError(gfn, $"{what} {id} cannot be decoded from its page group: {ex.Message}", ex.InnerException);
            }
            return;
        }
        var blob = Host.Store.Get(table.HandleLocked(id));
        try
        {
            Decompress(gfn, blob, page, $"the stored header of {what} {id}");
        }
        catch (DEException de) when (de.ErrorId != "PageIntegrityError")
        {
            throw IntegrityError(gfn, $"{what} {id} does not decode ({de.Message})", de);
        }
        CheckRebuilt(gfn, page, blob, $"the bytes rebuilt from {what} {id}");
    }

    /// <summary>Drops a patch's hold on its reference: the frame's reference count, or the shared blob's (the last frees it).</summary>
    private void ReleasePatchReference(uint reference, bool inSharedBlob)
    {
        if (!inSharedBlob)
        {
            if (Host.Frames.IsInUse(reference)) Host.SharingIndexFor(Policy.TrustGroup).Release(reference);
            return;
        }
        var table = Host.SharedBlobs;
        lock (table.StripeLock(reference))
            if (table.IsLiveLocked(reference)) table.ReleaseLocked(reference, Host.Store, Host.Groups, Host.Reclaimer?.Swap);
    }

    /// <summary>
    /// Gives a locked member of a page group a frame with its bytes, decoded from the group as far as its page and
    /// checked (the stream's checksum, then the page's), then leaves the group (the last member frees it). On any
    /// failure the page is left exactly as it was and the error names the domain and page.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private ulong RebuildGrouped(long gfn, ulong e)
    {
        uint id = PageEntry.GroupId(e);
        int member = PageEntry.GroupMember(e);
        // A group in the swap file is paged-out memory: on a full host its page comes back through the exchange, as a
        // swapped page does (docs/PAGING.md).
        uint frame = AllocateFrame(gfn, swapIn: Host.Groups.IsInSwap(id));
        try
        {
            GroupCompression.DecodeMember(Host, Id, gfn, id, member, Host.Frames.Span(frame));
        }
        catch (GroupDecodeException ex)
        {
            Host.Frames.Free(frame);
            throw IntegrityError(gfn, ex.Message, ex.InnerException);
        }
        catch
        {
            Host.Frames.Free(frame);
            throw;
        }
        var table = Host.Groups;
        lock (table.StripeLock(id)) table.LeaveLocked(id, member, Host.Store, Host.Reclaimer?.Swap);
        return PageEntry.With(e, PageState.Private, frame);
    }

    /// <summary>Decodes a locked page's single compressed blob into <paramref name="page"/> and checks it; false when it does not rebuild.</summary>
    internal bool TryDecodeSingle(long gfn, ReadOnlySpan<byte> blob, Span<byte> page)
    {
        try
        {
            Decompress(gfn, blob, page, "its stored header");
            CheckRebuilt(gfn, page, blob, "the rebuilt bytes");
            return true;
        }
        catch (DEException)
        {
            return false;
        }
    }

    /// <summary>
    /// Gives a locked page that names a shared blob (a compressed shared frame) a frame of its own with the blob's
    /// bytes, checked against the blob's checksum, and drops its reference to the blob (the last one frees it). The
    /// page becomes Private: the other pages that named the blob keep naming it, and a later sharing pass may merge
    /// this page with them again once they are back in frames. On any failure the page is left exactly as it was.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private ulong RebuildShared(long gfn, ulong e)
    {
        var table = Host.SharedBlobs;
        uint id = (uint)PageEntry.Payload(e);
        uint frame = AllocateFrame(gfn);
        var page = Host.Frames.Span(frame);
        try
        {
            lock (table.StripeLock(id))
            {
                DecodeSharedBlobLocked(gfn, id, page, "its shared compressed copy");
                table.ReleaseLocked(id, Host.Store, Host.Groups, Host.Reclaimer?.Swap);
            }
        }
        catch (Exception ex)
        {
            Host.Frames.Free(frame);
            if (ex is DEException { ErrorId: not "PageIntegrityError" } de)
                throw IntegrityError(gfn, $"its shared compressed copy {id} does not decode ({de.Message})", de);
            throw;
        }
        return PageEntry.With(e, PageState.Private, frame);
    }

    /// <summary>Decompresses a compressed page's blob after checking its header describes one.</summary>
    private void Decompress(long gfn, ReadOnlySpan<byte> blob, Span<byte> page, string header)
    {
        if (blob.Length < EncodedPage.CompressedHeader || EncodedPage.Kind(blob) != EncodedKind.Compressed
            || !Enum.IsDefined(EncodedPage.Algorithm(blob)))
            throw IntegrityError(gfn, $"{header} does not describe a compressed page");
        PageCompressors.Get(EncodedPage.Algorithm(blob)).Decompress(blob[EncodedPage.CompressedHeader..], page);
    }

    private void CheckRebuilt(long gfn, ReadOnlySpan<byte> page, ReadOnlySpan<byte> blob, string what)
    {
        if (EncodedPage.Checksum(page, blob) != EncodedPage.StoredChecksum(blob))
            throw IntegrityError(gfn, $"{what} do not match the stored checksum");
    }

    /// <summary>Gives back what an encoded page holds (its blob, and for a patch its reference) without rebuilding it.</summary>
    private void DropEncoded(ulong e)
    {
        if (PageEntry.IsGrouped(e))
        {
            uint group = PageEntry.GroupId(e);
            var groups = Host.Groups;
            lock (groups.StripeLock(group))
                if (groups.IsMemberLocked(group, PageEntry.GroupMember(e))) groups.LeaveLocked(group, PageEntry.GroupMember(e), Host.Store, Host.Reclaimer?.Swap);
            return;
        }
        if (PageEntry.IsSharedBlob(e))
        {
            uint id = (uint)PageEntry.Payload(e);
            var table = Host.SharedBlobs;
            lock (table.StripeLock(id))
                if (table.IsLiveLocked(id)) table.ReleaseLocked(id, Host.Store, Host.Groups, Host.Reclaimer?.Swap);
            return;
        }
        ulong handle = PageEntry.Payload(e);
        if (PageEntry.State(e) == PageState.Patched)
        {
            var patch = Host.Store.Get(handle);
            ReleasePatchReference(EncodedPage.ReferenceFrame(patch), EncodedPage.ReferenceIsSharedBlob(patch));
        }
        Host.Store.Free(handle);
    }

    /// <summary>Clears every page's incompressible mark, so passes try those pages again.</summary>
    internal void ForgetIncompressible()
    {
        for (long gfn = 0; gfn < PageCount; gfn++)
        {
            if ((PeekEntry(gfn) & PageEntry.Incompressible) == 0) continue;
            ulong e = Lock(gfn);
            Unlock(gfn, e & ~PageEntry.Incompressible);
        }
    }

    internal static void FillUniform(Span<byte> page, uint word) => MemoryMarshal.Cast<byte, uint>(page).Fill(word);

    private DEException IntegrityError(long gfn, string why, Exception? inner = null) =>
        new("PageIntegrityError", DEErrorKind.InvalidData,
            $"Page {gfn} of domain '{Name}' cannot be rebuilt: {why}. The page is left encoded; its bytes are never returned wrong.",
            $"{Name}:{gfn}", inner);

    /// <summary>
    /// Rebuilds every page of this domain in <paramref name="state"/> (Patched or Compressed) into a frame,
    /// after checking that the frames are there; returns how many were rebuilt.
    /// </summary>
    internal long RestoreAll(PageState state)
    {
        EnsureFramesFor(state, "InsufficientMemoryToRestore", (count, obtainable) =>
            $"Restoring the {count} {state} pages of domain '{Name}' needs {count} frames but only {obtainable} can be had under the host's limit (free, or freed by paging out); nothing was changed.");
        return ConvertEvery(state, Rebuild);
    }

    /// <summary>
    /// Rebuilds every Compressed page of this domain into a frame, and every patch whose reference frame was compressed
    /// since (it decodes through a shared blob): what <c>Disable-DECompression -Restore</c> promises, that nothing of
    /// the domain is left decoding through compression. Fails before anything changes when the frames cannot be had.
    /// </summary>
    internal long RestoreAllCompressed()
    {
        long count = 0;
        for (long gfn = 0; gfn < PageCount; gfn++)
        {
            ulong peek = PeekEntry(gfn);
            if (PageEntry.State(peek) == PageState.Compressed) count++;
            else if (PageEntry.State(peek) == PageState.Patched)
            {
                // A patch's blob is read only under its page's lock.
                ulong e = Lock(gfn);
                try
                {
                    if (IsPatchOnCompressedReference(e)) count++;
                }
                finally
                {
                    Unlock(gfn, e);
                }
            }
        }
        EnsureFrames(count, "InsufficientMemoryToRestore", (n, obtainable) =>
            $"Restoring the {n} Compressed pages (and patches on compressed references) of domain '{Name}' needs {n} frames but only {obtainable} can be had under the host's limit (free, or freed by paging out); nothing was changed.");
        return ConvertEvery(e => PageEntry.State(e) == PageState.Compressed || IsPatchOnCompressedReference(e), Rebuild);
    }

    /// <summary>Whether a locked page is a patch whose reference frame was compressed (a shared blob) since it was made.</summary>
    private bool IsPatchOnCompressedReference(ulong e) =>
        PageEntry.State(e) == PageState.Patched && EncodedPage.NamesSharedBlob(Host.Store.Get(PageEntry.Payload(e)));

    /// <summary>
    /// Fails with <paramref name="errorId"/> before anything changes when the host cannot give a frame to
    /// every page of this domain in <paramref name="state"/> (free, or freed by paging out).
    /// </summary>
    internal void EnsureFramesFor(PageState state, string errorId, Func<long, long, string> message) =>
        EnsureFramesFor(e => PageEntry.State(e) == state, errorId, message);

    /// <summary>As above, for the pages whose entry <paramref name="match"/> picks.</summary>
    internal void EnsureFramesFor(Func<ulong, bool> match, string errorId, Func<long, long, string> message)
    {
        long count = 0;
        for (long gfn = 0; gfn < PageCount; gfn++)
            if (match(PeekEntry(gfn))) count++;
        EnsureFrames(count, errorId, message);
    }

    /// <summary>Fails with <paramref name="errorId"/> when the host cannot give <paramref name="count"/> frames (free, or freed by paging out).</summary>
    private void EnsureFrames(long count, string errorId, Func<long, long, string> message)
    {
        if (Host.ObtainableFrames is long obtainable && count > obtainable)
            throw new DEException(errorId, DEErrorKind.ResourceUnavailable, message(count, obtainable), this);
    }

    /// <summary>
    /// Applies <paramref name="convert"/> to every page in <paramref name="state"/>, each under its lock; returns how many.
    /// A QEMU guest's page that it leaves Private in a frame of the engine goes back into the guest, as its own fault would
    /// put it (should that fail, the page stays in the engine's frame, never naming what the conversion let go).
    /// </summary>
    internal long ConvertEvery(PageState state, Func<long, ulong, ulong> convert) =>
        ConvertEvery(e => PageEntry.State(e) == state, convert);

    /// <summary>As above, for the pages whose entry <paramref name="match"/> picks.</summary>
    internal long ConvertEvery(Func<ulong, bool> match, Func<long, ulong, ulong> convert)
    {
        long converted = 0;
        for (long gfn = 0; gfn < PageCount; gfn++)
        {
            ulong e = Lock(gfn);
            try
            {
                ThrowIfRemoved();
                if (match(e))
                {
                    e = convert(gfn, e);
                    if (Qemu is not null && PageEntry.State(e) == PageState.Private) e = QemuInstall(gfn, e);
                    converted++;
                }
            }
            finally
            {
                Unlock(gfn, e);
            }
        }
        return converted;
    }
}

public sealed partial class Domain
{
    /// <summary>
    /// Brings a locked Swapped page back into a frame (reading it unless the caller overwrites the whole
    /// page), checks its checksum, frees the slot. On failure the page stays Swapped and the error
    /// names the domain and page.
    /// </summary>
    private ulong SwapIn(long gfn, ulong e, bool read)
    {
        long start = Stopwatch.GetTimestamp();
        var swap = Host.Reclaimer?.Swap
                   ?? throw IntegrityError(gfn, "it is marked swapped but the host has no swap file");
        uint slot = (uint)PageEntry.Payload(e);
        uint frame = AllocateFrame(gfn, swapIn: true);
        if (read)
        {
            bool ok;
            try
            {
                ok = swap.TryRead(slot, Host.Frames.Span(frame));
            }
            catch (IOException ex)
            {
                Host.Frames.Free(frame);
                throw new DEException("SwapReadError", DEErrorKind.ReadError,
                    $"Page {gfn} of domain '{Name}' cannot be read back from swap slot {slot}: {ex.Message} The page stays swapped.",
                    $"{Name}:{gfn}", ex);
            }
            if (!ok)
            {
                Host.Frames.Free(frame);
                throw new DEException("SwapIntegrityError", DEErrorKind.InvalidData,
                    $"Page {gfn} of domain '{Name}' read back from swap slot {slot} does not match its checksum. The page stays swapped; its bytes are never returned wrong.",
                    $"{Name}:{gfn}");
            }
        }
        swap.Release(slot);
        Host.Faults.Record(FaultKind.SwapIn, Stopwatch.GetTimestamp() - start);
        return PageEntry.With(e, PageState.Private, frame);
    }
}
