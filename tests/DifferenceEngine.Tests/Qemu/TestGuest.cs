using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.RegularExpressions;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// A real guest under QEMU (TCG here; KVM would change nothing the engine sees): the Debian cloud kernel and the
/// initramfs of out/guests, whose /init is tests/guest/deworkload.c, with its RAM in a shared memfd
/// (memory-backend-memfd,share=on), the form the engine pages. The serial console is the process's standard output;
/// every line is kept, and a test waits for the line it expects, never for a time. Dispose kills QEMU.
/// </summary>
internal sealed class TestGuest : IDisposable
{
    private static readonly string GuestsFolder = Path.Combine(RepoRoot(), "out", "guests");

    /// <summary>The kernel build.ps1 takes from Debian's linux-image-cloud-amd64.</summary>
    public static string Kernel => Path.Combine(GuestsFolder, "vmlinuz");

    /// <summary>The initramfs build.ps1 makes around deworkload.</summary>
    public static string Initramfs => Path.Combine(GuestsFolder, "initramfs.cpio.gz");

    /// <summary>Guards against a hang only: a boot and a few rounds take a few seconds here.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromMinutes(3);

    /// <summary>The firmware's terminal escapes ("ESC[2J" and the like), which may precede the first line of the guest.</summary>
    private static readonly Regex TerminalControls = new(@"\x1b\[[0-9;?]*[A-Za-z]|\x1bc", RegexOptions.Compiled);

    private readonly Process process;
    private readonly BlockingCollection<string> incoming = new();
    private readonly List<string> lines = [];

    private TestGuest(Process process)
    {
        this.process = process;
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) incoming.CompleteAdding();
            else if (!incoming.IsAddingCompleted) incoming.Add(TerminalControls.Replace(e.Data, ""));
        };
        process.BeginOutputReadLine();
    }

    /// <summary>
    /// Boots a guest with <paramref name="memoryMiB"/> of RAM whose workload fills <paramref name="workloadMiB"/> and
    /// runs <paramref name="rounds"/> rounds (0: until killed); <paramref name="options"/> are more de.* settings
    /// ("de.selftest=1"), <paramref name="environment"/> QEMU's extra environment (LD_PRELOAD of libdeqemu.so and its
    /// socket), <paramref name="qemuArguments"/> more QEMU arguments.
    /// </summary>
    public static TestGuest Boot(int workloadMiB = 32, int rounds = 3, int seed = 1, int memoryMiB = 256, string options = "",
        IReadOnlyDictionary<string, string>? environment = null, IEnumerable<string>? qemuArguments = null)
    {
        var start = new ProcessStartInfo("qemu-system-x86_64")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string a in new[]
                 {
                     "-accel", "tcg", "-m", $"{memoryMiB}M", "-smp", "1", "-nodefaults", "-no-reboot",
                     "-display", "none", "-serial", "stdio", "-monitor", "none", "-nic", "none",
                     "-object", $"memory-backend-memfd,id=mem,size={memoryMiB}M,share=on", "-machine", "memory-backend=mem",
                     "-kernel", Kernel, "-initrd", Initramfs,
                     // loglevel=0: no kernel message on the console, where it could land in the middle of a workload line (a
                     // slow TCG guest on a busy machine warns of RCU stalls and clock skew).
                     "-append", $"console=ttyS0 quiet loglevel=0 panic=-1 de.mem={workloadMiB} de.rounds={rounds} de.seed={seed} {options}".TrimEnd(),
                 })
            start.ArgumentList.Add(a);
        foreach (string a in qemuArguments ?? []) start.ArgumentList.Add(a);
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) start.Environment[k] = v;
        var process = Process.Start(start) ?? throw new InvalidOperationException("qemu-system-x86_64 did not start");
        process.ErrorDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        return new TestGuest(process);
    }

    public int Pid => process.Id;

    /// <summary>Every console line seen so far.</summary>
    public IReadOnlyList<string> Lines
    {
        get { lock (lines) return lines.ToArray(); }
    }

    /// <summary>
    /// Reads the console until a line matches <paramref name="pattern"/> and returns its match; fails, with the console
    /// so far, when QEMU ends first or <see cref="Patience"/> runs out.
    /// </summary>
    public Match WaitFor(string pattern)
    {
        var regex = new Regex(pattern);
        using var timeout = new CancellationTokenSource(Patience);
        try
        {
            foreach (string line in incoming.GetConsumingEnumerable(timeout.Token))
            {
                lock (lines) lines.Add(line);
                var m = regex.Match(line);
                if (m.Success) return m;
            }
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"No console line matched /{pattern}/ within {Patience}. Console:\n{string.Join('\n', Lines)}");
        }
        throw new InvalidOperationException($"QEMU ended before a console line matched /{pattern}/. Console:\n{string.Join('\n', Lines)}");
    }

    /// <summary>Waits until QEMU has exited (the workload powers the guest off after its last round); its exit code.</summary>
    public int WaitForExit()
    {
        if (!process.WaitForExit(Patience)) throw new TimeoutException($"QEMU still runs after {Patience}.");
        process.WaitForExit(); // the console is read to its end
        return process.ExitCode;
    }

    public void Dispose()
    {
        try
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }
        catch (InvalidOperationException)
        {
            // never started
        }
        process.Dispose();
        incoming.Dispose();
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Directory.Build.props"))) return dir.FullName;
        throw new InvalidOperationException("No Directory.Build.props above " + AppContext.BaseDirectory);
    }
}
