namespace DifferenceEngine.Stats;

/// <summary>
/// What the engine's metadata (<see cref="HostStats.MetadataBytes"/>) is made of, measured in the same snapshot: each
/// part's bytes, and <see cref="Total"/>, their sum, which is the host's metadata to the byte. docs/ARCHITECTURE.md,
/// "Metadata", says what each part holds and when it is held.
/// </summary>
/// <param name="P2M">Every domain's page table: one 8-byte entry a guest page (on a Xen host, the pager's hash and age of
/// each page, 9 bytes).</param>
/// <param name="Frames">The frame pool's bookkeeping: reference counts, free and released bits, the chunk table, and a
/// live QEMU guest's frames' seen-content hashes (8 bytes a frame).</param>
/// <param name="SharingStable">The sharing index's stable table (held only during a pass), every trust group's.</param>
/// <param name="SharingUnstable">The sharing index's unstable table and the filter that decides which pages go into it (both
/// held only during a pass), every trust group's.</param>
/// <param name="Similarity">The patch similarity table and the filter of the keys listed in it (held only during a pass),
/// every trust group's; on a Xen host the
/// references patches were made against, kept while they serve.</param>
/// <param name="Store">The compact store's size classes and slab table, its slabs' headers and per-slot words,
/// bookkeeping kept of released slabs, and compaction's work lists while kept.</param>
/// <param name="SharedBlobs">The table of compressed shared frames (one slot a blob).</param>
/// <param name="PageGroups">The page group table (one record a group, with its members).</param>
/// <param name="PassBuffers">The pass's buffers of cold shared pages and of shared blobs nominated for groups, and its
/// bitmaps of the frames its sweep listed, keyed, found serving patches and checked for the stable table (4 bits a frame number) (native; held only during
/// a pass).</param>
/// <param name="Swap">The swap file's slot table (where each paged-out page or group is), when a swap file is set.</param>
/// <param name="Qemu">For live QEMU guests: where each page's crash-journal record is and its refault count (the journal
/// files themselves are on disk: <see cref="HostStats.JournalBytes"/>).</param>
public sealed record MetadataParts(
    long P2M,
    long Frames,
    long SharingStable,
    long SharingUnstable,
    long Similarity,
    long Store,
    long SharedBlobs,
    long PageGroups,
    long PassBuffers,
    long Swap,
    long Qemu)
{
    /// <summary>No metadata at all (a snapshot that measured none).</summary>
    public static MetadataParts None { get; } = new(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);

    /// <summary>The sum of the parts: <see cref="HostStats.MetadataBytes"/>.</summary>
    public long Total => P2M + Frames + SharingStable + SharingUnstable + Similarity + Store + SharedBlobs + PageGroups
                         + PassBuffers + Swap + Qemu;

    /// <summary>The parts in a fixed order, by their names here (the JSON report's <c>host.metadataParts</c> has them in camel case).</summary>
    public IEnumerable<(string Part, long Bytes)> Named()
    {
        yield return (nameof(P2M), P2M);
        yield return (nameof(Frames), Frames);
        yield return (nameof(SharingStable), SharingStable);
        yield return (nameof(SharingUnstable), SharingUnstable);
        yield return (nameof(Similarity), Similarity);
        yield return (nameof(Store), Store);
        yield return (nameof(SharedBlobs), SharedBlobs);
        yield return (nameof(PageGroups), PageGroups);
        yield return (nameof(PassBuffers), PassBuffers);
        yield return (nameof(Swap), Swap);
        yield return (nameof(Qemu), Qemu);
    }
}
