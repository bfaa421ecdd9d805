using System.Diagnostics;
using System.Globalization;
using BenchmarkDotNet.Attributes;
using DifferenceEngine.Fleet;
using DifferenceEngine.Store;

namespace DifferenceEngine.Bench.Fleet;

/// <summary>
/// Get-DEPlacement's search at fleet scale: <see cref="SyntheticFleet"/>'s 1,000 domains of 1-8 GiB in ten families
/// (sharing content within a family, a little across families; one family a trust group of its own) on 100 hosts,
/// placed for each goal by <see cref="Placement.Recommend"/> (the model's predictions of the answer and of today's
/// placement included). The goal is well under 10 s. The setup also times one run and prints what it found (a quick
/// report: --filter '*PlacementBenchmark*' --job Dry).
/// </summary>
[MemoryDiagnoser]
public class PlacementBenchmark
{
    private DomainFingerprint[] _fingerprints = [];
    private PlacementHost[] _hosts = [];

    [Params(PlacementGoal.FewestHosts, PlacementGoal.LeastMemory)]
    public PlacementGoal Goal { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var time = Stopwatch.StartNew();
        (_fingerprints, _hosts) = SyntheticFleet.Create(domains: 1000, hosts: 100, seed: 1);
        Console.WriteLine($"// placement input: {_fingerprints.Length} domains ({SyntheticFleet.Describe(_fingerprints)}), {_hosts.Length} hosts, made in {time.Elapsed.TotalSeconds:F1} s");
        var phases = new PhaseTimes();
        Console.WriteLine("// " + SyntheticFleet.Report(Placement.Recommend(_fingerprints, _hosts, Goal, progress: phases)));
        Console.WriteLine("// phases: " + phases);
    }

    /// <summary>When each phase of the search began (its first progress report), seconds from the call.</summary>
    private sealed class PhaseTimes : IProgress<PlacementProgress>
    {
        private readonly Stopwatch _time = Stopwatch.StartNew();
        private readonly List<(string Phase, double At)> _phases = [];

        public void Report(PlacementProgress value)
        {
            lock (_phases)
                if (_phases.Count == 0 || _phases[^1].Phase != value.Phase) _phases.Add((value.Phase, _time.Elapsed.TotalSeconds));
        }

        public override string ToString()
        {
            lock (_phases) return string.Join(", ", _phases.Select(p => $"{p.Phase} {p.At.ToString("F2", CultureInfo.InvariantCulture)} s"));
        }
    }

    [Benchmark(Description = "placement (1000 domains, 100 hosts)")]
    public int Recommend() => Placement.Recommend(_fingerprints, _hosts, Goal).HostsUsed;
}

/// <summary>
/// Synthetic but realistic fingerprints, made in memory (sketch entries as the builder makes them, one page in 128
/// sampled): domains of 1 to 8 GiB, about half their pages zero; ten families, each with a base image (a fifth of each
/// member's contents) and a pool of applications (a tenth to two fifths); a pool every domain draws on (kernels, common
/// libraries); the rest the domain's own; within-domain duplicates, patches, references and group shares; the
/// similarity route with similar pages within a family (a quarter of it). Contents' costs follow from the content (the same page compresses the same anywhere). Today's placement
/// spreads each family over every host (domain i on host i mod hosts). Deterministic for a seed.
/// </summary>
internal static class SyntheticFleet
{
    public const int SampleShift = 7;
    private const int Families = 10;
    private const long GiB = 1L << 30;
    private const int PageSize = 4096;

    public static (DomainFingerprint[] Fingerprints, PlacementHost[] Hosts) Create(int domains, int hosts, int seed)
    {
        var fingerprints = new DomainFingerprint[domains];
        // Per family: its base image (every member has about a fifth of its contents from it), its applications (each
        // member a tenth to two fifths), its similar pages; and a pool every domain draws on (kernels, common libraries).
        const int basePool = 1500, appPool = 6000, commonPool = 800, similarPool = 3000;
        for (int d = 0; d < domains; d++)
        {
            int family = d % Families;
            var r = new Random(seed * 1_000_003 + d);
            long pages = (1 + r.Next(8)) * GiB / PageSize;
            double contentShare = 0.4 + 0.2 * r.NextDouble();
            // Distinct contents of the content route: a 1/128 sample of the content pages (duplicates aside).
            int contents = (int)(pages * contentShare / (1 << SampleShift) * 0.9);
            var entries = new List<FingerprintEntry>(contents * 2 + 16);
            var seen = new HashSet<ulong>();
            int taken = 0;
            void AddContent(ulong id, bool local)
            {
                ulong content = Mix(id) >> SampleShift;
                if (!seen.Add(content)) return;
                entries.Add(ContentEntry(content, r, local));
                taken++;
            }
            void Draw(int kind, int group, int pool, double share)
            {
                double p = Math.Min(1, share * contents / pool);
                for (int i = 0; i < pool; i++)
                    if (r.NextDouble() < p) AddContent(Id(kind, group, i), false);
            }
            Draw(1, family, basePool, 0.2);
            Draw(2, 0, commonPool, 0.05);
            Draw(3, family, appPool, 0.1 + 0.3 * r.NextDouble());
            while (taken < contents) AddContent(((ulong)r.NextInt64() << 1) | 1, true);
            // The similarity route: about as many entries, half of them similar to pages of the family's other members.
            for (int i = 0; i < contents; i++)
            {
                bool familyKey = r.NextDouble() < 0.25;
                ulong similarity = (familyKey ? Mix(Id(4, family, r.Next(similarPool))) : Mix((ulong)r.NextInt64())) >> SampleShift;
                ulong content = Mix((ulong)r.NextInt64());
                var e = ContentEntry(content, r, true);
                entries.Add(e with { Similarity = similarity, Copies = 1, Flags = (e.Flags & ~EntryFlags.ByContent) | EntryFlags.BySimilarity });
            }
            // The builder's order: gfn order, contents and similar pages mixed.
            Shuffle(entries, r);
            var fp = new DomainFingerprint
            {
                Domain = $"vm{d:D4}-f{family}",
                HostName = $"host{d % hosts:D3}",
                TrustGroup = family == Families - 1 ? "tenant" : "default",
                Source = "synthetic",
                Created = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero),
                KeyId = "0123456789abcdef",
                PageCount = pages,
                GuestBytes = pages * PageSize,
                ContentPages = (long)(pages * contentShare),
                ZeroPages = pages - (long)(pages * contentShare),
                SampleShift = SampleShift,
                SampledPages = entries.Sum(e => (long)e.Copies), // the pages its entries hold, as Validate checks
                DetectorSeed = FingerprintBuilder.FleetDetectorSeed,
                GroupFactor = 0.75 + 0.2 * r.NextDouble(),
                GroupRunsSampled = (int)(pages / 256),
            };
            fp.SetEntries(entries.ToArray());
            fingerprints[d] = fp;
        }
        // Hosts of 24 GiB and 16 GiB (today's placement, ten domains each, fits); the last tenth runs the tenant's domains only.
        var hostList = new PlacementHost[hosts];
        for (int h = 0; h < hosts; h++)
            hostList[h] = new PlacementHost($"host{h:D3}", (h % 2 == 0 ? 24 : 16) * GiB)
            {
                TrustGroups = h >= hosts - hosts / 10 ? ["tenant"] : null,
            };
        return (fingerprints, hostList);
    }

    /// <summary>A content-route entry: its costs from the content (so equal wherever it is), its patch, reference and copies from the domain.</summary>
    private static FingerprintEntry ContentEntry(ulong content, Random r, bool local)
    {
        ulong h = Mix(content ^ 0x5bd1e995UL);
        ushort single = 0, shared = 0;
        if (h % 100 >= 12)
        {
            int length = 120 + (int)((h >> 8) % 2900);
            single = (ushort)CompactStore.SlotSizeFor(length);
            shared = (ushort)CompactStore.SlotSizeFor(Math.Max(1, length * 9 / 10));
        }
        var flags = EntryFlags.ByContent;
        if (single == 0) flags |= EntryFlags.Incompressible;
        if (r.NextDouble() < 0.9) flags |= EntryFlags.ClusterFirst;
        ushort patch = 0;
        double p = r.NextDouble();
        if (local && p < 0.08) patch = (ushort)CompactStore.SlotSizeFor(64 + r.Next(900));
        else if (p < 0.12) flags |= EntryFlags.Reference;
        uint copies = r.NextDouble() < 0.15 ? (uint)(2 + r.Next(4)) : 1;
        // One content in eight carries its share of a Zstd group (a domain's own pages group better than shared ones).
        ushort group = 0;
        if (single > 0 && (content & 7) == 0)
            group = (ushort)CompactStore.SlotSizeFor(Math.Max(1, (int)(single * (local ? 0.6 + 0.2 * r.NextDouble() : 0.85 + 0.1 * r.NextDouble()))));
        return new FingerprintEntry(content, 0, copies, single, shared, patch, flags) { GroupCost = group };
    }

    private static ulong Id(int kind, int family, int i) => ((ulong)(uint)kind << 56) | ((ulong)(uint)family << 40) | (uint)i;

    private static ulong Mix(ulong x)
    {
        x += 0x9E3779B97F4A7C15UL;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        return x ^ (x >> 31);
    }

    private static void Shuffle<T>(List<T> list, Random r)
    {
        for (int i = list.Count - 1; i > 0; i--)
        {
            int j = r.Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
    }

    public static string Describe(DomainFingerprint[] fingerprints) =>
        string.Create(CultureInfo.InvariantCulture,
            $"{fingerprints.Sum(f => f.GuestBytes) / (double)(1L << 40):F2} TiB of guests, {fingerprints.Sum(f => (long)f.GetEntries().Count) / 1e6:F1} M sketch entries");

    public static string Report(PlacementResult r) =>
        string.Create(CultureInfo.InvariantCulture,
            $"placement {r.Goal}: {r.Seconds:F2} s; {r.HostsUsed} hosts, {r.PredictedUsedBytes / (double)GiB:F1} GiB predicted; today {r.CurrentHostsUsed} hosts, {r.CurrentPredictedUsedBytes / (double)GiB:F1} GiB; saved {r.SavedBytes / (double)GiB:F1} GiB; {r.Assignments.Count(a => a.Moved)} moved, {r.Unplaced.Count} unplaced");
}
