namespace DifferenceEngine.Stats;

/// <summary>
/// The most metadata a host has held (<see cref="HostStats.MetadataPeakBytes"/>, <see cref="HostStats.MetadataPeak"/>): each
/// measure handed to <see cref="Note"/> is kept when it holds more than the peak so far. Thread-safe.
/// </summary>
internal sealed class MetadataPeak
{
    private MetadataParts? _peak;

    /// <summary>Keeps <paramref name="now"/> as the peak when it holds more than the peak so far; returns the peak.</summary>
    public MetadataParts Note(MetadataParts now)
    {
        while (true)
        {
            var peak = Volatile.Read(ref _peak);
            if (peak is not null && peak.Total >= now.Total) return peak;
            if (Interlocked.CompareExchange(ref _peak, now, peak) == peak) return now;
        }
    }
}
