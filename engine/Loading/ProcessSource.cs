using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using static DifferenceEngine.Loading.LoadGeometry;

namespace DifferenceEngine.Loading;

/// <summary>
/// A snapshot of a live Linux process, read through /proc/PID/mem, and its shared mappings of regular files (shared
/// memory: tmpfs, memfd, SysV, shared anonymous) through /proc/PID/map_files, so a page that has left the file since the
/// layout reads as zeros without the read allocating it there (the snapshot never changes the process). Its guest-physical space holds only the pages that
/// were resident (present or swapped, per /proc/PID/pagemap) when it was opened: the resident runs of the readable
/// mappings, in address order, on consecutive gfns. Pages the process never touched are not laid out at all (they are
/// counted in <see cref="LoadReport.PagesNotResident"/>). When pagemap cannot be read, every page of every readable
/// mapping is laid out instead, each mapping starting on a new gfn, and <see cref="Description"/> says so.
/// </summary>
[SkipLocalsInit]
internal sealed class ProcessSource : MemorySource
{
    private const ulong PagePresent = 1UL << 63;
    private const ulong PageSwapped = 1UL << 62;

    /// <summary>pagemap entries read per I/O while laying out (8 bytes each: one 1 MiB buffer).</summary>
    private const int PageMapChunkEntries = ChunkBytes / sizeof(ulong);

    private readonly int _pid;
    private readonly SafeFileHandle _mem;
    private readonly MapsRegion[] _regions;

    /// <summary>The runs of the layout, in address order; those of region i are [_regionFirstRun[i], _regionFirstRun[i + 1]).</summary>
    private readonly Run[] _runs;
    private readonly int[] _regionFirstRun;
    private readonly long _pagesNotResident;

    private ProcessSource(int pid, string description, SafeFileHandle mem, Layout layout)
    {
        _pid = pid;
        _mem = mem;
        _regions = layout.Regions;
        _runs = layout.Runs;
        _regionFirstRun = layout.RegionFirstRun;
        _pagesNotResident = layout.PagesNotResident;
        UsesPageMap = layout.UsesPageMap;
        PageCount = layout.PageCount;
        Description = description;
    }

    public override MemorySourceFormat Format => MemorySourceFormat.Process;

    /// <summary>"pid 123 (sleep)"; with ", all mapped pages: REASON" appended when pagemap was not used.</summary>
    public override string Description { get; }

    /// <summary>
    /// The process's resident pages at open (present or swapped) that lie in readable mappings; without pagemap, every
    /// page of every readable mapping.
    /// </summary>
    public override long PageCount { get; }

    /// <summary>Whether the layout holds only resident pages; without pagemap it holds every mapped page.</summary>
    internal bool UsesPageMap { get; }

    /// <param name="pid">The process.</param>
    /// <param name="onLinux">Whether /proc can be trusted to be Linux's.</param>
    /// <param name="usePageMap">Off only in tests, to lay out every page and meet the regions that fail (pagemap hides [vvar]).</param>
    /// <param name="cancellationToken">Checked while pagemap is read (a piece of 8 bytes per page at a time).</param>
    public static ProcessSource Open(int pid, bool onLinux, bool usePageMap = true, CancellationToken cancellationToken = default)
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

        // The files below are opened by pid one after another; a process that exits and is reaped in between leaves its pid
        // to the next process made, whose memory would be read through the first one's maps. The pidfd names this process
        // whatever becomes of its pid: if it is still alive once everything is open, every file opened was its own.
        using SafeFileHandle? pidFd = Qemu.LinuxNative.OpenPidFd(pid);
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

        OpenStage?.Invoke(pid, "maps");
        SafeFileHandle mem = OpenProcFile(pid, "mem");
        try
        {
            MapsRegion[] regions = [.. maps.Where(r => r.Readable)];
            if (regions.Length == 0)
            {
                throw NoMemory(pid, name, "readable memory");
            }

            Layout? layout = null;
            string? fallback;
            if (!usePageMap)
            {
                fallback = "pagemap not used";
            }
            else if (Environment.SystemPageSize != PageSize)
            {
                // pagemap has one entry per kernel page, and a kernel page is not a guest page.
                fallback = $"kernel pages are {Environment.SystemPageSize} bytes";
            }
            else
            {
                layout = TryResidentLayout(pid, name, regions, cancellationToken);
                fallback = layout is null ? "pagemap unreadable" : null;
            }

            layout ??= MappedLayout(pid, name, regions);
            OpenStage?.Invoke(pid, "opened");
            if (pidFd is not null && Qemu.LinuxNative.HasExited(pidFd))
            {
                throw NotFound(pid, "exited while being opened");
            }

            string description = fallback is null ? $"pid {pid} ({name})" : $"pid {pid} ({name}), all mapped pages: {fallback}";
            return new ProcessSource(pid, description, mem, layout);
        }
        catch
        {
            mem.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Tests only: runs with the pid after the maps are read ("maps") and once every file is open, before the pidfd's
    /// check ("opened"): a test's process exits there.
    /// </summary>
    internal static Action<int, string>? OpenStage;

    /// <summary>Maps the exceptions of opening a /proc file to the loader's error ids.</summary>
    internal static DEException OpenFailure(int pid, string file, Exception e) => e switch
    {
        FileNotFoundException or DirectoryNotFoundException => NotFound(pid, "exited while being opened"),
        _ when !Directory.Exists($"/proc/{pid}") => NotFound(pid, "exited while being opened"),
        // A zombie has no memory either (and no VmSize line, which is how a kernel thread is told).
        _ when HasExited(pid) => NotFound(pid, "exited while being opened"),
        // A kernel thread is alive but has no user memory: opening its mem file fails with ESRCH as root and EACCES
        // for anyone else. Either way that is the reason to give, not a permission the caller could get.
        _ when IsKernelThread(pid) => new DEException("ProcessUnreadable", DEErrorKind.ReadError,
            $"Cannot read process {pid}: it is a kernel thread, which has no user memory to snapshot.", pid, e),
        UnauthorizedAccessException => new DEException("ProcessUnreadable", DEErrorKind.PermissionDenied,
            $"Cannot read /proc/{pid}/{file}: permission denied. Reading another user's process needs its owner, " +
            "root or CAP_SYS_PTRACE, and a Yama ptrace_scope that allows it.", pid, e),
        _ => new DEException("ProcessUnreadable", DEErrorKind.ReadError, $"Cannot read /proc/{pid}/{file}: {e.Message}", pid, e),
    };

    /// <summary>True when /proc/PID/status shows no user address space (kernel threads have no VmSize line).</summary>
    private static bool IsKernelThread(int pid)
    {
        try
        {
            return !File.ReadLines($"/proc/{pid}/status").Any(l => l.StartsWith("VmSize:", StringComparison.Ordinal));
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>One run of consecutive resident pages of a region, laid out from <see cref="FirstGfn"/> on.</summary>
    private readonly record struct Run(ulong Start, long Pages, long FirstGfn);

    private sealed record Layout(MapsRegion[] Regions, Run[] Runs, int[] RegionFirstRun, long PageCount, long PagesNotResident, bool UsesPageMap);

    /// <summary>Every page of every readable region: one run per region.</summary>
    private static Layout MappedLayout(int pid, string name, MapsRegion[] regions)
    {
        var runs = new Run[regions.Length];
        var firstRun = new int[regions.Length + 1];
        long pages = 0;
        for (int i = 0; i < regions.Length; i++)
        {
            long length = (long)PagesFor(regions[i].Length);
            runs[i] = new Run(regions[i].Start, length, pages);
            firstRun[i] = i;
            pages = CheckSize(pid, name, pages, length);
        }

        firstRun[regions.Length] = regions.Length;
        return new Layout(regions, runs, firstRun, pages, 0, UsesPageMap: false);
    }

    /// <summary>The resident runs of every readable region, per pagemap; null when pagemap cannot be read.</summary>
    private static Layout? TryResidentLayout(int pid, string name, MapsRegion[] regions, CancellationToken cancellationToken = default)
    {
        SafeFileHandle? pageMap = TryOpenProcFile(pid, "pagemap");
        if (pageMap is null)
        {
            return null;
        }

        byte[] buffer = ArrayPool<byte>.Shared.Rent(PageMapChunkEntries * sizeof(ulong));
        try
        {
            var runs = new List<Run>();
            var firstRun = new int[regions.Length + 1];
            long pages = 0;
            long notResident = 0;
            for (int i = 0; i < regions.Length; i++)
            {
                firstRun[i] = runs.Count;
                MapsRegion region = regions[i];
                if (region.End > long.MaxValue)
                {
                    // Above the user address space ([vsyscall], readable on kernels booted with vsyscall=emulate): pagemap
                    // has no entries there (a read gives 0 bytes, which would mean the process is gone), and no page of
                    // it is read (CopyRegion).
                    continue;
                }

                ulong regionPages = PagesFor(region.Length);
                ulong runStart = 0;
                long runPages = 0;
                for (ulong first = 0; first < regionPages; first += PageMapChunkEntries)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    int count = (int)Math.Min(PageMapChunkEntries, regionPages - first);
                    ulong address = region.Start + (first << PageShift);
                    Span<byte> bytes = buffer.AsSpan(0, count * sizeof(ulong));
                    if (ReadUntilFailure(pid, pageMap, bytes, (long)(address >> PageShift) * sizeof(ulong)) != bytes.Length)
                    {
                        return null;
                    }

                    ReadOnlySpan<ulong> entries = MemoryMarshal.Cast<byte, ulong>(bytes);
                    for (int page = 0; page < count; page++)
                    {
                        if ((entries[page] & (PagePresent | PageSwapped)) == 0)
                        {
                            notResident++;
                            if (runPages > 0)
                            {
                                runs.Add(new Run(runStart, runPages, pages));
                                pages = CheckSize(pid, name, pages, runPages);
                                runPages = 0;
                            }
                        }
                        else if (runPages++ == 0)
                        {
                            runStart = address + ((ulong)page << PageShift);
                        }
                    }
                }

                if (runPages > 0)
                {
                    runs.Add(new Run(runStart, runPages, pages));
                    pages = CheckSize(pid, name, pages, runPages);
                }
            }

            firstRun[regions.Length] = runs.Count;
            if (pages == 0)
            {
                throw NoMemory(pid, name, "resident memory");
            }

            return new Layout(regions, [.. runs], firstRun, pages, notResident, UsesPageMap: true);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            pageMap.Dispose();
        }
    }

    private static long CheckSize(int pid, string name, long pages, long more)
    {
        pages += more;
        if (pages > MaxGuestBytes >> PageShift)
        {
            throw LoadErrors.TooLarge($"Process {pid} ({name})", (ulong)pages << PageShift, pid);
        }

        return pages;
    }

    private static DEException NoMemory(int pid, string name, string what)
    {
        if (HasExited(pid))
        {
            return NotFound(pid, "has exited (a zombie has no memory)");
        }

        return new DEException("ImageEmpty", DEErrorKind.InvalidData, $"Process {pid} ({name}) has no {what}: a kernel thread?", pid);
    }

    private protected override LoadReport CopyPages(IGuestPageSink sink, CancellationToken cancellationToken)
    {
        var counters = new LoadCounters { PagesNotResident = _pagesNotResident };
        byte[] buffer = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        try
        {
            for (int i = 0; i < _regions.Length; i++)
            {
                CopyRegion(i, buffer, sink, counters, cancellationToken);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        return counters.ToReport(Format);
    }

    private void CopyRegion(int index, byte[] buffer, IGuestPageSink sink, LoadCounters counters, CancellationToken cancellationToken)
    {
        MapsRegion region = _regions[index];
        ReadOnlySpan<Run> runs = _runs.AsSpan(_regionFirstRun[index], _regionFirstRun[index + 1] - _regionFirstRun[index]);
        long laidOut = 0;
        foreach (Run run in runs)
        {
            laidOut += run.Pages << PageShift;
        }

        if (region.End > long.MaxValue)
        {
            // pread takes a signed offset; no x86-64 or arm64 user mapping lives up there.
            if (laidOut > 0)
            {
                counters.Skip($"{region}: beyond the readable offset range", laidOut);
            }

            return;
        }

        // A shared mapping's pages are its file's. Read through the process, a page that left the file after the layout
        // was made (punched out, truncated) would be allocated anew, as zeros, in shared memory (tmpfs, memfd, SysV,
        // shared anonymous): the snapshot would change the process it reads, and a userfaultfd pager of that memory
        // (the engine's own QEMU backend keeps guest RAM mapped like this) would find the page filled behind its back.
        // Read through the file, a hole reads as zeros and stays a hole.
        SafeFileHandle source = _mem;
        long delta = 0;
        SafeFileHandle? file = null;
        if (region.Shared)
        {
            file = OpenMappedFile(region, out string? why);
            if (why is not null)
            {
                if (laidOut > 0)
                {
                    counters.Skip($"{region}: {why}", laidOut);
                }

                return;
            }

            if (file is not null)
            {
                source = file;
                delta = (long)region.FileOffset - (long)region.Start;
            }
        }

        long unreadable = 0;
        try
        {
            foreach (Run run in runs)
            {
                unreadable += CopyRun(run, source, delta, file is not null, buffer, sink, counters, cancellationToken);
            }
        }
        finally
        {
            file?.Dispose();
        }

        if (unreadable > 0)
        {
            counters.Skip($"{region}: I/O error ({unreadable} of {laidOut} bytes unreadable)", unreadable);
        }
        else
        {
            counters.RegionsRead++;
        }
    }

    /// <summary>
    /// Opens the file behind a shared mapping (/proc/PID/map_files) when it is a regular file, whose holes a read
    /// through the mapping would fill; null with <paramref name="why"/> null for any other kind (a device's memory: read
    /// through the process as before, nothing to fill); null with the reason to skip the mapping when its file cannot
    /// be reached.
    /// </summary>
    private unsafe SafeFileHandle? OpenMappedFile(MapsRegion region, out string? why)
    {
        why = null;
        string path = $"/proc/{_pid}/map_files/{region.Start:x}-{region.End:x}";
        byte* stat = stackalloc byte[Qemu.LinuxNative.StatxBufferSize];
        if (Qemu.LinuxNative.Statx(Qemu.LinuxNative.AT_FDCWD, path, 0, Qemu.LinuxNative.STATX_TYPE, stat) != 0)
        {
            int errno = Qemu.LinuxNative.Errno;
            why = errno is Qemu.LinuxNative.EPERM or Qemu.LinuxNative.EACCES ? WhyNotWithoutMapFiles(region)
                : $"unmapped since the snapshot was opened ({Qemu.LinuxNative.Describe(errno)})";
            return null;
        }

        if ((*(ushort*)(stat + Qemu.LinuxNative.StatxModeOffset) & Qemu.LinuxNative.S_IFMT) != Qemu.LinuxNative.S_IFREG)
        {
            return null;
        }

        try
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            why = $"its file cannot be opened ({e.Message})";
            return null;
        }
    }

    /// <summary>
    /// Without the right to open /proc/PID/map_files (root's, CAP_CHECKPOINT_RESTORE): why a shared mapping is left out,
    /// or null to read it through the process. A file on a disk's file system is read through the process as any mapping
    /// (a hole of it reads as zeros there and stays a hole in the file); shared memory, and any file with no device of
    /// its own (<see cref="MapsRegion.OnDevicelessFileSystem"/>), is left out: read through the process, a page punched
    /// out of it meanwhile would be filled with zeros in the process's memory.
    /// </summary>
    internal static string? WhyNotWithoutMapFiles(MapsRegion region) => region.OnDevicelessFileSystem
        ? "shared memory (or a file on a file system with no device of its own), which is read through its file, and " +
          "/proc/PID/map_files needs root (CAP_CHECKPOINT_RESTORE); read through the process, a page punched out meanwhile " +
          "would be filled with zeros in the process's memory"
        : null;

    /// <summary>
    /// Copies a run a chunk at a time, from <paramref name="source"/> at the run's address plus <paramref name="delta"/>
    /// (/proc/PID/mem, or a shared mapping's file); a page that fails to read, or lies past the file's end, is left out.
    /// Returns the unreadable bytes.
    /// </summary>
    private long CopyRun(Run run, SafeFileHandle source, long delta, bool isFile, byte[] buffer, IGuestPageSink sink,
        LoadCounters counters, CancellationToken cancellationToken)
    {
        long unreadable = 0;
        long page = 0;
        while (page < run.Pages)
        {
            cancellationToken.ThrowIfCancellationRequested();

            // One read per chunk; after a failure (EIO, e.g. [vvar] or a page unmapped since the open) go on past the failing page.
            int count = (int)Math.Min(ChunkPages, run.Pages - page);
            Span<byte> chunk = buffer.AsSpan(0, count << PageShift);
            long offset = (long)(run.Start + ((ulong)page << PageShift)) + delta;
            int whole = ReadUntilFailure(_pid, source, chunk, offset, isFile) >> PageShift;
            for (int k = 0; k < whole; k++)
            {
                sink.SetPage(run.FirstGfn + page + k, chunk.Slice(k << PageShift, PageSize));
            }

            counters.PagesLoaded += whole;
            page += whole;
            if (whole < count)
            {
                unreadable += PageSize;
                page++;
            }
        }

        return unreadable;
    }

    /// <summary>
    /// Reads until the buffer is full or a read fails; returns the bytes read before the failure. <paramref name="file"/>
    /// is /proc/PID/mem, or with <paramref name="isFile"/> a shared mapping's file, whose end ends the read.
    /// </summary>
    private static int ReadUntilFailure(int pid, SafeFileHandle file, Span<byte> buffer, long offset, bool isFile = false)
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

            if (n == 0 && isFile)
            {
                // The file ends here. Its last page reads, through the mapping, as the file's bytes and zeros after them;
                // pages wholly past the end are no longer the mapping's (truncated since the layout was made).
                int whole = (done + PageSize - 1) & ~(PageSize - 1);
                buffer[done..whole].Clear();
                return whole;
            }

            if (n == 0)
            {
                // An unmapped or unreadable address gives EIO; 0 bytes means the address space itself is gone.
                throw NotFound(pid, "exited (or replaced itself with exec) during the snapshot");
            }

            done += n;
        }

        return done;
    }

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
            // The process sets its own name (prctl PR_SET_NAME): a control character in it (a terminal's escape) would
            // reach the progress bar, verbose lines and errors as it is.
            string comm = File.ReadAllText(dir + "/comm").TrimEnd('\n');
            return string.Create(comm.Length, comm, (chars, from) =>
            {
                for (int i = 0; i < chars.Length; i++) chars[i] = char.IsControl(from[i]) ? '?' : from[i];
            });
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

    private protected override void ReleaseHandles() => _mem.Dispose();
}
