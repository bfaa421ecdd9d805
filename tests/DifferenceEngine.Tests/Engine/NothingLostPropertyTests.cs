using System.Diagnostics;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Scanning;
using Xunit.Abstractions;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// "Nothing is lost": seeded random sequences of guest writes, reads, scans, policy changes and
/// domain add/remove, checked read by read against a shadow copy of every page.
/// </summary>
public class NothingLostPropertyTests(ITestOutputHelper output)
{
    private static readonly int[] GroupSizes = [0, 2, 4, DomainPolicy.DefaultGroupSize, 16, 32];

    [RequiresTheory(Requirement.Python3)]
    [InlineData(20261126, 100_000, false, 0)]
    [InlineData(7, 30_000, false, 0)]
    [InlineData(20261127, 100_000, true, 0)]
    [InlineData(11, 30_000, true, 0)]
    [InlineData(20261128, 100_000, true, 2500)]
    [InlineData(13, 30_000, false, 1500)]
    public void EveryReadMatchesTheShadowCopy(int seed, int operations, bool allMechanisms, int limitPages)
    {
        var rng = new Random(seed);
        using var swapDir = new TempDir();
        using var host = new DEHost(new HostOptions
        {
            SimilaritySeed = seed,
            MemoryLimitBytes = limitPages == 0 ? null : limitPages * 4096L,
            SwapPath = limitPages == 0 ? null : Path.Combine(swapDir.Path, "swap"),
            SwapSizeBytes = limitPages == 0 ? null : 256L << 20,
        });
        DomainOptions Options(string group = "default", bool sharing = true) => new()
        {
            SharingEnabled = sharing,
            PatchingEnabled = allMechanisms,
            CompressionEnabled = allMechanisms,
            CompressionAlgorithm = (CompressionAlgorithm)(1 + rng.Next(3)),
            TrustGroup = group,
            C4Sweeps = 1 + rng.Next(2),
            // Page groups of every size (none, small, the default, the largest), either codec, soon or a little later.
            GroupSize = GroupSizes[rng.Next(GroupSizes.Length)],
            GroupAfterSweeps = 1 + rng.Next(2),
            GroupAlgorithm = rng.Next(2) == 0 ? CompressionAlgorithm.Zstd : CompressionAlgorithm.LZ4,
        };
        using var dir = new TempDir();
        var shadow = new Dictionary<Domain, byte[][]>();
        var proc = LiveProcess.Python();
        int added = 0, removed = 0, scans = 0, reads = 0, writes = 0, groupedReads = 0, groupedWrites = 0;
        long pagesGrouped = 0, pagesUngrouped = 0, groupBytesToSwap = 0;
        long sharedFramesCompressed = 0, patchesOnCompressedReferences = 0, onCompressedReference = 0, sharedBlobsGrouped = 0, onSharedGroup = 0;
        // Whether a page is a patch whose reference frame was compressed (read without its lock: only a count for the test).
        // A page that names a shared blob kept in a group of shared blobs (its read decodes the group).
        bool InSharedGroup(Domain d, long gfn) =>
            PageEntry.IsSharedBlob(d.PeekEntry(gfn)) && d.GetPage(gfn) is { SharedBlob: not null, Group: not null };
        bool OnCompressedReference(Domain d, long gfn)
        {
            ulong e = d.PeekEntry(gfn);
            if (PageEntry.State(e) != PageState.Patched) return false;
            ulong locked = d.Lock(gfn);
            try
            {
                return PageEntry.State(locked) == PageState.Patched && EncodedPage.ReferenceIsSharedBlob(host.Store.Get(PageEntry.Payload(locked)));
            }
            finally
            {
                d.Unlock(gfn, locked);
            }
        }
        // A pool of page contents that writes copy from, so merges and COW breaks keep happening.
        var library = Enumerable.Range(0, 24).Select(i => TestMemory.RandomPage(new Random(seed + i))).ToArray();
        try
        {
            void Add(Domain d, byte[][] content) { shadow[d] = content; added++; }
            var real = TestMemory.LoadProcess(host, "real0", proc.Id, Options());
            Add(real, TestMemory.ReadAll(real));
            var planted = TestMemory.PlantedImage(1500, seed, library);
            Add(TestMemory.LoadRaw(host, dir, "img1", planted, Options()), planted);
            var planted2 = TestMemory.PlantedImage(900, seed + 1, library);
            Add(TestMemory.LoadRaw(host, dir, "img2", planted2, Options("other")), planted2);
            var empty = host.CreateDomain("empty3", 1024 * 4096, Options());
            Add(empty, Enumerable.Range(0, 1024).Select(_ => new byte[4096]).ToArray());

            var buffer = new byte[4096];
            for (int op = 0; op < operations; op++)
            {
                var domains = shadow.Keys.ToArray();
                var d = domains[rng.Next(domains.Length)];
                var pages = shadow[d];
                // One draw whatever the page count: real0 (a live python3) has a different page count in every run, and
                // NextInt64(max) draws a varying number of times to stay unbiased, which would send every later choice
                // elsewhere. This way a seed makes the same operations on the same domains in every run.
                long gfn = rng.NextInt64() % d.PageCount;
                int roll = rng.Next(1000);
                if (roll < 430)
                {
                    // Write: small random bytes, a whole library page (a duplicate), or a whole zero page.
                    byte[] data;
                    int offset;
                    switch (rng.Next(7))
                    {
                        case 0: data = library[rng.Next(library.Length)]; offset = 0; break;
                        case 1: data = new byte[4096]; offset = 0; break;
                        case 2:
                            // Similar to a library page: a patch candidate.
                            data = (byte[])library[rng.Next(library.Length)].Clone();
                            for (int k = rng.Next(1, 6); k > 0; k--) data[rng.Next(4096)] = (byte)rng.Next(256);
                            offset = 0;
                            break;
                        case 3:
                            // One repeated word: a Uniform page.
                            data = new byte[4096];
                            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(data.AsSpan()).Fill((uint)rng.Next(1, 5));
                            offset = 0;
                            break;
                        case 4:
                            // Text-like and compressible, unlike anything else.
                            data = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, 600).Select(_ => $"key{rng.Next(50)}=v{rng.Next(9)};"))[..4096]);
                            offset = 0;
                            break;
                        default:
                            data = new byte[rng.Next(1, 300)];
                            rng.NextBytes(data);
                            offset = rng.Next(4096 - data.Length + 1);
                            break;
                    }
                    if (PageEntry.IsGrouped(d.PeekEntry(gfn))) groupedWrites++;
                    if (OnCompressedReference(d, gfn)) onCompressedReference++;
                    if (InSharedGroup(d, gfn)) onSharedGroup++;
                    d.WritePage(gfn, data, offset);
                    data.CopyTo(pages[gfn].AsSpan(offset));
                    writes++;
                }
                else if (roll < 985)
                {
                    if (PageEntry.IsGrouped(d.PeekEntry(gfn))) groupedReads++;
                    if (OnCompressedReference(d, gfn)) onCompressedReference++;
                    if (InSharedGroup(d, gfn)) onSharedGroup++;
                    d.ReadPage(gfn, buffer);
                    Assert.True(pages[gfn].AsSpan().SequenceEqual(buffer), $"op {op}: {d.Name} page {gfn} differs from the shadow");
                    reads++;
                }
                else if (roll < 993)
                {
                    var subset = rng.Next(3) == 0 ? domains.Where(_ => rng.Next(2) == 0).ToArray() : domains;
                    var scan = host.Scan(subset, new ScanOptions { Passes = 1 + rng.Next(2), SliceSize = 64 + rng.Next(512) });
                    sharedFramesCompressed += scan.SharedFramesCompressed;
                    patchesOnCompressedReferences += scan.PassResults.Sum(p => p.PatchesOnCompressedReferences);
                    sharedBlobsGrouped += scan.PassResults.Sum(p => p.SharedBlobsGrouped);
                    pagesGrouped += scan.PagesGrouped;
                    pagesUngrouped += scan.PassResults.Sum(p => p.PagesUngrouped);
                    scans++;
                    TestMemory.AssertFrameAccounting(host);
                }
                else if (roll < 996)
                {
                    switch (rng.Next(allMechanisms ? 8 : 2))
                    {
                        case 7 when host.Reclaimer is { } reclaimer:
                            // Memory pressure on the coldest memory: every page group's stream to the swap file.
                            groupBytesToSwap += reclaimer.PageOutGroups(long.MaxValue);
                            break;
                        case 6:
                            host.SetPolicy(d, groupSize: GroupSizes[rng.Next(GroupSizes.Length)],
                                groupAlgorithm: rng.Next(2) == 0 ? CompressionAlgorithm.Zstd : CompressionAlgorithm.LZ4);
                            break;
                        case 0: host.EnableSharing(d); break;
                        case 1: host.DisableSharing(d, unshare: rng.Next(2) == 0); break;
                        case 2: host.EnablePatching(d); break;
                        case 3: host.DisablePatching(d, restore: rng.Next(2) == 0); break;
                        case 4: host.EnableCompression(d, (CompressionAlgorithm)(1 + rng.Next(3))); break;
                        default: host.DisableCompression(d, restore: rng.Next(2) == 0); break;
                    }
                    TestMemory.AssertFrameAccounting(host);
                }
                else if (roll < 998 && domains.Length > 4)
                {
                    host.RemoveDomain(d);
                    shadow.Remove(d);
                    removed++;
                    TestMemory.AssertFrameAccounting(host);
                }
                else
                {
                    // Add a domain: a copy of another domain's current content (a clone VM), or fresh random memory.
                    var source = domains[rng.Next(domains.Length)];
                    var content = rng.Next(2) == 0 && source.PageCount <= 4096
                        ? shadow[source].Select(p => (byte[])p.Clone()).ToArray()
                        : TestMemory.PlantedImage(200 + rng.Next(400), rng.Next(), library);
                    Add(TestMemory.LoadRaw(host, dir, $"add{added}", content,
                        Options(rng.Next(3) == 0 ? "other" : "default", sharing: rng.Next(4) != 0)), content);
                }
            }

            if (allMechanisms)
                foreach (var d in shadow.Keys)
                {
                    host.EnableSharing(d);
                    host.EnablePatching(d);
                    host.EnableCompression(d);
                }
            var last = host.Scan(options: new ScanOptions { UntilStable = true });
            sharedFramesCompressed += last.SharedFramesCompressed;
            sharedBlobsGrouped += last.PassResults.Sum(p => p.SharedBlobsGrouped);
            pagesGrouped += last.PagesGrouped;
            TestMemory.AssertFrameAccounting(host);
            var census = TestMemory.Census(host.Domains); // before the read-back rebuilds encoded pages
            foreach (var (d, pages) in shadow)
                for (long g = 0; g < d.PageCount; g++)
                {
                    d.ReadPage(g, buffer);
                    Assert.True(pages[g].AsSpan().SequenceEqual(buffer), $"final: {d.Name} page {g} differs");
                }
            var stats = host.GetStats();
            output.WriteLine($"census: {census.Private} private, {census.Zero} zero, {census.Uniform} uniform, {census.Shared} shared, {census.Patched} patched, {census.Compressed} compressed ({census.SharedCompressed} naming {census.SharedBlobNames.Count} shared blobs; {sharedFramesCompressed} shared frames compressed in all; {census.PatchesOnSharedBlobs} patches on compressed references now, {patchesOnCompressedReferences} in all, {onCompressedReference} read or written; {census.Grouped} in {census.GroupMembers.Count} page groups; {sharedBlobsGrouped} shared blobs grouped in all, {stats.SharedBlobGroups} groups of them now, {onSharedGroup} pages naming one read or written)");
            output.WriteLine($"page groups: {pagesGrouped} pages grouped, {pagesUngrouped} moved back by re-packing, {groupedReads} reads and {groupedWrites} writes of grouped pages during the run; {groupBytesToSwap} bytes of group streams paged out on demand, {host.Reclaimer?.GroupBytesPagedOut ?? 0} in all");
            output.WriteLine($"seed {seed}: {reads} reads, {writes} writes, {scans} scans, {added} added, {removed} removed; " +
                             $"{stats.FramesInUse} frames for {stats.GuestBytes / 4096} guest pages; faults " +
                             string.Join(", ", stats.Faults.Select(f => $"{f.Kind}={f.Count}")));
            Assert.True(scans > 10 && reads > operations / 3 && writes > operations / 3);
            Assert.True(census.Shared > 0, "sharing happened");
            if (limitPages != 0)
            {
                Assert.True(stats.PageOuts > 1000, $"{stats.PageOuts} page-outs");
                Assert.True(stats.Faults.Single(f => f.Kind == FaultKind.SwapIn).Count > 1000, "page-ins happened throughout");
                Assert.True(stats.FramesInUse * 4096 + stats.StoreAllocatedBytes <= limitPages * 4096L);
            }
            var exercised = allMechanisms
                ? new[] { FaultKind.ZeroFill, FaultKind.CopyOnWrite, FaultKind.PatternFill, FaultKind.Unpatch, FaultKind.Decompress }
                : new[] { FaultKind.ZeroFill, FaultKind.CopyOnWrite };
            foreach (var kind in exercised)
                Assert.True(stats.Faults.Single(f => f.Kind == kind).Count > 0, $"{kind} faults were exercised");
            if (allMechanisms)
            {
                Assert.True(census.Patched > 0, "patched pages remain after the final scan");
                Assert.True(census.Compressed > 0, "compressed pages remain after the final scan");
                Assert.True(sharedFramesCompressed > 0, "shared frames were compressed during the run");
                Assert.True(patchesOnCompressedReferences > 0 && onCompressedReference > 0,
                    $"reference frames were compressed ({patchesOnCompressedReferences} patches moved onto them) and such patches read or written ({onCompressedReference})");
                Assert.True(sharedBlobsGrouped > 0 && onSharedGroup > 0,
                    $"shared blobs were grouped ({sharedBlobsGrouped}) and pages naming them read or written ({onSharedGroup})");
                Assert.True(census.Uniform > 0, "uniform pages remain after the final scan");
                Assert.True(census.Grouped > 0, "grouped pages remain after the final scan (and were all read back above)");
                Assert.True(groupedReads > 0 && groupedWrites > 0, "grouped pages were read and written during the run");
                if (limitPages != 0) Assert.True(host.Reclaimer!.GroupBytesPagedOut > 0, "page groups went to the swap file and were read back");
            }

            foreach (var d in host.Domains) host.RemoveDomain(d);
            // The background reclaimer may have begun writing a page group to swap before the last domain went: it holds the
            // slots it reserved until it finds the group gone and gives them back (a CI run read one such slot, 4096 bytes,
            // with the store already empty). Waited for, nothing may be left.
            using var quiet = host.Quiesce();
            var left = host.GetStats();
            Assert.Equal(0, left.FramesInUse);
            Assert.Equal(0, left.SharedFrames);
            Assert.Equal(0, left.StoreBlobs);
            Assert.Equal(0, left.StoreAllocatedBytes);
            Assert.Equal(0, left.SwapUsedBytes);
        }
        finally
        {
            proc.Dispose();
        }
    }
}
