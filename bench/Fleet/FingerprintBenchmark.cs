using BenchmarkDotNet.Attributes;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Fleet;

namespace DifferenceEngine.Bench.Fleet;

/// <summary>
/// Get-DEFingerprint's pass, per page, on one core: a memory image held in memory (DE_FINGERPRINT_IMAGE, or the Compare
/// run's first guest image out/compare/guest-images/app.img when there is one, else the corpus pages 32 times over with
/// a word changed in each copy) fed page by page to a builder, then its second looks. The goal is at least 1 GiB/s of
/// guest memory per core: 4096 B / the time per page.
/// </summary>
[MemoryDiagnoser]
public class FingerprintBenchmark
{
    private byte[] _image = [];
    private int _pages;
    private int _shift = FingerprintBuilder.DefaultSampleShift;
    private FleetKey _key = FleetKey.FromSecret(new byte[32]);

    [GlobalSetup]
    public void Load()
    {
        string? path = Environment.GetEnvironmentVariable("DE_FINGERPRINT_IMAGE");
        if (path is null)
        {
            string guest = Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "out", "compare", "guest-images", "app.img");
            if (File.Exists(guest)) path = guest;
        }
        if (path is not null)
        {
            _image = File.ReadAllBytes(path);
        }
        else
        {
            var corpus = RealPages.Instance.Pages;
            _image = new byte[corpus.Length * 32];
            for (int copy = 0; copy < 32; copy++)
            {
                corpus.CopyTo(_image, copy * corpus.Length);
                for (int p = 0; p < RealPages.Count; p++) _image[copy * corpus.Length + p * RealPages.PageSize + (copy * 8 % 4096)] ^= (byte)(copy + 1);
            }
        }
        _pages = _image.Length / RealPages.PageSize;
        _key = FleetKey.FromSecret(Enumerable.Range(0, 32).Select(i => (byte)i).ToArray());
        Console.WriteLine($"// fingerprint input: {path ?? "corpus pages x32"}, {_pages} pages");
    }

    /// <summary>
    /// fingerprint-loop IMAGE [N [SHIFT]]: fingerprints the image N times (default 20; sampling one page in 2^SHIFT,
    /// default the builder's) and prints the rate of each run: a steady
    /// load to profile (dotnet-trace collect --profile cpu-sampling -- ...), not a measurement (that is this benchmark).
    /// </summary>
    public static int Loop(string[] args)
    {
        if (args.Length < 1 || !File.Exists(args[0]))
        {
            Console.Error.WriteLine("usage: fingerprint-loop IMAGE [RUNS [SAMPLE-SHIFT]]");
            return 2;
        }
        Environment.SetEnvironmentVariable("DE_FINGERPRINT_IMAGE", Path.GetFullPath(args[0]));
        var bench = new FingerprintBenchmark();
        bench.Load();
        int runs = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 20;
        if (args.Length > 2) bench._shift = int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture);
        for (int i = 0; i < runs; i++)
        {
            var time = System.Diagnostics.Stopwatch.StartNew();
            bench.Fingerprint();
            Console.WriteLine($"run {i + 1}: {bench._image.Length / time.Elapsed.TotalSeconds / (1 << 20):F0} MiB/s");
        }
        return 0;
    }

    [Benchmark(Description = "fingerprint (whole image)")]
    public long Fingerprint()
    {
        using var builder = new FingerprintBuilder(_key, _shift, expectedPages: _pages); // as Get-DEFingerprint makes it: tables sized for the pages
        for (int p = 0; p < _pages; p++) builder.SetPage(p, _image.AsSpan(p * RealPages.PageSize, RealPages.PageSize));
        var f = builder.Finish("bench", "bench", "default", _pages, "bench", (gfn, page) =>
        {
            _image.AsSpan((int)gfn * RealPages.PageSize, RealPages.PageSize).CopyTo(page);
            return true;
        });
        return f.SketchBytes;
    }
}
