using DifferenceEngine.Scanning;

namespace DifferenceEngine.Tests.Engine;

/// <summary>A scan held in flight while its host is disposed from another thread: what the scan then ends with.</summary>
internal static class HeldScan
{
    /// <summary>
    /// Starts <paramref name="scan"/> on a thread of its own; its first progress report holds its worker until disposal has
    /// begun (<paramref name="isClosing"/>), so the scan is in flight when <paramref name="dispose"/> runs on another thread.
    /// Returns what the scan threw (null if it returned) once both have ended. Waits on events only, never on time.
    /// </summary>
    public static Exception? DisposeDuring(Func<Action<ScanProgress>, ScanResult> scan, Action dispose, Func<bool> isClosing)
    {
        using var scanning = new ManualResetEventSlim();
        using var closing = new ManualResetEventSlim();
        Exception? failure = null;
        var scanner = new Thread(() => failure = Record.Exception(() => scan(_ =>
        {
            if (scanning.IsSet) return;
            scanning.Set();
            closing.Wait();
        })));
        scanner.Start();
        scanning.Wait();
        var disposer = new Thread(() => dispose());
        disposer.Start();
        // Dispose cancels scans before it waits for them; let the held worker go once it has.
        SpinWait.SpinUntil(isClosing);
        closing.Set();
        disposer.Join();
        scanner.Join();
        return failure;
    }
}

/// <summary>
/// A scan started on a thread of its own and held in its first progress report (inside its first pass, holding the
/// host's scan and pass gates) until disposed, which lets it go and waits for it to end. Events only, never time.
/// </summary>
internal sealed class HeldPass : IDisposable
{
    private readonly ManualResetEventSlim _holding = new();
    private readonly ManualResetEventSlim _release = new();
    private readonly Thread _scan;

    public HeldPass(Hosting.DEHost host, IEnumerable<Domains.Domain>? domains = null, int sliceSize = 16)
    {
        _scan = new Thread(() => host.Scan(domains, new ScanOptions { Parallelism = 1, SliceSize = sliceSize }, _ =>
        {
            if (_holding.IsSet) return;
            _holding.Set();
            _release.Wait();
        }));
        _scan.Start();
        _holding.Wait();
    }

    public void Dispose()
    {
        _release.Set();
        _scan.Join();
        _holding.Dispose();
        _release.Dispose();
    }
}
