using DifferenceEngine.Loading;

namespace DifferenceEngine.Tests.Loading;

public class KernelThreadTests
{
    [Fact]
    public void AKernelThreadCannotBeSnapshottedAndTheErrorSaysWhy()
    {
        // Kernel threads are alive but have no user memory: /proc/PID/status has no VmSize line. Root and other users
        // alike are told that, not that a permission is missing.
        int? kthread = Directory.EnumerateDirectories("/proc")
            .Select(d => int.TryParse(Path.GetFileName(d), out int pid) ? pid : (int?)null)
            .Where(pid => pid is not null)
            .FirstOrDefault(pid =>
            {
                try { return !File.ReadLines($"/proc/{pid}/status").Any(l => l.StartsWith("VmSize:", StringComparison.Ordinal)); }
                catch (IOException) { return false; }
            });
        if (kthread is null) return; // no kernel thread visible in this pid namespace (a container): nothing to check
        var ex = Assert.Throws<DEException>(() => MemorySource.OpenProcess(kthread.Value).Dispose());
        Assert.Equal("ProcessUnreadable", ex.ErrorId);
        Assert.Contains("kernel thread", ex.Message);
    }
}
