using System.Diagnostics;

namespace DifferenceEngine.Tests.Loading;

/// <summary>A <c>sleep 30</c> child to snapshot; killed and reaped on dispose.</summary>
internal sealed class ChildProcess : IDisposable
{
    private readonly Process _process;

    public ChildProcess()
    {
        _process = Process.Start(new ProcessStartInfo("sleep", "30") { UseShellExecute = false })
            ?? throw new InvalidOperationException("could not start sleep");

        // Wait for the dynamic loader to map libc, so the snapshot sees a settled process.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (DateTime.UtcNow < deadline && !File.ReadAllText($"/proc/{Id}/maps").Contains("libc", StringComparison.Ordinal))
        {
            Thread.Sleep(20);
        }
    }

    public int Id => _process.Id;

    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
        }

        _process.WaitForExit();
    }

    public void Dispose()
    {
        try
        {
            Kill();
        }
        finally
        {
            _process.Dispose();
        }
    }
}
