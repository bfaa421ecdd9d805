using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;

namespace DifferenceEngine.Bench;

/// <summary>The configuration every benchmark runs under.</summary>
internal static class BenchConfig
{
    /// <summary>
    /// One launch, 5 warm-up and 10 measured iterations: enough on a 2-core machine for ratios within one run, and the
    /// whole suite stays within minutes. A --job given on the command line (Dry for the CI smoke run) replaces it.
    /// </summary>
    public static IConfig Create(string[] args)
    {
        var config = ManualConfig.Create(DefaultConfig.Instance).AddDiagnoser(MemoryDiagnoser.Default);
        bool jobGiven = args.Any(a => a is "--job" or "-j" || a.StartsWith("--job=", StringComparison.Ordinal));
        if (!jobGiven)
            config.AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(5).WithIterationCount(10).WithId("Bench"));
        return config;
    }
}
