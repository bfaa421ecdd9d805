using System.Text.RegularExpressions;
using DifferenceEngine.Qemu;

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

    private readonly QemuGuestProcess process;

    private TestGuest(QemuGuestProcess process) => this.process = process;

    /// <summary>
    /// Boots a guest with <paramref name="memoryMiB"/> of RAM whose workload fills <paramref name="workloadMiB"/> and
    /// runs <paramref name="rounds"/> rounds (0: until killed); <paramref name="options"/> are more de.* settings
    /// ("de.selftest=1"), <paramref name="environment"/> QEMU's extra environment (LD_PRELOAD of libdeqemu.so and its
    /// socket), <paramref name="qemuArguments"/> more QEMU arguments.
    /// </summary>
    public static TestGuest Boot(int workloadMiB = 32, int rounds = 3, int seed = 1, int memoryMiB = 256, string options = "",
        IReadOnlyDictionary<string, string>? environment = null, IEnumerable<string>? qemuArguments = null)
    {
        environment ??= new Dictionary<string, string>();
        if (environment.Keys.Except(["LD_PRELOAD", "DE_QEMU_SOCKET"]).FirstOrDefault() is { } other)
            throw new ArgumentException($"Only LD_PRELOAD and DE_QEMU_SOCKET are passed to QEMU, not {other}.", nameof(environment));
        return new TestGuest(QemuGuestProcess.Start(new QemuGuestStartInfo
        {
            Kernel = Kernel,
            Initrd = Initramfs,
            MemoryMiB = memoryMiB,
            // loglevel=2: only the kernel's emergencies and alerts on the console (a panic, an oops: what a page the
            // engine got wrong would do to the guest's kernel), no warning that could land in the middle of a workload
            // line (a slow TCG guest on a busy machine warns of RCU stalls and clock skew).
            Append = $"console=ttyS0 quiet loglevel=2 panic=-1 de.mem={workloadMiB} de.rounds={rounds} de.seed={seed} {options}".TrimEnd(),
            Library = environment.GetValueOrDefault("LD_PRELOAD"),
            Socket = environment.GetValueOrDefault("DE_QEMU_SOCKET"),
            ExtraArguments = qemuArguments?.ToArray() ?? [],
        }));
    }

    public int Pid => process.Pid;

    /// <summary>QEMU's exit code once it has exited; null while it runs.</summary>
    public int? ExitCode => process.ExitCode;

    /// <summary>Every console line seen so far.</summary>
    public IReadOnlyList<string> Lines => process.Lines.Select(l => l.Line).ToArray();

    /// <summary>
    /// Reads the console until a line matches <paramref name="pattern"/> and returns its match; fails, with the console
    /// so far, when QEMU ends first or <see cref="Patience"/> runs out.
    /// </summary>
    public Match WaitFor(string pattern)
    {
        try
        {
            return process.WaitFor(new Regex(pattern), Patience).Match;
        }
        catch (TimeoutException e) when (Diagnose?.Invoke() is { } more)
        {
            throw new TimeoutException(e.Message + "\n" + more, e);
        }
        catch (InvalidOperationException e) when (Diagnose?.Invoke() is { } more)
        {
            throw new InvalidOperationException($"{e.Message}\nQEMU's exit code: {process.ExitCode}.\n{more}", e);
        }
    }

    /// <summary>
    /// What the engine says when the guest stops talking (a fault it could not serve, what it holds), added to a
    /// timeout's message: a guest that waits on a fault forever looks like a hang from the console alone.
    /// </summary>
    public Func<string?>? Diagnose { get; set; }

    /// <summary>
    /// Reads the console until the workload reports a round over <paramref name="pages"/> pages (round
    /// <paramref name="round"/>, or any when null) and returns its number; fails at once, with the console, on a
    /// MISMATCH line or a round that counts a mismatch: a lost page is a failure to show, not a line to wait past.
    /// </summary>
    public int WaitForCleanRound(int pages, int? round = null)
    {
        var pattern = $@"^deworkload (?:MISMATCH .*|round=(\d+) pages={pages} mismatches=(\d+) total=(\d+) )";
        while (true)
        {
            var m = WaitFor(pattern);
            if (!m.Groups[1].Success || m.Groups[2].Value != "0" || m.Groups[3].Value != "0")
                throw new Xunit.Sdk.XunitException($"QEMU {Pid}'s guest found a page that is not what it wrote: {m.Value}\n" +
                                                   $"{Diagnose?.Invoke()}\nConsole:\n" + string.Join('\n', Lines.TakeLast(40)));
            int number = int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            if (round is null || number >= round) return number;
        }
    }

    /// <summary>
    /// Lets a guest booted with de.gate=1 go on: waits for its "deworkload waiting to grow" and types the byte it reads.
    /// The test decides when the guest grows, however the two run side by side.
    /// </summary>
    public void LetGrow()
    {
        WaitFor("^deworkload waiting to grow$");
        process.Type("g");
    }

    /// <summary>Waits until QEMU has exited (the workload powers the guest off after its last round); its exit code.</summary>
    public int WaitForExit() => process.WaitForExit(Patience);

    public void Dispose() => process.Dispose();

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Directory.Build.props"))) return dir.FullName;
        throw new InvalidOperationException("No Directory.Build.props above " + AppContext.BaseDirectory);
    }
}
