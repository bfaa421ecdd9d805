using System.Runtime.InteropServices;

namespace DifferenceEngine.Reports;

/// <summary>The machine a report was made on: its name, cores, memory, OS and .NET runtime.</summary>
public sealed record MachineInfo(string Name, int ProcessorCount, long MemoryBytes, string OperatingSystem, string Runtime)
{
    /// <summary>This machine; memory is what .NET may use (a container's limit when there is one).</summary>
    public static MachineInfo Current() =>
        new(Environment.MachineName, Environment.ProcessorCount, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes,
            RuntimeInformation.OSDescription, RuntimeInformation.FrameworkDescription);
}
