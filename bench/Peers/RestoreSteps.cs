namespace DifferenceEngine.Bench.Peers;

/// <summary>
/// Puts a kernel facility back step by step, each step whatever became of the ones before: a step that fails (swapoff of a
/// zram device that never became swap, a knob the kernel refuses) is reported and the next still runs, so that one failure
/// cannot leave zram0 initialized or KSM running for the next run to find in use. Kept free of other bench code (the
/// tests compile this file alone).
/// </summary>
internal static class RestoreSteps
{
    /// <summary>Runs every step in order; returns the names of those that failed (each reported on <paramref name="errors"/>).</summary>
    public static IReadOnlyList<string> Run(string what, TextWriter errors, params (string Step, Action Action)[] steps)
    {
        var failed = new List<string>();
        foreach (var (step, action) in steps)
        {
            try
            {
                action();
            }
            catch (Exception e)
            {
                failed.Add(step);
                errors.WriteLine($"{what}: could not {step}: {e.Message}");
            }
        }
        return failed;
    }

    /// <summary>
    /// <see cref="Run(string, TextWriter, (string, Action)[])"/>, failures reported on standard error; then, if any step
    /// failed, throws: every step has run, and the comparison does not go on as if the kernel were put back.
    /// </summary>
    public static void Run(string what, params (string Step, Action Action)[] steps)
    {
        var failed = Run(what, Console.Error, steps);
        if (failed.Count > 0)
            throw new InvalidOperationException($"{what} not put back: could not {string.Join("; ", failed)} (every other step ran).");
    }

    /// <summary>
    /// Runs <paramref name="setUp"/>; if it throws, puts everything back at once through <paramref name="guard"/> (the
    /// restore registered before the first change) and rethrows: a half-made setup is never left for the process's exit.
    /// </summary>
    public static void SetUpOrRestore(IDisposable guard, Action setUp)
    {
        try
        {
            setUp();
        }
        catch
        {
            guard.Dispose();
            throw;
        }
    }
}
