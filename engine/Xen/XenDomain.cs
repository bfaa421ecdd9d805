using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Xen;

/// <summary>
/// A domain of the Xen host, as the engine sees it: its id and name, the engine's policy for it, and Xen's counters as of
/// the last listing. The guest's memory stays in Xen; the engine shares it through memshr and takes pages away through
/// mem_paging.
/// </summary>
public sealed class XenDomain : IDEDomain
{
    private volatile bool removed;

    internal XenDomain(XenHost host, XenDomainInfo info, string name)
    {
        Host = host;
        Info = info;
        Name = name;
        Policy = new DomainPolicy();
    }

    public XenHost Host { get; }

    IDEHost IDEDomain.Host => Host;

    void IDEDomain.EnableSharing() => Host.EnableSharing(this);
    long IDEDomain.DisableSharing(bool unshare) => Host.DisableSharing(this, unshare);
    void IDEDomain.EnablePatching() => Host.EnablePatching(this);
    long IDEDomain.DisablePatching(bool restore) => Host.DisablePatching(this, restore);
    void IDEDomain.EnableCompression(Codecs.CompressionAlgorithm? algorithm) => Host.EnableCompression(this, algorithm);
    long IDEDomain.DisableCompression(bool restore) => Host.DisableCompression(this, restore);

    void IDEDomain.SetPolicy(int? c4Sweeps, int? patchThreshold, double? compressionThreshold,
        Codecs.CompressionAlgorithm? algorithm, string? trustGroup, int? groupSize, int? groupAfterSweeps,
        Codecs.CompressionAlgorithm? groupAlgorithm)
    {
        if (groupSize is not null || groupAfterSweeps is not null || groupAlgorithm is not null)
            throw new DEException("NotSupportedOnXenHost", DEErrorKind.NotImplemented,
                $"Page groups are not built for Xen domains (the Xen pager compresses each page alone); domain '{Name}' keeps its pages single.",
                Name);
        Host.SetPolicy(this, c4Sweeps, patchThreshold, compressionThreshold, algorithm, trustGroup);
    }

    Stats.DomainPageStats IDEDomain.GetPageStats(CancellationToken cancellationToken) => Host.GetPageStats(this, cancellationToken);

    /// <summary>The page's bytes without disturbing the guest (see <see cref="XenHost.ReadPage"/>).</summary>
    byte[] IDEDomain.ReadPage(long gfn) => Host.ReadPage(this, gfn);

    /// <summary>Xen's domain id.</summary>
    public uint DomainId => Info.DomainId;

    public int Id => (int)Info.DomainId;

    /// <summary>The name xenstore gives the domain (as xl list shows it), or "Domain-&lt;id&gt;" when it has none.</summary>
    public string Name { get; internal set; }

    public DomainPolicy Policy { get; }

    /// <summary>Xen's counters for the domain as of the last listing.</summary>
    public XenDomainInfo Info { get; internal set; }

    /// <summary>
    /// Guest pages: those the domain holds on frames of its own (Xen's tot_pages), those backed by shared frames (shr_pages,
    /// which Xen takes out of tot_pages) and those paged out (paged_pages).
    /// </summary>
    public long PageCount => (long)(Info.TotalPages + Info.SharedPages + Info.PagedPages);

    public long SizeBytes => PageCount * PageGeometry.PageSize;

    /// <summary>Domain 0 (the control domain the engine runs in) is listed but never shared, patched or compressed.</summary>
    public bool IsControlDomain => Info.DomainId == 0;

    /// <summary>True for an HVM domain with hardware-assisted paging: only those can be shared and paged.</summary>
    public bool SupportsSharingAndPaging => Info.SupportsSharingAndPaging;

    /// <summary>True once the domain is gone from Xen.</summary>
    public bool IsRemoved => removed;

    /// <summary>"Removed", "Dying", "Shutdown", "Paused", "Running" or "Blocked" (as Xen reports it).</summary>
    public string Status => removed ? "Removed"
        : (Info.Flags & XenDomainFlags.Dying) != 0 ? "Dying"
        : (Info.Flags & XenDomainFlags.Shutdown) != 0 ? "Shutdown"
        : (Info.Flags & XenDomainFlags.Paused) != 0 ? "Paused"
        : (Info.Flags & XenDomainFlags.Blocked) != 0 ? "Blocked"
        : "Running";

    // The engine's view of each page, indexed by gfn: its content hash at the last pass, and how many passes it has been
    // seen unchanged (NeverSeen before the first). Changed by passes only, under the host's pass gate; a page-in resets an
    // age from the pager's thread (a byte store, harmless if it races a pass).
    internal const byte NeverSeen = 0xFF;
    internal const byte MaxAge = 15;

    /// <summary>The age's bits (an age byte also carries <see cref="IncompressibleFlag"/>).</summary>
    internal const byte AgeMask = 0x0F;

    /// <summary>
    /// On an age: the page's content, unchanged since, did not compress within the domain's threshold, so passes do not
    /// read and compress it again. A change of content resets the age, and with it this flag.
    /// </summary>
    internal const byte IncompressibleFlag = 0x40;

    /// <summary>
    /// On an age: Xen refused to nominate the page for sharing (<see cref="XenShareOutcome.Unshareable"/>), so passes do
    /// not offer it again while its content stays; a change of content resets the age, and with it this flag. Without it,
    /// every pass met the same refusal, counted it as contention, and a scan until stable ran to its pass limit.
    /// </summary>
    internal const byte UnshareableFlag = 0x20;

    /// <summary>
    /// Lets passes try every page for compression again (the compression policy changed): from the next pass over the domain
    /// on (<see cref="ApplyForgetRequests"/>), with no pass to wait for.
    /// </summary>
    internal void ForgetIncompressible() => Interlocked.Or(ref forgetRequests, IncompressibleFlag);

    /// <summary>Lets passes offer every page for sharing again (sharing was turned on): from the next pass over the domain on.</summary>
    internal void ForgetUnshareable() => Interlocked.Or(ref forgetRequests, UnshareableFlag);

    // The flags to take off every age at the next pass's start. A pass that began before a request may still mark pages
    // under the old policy: the request, left for the next pass, clears those marks too.
    private int forgetRequests;

    /// <summary>Takes the flags asked to be forgotten since the last pass off every age; a pass calls it at its start.</summary>
    internal void ApplyForgetRequests()
    {
        int flags = Interlocked.Exchange(ref forgetRequests, 0);
        if (flags == 0)
        {
            return;
        }
        var ages = Ages;
        byte keep = unchecked((byte)~flags);
        for (int i = 0; i < ages.Length; i++)
        {
            if (ages[i] != NeverSeen) ages[i] &= keep;
        }
    }
    internal ulong[] Hashes = [];
    internal byte[] Ages = [];

    internal void EnsureTracked(ulong maxGpfn)
    {
        long needed = (long)maxGpfn + 1;
        if (Ages.Length >= needed)
        {
            return;
        }
        int old = Ages.Length;
        Array.Resize(ref Hashes, (int)needed);
        Array.Resize(ref Ages, (int)needed);
        Ages.AsSpan(old).Fill(NeverSeen);
    }

    internal void MarkRemoved() => removed = true;

    internal long MetadataBytes => Hashes.LongLength * sizeof(ulong) + Ages.LongLength;

    public override string ToString() => Name;
}
