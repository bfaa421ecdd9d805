using DifferenceEngine.Codecs;
using DifferenceEngine.Compression;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Domains;

public sealed partial class Domain
{
    /// <summary>
    /// Copies guest page <paramref name="gfn"/>'s bytes into <paramref name="destination"/> without changing anything: an
    /// encoded page is decoded into the buffer (checked against its checksum) and stays encoded, a swapped page is read
    /// from its slot and stays swapped, no frame is allocated, no fault counted, no access bit set (so the page ages as
    /// if nobody had looked). For observers such as the fleet fingerprint; a guest access goes through ReadPage.
    /// </summary>
    /// <returns>False when the page's stored bytes cannot be decoded or read back (the page is left as it was; its
    /// next guest access reports the error).</returns>
    public bool PeekPage(long gfn, Span<byte> destination)
    {
        CheckGfn(gfn);
        if (destination.Length < PageGeometry.PageSize)
            throw new DEException("BufferTooSmall", DEErrorKind.InvalidArgument,
                $"The destination holds {destination.Length} bytes; a page is {PageGeometry.PageSize}.", destination.Length);
        var page = destination[..PageGeometry.PageSize];
        using var op = Host.EnterOperation();
        ulong e = Lock(gfn);
        try
        {
            ThrowIfRemoved();
            return PeekLocked(gfn, e, page);
        }
        finally
        {
            Unlock(gfn, e);
        }
    }

    /// <summary><see cref="PeekPage"/> of a page whose lock the caller holds (its entry <paramref name="e"/>).</summary>
    private bool PeekLocked(long gfn, ulong e, Span<byte> page)
    {
        switch (PageEntry.State(e))
        {
            case PageState.Zero:
                page.Clear();
                return true;
            case PageState.Private:
            case PageState.Shared:
                Host.Frames.Span(PageEntry.Frame(e)).CopyTo(page);
                return true;
            case PageState.Uniform:
                FillUniform(page, (uint)PageEntry.Payload(e));
                return true;
            case PageState.Swapped:
                return Host.Reclaimer?.Swap is { } swap && TryReadSwap(swap, (uint)PageEntry.Payload(e), page);
            case PageState.Patched:
            case PageState.Compressed:
                return TryDecodeInPlace(gfn, e, page);
            default:
                return false;
        }
    }

    private static bool TryReadSwap(Paging.SwapSpace swap, uint slot, Span<byte> page)
    {
        try
        {
            // The swap file is read with O_DIRECT: into a page-aligned buffer of this thread, then copied.
            var bounce = GroupCompression.Bounce;
            bool ok = swap.TryRead(slot, bounce);
            if (ok) bounce.CopyTo(page);
            bounce.Clear();
            return ok;
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Decodes a locked Patched or Compressed page into <paramref name="page"/>, checked, changing nothing.</summary>
    private bool TryDecodeInPlace(long gfn, ulong e, Span<byte> page)
    {
        try
        {
            if (PageEntry.IsGrouped(e))
            {
                GroupCompression.DecodeMember(Host, Id, gfn, PageEntry.GroupId(e), PageEntry.GroupMember(e), page);
                return true;
            }
            if (PageEntry.IsSharedBlob(e))
            {
                uint id = (uint)PageEntry.Payload(e);
                lock (Host.SharedBlobs.StripeLock(id))
                    DecodeSharedBlobLocked(gfn, id, page, "its shared compressed copy");
                return true;
            }
            var blob = Host.Store.Get(PageEntry.Payload(e));
            if (blob.Length < EncodedPage.CompressedHeader) return false;
            if (PageEntry.State(e) == PageState.Patched)
            {
                DecodePatch(gfn, blob, page);
            }
            else
            {
                Decompress(gfn, blob, page, "its stored header");
            }
            CheckRebuilt(gfn, page, blob, "the rebuilt bytes");
            return true;
        }
        catch (DEException)
        {
            return false;
        }
        catch (GroupDecodeException)
        {
            return false;
        }
    }
}
