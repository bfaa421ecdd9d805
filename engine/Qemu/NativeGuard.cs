using System.Runtime.InteropServices;

namespace DifferenceEngine.Qemu;

/// <summary>
/// The read guard of the engine's mappings of a QEMU guest's RAM served by a native thread (native/deguard.c,
/// libdeguard.so): a hole the engine punched out itself stops the process, any other gets a zero page. A native thread
/// because the reading thread is the engine's own: a managed guard could not answer while the runtime waits to suspend
/// that thread for a garbage collection (docs/QEMU.md). Found as <c>DE_QEMU_GUARD_PATH</c> names it (the tests' build),
/// else next to the engine's dll or under runtimes/linux-&lt;arch&gt;/native there; without it QemuRam serves the guard
/// from a managed thread.
/// </summary>
internal sealed unsafe class NativeGuard : IDisposable
{
    internal const string PathVariable = "DE_QEMU_GUARD_PATH";
    internal const string FileName = "libdeguard.so";

    [StructLayout(LayoutKind.Sequential)]
    internal struct Region
    {
        public ulong Start;
        public ulong Length;
        public long FirstGfn;
    }

    /// <summary>The library's functions (deguard.h).</summary>
    private sealed class Exports(nint start, nint filled, nint stop)
    {
        public int Start(int uffd, int stopFd, Region* regions, int count, ulong* punched, ulong pages, int pid, nint* guard) =>
            ((delegate* unmanaged<int, int, Region*, int, ulong*, ulong, int, nint*, int>)start)(uffd, stopFd, regions, count, punched, pages, pid, guard);

        public ulong Filled(nint guard) => ((delegate* unmanaged<nint, ulong>)filled)(guard);

        public void Stop(nint guard) => ((delegate* unmanaged<nint, void>)stop)(guard);
    }

    private static readonly Lazy<(Exports? Exports, string? Why)> Library = new(Load);

    private nint handle;
    private readonly Exports exports;

    private NativeGuard(nint handle, Exports exports)
    {
        this.handle = handle;
        this.exports = exports;
    }

    /// <summary>Why the native guard cannot be used, or null when it can.</summary>
    public static string? Unavailable => Library.Value.Why;

    /// <summary>
    /// Starts the native guard on <paramref name="uffd"/> for <paramref name="regions"/>, reading the punch marks at
    /// <paramref name="punched"/> (one bit a gfn); null, with why, when the library is missing or the start failed.
    /// </summary>
    public static NativeGuard? TryStart(int uffd, int stopFd, Region[] regions, ulong* punched, long pages, int pid, out string? why)
    {
        var (exports, missing) = Library.Value;
        why = missing;
        if (exports is null) return null;
        nint guard;
        int rc;
        fixed (Region* r = regions) rc = exports.Start(uffd, stopFd, r, regions.Length, punched, (ulong)pages, pid, &guard);
        if (rc != 0)
        {
            why = $"deguard_start: {LinuxNative.Describe(rc)}";
            return null;
        }
        return new NativeGuard(guard, exports);
    }

    /// <summary>Holes given a zero page so far.</summary>
    public long Filled => handle == 0 ? 0 : (long)exports.Filled(handle);

    /// <summary>Waits for the thread to end (its stop descriptor written first) and frees it.</summary>
    public void Dispose()
    {
        if (handle == 0) return;
        exports.Stop(handle);
        handle = 0;
    }

    private static (Exports?, string?) Load()
    {
        string? configured = Environment.GetEnvironmentVariable(PathVariable);
        string location = typeof(NativeGuard).Assembly.Location;
        string folder = string.IsNullOrEmpty(location) ? AppContext.BaseDirectory : Path.GetDirectoryName(location)!;
        string arch = RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        string[] candidates = !string.IsNullOrEmpty(configured)
            ? [configured]
            : [Path.Combine(folder, FileName), Path.Combine(folder, "runtimes", $"linux-{arch}", "native", FileName)];
        foreach (string path in candidates)
        {
            if (!File.Exists(path) || !NativeLibrary.TryLoad(path, out nint library)) continue;
            if (NativeLibrary.TryGetExport(library, "deguard_start", out nint start)
                && NativeLibrary.TryGetExport(library, "deguard_filled", out nint filled)
                && NativeLibrary.TryGetExport(library, "deguard_stop", out nint stop))
                return (new Exports(start, filled, stop), null);
            NativeLibrary.Free(library);
        }
        return (null, $"{FileName} not found ({string.Join(", ", candidates)})");
    }
}
