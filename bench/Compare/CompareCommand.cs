namespace DifferenceEngine.Bench.Compare;

/// <summary>
/// compare [--path IMAGE...] [--out DIR] [--quick] [--pwsh PATH]: the whole-run comparison on real memory.
/// </summary>
internal static class CompareCommand
{
    public static int Run(string[] args)
    {
        var options = new CompareOptions();
        string? guests = null, library = null, journals = null, images = null;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--path":
                    while (i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal)) options.Paths.Add(args[++i]);
                    break;
                case "--out" when i + 1 < args.Length:
                    options.OutDir = args[++i];
                    break;
                case "--pwsh" when i + 1 < args.Length:
                    options.Pwsh = args[++i];
                    break;
                case "--guests" when i + 1 < args.Length:
                    guests = args[++i];
                    break;
                case "--deqemu" when i + 1 < args.Length:
                    library = args[++i];
                    break;
                case "--images" when i + 1 < args.Length:
                    images = args[++i];
                    break;
                case "--journals" when i + 1 < args.Length:
                    journals = args[++i];
                    break;
                case "--quick":
                    options.Quick = true;
                    break;
                case "--keep" when i + 1 < args.Length:
                    options.Keep = args[++i];
                    break;
                case "-h" or "--help":
                    Console.WriteLine("usage: compare [--path IMAGE...] [--out DIR] [--quick] [--pwsh PATH] [--keep DIR]");
                    Console.WriteLine("       compare --guests DIR --deqemu LIBRARY [--images DIR] [--journals DIR] [--out DIR] [--quick]");
                    Console.WriteLine("  --path   raw images to load (default: snapshots of several live programs it starts)");
                    Console.WriteLine("  --out    where compare.csv and compare.md go (default: out/compare)");
                    Console.WriteLine("  --quick  two small inputs, one codec: the CI smoke run (KSM and zram still run where available)");
                    Console.WriteLine("  --pwsh   the pwsh (or pwsh.dll) to start for the PowerShell inputs");
                    Console.WriteLine("  --keep   keep the program snapshots in DIR (raw images, 0600), to compare two builds on the same memory with --path");
                    Console.WriteLine("  --guests live QEMU guests instead: the test guests in DIR (vmlinuz, initramfs.cpio.gz) run with no engine,");
                    Console.WriteLine("           with the engine as their pager (libdeqemu.so at --deqemu), and with KSM + zram; guests.md in --out;");
                    Console.WriteLine("           --images: where to write the guests' RAM (raw images, for compare --path)");
                    return 0;
                default:
                    Console.Error.WriteLine($"compare: unknown or incomplete argument '{args[i]}' (see --help).");
                    return 2;
            }
        }
        if (guests is not null)
        {
            foreach (string need in new[] { Path.Combine(guests, "vmlinuz"), Path.Combine(guests, "initramfs.cpio.gz"), library ?? "(--deqemu)" })
            {
                if (!File.Exists(need))
                {
                    Console.Error.WriteLine($"compare --guests: {need} does not exist (build.ps1 -Task Guests makes the guests; native/ the library).");
                    return 2;
                }
            }
            return new GuestsRunner(new GuestsOptions
            {
                GuestsDir = guests, Library = Path.GetFullPath(library!), OutDir = options.OutDir, Quick = options.Quick, JournalDirectory = journals,
                ImagesDir = images,
            }).Run();
        }
        foreach (string path in options.Paths)
        {
            if (BadImage(path) is { } why)
            {
                Console.Error.WriteLine($"compare: {path}: {why}");
                return 2;
            }
        }
        return new CompareRunner(options).Run();
    }

    /// <summary>Why <paramref name="path"/> cannot be an input (a raw image of whole 4 KiB pages, readable); null when it can.</summary>
    internal static string? BadImage(string path)
    {
        if (Directory.Exists(path)) return "a directory, not a raw image.";
        if (!File.Exists(path)) return "does not exist.";
        try
        {
            using var file = File.OpenHandle(path);
            long length = RandomAccess.GetLength(file);
            return length == 0 || length % Memory.PageGeometry.PageSize != 0
                ? $"{length} bytes is not a raw image of whole 4 KiB pages."
                : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"cannot be read: {e.Message}";
        }
    }
}

internal sealed class CompareOptions
{
    public List<string> Paths { get; } = [];
    public string OutDir { get; set; } = Path.Combine("out", "compare");
    public bool Quick { get; set; }
    public string? Pwsh { get; set; }

    /// <summary>Where to keep the program snapshots (raw images, 0600) for later runs with --path; null: deleted after the run.</summary>
    public string? Keep { get; set; }
}
