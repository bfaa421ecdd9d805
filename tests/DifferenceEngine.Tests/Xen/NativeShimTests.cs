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
        string stdout = await NativeBuild.RunCTests(new ProcessStartInfo(Path.Combine(NativeBuild.FakeFolder, "test_shim")), output);
        Assert.Contains("1..", stdout);
    }
}
