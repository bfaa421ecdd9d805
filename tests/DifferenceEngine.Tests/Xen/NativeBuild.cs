using System.Diagnostics;
using DifferenceEngine.Xen;
using Xunit.Abstractions;

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
        string folder = Make(target: null, Path.Combine(RepoRoot, "out", "native", "fake"));
        // Before the engine binds the shim for the first time: from now on "dexen" is the fake-linked build.
        Environment.SetEnvironmentVariable(XenLibraryResolver.ShimPathVariable, Path.Combine(folder, "libdexen.so"));
        return folder;
    }

    /// <summary>
    /// Runs a C test program of tests/native (one "ok"/"not ok" line per test, then "# N passed, M failed"), writes its
    /// output to the test's, and asserts that it ran tests and none failed. Returns what it printed.
    /// </summary>
    public static async Task<string> RunCTests(ProcessStartInfo start, ITestOutputHelper output)
    {
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        using var run = Process.Start(start)!;
        // Both pipes end when the program does: no clock decides how long it may take.
        var stderr = run.StandardError.ReadToEndAsync();
        string stdout = await run.StandardOutput.ReadToEndAsync();
        await run.WaitForExitAsync();
        output.WriteLine(stdout);
        output.WriteLine(await stderr);
        Assert.Matches(@"# [1-9]\d* passed, 0 failed", stdout);
        Assert.DoesNotContain("not ok", stdout);
        Assert.Equal(0, run.ExitCode);
        return stdout;
    }

    /// <summary>Runs make -C tests/native [target] O=folder; throws with make's output when it fails. Returns folder.</summary>
    public static string Make(string? target, string folder)
    {
        var start = new ProcessStartInfo("make")
        {
            ArgumentList = { "-C", Path.Combine(RepoRoot, "tests", "native"), $"O={folder}" },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        if (target is not null) start.ArgumentList.Add(target);
        using var make = Process.Start(start) ?? throw new InvalidOperationException("make did not start");
        var stderr = make.StandardError.ReadToEndAsync();
        string stdout = make.StandardOutput.ReadToEnd();
        make.WaitForExit();
        if (make.ExitCode != 0)
        {
            throw new InvalidOperationException($"make -C tests/native {target} failed ({make.ExitCode}):\n{stdout}\n{stderr.Result}");
        }
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
