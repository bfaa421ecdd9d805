using System.Reflection;
using System.Runtime.InteropServices;

namespace DifferenceEngine.Xen;

/// <summary>
/// Finds libdexen.so: the file named by <c>DE_XEN_SHIM_PATH</c> (tests point it at the build linked against the fake
/// Xen), else the shipped one next to the engine's dll or under runtimes/linux-&lt;arch&gt;/native there.
/// </summary>
internal static class XenLibraryResolver
{
    internal const string ShimPathVariable = "DE_XEN_SHIM_PATH";
    internal const string FileName = "libdexen.so";

    private static int registered;

    /// <summary>Installs the resolver on the engine assembly, once; it answers only for the shim's name.</summary>
    internal static void Register()
    {
        if (Interlocked.Exchange(ref registered, 1) == 0)
        {
            NativeLibrary.SetDllImportResolver(typeof(XenLibraryResolver).Assembly, Resolve);
        }
    }

    /// <summary>
    /// True when the library at <paramref name="path"/> is a shim linked against the fake Xen (tests/native): loaded, it
    /// resolves fakexen_reset, which the fake exports and no real Xen library does (dlsym through the shim's handle also
    /// searches the libraries it needs). False for anything else, a file that does not exist or does not load included.
    /// A library that is not the fake is unloaded again.
    /// </summary>
    internal static bool IsFakeShim(string path)
    {
        if (string.IsNullOrEmpty(path) || !File.Exists(path) || !NativeLibrary.TryLoad(path, out nint library))
        {
            return false;
        }
        if (NativeLibrary.TryGetExport(library, "fakexen_reset", out _))
        {
            return true;
        }
        NativeLibrary.Free(library);
        return false;
    }

    /// <summary>The files tried, in order; the environment variable, when set, is the only one.</summary>
    internal static IReadOnlyList<string> Candidates()
    {
        string? configured = Environment.GetEnvironmentVariable(ShimPathVariable);
        if (!string.IsNullOrEmpty(configured))
        {
            return [configured];
        }
        string location = typeof(XenLibraryResolver).Assembly.Location;
        string folder = string.IsNullOrEmpty(location) ? AppContext.BaseDirectory : Path.GetDirectoryName(location)!;
        string arch = RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        return [Path.Combine(folder, FileName), Path.Combine(folder, "runtimes", $"linux-{arch}", "native", FileName)];
    }

    private static nint Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (libraryName != XenNative.Library)
        {
            return 0;
        }
        foreach (string candidate in Candidates())
        {
            if (File.Exists(candidate))
            {
                return NativeLibrary.Load(candidate);
            }
        }
        return 0;
    }
}
