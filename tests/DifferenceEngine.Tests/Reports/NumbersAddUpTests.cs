using System.Globalization;
using System.Xml.Linq;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Reports;
using DifferenceEngine.Scanning;
using DifferenceEngine.Stats;
using DifferenceEngine.Tests.Engine;
using Newtonsoft.Json.Linq;

namespace DifferenceEngine.Tests.Reports;

/// <summary>
/// docs/REPORT-SCHEMA.md, "The numbers": one definition of each figure, and the identities between them, in the stats
/// and in every report, on a run with every mechanism (zero, uniform, shared, patched, compressed, compressed shared
/// frames, swapped) over real process memory, planted images and an empty domain.
/// </summary>
public class NumbersAddUpTests
{
    private const long Page = PageGeometry.PageSize;

    [Fact]
    public void AnEmptyDomainIsNeitherGuestMemoryNorSaved()
    {
        using var host = new DEHost(new HostOptions());
        var d = host.CreateDomain("empty", 256L << 20, new DomainOptions { SharingEnabled = true });
        var s = host.GetPageStats(d);
        Assert.Equal(65536, s.UntouchedPages);
        Assert.Equal(0, s.ZeroPages);
        Assert.Equal(0, s.GuestBytes);
        Assert.Equal(0, s.BytesSaved);
        Assert.Equal(0, s.SavingsPercent);
        var h = host.GetStats();
        Assert.Equal(0, h.GuestBytes);
        Assert.Equal(256L << 20, h.UntouchedBytes);
        Assert.True(h.SavedBytes <= 0, $"an empty host saves nothing (it pays its metadata): {h.SavedBytes}");
        Assert.Equal(0, h.SavingsPercent);
        Assert.True(d.GetPage(5).Untouched);

        // The guest writes a page, even zeros: it is guest memory from then on, also once a scan finds it zero.
        d.WritePage(5, new byte[Page]);
        d.WritePage(6, [1, 2, 3], 10);
        Assert.False(d.GetPage(5).Untouched);
        Assert.Equal(2 * Page, host.GetPageStats(d).GuestBytes);
        host.Scan(options: new ScanOptions { UntilStable = true });
        s = host.GetPageStats(d);
        Assert.Equal(1, s.ZeroPages);
        Assert.Equal(65534, s.UntouchedPages);
        Assert.Equal(2 * Page, s.GuestBytes);
        Assert.Equal(Page, s.BytesSaved); // the zero page needs no frame; the other page holds one
        TestMemory.AssertNumbersAddUp(host.TakeSnapshot());
    }

    [RequiresFact(Requirement.Python3)]
    public void EveryFigureAddsUpWithEveryMechanism()
    {
        using var run = AllMechanismsRun.Start();
        var host = run.Host;
        Stats.HostSnapshot snapshot;
        // At rest: no background reclaim (an engine pass, page groups to swap, compaction) between the walk and the counts.
        using (host.Quiesce()) snapshot = host.TakeSnapshot();
        TestMemory.AssertNumbersAddUp(snapshot);

        // Every mechanism has pages, so every kind of charge is in the sums.
        long Sum(Func<DomainPageStats, long> f) => snapshot.Domains.Sum(f);
        Assert.True(Sum(d => d.ZeroPages) > 0, "zero");
        Assert.True(Sum(d => d.UntouchedPages) > 0, "untouched");
        Assert.True(Sum(d => d.UniformPages) > 0, "uniform");
        Assert.True(Sum(d => d.SharedPages) > 0, "shared");
        Assert.True(Sum(d => d.PatchedPages) > 0, "patched");
        Assert.True(Sum(d => d.CompressedPages - d.SharedCompressedPages) > 0, "compressed");
        Assert.True(Sum(d => d.SharedCompressedPages) > 0, "compressed shared frames");
        Assert.True(Sum(d => d.SwappedPages) > 0, "swapped");

        // Metadata by part: each part the run has holds bytes; what exists only during a pass is given back at rest.
        var m = snapshot.Host.Metadata;
        Assert.Equal(host.Domains.Sum(d => d.PageCount) * sizeof(ulong), m.P2M);
        Assert.True(m.Frames > 0, m.ToString());
        // More than an empty store's and an empty table's fixed bookkeeping: slabs and blobs are there.
        Assert.True(m.Store > DifferenceEngine.Store.CompactStore.FixedMetadataBytes, m.ToString());
        Assert.True(m.SharedBlobs > DifferenceEngine.Compression.SharedBlobTable.MetadataBytesFor(0), m.ToString());
        Assert.Equal((64L << 20) / Page * (sizeof(ulong) + sizeof(uint)), m.Swap); // the 64 MiB swap file's slot table
        Assert.Equal(0, m.SharingStable + m.SharingUnstable + m.Similarity + m.PassBuffers); // freed at each pass's end
        Assert.Equal(0, m.Qemu);

        // Get-DEPageStats of one domain is its line of the host's snapshot.
        foreach (var d in host.Domains) Assert.Equal(snapshot.Find(d.Id), host.GetPageStats(d));
    }

    [RequiresFact(Requirement.Python3)]
    public void ReportsShowTheSameNumbersEverywhere()
    {
        using var run = AllMechanismsRun.Start();
        var host = run.Host;
        var model = ReportModel.FromHost(host);
        var sum = model.Summary;
        var h = model.HostStats;

        // A report of every domain leads with the host's figures, its parts add up, the history ends there.
        Assert.Equal(h.GuestBytes, sum.GuestBytes);
        Assert.Equal(h.MemoryUsedBytes, sum.MemoryUsedBytes);
        Assert.Equal(h.SavedBytes, sum.SavedBytes);
        Assert.Equal(h.SavingsPercent, sum.SavingsPercent);
        Assert.Equal([UsedPart.Domains, UsedPart.StoreSlack, UsedPart.Metadata], sum.Parts.Select(p => p.Part));
        Assert.Equal(model.Domains.Sum(d => d.Stats.BytesUsed), sum.Parts[0].Bytes);
        var last = model.History[^1];
        Assert.Equal((h.GuestBytes, h.MemoryUsedBytes, h.SavedBytes), (last.GuestBytes, last.MemoryUsedBytes, last.SavedBytes));
        Assert.Equal(model.GeneratedAt, last.Time);

        // JSON: used + saved = guest, to the byte, in the summary, the host and every domain.
        var json = JObject.Parse(ReportHosts.Render(model, ReportFormat.Json));
        long L(JToken t, string f) => (long)t[f]!;
        Assert.Equal(L(json["summary"]!, "guestBytes"), L(json["summary"]!, "memoryUsedBytes") + L(json["summary"]!, "savedBytes"));
        Assert.Equal(L(json["summary"]!, "memoryUsedBytes"), json["summary"]!["memoryUsedParts"]!.Sum(p => (long)p["bytes"]!));
        Assert.Equal(L(json["host"]!, "guestBytes"), L(json["host"]!, "memoryUsedBytes") + L(json["host"]!, "savedBytes"));
        Assert.Equal(L(json["host"]!, "guestBytes"), L(json["summary"]!, "guestBytes"));
        foreach (var d in json["domains"]!) Assert.Equal(L(d, "guestBytes"), L(d, "bytesUsed") + L(d, "bytesSaved"));
        Assert.Equal(L(json["host"]!, "savedBytes"), L(json["history"]!.Last!, "savedBytes"));

        // HTML: the tiles are the table's totals, and every column of the table adds up to its total.
        AssertHtmlAddsUp(ReportHosts.Render(model, ReportFormat.Html), sum);

        // A report of some domains shows theirs: tiles and totals are the sums of their rows, nothing host-wide.
        var some = host.Domains.Take(2).ToArray();
        var subset = ReportModel.FromHost(host, some);
        Assert.False(subset.AllDomains);
        Assert.Equal(subset.Domains.Sum(d => d.Stats.GuestBytes), subset.Summary.GuestBytes);
        Assert.Equal(subset.Domains.Sum(d => d.Stats.BytesUsed), subset.Summary.MemoryUsedBytes);
        Assert.Equal(subset.Domains.Sum(d => d.Stats.BytesSaved), subset.Summary.SavedBytes);
        Assert.NotEqual(h.GuestBytes, subset.Summary.GuestBytes);
        AssertHtmlAddsUp(ReportHosts.Render(subset, ReportFormat.Html), subset.Summary);
    }

    [Fact]
    public void TheClocksNanosecondsPerPageAreNotRoundedAway()
    {
        Assert.Equal("10.2 ns", ReportText.Nanoseconds(10.2));
        Assert.Equal("3.45 ns", ReportText.Nanoseconds(3.449));
        Assert.Equal("850 ns", ReportText.Nanoseconds(850));
        Assert.Equal("12.3 µs", ReportText.Nanoseconds(12_340));
        Assert.Equal("0", ReportText.Nanoseconds(0));
    }

    [Theory]
    [InlineData(1023487, "999 KiB")]
    [InlineData(1023590, "0.98 MiB")] // would round to "1000 KiB" in KiB
    [InlineData(999, "999 B")]
    [InlineData(1000, "0.98 KiB")]
    [InlineData(-1023590, "-0.98 MiB")]
    [InlineData(10236, "10.0 KiB")] // 9.996 KiB: not "10.00 KiB"
    [InlineData(102349, "100 KiB")] // 99.95 KiB: not "100.0 KiB"
    public void BytesNeverPrintAThousandOfAUnit(long bytes, string text) => Assert.Equal(text, ReportText.Bytes(bytes));

    [Theory]
    [InlineData(9_999, "999.9 µs")]
    [InlineData(10_000, "1.00 ms")]
    [InlineData(9_999_600, "1.00 s")] // 999.96 ms would round to "1000.0 ms"
    [InlineData(599_960_000, "1m 00s")] // 59.996 s would round to "60.00 s"
    [InlineData(1_195_000_000, "2m 00s")] // 119.5 s, rounded: not "1m 59s"
    public void DurationsNeverPrintAThousandOfAUnitOrSixtySeconds(long ticks, string text) =>
        Assert.Equal(text, ReportText.Duration(TimeSpan.FromTicks(ticks)));

    [Theory]
    [InlineData(new[] { 1365.3333333, 1365.3333333, 1365.3333334 }, 4096)]
    [InlineData(new[] { 0.5, 0.5, 0.5, 0.5 }, 2)]
    [InlineData(new[] { 10.0, 20.0 }, 30)]
    [InlineData(new double[0], 0)]
    public void ApportionedChargesSumToTheRoundedWhole(double[] exact, long whole)
    {
        long[] rounded = SnapshotBuilder.Apportion(exact);
        Assert.Equal(whole, rounded.Sum());
        for (int i = 0; i < exact.Length; i++) Assert.InRange(rounded[i] - exact[i], -1.0, 1.0);
    }

    /// <summary>The domain table's totals row equals the summary tiles, and each column's cells add up to its total.</summary>
    private static void AssertHtmlAddsUp(string html, ReportSummary sum)
    {
        var page = XDocument.Parse(html.Replace("<!DOCTYPE html>", ""));
        long Value(XElement e) => long.Parse(e.Attribute("data-value")!.Value, CultureInfo.InvariantCulture);
        XElement Tile(string field) => page.Descendants().Single(e => (string?)e.Attribute("data-field") == "summary." + field);
        XElement Total(string field) => page.Descendants().Single(e => (string?)e.Attribute("data-total") == field);
        Assert.Equal(sum.GuestBytes, Value(Tile("GuestBytes")));
        Assert.Equal(sum.MemoryUsedBytes, Value(Tile("MemoryUsedBytes")));
        Assert.Equal(sum.SavedBytes, Value(Tile("SavedBytes")));
        foreach (var field in new[] { "GuestBytes", "BytesUsed", "BytesSaved" })
        {
            var cells = page.Descendants().Where(e => (string?)e.Attribute("data-field") == field
                && (e.Attribute("data-domain") is not null || e.Attribute("data-part") is not null));
            Assert.Equal(Value(Total(field)), cells.Sum(Value));
        }
        Assert.Equal(Value(Tile("GuestBytes")), Value(Total("GuestBytes")));
        Assert.Equal(Value(Tile("MemoryUsedBytes")), Value(Total("BytesUsed")));
        Assert.Equal(Value(Tile("SavedBytes")), Value(Total("BytesSaved")));
        Assert.Equal(Value(Tile("GuestBytes")), Value(Tile("MemoryUsedBytes")) + Value(Tile("SavedBytes")));
    }

    /// <summary>
    /// A host under a memory limit with a swap file, every mechanism on: a live Python process, two planted images (one
    /// in another trust group), and an empty domain partly written; scanned until stable, with samples.
    /// </summary>
    private sealed class AllMechanismsRun : IDisposable
    {
        private readonly TempDir _dir = new();
        private readonly LiveProcess _process = LiveProcess.Python();

        public DEHost Host { get; }

        private AllMechanismsRun()
        {
            Host = new DEHost(new HostOptions
            {
                Name = "numbers",
                SimilaritySeed = 5,
                MemoryLimitBytes = 3000 * Page,
                SwapPath = Path.Combine(_dir.Path, "swap"),
                SwapSizeBytes = 64L << 20,
            });
        }

        public static AllMechanismsRun Start()
        {
            var run = new AllMechanismsRun();
            try
            {
                run.Load();
                return run;
            }
            catch
            {
                run.Dispose();
                throw;
            }
        }

        /// <summary>
        /// Loads and scans with the host quiesced on this thread: the page-outs the loads need run here, in order, and the
        /// background reclaim (its engine passes, page groups to swap) cannot interleave, so what ends patched,
        /// compressed or swapped does not depend on how the threads were scheduled.
        /// </summary>
        private void Load()
        {
            using var quiet = Host.Quiesce();
            DomainOptions Options(string group = "default") => new()
            {
                SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true,
                CompressionAlgorithm = CompressionAlgorithm.Zstd, TrustGroup = group, C4Sweeps = 1,
            };
            var library = Enumerable.Range(0, 16).Select(i => TestMemory.RandomPage(new Random(300 + i))).ToArray();
            TestMemory.LoadProcess(Host, "python", _process.Id, Options());
            var planted = TestMemory.PlantedImage(1200, 21, library);
            // Similar pages (patches) and text (compressible), and a uniform page.
            var rng = new Random(22);
            for (int i = 0; i < 200; i++)
            {
                planted[i] = (byte[])library[i % library.Length].Clone();
                planted[i][rng.Next(4096)] ^= 0x5A;
            }
            for (int i = 200; i < 400; i++)
                planted[i] = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, 700).Select(_ => $"key{rng.Next(40)}=v{rng.Next(9)};"))[..4096]);
            planted[400] = ReportHosts.UniformPage(0xC0FFEE11);
            // Compressible pages that repeat (here and in the empty domain): shared frames that compression takes whole
            // once all their sharers are cold, whatever the live process happens to hold.
            var texts = Enumerable.Range(0, 5)
                .Select(t => System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, 700).Select(i => $"row{t}:{i % 37};"))[..4096]))
                .ToArray();
            for (int i = 401; i < 451; i++) planted[i] = texts[i % texts.Length];
            TestMemory.LoadRaw(Host, _dir, "img1", planted, Options());
            TestMemory.LoadRaw(Host, _dir, "img2", TestMemory.PlantedImage(800, 23, library), Options("other"));
            var empty = Host.CreateDomain("empty", 2048 * Page, Options());
            for (int g = 0; g < 64; g++) empty.WritePage(g, library[g % 4]);
            for (int g = 64; g < 74; g++) empty.WritePage(g, texts[g % texts.Length]);
            Host.RecordSample();
            Host.Scan(options: new ScanOptions { UntilStable = true, Parallelism = 2 });
            Host.Scan(options: new ScanOptions { Passes = 3, Parallelism = 2 });
            Host.RecordSample();
        }

        public void Dispose()
        {
            Host?.Dispose();
            _process.Dispose();
            _dir.Dispose();
        }
    }
}
