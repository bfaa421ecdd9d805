using DifferenceEngine.Tests.Engine;
using DifferenceEngine.Xen;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Xen;

/// <summary>
/// The engine's invariant with the Xen backend: guests read and write at random while sharing passes and evictions run
/// and the pager serves page-ins; every read matches a shadow copy, and so does every page at the end.
/// </summary>
[Collection(nameof(FakeXenCollection))]
public class XenNothingLostPropertyTests(ITestOutputHelper output)
{
    private const int PageSize = FakeXen.PageSize;
    private const int Pages = 48;
    private const int GuestThreads = 3;
    private const int OpsPerThread = 1500;
    private const int LockstepRounds = 2;
    private const int LockstepOps = 100;
    private const int LockstepEvictions = 16;
    private const int RacingBurst = 50;
    private static readonly uint[] DomainIds = [11, 12];

    [RequiresTheory(Requirement.XenBuild)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task RandomGuestTrafficWithSharingAndEvictionLosesNothing(int seed)
    {
        var fake = FakeXen.Get();
        // Half the writes from a small alphabet, so pages keep turning identical and sharing has work; half unique, so
        // some pages stay private and can be evicted.
        byte[][] alphabet = Enumerable.Range(0, 6).Select(k => k == 0 ? new byte[PageSize] : FakeXen.Pattern(1000 + k, 0)).ToArray();
        var shadow = DomainIds.ToDictionary(d => d, d => new byte[Pages][]);
        var setup = new Random(seed);
        foreach (uint d in DomainIds)
        {
            byte[] content = new byte[Pages * PageSize];
            for (int g = 0; g < Pages; g++)
            {
                shadow[d][g] = alphabet[setup.Next(alphabet.Length)];
                shadow[d][g].CopyTo(content, g * PageSize);
            }
            fake.CreateDomain(d, content);
        }

        using var xen = XenConnection.Open(requirePrivcmd: false);
        var pager = new XenPager(xen);
        foreach (uint d in DomainIds)
        {
            pager.Attach(d);
        }
        var sharing = new XenSharing(xen, pager);
        long shared = 0, evicted = 0, passes = 0;
        var evictions = new Random(seed * 7);
        void SharingPass()
        {
            Interlocked.Add(ref shared, sharing.Run(DomainIds).PagesShared);
            Interlocked.Increment(ref passes);
        }
        void Evict()
        {
            if (pager.Evict(DomainIds[evictions.Next(DomainIds.Length)], (ulong)evictions.Next(Pages)))
            {
                Interlocked.Increment(ref evicted);
            }
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
            if (random.Next(2) == 0)
            {
                Assert.Equal(0, fake.GuestRead(d, (ulong)g, page));
                Assert.True(page.AsSpan().SequenceEqual(shadow[d][g]), $"op {op}: domain {d} gfn {g} read wrong bytes");
            }
            else
            {
                byte[] next = random.Next(2) == 0 ? alphabet[random.Next(alphabet.Length)] : FakeXen.Pattern(seed * 1000 + t, op);
                Assert.Equal(0, fake.GuestWrite(d, (ulong)g, next.AsSpan()));
                shadow[d][g] = next;
            }
        }
        Task[] StartGuests(int until, RacingLoop? race = null) =>
            RacingLoop.StartGuests(GuestThreads, t => guestOps[t] < until, GuestOp, race, RacingBurst);

        // In lockstep first, the guests and the engine in turn, so what the test must exercise does not hang on how the
        // threads interleave: evictions, then a sharing pass over identical pages (the alphabet repeats, so there are some),
        // then the guests touch the pages that went out and the pager brings them in. The outcome is fixed by the seed.
        for (int round = 0; round < LockstepRounds; round++)
        {
            for (int i = 0; i < LockstepEvictions; i++)
            {
                Evict();
            }
            SharingPass();
            await Task.WhenAll(StartGuests((round + 1) * LockstepOps));
        }
        output.WriteLine($"lockstep: {passes} sharing passes shared {shared} pages; {evicted} evictions, {pager.PageIns} page-ins");

        // Then all at once: sharing passes and evictions race the guests, which pace themselves by the sharing passes (one
        // more every RacingBurst operations), not by sleeping.
        var sharingLoop = RacingLoop.Start(SharingPass);
        using var stop = new CancellationTokenSource();
        var evictingLoop = Task.Factory.StartNew(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                Evict();
            }
        }, TaskCreationOptions.LongRunning);
        try
        {
            await Task.WhenAll(StartGuests(OpsPerThread, sharingLoop));
        }
        finally
        {
            stop.Cancel();
            await Task.WhenAll(sharingLoop.StopAsync(), evictingLoop);
        }
        output.WriteLine($"{passes} sharing passes shared {shared} pages; {evicted} evictions, {pager.PageIns} page-ins, " +
                         $"{pager.EvictedPages} still out; {fake.FrameCount} frames for {2 * Pages} pages");
        Assert.Empty(pager.Failures);
        Assert.True(shared > 0, "no page was ever shared");
        Assert.True(pager.PageIns > 0, "no evicted page was ever asked for");

        // Every page as the guest sees it, with the pager still serving the ones that are out.
        foreach (uint d in DomainIds)
        {
            for (int g = 0; g < Pages; g++)
            {
                Assert.Equal(shadow[d][g], fake.GuestRead(d, (ulong)g));
            }
        }
        pager.Dispose();
        byte[] read = new byte[PageSize];
        foreach (var info in xen.ListDomains())
        {
            Assert.Equal(0ul, info.PagedPages);
            for (int g = 0; g < Pages; g++)
            {
                xen.ReadPage(info.DomainId, (ulong)g, read);
                Assert.Equal(shadow[info.DomainId][g], read);
            }
        }
    }
}
