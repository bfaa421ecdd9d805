namespace DifferenceEngine.Bench.Compare;

/// <summary>
/// compare [--path IMAGE...] [--out DIR] [--quick] [--pwsh PATH]: the whole-run comparison on real memory.
/// </summary>
internal static class CompareCommand
{
    public static int Run(string[] args)
    {
        var options = new CompareOptions();
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
                case "--quick":
                    options.Quick = true;
                    break;
                case "-h" or "--help":
                    Console.WriteLine("usage: compare [--path IMAGE...] [--out DIR] [--quick] [--pwsh PATH]");
                    Console.WriteLine("  --path   raw images to load (default: snapshots of several live programs it starts)");
                    Console.WriteLine("  --out    where compare.csv and compare.md go (default: out/compare)");
                    Console.WriteLine("  --quick  two small inputs, one codec: the CI smoke run (KSM and zram still run where available)");
                    Console.WriteLine("  --pwsh   the pwsh (or pwsh.dll) to start for the PowerShell inputs");
                    return 0;
                default:
                    Console.Error.WriteLine($"compare: unknown or incomplete argument '{args[i]}' (see --help).");
                    return 2;
            }
        }
        foreach (string path in options.Paths)
        {
            if (!File.Exists(path))
            {
                Console.Error.WriteLine($"compare: {path} does not exist.");
                return 2;
            }
        }
        return new CompareRunner(options).Run();
    }
}

internal sealed class CompareOptions
{
    public List<string> Paths { get; } = [];
    public string OutDir { get; set; } = Path.Combine("out", "compare");
    public bool Quick { get; set; }
    public string? Pwsh { get; set; }
}
