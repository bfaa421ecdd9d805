namespace DifferenceEngine.Stats;

/// <summary>A host-wide snapshot: frames, guest memory, memory used and saved, metadata, faults, engine time.</summary>
public sealed record HostStats(
    string Host,
    int Domains,
    long? MemoryLimitBytes,
    long FramesInUse,
    long FramesFree,
    long FramesAllocated,
    long SharedFrames,
    long GuestBytes,
    long MetadataBytes,
    long ScanPasses,
    IReadOnlyList<FaultStats> Faults,
    IReadOnlyList<MechanismTime> EngineTime)
{
    /// <summary>What <see cref="MetadataBytes"/> is made of, measured with it: the parts add up to it to the byte.</summary>
    public MetadataParts Metadata { get; init; } = MetadataParts.None;

    /// <summary>
    /// The most metadata the host has held since it was connected: measured at the end of each phase of every pass (when
    /// the sharing and similarity tables and the pass's buffers are fullest, before the pass gives them back; on Xen, whose
    /// pager keeps its metadata across passes, at each pass's end) and in every snapshot, so never below
    /// <see cref="MetadataBytes"/>. <see cref="MetadataBytes"/> is what is held now, which between
    /// passes leaves out what passes hold only while they run. What a host needs room for is this figure.
    /// </summary>
    public long MetadataPeakBytes { get; init; }

    /// <summary>What <see cref="MetadataPeakBytes"/> was made of when it was measured (its parts add up to it).</summary>
    public MetadataParts MetadataPeak { get; init; } = MetadataParts.None;

    /// <summary>Native bytes the compact store holds in slabs (patches and compressed pages, with their slack).</summary>
    public long StoreAllocatedBytes { get; init; }
    /// <summary>Bytes of the blobs themselves.</summary>
    public long StoreStoredBytes { get; init; }
    public long StoreBlobs { get; init; }
    /// <summary>(allocated - stored) / allocated: what packing loses, counted against the savings.</summary>
    public double StoreFragmentation { get; init; }

    /// <summary>
    /// Shared frames held compressed: one blob each, named by every page that shared the frame (not counted in
    /// <see cref="SharedFrames"/>, which are frames in memory).
    /// </summary>
    public long SharedCompressedFrames { get; init; }

    /// <summary>
    /// Page groups that hold at least one live member (their streams are in the store's bytes, or in the swap file): groups
    /// of long-cold pages of one domain, and groups of shared blobs (<see cref="SharedBlobGroups"/>).
    /// </summary>
    public long PageGroups { get; init; }

    /// <summary>
    /// Of <see cref="PageGroups"/>, those whose members are shared blobs (compressed shared frames, see
    /// <see cref="SharedCompressedFrames"/>) compressed together once their pages stayed cold.
    /// </summary>
    public long SharedBlobGroups { get; init; }

    /// <summary>Of <see cref="PageGroups"/>, those whose stream the reclaimer wrote to the swap file (their pages hold no memory).</summary>
    public long PageGroupsInSwap { get; init; }

    /// <summary>CPU time (user + system) all engine passes on this host have used.</summary>
    public TimeSpan EngineCpuTime { get; init; }
    public string? SwapPath { get; init; }
    public long SwapBytes { get; init; }
    /// <summary>
    /// Bytes of the swap file in use: the pages paged out one by one (<see cref="DomainPageStats.SwappedPages"/>, 4096 bytes
    /// each) and the slots of the page groups' streams written there (<see cref="SwapGroupBytes"/>).
    /// </summary>
    public long SwapUsedBytes { get; init; }

    /// <summary>Of <see cref="SwapUsedBytes"/>, the slots that hold page groups' streams (<see cref="PageGroupsInSwap"/>).</summary>
    public long SwapGroupBytes { get; init; }
    /// <summary>Pages written to swap (page-in faults are counted under Faults as SwapIn).</summary>
    public long PageOuts { get; init; }
    /// <summary>Page-out cost per page (write + fdatasync of its batch, divided over the batch).</summary>
    public TimeSpan PageOutP50 { get; init; }
    public TimeSpan PageOutP99 { get; init; }
    public long SwapWriteFailures { get; init; }
    public string? LastSwapWriteError { get; init; }
    public long ReclaimRuns { get; init; }
    /// <summary>
    /// Bytes of the crash journals of QEMU domains: files on disk (not memory used), holding every page the engine took
    /// out of a guest so that a restarted engine can serve it (docs/QEMU.md, "Crash safety").
    /// </summary>
    public long JournalBytes { get; init; }
    /// <summary>Journal records that could not be written: each left its page in the guest (nothing lost, nothing saved).</summary>
    public long JournalFailures { get; init; }
    /// <summary>Why the last page-out failed (the swap file is reported apart, in LastSwapWriteError), or null: "ErrorId: message".</summary>
    public string? LastReclaimError { get; init; }
    /// <summary>Why the last journal record of any QEMU domain could not be written, or null.</summary>
    public string? LastJournalError { get; init; }
    /// <summary>
    /// Xen: errors the pager's service thread met while it served the guests' page-ins, since the host was connected. Each
    /// left a guest's request unanswered, so that vCPU stays paused on the page (a copy that fails its checksum:
    /// XenPageCorrupt; a load Xen refused), or kept the thread from the ring for a moment; the other requests go on
    /// being served. On an embedded host, the faults of its QEMU guests the engine could not serve (a page whose copy and
    /// crash journal record both fail their checksums, no memory under the limit): that guest thread waits on the page, the
    /// others are served on; any other access that fails fails the call or the Invoke-DEWorkload worker that made it.
    /// </summary>
    public long PagerFailures { get; init; }
    /// <summary>The last of <see cref="PagerFailures"/> as "ErrorId: message" (naming the domain and gfn), or null.</summary>
    public string? LastPagerError { get; init; }
    /// <summary>Accesses or loads that failed because the host was out of memory.</summary>
    public long OutOfMemoryEvents { get; init; }

    public long FrameBytes => FramesInUse * Memory.PageGeometry.PageSize;

    /// <summary>
    /// Bytes of domains' pages the guests never populated (an empty domain's untouched pages): not in
    /// <see cref="GuestBytes"/>, never counted as saved.
    /// </summary>
    public long UntouchedBytes { get; init; }

    /// <summary>The sum of every domain's BytesUsed: the frames and stored bytes charged to the domains' pages.</summary>
    public long DomainsUsedBytes { get; init; }

    /// <summary>What the host holds for its guests: frames in use, the store's slabs, and engine metadata.</summary>
    public long MemoryUsedBytes => FrameBytes + StoreAllocatedBytes + MetadataBytes;

    /// <summary>The store's slabs not filled by blobs (what packing loses): allocated minus stored.</summary>
    public long StoreSlackBytes => StoreAllocatedBytes - StoreStoredBytes;

    /// <summary>
    /// Frames and stored bytes charged to no domain's page: frames and blobs in flight while a pass or a guest write runs
    /// during the snapshot. 0 at rest; so memory used = domains' bytes + store slack + metadata + this, to the byte.
    /// </summary>
    public long UnchargedBytes => FrameBytes + StoreStoredBytes - DomainsUsedBytes;

    /// <summary>Guest memory minus memory used (metadata included): what the guests have that no machine memory holds.</summary>
    public long SavedBytes => GuestBytes - MemoryUsedBytes;

    public double SavingsPercent => GuestBytes == 0 ? 0 : Math.Round(100.0 * SavedBytes / GuestBytes, 2);
}
