namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// SIGSTOP that has taken effect. kill(2) only queues the signal: a thread running on the other core goes on until it
/// next enters the kernel, so a library thread could still answer a request sent right after kill returned (a test that
/// counted on a stopped QEMU got its attach answered). <see cref="Stop"/> returns once every thread of the process is
/// stopped, as /proc/PID/task/TID/stat shows (state T): it waits for that state, not for a time.
/// </summary>
internal static class StoppedProcess
{
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    private const int SIGSTOP = 19;
    private const int SIGCONT = 18;

    /// <summary>Stops the process and waits until all its threads are stopped.</summary>
    public static void Stop(int pid)
    {
        Assert.Equal(0, Kill(pid, SIGSTOP));
        var spin = new SpinWait();
        while (!AllStopped(pid)) spin.SpinOnce(sleep1Threshold: 20);
    }

    /// <summary>Lets it run again (SIGCONT).</summary>
    public static void Continue(int pid) => Assert.Equal(0, Kill(pid, SIGCONT));

    private static bool AllStopped(int pid)
    {
        foreach (string task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
        {
            string stat;
            try
            {
                stat = File.ReadAllText(Path.Combine(task, "stat"));
            }
            catch (IOException)
            {
                continue; // a thread that ended meanwhile
            }
            // "TID (comm) S ...": the state follows the last ')' (comm may hold anything).
            char state = stat[stat.LastIndexOf(')') + 2];
            if (state is not ('T' or 't')) return false;
        }
        return true;
    }
}
