namespace DifferenceEngine.Loading;

/// <summary>The mutable tally a copy keeps while it runs; frozen into a <see cref="LoadReport"/> at the end.</summary>
internal sealed class LoadCounters
{
    public long PagesLoaded;
    public long PagesNotResident;
    public long PagesZeroFilled;
    public int RegionsRead;
    public int RegionsSkipped;
    public long BytesSkipped;
    public readonly List<string> SkippedRegions = [];

    public void Skip(string description, long bytes)
    {
        RegionsSkipped++;
        BytesSkipped += bytes;
        SkippedRegions.Add(description);
    }

    public LoadReport ToReport(MemorySourceFormat format) =>
        new(format, PagesLoaded, PagesNotResident, RegionsRead, RegionsSkipped, BytesSkipped, SkippedRegions.AsReadOnly(), PagesZeroFilled);
}
