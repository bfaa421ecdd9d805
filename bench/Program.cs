using BenchmarkDotNet.Running;
using DifferenceEngine.Bench;
using DifferenceEngine.Bench.Compare;
using DifferenceEngine.Bench.Peers;

// compare: the whole-run comparison on real memory, with KSM and zram side by side.
// ksm-hold: (hidden) a child of compare that holds one image in mergeable anonymous memory for KSM.
// Anything else: BenchmarkDotNet's switcher (--filter '*' runs every benchmark; --job Dry for a smoke run).
if (args.Length > 0 && args[0] == "compare") return CompareCommand.Run(args[1..]);
// fleet: the colocation model's predictions against the embedded host, alone, in pairs and in triples (docs/FLEET.md).
if (args.Length > 0 && args[0] == "fleet") return DifferenceEngine.Bench.Fleet.FleetAccuracy.Run(args[1..]);
// fingerprint-loop: (for profiling) fingerprints one image over and over.
if (args.Length > 0 && args[0] == "fingerprint-loop") return DifferenceEngine.Bench.Fleet.FingerprintBenchmark.Loop(args[1..]);
if (args.Length > 0 && args[0] == KsmHold.Verb) return KsmHold.Run(args[1..]);

var config = BenchConfig.Create(args);
var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config).ToArray();
if (summaries.Length == 0) return 0;
Table2Report.Write(summaries);
bool failed = summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success));
return failed ? 1 : 0;
