namespace DifferenceEngine.Commands;

/// <summary>How New-DEDomain -Path reads a file: detected by content, or forced.</summary>
public enum ImageFormat
{
    /// <summary>Detect by content: an ELF core if the file starts like one, else a raw image.</summary>
    Auto,
    /// <summary>A raw, page-aligned image, whatever its first bytes.</summary>
    Raw,
    /// <summary>An ELF core dump (QEMU dump-guest-memory, Linux cores).</summary>
    ElfCore,
}
