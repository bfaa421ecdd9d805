using DifferenceEngine.Fleet;
using Xunit;

namespace DifferenceEngine.Tests;

/// <summary>
/// Placement.Recommend: every domain placed once or reported unplaced, capacities held by the colocation model, sharing
/// domains put together, trust groups kept to their hosts, no worse than a naive first fit, deterministic, and the
/// refusals by their error ids.
/// </summary>
public sealed class PlacementTests
{
    private const int Page = 4096;
    private static readonly FleetKey Key = FleetKey.FromSecret(new byte[32]
    {
        7, 1, 4, 9, 2, 8, 5, 3, 6, 0, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101,
    });

    // ---- Synthetic guests -------------------------------------------------------------------------------------------

    /// <summary>A page of random bytes for a part of it and a repeated pattern for the rest (one in ten all random).</summary>
    private static byte[] RandomPage(Random rng)
    {
        var page = new byte[Page];
        int random = rng.Next(10) == 0 ? Page : 200 + rng.Next(2800);
        rng.NextBytes(page.AsSpan(0, random));
        byte v = (byte)rng.Next(256);
        for (int i = random; i < Page; i++) page[i] = (byte)(v + (i & 7));
        return page;
    }

    /// <summary>
    /// A guest, page by page (made again on demand, so large guests need no memory): a tenth zero pages, pages of its
    /// family's pool (<paramref name="familyShare"/> of them: the OS and applications its family has in common),
    /// slightly edited copies of its own earlier pages (a tenth), and pages of its own. Deterministic for a seed.
    /// </summary>
    private sealed class Guest(int seed, long pages, int family, double familyShare)
    {
        private const int FamilyPages = 4096;

        public long Pages => pages;

        public byte[] Read(long gfn)
        {
            var rng = new Random(unchecked(seed * 1_000_003 + (int)gfn * 7919));
            double r = rng.NextDouble();
            if (r < 0.1) return new byte[Page];
            if (family >= 0 && r < 0.1 + familyShare) return RandomPage(new Random(unchecked(1_000_000 * (family + 1) + rng.Next(FamilyPages))));
            if (r < 0.2 + familyShare && gfn > 0)
            {
                var copy = Read(rng.Next((int)gfn));
                for (int k = 0; k < 6; k++) copy[rng.Next(Page)] ^= (byte)(1 + rng.Next(255));
                return copy;
            }
            return RandomPage(rng);
        }
    }

    private static DomainFingerprint Fingerprint(string domain, string host, Guest guest, string trustGroup = "default", FleetKey? key = null,
        int shift = FingerprintBuilder.DefaultSampleShift)
    {
        using var builder = new FingerprintBuilder(key ?? Key, shift);
        for (long gfn = 0; gfn < guest.Pages; gfn++) builder.SetPage(gfn, guest.Read(gfn));
        return builder.Finish(domain, host, trustGroup, guest.Pages, "test", (gfn, page) =>
        {
            guest.Read(gfn).CopyTo(page);
            return true;
        });
    }

    private static long Predict(IEnumerable<DomainFingerprint> set) =>
        ColocationModel.Predict(set.OrderBy(f => f.Domain, StringComparer.Ordinal).ThenBy(f => f.HostName, StringComparer.Ordinal).ToArray())
            .PredictedUsedBytes;

    private static readonly Lazy<DomainFingerprint[]> Fleet = new(() =>
    {
        // Four families of four guests of 32 to 64 MiB, on four hosts today, each host a mix of families.
        var list = new DomainFingerprint[16];
        Parallel.For(0, 16, i =>
        {
            int f = i / 4, g = i % 4;
            list[i] = Fingerprint($"f{f}g{g}", $"now{g}", new Guest(100 * f + g, 8192 + 4096 * ((f + g) % 3), f, 0.5));
        });
        return list;
    });

    private static PlacementHost[] Hosts(int count, long capacity, string prefix = "h") =>
        Enumerable.Range(0, count).Select(i => new PlacementHost($"{prefix}{i}", capacity)).ToArray();

    /// <summary>The checks every placement must pass: each domain once, each host the model's prediction within its capacity.</summary>
    private static void AssertSound(PlacementResult r, IReadOnlyList<DomainFingerprint> fps, IReadOnlyList<PlacementHost> hosts)
    {
        Assert.Equal(fps.Count, r.Assignments.Count + r.Unplaced.Count);
        Assert.Equal(fps.Select(f => $"{f.HostName}/{f.Domain}").OrderBy(d => d, StringComparer.Ordinal),
            r.Assignments.Select(a => $"{a.CurrentHostName}/{a.Domain}").Concat(r.Unplaced).OrderBy(d => d, StringComparer.Ordinal));
        Assert.Equal(hosts.Select(h => h.Name), r.Hosts.Select(h => h.HostName));
        long total = 0;
        foreach (var h in r.Hosts)
        {
            var given = hosts.Single(x => x.Name == h.HostName);
            Assert.Equal(given.CapacityBytes, h.CapacityBytes);
            var placed = r.Assignments.Where(a => a.HostName == h.HostName)
                .Select(a => fps.Single(f => f.Domain == a.Domain && f.HostName == a.CurrentHostName)).ToArray();
            Assert.Equal(placed.Length, h.Domains);
            Assert.Equal(placed.Sum(f => f.GuestBytes), h.GuestBytes);
            long expected = placed.Length == 0 ? 0 : Predict(placed);
            Assert.Equal(expected, h.PredictedUsedBytes);
            Assert.True(h.PredictedUsedBytes <= h.CapacityBytes, $"{h.HostName}: {h.PredictedUsedBytes} predicted on {h.CapacityBytes}");
            Assert.True(h.FreeBytes >= 0);
            foreach (var f in placed) Assert.True(given.Allows(f.TrustGroup), $"{f.Domain} ({f.TrustGroup}) on {h.HostName}");
            total += h.PredictedUsedBytes;
        }
        Assert.Equal(total, r.PredictedUsedBytes);
        Assert.Equal(r.Hosts.Count(h => h.Domains > 0), r.HostsUsed);
        // Saved: today's figure for the placed domains only (each of today's hosts without its unplaced domains).
        var placedToday = r.Assignments.Select(a => fps.Single(f => f.Domain == a.Domain && f.HostName == a.CurrentHostName))
            .GroupBy(f => f.HostName, StringComparer.OrdinalIgnoreCase).Sum(g => Predict(g));
        Assert.Equal(placedToday, r.CurrentPlacedUsedBytes);
        Assert.Equal(placedToday - r.PredictedUsedBytes, r.SavedBytes);
        if (r.Unplaced.Count == 0) Assert.Equal(r.CurrentPredictedUsedBytes, r.CurrentPlacedUsedBytes);
        foreach (var a in r.Assignments)
        {
            var f = fps.Single(x => x.Domain == a.Domain && x.HostName == a.CurrentHostName);
            Assert.Equal(f.TrustGroup, a.TrustGroup);
            Assert.Equal(f.GuestBytes, a.GuestBytes);
            Assert.Equal(Predict([f]), a.PredictedAloneBytes);
            Assert.Equal(!string.Equals(a.HostName, a.CurrentHostName, StringComparison.OrdinalIgnoreCase), a.Moved);
        }
    }

    // ---- The search's estimate --------------------------------------------------------------------------------------

    [Fact]
    public void The_search_estimates_a_domain_alone_as_the_model_does_and_a_set_close_to_it()
    {
        var fps = Fleet.Value.OrderBy(f => f.Domain, StringComparer.Ordinal).ToArray();
        var model = PlacementModel.Build(fps, PlacementModel.DefaultSearchItems, default);
        Assert.Equal(0, model.SubsampleBits);
        for (int d = 0; d < fps.Length; d++)
        {
            Assert.Equal(ColocationModel.Predict([fps[d]]).PredictedUsedBytes, model.AloneBytes[d]);
            Assert.InRange(model.AloneEstimate[d], model.AloneBytes[d] - 1, model.AloneBytes[d] + 1);
        }
        // A family together, and two families together, about as the model predicts them (what the search leaves out:
        // the slab classes of groups' streams as the set moves a domain's group factor).
        var search = new PlacementSearch(model, [new PlacementHost("one", long.MaxValue), new PlacementHost("two", long.MaxValue)],
            PlacementGoal.LeastMemory, default, null);
        for (int d = 0; d < 4; d++) search.Apply(d, 0);
        for (int d = 4; d < 12; d++) search.Apply(d, 1);
        foreach (int h in new[] { 0, 1 })
        {
            long predicted = ColocationModel.Predict(search.DomainsOn(h).Select(d => fps[d]).ToArray()).PredictedUsedBytes;
            Assert.InRange(search.HostCost(h), predicted * 0.98, predicted * 1.02);
        }
        // Taking domains off again gives back the estimate of what is left.
        search.Remove(0);
        search.Remove(5);
        long left = ColocationModel.Predict([fps[1], fps[2], fps[3]]).PredictedUsedBytes;
        // (2.3% under the model here since the model's ratio weights and slab occupancy, session 11: within 3%.)
        Assert.True(search.HostCost(0) >= left * 0.97 && search.HostCost(0) <= left * 1.03, $"estimate {search.HostCost(0)}, model {left}");
    }

    [Fact]
    public void A_subsampled_search_still_predicts_each_domain_alone_exactly_and_places_soundly()
    {
        var fps = Fleet.Value;
        var sorted = fps.OrderBy(f => f.Domain, StringComparer.Ordinal).ToArray();
        var model = PlacementModel.Build(sorted, 64, default);
        Assert.True(model.SubsampleBits > 0);
        Assert.True(model.Items.Length < 200, $"{model.Items.Length} items kept");
        for (int d = 0; d < sorted.Length; d++) Assert.Equal(ColocationModel.Predict([sorted[d]]).PredictedUsedBytes, model.AloneBytes[d]);
        long most = fps.Max(f => Predict([f]));
        var hosts = Hosts(8, most * 3);
        var r = Placement.Recommend(fps, hosts, PlacementGoal.FewestHosts, 64, default, null);
        AssertSound(r, fps, hosts);
        Assert.Empty(r.Unplaced);
    }

    // ---- Placements -------------------------------------------------------------------------------------------------

    [Theory]
    [InlineData(PlacementGoal.FewestHosts)]
    [InlineData(PlacementGoal.LeastMemory)]
    public void Every_domain_is_placed_once_within_the_capacities_the_model_predicts(PlacementGoal goal)
    {
        var fps = Fleet.Value;
        long most = fps.Max(f => Predict([f]));
        long all = Predict(fps);
        // Room for about a third of them (sharing included), and for the largest with room to spare; hosts enough.
        long capacity = Math.Max(most * 5 / 4, all / 3);
        Assert.True(all > capacity);
        var hosts = Hosts(16, capacity);
        var r = Placement.Recommend(fps, hosts, goal);
        AssertSound(r, fps, hosts);
        Assert.Empty(r.Unplaced);
        Assert.Equal(goal, r.Goal);
        Assert.True(r.HostsUsed >= 2, $"{r.HostsUsed} host holds what needs more");
        Assert.True(r.Seconds >= 0);
    }

    [Fact]
    public void Two_identical_domains_go_on_one_host_when_there_is_room_and_need_less_than_apart()
    {
        var twinPages = new Guest(70, 8192, 7, 0.3);
        var twin1 = Fingerprint("twin1", "now1", twinPages);
        var twin2 = Fingerprint("twin2", "now2", twinPages);
        var other = Fingerprint("other", "now1", new Guest(71, 8192, -1, 0));
        var fps = new[] { twin1, other, twin2 };
        long alone = Predict([twin1]);
        long pair = Predict([twin1, twin2]);
        Assert.True(pair < 2 * alone);
        // Room for the twins together, not for a twin with the other one (nor for all three).
        long capacity = Math.Max(pair, Predict([other])) + (long)(0.15 * alone);
        Assert.True(Predict([twin1, other]) > capacity, "the test needs hosts too small for a twin and the other domain");
        var hosts = Hosts(3, capacity);
        var r = Placement.Recommend(fps, hosts, PlacementGoal.FewestHosts);
        AssertSound(r, fps, hosts);
        var host1 = r.Assignments.Single(a => a.Domain == "twin1").HostName;
        Assert.Equal(host1, r.Assignments.Single(a => a.Domain == "twin2").HostName);
        Assert.Equal(2, r.HostsUsed);
        Assert.True(r.Hosts.Single(h => h.HostName == host1).PredictedUsedBytes < Predict([twin1]) + Predict([twin2]));
        // Today the twins are apart: the placement saves what sharing saves.
        Assert.True(r.SavedBytes > 0, $"saved {r.SavedBytes}");
        Assert.True(r.PredictedUsedBytes < r.CurrentPredictedUsedBytes);

        // LeastMemory puts them together too.
        var least = Placement.Recommend(fps, Hosts(3, capacity * 4), PlacementGoal.LeastMemory);
        Assert.Equal(least.Assignments.Single(a => a.Domain == "twin1").HostName, least.Assignments.Single(a => a.Domain == "twin2").HostName);
    }

    [Fact]
    public void A_host_for_one_trust_group_gets_no_other_and_a_trust_group_no_host_runs_is_unplaced()
    {
        var fps = new List<DomainFingerprint>();
        for (int i = 0; i < 3; i++) fps.Add(Fingerprint($"a{i}", "now", new Guest(80 + i, 4096, 8, 0.4), "a"));
        for (int i = 0; i < 3; i++) fps.Add(Fingerprint($"b{i}", "now", new Guest(90 + i, 4096, 8, 0.4), "b"));
        fps.Add(Fingerprint("c0", "now", new Guest(99, 2048, 8, 0.4), "c"));
        long all = Predict(fps);
        var hosts = new[]
        {
            new PlacementHost("onlyA", all * 2) { TrustGroups = ["a"] },
            new PlacementHost("aOrB", all) { TrustGroups = ["b", "a"] },
            new PlacementHost("onlyB", all / 2) { TrustGroups = ["b"] },
        };
        foreach (var goal in new[] { PlacementGoal.FewestHosts, PlacementGoal.LeastMemory })
        {
            var r = Placement.Recommend(fps, hosts, goal);
            AssertSound(r, fps, hosts);
            Assert.Equal(["now/c0"], r.Unplaced);
            Assert.DoesNotContain(r.Assignments, a => a.HostName == "onlyA" && a.TrustGroup != "a");
            Assert.DoesNotContain(r.Assignments, a => a.HostName == "onlyB" && a.TrustGroup != "b");
            Assert.Equal(6, r.Assignments.Count);
        }
    }

    [Fact]
    public void A_domain_larger_than_every_host_is_unplaced_and_the_others_placed()
    {
        var small = Enumerable.Range(0, 3).Select(i => Fingerprint($"s{i}", "now", new Guest(200 + i, 1024, -1, 0))).ToArray();
        var big = Fingerprint("big", "now", new Guest(210, 16384, -1, 0));
        var fps = small.Append(big).ToArray();
        long capacity = Predict(small) + Page * 16;
        Assert.True(Predict([big]) > capacity);
        var hosts = Hosts(2, capacity);
        var r = Placement.Recommend(fps, hosts, PlacementGoal.FewestHosts);
        AssertSound(r, fps, hosts);
        Assert.Equal(["now/big"], r.Unplaced); // host/domain: domains of different hosts may have one name
        Assert.Equal(3, r.Assignments.Count);
        Assert.Equal(1, r.HostsUsed);
        // Today's figures still count it: it runs today. What the placement saves does not: it compares the domains
        // placed with the same domains today (before, the big domain's memory counted as saved).
        Assert.Equal(Predict(fps), r.CurrentPredictedUsedBytes);
        Assert.Equal(Predict(small), r.CurrentPlacedUsedBytes);
        Assert.Equal(Predict(small) - r.PredictedUsedBytes, r.SavedBytes);
        Assert.True(r.SavedBytes < Predict([big]), $"saved {r.SavedBytes}");
    }

    [Fact]
    public void Fewest_hosts_uses_no_more_hosts_than_a_naive_first_fit()
    {
        var fps = Fleet.Value;
        long most = fps.Max(f => Predict([f]));
        foreach (double room in new[] { 2.2, 3.1, 4.5 })
        {
            var hosts = Hosts(16, (long)(most * room));
            // Naive first fit: by name, each domain on the first host it fits on by the model.
            var naive = hosts.Select(_ => new List<DomainFingerprint>()).ToArray();
            foreach (var f in fps.OrderBy(f => f.Domain, StringComparer.Ordinal))
            {
                int h = Array.FindIndex(naive, on => Predict(on.Append(f)) <= hosts[0].CapacityBytes);
                Assert.True(h >= 0);
                naive[h].Add(f);
            }
            int naiveHosts = naive.Count(on => on.Count > 0);
            var r = Placement.Recommend(fps, hosts, PlacementGoal.FewestHosts);
            AssertSound(r, fps, hosts);
            Assert.Empty(r.Unplaced);
            Assert.True(r.HostsUsed <= naiveHosts, $"room {room}: {r.HostsUsed} hosts, naive first fit {naiveHosts}");
        }
    }

    [Fact]
    public void Least_memory_needs_no_more_than_today_when_today_fits_the_hosts()
    {
        var fps = Fleet.Value;
        var today = fps.GroupBy(f => f.HostName).ToDictionary(g => g.Key, g => Predict(g));
        var hosts = today.Select(kv => new PlacementHost(kv.Key, kv.Value + Page)).OrderBy(h => h.Name).ToArray();
        var r = Placement.Recommend(fps, hosts, PlacementGoal.LeastMemory);
        AssertSound(r, fps, hosts);
        Assert.Empty(r.Unplaced);
        Assert.True(r.PredictedUsedBytes <= r.CurrentPredictedUsedBytes, $"{r.PredictedUsedBytes} against {r.CurrentPredictedUsedBytes} today");
        // FewestHosts fits them in no more hosts than today.
        var fewest = Placement.Recommend(fps, hosts, PlacementGoal.FewestHosts);
        AssertSound(fewest, fps, hosts);
        Assert.Empty(fewest.Unplaced);
        Assert.True(fewest.HostsUsed <= fewest.CurrentHostsUsed);
    }

    [Fact]
    public void The_current_placement_is_predicted_from_each_fingerprints_host_name()
    {
        var fps = Fleet.Value;
        var hosts = Hosts(5, fps.Max(f => Predict([f])) * 6);
        var r = Placement.Recommend(fps, hosts, PlacementGoal.FewestHosts);
        var groups = fps.GroupBy(f => f.HostName).ToArray();
        Assert.Equal(groups.Length, r.CurrentHostsUsed);
        Assert.Equal(groups.Sum(g => Predict(g)), r.CurrentPredictedUsedBytes);
        Assert.Equal(r.CurrentPlacedUsedBytes - r.PredictedUsedBytes, r.SavedBytes);
        // None of hosts h0..h4 runs a domain today: every domain moves.
        Assert.All(r.Assignments, a => Assert.True(a.Moved));
        // A domain left on the host it runs on has not moved.
        var stay = fps.Select(f => f.HostName).Distinct().Select(h => new PlacementHost(h, fps.Max(f => Predict([f])) * 20)).ToArray();
        var kept = Placement.Recommend(fps, stay, PlacementGoal.FewestHosts);
        Assert.Contains(kept.Assignments, a => !a.Moved);
        Assert.All(kept.Assignments, a => Assert.Equal(a.HostName != a.CurrentHostName, a.Moved));
    }

    [Fact]
    public void The_same_input_in_any_order_gives_the_same_placement()
    {
        var fps = Fleet.Value;
        long most = fps.Max(f => Predict([f]));
        var hosts = Enumerable.Range(0, 7).Select(i => new PlacementHost($"h{i}", most * (3 + i % 3))).ToArray();
        foreach (var goal in new[] { PlacementGoal.FewestHosts, PlacementGoal.LeastMemory })
        {
            var first = Placement.Recommend(fps, hosts, goal);
            var rng = new Random(5);
            var shuffled = fps.OrderBy(_ => rng.Next()).ToArray();
            var shuffledHosts = hosts.OrderBy(_ => rng.Next()).ToArray();
            var again = Placement.Recommend(shuffled, shuffledHosts, goal);
            var once = Placement.Recommend(fps, hosts, goal);
            Assert.Equal(Describe(first), Describe(again));
            Assert.Equal(Describe(first), Describe(once));
            Assert.Equal(first.PredictedUsedBytes, again.PredictedUsedBytes);
            Assert.Equal(first.HostsUsed, again.HostsUsed);
            Assert.Equal(first.CurrentPredictedUsedBytes, again.CurrentPredictedUsedBytes);
            // Hosts are listed in the order given.
            Assert.Equal(shuffledHosts.Select(h => h.Name), again.Hosts.Select(h => h.HostName));
        }

        static string Describe(PlacementResult r) =>
            string.Join(";", r.Assignments.OrderBy(a => a.Domain, StringComparer.Ordinal).Select(a => $"{a.Domain}@{a.HostName}"))
            + "|" + string.Join(",", r.Unplaced);
    }

    [Fact]
    public void Domains_of_the_same_name_on_different_hosts_are_different_domains()
    {
        var fps = new[] { Fingerprint("web", "east", new Guest(300, 1024, -1, 0)), Fingerprint("web", "west", new Guest(301, 1024, -1, 0)) };
        var hosts = Hosts(2, Predict(fps) * 2);
        var r = Placement.Recommend(fps, hosts, PlacementGoal.FewestHosts);
        Assert.Equal(2, r.Assignments.Count);
        Assert.Equal(["east", "west"], r.Assignments.Select(a => a.CurrentHostName).Order(StringComparer.Ordinal));
        Assert.Equal(2, r.CurrentHostsUsed);
    }

    [Fact]
    public void On_a_tie_with_today_nothing_moves()
    {
        // Two domains that share nothing, each on a host of its own today, hosts with room for one each: any placement
        // needs both hosts and the same memory. The search's order (largest domain to the first host) swaps them; today's
        // placement must win the tie, for both goals.
        var a = Fingerprint("a", "y", new Guest(400, 2048, -1, 0));
        var b = Fingerprint("b", "x", new Guest(401, 1024, -1, 0));
        var fps = new[] { a, b };
        long capacity = Predict([a]) + Page * 64;
        Assert.True(Predict(fps) > capacity, "the test needs hosts too small for both domains");
        var hosts = new[] { new PlacementHost("x", capacity), new PlacementHost("y", capacity) };
        foreach (var goal in new[] { PlacementGoal.FewestHosts, PlacementGoal.LeastMemory })
        {
            var r = Placement.Recommend(fps, hosts, goal);
            AssertSound(r, fps, hosts);
            Assert.All(r.Assignments, x => Assert.False(x.Moved, $"{goal}: {x.Domain} moved from {x.CurrentHostName} to {x.HostName}"));
            Assert.Equal(0, r.SavedBytes);
        }
        // Today's placement does not fit the hosts given (c's host is not among them): the domains that can stay still stay
        // (c, the smallest, is placed last).
        var c = Fingerprint("c", "gone", new Guest(402, 512, -1, 0));
        var three = new[] { a, b, c };
        var hosts3 = new[] { new PlacementHost("x", capacity), new PlacementHost("y", capacity), new PlacementHost("z", capacity) };
        var r3 = Placement.Recommend(three, hosts3, PlacementGoal.FewestHosts);
        AssertSound(r3, three, hosts3);
        Assert.Empty(r3.Unplaced);
        Assert.Equal(["c"], r3.Assignments.Where(x => x.Moved).Select(x => x.Domain));
    }

    [Fact]
    public void Host_names_are_compared_ignoring_case()
    {
        // Today: web1 and web2 on "Web-01", db on "DB-01"; the hosts given in lower case, as DNS names often are.
        var web1 = Fingerprint("web1", "Web-01", new Guest(500, 1024, 9, 0.5));
        var web2 = Fingerprint("web2", "web-01", new Guest(501, 1024, 9, 0.5));
        var db = Fingerprint("db", "DB-01", new Guest(502, 1024, -1, 0));
        var fps = new[] { web1, web2, db };
        var hosts = new[] { new PlacementHost("web-01", Predict(fps) * 2), new PlacementHost("db-01", Predict(fps) * 2) };
        var r = Placement.Recommend(fps, hosts, PlacementGoal.LeastMemory);
        AssertSound(r, fps, hosts);
        // "Web-01" and "web-01" are one host today, and today's placement is found among the hosts given.
        Assert.Equal(2, r.CurrentHostsUsed);
        Assert.Equal(Predict([web1, web2]) + Predict([db]), r.CurrentPredictedUsedBytes);
        var web1Placed = r.Assignments.Single(x => x.Domain == "web1");
        Assert.Equal(!string.Equals(web1Placed.HostName, "web-01", StringComparison.OrdinalIgnoreCase), web1Placed.Moved);
        // Room for everything on each host, and today fits: FewestHosts packs them on one host, so only one host's domains move.
        var fewest = Placement.Recommend(fps, hosts, PlacementGoal.FewestHosts);
        AssertSound(fewest, fps, hosts);
        Assert.Equal(1, fewest.HostsUsed);
        string used = fewest.Hosts.Single(h => h.Domains > 0).HostName;
        Assert.Equal(fps.Count(f => !string.Equals(f.HostName, used, StringComparison.OrdinalIgnoreCase)), fewest.Assignments.Count(x => x.Moved));
        // A host given twice in different cases is one host given twice.
        var twice = Assert.Throws<DEException>(() => Placement.Recommend(fps, [new PlacementHost("h", 1L << 30), new PlacementHost("H", 1L << 30)], PlacementGoal.FewestHosts));
        Assert.Equal("PlacementHostDuplicate", twice.ErrorId);
    }

    // ---- Refusals ---------------------------------------------------------------------------------------------------

    [Fact]
    public void Bad_input_is_refused_with_stable_error_ids()
    {
        var a = Fleet.Value[0];
        var b = Fleet.Value[1];
        var host = new PlacementHost("h", 1L << 40);

        void Refused(string id, Action act)
        {
            var e = Assert.Throws<DEException>(act);
            Assert.Equal(id, e.ErrorId);
        }

        Refused("FingerprintNone", () => Placement.Recommend([], [host], PlacementGoal.FewestHosts));
        Refused("FingerprintNone", () => Placement.Recommend(null!, [host], PlacementGoal.FewestHosts));
        Refused("PlacementNoHosts", () => Placement.Recommend([a], [], PlacementGoal.FewestHosts));
        Refused("PlacementNoHosts", () => Placement.Recommend([a], null!, PlacementGoal.FewestHosts));
        Refused("PlacementCapacityInvalid", () => Placement.Recommend([a], [new PlacementHost("h", 0)], PlacementGoal.FewestHosts));
        Refused("PlacementCapacityInvalid", () => Placement.Recommend([a], [host, new PlacementHost("g", -5)], PlacementGoal.LeastMemory));
        Refused("PlacementHostDuplicate", () => Placement.Recommend([a], [host, new PlacementHost("h", 1L << 30)], PlacementGoal.FewestHosts));
        Refused("PlacementDomainDuplicate", () => Placement.Recommend([a, b, a], [host], PlacementGoal.FewestHosts));
        Refused("PlacementHostInvalid", () => Placement.Recommend([a], [new PlacementHost("", 1L << 30)], PlacementGoal.FewestHosts));
        Refused("PlacementGoalInvalid", () => Placement.Recommend([a], [host], (PlacementGoal)7));
        foreach (var e in new[] { "PlacementNoHosts", "PlacementCapacityInvalid" })
            Assert.Equal(DEErrorKind.InvalidArgument,
                Assert.Throws<DEException>(() => Placement.Recommend([a], e == "PlacementNoHosts" ? [] : [new PlacementHost("h", 0)], PlacementGoal.FewestHosts)).Kind);

        // Fingerprints that cannot be combined: as the colocation model refuses them.
        var otherKey = FleetKey.FromSecret(Enumerable.Range(50, 32).Select(i => (byte)i).ToArray());
        var pages = new Guest(400, 1024, -1, 0);
        var foreign = Fingerprint("foreign", "now", pages, key: otherKey);
        Refused("FingerprintKeyMismatch", () => Placement.Recommend([a, foreign], [host], PlacementGoal.FewestHosts));
        var coarse = Fingerprint("coarse", "now", pages, shift: FingerprintBuilder.MinSampleShift + 1);
        Refused("FingerprintSampleMismatch", () => Placement.Recommend([a, coarse], [host], PlacementGoal.FewestHosts));
    }

    [Fact]
    public void A_cancelled_placement_stops()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() =>
            Placement.Recommend(Fleet.Value, Hosts(4, 1L << 40), PlacementGoal.FewestHosts, cts.Token));
    }

    [Fact]
    public void Progress_is_reported_up_to_done()
    {
        var seen = new List<PlacementProgress>();
        var progress = new Collect(seen);
        Placement.Recommend(Fleet.Value, Hosts(4, 1L << 40), PlacementGoal.FewestHosts, default, progress);
        Assert.NotEmpty(seen);
        Assert.Equal("Done", seen[^1].Phase);
    }

    private sealed class Collect(List<PlacementProgress> seen) : IProgress<PlacementProgress>
    {
        public void Report(PlacementProgress value)
        {
            lock (seen) seen.Add(value);
        }
    }
}
