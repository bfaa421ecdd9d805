using System.Diagnostics;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Tests.Xen;

/// <summary>
/// The test build of native/ (out/native/fake: libfakexen.so, the shim linked against it, the C tests), made with
/// tests/native/Makefile, as build.ps1's Build-Native does; make is a no-op when that already ran. Without libxen-dev's
/// headers there is nothing to build, and the Xen tests skip; with them, a failed build fails the tests.
/// </summary>
internal static class NativeBuild
{
    private const string XenHeader = "/usr/include/xenctrl.h";

    private static readonly Lazy<(string? Folder, string? SkipReason)> Built = new(Build);

    /// <summary>out/native/fake, built; null with the reason to skip when libxen-dev is not installed.</summary>
    public static string? FakeFolder(out string? skipReason)
    {
        var (folder, reason) = Built.Value;
        skipReason = reason;
        return folder;
    }

    public static string RepoRoot { get; } = FindRepoRoot();

    private static (string?, string?) Build()
    {
        if (!File.Exists(XenHeader))
        {
            return (null, $"libxen-dev is not installed ({XenHeader} is missing), so native/ and the fake Xen cannot be built; " +
                          "CI installs it (.ci/run), where these tests run.");
        }
        string folder = Path.Combine(RepoRoot, "out", "native", "fake");
        var start = new ProcessStartInfo("make")
        {
            ArgumentList = { "-C", Path.Combine(RepoRoot, "tests", "native"), $"O={folder}" },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var make = Process.Start(start) ?? throw new InvalidOperationException("make did not start");
        var stderr = make.StandardError.ReadToEndAsync();
        string stdout = make.StandardOutput.ReadToEnd();
        make.WaitForExit();
        if (make.ExitCode != 0)
        {
            throw new InvalidOperationException($"make -C tests/native failed ({make.ExitCode}):\n{stdout}\n{stderr.Result}");
        }
        // Before the engine binds the shim for the first time: from now on "dexen" is the fake-linked build.
        Environment.SetEnvironmentVariable(XenLibraryResolver.ShimPathVariable, Path.Combine(folder, "libdexen.so"));
        return (folder, null);
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "build.ps1")) && Directory.Exists(Path.Combine(dir.FullName, "native")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException($"No repository root (build.ps1 and native/) above {AppContext.BaseDirectory}.");
    }
}
