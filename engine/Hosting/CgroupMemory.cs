using System.Globalization;
using System.Text;

namespace DifferenceEngine.Hosting;

/// <summary>
/// What a process's memory cgroup (cgroup v2, or the v1 memory controller) and its ancestors leave it: the kernel kills a
/// process at its cgroup's limit whatever the machine has free, so a container's limit bounds a load as much as the
/// machine does. Read from <c>/proc/PID/cgroup</c> and <c>/proc/PID/mountinfo</c>, then the limit files of the process's
/// cgroup and of each cgroup above it up to the hierarchy's mount.
/// </summary>
internal static class CgroupMemory
{
    /// <summary>A v1 limit at or above this (the kernel's "unlimited" is 2^63 - 4096, page-rounded) is no limit.</summary>
    private const long V1Unlimited = 1L << 62;

    /// <summary>
    /// What the cgroups leave: <see cref="MemoryBytes"/> of memory (limit minus usage plus the file pages the kernel can
    /// drop, at the tightest level), and <see cref="SwapBytes"/> more in swap where a swap limit applies (null: only the
    /// machine's swap bounds it). <see cref="MemoryAndSwapBytes"/> is v1's combined memory+swap limit's room, if set.
    /// </summary>
    internal readonly record struct Room(long? MemoryBytes, long? SwapBytes, long? MemoryAndSwapBytes, string Cgroup)
    {
        /// <summary>True when some level sets a limit.</summary>
        public bool Limited => MemoryBytes is not null || SwapBytes is not null || MemoryAndSwapBytes is not null;

        /// <summary>Memory and swap together, the machine's free swap bounding the swap part.</summary>
        public long? TotalBytes(long machineSwapFree)
        {
            if (!Limited) return null;
            long swap = Math.Min(SwapBytes ?? machineSwapFree, machineSwapFree);
            long? total = MemoryBytes is long m ? m + swap : null;
            if (MemoryAndSwapBytes is long both) total = total is long t ? Math.Min(t, both) : both;
            return total;
        }
    }

    /// <summary>
    /// The room the memory cgroups of process <paramref name="procDir"/> (a /proc/PID folder; /proc/self by default)
    /// leave, or null where there is no memory cgroup to read (not Linux, no memory controller mounted, a cgroup path
    /// outside the mount, files unreadable). <paramref name="fsRoot"/> prefixes the mount points read (tests).
    /// </summary>
    internal static Room? Read(string procDir = "/proc/self", string fsRoot = "") =>
        Locate(procDir, fsRoot) is Location at ? Walk(at.Directory, at.Top, at.V1) : null;

    /// <summary>The same from the two files' lines.</summary>
    internal static Room? Read(IEnumerable<string> cgroupLines, IEnumerable<string> mountLines, string fsRoot) =>
        Locate(cgroupLines, mountLines, fsRoot) is Location at ? Walk(at.Directory, at.Top, at.V1) : null;

    /// <summary>Where a process's memory cgroup is: its folder, the hierarchy's mount (the walk's top), and which version.</summary>
    internal readonly record struct Location(string Directory, string Top, bool V1);

    /// <summary>The memory cgroup of process <paramref name="procDir"/>; null as for <see cref="Read(string, string)"/>.</summary>
    internal static Location? Locate(string procDir = "/proc/self", string fsRoot = "")
    {
        try
        {
            string[] cgroupLines = File.ReadAllLines(Path.Join(procDir, "cgroup"));
            string[] mountLines = File.ReadAllLines(Path.Join(procDir, "mountinfo"));
            return Locate(cgroupLines, mountLines, fsRoot);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static Location? Locate(IEnumerable<string> cgroupLines, IEnumerable<string> mountLines, string fsRoot)
    {
        string? v2Path = null, v1Path = null;
        foreach (string line in cgroupLines)
        {
            // hierarchy-ID:controller-list:cgroup-path; the path may itself hold ':'.
            int first = line.IndexOf(':'), second = first < 0 ? -1 : line.IndexOf(':', first + 1);
            if (second < 0) continue;
            string id = line[..first], controllers = line[(first + 1)..second], path = line[(second + 1)..];
            if (id == "0" && controllers.Length == 0) v2Path = path;
            else if (controllers.Split(',').Contains("memory")) v1Path = path;
        }
        var v2Mounts = new List<Mount>();
        var v1Mounts = new List<Mount>();
        foreach (string line in mountLines)
        {
            if (Mount.Parse(line) is not Mount m) continue;
            if (m.FsType == "cgroup2") v2Mounts.Add(m);
            else if (m.FsType == "cgroup" && m.SuperOptions.Split(',').Contains("memory")) v1Mounts.Add(m);
        }
        // The v1 memory controller, where mounted, is the one that limits: on a hybrid system cgroup2 holds no controller.
        // A hierarchy may be mounted more than once (bind mounts of parts of it): the first mount that shows the cgroup.
        if (v1Path is not null)
            foreach (var v1 in v1Mounts)
                if (Resolve(v1, v1Path, fsRoot) is string v1Dir && Directory.Exists(v1Dir))
                    return new Location(v1Dir, Path.Join(fsRoot, v1.MountPoint), V1: true);
        if (v2Path is not null)
            foreach (var v2 in v2Mounts)
                if (Resolve(v2, v2Path, fsRoot) is string v2Dir && Directory.Exists(v2Dir))
                    return new Location(v2Dir, Path.Join(fsRoot, v2.MountPoint), V1: false);
        return null;
    }

    /// <summary>The folder of cgroup <paramref name="path"/> under mount <paramref name="m"/>; null outside its root.</summary>
    private static string? Resolve(Mount m, string path, string fsRoot)
    {
        string root = m.Root.TrimEnd('/');
        string relative;
        if (root.Length == 0) relative = path;
        else if (path == root) relative = "/";
        else if (path.StartsWith(root + "/", StringComparison.Ordinal)) relative = path[root.Length..];
        else return null; // a cgroup this mount does not show
        if (relative.Split('/').Contains("..")) return null; // a cgroup outside this namespace's view
        return Path.Join(fsRoot, m.MountPoint, relative).TrimEnd('/') is { Length: > 0 } dir ? dir : "/";
    }

    /// <summary>The tightest room over <paramref name="dir"/> and its parents up to <paramref name="top"/>.</summary>
    private static Room? Walk(string dir, string top, bool v1)
    {
        long? memory = null, swap = null, both = null;
        string topFull = Path.TrimEndingDirectorySeparator(Path.GetFullPath(top));
        string current = Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir));
        if (!Directory.Exists(current)) return null;
        while (true)
        {
            long reclaimable = FileLru(Path.Join(current, "memory.stat"), v1);
            if (v1)
            {
                if (Limit(Path.Join(current, "memory.limit_in_bytes"), v1) is long limit
                    && Number(Path.Join(current, "memory.usage_in_bytes")) is long usage)
                    memory = Min(memory, Math.Max(0, limit - usage + reclaimable));
                if (Limit(Path.Join(current, "memory.memsw.limit_in_bytes"), v1) is long swLimit
                    && Number(Path.Join(current, "memory.memsw.usage_in_bytes")) is long swUsage)
                    both = Min(both, Math.Max(0, swLimit - swUsage + reclaimable));
            }
            else
            {
                if (Limit(Path.Join(current, "memory.max"), v1) is long limit
                    && Number(Path.Join(current, "memory.current")) is long usage)
                    memory = Min(memory, Math.Max(0, limit - usage + reclaimable));
                if (Limit(Path.Join(current, "memory.swap.max"), v1) is long swLimit
                    && Number(Path.Join(current, "memory.swap.current")) is long swUsage)
                    swap = Min(swap, Math.Max(0, swLimit - swUsage));
            }
            if (current.Length <= topFull.Length || string.Equals(current, topFull, StringComparison.Ordinal)) break;
            string? parent = Path.GetDirectoryName(current);
            if (parent is null || parent.Length < topFull.Length) break;
            current = parent;
        }
        return new Room(memory, swap, both, dir);

        static long? Min(long? a, long b) => a is long x ? Math.Min(x, b) : b;
    }

    /// <summary>A limit file's value; null for none ("max", v1's unlimited), a missing or unreadable file.</summary>
    private static long? Limit(string file, bool v1) =>
        Number(file) is long value && !(v1 && value >= V1Unlimited) ? value : null; // "max" is no number either

    private static long? Number(string file) =>
        ReadText(file) is string text && long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long v) ? v : null;

    /// <summary>active_file + inactive_file of memory.stat (v1: the hierarchy's total_ figures): what reclaim can drop.</summary>
    private static long FileLru(string statFile, bool v1)
    {
        long sum = 0;
        try
        {
            if (!File.Exists(statFile)) return 0;
            foreach (string line in File.ReadLines(statFile))
            {
                int space = line.IndexOf(' ');
                if (space < 0) continue;
                string key = line[..space];
                if (key != (v1 ? "total_active_file" : "active_file") && key != (v1 ? "total_inactive_file" : "inactive_file"))
                    continue;
                if (long.TryParse(line.AsSpan(space + 1), NumberStyles.None, CultureInfo.InvariantCulture, out long v)) sum += v;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
        return sum;
    }

    private static string? ReadText(string file)
    {
        try
        {
            return File.Exists(file) ? File.ReadAllText(file).Trim() : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>One line of /proc/PID/mountinfo: the fields a cgroup needs.</summary>
    private readonly record struct Mount(string Root, string MountPoint, string FsType, string SuperOptions)
    {
        /// <summary>"36 35 98:0 /root /mnt opts [optional...] - fstype source superopts"; null for a line that is not one.</summary>
        public static Mount? Parse(string line)
        {
            string[] f = line.Split(' ');
            int dash = Array.IndexOf(f, "-");
            if (dash < 6 || f.Length < dash + 4) return null;
            return new Mount(Unescape(f[3]), Unescape(f[4]), f[dash + 1], f[dash + 3]);
        }

        /// <summary>mountinfo writes space, tab, newline and backslash as \ooo octal.</summary>
        private static string Unescape(string s)
        {
            if (!s.Contains('\\')) return s;
            var sb = new StringBuilder(s.Length);
            for (int i = 0; i < s.Length; i++)
            {
                if (s[i] == '\\' && IsOctal(s, i + 1))
                {
                    sb.Append((char)Convert.ToInt32(s.Substring(i + 1, 3), 8));
                    i += 3;
                }
                else sb.Append(s[i]);
            }
            return sb.ToString();

            static bool IsOctal(string s, int at) =>
                at + 3 <= s.Length && s[at] is >= '0' and <= '7' && s[at + 1] is >= '0' and <= '7' && s[at + 2] is >= '0' and <= '7';
        }
    }
}
