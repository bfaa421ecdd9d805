using System.Text;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Reports;
using DifferenceEngine.Scanning;
using DifferenceEngine.Stats;

namespace DifferenceEngine.Tests.Reports;

/// <summary>Small hosts for the report tests: a few domains with shared, zero, uniform and private pages, a marker in guest memory.</summary>
internal static class ReportHosts
{
    /// <summary>Written into guest pages; no report may contain it.</summary>
    public const string Marker = "DE-REPORT-MARKER-0b5e2c";

    /// <summary>Names that need escaping in HTML and quoting in CSV.</summary>
    public const string AwkwardName = "db<1> & \"main\", 'eu'";

    public static readonly string[] Names = ["web1", "web2", AwkwardName];

    /// <summary>
    /// A host with <paramref name="names"/>, each 64 pages: 8 pages the same in all (shared), a few of its
    /// own, a page of one repeated word (uniform), pages holding <see cref="Marker"/> (one shared, one
    /// its own), the rest zero; scanned until stable, then one copy-on-write fault and two samples.
    /// </summary>
    public static DEHost Build(params string[] names)
    {
        if (names.Length == 0) names = Names;
        var host = new DEHost(new HostOptions { Name = "report-test", SimilaritySeed = 7 });
        var random = new Random(11);
        var common = RandomPage(random);
        for (int i = 0; i < names.Length; i++)
        {
            var d = host.CreateDomain(names[i], 64L * PageGeometry.PageSize, new DomainOptions { SharingEnabled = true });
            for (int g = 0; g < 8; g++) d.WritePage(g, common);
            for (int g = 8; g < 12 + i; g++) d.WritePage(g, RandomPage(random));
            d.WritePage(30, UniformPage(0x5EED_F00D));
            d.WritePage(40, MarkerPage(Marker));
            d.WritePage(41, MarkerPage($"{Marker} of {names[i]}"));
        }
        host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 2 });
        host.RecordSample();
        host.Domains[0].WritePage(0, [1, 2, 3], 100); // a copy-on-write fault
        host.RecordSample();
        return host;
    }

    public static byte[] RandomPage(Random random)
    {
        var page = new byte[PageGeometry.PageSize];
        random.NextBytes(page);
        return page;
    }

    public static byte[] UniformPage(uint word)
    {
        var page = new byte[PageGeometry.PageSize];
        for (int o = 0; o < page.Length; o += 4) BitConverter.TryWriteBytes(page.AsSpan(o), word);
        return page;
    }

    /// <summary>A page of <paramref name="text"/> repeated.</summary>
    public static byte[] MarkerPage(string text)
    {
        var page = new byte[PageGeometry.PageSize];
        var bytes = Encoding.ASCII.GetBytes(text + " ");
        for (int o = 0; o < page.Length; o++) page[o] = bytes[o % bytes.Length];
        return page;
    }

    public static string Render(ReportModel model, ReportFormat format)
    {
        using var stream = new MemoryStream();
        ReportFile.Write(model, format, stream);
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>Get-DEPageStats' numbers of a domain, by property name, as the reports must show them.</summary>
    public static IReadOnlyDictionary<string, object> Numbers(DomainPageStats s) => new Dictionary<string, object>
    {
        ["PageCount"] = s.PageCount,
        ["PrivatePages"] = s.PrivatePages,
        ["ZeroPages"] = s.ZeroPages,
        ["UniformPages"] = s.UniformPages,
        ["SharedPages"] = s.SharedPages,
        ["PatchedPages"] = s.PatchedPages,
        ["CompressedPages"] = s.CompressedPages,
        ["SwappedPages"] = s.SwappedPages,
        ["GuestBytes"] = s.GuestBytes,
        ["BytesUsed"] = s.BytesUsed,
        ["BytesSaved"] = s.BytesSaved,
        ["SavingsPercent"] = s.SavingsPercent,
    };
}
