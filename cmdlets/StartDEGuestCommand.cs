using System.Management.Automation;
using DifferenceEngine.Qemu;

namespace DifferenceEngine.Commands;

/// <summary>A QEMU guest Start-DEGuest started, ready for New-DEDomain (which binds Name and QemuSocket from it).</summary>
public sealed class DEGuest
{
    public required string Name { get; init; }
    /// <summary>QEMU's process id (QemuPid, as on a QEMU domain).</summary>
    public required int QemuPid { get; init; }
    /// <summary>The socket of QEMU's libdeqemu.so: New-DEDomain -QemuSocket attaches the guest through it.</summary>
    public required string QemuSocket { get; init; }
    /// <summary>The file the guest's serial console is written to (mode 0600).</summary>
    public required string ConsolePath { get; init; }
    public required long MemoryBytes { get; init; }
    public required string Accelerator { get; init; }
    public required string Kernel { get; init; }

    public override string ToString() => Name;
}

/// <summary>
/// Starts a QEMU guest ready to be paged by the engine (Start-DEGuest): guest RAM in a shared memfd, the module's
/// libdeqemu.so preloaded with its socket, QEMU detached (it outlives this PowerShell, so that if the engine dies the
/// guest waits for the next one), its console in a file. Pipe it to New-DEDomain to attach it.
/// </summary>
[Cmdlet(VerbsLifecycle.Start, "DEGuest", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(DEGuest))]
public sealed class StartDEGuestCommand : PSCmdlet, IDisposable
{
    /// <summary>The guest's name: names its socket and console file, and the domain New-DEDomain makes of it.</summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidatePattern(@"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    public string Name { get; set; } = "";

    /// <summary>The kernel QEMU boots (-kernel).</summary>
    [Parameter(Mandatory = true)]
    [ValidateNotNullOrEmpty]
    public string Kernel { get; set; } = "";

    /// <summary>An initramfs (-initrd).</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Initrd { get; set; }

    /// <summary>The kernel command line; console=ttyS0 by default (the console file).</summary>
    [Parameter]
    public string Append { get; set; } = "console=ttyS0";

    /// <summary>Guest RAM in bytes, a whole number of MiB (512MB by default).</summary>
    [Parameter]
    [ValidateRange(1L << 20, Loading.MemorySource.MaxGuestBytes)]
    public long MemorySize { get; set; } = 512L << 20;

    /// <summary>Virtual CPUs.</summary>
    [Parameter]
    [ValidateRange(1, 256)]
    public int Cpus { get; set; } = 1;

    /// <summary>kvm or tcg; kvm when /dev/kvm can be opened, else tcg.</summary>
    [Parameter]
    [ValidateSet("kvm", "tcg")]
    public string? Accelerator { get; set; }

    /// <summary>More QEMU arguments (disks, network), as QEMU takes them.</summary>
    [Parameter]
    public string[] ArgumentList { get; set; } = [];

    /// <summary>The QEMU to run; qemu-system-x86_64 from PATH by default.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string QemuPath { get; set; } = "qemu-system-x86_64";

    /// <summary>
    /// The folder for the guest's socket and console file: by default $XDG_RUNTIME_DIR/difference-engine, else
    /// /run/difference-engine as root, else a difference-engine folder in the temporary folder; made mode 0700.
    /// </summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? StatePath { get; set; }

    protected override void EndProcessing()
    {
        try
        {
            if (MemorySize % (1L << 20) != 0)
                throw new DEException("MemorySizeInvalid", DEErrorKind.InvalidArgument,
                    $"A guest's memory is a whole number of MiB; {MemorySize} bytes was given.", MemorySize);
            string kernel = Resolve(Kernel, "GuestKernelNotFound", "guest kernel");
            string? initrd = Initrd is null ? null : Resolve(Initrd, "GuestInitrdNotFound", "initramfs");
            string folder = StateFolderPath();
            string library = Path.Combine(Path.GetDirectoryName(typeof(StartDEGuestCommand).Assembly.Location)!,
                "runtimes", "linux-x64", "native", "libdeqemu.so");
            if (!File.Exists(library))
                throw new DEException("QemuLibraryNotFound", DEErrorKind.ObjectNotFound,
                    $"The module has no libdeqemu.so at {library} (it is built on Linux with a C compiler: build.ps1).", library);
            string socket = Path.Combine(folder, Name + ".sock"), console = Path.Combine(folder, Name + ".console");
            if (File.Exists(socket))
                throw new DEException("QemuSocketExists", DEErrorKind.ResourceExists,
                    $"{socket} exists: another guest named '{Name}' may be running (remove the socket if it is not).", socket);
            string accelerator = Accelerator ?? (CanOpen("/dev/kvm") ? "kvm" : "tcg");
            if (!ShouldProcess(Name, $"Start a QEMU guest ({accelerator}, {MemorySize >> 20} MiB) from {kernel}")) return;
            QemuGuestProcess.CheckQemu(QemuPath); // before anything is made: a failed start leaves no folder behind
            QemuGuestProcess.CreatePrivateFolder(folder); // only now: -WhatIf makes nothing
            int pid = QemuGuestProcess.StartDetached(new QemuGuestStartInfo
            {
                Qemu = QemuPath,
                Kernel = kernel,
                Initrd = initrd,
                Append = Append,
                MemoryMiB = (int)(MemorySize >> 20),
                Cpus = Cpus,
                Accelerator = accelerator,
                Library = library,
                Socket = socket,
                ExtraArguments = ArgumentList,
            }, console, TimeSpan.FromMinutes(2), _stopping.Token);
            WriteObject(new DEGuest
            {
                Name = Name, QemuPid = pid, QemuSocket = socket, ConsolePath = console, MemoryBytes = MemorySize,
                Accelerator = accelerator, Kernel = kernel,
            });
        }
        catch (DEException ex)
        {
            ThrowTerminatingError(DECmdlet.ToErrorRecord(ex));
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
            throw new PipelineStoppedException(); // Ctrl-C while QEMU was starting: it was killed
        }
    }

    private readonly CancellationTokenSource _stopping = new();

    protected override void StopProcessing() => _stopping.Cancel();

    public void Dispose() => _stopping.Dispose();

    private string Resolve(string path, string errorId, string what)
    {
        string full = DECmdlet.GetFileSystemPath(SessionState, path, what, errorId);
        if (!File.Exists(full))
            throw new DEException(errorId, DEErrorKind.ObjectNotFound, $"The {what} '{full}' does not exist.", full);
        return full;
    }

    private string StateFolderPath() =>
        StatePath is not null
            ? DECmdlet.GetFileSystemPath(SessionState, StatePath, "guest state folder", "GuestStatePathFailed")
            : Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR") is { Length: > 0 } runtime
                ? Path.Combine(runtime, "difference-engine")
                : Environment.IsPrivilegedProcess
                    ? "/run/difference-engine"
                    : Path.Combine(Path.GetTempPath(), $"difference-engine-{Environment.UserName}");

    private static bool CanOpen(string path)
    {
        try
        {
            using var _ = File.Open(path, FileMode.Open, FileAccess.ReadWrite);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
