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
        using var stop = new CancellationTokenSource();
        long shared = 0, evicted = 0, passes = 0;
        // Every task on a thread of its own: on a loaded machine the thread pool may otherwise start the guests' work
        // long before the sharing and evicting loops get a thread, and the guests would find nothing to page in.
        var sharing = Task.Factory.StartNew(() =>
        {
            var pass = new XenSharing(xen, pager);
            while (!stop.IsCancellationRequested)
            {
                var r = pass.Run(DomainIds);
                Interlocked.Add(ref shared, r.PagesShared);
                Interlocked.Increment(ref passes);
                Thread.Sleep(2);
            }
        }, TaskCreationOptions.LongRunning);
        var evicting = Task.Factory.StartNew(() =>
        {
            var random = new Random(seed * 7);
            while (!stop.IsCancellationRequested)
            {
                if (pager.Evict(DomainIds[random.Next(DomainIds.Length)], (ulong)random.Next(Pages)))
                {
                    Interlocked.Increment(ref evicted);
                }
            }
        }, TaskCreationOptions.LongRunning);
        // The guests run their operations, and go on (for at most a minute) until sharing and page-ins have both
        // happened: how the threads interleave is up to the machine, what the test exercises is not.
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        bool Exercised() => Interlocked.Read(ref shared) > 0 && pager.PageIns > 0;
        // Guest thread t owns the gfns g with g % GuestThreads == t, so its shadow entries change only under it.
        var guests = Enumerable.Range(0, GuestThreads).Select(t => Task.Factory.StartNew(() =>
        {
            var random = new Random(seed * 100 + t);
            byte[] page = new byte[PageSize];
            for (int op = 0; op < OpsPerThread || (!Exercised() && DateTime.UtcNow < deadline); op++)
            {
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
        }, TaskCreationOptions.LongRunning)).ToArray();

        try
        {
            await Task.WhenAll(guests).WaitAsync(TimeSpan.FromMinutes(2));
        }
        finally
        {
            stop.Cancel();
            await Task.WhenAll(sharing, evicting).WaitAsync(TimeSpan.FromMinutes(1));
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
