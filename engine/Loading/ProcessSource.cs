using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using static DifferenceEngine.Loading.LoadGeometry;

namespace DifferenceEngine.Loading;

/// <summary>
/// A snapshot of a live Linux process: its readable mappings laid one after another in address order, each on a
/// new gfn, read through /proc/PID/mem. Pages the process never touched (per /proc/PID/pagemap) stay zero.
/// </summary>
[SkipLocalsInit]
internal sealed class ProcessSource : MemorySource
{
    private const ulong PagePresent = 1UL << 63;
    private const ulong PageSwapped = 1UL << 62;

    private readonly int _pid;
    private readonly SafeFileHandle _mem;
    private readonly SafeFileHandle? _pageMap;
    private readonly MapsRegion[] _regions;
    private readonly long[] _firstGfn;

    private ProcessSource(int pid, string name, SafeFileHandle mem, SafeFileHandle? pageMap, MapsRegion[] regions, long[] firstGfn, long pageCount)
    {
        _pid = pid;
        _mem = mem;
        _pageMap = pageMap;
        _regions = regions;
        _firstGfn = firstGfn;
        PageCount = pageCount;
        Description = $"pid {pid} ({name})";
    }

    public override MemorySourceFormat Format => MemorySourceFormat.Process;

    public override string Description { get; }

    public override long PageCount { get; }

    /// <summary>Whether pages are filtered by residency; without pagemap every page is read.</summary>
    internal bool UsesPageMap => _pageMap is not null;

    /// <param name="pid">The process.</param>
    /// <param name="onLinux">Whether /proc can be trusted to be Linux's.</param>
    /// <param name="usePageMap">Off only in tests, to read every page and meet the regions that fail (pagemap hides [vvar]).</param>
    public static ProcessSource Open(int pid, bool onLinux, bool usePageMap = true)
    {
        if (pid <= 0)
        {
            throw new DEException("ProcessIdInvalid", DEErrorKind.InvalidArgument, $"{pid} is not a process id: ids start at 1.", pid);
        }

        if (!onLinux)
        {
            throw new DEException("ProcessSnapshotUnsupported", DEErrorKind.NotImplemented,
                $"Snapshots of live processes read /proc/PID/mem and work on Linux only; this is {RuntimeInformation.OSDescription}.", pid);
        }

        string dir = $"/proc/{pid}";
        if (!Directory.Exists(dir))
        {
            throw NotFound(pid, "does not exist");
        }

        string name = ReadName(dir);
        List<MapsRegion> maps;
        try
        {
            using var reader = new StreamReader(dir + "/maps");
            maps = ProcMaps.Parse(reader);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw OpenFailure(pid, "maps", e);
        }

        SafeFileHandle mem = OpenProcFile(pid, "mem");
        SafeFileHandle? pageMap = null;
        try
        {
            // pagemap has one entry per kernel page; with pages other than 4 KiB, reading every page is simpler.
            if (usePageMap && Environment.SystemPageSize == PageSize)
            {
                pageMap = TryOpenProcFile(pid, "pagemap");
            }

            return Build(pid, name, mem, pageMap, maps);
        }
        catch
        {
            mem.Dispose();
            pageMap?.Dispose();
            throw;
        }
    }

    /// <summary>The gfn a virtual address of the process lands on, if it is in a readable mapping.</summary>
    internal bool TryGetGfn(ulong address, out long gfn)
    {
        int lo = 0, hi = _regions.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            MapsRegion r = _regions[mid];
            if (address < r.Start)
            {
                hi = mid - 1;
            }
            else if (address >= r.End)
            {
                lo = mid + 1;
            }
            else
            {
                gfn = _firstGfn[mid] + (long)((address - r.Start) >> PageShift);
                return true;
            }
        }

        gfn = -1;
        return false;
    }

    /// <summary>Maps the exceptions of opening a /proc file to the loader's error ids.</summary>
    internal static DEException OpenFailure(int pid, string file, Exception e) => e switch
    {
        FileNotFoundException or DirectoryNotFoundException => NotFound(pid, "exited while being opened"),
        UnauthorizedAccessException => new DEException("ProcessUnreadable", DEErrorKind.PermissionDenied,
            $"Cannot read /proc/{pid}/{file}: permission denied. Reading another user's process needs its owner, " +
            "root or CAP_SYS_PTRACE, and a Yama ptrace_scope that allows it.", pid, e),
        _ when !Directory.Exists($"/proc/{pid}") => NotFound(pid, "exited while being opened"),
        _ => new DEException("ProcessUnreadable", DEErrorKind.ReadError, $"Cannot read /proc/{pid}/{file}: {e.Message}", pid, e),
    };

    private static ProcessSource Build(int pid, string name, SafeFileHandle mem, SafeFileHandle? pageMap, List<MapsRegion> maps)
    {
        MapsRegion[] regions = [.. maps.Where(r => r.Readable)];
        if (regions.Length == 0)
        {
            if (HasExited(pid))
            {
                throw NotFound(pid, "has exited (a zombie has no memory)");
            }

            throw new DEException("ImageEmpty", DEErrorKind.InvalidData,
                $"Process {pid} ({name}) has no readable memory: a kernel thread?", pid);
        }

        var firstGfn = new long[regions.Length];
        ulong pages = 0;
        for (int i = 0; i < regions.Length; i++)
        {
            firstGfn[i] = (long)pages;
            pages += PagesFor(regions[i].Length);
            if (pages > (ulong)(MaxGuestBytes >> PageShift))
            {
                throw LoadErrors.TooLarge($"Process {pid} ({name})", pages << PageShift, pid);
            }
        }

        return new ProcessSource(pid, name, mem, pageMap, regions, firstGfn, (long)pages);
    }

    private protected override LoadReport CopyPages(IGuestPageSink sink, CancellationToken cancellationToken)
    {
        var counters = new LoadCounters();
        byte[] buffer = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        byte[] flags = ArrayPool<byte>.Shared.Rent(ChunkPages * sizeof(ulong));
        try
        {
            for (int i = 0; i < _regions.Length; i++)
            {
                CopyRegion(i, buffer, flags, sink, counters, cancellationToken);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            ArrayPool<byte>.Shared.Return(flags);
        }

        return counters.ToReport(Format);
    }

    private void CopyRegion(int index, byte[] buffer, byte[] flagBytes, IGuestPageSink sink, LoadCounters counters, CancellationToken cancellationToken)
    {
        MapsRegion region = _regions[index];
        long pages = (long)PagesFor(region.Length);
        if (region.End > long.MaxValue)
        {
            // pread takes a signed offset; no x86-64 or arm64 user mapping lives up there.
            counters.Skip($"{region}: beyond the readable offset range", (long)Math.Min(region.Length, long.MaxValue));
            return;
        }

        long unreadable = 0;
        for (long first = 0; first < pages; first += ChunkPages)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = (int)Math.Min(ChunkPages, pages - first);
            ulong address = region.Start + ((ulong)first << PageShift);
            ReadOnlySpan<ulong> entries = ReadPageMap(address, count, flagBytes);

            int page = 0;
            while (page < count)
            {
                if (!entries.IsEmpty && (entries[page] & (PagePresent | PageSwapped)) == 0)
                {
                    counters.PagesNotResident++;
                    page++;
                    continue;
                }

                int end = page + 1;
                while (end < count && (entries.IsEmpty || (entries[end] & (PagePresent | PageSwapped)) != 0))
                {
                    end++;
                }

                unreadable += CopyRun(address + ((ulong)page << PageShift), end - page, _firstGfn[index] + first + page, buffer, sink, counters);
                page = end;
            }
        }

        if (unreadable > 0)
        {
            counters.Skip($"{region}: I/O error ({unreadable} of {region.Length} bytes unreadable)", unreadable);
        }
        else
        {
            counters.RegionsRead++;
        }
    }

    /// <summary>Copies resident pages [address, +pages); a page that fails to read is left out. Returns the unreadable bytes.</summary>
    private long CopyRun(ulong address, int pages, long firstGfn, byte[] buffer, IGuestPageSink sink, LoadCounters counters)
    {
        long unreadable = 0;
        int page = 0;
        while (page < pages)
        {
            // One read for the whole run; after a failure (EIO, e.g. [vvar]) go on past the failing page.
            Span<byte> run = buffer.AsSpan(0, (pages - page) << PageShift);
            int whole = ReadMemory(address + ((ulong)page << PageShift), run) >> PageShift;
            for (int k = 0; k < whole; k++)
            {
                sink.SetPage(firstGfn + page + k, run.Slice(k << PageShift, PageSize));
            }

            counters.PagesLoaded += whole;
            page += whole;
            if (page < pages)
            {
                unreadable += PageSize;
                page++;
            }
        }

        return unreadable;
    }

    /// <summary>The pagemap entries of <paramref name="count"/> pages, or empty when they cannot be had (then every page is read).</summary>
    private ReadOnlySpan<ulong> ReadPageMap(ulong address, int count, byte[] flagBytes)
    {
        if (_pageMap is null)
        {
            return [];
        }

        Span<byte> bytes = flagBytes.AsSpan(0, count * sizeof(ulong));
        long offset = (long)(address >> PageShift) * sizeof(ulong);
        return ReadUntilFailure(_pageMap, bytes, offset) == bytes.Length ? MemoryMarshal.Cast<byte, ulong>(bytes) : [];
    }

    private int ReadMemory(ulong address, Span<byte> buffer) => ReadUntilFailure(_mem, buffer, (long)address);

    /// <summary>Reads until the buffer is full or a read fails; returns the bytes read before the failure.</summary>
    private int ReadUntilFailure(SafeFileHandle file, Span<byte> buffer, long offset)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n;
            try
            {
                n = RandomAccess.Read(file, buffer[done..], offset + done);
            }
            catch (IOException)
            {
                return done;
            }

            if (n == 0)
            {
                // An unmapped or unreadable address gives EIO; 0 bytes means the address space itself is gone.
                throw Vanished();
            }

            done += n;
        }

        return done;
    }

    private DEException Vanished() =>
        NotFound(_pid, "exited (or replaced itself with exec) during the snapshot");

    private static DEException NotFound(int pid, string what) =>
        new("ProcessNotFound", DEErrorKind.ObjectNotFound, $"Process {pid} {what}.", pid);

    private static SafeFileHandle OpenProcFile(int pid, string file)
    {
        try
        {
            return File.OpenHandle($"/proc/{pid}/{file}", FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw OpenFailure(pid, file, e);
        }
    }

    private static SafeFileHandle? TryOpenProcFile(int pid, string file)
    {
        try
        {
            return File.OpenHandle($"/proc/{pid}/{file}", FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string ReadName(string dir)
    {
        try
        {
            return File.ReadAllText(dir + "/comm").TrimEnd('\n');
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return "?";
        }
    }

    private static bool HasExited(int pid)
    {
        try
        {
            return File.ReadLines($"/proc/{pid}/status").Any(line => line.StartsWith("State:", StringComparison.Ordinal) && line.Contains('Z'));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return true;
        }
    }

    private protected override void ReleaseHandles()
    {
        _mem.Dispose();
        _pageMap?.Dispose();
    }
}
