using DifferenceEngine.Scanning;
using DifferenceEngine.Tests.Engine;
using DifferenceEngine.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Xen;

/// <summary>
/// The engine's invariant on the Xen backend, with every mechanism: guests read and write at random while the engine's
/// passes share (memshr), patch and compress (evicting through mem_paging), the pager swaps under a tight memory limit and
/// serves page-ins; every guest read matches a shadow copy, so does every page at the end, and after the host is disposed
/// (everything loaded back) the guests see their last writes with nothing left paged out.
/// </summary>
[Collection(nameof(FakeXenCollection))]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class XenHostNothingLostPropertyTests(ITestOutputHelper output)
{
    private const int PageSize = FakeXen.PageSize;
    private const int Pages = 64;
    private const int GuestThreads = 3;
    private const int OpsPerThread = 1200;
    private const int LockstepRounds = 2;
    private const int LockstepOps = 100;
    private const int RacingBurst = 100;
    private static readonly uint[] DomainIds = [21, 22, 23];

    [RequiresTheory(Requirement.XenBuild)]
    [InlineData(1, false)]
    [InlineData(2, true)]
    [InlineData(3, true)]
    public async Task RandomGuestTrafficWithEveryMechanismLosesNothing(int seed, bool swap)
    {
        var fake = FakeXen.Get();
        // The alphabet: the zero page, text pages (compress well), variants of one random page (patch well), random pages
        // (do nothing but take space). Writes pick from it or write a fresh variant, so every mechanism keeps having work.
        byte[] basePage = FakeXen.Pattern(500 + seed, 0);
        var alphabet = new List<byte[]> { new byte[PageSize] };
        alphabet.AddRange(Enumerable.Range(0, 4).Select(k => XenHostTests.TextPage(seed * 10 + k)));
        alphabet.AddRange(Enumerable.Range(1, 6).Select(k => XenHostTests.Variant(basePage, k)));
        alphabet.AddRange(Enumerable.Range(0, 2).Select(k => FakeXen.Pattern(900 + seed, k)));
        var shadow = DomainIds.ToDictionary(d => d, _ => new byte[Pages][]);
        var setup = new Random(seed);
        foreach (uint d in DomainIds)
        {
            byte[] content = new byte[Pages * PageSize];
            for (int g = 0; g < Pages; g++)
            {
                shadow[d][g] = alphabet[setup.Next(alphabet.Count)];
                shadow[d][g].CopyTo(content, g * PageSize);
            }
            fake.CreateDomain(d, content);
        }

        string? swapPath = swap ? Path.Combine(Path.GetTempPath(), $"de-xen-prop-{Guid.NewGuid():N}") : null;
        var host = XenHost.Connect(new XenHostOptions
        {
            SimilaritySeed = seed,
            PagerMemoryLimitBytes = swap ? 8 * 1024 : null,
            SwapPath = swapPath,
            SwapSizeBytes = swap ? 4L << 20 : null,
        }, requirePrivcmd: false);
        var domains = DomainIds.Select(id => host.GetDomain(id.ToString())).ToArray();
        foreach (var d in domains)
        {
            host.EnableSharing(d);
            host.EnablePatching(d);
            host.EnableCompression(d);
            host.SetPolicy(d, c4Sweeps: 1);
        }
        host.SetPolicy(domains[2], trustGroup: "other"); // shares and patches only with itself

        long merged = 0, patched = 0, compressed = 0, passes = 0;
        void EnginePasses(int count)
        {
            var r = host.Scan(options: new ScanOptions { Passes = count });
            Interlocked.Add(ref merged, r.PagesMerged);
            Interlocked.Add(ref patched, r.PagesPatched);
            Interlocked.Add(ref compressed, r.PagesCompressed);
            Interlocked.Add(ref passes, count);
        }

        // Guest thread t owns the gfns g with g % GuestThreads == t, so its shadow entries change only under it. Each thread
        // goes on with its own operations from one phase to the next.
        var guestRandom = Enumerable.Range(0, GuestThreads).Select(t => new Random(seed * 100 + t)).ToArray();
        var guestOps = new int[GuestThreads];
        void GuestOp(int t, byte[] page)
        {
            var random = guestRandom[t];
            int op = guestOps[t]++;
            uint d = DomainIds[random.Next(DomainIds.Length)];
            int g = random.Next(Pages / GuestThreads) * GuestThreads + t;
            int kind = random.Next(10);
            if (kind < 6)
            {
                Assert.Equal(0, fake.GuestRead(d, (ulong)g, page));
                Assert.True(page.AsSpan().SequenceEqual(shadow[d][g]), $"op {op}: domain {d} gfn {g} read wrong bytes");
            }
            else
            {
                byte[] next = kind switch
                {
                    < 8 => alphabet[random.Next(alphabet.Count)],
                    8 => XenHostTests.TextPage(seed * 100_000 + t * 10_000 + op), // unique, compresses well
                    _ => XenHostTests.Variant(basePage, 7 + op % 30), // a fresh neighbour of the reference
                };
                Assert.Equal(0, fake.GuestWrite(d, (ulong)g, next.AsSpan()));
                shadow[d][g] = next;
            }
        }
        Task[] StartGuests(int until, RacingLoop? race = null) =>
            RacingLoop.StartGuests(GuestThreads, t => guestOps[t] < until, GuestOp, race, RacingBurst);

        // In lockstep first, the guests and the engine in turn, so what the test must exercise does not hang on how the
        // threads interleave: the guests write unique text pages and neighbours of the reference, two passes share the
        // alphabet's repeats (first pass), patch and compress what stayed unchanged for a pass and swap over the limit
        // (second pass), then the guests touch pages that went out and the pager brings them back. The outcome is fixed by
        // the seed.
        for (int round = 0; round < LockstepRounds; round++)
        {
            await Task.WhenAll(StartGuests((round + 1) * LockstepOps));
            EnginePasses(2);
        }
        output.WriteLine($"lockstep: {passes} passes: merged {merged}, patched {patched}, compressed {compressed}; " +
                         $"{host.Pager.PageIns} page-ins, {host.Pager.SwapOuts} swap-outs");

        // Then all at once: passes race the guests, which pace themselves by the passes (one more every RacingBurst
        // operations), not by sleeping: passes age pages between the guests' bursts however the threads are scheduled.
        var engine = RacingLoop.Start(() => EnginePasses(1));
        try
        {
            await Task.WhenAll(StartGuests(OpsPerThread, engine));
        }
        finally
        {
            await engine.StopAsync();
        }
        output.WriteLine($"{passes} passes: merged {merged}, patched {patched}, compressed {compressed}; {host.Pager.PageIns} page-ins, " +
                         $"{host.Pager.SwapOuts} swap-outs, {host.Pager.EvictedPages} pages out now, {host.Pager.ReferencePages} references");
        Assert.Empty(host.Pager.Failures);
        Assert.True(merged > 0, "no page was ever shared");
        Assert.True(patched > 0, "no page was ever patched");
        Assert.True(compressed > 0, "no page was ever compressed");
        Assert.True(host.Pager.PageIns > 0, "no evicted page was ever asked for");
        if (swap)
        {
            Assert.True(host.Pager.SwapOuts > 0, "nothing ever went to swap");
        }

        // Every page as the engine reads it (the pager's copies included) and as the guest sees it.
        foreach (var d in domains)
        {
            for (int g = 0; g < Pages; g++)
            {
                Assert.Equal(shadow[d.DomainId][g], host.ReadPage(d, g));
            }
        }
        host.Scan(options: new ScanOptions { Passes = 2 }); // out again, some of it
        foreach (uint d in DomainIds)
        {
            for (int g = 0; g < Pages; g++)
            {
                Assert.Equal(shadow[d][g], fake.GuestRead(d, (ulong)g));
            }
        }
        host.Scan(options: new ScanOptions { Passes = 2 });
        // What the engine saves once passes alone have seen the guests' last memory (fixed by the seed). Right after the
        // race it is whatever the last guest operations left: possibly every page back in and no frame shared.
        var stats = host.GetStats();
        output.WriteLine($"saved {stats.SavedBytes} bytes");
        host.Dispose();
        Assert.True(swapPath is null || !File.Exists(swapPath), "the swap file outlived the host");
        // Nothing is left paged out: with no pager, a paged-out page would fail the read (ENXIO).
        foreach (uint d in DomainIds)
        {
            for (int g = 0; g < Pages; g++)
            {
                Assert.Equal(shadow[d][g], fake.GuestRead(d, (ulong)g));
            }
        }
        Assert.True(stats.SavedBytes > 0, $"the engine saved nothing ({stats.SavedBytes} bytes)");
    }
}
