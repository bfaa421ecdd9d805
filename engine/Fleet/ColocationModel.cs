using DifferenceEngine.Memory;
using System.Runtime.InteropServices;
using DifferenceEngine.Store;
using DifferenceEngine.Compression;
using DifferenceEngine.Domains;

namespace DifferenceEngine.Fleet;

/// <summary>
/// What a set of domains is predicted to need on one host, all mechanisms on, once stable (docs/FLEET.md, "The model"),
/// with the same figures for sharing alone and sharing with patching. GuestBytes = PredictedUsedBytes + PredictedSavedBytes.
/// </summary>
public sealed record ColocationPrediction(
    IReadOnlyList<string> Domains,
    long GuestBytes,
    long PredictedUsedBytes,
    long FrameBytes,
    long StoreBytes,
    long MetadataBytes,
    long UsedWithSharingBytes,
    long UsedWithSharingAndPatchingBytes,
    long SeparateUsedBytes)
{
    /// <summary>Predicted pages by what the engine makes of them (scaled from the sample).</summary>
    public long PatchedPages { get; init; }
    public long ReferencePages { get; init; }
    public long SharedContents { get; init; }
    public long CompressedContents { get; init; }
    public long FrameContents { get; init; }

    /// <summary>Pages that need no memory of their own because an identical page does: pages sharing a content, less the contents.</summary>
    public long SharedPagesSaved { get; init; }

    /// <summary>GuestBytes − PredictedUsedBytes.</summary>
    public long PredictedSavedBytes => GuestBytes - PredictedUsedBytes;

    /// <summary>What placing the domains together saves against each on a host of its own: Σ of their predictions alone − the prediction together.</summary>
    public long ColocationSavedBytes => SeparateUsedBytes - PredictedUsedBytes;
}

/// <summary>
/// The colocation model: from fingerprints made with one fleet key, the memory the engine needs for a set of domains
/// loaded together (docs/FLEET.md, "The model"). Every sampled page stands for 2^SampleShift pages; because the sample
/// is keyed on the similarity key, a sampled content's identical copies and similar pages, in every domain, are in the
/// sample with it, so the model replays the engine's choices on it: identical contents share one copy; among contents
/// with the same similarity key the first (domain order, then gfn order) is the reference, kept as a frame, and the
/// others are patched against it when their patch is under the threshold; the rest are compressed (shared contents as
/// one Zstd blob, private ones as single blobs, shrunk by the domain's measured group factor), or stay frames.
/// Domains of different trust groups never share: each trust group is predicted apart and the parts added.
/// </summary>
public static class ColocationModel
{
    private const int PageSize = PageGeometry.PageSize;

    // Engine metadata at rest, by the structures that hold it (docs/FLEET.md, "Metadata"): per guest page its P2M entry
    // (8 B) and the frame pool's bookkeeping of the frame it was loaded into (1.25 B; 12.125 B until session 18, 4.125 B
    // until session 21); per page kept in a page group, its share of the group's record (40 B for a group of four, in
    // chunks of 128 records: the host's table, counted in whole chunks); per shared blob, its slot in the shared blobs'
    // table (8 B, in chunks of 256); per slab of the store, its slots' lengths and generations (4 B a slot, and the
    // slab's own bookkeeping). The sharing index's tables (stable since session 21, unstable since 18, similarity since
    // 20) and the pass's buffer of cold shared pages (since 21) hold memory only during a pass, so nothing of them is
    // counted; before, the tables were 3 to 120 B a page left in a frame, the buffer 24 B a shared page. The placement's
    // search counts grouped pages at a chunk's bytes per page it serves.
    internal const double MetadataPerPage = 8 + FramePool.MetadataBytesPerFrame;
    internal const double MetadataPerGroupedPage = (double)PageGroupTable.ChunkBytes / (PageGroupTable.RecordsPerChunk * DomainPolicy.DefaultGroupSize);
    private const int GroupPrior = 32;

    /// <summary>
    /// How many measured contents a domain's runs count for against its group shares: <see cref="GroupPrior"/>; for a
    /// domain grouped whole (a small one, FingerprintBuilder.ExactSinglesPages) as many as its runs, whose factor is then
    /// its groups' own (session 14: perl's 22 group shares at 0.56 had drawn its exact 0.631 down to 0.598).
    /// </summary>
    internal static double GroupPriorOf(DomainFingerprint f) => f.SinglesMean > 0 ? Math.Max(GroupPrior, f.GroupRunsSampled) : GroupPrior;

    // The stable table; the unstable and similarity tables hold memory only during a pass.

    public static ColocationPrediction Predict(IReadOnlyList<DomainFingerprint> fingerprints) => Predict(fingerprints, separately: true);

    /// <summary>
    /// Fingerprints in the one order the fleet cmdlets predict in, whatever the order given (remoting returns hosts as
    /// they answer, and the model's sums depend on the order): by domain name, then by the host it runs on.
    /// </summary>
    public static DomainFingerprint[] InModelOrder(IEnumerable<DomainFingerprint> fingerprints) =>
        fingerprints.OrderBy(f => f.Domain, StringComparer.Ordinal).ThenBy(f => f.HostName, StringComparer.Ordinal).ToArray();

    /// <summary>
    /// The prediction, and with <paramref name="separately"/> each domain's alone too (<see cref="ColocationPrediction.SeparateUsedBytes"/>;
    /// without, that figure is 0: the placement's checks need the set's figure only).
    /// </summary>
    internal static ColocationPrediction Predict(IReadOnlyList<DomainFingerprint> fingerprints, bool separately)
    {
        Check(fingerprints);
        long frames = 0, store = 0, sharingOnly = 0, sharingPatching = 0;
        long groupedPages = 0, sharedPages = 0, storeMetadata = 0, sharedBlobs = 0;
        long patchedPages = 0, referencePages = 0, sharedContents = 0, compressedContents = 0, frameContents = 0;
        double metadata = 0;
        foreach (var trust in fingerprints.GroupBy(f => f.TrustGroup, StringComparer.Ordinal))
        {
            var part = PredictTrustGroup(trust.ToList());
            frames += part.Frames;
            store += part.Store;
            sharingOnly += part.SharingOnly;
            sharingPatching += part.SharingPatching;
            patchedPages += part.Patched;
            referencePages += part.References;
            sharedContents += part.Shared;
            compressedContents += part.Compressed;
            frameContents += part.FrameContents;
            groupedPages += part.Grouped;
            sharedBlobs += part.SharedBlobs;
            storeMetadata += part.StoreMetadata;
            sharedPages += part.SharedPages;
        }
        foreach (var f in fingerprints) metadata += MetadataPerPage * f.PageCount;
        // The shared blobs' table has a size when empty. The sharing index's tables hold memory only during a pass. Shared
        // blobs are kept in groups of shared blobs, which take records in the group table as page groups do.
        metadata += GroupTableBytes(groupedPages + sharedBlobs) + SharedBlobTable.MetadataBytesFor(sharedBlobs)
                    + storeMetadata + HostFixedMetadataBytes;
        long meta = (long)Math.Round(metadata);
        // With sharing alone, or sharing and patching, nothing is in the store, and there are no groups or compressed shared
        // frames (session 18: that figure took all mechanisms' metadata, and came out above sharing alone's once the
        // tables cost less).
        double mechanismsMeta = fingerprints.Sum(f => MetadataPerPage * f.PageCount)
                                + HostFixedMetadataBytes + GroupTableBytes(0) + SharedBlobTable.MetadataBytesFor(0);
        long mechanismsMetaBytes = (long)Math.Round(mechanismsMeta);
        long guest = fingerprints.Sum(f => f.GuestBytes);
        long separate = fingerprints.Count == 1 ? frames + store + meta
            : separately ? fingerprints.Sum(f => Predict([f], separately: false).PredictedUsedBytes) : 0;
        return new ColocationPrediction(fingerprints.Select(f => f.Domain).ToArray(), guest, frames + store + meta, frames, store, meta,
            sharingOnly + mechanismsMetaBytes, sharingPatching + mechanismsMetaBytes, separate)
        {
            PatchedPages = patchedPages, ReferencePages = referencePages, SharedContents = sharedContents,
            CompressedContents = compressedContents, FrameContents = frameContents, SharedPagesSaved = sharedPages - sharedContents,
        };
    }

    private sealed record Part(long Frames, long Store, long SharingOnly, long SharingPatching)
    {
        public long Patched, References, Shared, Compressed, FrameContents, Grouped, SharedPages, StoreMetadata, SharedBlobs;
    }

    /// <summary>A distinct content of the set, as the engine meets it first: its entry, its domain, its copies in the set.</summary>
    private struct Content
    {
        public FingerprintEntry Entry;
        public int Domain;
        public long Copies;
        public readonly bool Shared => Copies > 1;
    }

    /// <summary>
    /// One sampled route's distinct contents in the order met, and their index by keyed content hash. Reused per thread
    /// (the placement predicts thousands of sets), so a prediction allocates next to nothing.
    /// </summary>
    private sealed class Route
    {
        public readonly Dictionary<ulong, int> Index = new();
        public Content[] Items = new Content[256];
        public int Count;

        public void Reset(int capacity)
        {
            Index.Clear();
            Index.EnsureCapacity(capacity);
            if (Items.Length < capacity) Items = new Content[capacity];
            Count = 0;
        }

        public void Add(in FingerprintEntry e, int domain)
        {
            ref int at = ref CollectionsMarshal.GetValueRefOrAddDefault(Index, e.Content, out bool known);
            if (known)
            {
                Items[at].Copies += e.Copies;
                return;
            }
            at = Count;
            Items[Count++] = new Content { Entry = e, Domain = domain, Copies = e.Copies };
        }

        public ReadOnlySpan<Content> Span => Items.AsSpan(0, Count);
    }

    /// <summary>A thread's reusable room for one prediction.</summary>
    private sealed class Scratch
    {
        public readonly Route Contents = new(), Similarities = new();
        public readonly Dictionary<ulong, int> MedianPatch = new(), FirstOf = new();
        public readonly HashSet<ulong> MadeReference = new();
        public readonly Dictionary<int, double> Slots = new();
        public (ulong Similarity, int Cost)[] Patches = new (ulong, int)[256];
        public int[] Costs = new int[256];
    }

    [ThreadStatic] private static Scratch? t_scratch;

    private static Part PredictTrustGroup(List<DomainFingerprint> set)
    {
        var scratch = t_scratch ??= new Scratch();
        // Distinct contents across the set, in the order the engine meets them (domain order, then gfn order), each
        // sampled route apart: the content route for every total, the similarity route for patches across domains.
        int entries = 0;
        foreach (var f in set) entries += f.GetEntries().Count;
        var contents = scratch.Contents;
        var similarities = scratch.Similarities;
        contents.Reset(entries);
        similarities.Reset(entries);
        var groupFactor = new double[set.Count];
        for (int d = 0; d < set.Count; d++)
        {
            groupFactor[d] = Math.Clamp(set[d].GroupFactor, 0, 1);
            var list = set[d].GetEntries();
            ReadOnlySpan<FingerprintEntry> all = list is FingerprintEntry[] array ? array : list.ToArray();
            foreach (ref readonly var e in all)
            {
                if ((e.Flags & EntryFlags.ByContent) != 0) contents.Add(e, d);
                if ((e.Flags & EntryFlags.BySimilarity) != 0) similarities.Add(e, d);
            }
        }
        var contentRoute = contents.Span;
        var similarityRoute = similarities.Span;

        // Groups: what grouping saves differs between contents (a domain's unique pages group better than the pages it shares
        // with others), so the factor applied to a domain's private contents is measured on its sampled contents that stay
        // private in this set (one in eight carries its own group share); with too few of those, the domain's runs.
        var groupedSum = new double[set.Count];
        var singleSum = new double[set.Count];
        var measured = new int[set.Count];
        foreach (ref readonly var c in contentRoute)
        {
            var e = c.Entry;
            if (c.Shared || e.GroupCost == 0 || e.PatchCost > 0 || (e.Flags & EntryFlags.Reference) != 0) continue;
            groupedSum[c.Domain] += e.GroupCost;
            singleSum[c.Domain] += e.SingleCost;
            measured[c.Domain]++;
        }
        // The measured contents' ratio, drawn toward the domain's runs as if those were GroupPriorOf more contents of the
        // same mean size (a few dozen measured contents alone draw too widely); for a small domain measured whole, times
        // its mean single blob over the sample's.
        for (int d = 0; d < set.Count; d++) groupFactor[d] = GroupFactorOf(groupedSum[d], singleSum[d], measured[d], groupFactor[d], GroupPriorOf(set[d])) * SinglesFactor(set[d]);

        // The sample's draw: a domain's sampled contents are one in 2^shift of its distinct contents on average, more or
        // fewer in a given sample (a small domain has a few hundred). Where the pass counted the distinct contents, each
        // of the domain's sampled contents stands for its share of them (a ratio estimate), not 2^shift.
        var weight = new double[set.Count];
        var incompressibleWeight = new double[set.Count];
        double unsampledFrames = 0;
        for (int d = 0; d < set.Count; d++)
        {
            var strata = StrataOf(set[d]);
            (weight[d], incompressibleWeight[d]) = (strata.Other, strata.Incompressible);
            unsampledFrames += strata.UnsampledFrames;
        }

        if (Census is not null)
            for (int d = 0; d < set.Count; d++)
                Census($"{set[d].Domain}: weight {weight[d]:0.000} group factor {groupFactor[d]:0.000} (measured {measured[d]}, runs {set[d].GroupFactor:0.000} on {set[d].GroupRunsSampled}), sampled {set[d].ContentSampled} of {set[d].DistinctContents}");
        double frames = 0, store = 0, sharingOnly = 0, sharingPatching = 0;
        var slots = scratch.Slots; // slot size -> blobs of the sample in it
        slots.Clear();
        double patched = 0, references = 0, shared = 0, compressed = 0, frameContents = 0, grouped = 0, sharedPages = 0, sharedBlobs = 0;
        foreach (ref readonly var c in contentRoute)
        {
            // Each content counts for its domain's weight: 1 sampled content stands for weight · 2^shift.
            double w = c.Entry.SingleCost == 0 ? incompressibleWeight[c.Domain] : weight[c.Domain];
            sharingOnly += w * PageSize;
            if (c.Shared)
            {
                shared += w;
                sharedPages += w * c.Copies;
            }
            var e = c.Entry;
            if (!c.Shared && e.PatchCost > 0)
            {
                store += w * e.PatchCost;
                AddSlot(slots, e.PatchCost, w);
                sharingPatching += w * e.PatchCost;
                patched += w;
                continue;
            }
            sharingPatching += w * PageSize;
            if ((e.Flags & EntryFlags.Reference) != 0)
            {
                // Compressed with its pages and patches once they are all cold (SharedCompression): a shared blob.
                references += w;
                if (e.SharedCost > 0)
                {
                    store += w * e.SharedCost;
                    AddSlot(slots, e.SharedCost, w);
                    sharedBlobs += w;
                }
                else frames += w * PageSize;
                continue;
            }
            int cost = c.Shared ? e.SharedCost : e.SingleCost;
            if (cost == 0)
            {
                frames += w * PageSize;
                frameContents += w;
                continue;
            }
            compressed += w;
            if (c.Shared)
            {
                store += w * cost;
                AddSlot(slots, cost, w);
                sharedBlobs += w;
                continue;
            }
            store += w * cost * groupFactor[c.Domain];
            grouped += w;
            // A group of four's stream is cut into 4 KiB pieces and a remainder, in the remainder's size class.
            // (Each grouped content is a quarter of a group.)
            int stream = (int)(4 * cost * groupFactor[c.Domain]);
            AddSlot(slots, CompactStore.MaxBlobLength, w * (stream / CompactStore.MaxBlobLength) / 4.0);
            if (stream % CompactStore.MaxBlobLength != 0) AddSlot(slots, CompactStore.SlotSizeFor(stream % CompactStore.MaxBlobLength), w * 0.25);
        }

        frames += unsampledFrames * PageSize;
        frameContents += unsampledFrames;
        sharingOnly += unsampledFrames * PageSize;
        sharingPatching += unsampledFrames * PageSize;

        // Patches across domains, from the similarity route: in the engine's order a later domain's first page with a
        // similarity key finds an earlier domain's first page with it as its reference: the later page is patched (at the
        // median patch the key's pages had at home, or the median of every key's when its pages had none), and the earlier
        // one, if nothing patched against it before, becomes a reference kept as a frame. As the engine does
        // (PatchPass.PaysAgainstCompression), the patch is made only when it, plus what keeping a compressible reference
        // whole costs, comes to less than the page compressed. What the two pages cost at home is their single blobs, not
        // the domain's group factor: pages similar in another domain but unique at home are, on the guests, kernel text
        // relocated differently in each guest (1.6:1 alone), which groups poorly, while a domain's factor is measured on
        // the contents it holds most of (session 22: with the factor, the guests' pairs came out 2.6-5.7% high; with
        // their single blobs 1.1-2.3% low).
        double crossStore = 0, crossFrames = 0, crossPatched = 0, crossReferences = 0;
        // The median patch of each similarity key's pages at home (of a key's patches in the order met, sorted, the middle one).
        var medianPatch = scratch.MedianPatch;
        medianPatch.Clear();
        int patches = 0;
        foreach (ref readonly var c in similarityRoute)
            if (c.Entry.PatchCost > 0)
            {
                if (patches == scratch.Patches.Length) Array.Resize(ref scratch.Patches, patches * 2);
                scratch.Patches[patches++] = (c.Entry.Similarity, c.Entry.PatchCost);
            }
        var byKey = scratch.Patches.AsSpan(0, patches);
        byKey.Sort();
        for (int i = 0; i < byKey.Length;)
        {
            int j = i + 1;
            while (j < byKey.Length && byKey[j].Similarity == byKey[i].Similarity) j++;
            medianPatch[byKey[i].Similarity] = byKey[i + (j - i) / 2].Cost;
            i = j;
        }
        int anyKeyPatch = 0;
        if (byKey.Length > 0)
        {
            // The median over every key's patches (byKey is sorted by key: the costs are sorted apart).
            var costs = scratch.Costs.Length >= byKey.Length ? scratch.Costs : scratch.Costs = new int[byKey.Length * 2];
            for (int i = 0; i < byKey.Length; i++) costs[i] = byKey[i].Cost;
            Array.Sort(costs, 0, byKey.Length);
            anyKeyPatch = costs[byKey.Length / 2];
        }
        // The similarity route is sampled apart, more sparsely: each of its entries stands for 2^(SimilarityShift - SampleShift)
        // of the content route's.
        double similarityScale = 1L << (set[0].SimilaritySampleShift - set[0].SampleShift);
        var firstOf = scratch.FirstOf; // similarity key -> the first content with it, in the similarity route
        firstOf.Clear();
        var madeReference = scratch.MadeReference;
        madeReference.Clear();
        for (int i = 0; i < similarityRoute.Length; i++)
        {
            ref readonly var c = ref similarityRoute[i];
            var e = c.Entry;
            ref int first = ref CollectionsMarshal.GetValueRefOrAddDefault(firstOf, e.Similarity, out bool exists);
            if (!exists)
            {
                first = i;
                continue;
            }
            ref readonly var reference = ref similarityRoute[first];
            if (reference.Domain == c.Domain || (e.Flags & EntryFlags.ClusterFirst) == 0 || c.Shared || e.PatchCost > 0
                || reference.Entry.PatchCost > 0)
                continue;
            int patch = medianPatch.TryGetValue(e.Similarity, out int median) ? median : anyKeyPatch;
            if (patch == 0) continue;
            var r = reference.Entry;
            int rCost = reference.Shared ? r.SharedCost : r.SingleCost;
            // The engine's rule: the reference costs its frame less its blob unless it is a frame anyway.
            bool referenceWhole = (r.Flags & EntryFlags.Reference) != 0 || rCost == 0 || madeReference.Contains(e.Similarity);
            int referenceCost = referenceWhole ? 0 : PageSize - rCost;
            if (patch + referenceCost >= (e.SingleCost == 0 ? PageSize : e.SingleCost)) continue;
            // What the page cost at home: as a reference a compressed shared frame (or a frame when that does not compress),
            // else its blob (or a frame when incompressible).
            bool referenceAtHome = (e.Flags & EntryFlags.Reference) != 0;
            bool frameAtHome = referenceAtHome ? e.SharedCost == 0 : e.SingleCost == 0;
            double w = weight[c.Domain] * similarityScale;
            crossStore += w * (patch - (frameAtHome ? 0 : referenceAtHome ? e.SharedCost : e.SingleCost));
            if (frameAtHome) crossFrames -= w * PageSize;
            crossPatched += w;
            if ((r.Flags & EntryFlags.Reference) == 0 && madeReference.Add(e.Similarity))
            {
                double wr = weight[reference.Domain] * similarityScale;
                if (rCost > 0)
                {
                    // Its blob goes for a compressed shared frame when that compresses (SharedCompression), else a frame.
                    crossStore -= wr * rCost;
                    if (r.SharedCost > 0) crossStore += wr * r.SharedCost;
                    else crossFrames += wr * PageSize;
                }
                else if (r.SharedCost > 0 && !reference.Shared)
                {
                    // A frame at home (its single blob did not fit) that the groups' codec compresses as a shared frame.
                    crossFrames -= wr * PageSize;
                    crossStore += wr * r.SharedCost;
                }
                crossReferences += wr;
            }
        }

        // Each sampled content stands for 2^shift contents.
        long scale = 1L << set[0].SampleShift;
        // The store's slabs: each size class holds its blobs in whole slabs, the last one partly empty. Free slots left by
        // blobs that went away are not counted: once stable the store has compacted them (session 13: on the fleet bench's
        // hosts the slabs are at or under a fresh fill of the live blobs; counting 1/64 of the store for them had made
        // every prediction about 1% high).
        double stored = Math.Max(0, (store + crossStore) * scale);
        var (slabs, slabMetadata) = SlabBytes(slots, scale, stored);
        return new Part((long)Math.Round((frames + crossFrames) * scale / PageSize) * PageSize, (long)Math.Round(slabs),
            (long)Math.Round(sharingOnly * scale), (long)Math.Round(Math.Max(0, sharingPatching - crossPatched * PageSize) * scale))
        {
            Patched = Scaled(patched + crossPatched), References = Scaled(references + crossReferences), Shared = Scaled(shared),
            Compressed = Scaled(compressed - crossPatched), FrameContents = Scaled(frameContents), Grouped = Scaled(grouped - crossPatched),
            SharedPages = Scaled(sharedPages), StoreMetadata = (long)Math.Round(slabMetadata), SharedBlobs = Scaled(sharedBlobs),
        };

        long Scaled(double sampledCount) => (long)Math.Round(sampledCount * scale);
    }

    /// <summary>
    /// A domain's group factor in a set: its measured contents' group shares over their single blobs (<paramref name="group"/>,
    /// <paramref name="single"/>, of <paramref name="count"/> contents), drawn toward <paramref name="runs"/> (the fingerprint's
    /// factor, from its runs) as if that were <paramref name="priorContents"/> more contents of the same mean size
    /// (<see cref="GroupPriorOf"/>).
    /// </summary>
    internal static double GroupFactorOf(double group, double single, double count, double runs, double priorContents)
    {
        if (count <= 0 || single <= 0) return runs;
        double prior = priorContents * single / count;
        return Math.Clamp((group + prior * runs) / (single + prior), 0, 1);
    }

    private static void AddSlot(Dictionary<int, double> slots, int size, double blobs) =>
        CollectionsMarshal.GetValueRefOrAddDefault(slots, size, out _) += blobs;

    /// <summary>
    /// The slabs the store allocates for the blobs of the sample scaled up, and their bookkeeping: per size class, its
    /// blobs' slots in the slabs the store would make for them (4, 8, 16, 32 KiB, then 64 KiB each:
    /// <see cref="CompactStore.SlabsFor"/>). <paramref name="stored"/> (the slots' bytes, patches across domains included)
    /// scales the sampled slots to it. Between the smallest and the largest blob the sample holds, blob sizes are a
    /// continuum the sample sees a few points of: each class's count is smoothed over its neighbours and taken as Poisson
    /// (<see cref="Slabs"/>); the 4 KiB class (groups' whole pieces) is counted as it is.
    /// </summary>
    private static (double Bytes, double Metadata) SlabBytes(Dictionary<int, double> slots, long scale, double stored)
    {
        if (slots.Count == 0 || stored <= 0) return (stored, 0);
        double sampled = slots.Sum(kv => kv.Key * kv.Value) * scale;
        double adjust = sampled > 0 ? stored / sampled : 1;
        Span<double> blobs = stackalloc double[ClassSizes.Length];
        for (int c = 0; c < ClassSizes.Length; c++) blobs[c] = slots.GetValueOrDefault(ClassSizes[c]) * scale * adjust;
        var (bytes, metadata) = Slabs(blobs);
        if (Census is not null)
            Census(string.Join(' ', slots.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key}:{kv.Value * scale * adjust:0.#}")));
        return (bytes, metadata);
    }

    /// <summary>
    /// The slabs for <paramref name="blobs"/> per size class (the sample's, scaled up; in <see cref="ClassSizes"/> order)
    /// and their bookkeeping, as <see cref="SlabBytes"/> says. The placement's estimate uses it as it is.
    /// </summary>
    internal static (double Bytes, double Metadata) Slabs(ReadOnlySpan<double> blobs)
    {
        var size = ClassSizes;
        int whole = size.Length - 1; // the 4 KiB class: groups' whole pieces and pages no codec shrank, no part of the continuum
        double bytes = 0, metadata = 0;
        if (blobs[whole] > Seen) (bytes, metadata) = ExpectedSlabs(whole, blobs[whole], inUse: true);
        // Blob sizes run between the smallest and the largest the sample holds: no class outside them is taken to be in
        // use (a shared or single blob is never over the compression threshold).
        int first = -1, last = -1;
        for (int c = 0; c < whole; c++)
            if (blobs[c] > Seen)
            {
                if (first < 0) first = c;
                last = c;
            }
        if (first < 0) return (bytes, metadata);
        // Between them, sizes are a continuum the sample sees a few points of (a class holds one sampled blob or none, in a
        // store whose every class holds some): each class gets the triangle-weighted mean of the classes within Spread of
        // it, the bytes kept as the sample has them, and its count is taken as Poisson with that mean.
        Span<double> smooth = stackalloc double[whole];
        double sampled = 0, spread = 0;
        for (int c = first; c <= last; c++)
        {
            double weights = 0, sum = 0;
            for (int j = Math.Max(first, c - Spread); j <= Math.Min(last, c + Spread); j++)
            {
                double k = Spread + 1 - Math.Abs(c - j);
                weights += k;
                sum += k * blobs[j];
            }
            smooth[c] = sum / weights;
            sampled += blobs[c] * size[c];
            spread += smooth[c] * size[c];
        }
        double keep = spread > 0 ? sampled / spread : 0;
        for (int c = first; c <= last; c++)
        {
            var (b, m) = ExpectedSlabs(c, smooth[c] * keep, inUse: false);
            bytes += b;
            metadata += m;
        }
        return (bytes, metadata);
    }

    /// <summary>Classes each side whose blobs a class's smoothed count draws on.</summary>
    private const int Spread = 4;

    /// <summary>Blobs of a class below this are none (sums of the placement's estimate leave rounding behind).</summary>
    private const double Seen = 1e-6;

    /// <summary>Metadata a host has whatever it holds: the store's size classes.</summary>
    internal static double HostFixedMetadataBytes => CompactStore.FixedMetadataBytes;

    /// <summary>The host's page group table holding the groups of <paramref name="groupedPages"/> pages or shared blobs (groups of the default size), in whole chunks.</summary>
    internal static long GroupTableBytes(long groupedPages) =>
        PageGroupTable.MetadataBytesFor((groupedPages + DomainPolicy.DefaultGroupSize - 1) / DomainPolicy.DefaultGroupSize);


    /// <summary>
    /// The ratio weight of a domain's sampled contents: each stands for its share of the distinct contents the pass counted
    /// (1 where it did not count them).
    /// </summary>
    /// <summary>
    /// The domain's mean single blob over the sample's, where the pass measured every one (a small domain: 1 where not),
    /// within 1/2 and 2. A private content's grouped blob is its single blob times the domain's group factor times this
    /// (a ratio estimate): the sample's few hundred contents put a small domain's store off by several percent.
    /// </summary>
    internal static double SinglesFactor(DomainFingerprint f) =>
        f.SinglesMean > 0 && f.SampledSinglesMean > 0 ? Math.Clamp(f.SinglesMean / f.SampledSinglesMean, 0.5, 2) : 1;

    /// <summary>
    /// The weights of a domain's sampled contents (each stands for weight · 2^shift contents): its incompressible ones
    /// (no codec shrinks them) and its others. Both are the ratio weight, except in a domain measured whole (a small one,
    /// which knows how many of its contents are incompressible): there each stratum is weighed to its exact count, and
    /// with no incompressible content in the sample its incompressible contents are counted outright as private frames
    /// (<c>UnsampledFrames</c>, in the sample's contents). Session 14: perl's 30 frames (0.7% of its pages) had been
    /// predicted as none with one key and as 51 with another.
    /// </summary>
    internal static (double Other, double Incompressible, double UnsampledFrames) StrataOf(DomainFingerprint f)
    {
        double ratio = RatioWeight(f);
        if (f.SinglesMean <= 0 || f.DistinctContents <= 0) return (ratio, ratio, 0);
        int sampledIncompressible = f.IncompressibleSampled, sampledOther = f.ContentSampled - sampledIncompressible;
        long others = Math.Max(0, f.DistinctContents - f.IncompressibleContents);
        double other = sampledOther > 0 ? others / (double)((long)sampledOther << f.SampleShift) : ratio;
        return sampledIncompressible > 0
            ? (other, f.IncompressibleContents / (double)((long)sampledIncompressible << f.SampleShift), 0)
            : (other, 0, f.IncompressibleContents / (double)(1L << f.SampleShift));
    }

    internal static double RatioWeight(DomainFingerprint f)
    {
        long sampled = f.ContentSampled;
        return f.DistinctContents > 0 && sampled > 0 ? Math.Clamp(f.DistinctContents / (double)(sampled << f.SampleShift), 0.5, 2) : 1;
    }

    /// <summary>The store's slot sizes, smallest first.</summary>
    internal static readonly int[] ClassSizes = Enumerable.Range(1, CompactStore.MaxBlobLength).Select(CompactStore.SlotSizeFor).Distinct().ToArray();

    /// <summary>
    /// The slabs of class <paramref name="c"/> for a number of blobs that is Poisson with mean <paramref name="mean"/>
    /// (given that the class is in use when <paramref name="inUse"/>), in expectation: a class's slabs grow from a page, so a
    /// class of a few blobs costs what its blobs happen to need, not one slab whatever they are. Over
    /// <see cref="PoissonLimit"/> blobs the count is taken as it is (its spread no longer changes the slabs much).
    /// </summary>
    private static (double Bytes, double Metadata) ExpectedSlabs(int c, double mean, bool inUse)
    {
        if (mean > PoissonLimit) return CompactStore.LeastSlabsFor(ClassSizes[c], (long)Math.Ceiling(mean - 1e-9));
        if (mean <= 0) return (0, 0);
        var table = SmallSlabs[c];
        double p = Math.Exp(-mean), bytes = 0, metadata = 0, mass = 0;
        int top = Math.Min(table.Length - 1, (int)(mean + 8 * Math.Sqrt(mean) + 8));
        for (int n = 1; n <= top; n++)
        {
            p *= mean / n;
            bytes += p * table[n].Bytes;
            metadata += p * table[n].Metadata;
            mass += p;
        }
        if (inUse && mass > 0) return (bytes / mass, metadata / mass);
        return (bytes, metadata);
    }

    private const int PoissonLimit = 48;

    /// <summary>Per size class, the store's slabs for 0 to 2·<see cref="PoissonLimit"/> blobs (bytes and bookkeeping).</summary>
    private static readonly (long Bytes, long Metadata)[][] SmallSlabs =
        ClassSizes.Select(s => Enumerable.Range(0, 2 * PoissonLimit + 1).Select(n => CompactStore.LeastSlabsFor(s, n)).ToArray()).ToArray();

    /// <summary>Diagnostics: given the predicted blobs per slot size of each trust group.</summary>
    internal static Action<string>? Census;

    private static string SampleText(DomainFingerprint f) =>
        $"contents 1 in {1L << f.SampleShift}, similarity keys 1 in {1L << f.SimilaritySampleShift}, detector seed {f.DetectorSeed}";

    /// <summary>
    /// The most pages a set of fingerprints may describe together: 2^48 (1 EiB of guest memory). With at most
    /// <see cref="int.MaxValue"/> sampled entries in all (the model's tables are indexed by int), no figure of the model
    /// comes near 2^63: a sampled content stands for at most 2^13 contents (2^SampleShift, at most 2^12, times a ratio
    /// weight of 2 at most; a small domain's strata weight, for at most its 8,192 pages), and adds at most a few pages'
    /// bytes times the similarity route's 4 to any figure (about 2^29 bytes an entry, 2^60 for them all) and its copies
    /// (at most the set's 2^48 pages) to the shared pages (2^61 at most); the guest bytes and the metadata are under
    /// 2^61 for 2^48 pages.
    /// </summary>
    internal const long MaxSetPages = 1L << 48;

    /// <summary>
    /// The fingerprints that can be combined, for a cmdlet that takes a fleet's fingerprints as they come: those of the
    /// fleet key most of them have, then of the sampling (sample rates and detector) most of those have; a tie goes to
    /// the one seen first. Each other fingerprint is returned as its error (FingerprintKeyMismatch or
    /// FingerprintSampleMismatch, InvalidData, its target "host/domain"), so that one stale fingerprint does not stop
    /// the rest, nor is the blame put on whichever arrived first.
    /// </summary>
    public static (List<DomainFingerprint> Kept, List<DEException> Refused) KeepCombinable(IReadOnlyList<DomainFingerprint> fingerprints)
    {
        static string KeyOf(DomainFingerprint f) => f.KeyId ?? "";
        static (int, int, int) SamplingOf(DomainFingerprint f) => (f.SampleShift, f.SimilaritySampleShift, f.DetectorSeed);
        string key = MostCommon(fingerprints, KeyOf);
        var sameKey = fingerprints.Where(f => KeyOf(f) == key).ToList();
        var refused = fingerprints.Where(f => KeyOf(f) != key).Select(f => new DEException("FingerprintKeyMismatch", DEErrorKind.InvalidData,
                $"The fingerprint of domain '{f.Domain}' of host '{f.HostName}' was made with fleet key {f.KeyId}, and {sameKey.Count} of the {fingerprints.Count} fingerprints given with key {key}: their hashes cannot be compared, so it is left out. Fingerprint every domain with the same key.",
                f.ToString())).ToList();
        var sampling = MostCommon(sameKey, SamplingOf);
        var kept = sameKey.Where(f => SamplingOf(f) == sampling).ToList();
        refused.AddRange(sameKey.Where(f => SamplingOf(f) != sampling).Select(f => new DEException("FingerprintSampleMismatch", DEErrorKind.InvalidData,
            $"The fingerprint of domain '{f.Domain}' of host '{f.HostName}' samples differently ({SampleText(f)}) from {kept.Count} of the {sameKey.Count} fingerprints of its key ({SampleText(kept[0])}), so it is left out; fingerprint every domain with the same -SampleRate and module version.",
            f.ToString())));
        return (kept, refused);
    }

    /// <summary>The value most of the items have; of values as common, the one seen first.</summary>
    private static T MostCommon<TItem, T>(IReadOnlyList<TItem> items, Func<TItem, T> value) where T : notnull
    {
        var counts = new Dictionary<T, int>();
        var order = new List<T>();
        foreach (var item in items)
        {
            var v = value(item);
            if (counts.TryGetValue(v, out int c)) counts[v] = c + 1;
            else
            {
                counts[v] = 1;
                order.Add(v);
            }
        }
        T best = order.Count > 0 ? order[0] : default!;
        foreach (var v in order)
            if (counts[v] > counts[best]) best = v;
        return best;
    }

    /// <summary>
    /// The fingerprints can be combined: at least one, each valid (<see cref="DomainFingerprint.Validate"/>), together
    /// within <see cref="MaxSetPages"/>, one fleet key, one sample rate, one detector.
    /// </summary>
    internal static void Check(IReadOnlyList<DomainFingerprint> fingerprints)
    {
        if (fingerprints is null || fingerprints.Count == 0)
            throw new DEException("FingerprintNone", DEErrorKind.InvalidArgument, "A prediction needs at least one fingerprint.");
        var f0 = fingerprints[0];
        long pages = 0, entries = 0;
        foreach (var f in fingerprints)
        {
            f.Validate();
            // Each is 2^40 pages at most, so the sums stop far from overflowing.
            pages += f.PageCount;
            entries += f.GetEntries().Count;
            if (pages > MaxSetPages || entries > int.MaxValue)
                throw new DEException("FingerprintSetTooLarge", DEErrorKind.InvalidArgument,
                    $"The fingerprints up to '{f}' describe {pages} pages and {entries} sampled entries; a prediction or placement takes at most {MaxSetPages} pages (2^48, 1 EiB) and {int.MaxValue} entries in all.",
                    f.ToString());
            if (f.KeyId != f0.KeyId)
                throw new DEException("FingerprintKeyMismatch", DEErrorKind.InvalidArgument,
                    $"The fingerprints of '{f0}' and '{f}' were made with different fleet keys ({f0.KeyId}, {f.KeyId}): their hashes cannot be compared. Fingerprint every domain with the same key.",
                    f.ToString());
            if (f.SampleShift != f0.SampleShift || f.SimilaritySampleShift != f0.SimilaritySampleShift || f.DetectorSeed != f0.DetectorSeed)
                throw new DEException("FingerprintSampleMismatch", DEErrorKind.InvalidArgument,
                    $"The fingerprints of '{f0}' and '{f}' sample differently ({SampleText(f0)}; {SampleText(f)}); fingerprint every domain with the same -SampleRate and module version.",
                    f.ToString());
        }
    }
}
