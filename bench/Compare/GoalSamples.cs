using System.Diagnostics;
using DifferenceEngine.Codecs;
using DifferenceEngine.Compression;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Scanning;

namespace DifferenceEngine.Bench.Compare;

/// <summary>What the run measured for the per-operation goals (filled as the runs go).</summary>
internal sealed class GoalMeasurements
{
    public List<FaultSample> Faults { get; } = new();
    public double? CompressPageLz4Micros { get; set; }
    public GoalSamples.SteadyPatch? SteadyPatch { get; set; }

    /// <summary>
    /// What the kernel takes to give a page back on its first touch after the engine released it (MADV_DONTNEED at
    /// the end of every pass), the p50 in µs: every fault's new frame pays it once.
    /// </summary>
    public FirstTouch? FirstTouchMicros { get; set; }

    /// <summary>LZ4 compress_page by liblz4 and by the engine's codec on the same sample pages; null when not measured.</summary>
    public CodecTiming? CompressPageFloor { get; set; }
}

/// <summary>
/// The kernel's part of a fault's new frame, in µs: a first write to a page given back (<see cref="AloneP50"/>), and,
/// as the frame pool maps released frames 64 at a time, the first write to a page so mapped (<see cref="BatchedP50"/>)
/// plus the mapping call per page (<see cref="BatchMapPerPage"/>); those two null where the kernel has no
/// MADV_POPULATE_WRITE.
/// </summary>
internal sealed record FirstTouch(double AloneP50, double? BatchedP50, double? BatchMapPerPage);

/// <summary>Latencies of one kind of fault, timed around Domain.ReadPage (the guest's access, lock and copy included).</summary>
/// <remarks><see cref="Floor"/>: the C library's and the engine's codec decoding the very blobs (or group streams)
/// those reads decoded, alone; null when the C libraries are not there.</remarks>
internal sealed record FaultSample(string Kind, int Pages, double P50Micros, double P90Micros, CodecTiming? Floor = null);

/// <summary>
/// The per-operation goals of docs/PERFORMANCE.md measured inside the whole run, on the run's own pages: faults on pages
/// compressed alone and on pages kept in groups (read back after a run is measured), LZ4's compress_page on the inputs'
/// pages, and what re-patching allocates once the engine's tables have grown (a steady-state pass).
/// </summary>
internal static class GoalSamples
{
    private const int MaxSample = 3000;

    /// <summary>
    /// Reads back an even sample of the host's compressed pages, single and grouped apart, timing each read (each is a
    /// Decompress fault). Changes those pages (they get frames again): call only once the run's numbers are taken.
    /// </summary>
    public static IReadOnlyList<FaultSample> Faults(DEHost host)
    {
        // Single pages by the codec their blob names (with page groups on, a page LZ4 cannot shrink has Zstd's).
        var single = new Dictionary<string, List<(Domain D, long Gfn)>>();
        var grouped = new List<(Domain D, long Gfn)>();
        foreach (var d in host.Domains)
            for (long g = 0; g < d.PageCount; g++)
            {
                ulong e = d.PeekEntry(g);
                if (PageEntry.IsGrouped(e)) grouped.Add((d, g));
                else if (PageEntry.IsSingleCompressed(e) && d.GetPage(g).Codec is { } codec)
                    (single.TryGetValue(codec, out var list) ? list : single[codec] = new()).Add((d, g));
            }
        var results = new List<FaultSample>();
        foreach (var (codec, pages) in single.OrderBy(p => p.Key, StringComparer.Ordinal))
            if (Time(host, pages, $"page compressed alone ({codec})") is { } s) results.Add(s);
        // Groups first lose members to this sample in a spread order, like faults that come one at a time: one page of a
        // group at most (the member taken turns by group), so no read finds its group already decoded by the one before.
        var oneEach = new List<(Domain D, long Gfn)>();
        var seen = new HashSet<(int, uint)>();
        foreach (var (d, g) in grouped)
        {
            ulong e = d.PeekEntry(g);
            uint id = PageEntry.GroupId(e);
            if (PageEntry.GroupMember(e) == seen.Count % d.Policy.GroupSize && seen.Add((d.Id, id))) oneEach.Add((d, g));
        }
        if (Time(host, oneEach, "page in a group") is { } gr) results.Add(gr);
        if (InOrder(host, grouped) is { } seq) results.Add(seq);
        return results;
    }

    /// <summary>What a fault in a group read after its neighbours costs, the kind of <see cref="InOrder"/>'s sample.</summary>
    public const string GroupInOrder = "page in a group, its group read in gfn order";

    /// <summary>
    /// The pages of groups the spread sample left whole, read one after another in gfn order (up to 3,000): the first
    /// fault on a group decodes it, and its neighbours' faults find it decoded (a Zstd group is decoded whole and kept
    /// per thread). Null when no group is left whole.
    /// </summary>
    private static FaultSample? InOrder(DEHost host, List<(Domain D, long Gfn)> grouped) =>
        TimeReads(grouped.Where(p => PageEntry.IsGrouped(p.D.PeekEntry(p.Gfn))).Take(MaxSample).ToList(), GroupInOrder, null);

    /// <summary>Reads each page once, timing the reads that were Decompress faults: their p50 and p90; null when none was.</summary>
    private static FaultSample? TimeReads(List<(Domain D, long Gfn)> pages, string kind, CodecTiming? floor)
    {
        var buffer = new byte[PageGeometry.PageSize];
        var micros = new List<double>();
        foreach (var (d, g) in pages)
        {
            long t0 = Stopwatch.GetTimestamp();
            var fault = d.ReadPage(g, buffer);
            double us = Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
            if (fault == FaultKind.Decompress) micros.Add(us);
        }
        if (micros.Count == 0) return null;
        micros.Sort();
        return new FaultSample(kind, micros.Count, micros[micros.Count / 2], micros[(int)(micros.Count * 0.9)], floor);
    }

    private static FaultSample? Time(DEHost host, List<(Domain D, long Gfn)> pages, string kind)
    {
        if (pages.Count == 0) return null;
        int step = Math.Max(1, pages.Count / MaxSample);
        // What each read will decode, copied first: the engine's codec decodes these until the runtime has optimized it
        // (WarmUp: the p50 is then the warm cost of a long-running engine, not the runtime's first unoptimized calls of the
        // codec, which were 2-5x slower in some runs), then the C library and the engine's codec are timed on exactly these.
        var sample = new List<(Domain D, long Gfn)>();
        var inputs = new List<byte[]>();
        var stream = new byte[GroupCodec.Bound(GroupCompression.MaxPayload)];
        CompressionAlgorithm? codec = null;
        int size = 0;
        for (int i = 0; i < pages.Count; i += step)
        {
            var (d, g) = pages[i];
            sample.Add((d, g));
            var input = CodecInput(host, d.PeekEntry(g), stream, out var inputCodec, out int inputSize);
            // One codec and output size per floor (a sample is one codec's pages, or groups of one size).
            if (input is null || (codec is { } c && (c != inputCodec || size != inputSize))) continue;
            codec = inputCodec;
            size = inputSize;
            inputs.Add(input);
        }
        CodecTiming? floor = null;
        if (codec is { } used)
        {
            var output = new byte[size];
            WarmUp(() =>
            {
                foreach (var input in inputs)
                    if (size == PageGeometry.PageSize) PageCompressors.Get(used).Decompress(input, output);
                    else GroupCodec.DecodePrefix(used, input, output);
            });
            floor = CodecReference.Decode(kind, used, inputs, size);
        }
        return TimeReads(sample, kind, floor);
    }

    /// <summary>
    /// Repeats <paramref name="round"/> until the runtime has optimized what it runs: at least half a second and until
    /// three rounds in a row are no more than 3% faster than the best before them (at most 3 s). The runtime promotes
    /// a method only after it has gone 100 ms without compiling new ones, then compiles it in the background: two
    /// rounds were not always enough (the Zstd decoder stayed at 15.8 µs a page against 6.9 µs once optimized).
    /// </summary>
    private static void WarmUp(Action round)
    {
        var total = Stopwatch.StartNew();
        double best = double.MaxValue;
        int still = 0;
        while (total.Elapsed.TotalSeconds < 3)
        {
            long t0 = Stopwatch.GetTimestamp();
            round();
            double took = Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
            still = took < best * 0.97 ? 0 : still + 1;
            best = Math.Min(best, took);
            if (total.Elapsed.TotalSeconds >= 0.5 && still >= 3) break;
        }
    }

    /// <summary>
    /// A copy of what a read of a page in entry <paramref name="e"/> decodes: a single page's compressed bytes (its
    /// blob past the header), or its group's whole stream (zstd decodes a group of 4 as one block whichever member is
    /// wanted, read through <paramref name="stream"/>); null for other pages (a shared compressed copy).
    /// </summary>
    private static byte[]? CodecInput(DEHost host, ulong e, byte[] stream, out CompressionAlgorithm codec, out int size)
    {
        codec = default;
        size = PageGeometry.PageSize;
        if (PageEntry.IsGrouped(e))
        {
            uint id = PageEntry.GroupId(e);
            var table = host.Groups;
            lock (table.StripeLock(id))
            {
                var r = table.RecordLocked(id);
                int length = table.ReadStreamLocked(id, host.Store, host.Reclaimer?.Swap, stream, GroupCompression.Bounce);
                codec = r.Codec;
                size = r.Count * (GroupCompression.HeaderPerMember + PageGeometry.PageSize);
                return stream.AsSpan(0, length).ToArray();
            }
        }
        if (!PageEntry.IsSingleCompressed(e)) return null;
        var blob = host.Store.Get(PageEntry.Payload(e));
        codec = EncodedPage.Algorithm(blob);
        return blob[EncodedPage.CompressedHeader..].ToArray();
    }

    /// <summary>
    /// What the kernel takes to give this process a page back, on 2,048 pages of anonymous memory it has not yet given
    /// it: the p50 of a first write to such a page alone, then, as the frame pool takes released frames (64 mapped in one
    /// MADV_POPULATE_WRITE), the p50 of the first write to a page so mapped and the mapping call's time per page (mean).
    /// </summary>
    public static unsafe FirstTouch FirstTouchMicros()
    {
        const int pages = 2048, batch = FramePool.PopulateBatch;
        nuint bytes = (nuint)pages * PageGeometry.PageSize;
        byte* memory = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(bytes, PageGeometry.PageSize);
        try
        {
            // Given back first, as the frame pool does, so every page is untouched whatever the allocator handed over.
            DifferenceEngine.Qemu.LinuxNative.Madvise(memory, bytes, DifferenceEngine.Qemu.LinuxNative.MADV_NOHUGEPAGE);
            DifferenceEngine.Qemu.LinuxNative.Madvise(memory, bytes, DifferenceEngine.Qemu.LinuxNative.MADV_DONTNEED);
            var micros = new double[pages];
            for (int i = 0; i < pages; i++)
            {
                long t0 = Stopwatch.GetTimestamp();
                memory[(nint)i * PageGeometry.PageSize + 100] = 1;
                micros[i] = Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
            }
            double alone = Median(micros);
            DifferenceEngine.Qemu.LinuxNative.Madvise(memory, bytes, DifferenceEngine.Qemu.LinuxNative.MADV_DONTNEED);
            double mapping = 0;
            for (int i = 0; i < pages; i++)
            {
                byte* page = memory + (nint)i * PageGeometry.PageSize;
                if (i % batch == 0)
                {
                    long m0 = Stopwatch.GetTimestamp();
                    if (DifferenceEngine.Qemu.LinuxNative.Madvise(page, (nuint)batch * PageGeometry.PageSize, DifferenceEngine.Qemu.LinuxNative.MADV_POPULATE_WRITE) != 0)
                        return new FirstTouch(alone, null, null); // a kernel without it: the pool takes frames one at a time
                    mapping += Stopwatch.GetElapsedTime(m0).TotalMicroseconds;
                }
                long t0 = Stopwatch.GetTimestamp();
                page[100] = 1;
                micros[i] = Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
            }
            return new FirstTouch(alone, Median(micros), mapping / pages);
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.AlignedFree(memory);
        }
    }

    private static double Median(double[] values)
    {
        var sorted = (double[])values.Clone();
        Array.Sort(sorted);
        return sorted[sorted.Length / 2];
    }

    /// <summary>Up to 3000 non-zero pages of the inputs, spread evenly over each image.</summary>
    public static List<byte[]> SamplePages(InputImages inputs)
    {
        var pages = new List<byte[]>();
        foreach (var image in inputs.Images)
        {
            // Raw images, page after page (a snapshot of a program is raw too).
            using var file = File.OpenHandle(image.Path);
            var page = new byte[PageGeometry.PageSize];
            long count = image.Pages;
            long step = Math.Max(1, count * inputs.Images.Count / MaxSample);
            for (long g = 0; g < count && pages.Count < MaxSample; g += step)
            {
                if (RandomAccess.Read(file, page, g * PageGeometry.PageSize) != page.Length) break;
                if (page.AsSpan().IndexOfAnyExcept((byte)0) >= 0) pages.Add((byte[])page.Clone());
            }
        }
        return pages;
    }

    /// <summary>
    /// LZ4 compress_page (the engine's compressor) on the sample pages, after a warm-up: the median, in µs. LZ4 is given a
    /// page's room, as the engine's compression pass gives it in the default setting (page groups on: LZ4 with a Zstd
    /// fallback, CompressionPass.TryCompressBody); the micro-benchmark's compress_page stops at the 0.75 threshold, as the
    /// engine does for a codec without page groups.
    /// </summary>
    public static double CompressPageLz4Micros(IReadOnlyList<byte[]> pages)
    {
        if (pages.Count == 0) return 0;
        var lz4 = PageCompressors.Get(CompressionAlgorithm.LZ4);
        var dest = new byte[PageGeometry.PageSize];
        return CodecReference.Median(pages, p => lz4.TryCompress(p, dest, out int n) ? n : 0);
    }

    /// <summary>
    /// patch_page in steady state on the run's pages: the second of two passes in a row with nothing to patch is the baseline;
    /// then up to 3000 patched pages are read back (each becomes Private) and one more pass patches them again with
    /// every table already grown. Per page patched: what that pass allocated beyond the baseline pass (the pass's own
    /// fixed allocations, its task and result objects, cancel out), and, for the record, the whole pass's bytes. The
    /// cycle runs twice and the second is the figure: the first is the process's first such cycle, and what it makes
    /// once (code paths run for the first time, lists grown to the cycle's size: 5-7 KB in all on this machine, session
    /// 26) is no cost of a page; its figure is kept as <c>FirstCycleBytesPerPage</c>. Null when nothing was patched again,
    /// or when no two passes in a row out of 12 patched nothing.
    /// <para>The goal is judged on the bytes beyond the baseline, all of them (<see cref="SteadyPatch.Met"/>). Of them,
    /// <c>StoreBytesPerPage</c> is the bookkeeping of the slabs the store made in that pass
    /// (<see cref="Store.CompactStore.SlabBookkeepingMadeBytes"/>, less the baseline pass's), printed beside it as
    /// information only: the store's settle at the pass's end remakes slabs of the sizes its classes now need, the
    /// re-patched pages' blobs having changed them (session 29's per-call probes: 21-26 new slabs and 2.6-5.3 KB a
    /// pass). Those slabs are made because patches are stored: they are part of what patching a page costs, and
    /// session 34's audit found the goal judged met only with them taken off.</para>
    /// <para>The cycle's passes run on one worker, and their bytes are those this thread allocated
    /// (<see cref="GC.GetAllocatedBytesForCurrentThread"/>): with one degree of parallelism every phase of the pass runs
    /// inline on the calling thread (checked: the compression phase's progress is reported from this thread, else
    /// Compare stops with an error rather than give a figure that missed another thread's bytes), the store's settle at its end included, so the count is the pass's own allocations and nothing else.
    /// Until session 35 the passes ran on two workers and were counted by the process's counter, which also takes what
    /// the thread pool and the runtime's own threads allocate meanwhile: in session 35's runs the same measured pass came
    /// out between 832 B below and 1,888 B above its baseline on the guest images, where one worker counted on its thread
    /// gave 32 B above it every time (plus the store's new slabs, when it made any). That process-wide figure is still
    /// printed, for information (<c>ProcessBytesPerPage</c>).</para>
    /// </summary>
    public static SteadyPatch? SteadyPatchAllocation(DEHost host)
    {
        var options = new ScanOptions { Passes = 1, Parallelism = 1 };
        if (PatchCycle(host, options) is not { } first) return null;
        if (PatchCycle(host, options) is not { } steady) return null;
        return steady with { FirstCycleBytesPerPage = first.BytesPerPage };
    }

    /// <summary>
    /// What <see cref="SteadyPatchAllocation"/> measured: the pages patched again, the bytes the measured pass allocated
    /// beyond the baseline pass (<paramref name="ExtraBytes"/>, on the pass's thread), and of the slab bookkeeping the store
    /// made new, the measured pass's less the baseline pass's (<paramref name="StoreExtraBytes"/>); either may be below
    /// zero. <paramref name="ProcessExtraBytes"/>: the same difference by the process's counter (every thread's).
    /// </summary>
    public sealed record SteadyPatch(long Pages, long ExtraBytes, long StoreExtraBytes, long WholePassBytes, long ProcessExtraBytes)
    {
        /// <summary>The first cycle's <see cref="BytesPerPage"/>.</summary>
        public double FirstCycleBytesPerPage { get; init; }

        /// <summary>What the measured pass allocated beyond the baseline pass, per page patched (0 when it allocated less).</summary>
        public double BytesPerPage => Math.Max(0, ExtraBytes) / (double)Pages;
        public double StoreBytesPerPage => Math.Max(0, StoreExtraBytes) / (double)Pages;
        public double WholePassBytesPerPage => WholePassBytes / (double)Pages;
        /// <summary>By the process's counter: may be below zero, other threads having allocated more during the baseline.</summary>
        public double ProcessBytesPerPage => ProcessExtraBytes / (double)Pages;

        /// <summary>
        /// The goal is 0 B per page and Compare prints the figure to one decimal: met only when the bytes beyond the
        /// baseline, the store's new slabs included, print as 0.0 B (under 0.05 B per page: for 3,000 pages, under 150 B
        /// in the whole pass).
        /// </summary>
        public bool Met => BytesPerPage < MetBelow;

        /// <summary>The tolerance of <see cref="Met"/>: what rounds to 0.0 at the one decimal printed.</summary>
        public const double MetBelow = 0.05;
    }

    /// <summary>One read-and-re-patch cycle of <see cref="SteadyPatchAllocation"/>.</summary>
    private static SteadyPatch? PatchCycle(DEHost host, ScanOptions options)
    {
        // Every pass reports its progress from this thread, or the thread's counter would miss what others did.
        int self = Environment.CurrentManagedThreadId;
        bool elsewhere = false;
        Action<ScanProgress> onThisThread = _ => elsewhere |= Environment.CurrentManagedThreadId != self;
        // Passes until two in a row patch nothing (pages read back by an earlier measurement or cycle are patched again
        // first); the second is the baseline. A page can still be patched a pass after a pass that patched nothing: its
        // reference candidate was busy then (PassResult.ReferencesBusy, not a change).
        long baseline = -1, baselineStore = 0, baselineProcess = 0;
        bool idleBefore = false;
        for (int i = 0; i < 12 && baseline < 0; i++)
        {
            long s0 = host.Store.SlabBookkeepingMadeBytes;
            long p0 = GC.GetTotalAllocatedBytes(precise: true);
            long b0 = GC.GetAllocatedBytesForCurrentThread();
            bool idle = host.Scan(options: options, progress: onThisThread).PassResults[0].PagesPatched == 0;
            long bytes = GC.GetAllocatedBytesForCurrentThread() - b0;
            long process = GC.GetTotalAllocatedBytes(precise: true) - p0;
            if (idle && idleBefore) (baseline, baselineStore, baselineProcess) = (bytes, host.Store.SlabBookkeepingMadeBytes - s0, process);
            idleBefore = idle;
        }
        if (baseline < 0) return null;
        var buffer = new byte[PageGeometry.PageSize];
        int n = 0;
        foreach (var d in host.Domains)
            for (long g = 0; g < d.PageCount && n < MaxSample; g++)
                if (d.PeekState(g) == PageState.Patched)
                {
                    d.ReadPage(g, buffer);
                    n++;
                }
        if (n == 0) return null;
        // The pass after the reads finds the pages just read (C2): nothing to do. The next ages them and patches them
        // again, with every table already grown by the run: that pass is measured.
        host.Scan(options: options, progress: onThisThread);
        long storeBefore = host.Store.SlabBookkeepingMadeBytes;
        long processBefore = GC.GetTotalAllocatedBytes(precise: true);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var pass = host.Scan(options: options, progress: onThisThread);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        long processAllocated = GC.GetTotalAllocatedBytes(precise: true) - processBefore;
        long store = host.Store.SlabBookkeepingMadeBytes - storeBefore;
        long patched = pass.PagesPatched;
        if (elsewhere)
            throw new InvalidOperationException("patch_page: a pass on one worker ran on another thread; its allocations cannot be counted on this one.");
        return patched == 0 ? null
            : new SteadyPatch(patched, allocated - baseline, store - baselineStore, allocated, processAllocated - baselineProcess);
    }
}
