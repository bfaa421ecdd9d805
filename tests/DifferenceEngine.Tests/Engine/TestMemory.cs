using System.Diagnostics;
using System.Security.Cryptography;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Loading;

namespace DifferenceEngine.Tests.Engine;

/// <summary>Test inputs: random images with planted duplicates, temp files, live processes, independent page counts.</summary>
internal static class TestMemory
{
    public const int Page = 4096;

    /// <summary>
    /// Random pages where about a fifth are zero and a fifth repeat one of a few "library" pages,
    /// the rest unique. Deterministic for a seed.
    /// </summary>
    public static byte[][] PlantedImage(int pages, int seed, byte[][]? library = null)
    {
        var rng = new Random(seed);
        library ??= Enumerable.Range(0, 16).Select(i => RandomPage(new Random(1000 + i))).ToArray();
        var image = new byte[pages][];
        for (int i = 0; i < pages; i++)
        {
            int kind = rng.Next(10);
            image[i] = kind switch
            {
                < 2 => new byte[Page],
                < 4 => (byte[])library[rng.Next(library.Length)].Clone(),
                _ => RandomPage(rng),
            };
        }
        return image;
    }

    public static byte[] RandomPage(Random rng)
    {
        var p = new byte[Page];
        rng.NextBytes(p);
        return p;
    }

    /// <summary>Writes pages as a raw image to a private temp file and returns its path.</summary>
    public static string WriteRaw(TempDir dir, string name, byte[][] pages)
    {
        string path = Path.Combine(dir.Path, name);
        using var f = File.Create(path);
        foreach (var p in pages) f.Write(p);
        return path;
    }

    public static Domain LoadRaw(DEHost host, TempDir dir, string name, byte[][] pages, DomainOptions? options = null)
    {
        using var src = MemorySource.OpenFile(WriteRaw(dir, name + ".img", pages));
        return host.LoadDomain(name, src, options);
    }

    /// <summary>Every page of a domain, read through the guest path.</summary>
    public static byte[][] ReadAll(Domain d)
    {
        var pages = new byte[d.PageCount][];
        for (long g = 0; g < d.PageCount; g++) pages[g] = d.ReadPage(g);
        return pages;
    }

    /// <summary>
    /// The expected result of perfect sharing, counted with SHA-256 content keys (not the engine's
    /// xxHash3 or its tables): zero pages, pages whose content occurs at least twice, distinct such contents.
    /// </summary>
    public static (long Zero, long Shared, long DistinctShared) ExpectedSharing(IEnumerable<byte[]> pages)
    {
        var counts = new Dictionary<string, int>();
        long zero = 0;
        foreach (var p in pages)
        {
            if (p.AsSpan().IndexOfAnyExcept((byte)0) < 0) { zero++; continue; }
            string key = Convert.ToHexString(SHA256.HashData(p));
            counts[key] = counts.GetValueOrDefault(key) + 1;
        }
        var dup = counts.Values.Where(c => c >= 2).ToArray();
        return (zero, dup.Sum(), dup.Length);
    }

    /// <summary>Counts pages by state and distinct shared frames by walking every domain's entries.</summary>
    public static (long Private, long Zero, long Shared, long DistinctSharedFrames) Census(IEnumerable<Domain> domains)
    {
        long priv = 0, zero = 0, shared = 0;
        var frames = new HashSet<uint>();
        foreach (var d in domains)
            for (long g = 0; g < d.PageCount; g++)
            {
                ulong e = d.PeekEntry(g);
                switch (PageEntry.State(e))
                {
                    case PageState.Private: priv++; break;
                    case PageState.Zero: zero++; break;
                    case PageState.Shared: shared++; frames.Add(PageEntry.Frame(e)); break;
                }
            }
        return (priv, zero, shared, frames.Count);
    }

    /// <summary>Frames in use must be exactly the private pages plus the distinct shared frames.</summary>
    public static void AssertFrameAccounting(DEHost host)
    {
        var c = Census(host.Domains);
        Assert.Equal(c.Private + c.DistinctSharedFrames, host.GetStats().FramesInUse);
    }

    /// <summary>A small live process with real, varied memory (a Python interpreter with modules loaded).</summary>
    public static Process StartRealProcess(string script = "import json, decimal, email, http.client, sqlite3, time; time.sleep(120)")
    {
        var psi = new ProcessStartInfo("python3") { UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        Process p;
        try
        {
            p = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            p = Process.Start(new ProcessStartInfo("sleep", "120") { UseShellExecute = false })!;
        }
        Thread.Sleep(700); // let the interpreter import its modules
        return p;
    }

    public static Domain LoadProcess(DEHost host, string name, int pid, DomainOptions? options = null)
    {
        using var src = MemorySource.OpenProcess(pid);
        return host.LoadDomain(name, src, options);
    }
}

/// <summary>A private temp directory removed on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "de-tests-" + Guid.NewGuid().ToString("n"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
