namespace DifferenceEngine.Tests;

/// <summary>
/// What a test needs from the machine beyond .NET: a program from apt-packages.txt, or the native build's
/// prerequisites. A test that declares a need through <see cref="RequiresFactAttribute"/> or
/// <see cref="RequiresTheoryAttribute"/> is reported as skipped, with the reason, where the need is not met.
/// </summary>
internal static class Requirement
{
    /// <summary>gdb's gcore, for ELF cores of live processes.</summary>
    public const string Gcore = "gcore";

    /// <summary>A Python 3 interpreter: a real program with varied memory to snapshot.</summary>
    public const string Python3 = "python3";

    /// <summary>xdelta3, the delta codec ours is compared with.</summary>
    public const string Xdelta3 = "xdelta3";

    /// <summary>A C compiler, make and Xen's headers (libxen-dev): native/ and the fake Xen can be built.</summary>
    public const string XenBuild = "xen-build";

    /// <summary>
    /// A C compiler and make (libdeqemu.so and its test programs can be built), and a userfaultfd that takes kernel-mode
    /// faults: root, or vm.unprivileged_userfaultfd = 1.
    /// </summary>
    public const string QemuPager = "qemu-pager";

    /// <summary>
    /// qemu-system-x86_64 and the test guests build.ps1 makes in out/guests (-Task Guests, or -Task Test): a Debian cloud
    /// kernel and an initramfs running tests/guest/deworkload.c.
    /// </summary>
    public const string QemuGuests = "qemu-guests";

    /// <summary>
    /// Root, setpriv (util-linux) and the system's /usr/bin/python3 (one another user can run, unlike one under root's
    /// home): a small server can be run as another user (nobody, uid 65534).
    /// </summary>
    public const string OtherUser = "other-user";

    /// <summary>
    /// Root and a memory controller under this process's cgroup that a child cgroup with its own limit can be made in
    /// (cgroup v1's memory hierarchy, or v2 with memory in the cgroup's subtree_control).
    /// </summary>
    public const string MemoryCgroup = "memory-cgroup";

    /// <summary>Root, mount and umount (util-linux): a small tmpfs can be mounted, a disk that is easily filled up.</summary>
    public const string TmpfsMount = "tmpfs-mount";

    /// <summary>The Python the other user runs (<see cref="OtherUser"/>).</summary>
    public const string SystemPython = "/usr/bin/python3";

    private const string XenHeader = "/usr/include/xenctrl.h";
    private const string UnprivilegedUserfaultfd = "/proc/sys/vm/unprivileged_userfaultfd";

    private static readonly Dictionary<string, string> Packages = new()
    {
        [Gcore] = "gdb",
        [Python3] = "python3",
        [Xdelta3] = "xdelta3",
    };

    /// <summary>Why the needs are not met, or null when they all are.</summary>
    public static string? Unmet(params string[] needs)
    {
        var reasons = needs.Select(Unmet).OfType<string>().ToList();
        return reasons.Count == 0 ? null : string.Join("; ", reasons);
    }

    private static string? Unmet(string need)
    {
        if (need == XenBuild)
        {
            var missing = new List<string>();
            if (FindProgram("cc") is null) missing.Add("a C compiler (gcc)");
            if (FindProgram("make") is null) missing.Add("make");
            if (!File.Exists(XenHeader)) missing.Add($"Xen's headers ({XenHeader}, libxen-dev)");
            return missing.Count == 0
                ? null
                : $"needs {string.Join(", ", missing)} to build native/ and the fake Xen; build.ps1 installs them as root (apt-packages.txt)";
        }

        if (need == QemuPager)
        {
            var missing = new List<string>();
            if (FindProgram("cc") is null) missing.Add("a C compiler (gcc)");
            if (FindProgram("make") is null) missing.Add("make");
            if (!Environment.IsPrivilegedProcess &&
                !(File.Exists(UnprivilegedUserfaultfd) && File.ReadAllText(UnprivilegedUserfaultfd).Trim() == "1"))
                missing.Add($"root, or {UnprivilegedUserfaultfd} = 1, for a userfaultfd");
            return missing.Count == 0 ? null : $"needs {string.Join(", ", missing)} to page guest RAM with userfaultfd";
        }

        if (need == OtherUser)
        {
            var missing = new List<string>();
            if (!Environment.IsPrivilegedProcess) missing.Add("root");
            if (FindProgram("setpriv") is null) missing.Add("setpriv (util-linux)");
            if (!File.Exists(SystemPython)) missing.Add($"{SystemPython} (package python3)");
            return missing.Count == 0 ? null : $"needs {string.Join(", ", missing)} to run a helper as another user";
        }

        if (need == TmpfsMount)
        {
            var missing = new List<string>();
            if (!Environment.IsPrivilegedProcess) missing.Add("root");
            if (FindProgram("mount") is null) missing.Add("mount (util-linux)");
            if (FindProgram("umount") is null) missing.Add("umount (util-linux)");
            return missing.Count == 0 ? null : $"needs {string.Join(", ", missing)} to mount a small tmpfs";
        }

        if (need == MemoryCgroup)
        {
            if (!Environment.IsPrivilegedProcess) return "needs root to make a memory cgroup";
            if (DifferenceEngine.Hosting.CgroupMemory.Locate() is not { } at)
                return "needs a memory cgroup controller (cgroup v1 memory or cgroup v2) mounted";
            if (!at.V1 && !(File.Exists(Path.Join(at.Directory, "cgroup.subtree_control")) &&
                            File.ReadAllText(Path.Join(at.Directory, "cgroup.subtree_control")).Split(' ', '\n').Contains("memory")))
                return $"needs the memory controller in {at.Directory}/cgroup.subtree_control to give a child cgroup a limit";
            return null;
        }

        if (need == QemuGuests)
        {
            var missing = new List<string>();
            if (FindProgram("qemu-system-x86_64") is null) missing.Add("qemu-system-x86_64 (package qemu-system-x86)");
            if (!File.Exists(Qemu.TestGuest.Kernel) || !File.Exists(Qemu.TestGuest.Initramfs))
                missing.Add($"the test guests in {Path.GetDirectoryName(Qemu.TestGuest.Kernel)} (build.ps1 -Task Guests)");
            return missing.Count == 0 ? null : $"needs {string.Join(", ", missing)} to boot QEMU guests";
        }

        if (!Packages.TryGetValue(need, out string? package))
        {
            throw new ArgumentException($"Unknown requirement '{need}'.", nameof(need));
        }

        return FindProgram(need) is null
            ? $"needs {need} on PATH (package {package}; build.ps1 installs it as root, apt-packages.txt)"
            : null;
    }

    /// <summary>The full path of an executable file on PATH, or null.</summary>
    public static string? FindProgram(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "")
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, name))
            .FirstOrDefault(path => File.Exists(path) && (OperatingSystem.IsWindows() ||
                (File.GetUnixFileMode(path) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0));
}

/// <summary>A fact that is skipped, with the reason, on a machine that lacks what it needs (<see cref="Requirement"/>).</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class RequiresFactAttribute : FactAttribute
{
    public RequiresFactAttribute(params string[] needs)
    {
        Skip = Requirement.Unmet(needs);
    }
}

/// <summary>A theory that is skipped, with the reason, on a machine that lacks what it needs (<see cref="Requirement"/>).</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class RequiresTheoryAttribute : TheoryAttribute
{
    public RequiresTheoryAttribute(params string[] needs)
    {
        Skip = Requirement.Unmet(needs);
    }
}
