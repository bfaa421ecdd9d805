using DifferenceEngine.Scanning;
using Xunit;

namespace DifferenceEngine.Tests.Engine;

/// <summary>The scan result's time figures: every pass's, and to the end of the last pass that changed anything.</summary>
public sealed class ScanResultTests
{
    private static PassResult Pass(int pass, long merged, double ms) =>
        new(pass, 100, 100, 0, merged, merged, 0, 0, TimeSpan.FromMilliseconds(ms));

    [Fact]
    public void ConvergedElapsedEndsWithTheLastPassThatChangedAnythingOnceStable()
    {
        // Work in passes 1 and 2 (merges), nothing in 3: stable after 3; converged at the end of 2.
        var scan = new ScanResult(["a"], [Pass(1, 10, 100), Pass(2, 5, 700), Pass(3, 0, 30)], Stable: true);
        Assert.Equal(TimeSpan.FromMilliseconds(830), scan.Elapsed);
        Assert.Equal(TimeSpan.FromMilliseconds(800), scan.ConvergedElapsed);
        // Any of the changes a pass counts keeps it in (here: pages compressed, no merge).
        var compressed = Pass(2, 0, 700) with { PagesCompressed = 3 };
        Assert.True(compressed.Changed);
        Assert.Equal(TimeSpan.FromMilliseconds(800),
            new ScanResult(["a"], [Pass(1, 10, 100), compressed, Pass(3, 0, 30)], Stable: true).ConvergedElapsed);
    }

    [Fact]
    public void ConvergedElapsedKeepsTheFirstPassAndEveryPassOfAScanThatDidNotBecomeStable()
    {
        // Nothing to do from the first pass on: the first pass is the scan's convergence, not zero.
        var idle = new ScanResult(["a"], [Pass(1, 0, 50), Pass(2, 0, 40)], Stable: true);
        Assert.Equal(TimeSpan.FromMilliseconds(50), idle.ConvergedElapsed);
        // Passes asked for by number, the last changing nothing but the scan not declared stable: all of them.
        var counted = new ScanResult(["a"], [Pass(1, 10, 100), Pass(2, 0, 40)], Stable: false);
        Assert.Equal(counted.Elapsed, counted.ConvergedElapsed);
        Assert.Equal(TimeSpan.Zero, new ScanResult([], [], Stable: false).ConvergedElapsed);
    }
}
