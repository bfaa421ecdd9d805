using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using DifferenceEngine.Codecs;
using DifferenceEngine.Compression;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Loading;
using DifferenceEngine.Memory;
using DifferenceEngine.Patching;
using DifferenceEngine.Sharing;
using DifferenceEngine.Store;

namespace DifferenceEngine.Fleet;

/// <summary>
/// Makes a domain's fingerprint in one read-only pass over its pages, in increasing gfn order (docs/FLEET.md). Per page
/// it tells zero and one-word pages apart and computes the page's similarity key (the engine's detector, one 64-byte
/// block); a content is sampled when the fleet-keyed value of its content hash falls below the sample threshold (the
/// content route), or when that of its similarity key falls below a threshold four times lower (the similarity route),
/// so every page with the same key (identical pages among them) is sampled together, in this domain and in every other
/// of the fleet. Of a sampled page it keeps the keyed hashes and what the engine's codecs make of it: its single blob
/// (LZ4, Zstd when LZ4 does not shrink it enough), its blob as a shared frame (Zstd), and its patch as the engine would
/// choose it. After the pass, runs of four pages the engine would group measure what Zstd groups save (a small domain is
/// grouped whole, and has every single blob measured).
/// Not thread-safe: one builder per pass.
/// </summary>
public sealed class FingerprintBuilder : IGuestPageSink, IDisposable
{
    /// <summary>Sample one similarity key in 2^this (16: one page in 16).</summary>
    public const int DefaultSampleShift = 4;

    /// <summary>
    /// The similarity route samples keys this many powers of two more sparsely than the content route (one key in 64 by
    /// default): it serves only the patches across domains, under 1% of any prediction on the fleet bench, while its
    /// entries' codec work was a fifth of the pass (docs/FLEET.md, "Speed").
    /// </summary>
    public const int SimilarityShiftExtra = 2;
    public const int MinSampleShift = 2;
    public const int MaxSampleShift = 12;

    /// <summary>The detector the sample is keyed on: the engine's default shape, with this fixed seed, the same on every host.</summary>
    public const int FleetDetectorSeed = 20081208;

    private const int PageSize = PageGeometry.PageSize;
    private const int GroupRun = 4;
    private const int GroupRunEvery = 128;
    private const int MinRuns = 64, GroupMeasurementsWanted = 256;

    private readonly KeyedHasher _hasher;
    private readonly string _keyId;
    private readonly int _shift;
    private readonly ulong _threshold, _similarityThreshold;
    private readonly SimilarityDetector _detector = new(HostPolicy.DefaultKeys, HostPolicy.DefaultBlocksPerKey, FleetDetectorSeed);
    private readonly DomainPolicy _policy = new();
    private readonly Dictionary<ulong, int> _byContent = new();
    private readonly Dictionary<ulong, int> _firstBySimilarity = new();
    private readonly List<FingerprintEntry> _entries = new();
    // Second looks, after the pass: per entry its gfn; per entry and similarity key (the engine's detector has two) the
    // first page before it with that key (its candidate reference), and, when it is that key's first page, the next page
    // with the key (which would patch against it).
    private const int Keys = HostPolicy.DefaultKeys;
    private readonly List<long> _entryGfn = new();
    private readonly List<ulong> _entryKeys = new();
    private readonly Dictionary<ulong, Candidates>[] _candidates = [new(), new()];
    private readonly Dictionary<ulong, int> _copies = new(); // by the low 64 bits of the content hash
    private readonly Dictionary<ulong, long>[] _sharedByKey = [new(), new()];
    private readonly byte[] _blob = new byte[PageSize + 64];
    private readonly byte[] _patch = new byte[DeltaCodec.MaxPatchSize];
    private readonly byte[] _run = new byte[GroupRun * (GroupCompression.HeaderPerMember + PageSize)];
    private GroupCodecChoice _groupChoice; // the Zstd groups' parameter set, learnt over the domain's sampled runs as a pass learns it per slice
    private readonly byte[] _stream = new byte[GroupCodec.Bound(GroupRun * (GroupCompression.HeaderPerMember + PageSize))];
    private readonly int _runEvery;
    // Which sampled contents have their shared-frame blob measured: the low bits of their keyed content hash under this
    // mask are zero (see MeasureMask).
    private readonly ulong _sharedCostMask;
    private long _groupBytes, _groupSinglesBytes;
    private int _groupRuns;
    private long _sharedGroupBytes, _sharedGroupSinglesBytes;
    private int _sharedGroupRuns;
    // Per class of shared blob size (SharedBucket), members' shares of their groups and their blobs alone, and how many.
    private readonly double[] _sharedShare = new double[SharedBuckets], _sharedAlone = new double[SharedBuckets];
    private readonly int[] _sharedMembers = new int[SharedBuckets];

    /// <summary>Classes of shared blob size the shared group factor is measured in: under 1 KiB, under 2 KiB, larger.</summary>
    private const int SharedBuckets = 3;

    private static int SharedBucket(int blob) => Math.Min(SharedBuckets - 1, blob / 1024);
    // A small domain's single blobs, all of them (ExactSinglesPages; null for a larger one): by gfn, packed with their
    // fallback mark (KnownSingle; -1: not measured), for its sampled entries and its groups after the pass; their sum over
    // its distinct contents, and the same over the content route's sample, for the model's ratio estimate of the store.
    private readonly int[]? _singleByGfn;
    private long _singlesSum, _singlesContents, _sampledSinglesSum, _sampledSinglesContents, _incompressibleContents;
    private long _lastGfn = -1;
    private long _pagesSet, _zeroSet, _uniform, _content, _sampled;
    private readonly Stopwatch _time = new();

    public FingerprintBuilder(FleetKey key, int sampleShift = DefaultSampleShift, long expectedPages = 0)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (sampleShift is < MinSampleShift or > MaxSampleShift)
            throw new DEException("FingerprintSampleInvalid", DEErrorKind.InvalidArgument,
                $"The sample keeps one page in 2^{MinSampleShift} to 2^{MaxSampleShift}; 2^{sampleShift} was given.", sampleShift);
        _hasher = key.CreateHasher();
        _keyId = key.KeyId;
        _shift = sampleShift;
        _threshold = ulong.MaxValue >> sampleShift;
        _similarityThreshold = ulong.MaxValue >> (sampleShift + SimilarityShiftExtra);
        // Sized for the pages to come (the page count of the domain or image): the tables never grow during the pass.
        int capacity = (int)Math.Clamp(expectedPages, 0, 1 << 26);
        // Runs: about 256 group measurements in all with the group shares to come (one content-route entry in eight: a
        // 128th of the pages), never under 64 runs. A small domain's group factor rests on its runs (its group shares
        // are a few dozen), and 64 runs left it off by 3% one way or the other for good (the runs' places are fixed by
        // the gfns, not the key): perl's factor 0.606 from 64 runs, 0.622 from 185, 0.627 over all its pages.
        int runs = (int)Math.Max(MinRuns, GroupMeasurementsWanted - expectedPages / 128);
        _runEvery = expectedPages <= 0 ? GroupRun * GroupRunEvery : (int)Math.Clamp(expectedPages / runs, GroupRun + 1, GroupRun * GroupRunEvery);
        if (expectedPages > 0 && expectedPages <= ExactSinglesPages)
        {
            _singleByGfn = new int[expectedPages];
            Array.Fill(_singleByGfn, -1);
        }
        _sharedCostMask = MeasureMask(2 * (expectedPages >> sampleShift), SharedCostsWanted);
        if (capacity > 0)
        {
            _copies.EnsureCapacity(capacity);
            foreach (var table in _candidates) table.EnsureCapacity(capacity);
        }
    }

    // The shared-frame blobs measured go into one ratio (Zstd's blob to LZ4's, for the contents not measured), whose
    // precision depends on how many contents are measured, not on what fraction of the domain they are: one sampled
    // content in 8 is measured, or fewer in a large domain, as long as about this many are expected to be.
    private const int SharedCostsWanted = 64;
    private const int MinMeasureShift = 3, MaxMeasureShift = 10;

    /// <summary>
    /// The mask on the keyed content hash that selects one sampled content in 2^s for a measurement: s the largest from 3
    /// to 10 that still leaves at least <paramref name="wanted"/> of the <paramref name="expected"/> contents (3 when the
    /// pages to come are not known).
    /// </summary>
    internal static ulong MeasureMask(long expected, int wanted)
    {
        int s = MinMeasureShift;
        while (s < MaxMeasureShift && expected >> (s + 1) >= wanted) s++;
        return (1UL << s) - 1;
    }

    /// <summary>
    /// A domain of up to this many pages (32 MiB) has every distinct content's single blob measured in the pass: its
    /// sample holds a few hundred contents at most, whose mean blob is off by several percent one way or the other
    /// (bash, 754 contents: -8% to +5% over seven keys), and the model scales the sample's store by the true mean.
    /// With its groups, also measured whole, it costs a small domain up to about 0.3 s; a larger one's sample is large enough.
    /// </summary>
    public const int ExactSinglesPages = 8192;

    /// <summary>Takes the next page; gfns must increase (pages never given are zero).</summary>
    public void SetPage(long gfn, ReadOnlySpan<byte> page)
    {
        if (gfn <= _lastGfn)
            throw new DEException("FingerprintOrder", DEErrorKind.InvalidOperation,
                $"Pages must come in increasing gfn order; {gfn} came after {_lastGfn}.", gfn);
        if (page.Length != PageSize)
            throw new DEException("BufferTooSmall", DEErrorKind.InvalidArgument, $"A page is {PageSize} bytes; {page.Length} were given.", page.Length);
        // The pass's time runs from the first page to the end of Finish (the caller's reads included): two clock reads a
        // page cost 2% of the pass.
        if (!_time.IsRunning) _time.Start();
        _lastGfn = gfn;
        _pagesSet++;
        Classify(gfn, page);
        if (_singleByGfn is null && RunStartsAt(gfn)) _runStarts.Add(gfn); // a small domain is grouped whole instead
    }

    // Pages wait in a batch for their keyed hashes: AES over a whole batch at once costs a fraction of a call per page.
    private const int Batch = 256;
    private readonly byte[] _batchPages = new byte[Batch * PageSize];
    private readonly long[] _batchGfn = new long[Batch];
    private readonly ulong[] _batchKeys = new ulong[Batch * Keys];
    private readonly byte[] _similarityBlocks = new byte[Batch * 16];
    private readonly byte[] _contentBlocks = new byte[Batch * 16];
    private readonly byte[] _similarityKeyed = new byte[Batch * 16];
    private readonly byte[] _contentKeyed = new byte[Batch * 16];
    private int _batched;
    private long _sharedMeasured, _singleMeasured;

    /// <summary>
    /// Counts a page and notes what the second looks need (its similarity keys' first pages, shared contents); a page
    /// with content goes into the batch. False for a page that needs no memory (zero, one repeated word).
    /// </summary>
    private bool Classify(long gfn, ReadOnlySpan<byte> page)
    {
        if (PageHasher.IsUniform(page, out uint word))
        {
            if (word == 0) _zeroSet++;
            else _uniform++;
            return false;
        }
        _content++;
        int slot = _batched++;
        for (int k = 0; k < Keys; k++)
        {
            ulong key = _detector.ComputeKey(page, k);
            _batchKeys[slot * Keys + k] = key;
            ref var list = ref CollectionsMarshal.GetValueRefOrAddDefault(_candidates[k], key, out bool exists);
            if (!exists) list = Candidates.Empty;
            list.Add(gfn);
        }
        var hash = XxHash128.HashToUInt128(page);
        ref int copies = ref CollectionsMarshal.GetValueRefOrAddDefault(_copies, (ulong)hash, out _);
        if (++copies == 1)
        {
            if (_singleByGfn is not null)
            {
                int single = SingleCost(page, out bool fallback);
                if (single == 0) _incompressibleContents++;
                else
                {
                    _singlesSum += single;
                    _singlesContents++;
                }
                if (gfn < _singleByGfn.Length) _singleByGfn[gfn] = single | (fallback ? FallbackBit : 0);
            }
        }
        else if (copies == 2)
        {
            // A content met twice is shared: the first shared page with a key holds the key's slot in the engine's table.
            for (int k = 0; k < Keys; k++) _sharedByKey[k].TryAdd(_batchKeys[slot * Keys + k], gfn);
        }
        _batchGfn[slot] = gfn;
        page.CopyTo(_batchPages.AsSpan(slot * PageSize, PageSize));
        BinaryPrimitives.WriteUInt64LittleEndian(_similarityBlocks.AsSpan(slot * 16), _batchKeys[slot * Keys]);
        BinaryPrimitives.WriteUInt64LittleEndian(_similarityBlocks.AsSpan(slot * 16 + 8), 0);
        BinaryPrimitives.WriteUInt64LittleEndian(_contentBlocks.AsSpan(slot * 16), (ulong)hash);
        BinaryPrimitives.WriteUInt64LittleEndian(_contentBlocks.AsSpan(slot * 16 + 8), (ulong)(hash >> 64));
        if (_batched == Batch) FlushBatch();
        return true;
    }

    /// <summary>Keys the batch's hashes (AES, one call per kind) and samples its pages, in gfn order.</summary>
    private void FlushBatch()
    {
        int n = _batched;
        _batched = 0;
        if (n == 0) return;
        _hasher.Similarity(_similarityBlocks.AsSpan(0, n * 16), _similarityKeyed.AsSpan(0, n * 16));
        _hasher.Content(_contentBlocks.AsSpan(0, n * 16), _contentKeyed.AsSpan(0, n * 16));
        for (int i = 0; i < n; i++)
        {
            ulong keyedSimilarity = BinaryPrimitives.ReadUInt64LittleEndian(_similarityKeyed.AsSpan(i * 16));
            ulong keyedContent = BinaryPrimitives.ReadUInt64LittleEndian(_contentKeyed.AsSpan(i * 16));
            var route = (keyedSimilarity <= _similarityThreshold ? EntryFlags.BySimilarity : 0) | (keyedContent <= _threshold ? EntryFlags.ByContent : 0);
            if (route == 0) continue;
            _sampled++;
            if (_byContent.TryGetValue(keyedContent, out int existing))
            {
                var e = _entries[existing];
                _entries[existing] = e with { Copies = e.Copies + 1 };
                continue;
            }
            var page = _batchPages.AsSpan(i * PageSize, PageSize);
            // A small domain's pass measured it already (the page in the batch is its first with this content).
            int single = KnownSingle(_batchGfn[i], out bool fallback) ?? SingleCost(page, out fallback);
            if ((route & EntryFlags.ByContent) != 0 && single > 0)
            {
                _sampledSinglesSum += single;
                _sampledSinglesContents++;
            }
            var flags = route | (single == 0 ? EntryFlags.Incompressible : EntryFlags.None);
            if (fallback) flags |= EntryFlags.FallbackCodec;
            // The blob as a shared frame (Zstd): known when neither codec shrinks the page (none) or only Zstd does (the
            // single blob); measured for one compressible content in eight, or fewer in a large domain (MeasureMask, by
            // its keyed hash), and for the others estimated at Finish from the measured ones' Zstd-to-LZ4 ratio (Zstd
            // costs five times LZ4's time).
            int shared = 0;
            if (fallback) shared = single;
            else if (single > 0 && (keyedContent & _sharedCostMask) == 0)
            {
                shared = SharedCost(page);
                if (shared > 0)
                {
                    _sharedMeasured += shared;
                    _singleMeasured += single;
                }
            }
            else if (single > 0) flags |= EntryFlags.SharedCostEstimated;
            int index = _entries.Count;
            if (_firstBySimilarity.TryAdd(keyedSimilarity, index)) flags |= EntryFlags.ClusterFirst;
            _byContent[keyedContent] = index;
            _entryGfn.Add(_batchGfn[i]);
            for (int k = 0; k < Keys; k++) _entryKeys.Add(_batchKeys[i * Keys + k]);
            if ((route & EntryFlags.ByContent) != 0 && single > 0 && (keyedContent & 7) == 0) _groupShares.Add(index);
            _entries.Add(new FingerprintEntry(keyedContent, keyedSimilarity, 1, (ushort)single, (ushort)shared, 0, flags));
        }
    }

    // Groups are measured after the pass, when it is known which pages the engine would group (GroupsAfterPass): where
    // runs start, and which entries get their own group share (one content-route entry in eight that compresses).
    private readonly List<long> _runStarts = new();
    private readonly List<int> _groupShares = new();

    /// <summary>The first pages of the domain with one similarity key, in gfn order (the engine's candidate references).</summary>
    private struct Candidates
    {
        public const int Capacity = 4;
        public static Candidates Empty
        {
            get
            {
                var c = new Candidates();
                ((Span<long>)c._gfns).Fill(-1);
                return c;
            }
        }

        private Gfns _gfns;

        public void Add(long gfn)
        {
            Span<long> span = _gfns;
            int free = span.IndexOf(-1L);
            if (free >= 0) span[free] = gfn;
        }

        public readonly long this[int i] => _gfns[i];

        [System.Runtime.CompilerServices.InlineArray(Capacity)]
        private struct Gfns
        {
            private long _first;
        }
    }

    private const int FallbackBit = 1 << 16;

    /// <summary>The single blob the pass measured for page <paramref name="gfn"/> of a small domain (null: none measured).</summary>
    private int? KnownSingle(long gfn, out bool fallback)
    {
        fallback = false;
        if (_singleByGfn is null || gfn >= _singleByGfn.Length || _singleByGfn[gfn] < 0) return null;
        int known = _singleByGfn[gfn];
        fallback = (known & FallbackBit) != 0;
        return known & (FallbackBit - 1);
    }

    /// <summary>The store slot of the page's single blob as the engine encodes it by default (0: it stays a frame).</summary>
    private int SingleCost(ReadOnlySpan<byte> page, out bool fallback)
    {
        fallback = false;
        if (!CompressionPass.TryCompressBody(_policy, _policy.CompressionThreshold, page, _blob, out int written, out var algorithm))
            return 0;
        fallback = algorithm != _policy.CompressionAlgorithm;
        return CompactStore.SlotSizeFor(EncodedPage.CompressedHeader + written);
    }

    /// <summary>The shared-frame blobs not measured: the single blob times the measured Zstd-to-LZ4 ratio, as a slot.</summary>
    private void EstimateSharedCosts()
    {
        double ratio = _singleMeasured > 0 ? (double)_sharedMeasured / _singleMeasured : 1;
        int limit = Limit + EncodedPage.CompressedHeader;
        for (int i = 0; i < _entries.Count; i++)
        {
            var e = _entries[i];
            if ((e.Flags & EntryFlags.SharedCostEstimated) == 0) continue;
            int bytes = (int)Math.Round(e.SingleCost * ratio);
            _entries[i] = e with { SharedCost = (ushort)(bytes > limit ? 0 : CompactStore.SlotSizeFor(Math.Max(1, bytes))) };
        }
    }

    /// <summary>
    /// With page groups on, a shared blob is kept in a group of shared blobs once cold (SharedGrouping): each content's
    /// shared cost becomes its share of such a group, as a slot: the blob times the factor measured on the domain's runs
    /// for blobs of its size class (members' shares over their blobs; none when fewer than 8 members were measured).
    /// </summary>
    private void GroupSharedCosts()
    {
        Span<double> factor = stackalloc double[SharedBuckets];
        for (int b = 0; b < SharedBuckets; b++)
            factor[b] = _sharedMembers[b] < 8 || _sharedAlone[b] == 0 ? 1 : Math.Min(1, _sharedShare[b] / _sharedAlone[b]);
        for (int i = 0; i < _entries.Count; i++)
        {
            var e = _entries[i];
            if (e.SharedCost == 0) continue;
            double f = factor[SharedBucket(e.SharedCost)];
            if (f >= 1) continue;
            _entries[i] = e with { SharedCost = (ushort)CompactStore.SlotSizeFor(Math.Max(1, (int)Math.Round(e.SharedCost * f))) };
        }
    }

    /// <summary>The store slot of the page as a compressed shared frame (the groups' codec), 0 when it does not shrink enough.</summary>
    private int SharedCost(ReadOnlySpan<byte> page) =>
        PageCompressors.Get(_policy.GroupAlgorithm).TryCompress(page, _blob.AsSpan(0, Limit), out int written)
            ? CompactStore.SlotSizeFor(EncodedPage.CompressedHeader + written)
            : 0;

    private int Limit => (int)(PageSize * _policy.CompressionThreshold) - EncodedPage.CompressedHeader;

    /// <summary>The store slot of the patch the engine would keep against <paramref name="reference"/> (0: none under the
    /// threshold), and the patch's length without its header.</summary>
    private int PatchCost(ReadOnlySpan<byte> reference, ReadOnlySpan<byte> page, out int length)
    {
        if (DeltaCodec.TryEncode(reference, page, _patch.AsSpan(0, _policy.PatchThreshold), out length))
            return CompactStore.SlotSizeFor(EncodedPage.PatchHeader + length);
        length = 0;
        return 0;
    }

    /// <summary>Where sampled runs begin: one gfn in 512, or more often (see the constructor), at positions spread by a hash of the gfn (aligned gfns would favour what sits at alignment boundaries).</summary>
    private bool RunStartsAt(long gfn) => XxHash3.HashToUInt64(BitConverter.GetBytes(gfn)) % (ulong)_runEvery == 0;

    /// <summary>
    /// The second looks: each sampled content's patch against the first page with its second similarity key, and whether
    /// the next page with that key would patch against it, reading those pages again through <paramref name="readPage"/>
    /// (false: the page cannot be read; its entry is marked PatchUnknown).
    /// </summary>
    private void SecondLooks(Func<long, Span<byte>, bool>? readPage)
    {
        const int Depth = 3;
        var memo = new Dictionary<long, Look>();
        var known = new Dictionary<long, int>(); // gfn -> entry, whose single cost the pass measured
        for (int i = 0; i < _entries.Count; i++) known.TryAdd(_entryGfn[i], i);
        var pages = new byte[Depth + 1][];
        var others = new byte[Depth + 1][];
        for (int d = 0; d <= Depth; d++)
        {
            pages[d] = new byte[PageSize];
            others[d] = new byte[PageSize];
        }

        // Whether the page has a neighbour under one of its keys at all: most pages have none, and need no second look.
        bool Alone(long gfn, ulong key0, ulong key1)
        {
            for (int k = 0; k < Keys; k++)
            {
                ulong key = k == 0 ? key0 : key1;
                if (_sharedByKey[k].TryGetValue(key, out long holder) && holder != gfn) return false;
                if (_candidates[k].TryGetValue(key, out var list) && (list[0] != gfn || list[1] >= 0)) return false;
            }
            return true;
        }

        // What the engine makes of page gfn, as far as patching goes. It lists a page under each of its two similarity
        // keys in the pass before it patches (the first page with a key keeps the slot; a shared page takes it over),
        // then patches every page it can in gfn order, and compresses only after that: a page finds its candidate still
        // in a frame unless the candidate was patched itself. Of the page's two keys the smaller patch is kept (against
        // the shared page that holds a key, or else the first earlier page with it that is not patched), and made only
        // when it pays against compression (PatchPass.PaysAgainstCompression): the patch, plus what keeping its reference
        // whole costs unless it serves a patch already, must come to less than the page compressed alone. A page that
        // serves as a reference is not grouped (a shared blob once cold, when it compresses: AsReference below).
        var references = new HashSet<long>(); // pages a patch was found to be made against, as the pass met them
        var referenceBytes = new byte[PageSize];
        Look Examine(long gfn, int depth)
        {
            if (memo.TryGetValue(gfn, out var seen)) return seen;
            var bytes = pages[depth];
            var other = others[depth];
            if (readPage is null || !readPage(gfn, bytes)) return Look.Unreadable;
            bool shared = _copies.GetValueOrDefault((ulong)XxHash128.HashToUInt128(bytes)) > 1;
            int best = 0, bestLength = 0, bestReferenceCost = 0;
            long against = -1;
            bool unknown = false;
            if (!shared && depth > 0)
            {
                for (int k = 0; k < Keys && !unknown; k++)
                {
                    ulong key = _detector.ComputeKey(bytes, k);
                    if (_sharedByKey[k].TryGetValue(key, out long holder) && holder != gfn)
                    {
                        if (!readPage(holder, other)) { unknown = true; break; }
                        int length = 0, cost = other.AsSpan().SequenceEqual(bytes) ? 0 : PatchCost(other, bytes, out length);
                        if (cost > 0 && (best == 0 || cost < best))
                            (best, bestLength, against, bestReferenceCost) = (cost, length, holder, ReferenceCostOf(holder, other));
                        continue;
                    }
                    if (!_candidates[k].TryGetValue(key, out var list)) continue;
                    for (int j = 0; j < Candidates.Capacity && list[j] >= 0 && list[j] < gfn; j++)
                    {
                        long cand = list[j];
                        var look = Examine(cand, depth - 1);
                        if (look.Unknown) { unknown = true; break; }
                        if (look.Patch > 0) continue; // patched itself: no frame to patch against
                        if (!readPage(cand, other)) { unknown = true; break; }
                        int length = 0, cost = other.AsSpan().SequenceEqual(bytes) ? 0 : PatchCost(other, bytes, out length);
                        if (cost > 0 && (best == 0 || cost < best))
                            (best, bestLength, against, bestReferenceCost) = (cost, length, cand, ReferenceCostOf(cand, other));
                        break;
                    }
                }
            }
            if (best > 0 && !unknown && !PatchPass.Pays(bestLength, bestReferenceCost, _policy, bytes, incompressible: false))
                (best, against) = (0, -1); // declined: compressing both takes less
            if (best > 0 && !unknown) references.Add(against);
            var result = new Look(shared, best, unknown) { Against = against };
            memo[gfn] = result;
            return result;
        }

        // What keeping the page a whole frame costs over compressing it: nothing once it serves a patch.
        int ReferenceCostOf(long gfn, ReadOnlySpan<byte> bytes) =>
            references.Contains(gfn) ? 0 : PatchPass.ReferenceCost(_policy, bytes);

        for (int i = 0; i < _entries.Count; i++)
        {
            var e = _entries[i];
            long gfn = _entryGfn[i];
            if (Alone(gfn, _entryKeys[i * Keys], _entryKeys[i * Keys + 1])) continue;
            var look = Examine(gfn, Depth);
            if (look.Unknown)
            {
                _entries[i] = e with { Flags = e.Flags | EntryFlags.PatchUnknown };
                continue;
            }
            if (look.Patch > 0)
            {
                _entries[i] = e with { PatchCost = (ushort)look.Patch };
                continue;
            }
            if (Referenced(gfn, _entryKeys[i * Keys], _entryKeys[i * Keys + 1], look)) _entries[i] = AsReference(e, gfn);
        }

        // A reference is compressed with the pages and patches that hold it once they are all cold (SharedCompression),
        // as a shared blob: its blob is measured, not estimated from its single one (a reference's content is often code,
        // whose Zstd-to-LZ4 ratio is not the domain's).
        FingerprintEntry AsReference(FingerprintEntry e, long gfn)
        {
            e = e with { Flags = e.Flags | EntryFlags.Reference };
            if ((e.Flags & EntryFlags.SharedCostEstimated) == 0 || readPage is null || !readPage(gfn, referenceBytes)) return e;
            return e with { SharedCost = (ushort)SharedCost(referenceBytes), Flags = e.Flags & ~EntryFlags.SharedCostEstimated };
        }

        // A page not patched itself is a reference when a page with one of its keys is patched against it, as the engine
        // patches that page (the second looks above, for it): after it, or anywhere when it is shared. It is not grouped:
        // it stays a frame until it and every patch against it are cold, then becomes a shared blob when it compresses.
        bool Referenced(long gfn, ulong key0, ulong key1, Look look)
        {
            for (int k = 0; k < Keys; k++)
            {
                ulong key = k == 0 ? key0 : key1;
                if (_sharedByKey[k].TryGetValue(key, out long holder) && holder != gfn && !look.Shared) continue; // a shared page holds the slot
                if (!_candidates[k].TryGetValue(key, out var list)) continue;
                for (int j = 0; j < Candidates.Capacity && list[j] >= 0; j++)
                {
                    long r = list[j];
                    if (r == gfn || (r < gfn && !look.Shared)) continue;
                    var patched = Examine(r, Depth - 1);
                    if (patched.Patch > 0 && patched.Against == gfn) return true;
                }
            }
            return false;
        }

        if (readPage is null) return;
        GroupsAfterPass(readPage, (gfn, bytes) =>
        {
            // The engine groups a page it keeps as a private single blob: not zero or one word, not shared, compressible,
            // not patched, and no patch's reference (a reference stays a whole frame).
            if (PageHasher.IsUniform(bytes, out _) || _copies.GetValueOrDefault((ulong)XxHash128.HashToUInt128(bytes)) > 1) return 0;
            int single = KnownSingle(gfn, out _) ?? SingleCost(bytes, out _);
            if (single == 0) return 0;
            ulong key0 = _detector.ComputeKey(bytes, 0), key1 = _detector.ComputeKey(bytes, 1);
            if (Alone(gfn, key0, key1)) return single;
            var look = Examine(gfn, Depth);
            return look.Unknown || look.Patch > 0 || Referenced(gfn, key0, key1, look) ? 0 : single;
        });
    }

    // How far a run or a group share looks for its members, in gfns.
    private const int RunWalk = 256, ShareWalk = 16;

    /// <summary>
    /// Groups as the engine gathers them, measured after the pass (when it is known which pages the engine groups:
    /// <paramref name="groupable"/> gives a page's single blob, 0 for a page it does not group). Runs: from each run
    /// start on (one gfn in 512, fewer in a small domain), the next four groupable pages, compressed as one Zstd group
    /// (the engine's payload: checksums, gfns, pages), its store slots against their single blobs (a group that does not
    /// pay is refused: the singles). Group shares: for one content-route entry in eight that compresses, its share of a
    /// group with the (up to three) groupable pages before it, its single blob times the group's slots over the
    /// members' single blobs. Before session 14 both took every page with a single blob, shared and patched ones too,
    /// which group better than the engine's own groups (perl's group factor 0.59-0.61 against 0.63).
    /// </summary>
    private void GroupsAfterPass(Func<long, Span<byte>, bool> readPage, Func<long, byte[], int> groupable)
    {
        var members = new byte[GroupRun][];
        for (int m = 0; m < GroupRun; m++) members[m] = new byte[PageSize];
        var gfns = new long[GroupRun];

        int Take(long gfn, int m)
        {
            if (!readPage(gfn, members[m])) return 0;
            return groupable(gfn, members[m]);
        }

        // The group's store slots (the stream cut into 4 KiB pieces), or 0 when it does not pay.
        int GroupSlots(int count, int singlesSum)
        {
            int header = count * GroupCompression.HeaderPerMember;
            var payload = _run.AsSpan(0, header + count * PageSize);
            for (int m = 0; m < count; m++)
            {
                GroupCompression.WriteMemberHeader(payload, count, m, (uint)XxHash3.HashToUInt64(members[m], gfns[m]), gfns[m]);
                members[m].CopyTo(payload[(header + m * PageSize)..]);
            }
            if (!GroupCodec.TryCompress(_policy.GroupAlgorithm, payload, _stream, ref _groupChoice, Math.Min(singlesSum, PageGroupTable.MaxStreamBytes + 1), out int written) || written > PageGroupTable.MaxStreamBytes || written >= singlesSum)
                return 0;
            int slots = 0;
            for (int at = 0; at < written; at += CompactStore.MaxBlobLength)
                slots += CompactStore.SlotSizeFor(Math.Min(CompactStore.MaxBlobLength, written - at));
            return Math.Min(slots, singlesSum);
        }

        // One run from start on, its members found before limit: the gfn after its last member, or -1 for too few.
        long Run(long start, long limit)
        {
            int count = 0, sum = 0;
            for (long g = start; g <= _lastGfn && g < limit && count < GroupRun; g++)
            {
                int single = Take(g, count);
                if (single == 0) continue;
                gfns[count++] = g;
                sum += single;
            }
            if (count < GroupRun) return -1;
            int slots = GroupSlots(count, sum);
            _groupBytes += slots > 0 ? slots : sum;
            _groupSinglesBytes += sum;
            _groupRuns++;
            return gfns[count - 1] + 1;
        }

        if (_singleByGfn is not null)
        {
            // A small domain is grouped whole, as the engine groups it: runs back to back from its first page.
            for (long start = 0; start >= 0 && start <= _lastGfn;) start = Run(start, _lastGfn + 1);
        }
        else
        {
            long next = 0;
            foreach (long start in _runStarts)
                if (start >= next) next = Math.Max(next, Run(start, start + RunWalk));
        }

        foreach (int index in _groupShares)
        {
            var e = _entries[index];
            long gfn = _entryGfn[index];
            // The members before it, nearest first, then in gfn order with the page last (the engine's order).
            int count = 0, sum = 0;
            for (long g = gfn - 1; g >= 0 && g >= gfn - ShareWalk && count < GroupRun - 1; g--)
            {
                int single = Take(g, count);
                if (single == 0) continue;
                gfns[count++] = g;
                sum += single;
            }
            if (count == 0 || !readPage(gfn, members[count])) continue;
            gfns[count] = gfn;
            sum += e.SingleCost;
            count++;
            members.AsSpan(0, count - 1).Reverse();
            gfns.AsSpan(0, count - 1).Reverse();
            int slots = GroupSlots(count, sum);
            int share = slots == 0 ? e.SingleCost : Math.Min(e.SingleCost, (int)Math.Ceiling((double)e.SingleCost * slots / sum));
            _entries[index] = e with { GroupCost = (ushort)share };
        }

        // Groups of shared blobs (SharedGrouping): the engine compresses the blobs of cold shared frames together, in the
        // order of their first domain's pages. Measured last (the page groups' measures above keep their codec choice's
        // order), on the same run starts: the next four pages the engine would group, each as the shared blob it would be
        // (the groups' codec alone), as one group, against those blobs.
        if (_policy.GroupSize >= 2)
        {
            long sharedNext = 0;
            Span<int> blobs = stackalloc int[GroupRun];
            Span<double> added = stackalloc double[GroupRun];
            // A small domain (measured whole for page groups): up to 128 run starts spread evenly over it.
            long small = _singleByGfn is not null ? Math.Min(128, (_lastGfn + 1) / GroupRun) : 0;
            var starts = _singleByGfn is not null
                ? Enumerable.Range(0, (int)small).Select(k => k * (_lastGfn + 1) / Math.Max(1, small))
                : _runStarts;
            foreach (long start in starts)
            {
                if (start < sharedNext) continue;
                int count = 0, sum = 0;
                long limit = start + RunWalk;
                for (long g = start; g <= _lastGfn && g < limit && count < GroupRun; g++)
                {
                    // Pages the engine would keep as single blobs (not shared, patched or a reference here): the content
                    // a domain's pages share with other domains' is of their kind (code, mostly), and the pages shared
                    // or patched within the domain are near copies of each other, which a run would make look free.
                    if (Take(g, count) == 0) continue;
                    int blob = SharedCost(members[count]);
                    if (blob == 0) continue;
                    blobs[count] = blob;
                    gfns[count++] = g;
                    sum += blob;
                }
                if (count < GroupRun) continue;
                sharedNext = gfns[count - 1] + 1;
                int slots = GroupSlots(count, sum);
                _sharedGroupBytes += slots > 0 ? slots : sum;
                _sharedGroupSinglesBytes += sum;
                _sharedGroupRuns++;
                // Each member's share of the group: the group's slots split as what the group takes without it says it
                // adds (a page much like its neighbours adds little, a random one nearly its whole blob). Measured per
                // class of blob size, so the heap-like pages of a run do not lend their gains to the code beside them.
                double addedSum = 0;
                for (int m = 0; m < count && slots > 0; m++)
                {
                    (members[m], members[count - 1]) = (members[count - 1], members[m]);
                    (gfns[m], gfns[count - 1]) = (gfns[count - 1], gfns[m]);
                    int without = GroupSlots(count - 1, sum - blobs[m]);
                    (members[m], members[count - 1]) = (members[count - 1], members[m]);
                    (gfns[m], gfns[count - 1]) = (gfns[count - 1], gfns[m]);
                    added[m] = Math.Max(0, slots - (without > 0 ? without : sum - blobs[m]));
                    addedSum += added[m];
                }
                for (int m = 0; m < count; m++)
                {
                    double share = slots == 0 ? blobs[m] : addedSum > 0 ? slots * added[m] / addedSum : (double)slots / count;
                    int b = SharedBucket(blobs[m]);
                    _sharedShare[b] += Math.Min(share, blobs[m]);
                    _sharedAlone[b] += blobs[m];
                    _sharedMembers[b]++;
                }
            }
        }
    }

    /// <summary>What the second looks found about one page: shared, its patch (0: none, or declined), or could not be read.</summary>
    private readonly record struct Look(bool Shared, int Patch, bool Unknown)
    {
        /// <summary>The page the patch is against (-1: none).</summary>
        public long Against { get; init; }

        public static Look Unreadable => new(false, 0, true);
    }

    /// <summary>
    /// The fingerprint of the pages given, for a domain of <paramref name="pageCount"/> pages. <paramref name="readPage"/>
    /// reads a page again for the second looks (null: none; the entries that needed one are marked PatchUnknown).
    /// </summary>
    public DomainFingerprint Finish(string domain, string hostName, string trustGroup, long pageCount, string source,
        Func<long, Span<byte>, bool>? readPage)
    {
        if (!_time.IsRunning) _time.Start();
        FlushBatch();
        EstimateSharedCosts();
        SecondLooks(readPage);
        double sharedGroupFactor = _sharedGroupSinglesBytes == 0 ? 1 : Math.Min(1, (double)_sharedGroupBytes / _sharedGroupSinglesBytes);
        GroupSharedCosts();
        _time.Stop();
        if (pageCount < _lastGfn + 1)
            throw new DEException("FingerprintPageCount", DEErrorKind.InvalidArgument,
                $"The domain has {pageCount} pages but page {_lastGfn} was given.", pageCount);
        var fp = new DomainFingerprint
        {
            Domain = domain,
            HostName = hostName,
            TrustGroup = trustGroup,
            Source = source,
            Created = DateTimeOffset.UtcNow,
            KeyId = _keyId,
            PageCount = pageCount,
            GuestBytes = pageCount * PageSize,
            ZeroPages = pageCount - _pagesSet + _zeroSet,
            UniformPages = _uniform,
            ContentPages = _content,
            DistinctContents = _copies.Count,
            SampleShift = _shift,
            SimilarityShift = _shift + SimilarityShiftExtra,
            SampledPages = _sampled,
            DetectorSeed = FleetDetectorSeed,
            GroupFactor = _groupSinglesBytes == 0 ? 1 : (double)_groupBytes / _groupSinglesBytes,
            GroupRunsSampled = _groupRuns,
            SharedGroupFactor = sharedGroupFactor,
            SharedGroupRunsSampled = _sharedGroupRuns,
            SinglesMean = _singlesContents == 0 ? 0 : (double)_singlesSum / _singlesContents,
            IncompressibleContents = _incompressibleContents,
            SampledSinglesMean = _sampledSinglesContents == 0 ? 0 : (double)_sampledSinglesSum / _sampledSinglesContents,
            Seconds = _time.Elapsed.TotalSeconds,
        };
        fp.SetEntries(_entries.ToArray());
        fp.PredictedUsedBytes = ColocationModel.Predict([fp]).PredictedUsedBytes;
        return fp;
    }

    /// <summary>A fingerprint of a memory image, core or process, read once (nothing is loaded into a host).</summary>
    /// <summary>
    /// "HostNameInvalid" or "PolicyTrustGroupInvalid" unless a domain of a host could have these names: a fingerprint of
    /// a file stands for such a domain (Get-DEFingerprint -Path checks them once, before any file is read).
    /// </summary>
    public static void CheckNames(string hostName, string trustGroup)
    {
        Hosting.NameRules.CheckHostName(hostName);
        DomainPolicy.ValidateTrustGroup(trustGroup);
    }

    public static DomainFingerprint FromSource(MemorySource source, FleetKey key, string domain, string hostName,
        string trustGroup = DomainPolicy.DefaultTrustGroup, int sampleShift = DefaultSampleShift, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        CheckNames(hostName, trustGroup);
        using var builder = new FingerprintBuilder(key, sampleShift, source.PageCount);
        source.CopyTo(builder, cancellationToken);
        return builder.Finish(domain, hostName, trustGroup, source.PageCount, source.Description, source.TryReadPage);
    }

    /// <summary>
    /// A fingerprint of a domain of any host, read once and changing nothing: an embedded or QEMU domain's pages are
    /// peeked (an encoded page decoded into a buffer, never brought back), a Xen domain's read through read-only
    /// mappings. <paramref name="progress"/> gets (pages read, pages in all) now and then.
    /// </summary>
    public static DomainFingerprint FromDomain(IDEDomain domain, FleetKey key, int sampleShift = DefaultSampleShift,
        Action<long, long>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(domain);
        Func<long, Span<byte>, bool> read = domain is Domain embedded
            ? embedded.PeekPage
            : (gfn, page) =>
            {
                try
                {
                    domain.ReadPage(gfn).CopyTo(page);
                    return true;
                }
                catch (DEException)
                {
                    return false;
                }
            };
        using var builder = new FingerprintBuilder(key, sampleShift, domain.PageCount);
        var page = new byte[PageSize];
        long count = domain.PageCount;
        // Xen counts the pages a guest holds, which need not be gfns 0 to count - 1: an HVM guest's physmap has a hole below
        // 4 GiB (its RAM goes on above), and special pages after. There every gfn up to the highest is tried, and the pages
        // found are taken in gfn order as pages 0, 1, ... of a guest of count pages (what the placement sizes), up to count
        // of them; elsewhere gfn g is page g. Either way the pages counted but not read are the unreadable ones.
        var xen = domain as Xen.XenDomain;
        // Pages the guest never touched are neither guest memory nor saved (Get-DEHostStats' definition): not read, and
        // counted apart. Embedded and QEMU domains know them; a Xen guest's pages are all its own.
        var untouchedOf = domain as Domain;
        long untouched = 0;
        long last = xen is not null ? xen.Host.MaxGfn(xen) : count - 1;
        var gfns = xen is not null ? new List<long>((int)Math.Min(count, 1 << 26)) : null; // page index -> gfn
        long taken = 0;
        for (long gfn = 0; gfn <= last && taken < count; gfn++)
        {
            if ((gfn & 4095) == 0)
            {
                cancellationToken.ThrowIfCancellationRequested();
                progress?.Invoke(Math.Min(gfn, count), count);
            }
            if (domain.IsRemoved) throw DEHost.DomainNotFound(domain.Name);
            if (untouchedOf is not null && untouchedOf.PeekUntouched(gfn))
            {
                untouched++;
                taken++; // counted, not read
                continue;
            }
            if (!read(gfn, page)) continue; // unreadable, or (Xen) a hole in the physmap
            builder.SetPage(gfns is null ? gfn : taken, page);
            gfns?.Add(gfn);
            taken++;
        }
        long unreadable = count - taken; // taken counts the untouched pages: they are not unreadable
        if (gfns is not null)
        {
            var readAtGfn = read;
            read = (index, buffer) => index >= 0 && index < gfns.Count && readAtGfn(gfns[(int)index], buffer);
        }
        progress?.Invoke(count, count);
        var fp = builder.Finish(domain.Name, domain.Host.Name, domain.Policy.TrustGroup, count, $"domain {domain.Name} on {domain.Host.Kind} host {domain.Host.Name}", read);
        fp.UnreadablePages = unreadable;
        fp.UntouchedPages = untouched;
        fp.ZeroPages -= unreadable + untouched; // never given to the builder, yet not zero pages of the guest's
        fp.GuestBytes = (count - untouched) * PageSize;
        return fp;
    }

    public void Dispose()
    {
        _hasher.Dispose();
    }
}
