using System.Diagnostics;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Loading;
using DifferenceEngine.Memory;
using DifferenceEngine.Scanning;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Bench.Compare;

/// <summary>What one run of the engine over the inputs ended with, and how long its scan took.</summary>
internal sealed record EngineRunResult(
    string Name,
    string? Codec,
    int Threads,
    long GuestPages,
    long ZeroPages,
    long UniformPages,
    long SharedPages,
    long SharedFrames,
    long PatchedPages,
    long PatchBytes,
    long CompressedPages,
    long CompressedBytes,
    long FramesInUse,
    long StoreAllocatedBytes,
    long MetadataBytes,
    long MemoryUsedBytes,
    int Passes,
    bool Stable,
    TimeSpan ScanTime,
    TimeSpan FirstPassTime,
    double FirstPassPagesPerSecond,
    TimeSpan LoadTime)
{
    /// <summary>Where the metadata goes, part by part, from the same snapshot as <c>MetadataBytes</c> (the parts add up to it).</summary>
    public MetadataParts Metadata { get; init; } = MetadataParts.None;

    /// <summary>
    /// The most metadata the run's host held, its passes included (<see cref="HostStats.MetadataPeakBytes"/>: measured at the
    /// end of each phase of every pass, when the sharing and similarity tables and the pass's buffers are fullest), with
    /// its parts. <c>MetadataBytes</c> is the same at rest, between passes.
    /// </summary>
    public MetadataParts MetadataPeak { get; init; } = MetadataParts.None;
    public long MetadataPeakBytes => MetadataPeak.Total;

    /// <summary>
    /// From the first pass to the end of the last pass that changed anything (<see cref="ScanResult.ConvergedElapsed"/>; what
    /// KSM's <c>TimeToConverge</c> is for KSM: the full scan its counters last moved in); <see cref="ScanTime"/> adds the
    /// pass that found nothing left to do.
    /// </summary>
    public TimeSpan ConvergeTime { get; init; }

    /// <summary>Each pass's time, in order (they add up to <see cref="ScanTime"/>).</summary>
    public IReadOnlyList<TimeSpan> PassTimes { get; init; } = [];

    /// <summary>How many times the run was repeated; this is the one with the median first-pass time.</summary>
    public int Repeats { get; init; } = 1;

    /// <summary>Of <see cref="CompressedPages"/>: pages that name a compressed shared frame.</summary>
    public long SharedCompressedPages { get; init; }

    /// <summary>Compressed shared frames (distinct blobs those pages name; their bytes are in <see cref="CompressedBytes"/> once).</summary>
    public long SharedCompressedFrames { get; init; }

    /// <summary>Of <see cref="CompressedPages"/>: pages kept in page groups, and the groups (their streams are in <see cref="CompressedBytes"/> once).</summary>
    public long GroupedPages { get; init; }
    public long PageGroups { get; init; }

    /// <summary>Over the run: bytes of the groups' streams formed, and of their pages' single blobs before.</summary>
    public long GroupStreamBytes { get; init; }
    public long GroupSinglesBytes { get; init; }

    /// <summary>The page groups the run's policy asked for: most pages in one (0: none), and their codec.</summary>
    public int GroupSize { get; init; }
    public string? GroupCodec { get; init; }

    /// <summary>
    /// Pages sharing saved: pages mapped to a shared frame, less the frames they map to, and pages naming a compressed
    /// shared frame, less the blobs they name.
    /// </summary>
    public long SavedBySharing => SharedPages - SharedFrames + SharedCompressedPages - SharedCompressedFrames;
    public double AveragePatchBytes => PatchedPages == 0 ? 0 : (double)PatchBytes / PatchedPages;

    /// <summary>
    /// Compressed shared frames that only patches name (their pages gone since): compressed references, counted in
    /// <see cref="CompressedBytes"/> but not in <see cref="SharedCompressedFrames"/>, which pages name.
    /// </summary>
    public long ReferenceOnlyBlobs { get; init; }

    /// <summary>Distinct page contents compressed (a compressed shared frame once) over the bytes that hold them.</summary>
    public double CompressionRatio => CompressedBytes == 0 ? 0
        : (double)(CompressedPages - SharedCompressedPages + SharedCompressedFrames + ReferenceOnlyBlobs) * PageGeometry.PageSize / CompressedBytes;

    /// <summary>Sweeps a page must stay idle before it is compressed (the policy's C4Sweeps), and before it is grouped (GroupAfterSweeps).</summary>
    public int C4Sweeps { get; init; } = DomainPolicy.DefaultC4Sweeps;
    public int GroupAfterSweeps { get; init; } = DomainPolicy.DefaultGroupAfterSweeps;

    /// <summary>Whether the run's sweeps are the policy's defaults (Compare's runs use 1: every untouched page eligible at once).</summary>
    public bool DefaultSweeps => C4Sweeps == DomainPolicy.DefaultC4Sweeps && (GroupSize == 0 || GroupAfterSweeps == DomainPolicy.DefaultGroupAfterSweeps);

    /// <summary>
    /// The setting as reports show it: the single-page codec, the groups' when there are groups, and the sweeps ("sweeps
    /// 1/1": compressed after 1 idle sweep, grouped after 1; "sweeps 1" without groups).
    /// </summary>
    public string? Setting => Codec is null ? null
        : (GroupSize == 0 ? $"{Codec}, sweeps {C4Sweeps}" : $"{Codec}, {GroupCodec} groups of {GroupSize}, sweeps {C4Sweeps}/{GroupAfterSweeps}");
}

/// <summary>
/// One run: a fresh host, every input loaded as a domain (every page a frame, as in a running VM), the chosen
/// mechanisms on with C4Sweeps 1 so every untouched page becomes eligible, and scans until a pass changes nothing.
/// </summary>
internal static class EngineRun
{
    /// <summary>
    /// Opens an input as a raw image whatever its first bytes: MemorySource.OpenFile takes any file that starts with
    /// "\x7fE" for an ELF core, and a raw snapshot of a process starts with its executable's ELF header.
    /// </summary>
    internal static MemorySource OpenRaw(string path)
    {
        var file = SourceFile.OpenRead(path);
        try
        {
            return RawImageSource.Open(file, path, RandomAccess.GetLength(file));
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <param name="afterMeasure">Called with the host once every number of the run is taken, before the host goes away
    /// (to read pages, which may change their state).</param>
    public static EngineRunResult Run(string name, InputImages inputs, bool patching, CompressionAlgorithm? codec, int threads = 0,
        Action<DEHost>? afterMeasure = null, int groupSize = 0, CompressionAlgorithm groupCodec = CompressionAlgorithm.Zstd,
        bool defaultSweeps = false, int similaritySeed = 20081208)
    {
        threads = threads <= 0 ? Environment.ProcessorCount : threads;
        var options = new DomainOptions
        {
            SharingEnabled = true,
            PatchingEnabled = patching,
            CompressionEnabled = codec is not null,
            CompressionAlgorithm = codec ?? CompressionAlgorithm.LZ4,
            C4Sweeps = defaultSweeps ? DomainPolicy.DefaultC4Sweeps : 1,
            GroupSize = groupSize,
            GroupAlgorithm = groupCodec,
            GroupAfterSweeps = defaultSweeps ? new DomainPolicy().GroupAfterSweeps : 1,
        };
        using var host = new DEHost(new HostOptions { Name = "compare", SimilaritySeed = similaritySeed });
        var load = Stopwatch.StartNew();
        foreach (var image in inputs.Images)
        {
            using var source = OpenRaw(image.Path);
            host.LoadDomain(image.Label, source, options);
        }
        load.Stop();
        // Loading leaves garbage from nobody's scan: collect it now, not during the timed passes.
        GC.Collect();
        GC.WaitForPendingFinalizers();

        var scan = host.Scan(null, new ScanOptions { UntilStable = true, Parallelism = threads });
        var stats = host.GetStats();
        long zero = 0, uniform = 0, shared = 0, patched = 0, patchBytes = 0, compressed = 0, compressedBytes = 0, sharedCompressed = 0;
        var sharedFrames = new HashSet<uint>();
        var sharedBlobs = new HashSet<uint>(); // every compressed shared frame whose bytes are counted
        var namedByPages = new HashSet<uint>(); // of them, those compressed pages name (the others only patches)
        var groups = new HashSet<uint>();
        long grouped = 0;
        foreach (var domain in host.Domains)
        {
            for (long gfn = 0; gfn < domain.PageCount; gfn++)
            {
                switch (domain.PeekState(gfn))
                {
                    case PageState.Zero: zero++; break;
                    case PageState.Uniform: uniform++; break;
                    case PageState.Shared:
                        shared++;
                        if (domain.GetPage(gfn).Frame is uint f) sharedFrames.Add(f);
                        break;
                    case PageState.Patched:
                    {
                        patched++;
                        var info = domain.GetPage(gfn);
                        patchBytes += info.StoredBytes ?? 0;
                        // A patch against a compressed reference: the reference's blob is counted once, with the
                        // compressed pages that name it (a blob only patches name is counted here).
                        if (info.SharedBlob is uint blob && sharedBlobs.Add(blob) && host.SharedBlobs.Describe(blob, host.Store, host.Groups) is { } referenceBlob)
                            compressedBytes += referenceBlob.Group is uint g ? (groups.Add(g) ? host.Groups.Describe(g)?.MemoryBytes ?? 0 : 0) : (long)referenceBlob.Length;
                        break;
                    }
                    case PageState.Compressed:
                    {
                        compressed++;
                        var info = domain.GetPage(gfn);
                        if (info.SharedBlob is uint blob)
                        {
                            sharedCompressed++;
                            namedByPages.Add(blob);
                            if (!sharedBlobs.Add(blob)) break; // its bytes are counted once
                            if (info.Group is uint sharedGroup)
                            {
                                // A blob kept in a group of shared blobs: the group's stream is counted once.
                                if (groups.Add(sharedGroup)) compressedBytes += host.Groups.Describe(sharedGroup)?.MemoryBytes ?? 0;
                                break;
                            }
                        }
                        if (info.Group is uint group)
                        {
                            grouped++;
                            if (!groups.Add(group)) break; // a group's stream is counted once
                        }
                        compressedBytes += info.StoredBytes ?? 0;
                        break;
                    }
                }
            }
        }
        if (Environment.GetEnvironmentVariable("DE_STORE_CENSUS") is not null)
            Console.WriteLine("    store census: " + string.Join(' ', host.Store.Census().Select(c => $"{c.SlotSize}:{c.Live}/{c.Slabs}/{c.Bytes}")));
        var first = scan.PassResults[0];
        if (Environment.GetEnvironmentVariable("DE_STORE_CENSUS") is not null)
            Console.WriteLine($"    metadata census: {stats.Metadata} total {stats.MetadataBytes}");
        var result = new EngineRunResult(name, codec?.ToString(), threads, stats.GuestBytes / PageGeometry.PageSize,
            zero, uniform, shared, sharedFrames.Count, patched, patchBytes, compressed, compressedBytes,
            stats.FramesInUse, stats.StoreAllocatedBytes, stats.MetadataBytes, stats.MemoryUsedBytes,
            scan.Passes, scan.Stable, scan.Elapsed, first.Elapsed, first.PagesPerSecond, load.Elapsed)
        {
            Metadata = stats.Metadata,
            MetadataPeak = stats.MetadataPeak,
            SharedCompressedPages = sharedCompressed,
            SharedCompressedFrames = namedByPages.Count,
            ReferenceOnlyBlobs = sharedBlobs.Count - namedByPages.Count,
            GroupedPages = grouped,
            PageGroups = groups.Count,
            GroupStreamBytes = scan.PassResults.Sum(p => p.GroupStreamBytes),
            GroupSinglesBytes = scan.PassResults.Sum(p => p.GroupSinglesBytes),
            ConvergeTime = scan.ConvergedElapsed,
            PassTimes = scan.PassResults.Select(p => p.Elapsed).ToList(),
            C4Sweeps = options.C4Sweeps,
            GroupAfterSweeps = options.GroupAfterSweeps,
            GroupSize = codec is null ? 0 : groupSize,
            GroupCodec = codec is null || groupSize == 0 ? null : groupCodec.ToString(),
        };
        afterMeasure?.Invoke(host);
        return result;
    }
}
