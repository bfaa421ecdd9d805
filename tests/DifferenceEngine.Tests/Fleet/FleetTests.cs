using DifferenceEngine.Domains;
using DifferenceEngine.Fleet;
using DifferenceEngine.Hosting;
using DifferenceEngine.Loading;
using DifferenceEngine.Scanning;
using DifferenceEngine.Stats;
using DifferenceEngine.Tests.Engine;
using Xunit;

namespace DifferenceEngine.Tests.Fleet;

/// <summary>Fingerprints: keyed, compact, read-only, the same from any source; the colocation model's rules and refusals.</summary>
public sealed class FleetTests
{
    private const int Page = 4096;
    private static readonly FleetKey KeyA = FleetKey.FromSecret(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray());
    private static readonly FleetKey KeyB = FleetKey.FromSecret(Enumerable.Range(101, 32).Select(i => (byte)i).ToArray());

    /// <summary>
    /// Guest-like memory from real files (this runtime's own libraries): slices of them in page order, some pages
    /// repeated, some zero, some slightly edited copies of others (patching material). Deterministic for a seed.
    /// </summary>
    internal static byte[][] RealImage(int pages, int seed)
    {
        var dir = Path.GetDirectoryName(typeof(object).Assembly.Location)!;
        var files = Directory.GetFiles(dir, "*.dll").OrderBy(f => f, StringComparer.Ordinal).ToArray();
        var rng = new Random(seed);
        var image = new byte[pages][];
        byte[]? file = null;
        int at = 0;
        for (int i = 0; i < pages; i++)
        {
            int kind = rng.Next(20);
            if (kind < 3)
            {
                image[i] = new byte[Page];
                continue;
            }
            if (kind < 5 && i > 0)
            {
                var copy = (byte[])image[rng.Next(i)].Clone();
                if (kind == 4) for (int k = 0; k < 8; k++) copy[rng.Next(Page)] ^= (byte)(1 + rng.Next(255));
                image[i] = copy;
                continue;
            }
            if (file is null || at + Page > file.Length)
            {
                file = File.ReadAllBytes(files[rng.Next(files.Length)]);
                at = rng.Next(Math.Max(1, file.Length / Page / 2)) * Page;
                if (file.Length < Page) { i--; file = null; continue; }
            }
            image[i] = file.AsSpan(at, Page).ToArray();
            at += Page;
        }
        return image;
    }

    private static DomainFingerprint FromPages(byte[][] pages, FleetKey key, string name, TempDir dir, int shift = FingerprintBuilder.DefaultSampleShift)
    {
        using var source = MemorySource.OpenFile(TestMemory.WriteRaw(dir, name + ".img", pages));
        return FingerprintBuilder.FromSource(source, key, name, "test", sampleShift: shift);
    }

    [Fact]
    public void Two_fleets_with_different_secrets_share_no_hash_for_the_same_pages()
    {
        using var dir = new TempDir();
        var pages = RealImage(4096, 1);
        var a = FromPages(pages, KeyA, "web", dir);
        var b = FromPages(pages, KeyB, "web", dir);
        Assert.NotEqual(a.KeyId, b.KeyId);
        var ea = a.GetEntries();
        var eb = b.GetEntries();
        Assert.True(ea.Count > 100, $"the sample holds {ea.Count} entries");
        // (0: an entry of the content route only holds no similarity hash.)
        var valuesA = ea.SelectMany(e => new[] { e.Content, e.Similarity }).Where(v => v != 0).ToHashSet();
        var valuesB = eb.SelectMany(e => new[] { e.Content, e.Similarity }).Where(v => v != 0).ToHashSet();
        Assert.Empty(valuesA.Intersect(valuesB));
        // And the two cannot be combined.
        var error = Assert.Throws<DEException>(() => ColocationModel.Predict([a, b]));
        Assert.Equal("FingerprintKeyMismatch", error.ErrorId);
    }

    [Fact]
    public void One_secret_gives_the_same_fingerprint_for_the_same_pages_and_hides_the_content_hashes()
    {
        using var dir = new TempDir();
        var pages = RealImage(2048, 2);
        var a = FromPages(pages, KeyA, "one", dir);
        var b = FromPages(pages, FleetKey.FromSecret(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray()), "two", dir);
        Assert.Equal(a.Sketch, b.Sketch);
        Assert.Equal(a.KeyId, b.KeyId);
        // No value of the sketch is the page's plain content hash (what an outsider could compute from a guessed page).
        var plain = pages.Select(p => (ulong)System.IO.Hashing.XxHash128.HashToUInt128(p)).Concat(pages.Select(p => System.IO.Hashing.XxHash3.HashToUInt64(p))).ToHashSet();
        Assert.DoesNotContain(a.GetEntries(), e => plain.Contains(e.Content));
    }

    [Fact]
    public void A_fingerprint_is_at_most_a_thousandth_of_the_memory_it_describes()
    {
        using var dir = new TempDir();
        foreach (int pages in new[] { 1024, 8192, 32768 })
        {
            var f = FromPages(RealImage(pages, pages), KeyA, $"d{pages}", dir);
            Assert.True(f.SketchBytes <= f.GuestBytes / 1000, $"{pages} pages: sketch {f.SketchBytes} B of {f.GuestBytes} B");
            Assert.Equal(f.PageCount, f.ZeroPages + f.UniformPages + f.ContentPages);
        }
    }

    [Fact]
    public void A_domain_fingerprinted_in_any_state_gives_the_fingerprint_of_its_image_and_is_left_as_it_was()
    {
        using var dir = new TempDir();
        var pages = RealImage(4096, 3);
        var fromImage = FromPages(pages, KeyA, "img", dir);
        using var host = new DEHost(new HostOptions { Name = "fp", SimilaritySeed = 7 });
        var domain = TestMemory.LoadRaw(host, dir, "img", pages, new DomainOptions
        {
            SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true, C4Sweeps = 1, GroupAfterSweeps = 1,
        });
        Assert.Equal(fromImage.Sketch, FingerprintBuilder.FromDomain(domain, KeyA).Sketch);

        host.Scan(null, new ScanOptions { UntilStable = true, Parallelism = 1 });
        var stats = host.GetPageStats(domain);
        Assert.True(stats.CompressedPages > 0 && stats.PatchedPages > 0 && stats.SharedPages > 0,
            $"the scan left compressed {stats.CompressedPages}, patched {stats.PatchedPages}, shared {stats.SharedPages} pages");
        Assert.True(stats.GroupedPages > 0, "some pages are in page groups");
        var states = Enumerable.Range(0, pages.Length).Select(g => domain.GetPage(g)).ToArray();
        var faults = host.GetStats().Faults.Sum(f => f.Count);

        var fromDomain = FingerprintBuilder.FromDomain(domain, KeyA);
        Assert.Equal(fromImage.Sketch, fromDomain.Sketch);
        Assert.Equal(0, fromDomain.UnreadablePages);
        Assert.Equal(faults, host.GetStats().Faults.Sum(f => f.Count));
        for (int g = 0; g < pages.Length; g++)
        {
            var now = domain.GetPage(g);
            Assert.Equal(states[g].State, now.State);
            Assert.Equal(states[g].Category, now.Category);
        }
        // Nothing lost: every page still reads back as it was written.
        for (int g = 0; g < pages.Length; g++) Assert.Equal(pages[g], domain.ReadPage(g));
    }

    /// <summary>
    /// A fingerprint's GuestBytes was the domain's size, untouched pages counted as zero pages: for a mostly empty domain
    /// (a QEMU guest's holes) it predicted its untouched pages as saved, where Get-DEPageStats counts them as neither guest
    /// memory nor saved (a read-only audit of the docs: 1,022,848 bytes "saved" for a 1 MiB domain with one page
    /// written). Untouched pages are counted apart, and GuestBytes is Get-DEPageStats' to the byte.
    /// </summary>
    [Fact]
    public void A_domains_untouched_pages_are_neither_guest_memory_nor_saved_in_its_fingerprint()
    {
        using var host = new DEHost(new HostOptions { Name = "untouched" });
        var domain = host.CreateDomain("mostly-empty", 256L * Page);
        var page = new byte[Page];
        new Random(3).NextBytes(page);
        domain.WritePage(5, page);
        domain.WritePage(9, new byte[Page]); // written with zeros: touched, a zero page of the guest's
        var stats = host.GetPageStats(domain);

        var fp = FingerprintBuilder.FromDomain(domain, KeyA);

        Assert.Equal(254, fp.UntouchedPages);
        Assert.Equal(stats.UntouchedPages, fp.UntouchedPages);
        Assert.Equal(stats.GuestBytes, fp.GuestBytes);
        Assert.Equal(2L * Page, fp.GuestBytes);
        Assert.Equal(1, fp.ZeroPages);
        Assert.Equal(1, fp.ContentPages);
        Assert.Equal(0, fp.UnreadablePages);
        fp.Validate();
        var p = ColocationModel.Predict([fp]);
        Assert.Equal(2L * Page, p.GuestBytes);
        Assert.InRange(p.PredictedSavedBytes, long.MinValue, Page); // at most the zero page: no untouched page counts as saved
    }

    [Fact]
    public void A_domain_with_pages_in_swap_is_fingerprinted_from_the_swap_file_and_its_pages_stay_there()
    {
        using var dir = new TempDir();
        var pages = RealImage(600, 9);
        var fromImage = FromPages(pages, KeyA, "paged", dir);
        using var host = new DEHost(new HostOptions { MemoryLimitBytes = 64 * Page, SwapPath = Path.Combine(dir.Path, "swap"), SwapSizeBytes = 8 << 20 });
        var domain = host.CreateDomain("paged", pages.Length * (long)Page);
        for (int g = 0; g < pages.Length; g++) domain.WritePage(g, pages[g]);
        var swapped = Enumerable.Range(0, pages.Length).Where(g => domain.PeekState(g) == PageState.Swapped).ToArray();
        Assert.True(swapped.Length > 400, $"{swapped.Length} pages in swap");
        long swapIns = host.GetStats().Faults.Single(f => f.Kind == FaultKind.SwapIn).Count;

        var fromDomain = FingerprintBuilder.FromDomain(domain, KeyA);
        Assert.Equal(fromImage.Sketch, fromDomain.Sketch);
        Assert.All(swapped, g => Assert.Equal(PageState.Swapped, domain.PeekState(g)));
        Assert.Equal(swapIns, host.GetStats().Faults.Single(f => f.Kind == FaultKind.SwapIn).Count);
    }

    [Fact]
    public void Identical_domains_together_are_predicted_to_need_less_than_apart_and_the_numbers_add_up()
    {
        using var dir = new TempDir();
        var pages = RealImage(4096, 4);
        var a = FromPages(pages, KeyA, "a", dir);
        var b = FromPages(pages, KeyA, "b", dir);
        var other = FromPages(RealImage(4096, 5), KeyA, "c", dir);
        var alone = ColocationModel.Predict([a]);
        var twins = ColocationModel.Predict([a, b]);
        Assert.Equal(twins.GuestBytes, twins.PredictedUsedBytes + twins.PredictedSavedBytes);
        Assert.Equal(alone.PredictedUsedBytes, a.PredictedUsedBytes);
        Assert.Equal(2 * alone.PredictedUsedBytes, twins.SeparateUsedBytes);
        // The second copy costs little: its page tables and metadata, and what grouping no longer saves (shared contents
        // are compressed as shared frames, one page at a time, never in the groups a domain's private pages go to). The
        // engine measures +12.8% for a real clone pair (python, session 14's snapshot: 7.8 and 8.8 MiB); the model puts
        // that pair +20% over one alone (alone -3.2%, the pair +1.9%), and this synthetic one +21%.
        Assert.True(twins.PredictedUsedBytes < alone.PredictedUsedBytes * 1.25, $"together {twins.PredictedUsedBytes}, alone {alone.PredictedUsedBytes}");
        Assert.True(twins.PredictedUsedBytes < twins.SeparateUsedBytes * 0.625, $"together {twins.PredictedUsedBytes}, apart {twins.SeparateUsedBytes}");
        // In different trust groups they share nothing.
        b.TrustGroup = "other";
        var apart = ColocationModel.Predict([a, b]);
        Assert.True(apart.PredictedUsedBytes > twins.PredictedUsedBytes * 1.5);
        var three = ColocationModel.Predict([a, other]);
        Assert.True(three.PredictedUsedBytes <= three.SeparateUsedBytes);
        Assert.True(twins.UsedWithSharingBytes >= twins.UsedWithSharingAndPatchingBytes);
        Assert.True(twins.UsedWithSharingAndPatchingBytes >= twins.PredictedUsedBytes);
    }

    [Fact]
    public void The_prediction_for_real_memory_is_close_to_what_the_embedded_host_uses()
    {
        using var dir = new TempDir();
        var one = RealImage(8192, 6);
        var two = RealImage(8192, 7);
        // The second shares a quarter of its pages with the first (the same program in two guests).
        for (int g = 0; g < two.Length; g += 4) two[g] = (byte[])one[g].Clone();
        var fa = FromPages(one, KeyA, "one", dir);
        var fb = FromPages(two, KeyA, "two", dir);
        var predicted = ColocationModel.Predict([fa, fb]).PredictedUsedBytes;
        // The host's similarity seed is fixed (and not the fingerprint's detector seed, as on a real host): which pages a
        // host patches depends on its seed: with random seeds this set's error moved between 8.8% and 11.2% from run to
        // run; after session 13's replay of which page each patch is against and with free slots no longer counted,
        // 5.7% to 6.9% over seeds 1 to 6 (6.3% with this one).
        using var host = new DEHost(new HostOptions { Name = "actual", SimilaritySeed = 5 });
        // The default policy with every mechanism on, as the model predicts.
        var all = new DomainOptions { SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true };
        TestMemory.LoadRaw(host, dir, "one", one, all);
        TestMemory.LoadRaw(host, dir, "two", two, all);
        host.Scan(null, new ScanOptions { UntilStable = true, Parallelism = 1 });
        long actual = host.GetStats().MemoryUsedBytes;
        double error = (double)(predicted - actual) / actual;
        Assert.True(Math.Abs(error) < 0.10, $"predicted {predicted} B, the host uses {actual} B ({error:P1})");
    }

    /// <summary>
    /// The fingerprint patches as the engine does since session 22: a similar page whose patch, with its reference kept
    /// whole, costs more than the two pages compressed (heap-like pages) is compressed, one that compresses poorly (seeded
    /// random bytes, then zeros) is patched. Before, the fingerprint patched either kind at home.
    /// </summary>
    [Fact]
    public void The_fingerprint_patches_only_where_the_engine_finds_it_pays_against_compression()
    {
        using var dir = new TempDir();
        var pages = new List<byte[]>();
        for (int i = 0; i < 64; i++)
        {
            var heap = Engine.SharedCompressionTests.Compressible(1000 + i);
            var poor = new byte[Page];
            new Random(i).NextBytes(poor.AsSpan(0, 2560));
            pages.Add(heap);
            pages.Add(Edited(heap, i));
            pages.Add(poor);
            pages.Add(Edited(poor, i));
        }
        var image = pages.ToArray();
        using var host = new DEHost(new HostOptions { Name = "actual", SimilaritySeed = 5 });
        var domain = TestMemory.LoadRaw(host, dir, "d", image, new DomainOptions { SharingEnabled = true, PatchingEnabled = true, CompressionEnabled = true });
        host.Scan(null, new ScanOptions { UntilStable = true, Parallelism = 1 });
        long patched = host.GetPageStats(domain).PatchedPages;
        // Every poorly compressing pair patched, no heap-like one.
        Assert.Equal(64, patched);
        var predicted = ColocationModel.Predict([FromPages(image, KeyA, "d", dir)]);
        Assert.InRange(predicted.PatchedPages, 48, 80);
        long actual = host.GetStats().MemoryUsedBytes;
        double error = (double)(predicted.PredictedUsedBytes - actual) / actual;
        var st = host.GetStats();
        Assert.True(Math.Abs(error) < 0.10, $"predicted {predicted.PredictedUsedBytes} B, the host uses {actual} B ({error:P1}); predicted frames {predicted.FrameBytes} store {predicted.StoreBytes} meta {predicted.MetadataBytes} refs {predicted.ReferencePages} patched {predicted.PatchedPages} compressed {predicted.CompressedContents} frames {predicted.FrameContents}; actual frames {st.FramesInUse * 4096} store {st.StoreAllocatedBytes} meta {st.MetadataBytes}");

        static byte[] Edited(byte[] page, int seed)
        {
            var copy = (byte[])page.Clone();
            var rng = new Random(seed + 77);
            for (int k = 0; k < 5; k++) copy[rng.Next(Page)] ^= (byte)(1 + rng.Next(255));
            return copy;
        }
    }

    [Fact]
    public void Fingerprints_of_different_sample_rates_or_schemas_are_refused_together()
    {
        using var dir = new TempDir();
        var pages = RealImage(1024, 8);
        var a = FromPages(pages, KeyA, "a", dir, 4);
        var b = FromPages(pages, KeyA, "b", dir, 5);
        Assert.Equal("FingerprintSampleMismatch", Assert.Throws<DEException>(() => ColocationModel.Predict([a, b])).ErrorId);
        var c = FromPages(pages, KeyA, "c", dir);
        c.Schema = "DifferenceEngine.Fingerprint/9";
        Assert.Equal("FingerprintSchemaUnknown", Assert.Throws<DEException>(() => ColocationModel.Predict([c])).ErrorId);
        Assert.Equal("FingerprintNone", Assert.Throws<DEException>(() => ColocationModel.Predict([])).ErrorId);
    }

    [Fact]
    public void The_similarity_route_is_sampled_four_times_more_sparsely_and_its_rate_must_match_too()
    {
        using var dir = new TempDir();
        var pages = RealImage(4096, 12);
        var f = FromPages(pages, KeyA, "a", dir);
        Assert.Equal(f.SampleShift + FingerprintBuilder.SimilarityShiftExtra, f.SimilarityShift);
        var entries = f.GetEntries();
        // Each route holds exactly the distinct contents whose keyed value is under its own threshold: the keyed values
        // of every page, computed here as the builder does (the first similarity key, the xxHash128, each under AES).
        var detector = new DifferenceEngine.Patching.SimilarityDetector(HostPolicy.DefaultKeys, HostPolicy.DefaultBlocksPerKey, FingerprintBuilder.FleetDetectorSeed);
        using var hasher = KeyA.CreateHasher();
        var expectContent = new HashSet<ulong>();
        var expectSimilarity = new HashSet<ulong>();
        var block = new byte[16];
        var keyed = new byte[16];
        foreach (var page in pages)
        {
            if (DifferenceEngine.Sharing.PageHasher.IsUniform(page, out _)) continue;
            var hash = System.IO.Hashing.XxHash128.HashToUInt128(page);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(block, (ulong)hash);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(block.AsSpan(8), (ulong)(hash >> 64));
            hasher.Content(block, keyed);
            ulong content = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(keyed);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(block, detector.ComputeKey(page, 0));
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(block.AsSpan(8), 0);
            hasher.Similarity(block, keyed);
            ulong similarity = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(keyed);
            if (content <= ulong.MaxValue >> f.SampleShift) expectContent.Add(content);
            if (similarity <= ulong.MaxValue >> f.SimilarityShift) expectSimilarity.Add(content);
        }
        Assert.Equal(expectContent.Order(), entries.Where(e => (e.Flags & EntryFlags.ByContent) != 0).Select(e => e.Content).Order());
        Assert.Equal(expectSimilarity.Order(), entries.Where(e => (e.Flags & EntryFlags.BySimilarity) != 0).Select(e => e.Content).Order());
        Assert.True(expectContent.Count > 0 && expectSimilarity.Count > 0 && expectSimilarity.Count < expectContent.Count,
            $"{expectContent.Count} by content, {expectSimilarity.Count} by similarity");

        // A fingerprint made before the routes were sampled apart (no SimilarityShift) had one rate for both: it is not
        // combined with one that samples keys more sparsely, and the error says both rates.
        var old = FromPages(pages, KeyA, "old", dir);
        old.SimilarityShift = 0;
        var error = Assert.Throws<DEException>(() => ColocationModel.Predict([f, old]));
        Assert.Equal("FingerprintSampleMismatch", error.ErrorId);
        Assert.Contains($"similarity keys 1 in {1 << f.SimilarityShift}", error.Message);
        Assert.Contains($"similarity keys 1 in {1 << f.SampleShift}", error.Message);
        // Alone (no patches across domains) it predicts what the new one does, and two old ones still combine.
        Assert.Equal(ColocationModel.Predict([f]).PredictedUsedBytes, ColocationModel.Predict([old]).PredictedUsedBytes);
        var old2 = FromPages(RealImage(2048, 13), KeyA, "old2", dir);
        old2.SimilarityShift = 0;
        Assert.True(ColocationModel.Predict([old, old2]).PredictedUsedBytes > 0);
    }

    [Fact]
    public void A_small_domain_has_every_single_blob_measured_and_is_grouped_whole_without_its_shared_pages()
    {
        using var dir = new TempDir();
        var pages = RealImage(2048, 21);
        var f = FromPages(pages, KeyA, "small", dir);
        // The mean single blob over every distinct content a codec shrinks, as the engine's codecs make it, and how many
        // no codec shrinks.
        var policy = new DomainPolicy();
        var blob = new byte[Page + 64];
        var seen = new HashSet<UInt128>();
        long sum = 0, compressible = 0, incompressible = 0;
        foreach (var page in pages)
        {
            if (DifferenceEngine.Sharing.PageHasher.IsUniform(page, out _) || !seen.Add(System.IO.Hashing.XxHash128.HashToUInt128(page))) continue;
            if (DifferenceEngine.Compression.CompressionPass.TryCompressBody(policy, policy.CompressionThreshold, page, blob, out int written, out _))
            {
                sum += DifferenceEngine.Store.CompactStore.SlotSizeFor(DifferenceEngine.Domains.EncodedPage.CompressedHeader + written);
                compressible++;
            }
            else incompressible++;
        }
        Assert.Equal((double)sum / compressible, f.SinglesMean, 6);
        Assert.Equal(incompressible, f.IncompressibleContents);
        // Each stratum of the sample is weighed to its exact count.
        var strata = ColocationModel.StrataOf(f);
        int sampledIncompressible = f.GetEntries().Count(e => (e.Flags & EntryFlags.ByContent) != 0 && e.SingleCost == 0);
        int sampledOther = f.GetEntries().Count(e => (e.Flags & EntryFlags.ByContent) != 0 && e.SingleCost > 0);
        Assert.Equal(f.DistinctContents - incompressible, strata.Other * sampledOther * (1 << f.SampleShift), 6);
        Assert.Equal(incompressible, sampledIncompressible > 0
            ? strata.Incompressible * sampledIncompressible * (1 << f.SampleShift)
            : strata.UnsampledFrames * (1 << f.SampleShift), 6);
        Assert.True(f.SampledSinglesMean > 0);
        // Grouped whole: runs of four back to back (191 here), far more than the 64 a large domain samples.
        Assert.True(f.GroupRunsSampled > 128, $"{f.GroupRunsSampled} runs");

        // Pages the engine never groups are left out of the runs: here every content is on two pages (shared).
        var twice = pages.Take(512).Concat(pages.Take(512)).ToArray();
        var g = FromPages(twice, KeyA, "twice", dir);
        Assert.Equal(0, g.GroupRunsSampled);
        Assert.Equal(1, g.GroupFactor);

        // A domain over FingerprintBuilder.ExactSinglesPages pages is sampled only.
        var large = FromPages(RealImage(FingerprintBuilder.ExactSinglesPages + 1, 22), KeyA, "large", dir);
        Assert.Equal(0, large.SinglesMean);
        Assert.InRange(large.GroupRunsSampled, 1, 256);
    }

    [Theory]
    [InlineData(0, 64, 7)]          // pages to come not known: one in 8
    [InlineData(1000, 64, 7)]       // a small domain: one in 8 (the most measured)
    [InlineData(1024, 64, 15)]      // 1024 >> 4 = 64: one in 16 still leaves 64
    [InlineData(4096, 64, 63)]
    [InlineData(1L << 40, 64, 1023)] // capped at one in 1024
    public void Measurements_keep_a_count_not_a_share(long expected, int wanted, ulong mask)
    {
        Assert.Equal(mask, FingerprintBuilder.MeasureMask(expected, wanted));
    }

    [Fact]
    public void A_damaged_sketch_is_refused_with_a_clear_error()
    {
        foreach (string sketch in new[] { "not base64!", Convert.ToBase64String(new byte[] { 1, 2, 3 }), Convert.ToBase64String("DEFP\u0001\u0000\u0005\u0000\u0000\u0000"u8.ToArray()) })
        {
            var f = new DomainFingerprint { Sketch = sketch };
            var error = Assert.Throws<DEException>(() => f.GetEntries());
            Assert.Equal("FingerprintInvalid", error.ErrorId);
        }
    }

    [Fact]
    public void Key_files_are_the_owners_alone()
    {
        if (OperatingSystem.IsWindows()) return; // file modes are a Unix matter
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "fleet.key");
        FleetKey.CreateFile(path, overwrite: false);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        Assert.Equal(32, new FileInfo(path).Length);
        var key = FleetKey.FromFile(path);
        Assert.Matches("^[0-9a-f]{16}$", key.KeyId);
        Assert.Equal("FleetKeyFileExists", Assert.Throws<DEException>(() => FleetKey.CreateFile(path, overwrite: false)).ErrorId);
        FleetKey.CreateFile(path, overwrite: true);
        Assert.NotEqual(key.KeyId, FleetKey.FromFile(path).KeyId);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);
        Assert.Equal("FleetKeyFileInsecure", Assert.Throws<DEException>(() => FleetKey.FromFile(path)).ErrorId);
        Assert.Equal("FleetKeyFileNotFound", Assert.Throws<DEException>(() => FleetKey.FromFile(path + ".none")).ErrorId);
        string shortKey = Path.Combine(dir.Path, "short.key");
        File.WriteAllBytes(shortKey, new byte[8]);
        File.SetUnixFileMode(shortKey, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        Assert.Equal("FleetKeyFileInvalid", Assert.Throws<DEException>(() => FleetKey.FromFile(shortKey)).ErrorId);
    }
}
