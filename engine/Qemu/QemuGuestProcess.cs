using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace DifferenceEngine.Qemu;

/// <summary>How to start a QEMU guest (<see cref="QemuGuestProcess.Start"/>).</summary>
public sealed record QemuGuestStartInfo
{
    /// <summary>The QEMU to run; found on PATH by default.</summary>
    public string Qemu { get; init; } = "qemu-system-x86_64";
    public required string Kernel { get; init; }
    public string? Initrd { get; init; }
    /// <summary>The kernel command line (the console is ttyS0, the process's standard output).</summary>
    public string Append { get; init; } = "console=ttyS0";
    public int MemoryMiB { get; init; } = 256;
    public int Cpus { get; init; } = 1;
    /// <summary>
    /// Guest RAM in a shared memfd (memory-backend-memfd,share=on), the form the engine pages; false: QEMU's default
    /// private anonymous RAM (which KSM can merge and the kernel can swap, and the engine cannot attach to).
    /// </summary>
    public bool SharedMemfd { get; init; } = true;
    /// <summary>libdeqemu.so, preloaded with <see cref="Socket"/>: the engine can attach (needs <see cref="SharedMemfd"/>).</summary>
    public string? Library { get; init; }
    public string? Socket { get; init; }
    /// <summary>"tcg", or "kvm" where the machine has it.</summary>
    public string Accelerator { get; init; } = "tcg";
    public IReadOnlyList<string> ExtraArguments { get; init; } = [];
}

/// <summary>
/// A QEMU guest started by the engine's tools (the benchmarks, the test guests): its serial console is read line by line,
/// each line kept with the time it came, and a caller waits for the line it expects, never for a time. Dispose kills
/// QEMU.
/// </summary>
public sealed class QemuGuestProcess : IDisposable
{
    /// <summary>The firmware's terminal escapes ("ESC[2J" and the like), which may precede the guest's first line.</summary>
    private static readonly Regex TerminalControls = new(@"\x1b\[[0-9;?]*[A-Za-z]|\x1bc", RegexOptions.Compiled);

    private readonly Process _process;
    private readonly BlockingCollection<(long Ticks, string Line)> _incoming = new();
    private readonly List<(long Ticks, string Line)> _seen = [];

    private QemuGuestProcess(Process process)
    {
        _process = process;
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) _incoming.CompleteAdding();
            else if (!_incoming.IsAddingCompleted) _incoming.Add((Stopwatch.GetTimestamp(), TerminalControls.Replace(e.Data, "")));
        };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    /// <summary>
    /// "QemuNotFound" unless <paramref name="qemu"/> names an executable file: a path (with a slash) as it is, a bare name
    /// in a folder of PATH, as starting it would find it. Checked before anything is made for a guest.
    /// </summary>
    public static void CheckQemu(string qemu) => ResolveQemu(qemu);

    /// <summary>
    /// The QEMU executable <paramref name="qemu"/> names: a path as it is, a bare name looked up in PATH only (the first
    /// folder that has it runnable), so that the file checked is the file started: Process.Start would also look in the
    /// working folder and the program's own. "QemuNotFound" when there is none.
    /// </summary>
    internal static string ResolveQemu(string qemu, string? searchPath = null)
    {
        static bool Runnable(string path) =>
            File.Exists(path) && (OperatingSystem.IsWindows() || (File.GetUnixFileMode(path) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0);
        string? found = qemu.Contains('/') || Path.IsPathRooted(qemu)
            ? Runnable(qemu) ? qemu : null
            : (searchPath ?? Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
                .Where(Path.IsPathRooted) // a relative PATH entry means the working folder, which is not looked in
                .Select(folder => Path.Combine(folder, qemu)).FirstOrDefault(Runnable);
        return found ?? throw new DEException("QemuNotFound", DEErrorKind.ObjectNotFound,
            $"'{qemu}' is not an executable file{(qemu.Contains('/') ? "" : " in any folder of PATH")}: install QEMU (qemu-system-x86) or give -QemuPath.", qemu);
    }

    /// <summary>Starts QEMU. Errors: "QemuNotFound" when the QEMU or the kernel is not there.</summary>
    public static QemuGuestProcess Start(QemuGuestStartInfo info)
    {
        var start = StartInfo(info, ["-serial", "stdio", "-nic", "none"]);
        return new QemuGuestProcess(Launch(start, info));
    }

    /// <summary>QEMU's command line and environment for <paramref name="info"/>, with <paramref name="console"/> (and more).</summary>
    private static ProcessStartInfo StartInfo(QemuGuestStartInfo info, IEnumerable<string> console)
    {
        ArgumentNullException.ThrowIfNull(info);
        if (!File.Exists(info.Kernel))
            throw new DEException("QemuNotFound", DEErrorKind.ObjectNotFound, $"The guest kernel '{info.Kernel}' does not exist.", info.Kernel);
        var start = new ProcessStartInfo(ResolveQemu(info.Qemu))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        var args = new List<string>
        {
            "-accel", info.Accelerator, "-m", $"{info.MemoryMiB}M", "-smp", info.Cpus.ToString(), "-nodefaults", "-no-reboot",
            "-display", "none", "-monitor", "none", "-kernel", info.Kernel,
        };
        args.AddRange(console);
        if (info.SharedMemfd)
            args.AddRange(["-object", $"memory-backend-memfd,id=mem,size={info.MemoryMiB}M,share=on", "-machine", "memory-backend=mem"]);
        if (info.Initrd is not null) args.AddRange(["-initrd", info.Initrd]);
        args.AddRange(["-append", info.Append]);
        args.AddRange(info.ExtraArguments);
        foreach (string a in args) start.ArgumentList.Add(a);
        if (info.Library is not null)
        {
            start.Environment["LD_PRELOAD"] = info.Library;
            start.Environment["DE_QEMU_SOCKET"] = info.Socket ?? throw new ArgumentException("A library needs a socket path.", nameof(info));
        }
        return start;
    }

    private static Process Launch(ProcessStartInfo start, QemuGuestStartInfo info)
    {
        try
        {
            return Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new DEException("QemuNotFound", DEErrorKind.ObjectNotFound, $"'{info.Qemu}' could not be started: {e.Message}.", info.Qemu);
        }
    }

    /// <summary>
    /// Makes <paramref name="folder"/> for a guest's socket, console and pid file (mode 0700 when it is new) and checks that
    /// it is private: a directory, not a symbolic link, owned by this process's user and writable by no one else. Another
    /// user who could write there could put a symbolic link where the console is written, swap the pid file (which names
    /// the process a cancelled start kills) or the socket the engine attaches to. "GuestStatePathFailed" when it cannot be
    /// made, "GuestStatePathUnsafe" (PermissionDenied) when it is not private.
    /// </summary>
    public static void CreatePrivateFolder(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        try
        {
            if (OperatingSystem.IsWindows()) Directory.CreateDirectory(folder);
            else Directory.CreateDirectory(folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DEException("GuestStatePathFailed", e is UnauthorizedAccessException ? DEErrorKind.PermissionDenied : DEErrorKind.WriteError,
                $"The guest's state folder '{folder}' could not be made: {e.Message}", folder);
        }
        if (OperatingSystem.IsWindows()) return;
        if (LinuxNative.StatusOf(folder, followLinks: false) is not { } status)
            throw new DEException("GuestStatePathFailed", DEErrorKind.ReadError,
                $"The guest's state folder '{folder}' could not be checked: {Marshal.GetLastPInvokeErrorMessage()}", folder);
        int mode = status.Mode;
        uint owner = status.Owner, self = LinuxNative.GetEuid();
        string? why = status.Type != LinuxNative.S_IFDIR ? "is not a directory (a symbolic link is not followed)"
            : owner != self ? $"belongs to uid {owner}, not to this process's uid {self}"
            : (mode & 0x12) != 0 ? $"is writable by others (mode {Convert.ToString(mode & 0x1FF, 8)})"
            : null;
        if (why is not null)
            throw new DEException("GuestStatePathUnsafe", DEErrorKind.PermissionDenied,
                $"The guest's state folder '{folder}' {why}: another user could replace the guest's socket, console or pid file " +
                "there. Use a folder of your own that only you can write (chmod go-w), or give one with -StatePath.", folder);
    }

    /// <summary>
    /// Starts QEMU detached from this process (QEMU's own -daemonize: it outlives the engine, so that a guest whose
    /// engine dies waits for the next one), its console written to <paramref name="consolePath"/> (created mode 0600
    /// first: a console may show what the guest holds). Returns QEMU's pid once QEMU has initialized (and, with a
    /// library, bound its socket). Errors: "QemuNotFound", "QemuStartFailed" (QEMU's own message included).
    /// </summary>
    /// <param name="cancellationToken">Stops the wait for QEMU to come up: the half-started QEMU is killed, and the call
    /// ends with OperationCanceledException.</param>
    public static int StartDetached(QemuGuestStartInfo info, string consolePath, TimeSpan patience, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(info);
        if (OperatingSystem.IsWindows())
            throw new DEException("QemuNotFound", DEErrorKind.NotImplemented, "QEMU guests with libdeqemu.so run on Linux only.", info.Qemu);
        // The library could not bind a longer path, and would say so only on QEMU's standard error, gone with -daemonize.
        if (info.Socket is { } wanted && System.Text.Encoding.UTF8.GetByteCount(wanted) is 0 or > 107)
            throw new DEException("QemuSocketPathInvalid", DEErrorKind.InvalidArgument,
                $"'{wanted}' cannot be a Unix socket path (1 to 107 bytes): give a shorter -StatePath.", wanted);
        File.Delete(consolePath); // made anew, so that its mode is 0600 whatever an older file had
        using (new FileStream(consolePath, new FileStreamOptions
               {
                   Mode = FileMode.Create, Access = FileAccess.Write,
                   UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
               })) { }
        string pidFile = consolePath + ".pid";
        File.Delete(pidFile);
        var start = StartInfo(info, ["-serial", $"file:{consolePath}", "-daemonize", "-pidfile", pidFile]);
        Process parent = Launch(start, info);
        using (parent)
        {
            // QEMU's first process exits once the daemon has initialized the machine (guest RAM mapped, the library's
            // socket bound), with 0, or with 1 and its reason on standard error.
            var errors = parent.StandardError.ReadToEndAsync();
            parent.StandardOutput.ReadToEndAsync();
            using (var waiting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                waiting.CancelAfter(patience);
                try
                {
                    parent.WaitForExitAsync(waiting.Token).GetAwaiter().GetResult();
                }
                catch (OperationCanceledException)
                {
                    parent.Kill(entireProcessTree: true);
                    // -daemonize forks twice and the daemon is no child of the first process any more: it is found by the
                    // pid file it writes once it has daemonized, and killed too; its socket goes with it.
                    KillDaemon(pidFile);
                    if (info.Socket is { } socket) File.Delete(socket);
                    cancellationToken.ThrowIfCancellationRequested();
                    throw new DEException("QemuStartFailed", DEErrorKind.ResourceUnavailable, $"QEMU did not finish starting within {patience}.", info.Qemu);
                }
            }
            parent.WaitForExit();
            if (parent.ExitCode != 0 || !File.Exists(pidFile))
                throw new DEException("QemuStartFailed", DEErrorKind.InvalidOperation,
                    $"QEMU could not start the guest (exit code {parent.ExitCode}): {errors.Result.Trim()}", info.Qemu);
        }
        string pidText = File.ReadAllText(pidFile).Trim();
        if (!int.TryParse(pidText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int pid) || pid <= 0)
            throw new DEException("QemuStartFailed", DEErrorKind.InvalidData,
                $"QEMU started but its pid file '{pidFile}' holds '{pidText}', not a process id.", info.Qemu);
        File.Delete(pidFile);
        // The library binds its socket while QEMU initializes, before the daemon lets its parent go: no socket means it
        // could not (its reason went to QEMU's standard error, closed by -daemonize), and no engine could attach.
        if (info.Socket is { } bound && info.Library is not null && LinuxNative.FileType(bound) != LinuxNative.S_IFSOCK)
        {
            try { Process.GetProcessById(pid).Kill(); } catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception) { }
            throw new DEException("QemuStartFailed", DEErrorKind.InvalidOperation,
                $"QEMU started (pid {pid}) but its libdeqemu.so does not listen at '{bound}', so no engine could serve the guest; " +
                "QEMU was stopped. Is the library of this build, and is its socket path writable?", info.Qemu);
        }
        return pid;
    }

    // The daemon a cancelled or timed-out start left (its pid file, when it got that far), killed; nothing when none.
    private static void KillDaemon(string pidFile)
    {
        try
        {
            if (!File.Exists(pidFile)) return;
            if (int.TryParse(File.ReadAllText(pidFile).Trim(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int pid))
            {
                using var daemon = Process.GetProcessById(pid);
                daemon.Kill();
                daemon.WaitForExit(TimeSpan.FromSeconds(10));
            }
            File.Delete(pidFile);
        }
        catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception or UnauthorizedAccessException)
        {
            // Gone already, or not ours to kill: nothing more to do.
        }
    }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>QEMU's exit code once it has exited (a signal that killed it: 128 + the signal); null while it runs.</summary>
    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

    /// <summary>Every console line read so far by <see cref="WaitFor"/>, with its arrival (Stopwatch ticks).</summary>
    public IReadOnlyList<(long Ticks, string Line)> Lines
    {
        get { lock (_seen) return _seen.ToArray(); }
    }

    /// <summary>
    /// Reads the console until a line matches <paramref name="pattern"/> and returns its match and arrival; fails, with
    /// the console so far, when QEMU ends first or <paramref name="patience"/> runs out (a guard against a hang).
    /// </summary>
    public (Match Match, long Ticks) WaitFor(Regex pattern, TimeSpan patience)
    {
        using var timeout = new CancellationTokenSource(patience);
        try
        {
            foreach (var (ticks, line) in _incoming.GetConsumingEnumerable(timeout.Token))
            {
                lock (_seen) _seen.Add((ticks, line));
                var m = pattern.Match(line);
                if (m.Success) return (m, ticks);
            }
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"No console line of QEMU {Pid} matched /{pattern}/ within {patience}. Console:\n{Console()}");
        }
        throw new InvalidOperationException($"QEMU {Pid} ended before a console line matched /{pattern}/. Console:\n{Console()}");
    }

    /// <summary>
    /// Types <paramref name="text"/> on the guest's serial console (QEMU's standard input): how a caller answers a guest
    /// that waits for the host (the test workload's de.gate). Errors: an IOException when QEMU has ended.
    /// </summary>
    public void Type(string text)
    {
        _process.StandardInput.Write(text);
        _process.StandardInput.Flush();
    }

    private string Console() => string.Join('\n', Lines.Select(l => l.Line).TakeLast(40));

    /// <summary>Waits for QEMU to exit (bounded by <paramref name="patience"/>); its exit code.</summary>
    public int WaitForExit(TimeSpan patience)
    {
        if (!_process.WaitForExit(patience)) throw new TimeoutException($"QEMU {Pid} still runs after {patience}.");
        _process.WaitForExit();
        return _process.ExitCode;
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }
        catch (InvalidOperationException)
        {
            // never started
        }
        _process.Dispose();
        _incoming.Dispose();
    }
}
