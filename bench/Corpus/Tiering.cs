namespace DifferenceEngine.Bench.Corpus;

/// <summary>
/// Gets the code a benchmark runs to its final (tier-1) form before BenchmarkDotNet measures. A benchmark with an
/// [IterationSetup] runs one invocation per iteration, and the setup's own jitting keeps postponing tier-up: without
/// this the first iterations measure tier-0 code (System.IO.Hashing's xxHash3 ten times slower, for one).
/// </summary>
internal static class Tiering
{
    public static void WarmUp(Action iteration, int rounds = 6)
    {
        for (int i = 0; i < rounds; i++)
        {
            iteration();
            // Tier-up happens in the background once the runtime sees no new tier-0 code for about 100 ms.
            Thread.Sleep(200);
        }
    }
}
