using System.Diagnostics;
using DifferenceEngine.Domains;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Qemu;

/// <summary>
/// What holds the pages taken out of a QEMU guest (the engine's store, in whatever encoding): asked for a page's
/// bytes when the guest faults on it. Called with that page's lock held, on the fault thread.
/// </summary>
internal interface IQemuPageHolder
{
    /// <summary>
    /// Writes the bytes of held page <paramref name="gfn"/> into <paramref name="page"/> and returns how the fault was
    /// served (<see cref="FaultKind.Decompress"/>, <see cref="FaultKind.Unpatch"/>, ...), or <see cref="FaultKind.None"/>
    /// when the page is not held (the guest never touched it, or QEMU discarded it: it is zero).
    /// </summary>
    FaultKind Fill(long gfn, Span<byte> page);

    /// <summary>The page is back in the guest: forget it (its encoding may be freed).</summary>
    void Released(long gfn);
}

/// <summary>
/// The mechanics of paging one QEMU guest's RAM through libdeqemu.so: taking a page out without losing a write that
/// races it, and serving the guest's faults on a thread of its own, counted and timed like the embedded host's.
/// What is held and how is the <see cref="IQemuPageHolder"/>'s.
/// </summary>
/// <remarks>
/// <para><b>Taking a page out</b> (<see cref="Evict"/>): under the page's lock, write-protect it and clear its written
/// mark; outside the lock, read and encode it; under the lock again, unless a write-protect fault marked it written
/// meanwhile (the fault lifted the protection and the guest wrote: the eviction is cancelled), commit the encoding and
/// punch the page out of the memfd. A write-protect fault takes the same lock, so it comes either before the commit
/// (and cancels) or after the punch (and finds the page missing: the guest's retry then takes a missing fault and the
/// page is installed before the write lands).</para>
/// <para><b>Faults</b>: a missing fault installs the holder's bytes with UFFDIO_COPY, or a zero page when the holder
/// has none; a write-protect fault marks the page written and lifts the protection. Both wake the guest.</para>
/// <para>Page locks are striped (a lock stands for every 4096th page), which is enough: a fault holds its lock for one
/// copy, an eviction for a write-protect or a punch.</para>
/// </remarks>
internal sealed class QemuGuestMemory : IDisposable
{
    private const int PageSize = Userfaultfd.PageSize;
    private const int Stripes = 4096;

    private readonly QemuLink link;
    private readonly IQemuPageHolder holder;
    private readonly object[] locks = new object[Stripes];
    private readonly byte[] written;
    private readonly int stopFd;
    private readonly Thread faultThread;
    private Exception? faultFailure;
    private long zeroFills, installs, writeProtectFaults, cancelled, evictions, spurious;

    public QemuGuestMemory(QemuLink link, IQemuPageHolder holder)
    {
        this.link = link;
        this.holder = holder;
        for (int i = 0; i < Stripes; i++) locks[i] = new object();
        written = new byte[link.PageCount];
        stopFd = LinuxNative.EventFd(0, 0x80000 /* EFD_CLOEXEC */);
        if (stopFd < 0)
            throw new DEException("QemuLinkFailed", DEErrorKind.ConnectionError,
                $"eventfd failed: {LinuxNative.Describe(LinuxNative.Errno)}.", null);
        // Faults an earlier engine read and never answered wait still: woken, they fault again and reach this one.
        if (link.Reattached)
            foreach (var region in link.Regions) link.Faults.Wake(region.HostAddress, region.Length);
        faultThread = new Thread(ServeFaults) { IsBackground = true, Name = $"de-qemu-faults-{link.Pid}" };
        faultThread.Start();
    }

    /// <summary>Every fault served, counted and timed from the message read to the guest woken.</summary>
    public FaultCounters Faults { get; } = new();

    public long ZeroFills => Interlocked.Read(ref zeroFills);
    public long Installs => Interlocked.Read(ref installs);
    public long WriteProtectFaults => Interlocked.Read(ref writeProtectFaults);
    public long CancelledEvictions => Interlocked.Read(ref cancelled);
    public long Evictions => Interlocked.Read(ref evictions);

    /// <summary>Faults on pages already present when served (another thread of the guest faulted on it too).</summary>
    public long SpuriousFaults => Interlocked.Read(ref spurious);

    /// <summary>The fault thread's failure, if it stopped on one (the guest's faults then wait).</summary>
    public Exception? FaultFailure => Volatile.Read(ref faultFailure);

    /// <summary>
    /// Returns once every fault the guest has been woken from is counted and its page released by the holder: a fault
    /// installs the page (which wakes the guest) before it counts it, under the page's lock, which this waits for.
    /// </summary>
    public void Settle()
    {
        foreach (object gate in locks)
        {
            lock (gate) { }
        }
    }

    /// <summary>
    /// Takes page <paramref name="gfn"/> out of the guest: <paramref name="encode"/> gets its bytes (outside any lock)
    /// and returns an encoding, or null to leave the page where it is; <paramref name="commit"/> stores that encoding,
    /// under the page's lock, just before the page is punched out. Returns false when the page stays: the encoder
    /// declined, or the guest wrote it meanwhile. Needs write-protect faults (<see cref="QemuLink.WriteProtect"/>).
    /// </summary>
    public bool Evict<T>(long gfn, Func<long, ReadOnlySpan<byte>, T?> encode, Action<long, T> commit) where T : class
    {
        if (!link.WriteProtect)
            throw new DEException("QemuWriteProtectUnavailable", DEErrorKind.NotImplemented,
                "This kernel gives no write-protect faults on shared memory (Linux 5.19 and later do): pages cannot be taken " +
                "out of a running QEMU without risking a write.", link.Pid);
        ulong address = link.AddressOf(gfn);
        object gate = locks[gfn % Stripes];
        lock (gate)
        {
            written[gfn] = 0;
            link.Faults.WriteProtect(address, PageSize, on: true);
        }
        Span<byte> page = stackalloc byte[PageSize];
        link.ReadPage(gfn, page);
        T? encoded = encode(gfn, page);
        lock (gate)
        {
            if (Volatile.Read(ref written[gfn]) != 0 || encoded is null)
            {
                if (encoded is not null) Interlocked.Increment(ref cancelled);
                link.Faults.WriteProtect(address, PageSize, on: false);
                return false;
            }
            commit(gfn, encoded); // held before the page leaves the guest
            link.Punch(gfn);
        }
        Interlocked.Increment(ref evictions);
        return true;
    }

    /// <summary>
    /// Puts a held page back into the guest without waiting for a fault (before the engine leaves, or to make room in
    /// its store). Returns false when the holder does not hold it or the guest has the page already.
    /// </summary>
    public bool Restore(long gfn)
    {
        Span<byte> page = stackalloc byte[PageSize];
        lock (locks[gfn % Stripes])
        {
            if (holder.Fill(gfn, page) == FaultKind.None) return false;
            bool installed = link.Faults.Copy(link.AddressOf(gfn), page);
            holder.Released(gfn);
            if (installed) Interlocked.Increment(ref installs);
            return installed;
        }
    }

    private void ServeFaults()
    {
        var messages = new Userfaultfd.Message[32];
        var page = new byte[PageSize];
        try
        {
            while (link.Faults.Wait(stopFd))
            {
                int n = link.Faults.ReadMessages(messages);
                for (int i = 0; i < n; i++)
                {
                    if (messages[i].Event == Userfaultfd.EventPageFault) Serve(messages[i], page);
                }
            }
        }
        catch (Exception e)
        {
            Volatile.Write(ref faultFailure, e);
        }
    }

    private void Serve(in Userfaultfd.Message message, byte[] page)
    {
        long started = Stopwatch.GetTimestamp();
        ulong address = message.Address & ~(ulong)(PageSize - 1);
        long gfn = link.GfnOf(address);
        if (gfn < 0) return; // not guest RAM: cannot happen, the library registers guest RAM only
        lock (locks[gfn % Stripes])
        {
            if ((message.Flags & Userfaultfd.PageFaultFlagWriteProtect) != 0)
            {
                Volatile.Write(ref written[gfn], 1);
                link.Faults.WriteProtect(address, PageSize, on: false);
                Interlocked.Increment(ref writeProtectFaults);
                return;
            }
            FaultKind kind = holder.Fill(gfn, page);
            bool installed = kind == FaultKind.None ? link.Faults.ZeroPage(address) : link.Faults.Copy(address, page);
            if (kind != FaultKind.None) holder.Released(gfn);
            if (!installed)
            {
                Interlocked.Increment(ref spurious);
                return;
            }
            if (kind == FaultKind.None) Interlocked.Increment(ref zeroFills);
            else Interlocked.Increment(ref installs);
            Faults.Record(kind == FaultKind.None ? FaultKind.ZeroFill : kind, Stopwatch.GetTimestamp() - started);
        }
    }

    public unsafe void Dispose()
    {
        ulong one = 1;
        LinuxNative.Write(stopFd, &one, 8);
        faultThread.Join();
        LinuxNative.Close(stopFd);
    }
}
