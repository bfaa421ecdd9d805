using System.Globalization;
using System.Runtime.InteropServices;

namespace DifferenceEngine.Bench.Compare;

/// <summary>The machine a comparison ran on, for the report.</summary>
internal sealed record MachineInfo(int Cores, long MemoryBytes, string Kernel, string Cpu, string Os, string Dotnet, DateTimeOffset Date)
{
    public static MachineInfo Capture() => new(
        Environment.ProcessorCount,
        MemTotal(),
        ReadOr("/proc/sys/kernel/osrelease", Environment.OSVersion.VersionString),
        CpuModel(),
        RuntimeInformation.OSDescription,
        RuntimeInformation.FrameworkDescription,
        DateTimeOffset.UtcNow);

    /// <summary>The 1, 5 and 15 minute load averages, to show how busy the shared machine was.</summary>
    public static string LoadAverage() => string.Join(' ', ReadOr("/proc/loadavg", "?").Split(' ').Take(3));

    public override string ToString() =>
        $"{Cores} cores ({Cpu}), {MemoryBytes / 1073741824.0:0.0} GiB, kernel {Kernel}, {Os}, {Dotnet}, {Date:yyyy-MM-dd HH:mm} UTC";

    private static long MemTotal()
    {
        foreach (string line in ReadOr("/proc/meminfo", "").Split('\n'))
        {
            if (!line.StartsWith("MemTotal:", StringComparison.Ordinal)) continue;
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return long.Parse(f[1], CultureInfo.InvariantCulture) * 1024;
        }
        return 0;
    }

    private static string CpuModel()
    {
        foreach (string line in ReadOr("/proc/cpuinfo", "").Split('\n'))
            if (line.StartsWith("model name", StringComparison.Ordinal)) return line[(line.IndexOf(':') + 1)..].Trim();
        return RuntimeInformation.ProcessArchitecture.ToString();
    }

    private static string ReadOr(string path, string fallback)
    {
        try
        {
            return File.ReadAllText(path).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return fallback;
        }
    }
}
