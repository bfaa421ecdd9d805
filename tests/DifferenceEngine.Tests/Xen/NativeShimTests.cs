using System.Diagnostics;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Xen;

/// <summary>The shim's C tests (tests/native/test_shim.c) against the fake Xen, run here so they count in the totals.</summary>
[Collection(nameof(FakeXenCollection))]
public class NativeShimTests(ITestOutputHelper output)
{
    [RequiresFact(Requirement.XenBuild)]
    public async Task CTestsOfTheShimPass()
    {
        var start = new ProcessStartInfo(Path.Combine(NativeBuild.FakeFolder, "test_shim")) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var run = Process.Start(start)!;
        // Both pipes end when test_shim does: no clock decides how long it may take.
        var stderr = run.StandardError.ReadToEndAsync();
        string stdout = await run.StandardOutput.ReadToEndAsync();
        await run.WaitForExitAsync();
        output.WriteLine(stdout);
        output.WriteLine(await stderr);
        Assert.Contains("1..", stdout);
        Assert.Matches(@"# [1-9]\d* passed, 0 failed", stdout);
        Assert.DoesNotContain("not ok", stdout);
        Assert.Equal(0, run.ExitCode);
    }
}
