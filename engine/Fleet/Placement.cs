using System.Diagnostics;
using DifferenceEngine.Memory;
using DifferenceEngine.Store;
using DifferenceEngine.Compression;

namespace DifferenceEngine.Fleet;

/// <summary>
/// A host domains may be placed on: its name, the memory the engine may use there, and the trust groups it may run
/// (null or empty: any).
/// </summary>
public sealed record PlacementHost(string Name, long CapacityBytes)
{
    /// <summary>The only trust groups whose domains may run on the host; null or empty: any trust group.</summary>
    public IReadOnlyList<string>? TrustGroups { get; init; }

    /// <summary>Whether a domain of <paramref name="trustGroup"/> may run on the host.</summary>
    public bool Allows(string trustGroup) =>
        TrustGroups is null || TrustGroups.Count == 0 || TrustGroups.Contains(trustGroup, StringComparer.Ordinal);
}

/// <summary>What a placement minimises.</summary>
[Newtonsoft.Json.JsonConverter(typeof(Newtonsoft.Json.Converters.StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum PlacementGoal
{
    /// <summary>As few hosts as the domains fit on (then the least memory on them).</summary>
    FewestHosts,

    /// <summary>The least predicted memory in all, on any number of hosts.</summary>
    LeastMemory,
}

/// <summary>Where a domain goes (<see cref="HostName"/>) and where it runs today (<see cref="CurrentHostName"/>, its fingerprint's HostName).</summary>
public sealed record PlacementAssignment(
    string Domain,
    string TrustGroup,
    string HostName,
    string CurrentHostName,
    long GuestBytes,
    long PredictedAloneBytes)
{
    /// <summary>The domain goes to another host than the one it runs on today (host names compared ignoring case, as DNS does).</summary>
    public bool Moved => !string.Equals(HostName, CurrentHostName, StringComparison.OrdinalIgnoreCase);
}

/// <summary>One host of a placement: the domains placed on it and the memory the colocation model predicts they need together.</summary>
public sealed record PlacementHostResult(string HostName, long CapacityBytes, int Domains, long GuestBytes, long PredictedUsedBytes)
{
    public long FreeBytes => CapacityBytes - PredictedUsedBytes;
}

/// <summary>
/// A recommended placement: each domain's host, every host given (used or not) with the model's prediction for the
/// domains placed on it, the domains that fit nowhere (each as "host/domain", its host today), and the same figures for
/// today's placement (the fingerprints grouped by their HostName). Unplaced domains are in no figure of the placement,
/// but they are in today's (<see cref="CurrentHostsUsed"/>, <see cref="CurrentPredictedUsedBytes"/>);
/// <see cref="SavedBytes"/> compares the placed domains only.
/// </summary>
public sealed record PlacementResult(
    PlacementGoal Goal,
    IReadOnlyList<PlacementAssignment> Assignments,
    IReadOnlyList<PlacementHostResult> Hosts,
    int HostsUsed,
    long PredictedUsedBytes,
    IReadOnlyList<string> Unplaced,
    int CurrentHostsUsed,
    long CurrentPredictedUsedBytes,
    double Seconds)
{
    /// <summary>Today's predicted memory for the domains placed (each of today's hosts with the unplaced domains left out); <see cref="CurrentPredictedUsedBytes"/> when every domain is placed.</summary>
    public long CurrentPlacedUsedBytes { get; init; } = CurrentPredictedUsedBytes;

    /// <summary>What the placement saves against today for the same domains: <see cref="CurrentPlacedUsedBytes"/> less <see cref="PredictedUsedBytes"/> (a domain that could not be placed counts in neither).</summary>
    public long SavedBytes => CurrentPlacedUsedBytes - PredictedUsedBytes;
}

/// <summary>How far a placement has got: its phase, and items of the phase done out of all.</summary>
public readonly record struct PlacementProgress(string Phase, int Done, int Total);

/// <summary>
/// Recommends which domain goes on which host, from the domains' fingerprints (one fleet key) and the hosts'
/// capacities. The search scores candidates with an incremental mirror of the colocation model
/// (<see cref="PlacementSearch"/>: a domain's marginal cost on every host from one walk over the contents and
/// similarity keys it shares with other domains); every figure of the answer, and the capacity check of the answer, is
/// the colocation model's own prediction (<see cref="ColocationModel.Predict(IReadOnlyList{DomainFingerprint})"/>) for the domains placed on each host.
/// <para>Starts: hosts filled one at a time, largest first, each seeded with the largest domain left and given the
/// domains that share most with it for their size (families of domains gather on hosts of their own); for small
/// fleets also first-fit decreasing, each domain to the open host where it adds least (FewestHosts: a new host, largest
/// first, only when it fits on none; LeastMemory: any host); and today's placement when it fits. Then a bounded local
/// search: domains that fit nowhere placed (in place of a smaller one if need be); (FewestHosts) hosts emptied by
/// moving their domains, or swapping one for a smaller one, to the other used hosts; single moves that lower the memory
/// in all. Then the model's check: a host over its capacity gives up domains, which are placed again where the model
/// says they fit, or reported unplaced. The answer is never worse than today's placement when that fits the hosts
/// given. Deterministic: the same fingerprints and hosts, in any order, give the same answer.</para>
/// </summary>
public static class Placement
{
    private const int RepairTries = 8;
    /// <summary>Up to this many domains times hosts, the greedy start is tried too (beyond, its cost grows with how the domains spread).</summary>
    private const long GreedyPairs = 20_000;

    /// <summary>
    /// Fleets up to this many domain-host pairs are also placed by first fit by the model: each try is a whole prediction
    /// of a host's domains, one after another, so it is kept to fleets where that takes a few seconds at most.
    /// </summary>
    private const long FirstFitPairs = 2_000;
    private const double RepairTolerance = 0.02;

    /// <summary>Host names are compared ignoring case everywhere in a placement, as DNS and -HostCapacity do.</summary>
    internal static readonly StringComparer HostNames = StringComparer.OrdinalIgnoreCase;

    public static PlacementResult Recommend(IReadOnlyList<DomainFingerprint> fingerprints, IReadOnlyList<PlacementHost> hosts, PlacementGoal goal,
        CancellationToken ct = default, IProgress<PlacementProgress>? progress = null) =>
        Recommend(fingerprints, hosts, goal, PlacementModel.DefaultSearchItems, ct, progress);

    /// <summary>As the public one, the search keeping at most <paramref name="searchItems"/> shared items (a subsample beyond).</summary>
    internal static PlacementResult Recommend(IReadOnlyList<DomainFingerprint> fingerprints, IReadOnlyList<PlacementHost> hosts, PlacementGoal goal,
        int searchItems, CancellationToken ct, IProgress<PlacementProgress>? progress)
    {
        var time = Stopwatch.StartNew();
        Validate(fingerprints, hosts, goal);
        // One order for everything, whatever the order given: domains by name (then current host), hosts by capacity,
        // largest first (then name).
        var domains = ColocationModel.InModelOrder(fingerprints);
        var hostList = hosts.OrderByDescending(h => h.CapacityBytes).ThenBy(h => h.Name, StringComparer.Ordinal).ToArray();
        int n = domains.Length;

        // Today's placement, by the model: on one core alongside the search (each group once, largest first); whatever
        // is left when the search is done is shared out.
        var currentGroups = Enumerable.Range(0, n).GroupBy(d => domains[d].HostName ?? "", HostNames)
            .OrderBy(g => g.Key, HostNames).Select(g => g.ToArray()).ToArray();
        var currentOrder = Enumerable.Range(0, currentGroups.Length).OrderByDescending(g => currentGroups[g].Length).ThenBy(g => g).ToArray();
        var currentUsed = new long[currentGroups.Length];
        int currentNext = -1;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var token = stop.Token;
        void PredictCurrent()
        {
            for (int i; (i = Interlocked.Increment(ref currentNext)) < currentOrder.Length;)
            {
                token.ThrowIfCancellationRequested();
                int g = currentOrder[i];
                currentUsed[g] = Predict(domains, currentGroups[g]);
            }
        }
        var background = Task.Run(PredictCurrent, token);
        int[] hostOf;
        long[] verified;
        long[] aloneBytes;
        try
        {
            progress?.Report(new PlacementProgress("Reading fingerprints", 0, n));
            var model = PlacementModel.Build(domains, searchItems, ct);
            aloneBytes = model.AloneBytes;
            ct.ThrowIfCancellationRequested();

            // Starts: hosts filled one at a time with the domains that share most with them; for small fleets also the
            // greedy (FewestHosts: first fit decreasing, by least marginal cost among the open hosts; LeastMemory: least
            // marginal cost on any host); and today's placement when it fits the hosts given (by the estimate).
            // Ties, here and in the search, go to the host a domain runs on today: nothing moves for no gain.
            int[] today = TodaysHosts(domains, hostList);
            var search = new PlacementSearch(model, hostList, goal, ct, progress) { Today = today };
            search.Fill();
            if ((long)n * hostList.Length <= GreedyPairs)
            {
                var greedy = new PlacementSearch(model, hostList, goal, ct, progress) { Today = today };
                greedy.Greedy();
                if (greedy.IsBetterThan(search)) search = greedy;
            }
            int[]? current = CurrentAssignment(domains, hostList, today);
            if (current is not null)
            {
                var fromCurrent = new PlacementSearch(model, hostList, goal, ct, progress) { Today = today };
                fromCurrent.ApplyAll(current);
                if (fromCurrent.Fits() && !search.IsBetterThan(fromCurrent)) search = fromCurrent;
            }
            search.Improve();
            verified = Repair(search, domains, hostList, ct, progress);
            hostOf = search.HostOf;
            // Small fleets (FewestHosts): never worse than first fit by the model itself, each domain in the order given
            // to the first host it fits on with those already there (session 22: after the model's numbers moved, the
            // search, which works on the model's estimates, used three hosts where this used two).
            if (goal == PlacementGoal.FewestHosts && (long)n * hostList.Length <= FirstFitPairs)
            {
                var (ffHostOf, ffVerified) = FirstFit(domains, hostList, ct);
                if (IsBetterForFewestHosts(ffHostOf, ffVerified, hostOf, verified)) (hostOf, verified) = (ffHostOf, ffVerified);
            }
            PredictCurrent();
            background.GetAwaiter().GetResult();

            // Never worse than today, by the model: today's placement when it fits the hosts given, unless the answer is
            // strictly better (everything placed, and fewer hosts, or as many and less memory, for FewestHosts; less
            // memory for LeastMemory). On a tie nothing moves.
            if (current is not null && currentGroups.Select((g, i) => currentUsed[i] <= hostList[current[g[0]]].CapacityBytes).All(fits => fits))
            {
                int unplaced = hostOf.Count(h => h < 0);
                int hostsUsed = hostOf.Where(h => h >= 0).Distinct().Count();
                long used = verified.Sum();
                bool better = unplaced == 0
                              && (goal == PlacementGoal.FewestHosts
                                  ? hostsUsed < currentGroups.Length || (hostsUsed == currentGroups.Length && used < currentUsed.Sum())
                                  : used < currentUsed.Sum());
                if (!better)
                {
                    hostOf = current;
                    verified = new long[hostList.Length];
                    for (int g = 0; g < currentGroups.Length; g++) verified[current[currentGroups[g][0]]] = currentUsed[g];
                }
            }
        }
        catch
        {
            stop.Cancel();
            throw;
        }

        // The answer, by the model.
        var assignments = new List<PlacementAssignment>(n);
        var unplacedNames = new List<string>();
        var on = hostList.Select(_ => new List<int>()).ToArray();
        for (int d = 0; d < n; d++)
        {
            var f = domains[d];
            int h = hostOf[d];
            if (h < 0)
            {
                unplacedNames.Add($"{f.HostName}/{f.Domain}");
                continue;
            }
            on[h].Add(d);
            assignments.Add(new PlacementAssignment(f.Domain, f.TrustGroup, hostList[h].Name, f.HostName ?? "", f.GuestBytes, aloneBytes[d]));
        }
        var byName = new Dictionary<string, PlacementHostResult>(HostNames);
        for (int h = 0; h < hostList.Length; h++)
            byName[hostList[h].Name] = new PlacementHostResult(hostList[h].Name, hostList[h].CapacityBytes, on[h].Count,
                on[h].Sum(d => domains[d].GuestBytes), on[h].Count == 0 ? 0 : verified[h]);
        var hostResults = hosts.Select(h => byName[h.Name]).ToArray(); // in the order given
        // Today's figure for the domains placed: each of today's hosts predicted again without its unplaced domains.
        long currentPlaced = currentUsed.Sum();
        if (unplacedNames.Count > 0)
        {
            var placedGroups = currentGroups.Select(g => g.Where(d => hostOf[d] >= 0).ToArray()).ToArray();
            currentPlaced = PredictAll(domains, placedGroups, ct).Sum();
        }
        progress?.Report(new PlacementProgress("Done", 1, 1));
        return new PlacementResult(goal, assignments, hostResults, hostResults.Count(h => h.Domains > 0), hostResults.Sum(h => h.PredictedUsedBytes),
            unplacedNames, currentGroups.Length, currentUsed.Sum(), time.Elapsed.TotalSeconds) { CurrentPlacedUsedBytes = currentPlaced };
    }

    private static void Validate(IReadOnlyList<DomainFingerprint> fingerprints, IReadOnlyList<PlacementHost> hosts, PlacementGoal goal)
    {
        if (fingerprints is not null)
            foreach (var f in fingerprints)
                if (f is null)
                    throw new DEException("FingerprintNone", DEErrorKind.InvalidArgument, "A placement needs fingerprints; one given is null.");
        ColocationModel.Check(fingerprints!);
        if (DomainFingerprint.FirstDuplicate(fingerprints!) is var (duplicate, count))
            throw new DEException("PlacementDomainDuplicate", DEErrorKind.InvalidArgument,
                $"Domain '{duplicate.Domain}' of host '{duplicate.HostName}' is given {count} times: give each domain's fingerprint once.", duplicate.ToString());
        if (!Enum.IsDefined(goal))
            throw new DEException("PlacementGoalInvalid", DEErrorKind.InvalidArgument, $"'{goal}' is not a placement goal.", goal);
        if (hosts is null || hosts.Count == 0)
            throw new DEException("PlacementNoHosts", DEErrorKind.InvalidArgument, "A placement needs at least one host to place the domains on.");
        var names = new HashSet<string>(HostNames);
        foreach (var h in hosts)
        {
            if (h is null || string.IsNullOrWhiteSpace(h.Name))
                throw new DEException("PlacementHostInvalid", DEErrorKind.InvalidArgument, "Each host needs a name and a capacity.", h);
            if (h.CapacityBytes <= 0)
                throw new DEException("PlacementCapacityInvalid", DEErrorKind.InvalidArgument,
                    $"The capacity of host '{h.Name}' must be more than 0 bytes; {h.CapacityBytes} was given.", h.Name);
            if (!names.Add(h.Name))
                throw new DEException("PlacementHostDuplicate", DEErrorKind.InvalidArgument, $"Host '{h.Name}' is given twice.", h.Name);
        }
    }

    /// <summary>The model's prediction for each group of domains (in parallel; each group in the domains' order).</summary>
    private static long[] PredictAll(DomainFingerprint[] domains, int[][] groups, CancellationToken ct)
    {
        var used = new long[groups.Length];
        // Largest groups first, so the cores finish together.
        var order = Enumerable.Range(0, groups.Length).OrderByDescending(g => groups[g].Length).ToArray();
        Parallel.ForEach(order, new ParallelOptions { CancellationToken = ct, MaxDegreeOfParallelism = Environment.ProcessorCount },
            g => used[g] = groups[g].Length == 0 ? 0 : Predict(domains, groups[g]));
        return used;
    }

    /// <summary>
    /// First fit by the model: each domain in the order given to the first host (in the order given, its trust group
    /// allowed) where the model predicts it fits with the domains already there. Returns each domain's host (-1: fits on
    /// none) and each host's prediction.
    /// </summary>
    private static (int[] HostOf, long[] Verified) FirstFit(DomainFingerprint[] domains, PlacementHost[] hosts, CancellationToken ct)
    {
        var hostOf = new int[domains.Length];
        var on = hosts.Select(_ => new List<int>()).ToArray();
        var verified = new long[hosts.Length];
        for (int d = 0; d < domains.Length; d++)
        {
            hostOf[d] = -1;
            for (int h = 0; h < hosts.Length; h++)
            {
                ct.ThrowIfCancellationRequested();
                if (!hosts[h].Allows(domains[d].TrustGroup ?? "")) continue;
                on[h].Add(d);
                long used = Predict(domains, on[h].ToArray());
                if (used <= hosts[h].CapacityBytes)
                {
                    hostOf[d] = h;
                    verified[h] = used;
                    break;
                }
                on[h].RemoveAt(on[h].Count - 1);
            }
        }
        return (hostOf, verified);
    }

    /// <summary>Whether placement <paramref name="a"/> beats <paramref name="b"/> for FewestHosts: fewer unplaced, then fewer hosts, then less memory.</summary>
    private static bool IsBetterForFewestHosts(int[] a, long[] aVerified, int[] b, long[] bVerified)
    {
        int unplacedA = a.Count(h => h < 0), unplacedB = b.Count(h => h < 0);
        if (unplacedA != unplacedB) return unplacedA < unplacedB;
        int hostsA = a.Where(h => h >= 0).Distinct().Count(), hostsB = b.Where(h => h >= 0).Distinct().Count();
        if (hostsA != hostsB) return hostsA < hostsB;
        return aVerified.Sum() < bVerified.Sum();
    }

    private static long Predict(DomainFingerprint[] domains, int[] on) =>
        ColocationModel.Predict(on.Select(d => domains[d]).ToArray(), separately: false).PredictedUsedBytes;

    /// <summary>Each domain's host today as an index into <paramref name="hosts"/>: -1 when it is not among them or does not run the domain's trust group.</summary>
    private static int[] TodaysHosts(DomainFingerprint[] domains, PlacementHost[] hosts)
    {
        var index = new Dictionary<string, int>(HostNames);
        for (int h = 0; h < hosts.Length; h++) index[hosts[h].Name] = h;
        var today = new int[domains.Length];
        for (int d = 0; d < domains.Length; d++)
            today[d] = index.TryGetValue(domains[d].HostName ?? "", out int h) && hosts[h].Allows(domains[d].TrustGroup ?? "") ? h : -1;
        return today;
    }

    /// <summary>Today's placement as host indices, when every domain's host is among those given and runs its trust group (else null).</summary>
    private static int[]? CurrentAssignment(DomainFingerprint[] domains, PlacementHost[] hosts, int[] today) =>
        today.All(h => h >= 0) ? today : null;

    /// <summary>
    /// The model's check of the search's answer: every host's domains predicted together; a host over its capacity gives
    /// up domains until it fits, and those (with those the search could not place) are tried on other hosts, each try
    /// checked by the model. What fits nowhere stays unplaced. Returns each host's prediction.
    /// </summary>
    private static long[] Repair(PlacementSearch search, DomainFingerprint[] domains, PlacementHost[] hosts, CancellationToken ct,
        IProgress<PlacementProgress>? progress)
    {
        progress?.Report(new PlacementProgress("Checking the placement", 0, hosts.Length));
        var groups = Enumerable.Range(0, hosts.Length).Select(search.DomainsOn).ToArray();
        var verified = PredictAll(domains, groups, ct);
        var offset = new double[hosts.Length]; // the model less the search's estimate, per host, as last checked
        var pending = new List<int>();
        for (int d = 0; d < domains.Length; d++)
            if (search.HostOf[d] < 0) pending.Add(d);
        for (int h = 0; h < hosts.Length; h++)
        {
            if (groups[h].Length == 0) continue;
            offset[h] = verified[h] - search.HostCost(h);
            while (verified[h] > hosts[h].CapacityBytes)
            {
                ct.ThrowIfCancellationRequested();
                // Domains off until the estimate saves the excess and a tenth more, then the model again.
                double excess = (verified[h] - hosts[h].CapacityBytes) * 1.1, saved = 0;
                do
                {
                    var (d, saving) = search.PickEviction(h, excess - saved);
                    search.Remove(d);
                    pending.Add(d);
                    saved += saving;
                }
                while (saved < excess && search.DomainsOn(h).Length > 0);
                var on = search.DomainsOn(h);
                verified[h] = on.Length == 0 ? 0 : Predict(domains, on);
                offset[h] = verified[h] - search.HostCost(h);
            }
        }
        // Largest first, then by name.
        pending.Sort((a, b) =>
        {
            int c = search.Model.AloneBytes[b].CompareTo(search.Model.AloneBytes[a]);
            return c != 0 ? c : a.CompareTo(b);
        });
        foreach (int d in pending)
        {
            ct.ThrowIfCancellationRequested();
            var candidates = search.RepairCandidates(d, offset, RepairTolerance);
            foreach (int h in candidates.Take(RepairTries))
            {
                search.Apply(d, h);
                long used = Predict(domains, search.DomainsOn(h));
                offset[h] = used - search.HostCost(h);
                if (used <= hosts[h].CapacityBytes)
                {
                    verified[h] = used;
                    break;
                }
                search.Remove(d);
            }
        }
        return verified;
    }
}

/// <summary>
/// What the search needs of the domains, from their fingerprints. Content route: per domain, the contents no other
/// domain holds folded into one aggregate (they cost the same on any host), and those some other domain holds too (the
/// ones that make colocation pay) kept as items. Similarity route: per domain, its contents with a similarity key some
/// other domain has too (the patches across domains), as similarity items. Either kind is all of them or, when there
/// are more than the search's budget (<see cref="DefaultSearchItems"/> items, an eighth of it similarity items), a
/// deterministic subsample by their keyed hash (those with its low bits zero, weighted by 2^bits).
/// </summary>
internal sealed class PlacementModel
{
    internal const int DefaultSearchItems = 1 << 21;
    internal const double MetadataPerPage = ColocationModel.MetadataPerPage;

    internal struct Item
    {
        public int Id;
        public int Domain;
        public uint Copies;
        public ushort Single, Shared, Patch, GroupCost;
        public bool Reference;

        /// <summary>Private to the domain, it is one of those the model measures the domain's group factor on (its group share, its single blob).</summary>
        public readonly (double Group, double Single, double Count, double Grouped) GroupShare =>
            Copies > 1 || Patch > 0 || Reference ? default
            : (GroupCost > 0 ? GroupCost : 0, GroupCost > 0 ? Single : 0, GroupCost > 0 ? 1 : 0, Single);
    }

    /// <summary>A content of the similarity route, of a similarity key some other domain has too.</summary>
    internal struct SimilarItem
    {
        public int Key;
        public int Domain;
        public int Position;
        public ulong Content;
        public uint Copies;
        public ushort Single, Shared, Patch;
        public EntryFlags Flags;
    }

    public readonly int Count;
    public readonly int[] Trust;
    public readonly int TrustCount;
    public readonly string[] TrustNames;
    public readonly long[] Pages;
    public readonly double[] GroupFactor;
    /// <summary>Per domain, what each of its sampled contents stands for, in the sample's contents (ColocationModel.RatioWeight).</summary>
    public readonly double[] Ratio;
    /// <summary>Per domain: its unique contents, and its items each as if alone (weighted).</summary>
    public readonly ContentAggregate[] Base;
    /// <summary>Per domain: the model's prediction alone (exact, from every entry), and the search's estimate alone.</summary>
    public readonly long[] AloneBytes;
    public readonly double[] AloneEstimate;
    /// <summary>
    /// Per domain, what the model measures its group factor on when it is alone (its private contents with a group
    /// share: their shares, their single blobs, how many; those the search's items stand for weighted as they are), its
    /// private contents' single blobs that the factor applies to, and the factor it falls back to with too few measured
    /// (the fingerprint's).
    /// </summary>
    public readonly (double Group, double Single, double Count, double Grouped)[] GroupAlone;
    public readonly double[] GroupFallback;

    /// <summary>Per domain, what its group factor is multiplied by (ColocationModel.SinglesFactor).</summary>
    public readonly double[] SinglesFactor;

    /// <summary>Per domain, the weight of its incompressible sampled contents (ColocationModel.StrataOf; <see cref="Ratio"/> the others').</summary>
    public readonly double[] IncompressibleRatio;

    /// <summary>The weight of a sampled content of domain <paramref name="d"/> with single blob <paramref name="single"/>.</summary>
    public double RatioOf(int d, ushort single) => single == 0 ? IncompressibleRatio[d] : Ratio[d];

    /// <summary>Per domain, how many measured contents its runs count for (ColocationModel.GroupPriorOf).</summary>
    public readonly double[] GroupPrior;
    /// <summary>Per domain, the group factor from <see cref="GroupAlone"/> (the model's alone, but for the subsample).</summary>
    public readonly double[] GroupReference;
    public readonly int[] ItemStart;
    public readonly Item[] Items;
    /// <summary>Per item, what its content costs alone (the domain's copies, its entry).</summary>
    public readonly ContentAggregate.Delta[] AloneItems;
    public readonly int ContentIds;
    public readonly int SubsampleBits;
    public readonly double Weight;
    public readonly int[] SimilarStart;
    public readonly SimilarItem[] Similar;
    public readonly int SimilarKeys;
    public readonly int SimilarSubsampleBits;
    public readonly double SimilarWeight;
    public readonly double Scale;

    private PlacementModel(int count, int trustCount, string[] trustNames, int[] trust, long[] pages, double[] groupFactor, double[] ratio,
        (double, double, double, double)[] groupAlone, double[] groupFallback, double[] singlesFactor, double[] incompressibleRatio, double[] groupPrior, double[] groupReference,
        ContentAggregate[] baseAggregate, long[] alone, double[] aloneEstimate, int[] itemStart, Item[] items, int contentIds, int bits,
        int[] similarStart, SimilarItem[] similar, int similarKeys, int similarBits, double scale, double similarityScale)
    {
        GroupAlone = groupAlone;
        GroupFallback = groupFallback;
        SinglesFactor = singlesFactor;
        IncompressibleRatio = incompressibleRatio;
        GroupPrior = groupPrior;
        GroupReference = groupReference;
        Count = count;
        TrustCount = trustCount;
        TrustNames = trustNames;
        Trust = trust;
        Pages = pages;
        GroupFactor = groupFactor;
        Ratio = ratio;
        Base = baseAggregate;
        AloneBytes = alone;
        AloneEstimate = aloneEstimate;
        ItemStart = itemStart;
        Items = items;
        AloneItems = new ContentAggregate.Delta[items.Length];
        for (int i = 0; i < items.Length; i++)
        {
            ref readonly var x = ref items[i];
            AloneItems[i] = ContentAggregate.DeltaOf(x.Single, x.Shared, x.Patch, x.Reference, groupFactor[x.Domain], x.Copies);
        }
        ContentIds = contentIds;
        SubsampleBits = bits;
        Weight = 1L << bits;
        SimilarStart = similarStart;
        Similar = similar;
        SimilarKeys = similarKeys;
        SimilarSubsampleBits = similarBits;
        // Each similarity item the search keeps stands for 2^similarBits of the route's, each of those for
        // 2^(SimilarityShift - SampleShift) of the content route's (the routes are sampled apart).
        SimilarWeight = (double)(1L << similarBits) * similarityScale;
        Scale = scale;
    }

    public static PlacementModel Build(DomainFingerprint[] domains, int maxItems, CancellationToken ct, int maxSimilarItems = -1)
    {
        int n = domains.Length;
        var trustNames = domains.Select(f => f.TrustGroup ?? "").Distinct(StringComparer.Ordinal).OrderBy(t => t, StringComparer.Ordinal).ToArray();
        var trustIndex = trustNames.Select((t, i) => (t, i)).ToDictionary(p => p.t, p => p.i, StringComparer.Ordinal);
        var trust = domains.Select(f => trustIndex[f.TrustGroup ?? ""]).ToArray();
        var pages = domains.Select(f => f.PageCount).ToArray();
        var groupFactor = domains.Select(f => Math.Clamp(f.GroupFactor, 0, 1)).ToArray();
        var strata = domains.Select(ColocationModel.StrataOf).ToArray();
        var ratio = strata.Select(s => s.Other).ToArray();
        var incompressibleRatio = strata.Select(s => s.Incompressible).ToArray();
        var groupFallback = (double[])groupFactor.Clone();
        var singlesFactor = domains.Select(ColocationModel.SinglesFactor).ToArray();
        var groupPrior = domains.Select(ColocationModel.GroupPriorOf).ToArray();
        var groupAlone = new (double, double, double, double)[n];
        var groupReference = new double[n];
        double scale = 1L << domains[0].SampleShift;
        double similarityScale = 1L << (domains[0].SimilaritySampleShift - domains[0].SampleShift);
        var parallel = new ParallelOptions { CancellationToken = ct, MaxDegreeOfParallelism = Environment.ProcessorCount };

        // Each domain's routes, one entry per content (the first met, copies summed, as the model merges them): the
        // content route by content, the similarity route by similarity key then the pass's order. And the domain's group
        // factor as the model measures it for the domain alone: over its sampled private contents that carry a group
        // share, when there are enough of them (the search keeps it whatever the set; the model's check measures it per
        // set).
        var entries = new FingerprintEntry[n][];
        var contentRoute = new Route[n];
        var similarRoute = new Route[n];
        Parallel.For(0, n, parallel, () => new KeyTable(), (d, _, table) =>
        {
            var all = entries[d] = domains[d].GetEntries() as FingerprintEntry[] ?? domains[d].GetEntries().ToArray();
            contentRoute[d] = Route.Of(all, EntryFlags.ByContent, table);
            similarRoute[d] = Route.Of(all, EntryFlags.BySimilarity, table);
            var route = contentRoute[d];
            double grouped = 0, single = 0;
            int measured = 0;
            for (int i = 0; i < route.Index.Length; i++)
            {
                ref readonly var e = ref all[route.Index[i]];
                if (route.Copies[i] > 1 || e.PatchCost > 0 || (e.Flags & EntryFlags.Reference) != 0 || e.GroupCost == 0) continue;
                grouped += e.GroupCost;
                single += e.SingleCost;
                measured++;
            }
            groupFactor[d] = ColocationModel.GroupFactorOf(grouped, single, measured, groupFallback[d], groupPrior[d]) * singlesFactor[d];
            return table;
        }, _ => { });

        // Contents and similarity keys more than one domain holds, and the subsample of them the search keeps.
        var (contentIds, bits) = Shared(contentRoute.Select(r => r.Keys).ToArray(), maxItems, parallel);
        var (similarIds, similarBits) = Shared(similarRoute.Select(r => r.Keys).ToArray(), maxSimilarItems >= 0 ? maxSimilarItems : maxItems / 8, parallel);

        double weight = 1L << bits;
        var baseAggregate = new ContentAggregate[n];
        var alone = new long[n];
        var aloneEstimate = new double[n];
        var itemLists = new Item[n][];
        var similarLists = new SimilarItem[n][];
        Parallel.For(0, n, parallel, d =>
        {
            var sampled = new ContentAggregate();
            var items = new List<Item>();
            double gf = groupFactor[d];
            var route = contentRoute[d];
            var all = entries[d];
            var shares = default((double Group, double Single, double Count, double Grouped));
            for (int i = 0; i < route.Index.Length; i++)
            {
                ref readonly var e = ref all[route.Index[i]];
                uint copies = route.Copies[i];
                bool reference = (e.Flags & EntryFlags.Reference) != 0;
                var item = new Item
                {
                    Domain = d, Copies = copies, Single = e.SingleCost, Shared = e.SharedCost, Patch = e.PatchCost, GroupCost = e.GroupCost,
                    Reference = reference,
                };
                if (!contentIds.TryGetValue(e.Content, out int id))
                {
                    sampled.Contribute(e.SingleCost, e.SharedCost, e.PatchCost, reference, gf, copies, e.SingleCost == 0 ? incompressibleRatio[d] : ratio[d], 1);
                    shares = PlacementSearch.Plus(shares, item.GroupShare, 1);
                    continue;
                }
                if (id < 0) continue;
                sampled.Contribute(e.SingleCost, e.SharedCost, e.PatchCost, reference, gf, copies, weight * (e.SingleCost == 0 ? incompressibleRatio[d] : ratio[d]), 1);
                shares = PlacementSearch.Plus(shares, item.GroupShare, weight);
                item.Id = id;
                items.Add(item);
            }
            sampled.Frames += strata[d].UnsampledFrames; // a small domain's incompressible contents the sample missed
            // What the search measures the group factor on, alone: as it will take contents off it (the subsample weighted).
            groupAlone[d] = shares;
            groupReference[d] = ColocationModel.GroupFactorOf(shares.Group, shares.Single, shares.Count, groupFallback[d], groupPrior[d]) * singlesFactor[d];
            items.Sort((a, b) => a.Id.CompareTo(b.Id));
            double hostLevel = MetadataPerPage * pages[d] + ColocationModel.HostFixedMetadataBytes;
            baseAggregate[d] = sampled;
            aloneEstimate[d] = sampled.Cost(null, null, scale) + hostLevel;
            alone[d] = ColocationModel.Predict([domains[d]], separately: false).PredictedUsedBytes; // the estimate is within a byte of it, but for the subsample
            itemLists[d] = items.ToArray();

            var similar = new List<SimilarItem>();
            var sroute = similarRoute[d];
            for (int i = 0; i < sroute.Index.Length; i++)
            {
                ref readonly var e = ref all[sroute.Index[i]];
                if (!similarIds.TryGetValue(e.Similarity, out int key) || key < 0) continue;
                similar.Add(new SimilarItem
                {
                    Key = key, Domain = d, Position = sroute.Index[i], Content = e.Content, Copies = sroute.Copies[i], Single = e.SingleCost,
                    Shared = e.SharedCost, Patch = e.PatchCost, Flags = e.Flags,
                });
            }
            similar.Sort((a, b) => a.Key != b.Key ? a.Key.CompareTo(b.Key) : a.Position.CompareTo(b.Position));
            similarLists[d] = similar.ToArray(); // by key, then the pass's order
        });
        var itemStart = Offsets(itemLists);
        var similarStart = Offsets(similarLists);
        return new PlacementModel(n, trustNames.Length, trustNames, trust, pages, groupFactor, ratio, groupAlone, groupFallback, singlesFactor, incompressibleRatio, groupPrior, groupReference, baseAggregate, alone, aloneEstimate, itemStart,
            Flatten(itemLists, itemStart), contentIds.Count(kv => kv.Value >= 0), bits, similarStart, Flatten(similarLists, similarStart),
            similarIds.Count(kv => kv.Value >= 0), similarBits, scale, similarityScale);
    }

    /// <summary>
    /// One route of a domain (its entries with <c>flag</c>): per distinct content, in the pass's order, the index of its
    /// first entry and its copies (all its entries' together), and the route's distinct keys (contents, or similarity keys).
    /// </summary>
    private readonly record struct Route(int[] Index, uint[] Copies, ulong[] Keys)
    {
        public static Route Of(FingerprintEntry[] entries, EntryFlags flag, KeyTable table)
        {
            int count = 0;
            foreach (var e in entries)
                if ((e.Flags & flag) != 0) count++;
            var index = new int[count];
            var copies = new long[count];
            int distinct = 0;
            table.Reset(count);
            for (int i = 0; i < entries.Length; i++)
            {
                if ((entries[i].Flags & flag) == 0) continue;
                int at = table.GetOrAdd(entries[i].Content, distinct);
                if (at < distinct)
                {
                    copies[at] += entries[i].Copies;
                    continue;
                }
                index[distinct] = i;
                copies[distinct++] = entries[i].Copies;
            }
            var copies32 = new uint[distinct];
            for (int i = 0; i < distinct; i++) copies32[i] = (uint)Math.Min(copies[i], uint.MaxValue);
            ulong[] keys;
            if (flag == EntryFlags.ByContent)
            {
                keys = new ulong[distinct];
                for (int i = 0; i < distinct; i++) keys[i] = entries[index[i]].Content;
            }
            else
            {
                table.Reset(distinct);
                var list = new List<ulong>();
                for (int i = 0; i < distinct; i++)
                {
                    ulong key = entries[index[i]].Similarity;
                    if (table.GetOrAdd(key, list.Count) == list.Count) list.Add(key);
                }
                keys = list.ToArray();
            }
            return new Route(index[..distinct], copies32, keys);
        }
    }

    /// <summary>A reusable hash table from 64-bit keys (keyed hashes: their low bits spread well) to small ints.</summary>
    private sealed class KeyTable
    {
        private ulong[] _keys = new ulong[1024];
        private int[] _values = new int[1024];
        private int[] _stamps = new int[1024];
        private int _stamp, _mask = 1023;

        public void Reset(int count)
        {
            int size = 1024;
            while (size < 2 * count) size <<= 1;
            if (size > _keys.Length)
            {
                _keys = new ulong[size];
                _values = new int[size];
                _stamps = new int[size];
                _stamp = 0;
            }
            _mask = _keys.Length - 1;
            if (++_stamp == int.MaxValue)
            {
                Array.Clear(_stamps);
                _stamp = 1;
            }
        }

        /// <summary>The value of <paramref name="key"/>; when it is new, <paramref name="value"/>, added.</summary>
        public int GetOrAdd(ulong key, int value)
        {
            int at = (int)((key ^ (key >> 29)) * 0x9E3779B97F4A7C15UL >> 40) & _mask;
            while (_stamps[at] == _stamp)
            {
                if (_keys[at] == key) return _values[at];
                at = (at + 1) & _mask;
            }
            _stamps[at] = _stamp;
            _keys[at] = key;
            _values[at] = value;
            return value;
        }
    }

    /// <summary>
    /// The keys more than one domain has (<paramref name="keysOf"/>: each domain's distinct keys), each with its
    /// id in the subsample (-1: left out; ids in the keys' order), and the subsample's bits: the fewest that keep at
    /// most <paramref name="max"/> of the domains' keys.
    /// </summary>
    private static (Dictionary<ulong, int> Ids, int Bits) Shared(ulong[][] keysOf, int max, ParallelOptions parallel)
    {
        long total = keysOf.Sum(k => (long)k.Length);
        var all = new ulong[total];
        long at = 0;
        foreach (var keys in keysOf)
        {
            keys.CopyTo(all, at);
            at += keys.Length;
        }
        // Sorted in two halves at once: split at the median of a sample (equal keys fall in one half).
        ulong pivot = 0;
        if (total > 0)
        {
            var sample = new ulong[Math.Min(total, 4096)];
            for (int i = 0; i < sample.Length; i++) sample[i] = all[i * (total / sample.Length)];
            Array.Sort(sample);
            pivot = sample[sample.Length / 2];
        }
        long low = 0;
        foreach (ulong k in all)
            if (k < pivot) low++;
        var halves = new[] { new ulong[low], new ulong[total - low] };
        long li = 0, hi = 0;
        foreach (ulong k in all)
        {
            if (k < pivot) halves[0][li++] = k;
            else halves[1][hi++] = k;
        }
        all = null!;
        var runs = new (List<ulong> Keys, long Held)[2];
        Parallel.For(0, 2, parallel, h =>
        {
            var half = halves[h];
            Array.Sort(half);
            var multi = new List<ulong>();
            long held = 0; // domains' keys among the shared ones
            for (long i = 0; i < half.Length;)
            {
                long j = i + 1;
                while (j < half.Length && half[j] == half[i]) j++;
                if (j - i > 1)
                {
                    multi.Add(half[i]);
                    held += j - i;
                }
                i = j;
            }
            runs[h] = (multi, held);
        });
        long heldAll = runs[0].Held + runs[1].Held;
        int bits = 0;
        while ((heldAll >> bits) > Math.Max(1, max) && bits < 16) bits++;
        ulong mask = (1UL << bits) - 1;
        var ids = new Dictionary<ulong, int>(runs[0].Keys.Count + runs[1].Keys.Count);
        int next = 0;
        foreach (var (keys, _) in runs)
            foreach (ulong k in keys)
                ids.Add(k, (k & mask) == 0 ? next++ : -1);
        return (ids, bits);
    }

    private static int[] Offsets<T>(T[][] lists)
    {
        var start = new int[lists.Length + 1];
        for (int d = 0; d < lists.Length; d++) start[d + 1] = start[d] + lists[d].Length;
        return start;
    }

    private static T[] Flatten<T>(T[][] lists, int[] start)
    {
        var flat = new T[start[^1]];
        for (int d = 0; d < lists.Length; d++) lists[d].CopyTo(flat, start[d]);
        return flat;
    }

    /// <summary>Per content id, the domains holding it (and their items), by domain.</summary>
    public (int[] Start, int[] Domains, int[] Items) Holders()
    {
        var start = new int[ContentIds + 1];
        foreach (var x in Items) start[x.Id + 1]++;
        for (int i = 0; i < ContentIds; i++) start[i + 1] += start[i];
        var domains = new int[Items.Length];
        var items = new int[Items.Length];
        var at = (int[])start.Clone();
        for (int i = 0; i < Items.Length; i++)
        {
            int k = at[Items[i].Id]++;
            domains[k] = Items[i].Domain;
            items[k] = i;
        }
        return (start, domains, items);
    }

    /// <summary>Per item, about what its content costs alone in bytes (its frame or blob, scaled from the sample).</summary>
    public double[] ItemAloneBytes()
    {
        var bytes = new double[Items.Length];
        for (int i = 0; i < Items.Length; i++)
        {
            ref readonly var a = ref AloneItems[i];
            double b = a.Store;
            if (a.Kind == 1) b += PageGeometry.PageSize;
            else if (a.Kind == 2) b += ColocationModel.MetadataPerGroupedPage;
            bytes[i] = b * Weight * Ratio[Items[i].Domain] * Scale;
        }
        return bytes;
    }


    /// <summary>Domain <paramref name="d"/>'s item for content <paramref name="id"/> (an index into <see cref="Items"/>), or -1.</summary>
    public int FindItem(int d, int id)
    {
        int lo = ItemStart[d], hi = ItemStart[d + 1] - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            int v = Items[mid].Id;
            if (v == id) return mid;
            if (v < id) lo = mid + 1;
            else hi = mid - 1;
        }
        return -1;
    }
}

/// <summary>
/// The content route of a set of contents of one trust group, as the colocation model adds it up (docs/FLEET.md, "The
/// model"): frames, store bytes, grouped pages, shared pages and the store's blobs by size class, in units of the
/// sample (each × 2^SampleShift). <see cref="Cost"/> turns it into bytes as the model does, slabs and metadata included.
/// </summary>
internal sealed class ContentAggregate
{
    private const int PageSize = PageGeometry.PageSize;
    internal static readonly int Classes;
    private static readonly int[] ClassOfLength;
    private static readonly int[] SizeOfClass;
    private static readonly int FullClass;

    static ContentAggregate()
    {
        // The model's size classes, and each length's.
        SizeOfClass = ColocationModel.ClassSizes;
        Classes = SizeOfClass.Length;
        ClassOfLength = new int[CompactStore.MaxBlobLength + 1];
        for (int length = 1; length <= CompactStore.MaxBlobLength; length++)
            ClassOfLength[length] = Array.BinarySearch(SizeOfClass, CompactStore.SlotSizeFor(length));
        FullClass = ClassOfLength[CompactStore.MaxBlobLength];
    }

    public double Frames, Store, Grouped, SharedBlobs;
    public readonly double[] Slots = new double[Classes];
    public readonly int[] Keys = new int[Classes];

    public void Clear()
    {
        Frames = Store = Grouped = SharedBlobs = 0;
        Array.Clear(Slots);
        Array.Clear(Keys);
    }

    public void Add(ContentAggregate other, int sign)
    {
        Frames += sign * other.Frames;
        Store += sign * other.Store;
        Grouped += sign * other.Grouped;
        SharedBlobs += sign * other.SharedBlobs;
        for (int c = 0; c < Slots.Length; c++)
        {
            if (other.Keys[c] == 0 && other.Slots[c] == 0) continue;
            Slots[c] += sign * other.Slots[c];
            Keys[c] += sign * other.Keys[c];
        }
    }

    /// <summary>
    /// Adds (sign 1) or takes away (-1) one distinct content as the model counts it: <paramref name="copies"/> pages of
    /// it in the set, the first domain's costs and group factor; <paramref name="weight"/> contents of the sample.
    /// </summary>
    public void Contribute(ushort single, ushort shared, ushort patch, bool reference, double groupFactor, long copies, double weight, int sign)
    {
        double s = sign * weight;
        bool isShared = copies > 1;
        if (!isShared && patch > 0)
        {
            Store += s * patch;
            Slot(patch, s, sign);
            return;
        }
        int cost = reference || isShared ? shared : single;
        if (cost == 0)
        {
            Frames += s;
            return;
        }
        // A reference is compressed with its pages and patches once they are all cold (SharedCompression): a shared blob.
        if (isShared || reference)
        {
            Store += s * cost;
            Slot(cost, s, sign);
            SharedBlobs += s;
            return;
        }
        Store += s * (cost * groupFactor);
        Grouped += s;
        // A group of four's stream is cut into 4 KiB pieces and a remainder (each grouped content a quarter of a group).
        int stream = (int)(4 * cost * groupFactor);
        Keys[FullClass] += sign;
        Slots[FullClass] += s * (stream / CompactStore.MaxBlobLength / 4.0);
        if (stream % CompactStore.MaxBlobLength != 0) Slot(stream % CompactStore.MaxBlobLength, s * 0.25, sign);
    }

    /// <summary>One content's contribution (as <see cref="Contribute"/> adds it, for one content of the sample), compact.</summary>
    internal struct Delta
    {
        public float Store, Blobs1, Blobs2;
        public byte Class1, Class2, Kind; // classes: 255 for none; kind: 1 a frame, 2 grouped, 3 a shared blob
    }

    public static Delta DeltaOf(ushort single, ushort shared, ushort patch, bool reference, double groupFactor, long copies)
    {
        var a = new Delta { Class1 = 255, Class2 = 255 };
        bool isShared = copies > 1;
        if (!isShared && patch > 0)
        {
            a.Store = patch;
            a.Class1 = (byte)ClassOfLength[Math.Clamp((int)patch, 1, CompactStore.MaxBlobLength)];
            a.Blobs1 = 1;
            return a;
        }
        int cost = reference || isShared ? shared : single;
        if (cost == 0)
        {
            a.Kind = 1;
            return a;
        }
        // A reference is compressed with its pages and patches once they are all cold (SharedCompression): a shared blob.
        if (isShared || reference)
        {
            a.Store = cost;
            a.Class1 = (byte)ClassOfLength[cost];
            a.Blobs1 = 1;
            a.Kind = 3;
            return a;
        }
        a.Store = (float)(cost * groupFactor);
        a.Kind = 2;
        int stream = (int)(4 * cost * groupFactor);
        a.Class1 = (byte)FullClass;
        a.Blobs1 = (float)(stream / CompactStore.MaxBlobLength / 4.0);
        if (stream % CompactStore.MaxBlobLength != 0)
        {
            a.Class2 = (byte)ClassOfLength[stream % CompactStore.MaxBlobLength];
            a.Blobs2 = 0.25f;
        }
        return a;
    }

    /// <summary>Adds <paramref name="delta"/> times <paramref name="weight"/> (negative: takes it away).</summary>
    public void Add(in Delta delta, double weight)
    {
        int sign = weight < 0 ? -1 : 1;
        Store += weight * delta.Store;
        if (delta.Kind == 1) Frames += weight;
        else if (delta.Kind == 2) Grouped += weight;
        else if (delta.Kind == 3) SharedBlobs += weight;
        if (delta.Class1 != 255)
        {
            Slots[delta.Class1] += weight * delta.Blobs1;
            Keys[delta.Class1] += sign;
        }
        if (delta.Class2 != 255)
        {
            Slots[delta.Class2] += weight * delta.Blobs2;
            Keys[delta.Class2] += sign;
        }
    }

    private void Slot(int length, double blobs, int sign)
    {
        int c = ClassOfLength[Math.Clamp(length, 1, CompactStore.MaxBlobLength)];
        Slots[c] += blobs;
        Keys[c] += sign;
    }

    /// <summary>
    /// The bytes the model predicts for this trust group's part (frames, slabs as the store fills them, and the metadata
    /// of frames, grouped pages, shared blobs and slabs), with up to two changes added (null: none).
    /// </summary>
    public double Cost(ContentAggregate? a, ContentAggregate? b, double scale)
    {
        double frames = Frames + (a?.Frames ?? 0) + (b?.Frames ?? 0);
        double store = Store + (a?.Store ?? 0) + (b?.Store ?? 0);
        double grouped = Grouped + (a?.Grouped ?? 0) + (b?.Grouped ?? 0);
        double sharedBlobs = SharedBlobs + (a?.SharedBlobs ?? 0) + (b?.SharedBlobs ?? 0);
        int min = -1, max = -1;
        for (int c = 0; c < Keys.Length; c++)
        {
            if (KeysAt(c, a, b) <= 0) continue;
            if (min < 0) min = c;
            max = c;
        }
        double stored = Math.Max(0, store * scale);
        double slabBytes = stored, slabMetadata = 0;
        if (min >= 0 && stored > 0)
        {
            double sampled = 0;
            for (int c = min; c <= max; c++)
                if (KeysAt(c, a, b) > 0) sampled += SizeOfClass[c] * SlotsAt(c, a, b) * scale;
            double adjust = sampled > 0 ? stored / sampled : 1;
            Span<double> blobs = stackalloc double[Classes];
            for (int c = min; c <= max; c++) blobs[c] = KeysAt(c, a, b) > 0 ? SlotsAt(c, a, b) * scale * adjust : 0;
            (slabBytes, slabMetadata) = ColocationModel.Slabs(blobs);
        }
        // Pages, as the model counts them: whole (a sampled content stands for a fraction of a page's worth once weighted).
        frames = Math.Round(frames * scale);
        return frames * PageSize + slabBytes
               + ColocationModel.GroupTableBytes((long)Math.Round((grouped + sharedBlobs) * scale))
               + SharedBlobTable.MetadataBytesFor((long)Math.Round(sharedBlobs * scale)) + slabMetadata;
    }

    private int KeysAt(int c, ContentAggregate? a, ContentAggregate? b) => Keys[c] + (a?.Keys[c] ?? 0) + (b?.Keys[c] ?? 0);

    private double SlotsAt(int c, ContentAggregate? a, ContentAggregate? b) => Slots[c] + (a?.Slots[c] ?? 0) + (b?.Slots[c] ?? 0);
}

/// <summary>
/// A placement being searched: which host each domain is on, and per host and trust group (a bin) what the colocation
/// model adds up for its domains, kept up to date as domains come and go. Content route: per content some domain
/// shares (an item), the bins that hold it with its copies, its first holder (the model's domain order) and, while one
/// domain holds it, which; a domain's contents no other domain holds cost the same everywhere. Group factors: per
/// domain, what the model measures it on in the set (its contents that stay private), and the change that makes to its
/// private contents' store. Similarity route: per similarity key some domains share, the bins whose domains have it,
/// with what the model's patches across them add. A domain's marginal cost on every host comes from one walk over its
/// items and keys (and the bins holding each). Left out (the model's check sees them): the slab classes of a group's
/// stream as a set moves the group factor, and the first holder's flags once the first holder leaves.
/// </summary>
internal sealed class PlacementSearch
{
    private const int MaxImprovePasses = 12;
    private const int MaxEmptyRounds = 8;
    private const int SwapHosts = 6;
    private const int SwapDomains = 8;
    /// <summary>Work (item and bin visits) the local search may do, in walks over every item (filling the hosts takes about ten).</summary>
    private const long ImproveWorkFactor = 8;
    private const double MinGainBytes = PageGeometry.PageSize;
    private const double ExactMargin = 0.005;
    private const double ContentSubsampleMargin = 0.015;
    private const double SimilarSubsampleMargin = 0.01;

    public readonly PlacementModel Model;
    private readonly PlacementHost[] _hosts;
    private readonly PlacementGoal _goal;
    private readonly CancellationToken _ct;
    private readonly IProgress<PlacementProgress>? _progress;
    private readonly int _trusts;
    private readonly bool[] _allowed; // host * trusts + trust
    private readonly double _fixed = ColocationModel.HostFixedMetadataBytes;
    /// <summary>
    /// The estimate's error, as a share of a host: with every item, what it leaves out (the slab classes of groups' streams
    /// in a set, the first holder's flags after it leaves) is a tenth of a percent or so; a subsample of the contents
    /// adds about a percent and a half (measured: -1.3 % on a family of 70 at 1 in 2), of the similarity keys about one.
    /// </summary>
    private readonly double _margin;

    public readonly int[] HostOf;
    private readonly int[] _hostDomains;
    private readonly long[] _hostPages;
    private readonly double[] _hostCost;
    private readonly List<int>[] _hostBins;
    private readonly SortedSet<int>[] _members;

    private readonly int[] _binOf; // host * trusts + trust -> bin, or -1
    private readonly List<Bin> _bins = new();

    private sealed class Bin
    {
        public int Host, Trust, Domains;
        public readonly ContentAggregate Aggregate = new();
        public readonly ContentAggregate Scratch = new();
        public bool Touched;
        public double Cost;
        // During an evaluation: the group shares of the evaluated domain's contents that would not be private here.
        public (double Group, double Single, double Count, double Grouped) Shares;
    }

    // Per content id, the bins that hold it: a list of nodes.
    private readonly int[] _head;
    private int[] _nodeBin = new int[1024], _nodeNext = new int[1024], _nodeDomains = new int[1024], _nodeXor = new int[1024], _nodeOwner = new int[1024];
    private long[] _nodeCopies = new long[1024];
    private int _nodeCount, _freeNode = -1;

    // The group factor per set (ColocationModel measures a domain's on its contents that stay private in the set): per
    // placed domain what it is measured on in its bin, and the change it makes to the store there (its factor in the set
    // less its factor alone, on its private contents' single blobs); and, during an evaluation, the changes to others.
    private readonly (double Group, double Single, double Count, double Grouped)[] _shares;
    private readonly double[] _term;
    // Per domain, its group factor now: alone, or moved as the estimate of its factor in its bin moved (for the patches
    // across domains, whose home costs the model takes with the factor in the set).
    private readonly double[] _groupNow;
    private readonly (double Group, double Single, double Count, double Grouped)[] _sharesDelta;
    private readonly bool[] _deltaTouched;
    private readonly List<int> _deltaDomains = new();

    // Per similarity key, the bins whose domains have it.
    private readonly SimilarNode?[] _simHead;

    private readonly List<int> _touched = new();
    private readonly ContentAggregate _removal = new();
    private readonly double[] _marginal;
    private long _work;

    public PlacementSearch(PlacementModel model, PlacementHost[] hosts, PlacementGoal goal, CancellationToken ct, IProgress<PlacementProgress>? progress)
    {
        Model = model;
        _hosts = hosts;
        _goal = goal;
        _ct = ct;
        _progress = progress;
        _trusts = model.TrustCount;
        _allowed = new bool[hosts.Length * _trusts];
        for (int h = 0; h < hosts.Length; h++)
            for (int t = 0; t < _trusts; t++)
                _allowed[h * _trusts + t] = hosts[h].Allows(model.TrustNames[t]);
        HostOf = Enumerable.Repeat(-1, model.Count).ToArray();
        _hostDomains = new int[hosts.Length];
        _hostPages = new long[hosts.Length];
        _hostCost = new double[hosts.Length];
        _hostBins = Enumerable.Range(0, hosts.Length).Select(_ => new List<int>()).ToArray();
        _members = Enumerable.Range(0, hosts.Length).Select(_ => new SortedSet<int>()).ToArray();
        _binOf = Enumerable.Repeat(-1, hosts.Length * _trusts).ToArray();
        _head = Enumerable.Repeat(-1, model.ContentIds).ToArray();
        _simHead = new SimilarNode?[model.SimilarKeys];
        _shares = new (double, double, double, double)[model.Count];
        _term = new double[model.Count];
        _groupNow = (double[])model.GroupFactor.Clone();
        _sharesDelta = new (double, double, double, double)[model.Count];
        _deltaTouched = new bool[model.Count];
        _marginal = new double[hosts.Length];
        _margin = ExactMargin + (model.SubsampleBits > 0 ? ContentSubsampleMargin : 0) + (model.SimilarSubsampleBits > 0 ? SimilarSubsampleMargin : 0);
    }

    /// <summary>The search's estimate of a host's memory (0 when empty).</summary>
    public double HostCost(int h) => _hostCost[h];

    public int[] DomainsOn(int h) => _members[h].ToArray();

    private bool Allowed(int h, int d) => _allowed[h * _trusts + Model.Trust[d]];

    /// <summary>The room the search fills a used host to: its capacity less a margin for the estimate's error.</summary>
    private double Capacity(int h) => _hosts[h].CapacityBytes * (1 - _margin);

    /// <summary>Whether <paramref name="d"/> fits on an empty host alone (the model's prediction alone is exact).</summary>
    private bool FitsAlone(int h, int d) => Model.AloneBytes[d] <= _hosts[h].CapacityBytes;

    private double Total => _hostCost.Sum();

    private int HostsUsed => _hostDomains.Count(c => c > 0);

    private int Unplaced => HostOf.Count(h => h < 0);

    /// <summary>
    /// Whether this placement beats <paramref name="other"/> for the goal: fewer unplaced, then fewer hosts (FewestHosts),
    /// then less memory, then (the memory the same to within <see cref="MinGainBytes"/>) fewer domains off the host they run on today.
    /// </summary>
    public bool IsBetterThan(PlacementSearch other)
    {
        if (Unplaced != other.Unplaced) return Unplaced < other.Unplaced;
        if (_goal == PlacementGoal.FewestHosts && HostsUsed != other.HostsUsed) return HostsUsed < other.HostsUsed;
        if (Math.Abs(Total - other.Total) > MinGainBytes) return Total < other.Total;
        return Moves < other.Moves;
    }

    /// <summary>Each domain's host today (an index into the hosts, -1: none of them): ties go to it.</summary>
    public int[]? Today { get; init; }

    private bool IsToday(int d, int h) => Today is not null && Today[d] == h;

    /// <summary>Domains placed elsewhere than on the host they run on today.</summary>
    private int Moves => Today is null ? 0 : HostOf.Where((h, d) => h >= 0 && h != Today[d]).Count();

    /// <summary>Every host within its capacity, by the estimate.</summary>
    public bool Fits()
    {
        for (int h = 0; h < _hosts.Length; h++)
            if (_hostCost[h] > _hosts[h].CapacityBytes) return false;
        return true;
    }

    public void ApplyAll(int[] hostOf)
    {
        for (int d = 0; d < hostOf.Length; d++)
            if (hostOf[d] >= 0) Apply(d, hostOf[d]);
    }

    // ---- The greedy start -------------------------------------------------------------------------------------------

    /// <summary>
    /// Largest domain first (by its prediction alone, then by name), each to the host where it adds least among those
    /// it fits on: for FewestHosts the open hosts, a new one (largest first) only when it fits on none; for LeastMemory
    /// every host.
    /// </summary>
    public void Greedy()
    {
        var order = Enumerable.Range(0, Model.Count).OrderByDescending(d => Model.AloneBytes[d]).ThenBy(d => d).ToArray();
        for (int i = 0; i < order.Length; i++)
        {
            if ((i & 31) == 0)
            {
                _ct.ThrowIfCancellationRequested();
                _progress?.Report(new PlacementProgress("Placing", i, order.Length));
            }
            int d = order[i];
            int best = BestHost(d, openNew: true, exclude: -1, exclude2: -1);
            if (best >= 0) Apply(d, best);
        }
    }

    /// <summary>
    /// Hosts filled one at a time, largest first: each seeded with the largest domain left that fits, then given, while
    /// any fits, the domain left that shares the most with it for its size (the contents it holds that are on the host
    /// already, by what they cost alone), among those that share a tenth of themselves at least, checked by its marginal
    /// cost; when none does and the host is more than half empty, the largest domain left seeds it again. Families of
    /// domains that share gather on hosts of their own; the local search packs hosts left part empty.
    /// </summary>
    public void Fill()
    {
        int n = Model.Count;
        var holders = Model.Holders();
        var savings = new double[n];
        var tried = new int[n];
        var mark = new int[Model.ContentIds];
        var itemBytes = Model.ItemAloneBytes();
        var left = new List<int>(Enumerable.Range(0, n).OrderByDescending(d => Model.AloneBytes[d]).ThenBy(d => d));
        int stamp = 0;
        for (int h = 0; h < _hosts.Length && left.Count > 0; h++)
        {
            _ct.ThrowIfCancellationRequested();
            _progress?.Report(new PlacementProgress("Placing", n - left.Count, n));
            if (_hostDomains[h] > 0) continue;
            int seed = left.FirstOrDefault(d => Allowed(h, d) && FitsAlone(h, d), -1);
            if (seed < 0) continue;
            stamp++;
            foreach (int d in left) savings[d] = 0;
            int current = seed;
            while (current >= 0)
            {
                Apply(current, h);
                left.Remove(current);
                // What the domains left now share with the host.
                int t = Model.Trust[current];
                for (int i = Model.ItemStart[current], end = Model.ItemStart[current + 1]; i < end; i++)
                {
                    int id = Model.Items[i].Id;
                    int tag = stamp * _trusts + t + 1;
                    if (mark[id] == tag) continue;
                    mark[id] = tag;
                    for (int k = holders.Start[id], kend = holders.Start[id + 1]; k < kend; k++)
                    {
                        int g = holders.Domains[k];
                        if (HostOf[g] < 0 && Model.Trust[g] == t) savings[g] += itemBytes[holders.Items[k]];
                    }
                    _work += holders.Start[id + 1] - holders.Start[id];
                }
                current = -1;
                double room = Capacity(h) - _hostCost[h];
                // The domains left that may fit, best share for their size first; each checked by its marginal cost.
                while (true)
                {
                    int best = -1;
                    double bestRatio = double.MaxValue;
                    foreach (int d in left)
                    {
                        if (tried[d] == stamp || !Allowed(h, d)) continue;
                        // Only domains that share with the host: the others wait for hosts of their own family (the
                        // local search then packs what is left half empty).
                        double ratio = 1 - savings[d] / Model.AloneBytes[d];
                        if (ratio > 1 - FillShare) continue;
                        double guess = Model.AloneBytes[d] - _fixed - savings[d];
                        if (guess > room * 1.05) continue;
                        if (ratio < bestRatio - 1e-12)
                        {
                            best = d;
                            bestRatio = ratio;
                        }
                    }
                    // None shares, but the host is more than half empty: the largest domain left that fits seeds
                    // another family here.
                    if (best < 0 && room >= ReseedRoom * Capacity(h))
                        best = left.FirstOrDefault(d => tried[d] != stamp && Allowed(h, d) && Model.AloneBytes[d] - _fixed <= room * 1.05, -1);
                    if (best < 0) break;
                    Evaluate(best);
                    if (_hostCost[h] + _marginal[h] <= Capacity(h))
                    {
                        current = best;
                        break;
                    }
                    tried[best] = stamp;
                }
            }
        }
        // Hosts ran out: the rest where each adds least.
        foreach (int d in left)
        {
            int to = BestHost(d, openNew: true, exclude: -1, exclude2: -1);
            if (to >= 0) Apply(d, to);
        }
    }

    /// <summary>Filling a host takes the domains that would need at most 1 - this of their memory alone there.</summary>
    private const double FillShare = 0.1;

    /// <summary>A host with this share of its room left when no domain shares with it takes another seed.</summary>
    private const double ReseedRoom = 0.5;

    /// <summary>
    /// The host <paramref name="d"/> (not placed, or to be moved) fits on where it adds least; -1 when none. FewestHosts
    /// takes a used host when one fits, else (with <paramref name="openNew"/>) the largest empty host it fits on alone.
    /// </summary>
    private int BestHost(int d, bool openNew, int exclude, int exclude2)
    {
        Evaluate(d);
        int best = -1;
        double bestCost = double.MaxValue;
        bool fewest = _goal == PlacementGoal.FewestHosts;
        for (int h = 0; h < _hosts.Length; h++)
        {
            if (h == exclude || h == exclude2 || h == HostOf[d] || !Allowed(h, d)) continue;
            if (fewest && _hostDomains[h] == 0) continue;
            double m = _marginal[h];
            if (_hostDomains[h] == 0 ? !FitsAlone(h, d) : _hostCost[h] + m > Capacity(h)) continue;
            // Ties: the domain's host today; then LeastMemory: a used host before an empty one; then the lower index
            // (larger, then by name).
            bool tie = best >= 0 && Math.Abs(m - bestCost) <= 1e-6;
            if (m < bestCost - 1e-6
                || (tie && IsToday(d, h))
                || (tie && !IsToday(d, best) && !fewest && _hostDomains[h] > 0 && _hostDomains[best] == 0))
            {
                best = h;
                bestCost = m;
            }
        }
        if (best >= 0 || !fewest || !openNew) return best;
        int open = -1;
        for (int h = 0; h < _hosts.Length; h++) // largest first; of hosts as large, the domain's host today
            if (h != exclude && h != exclude2 && _hostDomains[h] == 0 && Allowed(h, d) && FitsAlone(h, d))
            {
                if (open < 0) open = h;
                else if (_hosts[h].CapacityBytes < _hosts[open].CapacityBytes) break;
                if (IsToday(d, h)) return h;
            }
        return open;
    }

    // ---- Local search -----------------------------------------------------------------------------------------------

    /// <summary>
    /// Rounds of: (FewestHosts) emptying hosts, fewest domains first, by moving their domains to the other used hosts,
    /// or swapping one for a smaller one there; then single moves to the host where a domain adds least, while they
    /// lower the estimate; until a round changes nothing, within a bounded amount of work.
    /// </summary>
    public void Improve()
    {
        long budget = _work + ImproveWorkFactor * (Model.Items.Length + (long)Model.Similar.Length + 2L * Model.Count * _hosts.Length);
        for (int round = 0; round < MaxEmptyRounds; round++)
        {
            bool changed = PlaceUnplaced(budget);
            if (_goal == PlacementGoal.FewestHosts) changed |= EmptyHosts(budget);
            changed |= MovePasses(budget);
            if (!changed || _work > budget) break;
        }
    }

    /// <summary>Domains the greedy start could not place: on a host now, or in place of a smaller domain that goes elsewhere.</summary>
    private bool PlaceUnplaced(long budget)
    {
        bool any = false;
        var unplaced = Enumerable.Range(0, Model.Count).Where(d => HostOf[d] < 0)
            .OrderByDescending(d => Model.AloneBytes[d]).ThenBy(d => d).ToArray();
        foreach (int x in unplaced)
        {
            if (_work > budget) break;
            _ct.ThrowIfCancellationRequested();
            if (!_hosts.Where((_, h) => Allowed(h, x)).Any()) continue;
            int to = BestHost(x, openNew: true, exclude: -1, exclude2: -1);
            if (to >= 0)
            {
                Apply(x, to);
                any = true;
                continue;
            }
            if (TrySwap(x, -1, new List<(int, int, int)>(), openNew: true, hostLimit: _hosts.Length)) any = true;
        }
        return any;
    }

    private bool EmptyHosts(long budget)
    {
        bool any = false;
        for (int pass = 0; pass < MaxEmptyRounds && _work <= budget; pass++)
        {
            var used = Enumerable.Range(0, _hosts.Length).Where(h => _hostDomains[h] > 0)
                .OrderBy(h => _hostDomains[h]).ThenBy(h => _hostCost[h]).ThenBy(h => h).ToArray();
            if (used.Length <= 1) break;
            bool emptied = false;
            for (int i = 0; i < used.Length && _work <= budget; i++)
            {
                _ct.ThrowIfCancellationRequested();
                _progress?.Report(new PlacementProgress("Emptying hosts", i, used.Length));
                if (TryEmpty(used[i])) emptied = any = true;
            }
            if (!emptied) break;
        }
        return any;
    }

    /// <summary>Moves every domain of host <paramref name="e"/> to other used hosts (swapping when one fits nowhere), or changes nothing.</summary>
    private bool TryEmpty(int e)
    {
        var moves = new List<(int Domain, int From, int To)>();
        var domains = _members[e].OrderByDescending(d => Model.AloneBytes[d]).ThenBy(d => d).ToArray();
        foreach (int d in domains)
        {
            int to = BestHost(d, openNew: false, exclude: e, exclude2: -1);
            if (to >= 0)
            {
                Move(d, to, moves);
                continue;
            }
            if (!TrySwap(d, e, moves))
            {
                Undo(moves);
                return false;
            }
        }
        return true;
    }

    /// <summary>
    /// Puts <paramref name="x"/> (of host <paramref name="e"/>, being emptied) on a used host in place of one of its
    /// smaller domains, which goes to yet another used host.
    /// </summary>
    private bool TrySwap(int x, int e, List<(int, int, int)> moves, bool openNew = false, int hostLimit = SwapHosts)
    {
        var hosts = Enumerable.Range(0, _hosts.Length)
            .Where(h => h != e && h != HostOf[x] && _hostDomains[h] > 0 && Allowed(h, x))
            .OrderByDescending(h => Capacity(h) - _hostCost[h]).ThenBy(h => h).Take(hostLimit).ToArray();
        foreach (int h in hosts)
        {
            var smaller = _members[h].Where(y => Model.AloneBytes[y] < Model.AloneBytes[x])
                .OrderByDescending(y => Model.AloneBytes[y]).ThenBy(y => y).Take(SwapDomains).ToArray();
            foreach (int y in smaller)
            {
                int mark = moves.Count;
                Remove(y);
                moves.Add((y, h, -1));
                Evaluate(x);
                if (_hostCost[h] + _marginal[h] <= Capacity(h))
                {
                    Move(x, h, moves);
                    int to = BestHost(y, openNew, exclude: e, exclude2: h);
                    if (to >= 0)
                    {
                        Apply(y, to);
                        moves[mark] = (y, h, to);
                        return true;
                    }
                }
                Undo(moves, mark);
            }
        }
        return false;
    }

    private void Move(int d, int to, List<(int, int, int)> moves)
    {
        int from = HostOf[d];
        if (from >= 0) Remove(d);
        Apply(d, to);
        moves.Add((d, from, to));
    }

    private void Undo(List<(int Domain, int From, int To)> moves, int downTo = 0)
    {
        for (int i = moves.Count - 1; i >= downTo; i--)
        {
            var (d, from, to) = moves[i];
            if (to >= 0) Remove(d);
            if (from >= 0) Apply(d, from);
        }
        moves.RemoveRange(downTo, moves.Count - downTo);
    }

    /// <summary>Each domain in turn to the host where it adds least, when that saves more than it adds (and, for FewestHosts, to a used host).</summary>
    private bool MovePasses(long budget)
    {
        bool any = false;
        bool fewest = _goal == PlacementGoal.FewestHosts;
        for (int pass = 0; pass < MaxImprovePasses && _work <= budget; pass++)
        {
            bool moved = false;
            for (int d = 0; d < Model.Count && _work <= budget; d++)
            {
                if ((d & 63) == 0)
                {
                    _ct.ThrowIfCancellationRequested();
                    _progress?.Report(new PlacementProgress("Improving", d, Model.Count));
                }
                int from = HostOf[d];
                if (from < 0) continue;
                double saving = RemovalSaving(d);
                int to = BestHost(d, openNew: false, exclude: from, exclude2: -1);
                if (to < 0) continue;
                bool empties = fewest && _hostDomains[from] == 1;
                if (!empties && saving - _marginal[to] <= MinGainBytes) continue;
                Remove(d);
                Apply(d, to);
                moved = any = true;
            }
            if (!moved) break;
        }
        return any;
    }

    // ---- The model's check (Placement.Repair) -----------------------------------------------------------------------

    /// <summary>The domain of host <paramref name="h"/> to give up when the model finds it <paramref name="excess"/> bytes over capacity: the one saving least among those saving enough, else the one saving most.</summary>
    public (int Domain, double Saving) PickEviction(int h, double excess)
    {
        int enough = -1, most = -1;
        double enoughSaving = double.MaxValue, mostSaving = double.MinValue;
        foreach (int d in _members[h])
        {
            double s = RemovalSaving(d);
            if (s >= excess && s < enoughSaving)
            {
                enough = d;
                enoughSaving = s;
            }
            if (s > mostSaving)
            {
                most = d;
                mostSaving = s;
            }
        }
        return enough >= 0 ? (enough, enoughSaving) : (most, mostSaving);
    }

    /// <summary>The hosts to try for an unplaced domain, best first, where the estimate (corrected by the model's last check) says it fits within a tolerance.</summary>
    public List<int> RepairCandidates(int d, double[] offset, double tolerance)
    {
        Evaluate(d);
        bool fewest = _goal == PlacementGoal.FewestHosts;
        var list = new List<(int Host, int Empty, double Marginal)>();
        for (int h = 0; h < _hosts.Length; h++)
        {
            if (!Allowed(h, d)) continue;
            bool empty = _hostDomains[h] == 0;
            double after = _hostCost[h] + (empty ? 0 : offset[h]) + _marginal[h];
            if (after > _hosts[h].CapacityBytes * (1 + tolerance)) continue;
            list.Add((h, fewest && empty ? 1 : 0, _marginal[h]));
        }
        return list.OrderBy(c => c.Empty).ThenBy(c => c.Marginal).ThenBy(c => c.Host).Select(c => c.Host).ToList();
    }

    // ---- The incremental model --------------------------------------------------------------------------------------

    private double HostLevel(int d) => PlacementModel.MetadataPerPage * Model.Pages[d];

    /// <summary>The change domain <paramref name="d"/>'s group factor in a set makes to the store, from what it is measured on there.</summary>
    private double Term(int d, in (double Group, double Single, double Count, double Grouped) s) =>
        Model.Ratio[d] * s.Grouped * (ColocationModel.GroupFactorOf(s.Group, s.Single, s.Count, Model.GroupFallback[d], Model.GroupPrior[d]) * Model.SinglesFactor[d] - Model.GroupReference[d]);

    private double GroupNow(int d, in (double Group, double Single, double Count, double Grouped) s) =>
        Math.Clamp(Model.GroupFactor[d] + ColocationModel.GroupFactorOf(s.Group, s.Single, s.Count, Model.GroupFallback[d], Model.GroupPrior[d]) * Model.SinglesFactor[d] - Model.GroupReference[d], 0, 2);

    /// <summary>Group shares (group, single, count, grouped) <paramref name="a"/> plus <paramref name="times"/> times <paramref name="b"/>.</summary>
    internal static (double, double, double, double) Plus(in (double G, double S, double C, double P) a, in (double G, double S, double C, double P) b,
        double times) => (a.G + times * b.G, a.S + times * b.S, a.C + times * b.C, a.P + times * b.P);

    /// <summary>Notes, during an evaluation, that domain <paramref name="o"/> would gain (1) or lose (-1) a private content.</summary>
    private void ShareDelta(int o, in PlacementModel.Item item, double sign)
    {
        var share = item.GroupShare;
        if (share.Grouped == 0 && share.Count == 0) return;
        if (!_deltaTouched[o])
        {
            _deltaTouched[o] = true;
            _sharesDelta[o] = default;
            _deltaDomains.Add(o);
        }
        _sharesDelta[o] = Plus(_sharesDelta[o], share, sign * Model.Weight);
    }

    /// <summary>Adds to each domain's aggregate (<paramref name="aggregateOf"/>) what the noted changes to its private contents change in its term, and forgets them.</summary>
    private void AddShareDeltas(Func<int, ContentAggregate> aggregateOf)
    {
        foreach (int o in _deltaDomains)
        {
            aggregateOf(o).Store += Term(o, Plus(_shares[o], _sharesDelta[o], 1)) - _term[o];
            _deltaTouched[o] = false;
        }
        _deltaDomains.Clear();
    }

    /// <summary>Applies the noted changes to other domains' private contents to them and to <paramref name="a"/>, and forgets them.</summary>
    private void CommitShareDeltas(ContentAggregate a)
    {
        foreach (int o in _deltaDomains)
        {
            _shares[o] = Plus(_shares[o], _sharesDelta[o], 1);
            _groupNow[o] = GroupNow(o, _shares[o]);
            double term = Term(o, _shares[o]);
            a.Store += term - _term[o];
            _term[o] = term;
            _deltaTouched[o] = false;
        }
        _deltaDomains.Clear();
    }

    /// <summary>The marginal cost of <paramref name="d"/> on every host (into _marginal), leaving its own host's entry alone.</summary>
    private void Evaluate(int d)
    {
        int t = Model.Trust[d];
        int own = HostOf[d] >= 0 ? _binOf[HostOf[d] * _trusts + t] : -1;
        double w = Model.Weight;
        var items = Model.Items;
        var alone = Model.AloneItems;
        for (int i = Model.ItemStart[d], end = Model.ItemStart[d + 1]; i < end; i++)
        {
            ref readonly var x = ref items[i];
            for (int n = _head[x.Id]; n >= 0; n = _nodeNext[n])
            {
                _work++;
                int b = _nodeBin[n];
                if (b == own) continue;
                var bin = _bins[b];
                if (bin.Trust != t) continue;
                Touch(bin, b);
                int owner = _nodeOwner[n];
                ref readonly var o = ref items[owner];
                long copies = _nodeCopies[n];
                var scratch = bin.Scratch;
                // Not private here: out of what d's group factor is measured on; and the one holder's, if private, too.
                bin.Shares = Plus(bin.Shares, x.GroupShare, w);
                if (copies == 1) ShareDelta(o.Domain, o, -1);
                // Shared already (copies > 1, and this holder not the one its cost is counted for): one more holder costs nothing.
                if (copies <= 1 || d <= o.Domain)
                {
                    ref readonly var after = ref d < o.Domain ? ref x : ref o;
                    scratch.Contribute(after.Single, after.Shared, after.Patch, after.Reference, Model.GroupFactor[after.Domain], copies + x.Copies, w * Model.RatioOf(after.Domain, after.Single), 1);
                    scratch.Contribute(o.Single, o.Shared, o.Patch, o.Reference, Model.GroupFactor[o.Domain], copies, w * Model.RatioOf(o.Domain, o.Single), -1);
                }
                scratch.Add(alone[i], -w * Model.RatioOf(d, x.Single));
            }
        }
        var similar = Model.Similar;
        for (int i = Model.SimilarStart[d], end = Model.SimilarStart[d + 1]; i < end;)
        {
            int key = similar[i].Key;
            while (i < end && similar[i].Key == key) i++;
            for (var node = _simHead[key]; node is not null; node = node.Next)
            {
                _work++;
                if (node.Bin == own) continue;
                var bin = _bins[node.Bin];
                if (bin.Trust != t) continue;
                Touch(bin, node.Bin);
                AddCross(bin.Scratch, CrossWith(node, d), node);
            }
        }
        // Group factors: d's own on every bin it would share with, and those of the domains whose private contents it shares.
        foreach (int b in _touched)
        {
            var bin = _bins[b];
            bin.Scratch.Store += Term(d, Plus(Model.GroupAlone[d], bin.Shares, -1));
        }
        AddShareDeltas(o => _bins[_binOf[HostOf[o] * _trusts + Model.Trust[o]]].Scratch);
        _work += Model.ItemStart[d + 1] - Model.ItemStart[d] + 8 * _hosts.Length;
        var baseAggregate = Model.Base[d];
        double aloneBytes = Model.AloneEstimate[d] - _fixed; // the domain's content and pages, without the host's fixed part
        for (int h = 0; h < _hosts.Length; h++)
        {
            int b = _binOf[h * _trusts + t];
            if (b < 0 || _bins[b].Domains == 0)
            {
                _marginal[h] = aloneBytes + (_hostDomains[h] == 0 ? _fixed : 0);
                continue;
            }
            var bin = _bins[b];
            _marginal[h] = bin.Aggregate.Cost(baseAggregate, bin.Touched ? bin.Scratch : null, Model.Scale) - bin.Cost + HostLevel(d)
                           + (_hostDomains[h] == 0 ? _fixed : 0);
        }
        foreach (int b in _touched)
        {
            _bins[b].Touched = false;
            _bins[b].Scratch.Clear();
            _bins[b].Shares = default;
        }
        _touched.Clear();
    }

    private void Touch(Bin bin, int b)
    {
        if (bin.Touched) return;
        bin.Touched = true;
        _touched.Add(b);
    }

    /// <summary>What taking <paramref name="d"/> off its host saves, by the estimate.</summary>
    private double RemovalSaving(int d)
    {
        int h = HostOf[d];
        int t = Model.Trust[d];
        int b = _binOf[h * _trusts + t];
        var bin = _bins[b];
        var r = _removal;
        r.Clear();
        r.Add(Model.Base[d], -1);
        double w = Model.Weight;
        double gf = Model.GroupFactor[d];
        var items = Model.Items;
        for (int i = Model.ItemStart[d], end = Model.ItemStart[d + 1]; i < end; i++)
        {
            ref readonly var x = ref items[i];
            int n = FindNode(x.Id, b);
            r.Contribute(x.Single, x.Shared, x.Patch, x.Reference, gf, x.Copies, w * Model.RatioOf(d, x.Single), 1);
            Contribution(r, n, -1);
            int domains = _nodeDomains[n] - 1;
            if (domains == 0) continue;
            int owner = domains == 1 ? Model.FindItem(_nodeXor[n] ^ d, x.Id) : _nodeOwner[n];
            ref readonly var o = ref items[owner];
            long left = _nodeCopies[n] - x.Copies;
            r.Contribute(o.Single, o.Shared, o.Patch, o.Reference, Model.GroupFactor[o.Domain], left, w * Model.RatioOf(o.Domain, o.Single), 1);
            if (domains == 1 && left == 1) ShareDelta(o.Domain, o, 1); // private again to the one left
        }
        r.Store -= _term[d];
        AddShareDeltas(_ => r);
        var similar = Model.Similar;
        for (int i = Model.SimilarStart[d], end = Model.SimilarStart[d + 1]; i < end;)
        {
            int key = similar[i].Key;
            while (i < end && similar[i].Key == key) i++;
            var node = FindSimilarNode(key, b, out _);
            AddCross(r, CrossOf(node, plus: -1, minus: d), node);
        }
        _work += Model.ItemStart[d + 1] - Model.ItemStart[d];
        double after = bin.Domains == 1 ? 0 : bin.Aggregate.Cost(r, null, Model.Scale);
        return bin.Cost - after + HostLevel(d) + (_hostDomains[h] == 1 ? _fixed : 0);
    }

    private void Contribution(ContentAggregate a, int n, int sign)
    {
        ref readonly var o = ref Model.Items[_nodeOwner[n]];
        a.Contribute(o.Single, o.Shared, o.Patch, o.Reference, Model.GroupFactor[o.Domain], _nodeCopies[n], Model.Weight * Model.RatioOf(o.Domain, o.Single), sign);
    }

    private int FindNode(int id, int bin)
    {
        for (int n = _head[id]; n >= 0; n = _nodeNext[n])
        {
            _work++;
            if (_nodeBin[n] == bin) return n;
        }
        return -1;
    }

    private SimilarNode FindSimilarNode(int key, int bin, out SimilarNode? previous)
    {
        previous = null;
        for (var node = _simHead[key]; node is not null; previous = node, node = node.Next)
            if (node.Bin == bin) return node;
        return null!;
    }

    public void Apply(int d, int h)
    {
        if (HostOf[d] >= 0) throw new InvalidOperationException("The domain is placed already.");
        int t = Model.Trust[d];
        int b = _binOf[h * _trusts + t];
        if (b < 0)
        {
            b = _bins.Count;
            _bins.Add(new Bin { Host = h, Trust = t });
            _binOf[h * _trusts + t] = b;
            _hostBins[h].Add(b);
        }
        var bin = _bins[b];
        var agg = bin.Aggregate;
        agg.Add(Model.Base[d], 1);
        double w = Model.Weight;
        double gf = Model.GroupFactor[d];
        var items = Model.Items;
        var shares = Model.GroupAlone[d];
        for (int i = Model.ItemStart[d], end = Model.ItemStart[d + 1]; i < end; i++)
        {
            ref readonly var x = ref items[i];
            int n = FindNode(x.Id, b);
            if (n < 0)
            {
                n = NewNode();
                _nodeBin[n] = b;
                _nodeDomains[n] = 1;
                _nodeXor[n] = d;
                _nodeOwner[n] = i;
                _nodeCopies[n] = x.Copies;
                _nodeNext[n] = _head[x.Id];
                _head[x.Id] = n;
                continue; // its cost alone is in the domain's base
            }
            agg.Contribute(x.Single, x.Shared, x.Patch, x.Reference, gf, x.Copies, w * Model.RatioOf(d, x.Single), -1);
            Contribution(agg, n, -1);
            if (_nodeCopies[n] == 1) ShareDelta(items[_nodeOwner[n]].Domain, items[_nodeOwner[n]], -1); // its one holder's no longer private
            shares = Plus(shares, x.GroupShare, -w);
            _nodeCopies[n] += x.Copies;
            _nodeDomains[n]++;
            _nodeXor[n] ^= d;
            if (d < items[_nodeOwner[n]].Domain) _nodeOwner[n] = i; // the model's first domain holds it
            Contribution(agg, n, 1);
        }
        _shares[d] = shares;
        _term[d] = Term(d, shares);
        _groupNow[d] = GroupNow(d, shares);
        agg.Store += _term[d];
        CommitShareDeltas(agg);
        var similar = Model.Similar;
        for (int i = Model.SimilarStart[d], end = Model.SimilarStart[d + 1]; i < end;)
        {
            int key = similar[i].Key;
            while (i < end && similar[i].Key == key) i++;
            var node = FindSimilarNode(key, b, out _);
            if (node is null)
            {
                node = new SimilarNode { Key = key, Bin = b, Next = _simHead[key] };
                _simHead[key] = node;
            }
            node.Add(d);
            var cross = CrossOf(node, -1, -1, keep: true);
            AddCross(agg, cross, node);
            node.Value = cross;
        }
        _work += Model.ItemStart[d + 1] - Model.ItemStart[d];
        bin.Domains++;
        HostOf[d] = h;
        _hostDomains[h]++;
        _hostPages[h] += Model.Pages[d];
        _members[h].Add(d);
        bin.Cost = agg.Cost(null, null, Model.Scale);
        UpdateHost(h);
    }

    public void Remove(int d)
    {
        int h = HostOf[d];
        if (h < 0) throw new InvalidOperationException("The domain is not placed.");
        int t = Model.Trust[d];
        int b = _binOf[h * _trusts + t];
        var bin = _bins[b];
        var agg = bin.Aggregate;
        agg.Add(Model.Base[d], -1);
        double w = Model.Weight;
        double gf = Model.GroupFactor[d];
        var items = Model.Items;
        for (int i = Model.ItemStart[d], end = Model.ItemStart[d + 1]; i < end; i++)
        {
            ref readonly var x = ref items[i];
            int prev = -1, n = _head[x.Id];
            while (_nodeBin[n] != b)
            {
                _work++;
                prev = n;
                n = _nodeNext[n];
            }
            agg.Contribute(x.Single, x.Shared, x.Patch, x.Reference, gf, x.Copies, w * Model.RatioOf(d, x.Single), 1);
            Contribution(agg, n, -1);
            if (--_nodeDomains[n] == 0)
            {
                if (prev < 0) _head[x.Id] = _nodeNext[n];
                else _nodeNext[prev] = _nodeNext[n];
                _nodeNext[n] = _freeNode;
                _freeNode = n;
                continue;
            }
            _nodeCopies[n] -= x.Copies;
            _nodeXor[n] ^= d;
            // The one domain left holds it; with more left the first one's costs stand (the content is shared: only a
            // reference flag could differ).
            if (_nodeDomains[n] == 1) _nodeOwner[n] = Model.FindItem(_nodeXor[n], x.Id);
            if (_nodeCopies[n] == 1) ShareDelta(items[_nodeOwner[n]].Domain, items[_nodeOwner[n]], 1); // private again to the one left
            Contribution(agg, n, 1);
        }
        agg.Store -= _term[d];
        _term[d] = 0;
        _groupNow[d] = Model.GroupFactor[d];
        CommitShareDeltas(agg);
        var similar = Model.Similar;
        for (int i = Model.SimilarStart[d], end = Model.SimilarStart[d + 1]; i < end;)
        {
            int key = similar[i].Key;
            while (i < end && similar[i].Key == key) i++;
            var node = FindSimilarNode(key, b, out var previous);
            node.Remove(d);
            if (node.Count == 0)
            {
                AddCross(agg, default, node);
                if (previous is null) _simHead[key] = node.Next;
                else previous.Next = node.Next;
                continue;
            }
            var cross = CrossOf(node, -1, -1, keep: true);
            AddCross(agg, cross, node);
            node.Value = cross;
        }
        _work += Model.ItemStart[d + 1] - Model.ItemStart[d];
        bin.Domains--;
        if (bin.Domains == 0) agg.Clear(); // no rounding left behind
        HostOf[d] = -1;
        _hostDomains[h]--;
        _hostPages[h] -= Model.Pages[d];
        _members[h].Remove(d);
        bin.Cost = bin.Domains == 0 ? 0 : agg.Cost(null, null, Model.Scale);
        UpdateHost(h);
    }

    private void UpdateHost(int h)
    {
        if (_hostDomains[h] == 0)
        {
            _hostCost[h] = 0;
            return;
        }
        double cost = PlacementModel.MetadataPerPage * _hostPages[h] + _fixed;
        foreach (int b in _hostBins[h])
            if (_bins[b].Domains > 0) cost += _bins[b].Cost;
        _hostCost[h] = cost;
    }

    private int NewNode()
    {
        if (_freeNode >= 0)
        {
            int n = _freeNode;
            _freeNode = _nodeNext[n];
            return n;
        }
        if (_nodeCount == _nodeBin.Length)
        {
            int size = _nodeBin.Length * 2;
            Array.Resize(ref _nodeBin, size);
            Array.Resize(ref _nodeNext, size);
            Array.Resize(ref _nodeDomains, size);
            Array.Resize(ref _nodeXor, size);
            Array.Resize(ref _nodeOwner, size);
            Array.Resize(ref _nodeCopies, size);
        }
        return _nodeCount++;
    }

    // ---- Patches across domains (the similarity route) -----------------------------------------------------------------

    /// <summary>
    /// The domains of a bin with one similarity key, their contents with it (identical ones merged, by content), and
    /// what the model's patches across them add: the reference (the first content), the patches known at home (sorted),
    /// and the contents patched against the reference.
    /// </summary>
    private sealed class SimilarNode
    {
        public int Key, Bin, Count;
        public SimilarNode? Next;
        public int[] Members = new int[2];
        public SimilarEntry[] Merged = [];
        public int MergedCount, Reference = -1;
        public bool ReferenceShared;
        public int[] Known = [];
        public int KnownCount;
        public int Patched, FramesAtHome;
        public double Home;
        public Cross Value;

        public void Add(int d)
        {
            if (Count == Members.Length) Array.Resize(ref Members, Count * 2);
            Members[Count++] = d;
        }

        public void Remove(int d)
        {
            int i = Array.IndexOf(Members, d, 0, Count);
            Members[i] = Members[--Count];
        }
    }

    /// <summary>Frames, store bytes and patched contents the model's patches across domains add for one similarity key.</summary>
    private readonly record struct Cross(double Frames, double Store, double Patched);

    /// <summary>Adds to <paramref name="a"/> the change from the node's cached patches across domains to <paramref name="value"/>.</summary>
    private void AddCross(ContentAggregate a, Cross value, SimilarNode node)
    {
        double w = Model.SimilarWeight;
        a.Frames += (value.Frames - node.Value.Frames) * w;
        a.Store += (value.Store - node.Value.Store) * w;
        a.Grouped -= (value.Patched - node.Value.Patched) * w;
    }

    private SimilarEntry[] _group = new SimilarEntry[64];
    private int[] _known = new int[64];

    private struct SimilarEntry : IComparable<SimilarEntry>
    {
        public ulong Content;
        public long Order; // domain, then position
        public int Item;
        public long Copies;

        public readonly int CompareTo(SimilarEntry other) =>
            Content != other.Content ? Content.CompareTo(other.Content) : Order.CompareTo(other.Order);
    }

    private static long OrderOf(in PlacementModel.SimilarItem e) => ((long)e.Domain << 32) | (uint)e.Position;

    /// <summary>The home cost of a content patched across domains, and whether it was a frame at home.</summary>
    private double HomeOf(in PlacementModel.SimilarItem c, out bool frame)
    {
        // As a reference a compressed shared frame (a frame when that does not compress), else its blob in a group.
        bool reference = (c.Flags & EntryFlags.Reference) != 0;
        frame = reference ? c.Shared == 0 : c.Single == 0;
        return frame ? 0 : reference ? c.Shared : c.Single * _groupNow[c.Domain];
    }

    private static bool Patchable(in PlacementModel.SimilarItem c, long copies, int referenceDomain) =>
        c.Domain != referenceDomain && (c.Flags & EntryFlags.ClusterFirst) != 0 && copies <= 1 && c.Patch == 0;

    /// <summary>
    /// The model's patches across domains for one similarity key (ColocationModel's similarity route), among the node's
    /// domains with <paramref name="plus"/> and without <paramref name="minus"/>: the key's first content (domain order,
    /// then the pass's) is the reference; each later domain's first content with the key, neither shared nor patched at
    /// home, is patched at the median patch the key's contents had at home, and the reference becomes a frame. With
    /// <paramref name="keep"/> the node keeps what it found (its domains must be the node's own).
    /// </summary>
    private Cross CrossOf(SimilarNode node, int plus, int minus, bool keep = false)
    {
        var similar = Model.Similar;
        int g = 0;
        for (int m = -1; m < node.Count; m++)
        {
            int d = m < 0 ? plus : node.Members[m];
            if (d < 0 || d == minus) continue;
            int hi = Model.SimilarStart[d + 1];
            for (int at = LowerBound(similar, Model.SimilarStart[d], hi, node.Key); at < hi && similar[at].Key == node.Key; at++)
            {
                if (g == _group.Length) Array.Resize(ref _group, g * 2);
                ref readonly var e = ref similar[at];
                _group[g++] = new SimilarEntry { Content = e.Content, Order = OrderOf(e), Item = at, Copies = e.Copies };
            }
        }
        _work += g;
        Array.Sort(_group, 0, g);
        // Identical contents merge (copies added; the first holder's entry); the reference is the first of all.
        int merged = 0, reference = -1;
        for (int i = 0; i < g;)
        {
            int j = i + 1;
            long copies = _group[i].Copies;
            while (j < g && _group[j].Content == _group[i].Content) copies += _group[j++].Copies;
            _group[merged] = _group[i];
            _group[merged].Copies = copies;
            if (reference < 0 || _group[merged].Order < _group[reference].Order) reference = merged;
            merged++;
            i = j;
        }
        int known = 0, patched = 0, framesAtHome = 0;
        double home = 0;
        if (merged > 0)
        {
            ref readonly var r = ref similar[_group[reference].Item];
            for (int i = 0; i < merged; i++)
            {
                ref readonly var c = ref similar[_group[i].Item];
                if (c.Patch > 0)
                {
                    if (known == _known.Length) Array.Resize(ref _known, known * 2);
                    _known[known++] = c.Patch;
                }
                if (i == reference || !Patchable(c, _group[i].Copies, r.Domain)) continue;
                home += HomeOf(c, out bool frame);
                if (frame) framesAtHome++;
                patched++;
            }
            Array.Sort(_known, 0, known);
        }
        if (keep)
        {
            if (node.Merged.Length < merged) node.Merged = new SimilarEntry[Math.Max(merged, node.Merged.Length * 2)];
            Array.Copy(_group, node.Merged, merged);
            node.MergedCount = merged;
            node.Reference = reference;
            node.ReferenceShared = reference >= 0 && _group[reference].Copies > 1;
            if (node.Known.Length < known) node.Known = new int[Math.Max(known, node.Known.Length * 2)];
            Array.Copy(_known, node.Known, known);
            node.KnownCount = known;
            node.Patched = patched;
            node.FramesAtHome = framesAtHome;
            node.Home = home;
        }
        if (merged < 2) return default;
        return Value(similar[_group[reference].Item], reference >= 0 && _group[reference].Copies > 1, _known, known, -1, patched, framesAtHome, home);
    }

    /// <summary>
    /// The cross term from its parts: the reference, whether it is shared, the known patches (sorted; with one more,
    /// <paramref name="extra"/>, when it is not -1), and the contents patched against the reference with what they
    /// cost at home.
    /// </summary>
    private Cross Value(in PlacementModel.SimilarItem r, bool referenceShared, int[] known, int knownCount, int extra, int patched, int framesAtHome,
        double home)
    {
        int total = knownCount + (extra > 0 ? 1 : 0);
        if (r.Patch > 0 || total == 0 || patched == 0) return default;
        int median;
        int at = total / 2;
        if (extra <= 0) median = known[at];
        else
        {
            // The element at 'at' of known with extra inserted.
            int before = LowerBoundValue(known, knownCount, extra); // extra goes at 'before' (after equal values it makes no difference)
            median = at < before ? known[at] : at == before ? extra : known[at - 1];
        }
        double frames = -framesAtHome, store = (double)patched * median - home;
        if ((r.Flags & EntryFlags.Reference) == 0)
        {
            int rCost = referenceShared ? r.Shared : r.Single;
            if (rCost > 0)
            {
                // The reference leaves its blob (or its group) for a compressed shared frame when that compresses, else a frame.
                store -= referenceShared ? rCost : rCost * _groupNow[r.Domain];
                if (r.Shared > 0) store += r.Shared;
                else frames += 1;
            }
            else if (r.Shared > 0 && !referenceShared)
            {
                // A frame at home (its single blob did not fit) that the groups' codec compresses as a shared frame.
                frames -= 1;
                store += r.Shared;
            }
        }
        return new Cross(frames, store, patched);
    }

    private static int LowerBoundValue(int[] values, int count, int value)
    {
        int lo = 0, hi = count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (values[mid] < value) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }

    /// <summary>
    /// The node's cross term with domain <paramref name="d"/> added, from what the node keeps: quick when d comes after
    /// the reference's domain and owns none of the contents it shares with the node; else counted afresh.
    /// </summary>
    private Cross CrossWith(SimilarNode node, int d)
    {
        if (node.MergedCount == 0) return CrossOf(node, d, -1);
        var similar = Model.Similar;
        var merged = node.Merged;
        ref readonly var r = ref similar[merged[node.Reference].Item];
        if (d < r.Domain) return CrossOf(node, d, -1);
        int hi = Model.SimilarStart[d + 1];
        int patched = node.Patched, framesAtHome = node.FramesAtHome, extra = -1;
        double home = node.Home;
        bool referenceShared = node.ReferenceShared;
        for (int at = LowerBound(similar, Model.SimilarStart[d], hi, node.Key); at < hi && similar[at].Key == node.Key; at++)
        {
            _work++;
            ref readonly var x = ref similar[at];
            int m = FindMerged(merged, node.MergedCount, x.Content);
            if (m >= 0)
            {
                // An identical content: shared now (no longer patched), its first holder's entry still.
                if (merged[m].Order > OrderOf(x)) return CrossOf(node, d, -1);
                ref readonly var c = ref similar[merged[m].Item];
                if (m == node.Reference) referenceShared = true;
                else if (Patchable(c, merged[m].Copies, r.Domain))
                {
                    home -= HomeOf(c, out bool frame);
                    if (frame) framesAtHome--;
                    patched--;
                }
                continue;
            }
            if (x.Patch > 0)
            {
                if (extra > 0) return CrossOf(node, d, -1); // two new patches: count afresh
                extra = x.Patch;
            }
            if (!Patchable(x, x.Copies, r.Domain)) continue;
            home += HomeOf(x, out bool isFrame);
            if (isFrame) framesAtHome++;
            patched++;
        }
        return Value(r, referenceShared, node.Known, node.KnownCount, extra, patched, framesAtHome, home);
    }

    private static int FindMerged(SimilarEntry[] merged, int count, ulong content)
    {
        int lo = 0, hi = count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            ulong v = merged[mid].Content;
            if (v == content) return mid;
            if (v < content) lo = mid + 1;
            else hi = mid - 1;
        }
        return -1;
    }

    private static int LowerBound(PlacementModel.SimilarItem[] items, int lo, int hi, int key)
    {
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (items[mid].Key < key) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }
}
