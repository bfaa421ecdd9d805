using System.Diagnostics;
using DifferenceEngine.Qemu;

namespace DifferenceEngine.Domains;

/// <summary>
/// A domain whose memory is a running QEMU guest's RAM (<see cref="QemuRam"/>): a Private page is a page the guest has,
/// its frame the guest's own memory read in place; an Untouched page is a hole of the memfd the guest never filled.
/// The guest's faults reach <see cref="ServeQemuFault"/> and are served under the page's lock like any access.
/// </summary>
/// <remarks>
/// What works today: attaching, the page states and every statistic, reading pages in place (Read-DEGuestPage,
/// Get-DEPage), the clock's sweeps, and first-touch faults (a zero page installed). What does not yet: taking pages out
/// of the guest (sharing, patching, compression, paging), which needs every pass to write-protect a page before it
/// reads it; until then the mechanisms and writes from the engine side refuse with "QemuMechanismNotYetSupported".
/// </remarks>
public sealed partial class Domain
{
    /// <summary>The QEMU guest this domain pages, or null for an embedded domain.</summary>
    internal QemuRam? Qemu { get; private set; }

    /// <summary>The QEMU process whose guest this domain is (0 for an embedded domain).</summary>
    public int QemuPid => Qemu?.Link.Pid ?? 0;

    /// <summary>
    /// Takes over <paramref name="ram"/>: every page the guest has becomes Private on its own (external) frame, every
    /// hole Untouched; then the guest's faults are served. Called once, before the domain is registered.
    /// </summary>
    internal void AttachQemu(QemuRam ram)
    {
        Qemu = ram;
        MarkUntouched();
        foreach (var (first, pages) in ram.PresentRuns())
        {
            for (long gfn = first; gfn < first + pages; gfn++)
            {
                uint frame = ram.FrameOf(gfn);
                Host.Frames.TakeExternal(frame);
                ulong e = Lock(gfn);
                Unlock(gfn, PageEntry.With(e, PageState.Private, frame));
            }
        }
        ram.StartFaults(ServeQemuFault);
    }

    /// <summary>
    /// Answers one fault of the guest on page <paramref name="gfn"/>, under its lock: a missing page that is Zero or
    /// untouched gets a zero page (a ZeroFill fault) and becomes Private; a write-protect fault lifts the protection.
    /// Either way the guest is woken.
    /// </summary>
    private void ServeQemuFault(long gfn, bool writeProtect, long started)
    {
        var ram = Qemu!;
        ulong address = ram.Link.AddressOf(gfn);
        ulong e = Lock(gfn);
        try
        {
            if (writeProtect)
            {
                ram.Link.Faults.WriteProtect(address, Userfaultfd.PageSize, on: false);
                e |= PageEntry.Referenced | PageEntry.Modified;
                return;
            }
            switch (PageEntry.State(e))
            {
                case PageState.Zero:
                {
                    bool installed = ram.Link.Faults.ZeroPage(address);
                    uint frame = ram.FrameOf(gfn);
                    Host.Frames.TakeExternal(frame);
                    e = PageEntry.With(e, PageState.Private, frame) | PageEntry.Referenced;
                    if (installed) Host.Faults.Record(FaultKind.ZeroFill, Stopwatch.GetTimestamp() - started);
                    break;
                }
                case PageState.Private:
                    // Another vCPU faulted on it too and it is in already: wake the guest.
                    ram.Link.Faults.Wake(address, Userfaultfd.PageSize);
                    break;
                default:
                    // No page leaves a QEMU guest yet, so no other state can be met: say so loudly rather than guess.
                    throw new InvalidOperationException($"QEMU domain {Name} page {gfn} is {PageEntry.State(e)}, which no QEMU page can be yet.");
            }
        }
        finally
        {
            Unlock(gfn, e);
        }
    }

    /// <summary>Refuses what would take pages out of a QEMU guest or change them, until the passes can (see the remarks).</summary>
    internal void ThrowIfQemu(string what)
    {
        if (Qemu is not null)
            throw new DEException("QemuMechanismNotYetSupported", DEErrorKind.NotImplemented,
                $"{what} is not yet supported on QEMU domain '{Name}': this version attaches to a QEMU guest, reports its pages " +
                "and serves its faults, but does not take pages out of it yet (docs/QEMU.md).", Name);
    }

    /// <summary>Lets the guest go with every page it has: frames forgotten (never punched), the RAM unmapped, the link closed.</summary>
    private void ReleaseQemu()
    {
        var ram = Qemu!;
        for (long gfn = 0; gfn < PageCount; gfn++)
        {
            ulong e = Lock(gfn);
            if (PageEntry.State(e) == PageState.Private) Host.Frames.ForgetExternal(PageEntry.Frame(e));
            Unlock(gfn, 0);
        }
        try
        {
            // The library unregisters the guest's RAM: its holes fill on touch again, with no engine.
            ram.Link.Detach();
        }
        catch (DEException)
        {
            // QEMU is gone (or went away meanwhile): nothing waits on this engine.
        }
        ram.Dispose();
    }
}
