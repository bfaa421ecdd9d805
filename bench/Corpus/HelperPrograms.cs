using System.Diagnostics;

namespace DifferenceEngine.Bench.Corpus;

/// <summary>A program to start so its memory can be snapshotted: it prints READY once settled, then waits on stdin.</summary>
internal sealed record ProgramSpec(string Label, string FileName, IReadOnlyList<string> Arguments, bool Small = false);

/// <summary>The live programs whose memory the benchmarks and the comparison use, and starting them.</summary>
internal static class HelperPrograms
{
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(60);

    /// <summary>The python3 of the distribution first: a pyenv shim on PATH is a script that only later becomes python.</summary>
    public static string? Python => File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : FindOnPath("python3");

    /// <summary>
    /// Several different programs, as the demo uses: two PowerShell sessions (one that did some work), Perl, Python
    /// (when present) and a shell. <paramref name="pwsh"/> is a pwsh executable or a pwsh.dll run by the dotnet muxer.
    /// </summary>
    public static List<ProgramSpec> Default(string? pwsh, Action<string> log)
    {
        var list = new List<ProgramSpec>();
        var (pwshFile, pwshPrefix) = ResolvePwsh(pwsh);
        if (pwshFile is null)
        {
            log("pwsh: not found (give --pwsh PATH; build.ps1 passes the pwsh that runs it): the two PowerShell inputs are skipped.");
        }
        else
        {
            const string wait = "Import-Module Microsoft.PowerShell.Utility; [Console]::Out.WriteLine('READY'); $null = [Console]::In.ReadLine()";
            list.Add(new ProgramSpec("pwsh-a", pwshFile, [.. pwshPrefix, "-NoProfile", "-NonInteractive", "-Command", wait]));
            list.Add(new ProgramSpec("pwsh-b", pwshFile,
                [.. pwshPrefix, "-NoProfile", "-NonInteractive", "-Command", "Get-ChildItem / | Out-Null; Get-Command | Out-Null; " + wait]));
        }

        if (FindOnPath("perl") is { } perl)
        {
            list.Add(new ProgramSpec("perl", perl,
                ["-MPOSIX", "-MData::Dumper", "-MFile::Find", "-e", "$| = 1; my %h = map { $_ => \"x\" x 64 } 1..20000; print \"READY\\n\"; <STDIN>;"],
                Small: true));
        }
        else
        {
            log("perl: not found: skipped.");
        }

        if (Python is { } python)
        {
            list.Add(new ProgramSpec("python", python,
                ["-c", "import json, decimal, email, http.client, sqlite3, sys; print('READY', flush=True); sys.stdin.readline()"]));
        }
        else
        {
            log("python3: not found: skipped.");
        }

        if (FindOnPath("bash") is { } bash)
        {
            list.Add(new ProgramSpec("bash", bash, ["-c", "echo READY; read line"], Small: true));
        }

        return list;
    }

    /// <summary>A python3 holding enough live objects (dicts, lists, strings, floats) that its heap is more than start-up state.</summary>
    public static ProgramSpec PythonWithData(string python, string label) => new(label, python, ["-c", """
        import sys, json, re, collections, decimal, random, time
        data = [{"id": i, "name": "item%d" % i, "tags": ["a%d" % (i % 7), "b"], "score": i * 0.5} for i in range(20000)]
        index = collections.defaultdict(list)
        for d in data:
            index[d["tags"][0]].append(d)
        blob = json.dumps(data[:2000])
        words = re.findall(r"[a-z]+[0-9]*", blob)
        print("READY", flush=True)
        sys.stdin.readline()
        """]);

    /// <summary>Starts the program and waits for its READY line; the caller disposes it (which ends it).</summary>
    public static RunningProgram Start(ProgramSpec spec)
    {
        var info = new ProcessStartInfo(spec.FileName)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string a in spec.Arguments) info.ArgumentList.Add(a);
        var process = Process.Start(info) ?? throw new InvalidOperationException($"{spec.Label}: could not start {spec.FileName}.");
        var running = new RunningProgram(spec.Label, process);
        try
        {
            process.ErrorDataReceived += static (_, _) => { };
            process.BeginErrorReadLine();
            Task<string?> line = process.StandardOutput.ReadLineAsync();
            if (!line.Wait(ReadyTimeout) || line.Result is not { } text || !text.StartsWith("READY", StringComparison.Ordinal))
                throw new InvalidOperationException($"{spec.Label}: {spec.FileName} did not print READY within {ReadyTimeout.TotalSeconds:0} s.");
            return running;
        }
        catch
        {
            running.Dispose();
            throw;
        }
    }

    public static string? FindOnPath(string name)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    private static (string? File, string[] Prefix) ResolvePwsh(string? pwsh)
    {
        if (string.IsNullOrEmpty(pwsh)) return (FindOnPath("pwsh"), []);
        if (pwsh.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
        {
            // The pinned dotnet tool: its pwsh.dll runs under the muxer that runs us.
            string? dotnet = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath : FindOnPath("dotnet");
            return dotnet is null ? (null, []) : (dotnet, [pwsh]);
        }
        return (pwsh, []);
    }
}

/// <summary>A started helper program; disposing it ends it.</summary>
internal sealed class RunningProgram(string label, Process process) : IDisposable
{
    public string Label { get; } = label;
    public int Id => process.Id;

    public void Dispose()
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
        process.Dispose();
    }
}
