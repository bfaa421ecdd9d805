namespace DifferenceEngine.Loading;

/// <summary>What one <see cref="MemorySource.CopyTo"/> did: pages passed to the sink, and what it had to leave out.</summary>
public sealed class LoadReport
{
    internal LoadReport(
        MemorySourceFormat format,
        long pagesLoaded,
        long pagesNotResident,
        int regionsRead,
        int regionsSkipped,
        long bytesSkipped,
        IReadOnlyList<string> skippedRegions,
        long pagesZeroFilled = 0)
    {
        PagesZeroFilled = pagesZeroFilled;
        Format = format;
        PagesLoaded = pagesLoaded;
        PagesNotResident = pagesNotResident;
        RegionsRead = regionsRead;
        RegionsSkipped = regionsSkipped;
        BytesSkipped = bytesSkipped;
        SkippedRegions = skippedRegions;
    }

    public MemorySourceFormat Format { get; }

    /// <summary>Pages passed to the sink.</summary>
    public long PagesLoaded { get; }

    /// <summary>
    /// Pages the source describes but holds no bytes for, never passed to the sink: a core's segment tail
    /// past p_filesz and a process core's segments not dumped (zero pages inside the layout), and a live
    /// process's mapped pages that were not resident when it was opened (left out of the layout).
    /// </summary>
    public long PagesNotResident { get; }

    /// <summary>
    /// Of <see cref="PagesNotResident"/>, the pages inside the domain that therefore read as zeros: a machine core's
    /// segment tails past p_filesz (a dump that left memory out). A process's pages left out are outside its layout,
    /// so they are never counted here. New-DEDomain warns when this is not 0.
    /// </summary>
    public long PagesZeroFilled { get; }

    /// <summary>Regions (the image, PT_LOAD segments with data, process mappings) read without any failure.</summary>
    public int RegionsRead { get; }

    /// <summary>Regions with at least one part that could not be read; that part stays zero.</summary>
    public int RegionsSkipped { get; }

    /// <summary>Bytes of the skipped parts.</summary>
    public long BytesSkipped { get; }

    /// <summary>One short line per skipped region, e.g. "7ffd1000-7ffd5000 [vvar]: I/O error (16384 of 16384 bytes unreadable)".</summary>
    public IReadOnlyList<string> SkippedRegions { get; }

    public override string ToString() =>
        $"{Format}: {PagesLoaded} pages loaded, {PagesNotResident} not resident, " +
        $"{RegionsRead} regions read, {RegionsSkipped} skipped ({BytesSkipped} bytes)";
}
