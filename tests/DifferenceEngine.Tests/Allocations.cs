namespace DifferenceEngine.Tests;

/// <summary>
/// Bytes a piece of code allocates on the calling thread, measured exactly. Tests that measure run in the serial
/// collection (Engine.SerialCollection), alone: a no-GC region is the whole process's, and tests running beside one
/// would both end it (by allocating past its budget) and be unable to start their own.
/// </summary>
internal static class Allocations
{
    /// <summary>
    /// Runs <paramref name="action"/> with the garbage collector held off (a no-GC region) and returns the bytes it
    /// allocated on this thread. Without the region, a collection that other threads' tests set off during the run
    /// retires this thread's allocation context and GC.GetAllocatedBytesForCurrentThread then counts its unused
    /// remainder (up to an allocation quantum, some kilobytes) as if it had been allocated.
    /// </summary>
    public static long On(Action action)
    {
        Assert.True(GC.TryStartNoGCRegion(256L << 20), "the runtime could not hold off collections for the measurement");
        try
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            action();
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            // Had the process allocated past the region's budget, a collection would have ended it: the count is then
            // not exact, and the test says so rather than pass or fail on it.
            Assert.True(System.Runtime.GCSettings.LatencyMode == System.Runtime.GCLatencyMode.NoGCRegion,
                "a collection ran during the measurement (the process allocated more than 256 MiB meanwhile)");
            return allocated;
        }
        finally
        {
            if (System.Runtime.GCSettings.LatencyMode == System.Runtime.GCLatencyMode.NoGCRegion) GC.EndNoGCRegion();
        }
    }
}
