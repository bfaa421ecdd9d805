using Newtonsoft.Json;
using Newtonsoft.Json.Converters;

namespace DifferenceEngine.Loading;

/// <summary>What kind of real memory a <see cref="MemorySource"/> reads.</summary>
[JsonConverter(typeof(StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum MemorySourceFormat
{
    /// <summary>A flat file of guest-physical memory, page 0 first.</summary>
    RawImage,

    /// <summary>An ELF core dump: QEMU <c>dump-guest-memory</c>, gdb <c>gcore</c> or a kernel core.</summary>
    ElfCore,

    /// <summary>A live Linux process read through /proc/PID/mem.</summary>
    Process,
}
