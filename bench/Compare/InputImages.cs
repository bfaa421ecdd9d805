using System.IO.Hashing;
using System.Runtime.InteropServices;
using DifferenceEngine.Bench.Corpus;
using DifferenceEngine.Loading;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Bench.Compare;

/// <summary>One raw image the comparison loads: a snapshot it took (and deletes) or one it was given.</summary>
internal sealed record InputImage(string Label, string Path, long Pages, bool Owned);

/// <summary>
/// The comparison's inputs and what our own content hashing finds in them: zero pages, distinct non-zero contents,
/// and how many of those occur more than once. That is what KSM should end with (one page per distinct non-zero
/// content, zero pages on the kernel's zero page), to cross-check KSM's counters and to feed "KSM then zram".
/// </summary>
internal sealed class InputImages : IDisposable
{
    private const int PageSize = PageGeometry.PageSize;
    private readonly string? _tempDir;

    private InputImages(List<InputImage> images, string? tempDir)
    {
        Images = images;
        _tempDir = tempDir;
    }

    public IReadOnlyList<InputImage> Images { get; }
    public long TotalPages => Images.Sum(i => i.Pages);
    public long TotalBytes => TotalPages * PageSize;
    public long ZeroPages { get; private set; }

    /// <summary>Non-zero pages that are one repeated 32-bit word (the engine's Uniform state).</summary>
    public long UniformPages { get; private set; }
    public long DistinctNonZero { get; private set; }

    /// <summary>Distinct non-zero contents that occur at least twice: the shared pages KSM should keep (pages_shared).</summary>
    public long ContentsRepeated { get; private set; }

    /// <summary>Σ (copies − 1) over repeated non-zero contents: KSM's pages_sharing when it merges them all.</summary>
    public long DuplicatePages { get; private set; }

    /// <summary>Where the inputs came from, for the report.</summary>
    public string Origin { get; private init; } = "";

    public static InputImages FromPaths(IReadOnlyList<string> paths, IReadOnlyList<string>? labelsGiven = null)
    {
        var list = new List<InputImage>();
        var labels = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (string path in paths)
        {
            if (CompareCommand.BadImage(path) is { } why) throw new InvalidOperationException($"{path}: {why}");
            long length = new FileInfo(path).Length;
            string label = labelsGiven?[list.Count] ?? System.IO.Path.GetFileNameWithoutExtension(path);
            for (int n = 2; !labels.Add(label); n++) label = $"{System.IO.Path.GetFileNameWithoutExtension(path)}-{n}";
            list.Add(new InputImage(label, System.IO.Path.GetFullPath(path), length / PageSize, Owned: false));
        }
        var set = new InputImages(list, null) { Origin = "the images given with --path" };
        set.Census();
        return set;
    }

    /// <summary>Starts the programs, snapshots each into a private temporary raw image, and ends them.</summary>
    public static InputImages Snapshot(IReadOnlyList<ProgramSpec> programs, Action<string> log)
    {
        // CreateTempSubdirectory makes the folder 0700; each image is also created 0600.
        string dir = Directory.CreateTempSubdirectory("de-compare-").FullName;
        var list = new List<InputImage>();
        var running = new List<RunningProgram>();
        var set = new InputImages(list, dir) { Origin = "snapshots of live programs started for the run: " + string.Join(", ", programs.Select(p => p.Label)) };
        try
        {
            foreach (var spec in programs)
            {
                try
                {
                    running.Add(HelperPrograms.Start(spec));
                }
                catch (Exception e)
                {
                    log($"{spec.Label}: not started, skipped: {e.Message}");
                }
            }
            foreach (var p in running)
            {
                string path = System.IO.Path.Combine(dir, p.Label + ".img");
                try
                {
                    long pages = RawImageWriter.SnapshotProcess(p.Id, path);
                    list.Add(new InputImage(p.Label, path, pages, Owned: true));
                    log($"snapshot {p.Label,-7} pid {p.Id,-7} {pages,8} pages ({pages * PageSize / 1048576.0:0.0} MiB)");
                }
                catch (DEException e)
                {
                    File.Delete(path);
                    log($"{p.Label}: snapshot failed, skipped: {e.Message}");
                }
            }
        }
        catch
        {
            set.Dispose();
            throw;
        }
        finally
        {
            foreach (var p in running) p.Dispose();
        }
        if (list.Count == 0)
        {
            set.Dispose();
            throw new InvalidOperationException("No program could be started and snapshotted.");
        }
        set.Census();
        return set;
    }

    /// <summary>
    /// Copies every image to <paramref name="dir"/> (made owner-only when new) as LABEL.img, created 0600: snapshots of
    /// live programs hold what those programs hold.
    /// </summary>
    public void CopyTo(string dir)
    {
        if (!Directory.Exists(dir))
        {
            if (OperatingSystem.IsWindows()) Directory.CreateDirectory(dir);
            else Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        foreach (var image in Images)
        {
            string target = System.IO.Path.Combine(dir, image.Label + ".img");
            // A new file each time (RawImageWriter creates it 0600): one left by an earlier run keeps its mode if overwritten.
            File.Delete(target);
            using var source = MemorySource.OpenFile(image.Path, MemorySourceFormat.RawImage); // a snapshot may begin with ELF bytes
            using var writer = RawImageWriter.Create(target, source.PageCount);
            source.CopyTo(writer);
        }
    }

    /// <summary>Reads every page of every image, in order, and hands it to <paramref name="visit"/>.</summary>
    public void ForEachPage(Action<InputImage, long, ReadOnlySpan<byte>> visit)
    {
        var buffer = new byte[1 << 20];
        foreach (var image in Images)
        {
            using var file = File.OpenHandle(image.Path);
            long length = image.Pages * PageSize;
            for (long offset = 0; offset < length;)
            {
                int n = RandomAccess.Read(file, buffer.AsSpan(0, (int)Math.Min(buffer.Length, length - offset)), offset);
                if (n <= 0 || n % PageSize != 0) throw new InvalidOperationException($"{image.Path}: short read at {offset}.");
                for (int p = 0; p < n; p += PageSize) visit(image, (offset + p) / PageSize, buffer.AsSpan(p, PageSize));
                offset += n;
            }
        }
    }

    /// <summary>128-bit content hash: distinct contents counted without keeping the pages.</summary>
    public static UInt128 ContentKey(ReadOnlySpan<byte> page) => XxHash128.HashToUInt128(page);

    public static bool IsZero(ReadOnlySpan<byte> page) => DifferenceEngine.Sharing.PageHasher.IsZero(page);

    private void Census()
    {
        var counts = new Dictionary<UInt128, int>();
        long zero = 0, uniform = 0;
        ForEachPage((_, _, page) =>
        {
            if (IsZero(page))
            {
                zero++;
                return;
            }
            var words = MemoryMarshal.Cast<byte, uint>(page);
            if (!words.ContainsAnyExcept(words[0])) uniform++;
            ref int c = ref CollectionsMarshal.GetValueRefOrAddDefault(counts, ContentKey(page), out _);
            c++;
        });
        ZeroPages = zero;
        UniformPages = uniform;
        DistinctNonZero = counts.Count;
        ContentsRepeated = counts.Values.Count(c => c > 1);
        DuplicatePages = counts.Values.Where(c => c > 1).Sum(c => (long)c - 1);
    }

    /// <summary>Deletes the snapshots this run took (never images it was given).</summary>
    public void Dispose()
    {
        foreach (var image in Images.Where(i => i.Owned))
        {
            try
            {
                File.Delete(image.Path);
            }
            catch (IOException)
            {
            }
        }
        if (_tempDir is not null && Directory.Exists(_tempDir))
        {
            try
            {
                Directory.Delete(_tempDir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
