using System.Globalization;

namespace DifferenceEngine.Bench.Peers;

/// <summary>Reading and writing the kernel's knobs (one value per file).</summary>
internal static class Sysfs
{
    public static string Read(string path) => File.ReadAllText(path).Trim();

    public static long ReadLong(string path) => long.Parse(Read(path), CultureInfo.InvariantCulture);

    /// <summary>The selected value of a choice file such as "[none] scan-time" or "lzo [lzo-rle] lz4".</summary>
    public static string Selected(string text)
    {
        int open = text.IndexOf('[');
        int close = text.IndexOf(']', open + 1);
        return open >= 0 && close > open ? text[(open + 1)..close] : text;
    }

    /// <summary>Every value of a choice file, the brackets removed.</summary>
    public static string[] Choices(string text) =>
        text.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(c => c.Trim('[', ']')).ToArray();

    /// <summary>Writes a value in one write(2), as sysfs wants.</summary>
    public static void Write(string path, string value)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1, FileOptions.None);
        var bytes = System.Text.Encoding.ASCII.GetBytes(value);
        stream.Write(bytes);
    }

    public static void Write(string path, long value) => Write(path, value.ToString(CultureInfo.InvariantCulture));
}

/// <summary>
/// Makes sure the machine's KSM and zram are put back whatever happens: restore actions run once, from the
/// finally that owns them, or on Ctrl-C or SIGTERM (ProcessExit) if the process is stopped first. One comparison
/// at a time touches the kernel: a lock file keeps two runs on one machine from fighting over the knobs.
/// </summary>
internal static class PeerGuard
{
    private const string LockPath = "/tmp/difference-engine-peers.lock";
    private static readonly object Gate = new();
    private static readonly List<(string Name, Action Restore)> Pending = [];
    private static bool _hooked;

    public static CancellationTokenSource Cancel { get; } = new();

    /// <summary>Takes the machine-wide lock, waiting up to <paramref name="wait"/>; null (and why) when another run holds it.</summary>
    public static FileStream? TryLock(TimeSpan wait, out string? why)
    {
        var deadline = DateTime.UtcNow + wait;
        while (true)
        {
            try
            {
                why = null;
                // FileShare.None is an exclusive flock on Unix, released when the process ends, however it ends.
                return new FileStream(LockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(500);
            }
            catch (IOException e)
            {
                why = $"another comparison holds {LockPath} ({e.Message})";
                return null;
            }
        }
    }

    /// <summary>Registers a restore action; returns a handle whose Dispose runs it (once).</summary>
    public static IDisposable Register(string name, Action restore)
    {
        lock (Gate)
        {
            if (!_hooked)
            {
                _hooked = true;
                Console.CancelKeyPress += (_, e) =>
                {
                    // Let the finally blocks put the kernel back; a second Ctrl-C ends the process.
                    if (!Cancel.IsCancellationRequested)
                    {
                        e.Cancel = true;
                        Cancel.Cancel();
                    }
                    else RunAll();
                };
                AppDomain.CurrentDomain.ProcessExit += (_, _) => RunAll();
            }
            Pending.Add((name, restore));
        }
        return new Handle(name, restore);
    }

    private static void RunAll()
    {
        (string Name, Action Restore)[] all;
        lock (Gate)
        {
            all = [.. Pending];
            Pending.Clear();
        }
        foreach (var (name, restore) in all)
        {
            try
            {
                restore();
            }
            catch (Exception e)
            {
                Console.Error.WriteLine($"{name}: restore failed: {e.Message}");
            }
        }
    }

    private sealed class Handle(string name, Action restore) : IDisposable
    {
        public void Dispose()
        {
            bool run;
            lock (Gate) run = Pending.Remove((name, restore));
            if (run) restore();
        }
    }
}
