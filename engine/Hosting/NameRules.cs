using System.Globalization;
using System.Text;

namespace DifferenceEngine.Hosting;

/// <summary>
/// What every name the engine keeps (host, domain, trust group) may not hold: characters no report can carry as they
/// are. Control characters (C0, DEL and C1: a name is one line of text), Unicode noncharacters (U+FDD0 to U+FDEF and
/// every plane's last two code points: XML refuses U+FFFE and U+FFFF) and lone surrogates (no encoding holds them). Two
/// names that differ only there would otherwise come out the same in a report.
/// </summary>
internal static class NameRules
{
    /// <summary>The first character <paramref name="name"/> may not hold, described ("U+0001 (a control character)"); null when none.</summary>
    public static string? Unprintable(string name)
    {
        var rest = name.AsSpan();
        while (!rest.IsEmpty)
        {
            if (Rune.DecodeFromUtf16(rest, out Rune rune, out int used) != System.Buffers.OperationStatus.Done)
                return $"U+{(int)rest[0]:X4} (a lone surrogate)";
            int v = rune.Value;
            if (Rune.IsControl(rune)) return $"U+{v:X4} (a control character)";
            if (v is >= 0xFDD0 and <= 0xFDEF || (v & 0xFFFE) == 0xFFFE) return $"U+{v:X4} (a Unicode noncharacter)";
            rest = rest[used..];
        }
        return null;
    }

    /// <summary>
    /// Why <paramref name="name"/> cannot name a host, or null: empty, surrounding spaces, wildcards (* ? [ ]: Get-DEHost
    /// and -DEHost match names with them), or a character <see cref="Unprintable"/> refuses.
    /// </summary>
    public static string? BadHostName(string? name) =>
        string.IsNullOrWhiteSpace(name) ? (string.IsNullOrEmpty(name) ? "it is empty" : "it is only white space")
        : name.Trim() != name ? "it has surrounding spaces"
        : name.IndexOfAny(['*', '?', '[', ']']) >= 0 ? "it holds a wildcard (* ? [ ])"
        : Unprintable(name) is { } what ? $"it holds {what}"
        : null;

    /// <summary>"HostNameInvalid" for a name <see cref="BadHostName"/> refuses (every host kind checks its name so).</summary>
    public static void CheckHostName(string? name)
    {
        if (BadHostName(name) is { } why)
            throw new DEException("HostNameInvalid", DEErrorKind.InvalidArgument,
                $"'{name}' cannot name a host: {why}. A host's name is printable text without wildcards.", name);
    }

    /// <summary>"; it holds U+0001 (a control character), which no name may" when <paramref name="name"/> has one, else "".</summary>
    public static string Why(string name) =>
        Unprintable(name) is { } what ? string.Create(CultureInfo.InvariantCulture, $"; it holds {what}, which no name may") : "";
}
