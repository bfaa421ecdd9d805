using System.Diagnostics;
using System.Globalization;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Bench.Compare;

/// <summary>
/// One pair the engine patched: the reference page's bytes, the patched page's plain bytes, and the size of the patch
/// the engine stored for it (its compact-store blob less the 22-byte patch header).
/// </summary>
internal sealed record PatchPair(string Domain, long Gfn, byte[] Reference, byte[] Page, int StoredPatchBytes);

/// <summary>The pairs one engine run patched: an even sample of them, and how many there were in all.</summary>
internal sealed record PatchPairs(string Run, long PatchedPages, IReadOnlyList<PatchPair> Sample, int Skipped)
{
    /// <summary>
    /// Takes an even sample of at most <paramref name="max"/> of the pages the run left Patched. Call it after every
    /// measurement of the run is taken: reading a patched page rebuilds it (an unpatch fault). The references are read
    /// first; they are Shared, and reading one changes nothing.
    /// </summary>
    public static PatchPairs Collect(string run, DEHost host, int max)
    {
        var patched = new List<(Domain Domain, long Gfn)>();
        foreach (var domain in host.Domains)
            for (long gfn = 0; gfn < domain.PageCount; gfn++)
                if (domain.PeekState(gfn) == PageState.Patched) patched.Add((domain, gfn));

        int n = Math.Min(max, patched.Count);
        var chosen = Enumerable.Range(0, n).Select(i => patched[(int)((long)i * patched.Count / n)]).ToList();
        var references = new List<(Domain Domain, long Gfn, byte[] Reference, int Stored)>(n);
        int skipped = 0;
        foreach (var (domain, gfn) in chosen)
        {
            var info = domain.GetPage(gfn);
            if (info.State != PageState.Patched || info.ReferenceDomain is null || info.ReferenceGfn is not long refGfn || info.StoredBytes is not int stored)
            {
                skipped++;
                continue;
            }
            var refDomain = host.GetDomain(info.ReferenceDomain);
            // The reference must still hold the bytes the patch was made against: Shared (or Private), never encoded.
            if (refDomain.PeekState(refGfn) is not (PageState.Shared or PageState.Private))
            {
                skipped++;
                continue;
            }
            references.Add((domain, gfn, refDomain.ReadPage(refGfn), stored - EncodedPage.PatchHeader));
        }
        var sample = references.Select(r => new PatchPair(r.Domain.Name, r.Gfn, r.Reference, r.Domain.ReadPage(r.Gfn), r.Stored)).ToList();
        return new PatchPairs(run, patched.Count, sample, skipped);
    }
}

/// <summary>What the delta codec and xdelta3 made of the same pairs.</summary>
internal sealed record XdeltaResult(
    string Run,
    long PatchedPages,
    int Pairs,
    int Skipped,
    string Version,
    string Options,
    int[] Stored,
    int[] Ours,
    int[] Xdelta,
    int RoundTripFailures,
    double EncodeMicrosPerPage,
    double[] XdeltaMillis)
{
    public int OursSmaller => Stored.Zip(Xdelta).Count(p => p.First < p.Second);
    public int Equal => Stored.Zip(Xdelta).Count(p => p.First == p.Second);
    public int ReencodedSame => Stored.Zip(Ours).Count(p => p.First == p.Second);
    public double XdeltaMeanMillis => XdeltaMillis.Average();
    public double XdeltaMedianMillis => Percentile(XdeltaMillis, 50);
    public double XdeltaTotalSeconds => XdeltaMillis.Sum() / 1000;
    public double EncodeTotalSeconds => EncodeMicrosPerPage * Pairs / 1e6;

    public static double Percentile(double[] values, int percent)
    {
        var sorted = values.Order().ToArray();
        return sorted[Math.Min(sorted.Length - 1, sorted.Length * percent / 100)];
    }

    public static int Percentile(int[] values, int percent) => (int)Percentile(values.Select(v => (double)v).ToArray(), percent);
}

/// <summary>
/// xdelta3 on the pairs an engine run patched, each pair in its own xdelta3 process, as docs/DELTA-CODEC.md does it:
/// <c>xdelta3 -e -9 -S none -A -n -B 524288 -c -s ref page</c>. -A -n drop its application header and checksum (our
/// patches carry neither; the engine's 22-byte patch header is left out of ours likewise); -B 524288 is its smallest
/// source window (the default 64 MiB one costs ~60 ms of set-up per run and changes these patches by a few bytes at
/// most); -c writes the patch to a pipe, whose length is counted, so no patch file is left anywhere.
/// </summary>
internal static class XdeltaPeer
{
    public const string Options = "-e -9 -S none -A -n -B 524288";
    private const int PageSize = 4096;
    private const int WarmUpMilliseconds = 400;

    /// <summary>The xdelta3 on PATH, or null with why not.</summary>
    public static string? Find(out string? why)
    {
        string? path = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, "xdelta3")).FirstOrDefault(File.Exists);
        why = path is null ? "xdelta3 is not installed (not on PATH; Debian: apt-get install -y xdelta3)" : null;
        return path;
    }

    public static XdeltaResult Run(string xdelta, PatchPairs pairs)
    {
        var sample = pairs.Sample;
        int n = sample.Count;

        // Our codec on the same pairs: sizes, a round-trip check, and the encode time per page. The timed passes follow
        // a warm-up longer than the runtime's tiering delay, so the code is at its optimized tier; the best of 3 is kept.
        byte[] patch = new byte[DeltaCodec.MaxPatchSize];
        byte[] decoded = new byte[PageSize];
        var ours = new int[n];
        int failures = 0;
        for (int i = 0; i < n; i++)
        {
            if (!DeltaCodec.TryEncode(sample[i].Reference, sample[i].Page, patch, out ours[i]))
            {
                failures++;
                continue;
            }
            DeltaCodec.Decode(sample[i].Reference, patch.AsSpan(0, ours[i]), decoded);
            if (!decoded.AsSpan().SequenceEqual(sample[i].Page)) failures++;
        }
        double encodeUs = BestOf3(() =>
        {
            foreach (var p in sample) DeltaCodec.TryEncode(p.Reference, p.Page, patch, out _);
        }) / n;

        var sizes = new int[n];
        var millis = new double[n];
        string version = Version(xdelta);
        string dir = Directory.CreateTempSubdirectory("de-xdelta-").FullName; // 0700
        try
        {
            for (int i = 0; i < n; i++)
            {
                WritePrivate(Path.Combine(dir, $"{i}.ref"), sample[i].Reference);
                WritePrivate(Path.Combine(dir, $"{i}.page"), sample[i].Page);
            }
            Encode(xdelta, dir, 0, out _); // warm-up: the binary and its libraries into the page cache
            for (int i = 0; i < n; i++)
            {
                var watch = Stopwatch.StartNew();
                sizes[i] = Encode(xdelta, dir, i, out _);
                millis[i] = watch.Elapsed.TotalMilliseconds;
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        return new XdeltaResult(pairs.Run, pairs.PatchedPages, n, pairs.Skipped, version, Options,
            sample.Select(p => p.StoredPatchBytes).ToArray(), ours, sizes, failures, encodeUs, millis);
    }

    /// <summary>One xdelta3 process on pair <paramref name="i"/>: the patch's length in bytes.</summary>
    private static int Encode(string xdelta, string dir, int i, out string errors)
    {
        var info = new ProcessStartInfo(xdelta)
        {
            UseShellExecute = false,
            WorkingDirectory = dir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string arg in Options.Split(' ')) info.ArgumentList.Add(arg);
        foreach (string arg in (string[])["-c", "-s", $"{i}.ref", $"{i}.page"]) info.ArgumentList.Add(arg);
        using var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {xdelta}");
        var stderr = process.StandardError.ReadToEndAsync();
        using var counter = new CountingStream();
        process.StandardOutput.BaseStream.CopyTo(counter);
        process.WaitForExit();
        errors = stderr.Result;
        if (process.ExitCode != 0) throw new InvalidOperationException($"xdelta3 exited with {process.ExitCode}: {errors.Trim()}");
        return checked((int)counter.Length);
    }

    private static string Version(string xdelta)
    {
        try
        {
            var info = new ProcessStartInfo(xdelta, ["-V"]) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
            using var process = Process.Start(info)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            string text = process.StandardError.ReadToEnd() + stdout.Result;
            process.WaitForExit();
            // "Xdelta version 3.0.11, Copyright (C) ..."
            string first = text.Split('\n').FirstOrDefault(l => l.Contains("version", StringComparison.OrdinalIgnoreCase)) ?? "";
            int at = first.IndexOf("version ", StringComparison.OrdinalIgnoreCase);
            return at < 0 ? "xdelta3" : "xdelta3 " + first[(at + 8)..].Split(',')[0].Trim();
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return "xdelta3";
        }
    }

    /// <summary>Creates the file 0600 (memory pages can hold secrets) and writes it.</summary>
    private static void WritePrivate(string path, byte[] bytes)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using var file = new FileStream(path, options);
        file.Write(bytes);
    }

    private static double BestOf3(Action pass)
    {
        var warmUp = Stopwatch.StartNew();
        do pass();
        while (warmUp.ElapsedMilliseconds < WarmUpMilliseconds);
        double best = double.MaxValue;
        for (int i = 0; i < 3; i++)
        {
            var watch = Stopwatch.StartNew();
            pass();
            best = Math.Min(best, watch.Elapsed.TotalMicroseconds);
        }
        return best;
    }

    /// <summary>A write-only stream that only counts the bytes written to it.</summary>
    private sealed class CountingStream : Stream
    {
        private long _length;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _length;
        public override long Position { get => _length; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => _length += count;
        public override void Write(ReadOnlySpan<byte> buffer) => _length += buffer.Length;
    }

    internal static string Describe(XdeltaResult x) => string.Create(CultureInfo.InvariantCulture,
        $"{x.Pairs} pairs of {x.PatchedPages} patched: ours {x.Stored.Average():0} B mean, xdelta3 -A -n {x.Xdelta.Average():0} B; " +
        $"ours smaller in {x.OursSmaller}/{x.Pairs}; encode {x.EncodeMicrosPerPage:0.00} µs/page vs xdelta3 {x.XdeltaMeanMillis:0.00} ms/pair (process start included)");
}
