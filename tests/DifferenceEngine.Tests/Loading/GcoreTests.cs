using System.Diagnostics;
using System.Security.Cryptography;
using DifferenceEngine.Loading;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Loading;

public sealed class GcoreTests(ITestOutputHelper output)
{
    [RequiresFact(Requirement.Gcore)]
    public void RealGcoreOfAChildLoadsAndMatchesTheLiveProcess()
    {
        string gcore = Requirement.FindProgram(Requirement.Gcore)!;

        using var temp = new TempDirectory();
        using var child = LiveProcess.Cat();
        RunGcore(gcore, temp.File("core"), child.Id);
        string corePath = temp.File($"core.{child.Id}");
        Assert.True(File.Exists(corePath), $"gcore wrote no {corePath}");

        using MemorySource core = MemorySource.OpenFile(corePath);
        var fromCore = new CollectingSink();
        LoadReport coreReport = core.CopyTo(fromCore);
        output.WriteLine($"{core.Description}: {core.PageCount} pages; {coreReport}");

        Assert.Equal(MemorySourceFormat.ElfCore, core.Format);
        Assert.Contains("process core", core.Description);
        Assert.True(coreReport.PagesLoaded > 0);
        Assert.Equal(fromCore.Pages.Count, coreReport.PagesLoaded);

        // cat does nothing while we look: most non-zero pages of its core are in a live snapshot too.
        using MemorySource live = MemorySource.OpenProcess(child.Id);
        var fromLive = new CollectingSink();
        live.CopyTo(fromLive);
        var livePages = fromLive.Pages.Values.Select(Hash).ToHashSet();
        var corePages = fromCore.Pages.Values.Where(p => p.AsSpan().ContainsAnyExcept((byte)0)).Select(Hash).ToList();
        int found = corePages.Count(livePages.Contains);
        output.WriteLine($"{found} of {corePages.Count} non-zero core pages are in the live snapshot ({fromLive.Pages.Count} pages)");
        Assert.NotEmpty(corePages);
        Assert.True(found * 2 >= corePages.Count, $"only {found} of {corePages.Count} core pages match the live process");
    }

    private void RunGcore(string gcore, string prefix, int pid)
    {
        using var gdb = Process.Start(new ProcessStartInfo(gcore, ["-o", prefix, pid.ToString()])
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        Task<string> stdout = gdb.StandardOutput.ReadToEndAsync();
        Task<string> stderr = gdb.StandardError.ReadToEndAsync();
        if (!gdb.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            gdb.Kill(entireProcessTree: true);
            Assert.Fail("gcore did not finish in 2 minutes");
        }

        output.WriteLine(stdout.Result + stderr.Result);
        Assert.True(gdb.ExitCode == 0, $"gcore exited with {gdb.ExitCode}: {stderr.Result}");
    }

    private static string Hash(byte[] page) => Convert.ToHexString(SHA256.HashData(page));
}
