using System.Diagnostics;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Tests.Xen;

/// <summary>
/// The test build of native/ (out/native/fake: libfakexen.so, the shim linked against it, the C tests), made with
/// tests/native/Makefile, as build.ps1's Build-Native does; make is a no-op when that already ran. Tests that use it declare
/// <see cref="Requirement.XenBuild"/>, so they are reported as skipped where it cannot be built; where it can, a failed
/// build fails them.
/// </summary>
internal static class NativeBuild
{
    private static readonly Lazy<string> Built = new(Build);

    /// <summary>out/native/fake, built.</summary>
    public static string FakeFolder => Built.Value;

    public static string RepoRoot { get; } = FindRepoRoot();

    private static string Build()
    {
        if (Requirement.Unmet(Requirement.XenBuild) is { } unmet)
        {
            throw new InvalidOperationException(
                $"The fake Xen cannot be built here ({unmet}): declare [RequiresFact(Requirement.XenBuild)] on the test.");
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
        return folder;
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
