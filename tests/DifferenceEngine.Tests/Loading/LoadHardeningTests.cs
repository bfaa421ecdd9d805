using System.Reflection;
using DifferenceEngine.Hosting;
using DifferenceEngine.Loading;

namespace DifferenceEngine.Tests.Loading;

/// <summary>
/// What a read-only audit of loading found (session 33): a process core with nothing dumped, a readable [vsyscall], an
/// error message that quoted an image's bytes, and opens that Ctrl-C could not stop.
/// </summary>
public sealed class LoadHardeningTests : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    /// <summary>
    /// A process core (two or more PT_LOADs, all p_paddr 0) whose every segment the dumper left out (p_filesz 0, p_memsz
    /// above 0) opened with 0 pages, and its load failed with MemorySizeInvalid, a bad argument that stopped New-DEDomain.
    /// </summary>
    [Fact]
    public void AProcessCoreWithNothingDumpedIsImageEmpty()
    {
        var writer = new ElfCoreWriter()
            .Add(0, [], memorySize: 0x1000, virtualAddress: 0x400000)
            .Add(0, [], memorySize: 0x2000, virtualAddress: 0x600000);
        string path = _temp.Write("nodump.core", writer.Build());
        var e = Assert.Throws<DEException>(() => MemorySource.OpenFile(path));
        Assert.Equal("ImageEmpty", e.ErrorId);
        Assert.Equal(DEErrorKind.InvalidData, e.Kind);
    }

    /// <summary>
    /// On a kernel booted with vsyscall=emulate, /proc/PID/maps has a readable [vsyscall] above the user address space,
    /// where pagemap gives 0 bytes: that read as "the process is gone", and every snapshot failed with ProcessNotFound.
    /// This kernel has it execute-only, so the line is given by hand.
    /// </summary>
    [Fact]
    public void AReadableVsyscallRegionDoesNotMakeALiveProcessNotFound()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var child = LiveProcess.Cat();
        List<MapsRegion> maps;
        using (var reader = new StreamReader($"/proc/{child.Id}/maps")) maps = ProcMaps.Parse(reader);
        Assert.True(ProcMaps.TryParseLine("ffffffffff600000-ffffffffff601000 r-xp 00000000 00:00 0                  [vsyscall]", out MapsRegion vsyscall));
        MapsRegion[] regions = [.. maps.Where(r => r.Readable && r.End <= long.MaxValue), vsyscall];
        MethodInfo layout = typeof(ProcessSource).GetMethod("TryResidentLayout", BindingFlags.NonPublic | BindingFlags.Static)!;
        object? laidOut;
        try
        {
            laidOut = layout.Invoke(null, [child.Id, "cat", regions, CancellationToken.None]);
        }
        catch (TargetInvocationException e) when (e.InnerException is DEException de)
        {
            throw new Xunit.Sdk.XunitException($"{de.ErrorId}: {de.Message}");
        }
        Assert.NotNull(laidOut); // pagemap read, the region above the user address space left out
        Assert.False(child.HasExited);
    }

    /// <summary>
    /// A process names itself (prctl PR_SET_NAME): an escape character in its name reached progress, verbose lines and
    /// errors as it was. The name is read with control characters as '?'. The test renames its own main thread (the
    /// name /proc/PID/comm gives), and puts the name back.
    /// </summary>
    [Fact]
    public void AProcessNameIsReadWithoutControlCharacters()
    {
        if (!OperatingSystem.IsLinux()) return;
        string comm = $"/proc/self/task/{Environment.ProcessId}/comm";
        string before = File.ReadAllText(comm).TrimEnd('\n');
        MethodInfo readName = typeof(ProcessSource).GetMethod("ReadName", BindingFlags.NonPublic | BindingFlags.Static)!;
        try
        {
            File.WriteAllText(comm, "de\u001b[31mx\u0007");
            Assert.Equal("de?[31mx?", readName.Invoke(null, ["/proc/self"]));
        }
        finally
        {
            File.WriteAllText(comm, before);
        }
    }

    /// <summary>-Format ElfCore on a raw image: ElfBadMagic's message quoted the file's first bytes, the guest's page 0.</summary>
    [Fact]
    public void ElfBadMagicHoldsNoBytesOfTheImage()
    {
        byte[] image = new byte[4096];
        "SECRET"u8.CopyTo(image);
        string path = _temp.Write("secret.img", image);
        var e = Assert.Throws<DEException>(() => MemorySource.OpenFile(path, MemorySourceFormat.ElfCore));
        Assert.Equal("ElfBadMagic", e.ErrorId);
        Assert.DoesNotContain("53454352", e.Message, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("SECR", e.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// Opening a process reads 8 bytes of pagemap for every page of its readable mappings (minutes for a sanitizer's
    /// terabytes of shadow), and a core's program header table may hold billions of entries in a sparse file: both
    /// opens check the token between the pieces they read. A token cancelled before the first piece shows the check.
    /// </summary>
    [Fact]
    public void OpeningAProcessOrACoreEndsWhenCancelled()
    {
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        if (OperatingSystem.IsLinux())
        {
            using var child = LiveProcess.Cat();
            Assert.Throws<OperationCanceledException>(() => MemorySource.OpenProcess(child.Id, cancelled.Token));
            using var whole = MemorySource.OpenProcess(child.Id, CancellationToken.None);
            Assert.True(whole.PageCount > 0);
        }
        string core = _temp.Write("p.core", new ElfCoreWriter()
            .Add(0, new byte[4096], virtualAddress: 0x400000)
            .Add(0, new byte[4096], virtualAddress: 0x600000).Build());
        Assert.Throws<OperationCanceledException>(() => MemorySource.OpenFile(core, null, cancelled.Token));
        using var opened = MemorySource.OpenFile(core, null, CancellationToken.None);
        Assert.Equal(2, opened.PageCount);
    }
}

/// <summary>A load larger than the machine's memory and swap, on a host without a memory limit.</summary>
public sealed class LoadRoomTests
{
    /// <summary>
    /// Every loaded page gets a frame: a sparse image larger than the machine's memory (an audit's 64 GiB on 24 GiB) had
    /// the kernel kill the process part way through the load. It is refused before a page is laid out; under a memory
    /// limit the machine can hold, the same load is the limit's business (paged out, or refused by the limit).
    /// </summary>
    [Fact]
    public void ALoadLargerThanTheMachineIsRefusedBeforeItBegins()
    {
        if (DEHost.MachineRoomBytes() is not long room) return; // not Linux
        long bytes = (room / 4096 + 262_144) * 4096; // 1 GiB more than the machine has
        if (bytes > 64L << 30) return; // a machine with more than 63 GiB free: no image can be too large for it
        using var dir = new TempDirectory();
        string path = dir.File("huge.img");
        using (var f = File.Create(path)) f.SetLength(bytes); // sparse: nothing on disk
        using var source = MemorySource.OpenFile(path);
        using var host = new DEHost();
        var e = Assert.Throws<DEException>(() => host.LoadDomain("huge", source));
        Assert.Equal("InsufficientMemoryToLoad", e.ErrorId);
        Assert.Equal(DEErrorKind.ResourceUnavailable, e.Kind);
        Assert.Empty(host.Domains);
        Assert.Equal(0, host.GetStats().FramesInUse);
    }
    /// <summary>
    /// The guard charged a source's PageCount, but a machine core (physical layout) gets frames only for its segments'
    /// file bytes: the span between segments (and p_memsz past p_filesz) stays zero. A core with two one-page segments
    /// far apart, which needs 2 frames, was refused as larger than the machine (a review's finding).
    /// </summary>
    [Fact]
    public void ASparseMachineCoreNeedingTwoFramesIsNotRefusedAsLargerThanTheMachine()
    {
        if (DEHost.MachineRoomBytes() is not long room) return; // not Linux
        long far = ((room + (1L << 30)) >> 12) << 12; // past what the machine has, inside the 64 GiB a guest may have
        if (far >= (64L << 30) - 4096) return; // a machine with more than 63 GiB free: no core can be too large for it
        using var dir = new TempDirectory();
        var core = new DifferenceEngine.Tests.Loading.ElfCoreWriter()
            .Add(0, Page(1))
            .Add((ulong)far, Page(2))
            .Build();
        string path = dir.File("sparse.core");
        File.WriteAllBytes(path, core);
        using var host = new DEHost(new HostOptions());
        using var src = DifferenceEngine.Loading.MemorySource.OpenFile(path, DifferenceEngine.Loading.MemorySourceFormat.ElfCore);
        _ = ($"room {room >> 20} MiB, core span {src.PageCount} pages ({(src.PageCount * 4096) >> 20} MiB), file {core.Length} B");
        var error = Record.Exception(() => host.LoadDomain("sparse", src));
        _ = (error is null ? $"loaded: frames in use {host.Frames.FramesInUse}" : $"{(error as DEException)?.ErrorId}: {error.Message}");
        Assert.Null(error);
    }

    private static byte[] Page(int seed)
    {
        var p = new byte[4096];
        new Random(seed).NextBytes(p);
        return p;
    }
}

/// <summary>A process that exits while it is being opened: its pid may be another process's by the time mem is opened.</summary>
public sealed class ProcessExitWhileOpeningTests
{
    /// <summary>
    /// The maps, mem and pagemap files are opened by pid one after another. A process that exited and was reaped between
    /// two of them left its pid to the next process made, whose memory was then read through the first one's maps. The
    /// opening holds a pidfd and refuses a process that has exited once every file is open: if it has not, every file
    /// opened was its own. (A pid's reuse cannot be brought about on demand; the process here exits at that check, and
    /// stays a zombie since its parent, `cat`, never reaps it. Before, the opening went through.)
    /// </summary>
    [Fact]
    public void AProcessThatHasExitedOnceItsFilesAreOpenIsRefused()
    {
        var e = OpenWhileExiting("opened");
        Assert.Equal("ProcessNotFound", e.ErrorId);
        Assert.Equal(DEErrorKind.ObjectNotFound, e.Kind);
        Assert.Contains("exited while being opened", e.Message);
    }

    /// <summary>
    /// A process that exits after its maps are read, and stays a zombie, cannot have its mem file opened: that was told
    /// as a kernel thread ("it is a kernel thread, which has no user memory", ProcessUnreadable), since a zombie's status
    /// has no VmSize line either.
    /// </summary>
    [Fact]
    public void AProcessThatExitsBeforeItsMemoryIsOpenedIsNotFoundNotAKernelThread()
    {
        var e = OpenWhileExiting("maps");
        Assert.Equal("ProcessNotFound", e.ErrorId);
        Assert.Contains("exited while being opened", e.Message);
        Assert.DoesNotContain("kernel thread", e.Message);
    }

    /// <summary>Opens a process that is killed at <paramref name="stage"/> of the opening and stays a zombie.</summary>
    private static DEException OpenWhileExiting(string stage)
    {
        using var parent = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("sh", ["-c", "sleep 1000 & echo $!; exec cat"])
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
        })!;
        int child = int.Parse(parent.StandardOutput.ReadLine()!, System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            WaitUntilAsleepInSleep(child);
            using var pidFd = DifferenceEngine.Qemu.LinuxNative.OpenPidFd(child);
            Assert.NotNull(pidFd);
            ProcessSource.OpenStage = (pid, at) =>
            {
                if (pid != child || at != stage) return; // another test's process, or another stage
                System.Diagnostics.Process.GetProcessById(child).Kill();
                WaitForExit(pidFd);
            };
            return Assert.Throws<DEException>(() => MemorySource.OpenProcess(child).Dispose());
        }
        finally
        {
            ProcessSource.OpenStage = null;
            parent.Kill(); // its zombie child goes to init, which reaps it
            parent.WaitForExit();
        }
    }

    /// <summary>
    /// Waits until the shell's child has become `sleep` and sleeps in it: the pid is echoed as soon as the shell has forked,
    /// and a child still in its execve had no resident page at the new program's addresses (ImageEmpty, one CI run in many).
    /// Waits on the process's state, never on time.
    /// </summary>
    private static void WaitUntilAsleepInSleep(int pid)
    {
        while (true)
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            int close = stat.LastIndexOf(')');
            string comm = stat[(stat.IndexOf('(') + 1)..close];
            if (comm == "sleep" && stat[close + 2] == 'S') return;
            Thread.Yield();
        }
    }

    /// <summary>Blocks until the pidfd's process has exited: a pidfd polls readable then.</summary>
    private static unsafe void WaitForExit(Microsoft.Win32.SafeHandles.SafeFileHandle pidFd)
    {
        var poll = new DifferenceEngine.Qemu.LinuxNative.PollFd { Fd = (int)pidFd.DangerousGetHandle(), Events = DifferenceEngine.Qemu.LinuxNative.POLLIN };
        while (DifferenceEngine.Qemu.LinuxNative.Poll(&poll, 1, -1) < 0) { }
    }
}
