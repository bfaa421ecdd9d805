using System.Diagnostics;
using DifferenceEngine.Tests.Engine;
using DifferenceEngine.Tests.Xen;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// tests/native/fakeguest, a stand-in for QEMU that maps its RAM as QEMU's memory-backend-memfd does, run with
/// libdeqemu.so preloaded and its socket in a folder of its own; it answers commands on stdin ("write N", "verify",
/// "quit") and checks its own memory. Started only once it said READY (its RAM and the socket exist by then).
/// </summary>
internal sealed class FakeGuest : IDisposable
{
    public const int Pages = 2048;

    private readonly Process process;
    private readonly TempDir dir = new();

    private FakeGuest(int pages, bool relativeSocket = false)
    {
        string folder = QemuNativeBuild.Folder;
        SocketPath = Path.Combine(dir.Path, "guest.sock");
        var start = new ProcessStartInfo(Path.Combine(folder, "fakeguest"))
        {
            ArgumentList = { pages.ToString(), "5" },
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            // Relative: DE_QEMU_SOCKET names the socket in the folder it starts in (its own temporary folder).
            WorkingDirectory = relativeSocket ? dir.Path : "",
            Environment =
            {
                ["LD_PRELOAD"] = Path.Combine(folder, "libdeqemu.so"),
                ["DE_QEMU_SOCKET"] = relativeSocket ? "guest.sock" : SocketPath,
            },
        };
        process = Process.Start(start)!;
        string? ready = process.StandardOutput.ReadLine();
        if (ready is null || !ready.StartsWith("READY ", StringComparison.Ordinal))
            throw new InvalidOperationException($"fakeguest did not start: '{ready}'");
    }

    public static FakeGuest Start() => new(Pages);

    /// <summary>A fake guest of <paramref name="pages"/> pages (the journal compacts only past 4 MiB of dead records).</summary>
    public static FakeGuest Start(int pages) => new(pages);

    /// <summary>A fake guest started in its folder with DE_QEMU_SOCKET=guest.sock, a path relative to it.</summary>
    public static FakeGuest StartWithRelativeSocket() => new(Pages, relativeSocket: true);

    public string SocketPath { get; }

    public int Pid => process.Id;

    /// <summary>Sends a command and returns the guest's one-line answer.</summary>
    public string Ask(string command)
    {
        Send(command);
        return Answer();
    }

    public void Send(string command)
    {
        process.StandardInput.WriteLine(command);
        process.StandardInput.Flush();
    }

    public string Answer() => process.StandardOutput.ReadLine() ?? throw new InvalidOperationException("fakeguest ended");

    public void Dispose()
    {
        if (!process.HasExited)
        {
            process.Kill();
        }
        process.WaitForExit();
        process.Dispose();
        dir.Dispose();
    }
}

/// <summary>
/// out/native/qemu (libdeqemu.so, libdeguard.so, fakeguest, test_deqemu), built once per test run by make -C tests/native qemu: tests
/// running in parallel must not run make on the same files at once.
/// </summary>
internal static class QemuNativeBuild
{
    private static readonly Lazy<string> Built = new(() =>
    {
        string folder = NativeBuild.Make("qemu", Path.Combine(NativeBuild.RepoRoot, "out", "native", "qemu"));
        // The engine's native read guard, from the same build (what the module ships next to the engine).
        Environment.SetEnvironmentVariable(DifferenceEngine.Qemu.NativeGuard.PathVariable, Path.Combine(folder, DifferenceEngine.Qemu.NativeGuard.FileName));
        return folder;
    });

    public static string Folder => Built.Value;
}
