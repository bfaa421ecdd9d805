using System.Diagnostics;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Tests.Loading;

/// <summary>
/// The load guard's reading of the memory cgroup limits (a container's limit): the kernel kills a process at its cgroup's
/// limit whatever the machine has free, so a load is bounded by both. Fake cgroup trees, then a real child cgroup.
/// </summary>
public sealed class CgroupMemoryTests
{
    private const long MiB = 1 << 20;

    private const string V2Mount = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate";
    private const string V1Mount = "37 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory";
    private const string V1Cpu = "33 31 0:30 / /sys/fs/cgroup/cpu rw,relatime shared:7 - cgroup cgroup rw,cpu";

    [Fact]
    public void V2TheTightestLevelBoundsTheRoomAndFilePagesCountAsRoom()
    {
        using var dir = new TempDirectory();
        string b = Tree(dir, "sys/fs/cgroup/a/b");
        Put(b, "memory.max", $"{1024 * MiB}");
        Put(b, "memory.current", $"{100 * MiB}");
        Put(b, "memory.stat", $"anon {80 * MiB}\nfile {25 * MiB}\nactive_file {10 * MiB}\ninactive_file {10 * MiB}\nshmem {5 * MiB}\n");
        Put(b, "memory.swap.max", "max");
        Put(b, "memory.swap.current", "0");
        string a = Tree(dir, "sys/fs/cgroup/a");
        Put(a, "memory.max", $"{512 * MiB}");
        Put(a, "memory.current", $"{200 * MiB}");
        Put(a, "memory.swap.max", $"{64 * MiB}");
        Put(a, "memory.swap.current", $"{16 * MiB}");
        // The mount's own folder is the root cgroup: no memory.max there.
        Put(Tree(dir, "sys/fs/cgroup"), "memory.current", $"{9000 * MiB}");

        var room = CgroupMemory.Read(["0::/a/b"], [V2Mount], dir.Path);

        Assert.NotNull(room);
        Assert.True(room.Value.Limited);
        Assert.Equal(312 * MiB, room.Value.MemoryBytes); // a: 512 - 200 (b: 1024 - 100 + 20 = 944)
        Assert.Equal(48 * MiB, room.Value.SwapBytes);
        Assert.Null(room.Value.MemoryAndSwapBytes);
        Assert.Equal((312 + 48) * MiB, room.Value.TotalBytes(machineSwapFree: 1024 * MiB));
        Assert.Equal((312 + 10) * MiB, room.Value.TotalBytes(machineSwapFree: 10 * MiB)); // the machine's swap is less
        Assert.Equal(Path.Join(dir.Path, "sys/fs/cgroup/a/b"), room.Value.Cgroup);
    }

    [Fact]
    public void V1MemoryAndSwapTogetherBoundTheRoom()
    {
        using var dir = new TempDirectory();
        string x = Tree(dir, "sys/fs/cgroup/memory/pa/x");
        Put(x, "memory.limit_in_bytes", "9223372036854771712"); // v1's unlimited
        Put(x, "memory.usage_in_bytes", $"{30 * MiB}");
        Put(x, "memory.memsw.limit_in_bytes", "9223372036854771712");
        Put(x, "memory.memsw.usage_in_bytes", $"{30 * MiB}");
        string pa = Tree(dir, "sys/fs/cgroup/memory/pa");
        Put(pa, "memory.limit_in_bytes", $"{256 * MiB}");
        Put(pa, "memory.usage_in_bytes", $"{56 * MiB}");
        Put(pa, "memory.memsw.limit_in_bytes", $"{300 * MiB}");
        Put(pa, "memory.memsw.usage_in_bytes", $"{150 * MiB}");
        // v1's usage is the hierarchy's: the total_ figures are what reclaim can drop from it, the local ones are not.
        Put(pa, "memory.stat", $"cache {1 * MiB}\nactive_file {1 * MiB}\ninactive_file {1 * MiB}\ntotal_active_file {4 * MiB}\ntotal_inactive_file {4 * MiB}\n");

        var room = CgroupMemory.Read(["4:memory:/pa/x", "3:cpu:/"], [V1Cpu, V1Mount], dir.Path);

        Assert.NotNull(room);
        Assert.Equal(208 * MiB, room.Value.MemoryBytes);
        Assert.Null(room.Value.SwapBytes);
        Assert.Equal(158 * MiB, room.Value.MemoryAndSwapBytes);
        Assert.Equal(158 * MiB, room.Value.TotalBytes(machineSwapFree: 4096 * MiB));
        Assert.Equal(158 * MiB, room.Value.TotalBytes(machineSwapFree: 0)); // memory alone leaves 208, memory+swap 158
    }

    [Fact]
    public void NoLimitAnywhereLeavesTheMachineFigure()
    {
        using var dir = new TempDirectory();
        string x = Tree(dir, "sys/fs/cgroup/memory/pa/x");
        Put(x, "memory.limit_in_bytes", "9223372036854771712");
        Put(x, "memory.usage_in_bytes", $"{30 * MiB}");
        Put(Tree(dir, "sys/fs/cgroup/memory/pa"), "memory.limit_in_bytes", "9223372036854771712");

        var room = CgroupMemory.Read(["4:memory:/pa/x"], [V1Mount], dir.Path);

        Assert.NotNull(room);
        Assert.False(room.Value.Limited);
        Assert.Null(room.Value.TotalBytes(machineSwapFree: 0));
    }

    [Fact]
    public void OnAHybridSystemTheV1MemoryControllerIsRead()
    {
        using var dir = new TempDirectory();
        Put(Tree(dir, "sys/fs/cgroup/memory/pa"), "memory.limit_in_bytes", $"{64 * MiB}");
        Put(Tree(dir, "sys/fs/cgroup/memory/pa"), "memory.usage_in_bytes", $"{4 * MiB}");
        string unified = "38 31 0:33 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw";
        Put(Tree(dir, "sys/fs/cgroup/unified"), "memory.max", $"{1 * MiB}"); // not this process's limit: v2 holds no memory here

        var room = CgroupMemory.Read(["4:memory:/pa", "0::/"], [unified, V1Mount], dir.Path);

        Assert.Equal(60 * MiB, room?.MemoryBytes);
    }

    [Fact]
    public void AContainersMountShowsItsOwnCgroupAsTheMountsRoot()
    {
        using var dir = new TempDirectory();
        // Without a cgroup namespace: the path is the host's, and the mount's root is that same cgroup.
        string container = "40 31 0:26 /docker/abc /sys/fs/cgroup ro,relatime - cgroup2 cgroup2 rw";
        string root = Tree(dir, "sys/fs/cgroup");
        Put(root, "memory.max", $"{128 * MiB}");
        Put(root, "memory.current", $"{28 * MiB}");
        Assert.Equal(100 * MiB, CgroupMemory.Read(["0::/docker/abc"], [container], dir.Path)?.MemoryBytes);
        string inner = Tree(dir, "sys/fs/cgroup/inner");
        Put(inner, "memory.max", "max");
        Assert.Equal(100 * MiB, CgroupMemory.Read(["0::/docker/abc/inner"], [container], dir.Path)?.MemoryBytes); // the parent's
        // A cgroup the mount does not show (another container's, or one above the namespace) is not read at all.
        Assert.Null(CgroupMemory.Read(["0::/other"], [container], dir.Path));
        Assert.Null(CgroupMemory.Read(["0::/../.."], [V2Mount], dir.Path));
    }

    [Fact]
    public void AHierarchyMountedTwiceIsReadThroughTheMountThatShowsTheCgroup()
    {
        using var dir = new TempDirectory();
        // First a bind mount of another part of the hierarchy (it does not show /a), then the whole of it.
        string part = "41 23 0:26 /other /mnt/other rw,relatime - cgroup2 cgroup2 rw";
        Tree(dir, "mnt/other");
        string a = Tree(dir, "sys/fs/cgroup/a");
        Put(a, "memory.max", $"{50 * MiB}");
        Put(a, "memory.current", $"{10 * MiB}");
        Assert.Equal(40 * MiB, CgroupMemory.Read(["0::/a"], [part, V2Mount], dir.Path)?.MemoryBytes);
    }

    [Fact]
    public void AMountPointWithASpaceIsUnescaped()
    {
        using var dir = new TempDirectory();
        string cg = Tree(dir, "mnt/my cg/x");
        Put(cg, "memory.max", $"{10 * MiB}");
        Put(cg, "memory.current", $"{1 * MiB}");
        string line = @"50 23 0:40 / /mnt/my\040cg rw,relatime - cgroup2 none rw";
        Assert.Equal(9 * MiB, CgroupMemory.Read(["0::/x"], [line], dir.Path)?.MemoryBytes);
    }

    [Fact]
    public void FilesThatAreNotCgroupFilesReadAsNoCgroup()
    {
        using var dir = new TempDirectory();
        Assert.Null(CgroupMemory.Read(["garbage", "", "::", "0:"], [V2Mount], dir.Path)); // no 0:: line
        Assert.Null(CgroupMemory.Read(["0::/a"], ["short line", "", "1 2 3 4 5 6 - cgroup2"], dir.Path)); // no usable mount
        Assert.Null(CgroupMemory.Read(["0::/a"], [V2Mount], dir.Path)); // the folder does not exist
        string a = Tree(dir, "sys/fs/cgroup/a");
        Put(a, "memory.max", "lots");
        Put(a, "memory.current", "-5");
        Assert.False(CgroupMemory.Read(["0::/a"], [V2Mount], dir.Path)?.Limited); // values that are no numbers set no limit
    }

    /// <summary>
    /// A real child cgroup with a 96 MiB limit, a process moved into it: its room as the guard reads it from
    /// /proc/PID/cgroup and /proc/PID/mountinfo is at most the limit, and names that cgroup.
    /// </summary>
    [RequiresFact(Requirement.MemoryCgroup)]
    public void ARealChildCgroupsLimitBoundsItsProcesssRoom()
    {
        var own = CgroupMemory.Locate()!.Value;
        string child = Path.Join(own.Directory, "de-test-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(child);
        using var sleeper = Process.Start(new ProcessStartInfo("sleep", "infinity") { UseShellExecute = false })!;
        try
        {
            File.WriteAllText(Path.Join(child, own.V1 ? "memory.limit_in_bytes" : "memory.max"), $"{96 * MiB}");
            File.WriteAllText(Path.Join(child, "cgroup.procs"), $"{sleeper.Id}");

            var room = CgroupMemory.Read($"/proc/{sleeper.Id}");

            Assert.NotNull(room);
            Assert.Equal(child, room.Value.Cgroup);
            Assert.InRange(room.Value.MemoryBytes ?? -1, 1, 96 * MiB);
            Assert.NotNull(room.Value.TotalBytes(machineSwapFree: 0));
            Assert.InRange(room.Value.TotalBytes(machineSwapFree: 0)!.Value, 1, 96 * MiB);
        }
        finally
        {
            sleeper.Kill();
            sleeper.WaitForExit();
            // A cgroup can be removed once no process is in it; the killed sleeper has left it once reaped.
            Directory.Delete(child);
        }
    }

    private static string Tree(TempDirectory dir, string relative)
    {
        string path = Path.Join(dir.Path, relative);
        Directory.CreateDirectory(path);
        return path;
    }

    private static void Put(string folder, string name, string text) => File.WriteAllText(Path.Join(folder, name), text + "\n");
}
