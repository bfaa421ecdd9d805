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
    public long FrameBytes => FramesInUse * Memory.PageGeometry.PageSize;

    /// <summary>What the host holds for its guests: frames in use plus engine metadata.</summary>
    public long MemoryUsedBytes => FrameBytes + MetadataBytes;

    /// <summary>Guest memory minus the frames that hold it.</summary>
    public long SavedBytes => GuestBytes - FrameBytes;

    public double SavingsPercent => GuestBytes == 0 ? 0 : Math.Round(100.0 * SavedBytes / GuestBytes, 2);
}
