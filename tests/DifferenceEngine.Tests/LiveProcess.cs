using System.Diagnostics;

namespace DifferenceEngine.Tests;

/// <summary>
/// A child process for tests to snapshot, alive until the test ends it: it blocks reading its standard input (a pipe
/// the test holds), so it lives exactly as long as the test says, however slow the machine. It is handed out only
/// once it has said it is ready, so a snapshot always sees the program itself in its settled state (never a shell
/// wrapper in the middle of exec, never an interpreter still importing). Disposing kills it and reaps it.
/// </summary>
internal sealed class LiveProcess : IDisposable
{
    private readonly Process _process;
    private bool _disposed;

    private LiveProcess(Process process)
    {
        _process = process;
    }

    public int Id => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>
    /// <c>cat</c>, a small native program: a line written to it and echoed back proves it is in its read loop, with
    /// the dynamic loader and libc done.
    /// </summary>
    public static LiveProcess Cat()
    {
        var live = Start(new ProcessStartInfo("cat"));
        live._process.StandardInput.WriteLine("ready");
        live._process.StandardInput.Flush();
        live.ExpectReady("cat");
        return live;
    }

    /// <summary>
    /// A Python 3 interpreter (a real program with varied memory) that runs <paramref name="setup"/>, says it is
    /// ready, then waits on its standard input. Tests that use it declare <see cref="Requirement.Python3"/>.
    /// </summary>
    public static LiveProcess Python(string setup = "import json, decimal, email, http.client, sqlite3")
    {
        var psi = new ProcessStartInfo(Requirement.FindProgram(Requirement.Python3)
            ?? throw new InvalidOperationException("python3 is not on PATH: declare [RequiresFact(Requirement.Python3)]."));
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(setup + "\nimport sys\nsys.stdout.write('ready\\n')\nsys.stdout.flush()\nsys.stdin.read()\n");
        var live = Start(psi);
        live.ExpectReady("python3");
        return live;
    }

    /// <summary>Ends the process now (SIGKILL) and reaps it.</summary>
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
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        try
        {
            Kill();
        }
        finally
        {
            _process.Dispose();
        }
    }

    private static LiveProcess Start(ProcessStartInfo psi)
    {
        psi.UseShellExecute = false;
        psi.RedirectStandardInput = true;
        psi.RedirectStandardOutput = true;
        return new LiveProcess(Process.Start(psi) ?? throw new InvalidOperationException($"{psi.FileName} did not start"));
    }

    private void ExpectReady(string name)
    {
        // Blocks until the line comes or the process ends (null): no clock involved.
        string? line = _process.StandardOutput.ReadLine();
        if (line != "ready")
        {
            Dispose();
            throw new InvalidOperationException($"{name} did not get ready: it said '{line ?? "<end of output>"}'.");
        }
    }
}
