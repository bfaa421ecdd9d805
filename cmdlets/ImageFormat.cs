using Newtonsoft.Json;
using Newtonsoft.Json.Converters;

namespace DifferenceEngine.Commands;

/// <summary>How New-DEDomain -Path reads a file: detected by content, or forced.</summary>
[JsonConverter(typeof(StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum ImageFormat
{
    /// <summary>Detect by content: an ELF core if its ELF header says ET_CORE, else a raw image (even one that begins with another ELF header).</summary>
    Auto,
    /// <summary>A raw, page-aligned image, whatever its first bytes.</summary>
    Raw,
    /// <summary>An ELF core dump (QEMU dump-guest-memory, Linux cores).</summary>
    ElfCore,
}
