using System.Globalization;

namespace DifferenceEngine.Loading;

/// <summary>
/// One line of /proc/PID/maps: a mapping's address range, whether it is readable, its name, whether it is shared
/// (MAP_SHARED: writes reach the file, and a page read through it is the file's page) and where in the file it starts.
/// </summary>
internal readonly record struct MapsRegion(ulong Start, ulong End, bool Readable, string Name, bool Shared = false, ulong FileOffset = 0,
    uint DeviceMajor = 0)
{
    public ulong Length => End - Start;

    /// <summary>
    /// Whether its file is on a file system with no device of its own (device major 0): shared memory (tmpfs, memfd,
    /// SysV, shared anonymous), hugetlbfs, and the like, whose holes a read through the mapping fills; also btrfs,
    /// overlayfs and NFS, taken as such to be safe. A file on a disk's file system is left unchanged by a read.
    /// </summary>
    public bool OnDevicelessFileSystem => DeviceMajor == 0;

    /// <summary>Short form for reports, e.g. "7ffd1000-7ffd5000 [vvar]".</summary>
    public override string ToString() => $"{Start:x}-{End:x} {(Name.Length == 0 ? "[anon]" : Name)}";
}

/// <summary>Parses /proc/PID/maps ("start-end perms offset dev inode   pathname").</summary>
internal static class ProcMaps
{
    public static List<MapsRegion> Parse(TextReader reader)
    {
        var regions = new List<MapsRegion>();
        while (reader.ReadLine() is { } line)
        {
            if (TryParseLine(line, out MapsRegion region))
            {
                regions.Add(region);
            }
        }

        return regions;
    }

    public static bool TryParseLine(string line, out MapsRegion region)
    {
        region = default;
        ReadOnlySpan<char> rest = line;
        if (!NextField(ref rest, out ReadOnlySpan<char> range) || !NextField(ref rest, out ReadOnlySpan<char> perms))
        {
            return false;
        }

        int dash = range.IndexOf('-');
        if (dash <= 0
            || !ulong.TryParse(range[..dash], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong start)
            || !ulong.TryParse(range[(dash + 1)..], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong end)
            || end <= start)
        {
            return false;
        }

        // offset, dev and inode come before the name; the name itself may contain spaces.
        NextField(ref rest, out ReadOnlySpan<char> offsetField);
        ulong.TryParse(offsetField, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong offset);
        NextField(ref rest, out ReadOnlySpan<char> device);
        int colon = device.IndexOf(':');
        uint.TryParse(colon > 0 ? device[..colon] : default, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out uint major);
        NextField(ref rest, out _);

        region = new MapsRegion(start, end, perms.Length > 0 && perms[0] == 'r', rest.Trim().ToString(),
            Shared: perms.Length > 3 && perms[3] == 's', FileOffset: offset, DeviceMajor: major);
        return true;
    }

    private static bool NextField(ref ReadOnlySpan<char> rest, out ReadOnlySpan<char> field)
    {
        rest = rest.TrimStart(' ');
        int space = rest.IndexOf(' ');
        field = space < 0 ? rest : rest[..space];
        rest = space < 0 ? [] : rest[space..];
        return field.Length > 0;
    }
}
