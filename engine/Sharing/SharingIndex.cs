using DifferenceEngine.Memory;

namespace DifferenceEngine.Sharing;

/// <summary>
/// The sharing state of one trust group: a stable table (content hash -> shared frame), an unstable table (content
/// hash -> a private page seen this pass) and a similarity table (patch references), with the pass's two filters of
/// what more than one page has. All exist only during a pass, as KSM's unstable tree is rebuilt every scan (pass tables:
/// their memory is given back as each pass's sharing phase ends, before compression); the stable table is filled again
/// by each pass's sweep with the frames its shared and patched pages use.
/// </summary>
/// <remarks>
/// A shared frame's reference count only changes under the stable table's stripe lock of its
/// hash, so "find it and add a reference" can never race with "drop the last reference and free it".
/// </remarks>
internal sealed class SharingIndex(string trustGroup, FramePool frames) : IDisposable
{
    public string TrustGroup { get; } = trustGroup;
    /// <summary>
    /// Content hash -> shared frame: a pass table since session 21, filled by the pass's sweep with the frame of every
    /// shared page and every patch's reference (kept across passes it was 16 B a slot for every shared frame at rest,
    /// up to 0.37 MiB of a host's metadata with sharing alone).
    /// </summary>
    public HashSlotTable Stable { get; } = new();
    public HashSlotTable Unstable { get; } = new();

    /// <summary>
    /// The pass's filter of the content hashes more than one page of it has: the sweep marks every page the pass may share,
    /// and a page goes into <see cref="Unstable"/> only when another may match it (a pass's second most pages there: every
    /// private page of a host that shared its twins in an earlier pass). Counted with the unstable table.
    /// </summary>
    public TwinFilter Twins { get; } = new();

    /// <summary>
    /// Similarity key (salted with the candidate slot) -> a page that may serve as a patch reference: a pass table,
    /// filled after the pass's sweep with every page that may serve, under the keys another page has (<see cref="SimilarKeys"/>),
    /// and freed as the sharing phase ends (session 20: kept across passes it was the largest part of the metadata at rest,
    /// 2.3 MiB of 384 MiB of guests with sharing and patching).
    /// </summary>
    public HashSlotTable Similar { get; } = new();

    /// <summary>
    /// The pass's filter of the similarity keys more than one page of it has: the sweep marks the keys of every page that may
    /// serve as a reference or be patched (a shared frame's once), and a reference is listed in <see cref="Similar"/> only
    /// under keys another page may share. Held from the sweep until the references are listed; counted with the table.
    /// </summary>
    public TwinFilter SimilarKeys { get; } = new();

    /// <summary>
    /// How many pages the running pass may try to patch in this group at most (private pages an earlier pass examined, in
    /// the swept domains that patch; set as the pass begins). With none, the pass marks no keys and lists no reference.
    /// </summary>
    public long PassCandidates { get; set; }

    public long MetadataBytes => Stable.MetadataBytes + UnstableMetadataBytes + SimilarityMetadataBytes;

    /// <summary>The similarity table and its filter (<see cref="SimilarKeys"/>).</summary>
    public long SimilarityMetadataBytes => Similar.MetadataBytes + SimilarKeys.MetadataBytes;

    /// <summary>The unstable table and its filter (<see cref="Twins"/>).</summary>
    public long UnstableMetadataBytes => Unstable.MetadataBytes + Twins.MetadataBytes;

    /// <summary>
    /// Gives back everything the index holds only during a pass: its three tables (each remembering the room it needed,
    /// only growing it after a pass that did not finish: <paramref name="complete"/> false) and both filters.
    /// </summary>
    public void EndPass(bool complete = true)
    {
        Stable.EndPass(complete);
        Unstable.EndPass(complete);
        Similar.EndPass(complete);
        Twins.End();
        SimilarKeys.End();
    }

    /// <summary>Frees the pass tables' native memory, should the host go away during a pass.</summary>
    public void Dispose()
    {
        Stable.Dispose();
        Unstable.Dispose();
        Twins.Dispose();
        Similar.Dispose();
        SimilarKeys.Dispose();
    }

    /// <summary>The table key of candidate slot <paramref name="slot"/> of a similarity key.</summary>
    public static ulong SimilarSlotKey(ulong key, int slot) => key ^ ((ulong)(slot + 1) * 0xC2B2AE3D27D4EB4FUL);

    /// <summary>
    /// A shared frame's content hash, its stable table key: computed from its bytes, which do not change while it is
    /// shared (a write copies the page first), so it is the hash it was listed under. Frames keep no hash of their own.
    /// </summary>
    public ulong HashOf(uint frame) => PageHasher.Hash(frames.Span(frame));

    /// <summary>Drops one reference to a shared frame and frees it when none are left.</summary>
    public void Release(uint frame) => Release(frame, HashOf(frame));

    /// <summary>As <see cref="Release(uint)"/>, with the frame's <see cref="HashOf"/> already computed.</summary>
    public void Release(uint frame, ulong hash)
    {
        bool free;
        lock (Stable.StripeLock(hash))
        {
            free = frames.DropReference(frame) == 0;
            if (free) Stable.RemoveIf(hash, frame);
        }
        if (free) frames.Free(frame);
    }

    /// <summary>
    /// When the caller's page is the frame's only user, unlists the frame so it can become that
    /// page's private frame without a copy; false when others still share it.
    /// </summary>
    /// <param name="hash">The frame's <see cref="HashOf"/>.</param>
    public bool TryTakeSole(uint frame, ulong hash)
    {
        lock (Stable.StripeLock(hash))
        {
            if (frames.RefCount(frame) != 1) return false;
            Stable.RemoveIf(hash, frame);
            return true;
        }
    }

    /// <summary>
    /// The frame listed under <paramref name="hash"/>; the caller holds the stripe lock. A listed frame no longer in use
    /// (which only a bug could leave: a frame is unlisted under its hash, recomputed from its bytes, before it is freed)
    /// is unlisted and not returned, so no page is ever merged onto a free or reused frame.
    /// </summary>
    public bool TryGetListedLocked(ulong hash, out uint frame)
    {
        frame = 0;
        if (!Stable.TryGet(hash, out ulong listed)) return false;
        if (frames.RefCount((uint)listed) <= 0)
        {
            Stable.RemoveIf(hash, listed);
            return false;
        }
        frame = (uint)listed;
        return true;
    }

    /// <summary>Adds a reference to a listed shared frame; the caller holds the stripe lock.</summary>
    public void AddReferenceLocked(uint frame) => frames.AddReference(frame);

    public static ulong PackPage(int domainId, long gfn) => ((ulong)(uint)domainId << 40) | (ulong)gfn;

    public static (int DomainId, long Gfn) UnpackPage(ulong packed) => ((int)(packed >> 40), (long)(packed & ((1UL << 40) - 1)));
}
