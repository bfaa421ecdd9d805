using System.Runtime.InteropServices;

namespace DifferenceEngine.Stats;

/// <summary>
/// CPU time (user + system) of the calling thread: clock_gettime(CLOCK_THREAD_CPUTIME_ID) on Linux, the scheduler's own
/// count to the nanosecond. (getrusage(RUSAGE_THREAD), used before, counts in scheduler ticks on many kernels: a pass of
/// 2 ms showed 0 CPU time.)
/// </summary>
internal static unsafe partial class ThreadCpu
{
    private const int ClockThreadCpuTime = 3;
    private const int RusageThread = 1;
    private static readonly bool Supported = OperatingSystem.IsLinux();

    /// <summary>The calling thread's CPU time so far, in TimeSpan ticks; 0 where the platform cannot tell.</summary>
    public static long NowTicks()
    {
        if (!Supported) return 0;
        // struct timespec: tv_sec, tv_nsec, two longs on 64-bit Linux.
        long* time = stackalloc long[2];
        if (ClockGetTime(ClockThreadCpuTime, time) == 0) return time[0] * TimeSpan.TicksPerSecond + time[1] / 100;
        // struct rusage: two struct timevals (ru_utime, ru_stime) then 14 longs; 18 longs in all on 64-bit Linux.
        long* usage = stackalloc long[18];
        if (GetRusage(RusageThread, usage) != 0) return 0;
        long micros = usage[0] * 1_000_000 + usage[1] + usage[2] * 1_000_000 + usage[3];
        return micros * 10;
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, long* time);

    [LibraryImport("libc", EntryPoint = "getrusage")]
    private static partial int GetRusage(int who, long* usage);
}
