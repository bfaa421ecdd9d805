using static DifferenceEngine.Loading.LoadGeometry;

namespace DifferenceEngine.Loading;

/// <summary>
/// Where a core's PT_LOAD segments go in guest-physical space. A machine core (QEMU) places them at p_paddr;
/// a Linux process core has p_paddr 0 everywhere and gets its dumped bytes packed one segment after another.
/// </summary>
internal sealed class ElfLayout
{
    private ElfLayout(GuestExtent[] extents, long pageCount, long pagesWithMemory, long pagesNotDumped, bool processLayout)
    {
        Extents = extents;
        PageCount = pageCount;
        PagesWithMemory = pagesWithMemory;
        PagesNotDumped = pagesNotDumped;
        ProcessLayout = processLayout;
    }

    /// <summary>The segments that have file bytes, sorted by address.</summary>
    public GuestExtent[] Extents { get; }

    public long PageCount { get; }

    /// <summary>Distinct pages some segment's memory (p_memsz) touches; those without file bytes are not resident.</summary>
    public long PagesWithMemory { get; }

    /// <summary>Pages of a process core's segments that the dumper left out (p_memsz past p_filesz); they take no space.</summary>
    public long PagesNotDumped { get; }

    public bool ProcessLayout { get; }

    public static ElfLayout Build(IReadOnlyList<ElfProgramHeader> loads, string path, long fileLength)
    {
        foreach (ElfProgramHeader ph in loads)
        {
            ulong length = (ulong)fileLength;
            if (ph.Offset > length || ph.FileSize > length - ph.Offset)
            {
                throw new DEException("ElfSegmentPastEnd", DEErrorKind.InvalidData,
                    $"ELF core '{path}': PT_LOAD segment {ph.Index} holds file bytes 0x{ph.Offset:x}-0x{ph.Offset + ph.FileSize:x} " +
                    $"(p_offset 0x{ph.Offset:x} + p_filesz 0x{ph.FileSize:x}) but the file ends at 0x{length:x}: it is truncated.",
                    path);
            }
        }

        if (loads.All(ph => ph.MemorySize == 0 && ph.FileSize == 0))
        {
            throw new DEException("ImageEmpty", DEErrorKind.InvalidData,
                $"ELF core '{path}' has no PT_LOAD segment with memory in it.", path);
        }

        // gcore and the kernel write p_paddr = 0 for process cores: no physical layout to follow.
        bool processLayout = loads.Count > 1 && loads.All(ph => ph.PhysicalAddress == 0);
        return processLayout ? Packed(loads, path) : Physical(loads, path);
    }

    /// <summary>Most address space a Linux process can have (5-level paging: 57-bit virtual addresses).</summary>
    private const ulong MaxProcessAddressSpace = 1UL << 57;

    private static ElfLayout Packed(IReadOnlyList<ElfProgramHeader> loads, string path)
    {
        // Only dumped bytes are laid out: a process reserves far more address space than it fills, and memory
        // a dumper left out is unknown, not zero. Each segment starts on a new page, in file order.
        var extents = new List<GuestExtent>(loads.Count);
        long cursor = 0, notDumped = 0;
        foreach (ElfProgramHeader ph in loads)
        {
            // No process has more address space than 5-level paging gives (2^57 bytes): a larger p_memsz is damage.
            if (ph.MemorySize > MaxProcessAddressSpace)
            {
                throw new DEException("ElfSegmentInvalid", DEErrorKind.InvalidData,
                    $"ELF core '{path}': PT_LOAD segment {ph.Index} claims 0x{ph.MemorySize:x} bytes of memory (p_memsz), more than any process's address space (0x{MaxProcessAddressSpace:x}).",
                    path);
            }

            long filePages = PagesFor((long)ph.FileSize);
            ulong missing = PagesFor(ph.MemorySize) - Math.Min(PagesFor(ph.MemorySize), (ulong)filePages);
            notDumped = (long)Math.Min((ulong)long.MaxValue, (ulong)notDumped + missing);
            if (ph.FileSize == 0)
            {
                continue;
            }

            extents.Add(new GuestExtent(cursor, (long)ph.Offset, (long)ph.FileSize));
            cursor += filePages << PageShift;
            if (cursor > MaxGuestBytes)
            {
                throw LoadErrors.TooLarge($"ELF core '{path}'", (ulong)cursor, path);
            }
        }

        long pages = cursor >> PageShift;
        if (pages == 0)
        {
            // Memory in every segment, and none of it dumped: nothing to load (a domain cannot have 0 pages).
            throw new DEException("ImageEmpty", DEErrorKind.InvalidData,
                $"ELF core '{path}' is a process core whose dumper left every segment's memory out (p_filesz 0): it holds no page.", path);
        }

        return new ElfLayout([.. extents], pages, pages, notDumped, processLayout: true);
    }

    private static ElfLayout Physical(IReadOnlyList<ElfProgramHeader> loads, string path)
    {
        var placed = loads
            .Where(ph => Math.Max(ph.MemorySize, ph.FileSize) > 0)
            .OrderBy(ph => ph.PhysicalAddress)
            .ThenBy(ph => ph.Index)
            .ToArray();

        var extents = new List<GuestExtent>(placed.Length);
        ulong highestEnd = 0;
        long pagesWithMemory = 0;
        long lastPage = -1;
        ElfProgramHeader? previous = null;
        foreach (ElfProgramHeader ph in placed)
        {
            // A segment's memory is at least its file bytes, even when a writer got p_memsz wrong.
            ulong size = Math.Max(ph.MemorySize, ph.FileSize);
            if (ph.PhysicalAddress > (ulong)MaxGuestBytes || size > (ulong)MaxGuestBytes - ph.PhysicalAddress)
            {
                ulong claimed = ph.PhysicalAddress > ulong.MaxValue - size ? ulong.MaxValue : ph.PhysicalAddress + size;
                throw LoadErrors.TooLarge($"ELF core '{path}'", claimed, path);
            }

            ulong end = ph.PhysicalAddress + size;
            if (previous is { } p && p.PhysicalAddress + Math.Max(p.MemorySize, p.FileSize) > ph.PhysicalAddress)
            {
                throw new DEException("ElfOverlappingSegments", DEErrorKind.InvalidData,
                    $"ELF core '{path}': PT_LOAD segments {p.Index} (guest-physical 0x{p.PhysicalAddress:x}-0x{p.PhysicalAddress + Math.Max(p.MemorySize, p.FileSize):x}) " +
                    $"and {ph.Index} (0x{ph.PhysicalAddress:x}-0x{end:x}) overlap.",
                    path);
            }

            long firstPage = (long)(ph.PhysicalAddress >> PageShift);
            long endPage = (long)((end - 1) >> PageShift);
            pagesWithMemory += endPage - firstPage + 1 - (firstPage == lastPage ? 1 : 0);
            lastPage = endPage;

            if (ph.FileSize > 0)
            {
                extents.Add(new GuestExtent((long)ph.PhysicalAddress, (long)ph.Offset, (long)ph.FileSize));
            }

            highestEnd = Math.Max(highestEnd, end);
            previous = ph;
        }

        return new ElfLayout([.. extents], (long)PagesFor(highestEnd), pagesWithMemory, 0, processLayout: false);
    }
}
