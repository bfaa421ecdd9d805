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

    /// <summary>Distinct pages of text-like key=value lines: each compresses alone, and better next to its neighbours.</summary>
    public static byte[][] TextPages(int count, int seed)
    {
        var rng = new Random(seed);
        var pages = new byte[count][];
        for (int i = 0; i < count; i++)
        {
            var sb = new System.Text.StringBuilder();
            while (sb.Length < 4096) sb.Append($"user{rng.Next(400)}.setting{rng.Next(40)}={rng.Next(100000)};\n");
            pages[i] = System.Text.Encoding.ASCII.GetBytes(sb.ToString(0, 4096));
        }
        return pages;
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
    /// xxHash3 or its tables): zero pages, pages whose content occurs at least twice, distinct such
    /// contents, and one-word (Uniform) pages.
    /// </summary>
    public static (long Zero, long Shared, long DistinctShared, long Uniform) ExpectedSharing(IEnumerable<byte[]> pages)
    {
        var counts = new Dictionary<string, int>();
        long zero = 0, uniform = 0;
        foreach (var p in pages)
        {
            if (p.AsSpan().IndexOfAnyExcept((byte)0) < 0) { zero++; continue; }
            // One non-zero 32-bit word repeated: folded into the entry (Uniform), never shared.
            uint w = BitConverter.ToUInt32(p, 0);
            bool same = true;
            for (int i = 4; i < p.Length && same; i += 4) same = BitConverter.ToUInt32(p, i) == w;
            if (same) { uniform++; continue; }
            string key = Convert.ToHexString(SHA256.HashData(p));
            counts[key] = counts.GetValueOrDefault(key) + 1;
        }
        var dup = counts.Values.Where(c => c >= 2).ToArray();
        return (zero, dup.Sum(), dup.Length, uniform);
    }

    /// <summary>
    /// Counts pages by state and the distinct frames that Shared pages map or Patched pages use as
    /// their reference, by walking every domain's entries (not the engine's own counters).
    /// </summary>
    public static Census Census(IEnumerable<Domain> domains)
    {
        var c = new Census();
        var frames = new HashSet<uint>();
        var blobs = new Dictionary<uint, int>();
        foreach (var d in domains)
            for (long g = 0; g < d.PageCount; g++)
            {
                ulong e = d.PeekEntry(g);
                switch (PageEntry.State(e))
                {
                    case PageState.Private: c.Private++; break;
                    case PageState.Zero: c.Zero++; break;
                    case PageState.Uniform: c.Uniform++; break;
                    case PageState.Shared: c.Shared++; frames.Add(PageEntry.Frame(e)); break;
                    case PageState.Patched:
                    {
                        c.Patched++;
                        var patch = d.Host.Store.Get(PageEntry.Payload(e));
                        uint reference = EncodedPage.ReferenceFrame(patch);
                        if (!EncodedPage.ReferenceIsSharedBlob(patch)) frames.Add(reference);
                        else
                        {
                            // A patch whose reference frame was compressed names that shared blob, as its pages do.
                            c.PatchesOnSharedBlobs++;
                            Name(reference, d);
                        }
                        break;
                    }
                    case PageState.Compressed:
                        c.Compressed++;
                        if (PageEntry.IsGrouped(e))
                        {
                            c.Grouped++;
                            var members = c.GroupMembers.TryGetValue(PageEntry.GroupId(e), out var m) ? m : c.GroupMembers[PageEntry.GroupId(e)] = new();
                            Assert.True(members.Add(PageEntry.GroupMember(e)), $"two pages name member {PageEntry.GroupMember(e)} of group {PageEntry.GroupId(e)}");
                        }
                        else if (PageEntry.IsSharedBlob(e))
                        {
                            c.SharedCompressed++;
                            Name((uint)PageEntry.Payload(e), d);
                        }
                        break;
                }
            }
        c.DistinctSharedFrames = frames.Count;
        c.SharedBlobNames = blobs;
        return c;

        // A page or patch of d names shared blob `blob`: counted, with d's trust group.
        void Name(uint blob, Domain d)
        {
            blobs[blob] = blobs.GetValueOrDefault(blob) + 1;
            (c.SharedBlobTrust.TryGetValue(blob, out var trust) ? trust : c.SharedBlobTrust[blob] = new()).Add(d.Policy.TrustGroup);
        }
    }

    /// <summary>
    /// Lists a page under its similarity keys in its trust group's similarity table, as a pass's sweep does (under the
    /// page's lock); the table holds entries only between its BeginPass and EndPass. Returns the slots filled.
    /// </summary>
    public static int ListAsReference(DEHost host, Sharing.SharingIndex index, Domain domain, long gfn)
    {
        ulong e = domain.Lock(gfn);
        try
        {
            return Patching.PatchPass.Remember(host, index, domain, gfn, host.Frames.Span(PageEntry.Frame(e)), PageEntry.State(e) == PageState.Shared);
        }
        finally
        {
            domain.Unlock(gfn, e);
        }
    }

    /// <summary>Frames in use must be exactly the private pages plus the distinct shared and reference frames.</summary>
    public static void AssertFrameAccounting(DEHost host)
    {
        using var quiet = host.Quiesce(); // no background page-out between the census and the stats
        var c = Census(host.Domains);
        var stats = host.GetStats();
        Assert.Equal(c.Private + c.DistinctSharedFrames, stats.FramesInUse);
        // Every page group's record says exactly which members pages still name; its pieces are store blobs.
        long pieces = 0;
        foreach (var (id, members) in c.GroupMembers)
        {
            var record = host.Groups.Describe(id);
            Assert.True(record is not null, $"pages name page group {id}, which is not live");
            Assert.Equal(members.Aggregate(0u, (mask, k) => mask | (1u << k)), record!.Value.Live);
            if (!record.Value.InSwap) pieces += record.Value.Pieces; // a group in the swap file holds slots, not blobs
        }
        // Each shared blob counts exactly the pages that name it; a blob kept in a group of shared blobs is a member its
        // group's record says is live, and no other blob is the same member.
        var sharedGroups = new Dictionary<uint, HashSet<int>>();
        var groupTrust = new Dictionary<uint, string>();
        long singleBlobs = 0;
        foreach (var (id, names) in c.SharedBlobNames)
            lock (host.SharedBlobs.StripeLock(id))
            {
                Assert.Equal(names, host.SharedBlobs.ReferencesLocked(id));
                if (!host.SharedBlobs.TryGroupLocked(id, out uint group, out int member))
                {
                    singleBlobs++;
                    continue;
                }
                var members = sharedGroups.TryGetValue(group, out var m) ? m : sharedGroups[group] = new();
                Assert.True(members.Add(member), $"two shared blobs are member {member} of group {group}");
                // Sharing never crosses trust groups, and so neither does a group of shared blobs.
                var trust = c.SharedBlobTrust[id];
                Assert.True(trust.Count == 1, $"shared blob {id} is named from trust groups {string.Join(", ", trust)}");
                if (groupTrust.TryGetValue(group, out string? was))
                    Assert.True(was == trust.First(), $"group {group} holds blobs of trust groups {was} and {trust.First()}");
                else groupTrust[group] = trust.First();
            }
        foreach (var (id, members) in sharedGroups)
        {
            Assert.False(c.GroupMembers.ContainsKey(id), $"group {id} holds pages and shared blobs");
            var record = host.Groups.Describe(id);
            Assert.True(record is not null, $"shared blobs name page group {id}, which is not live");
            Assert.Equal(0, record!.Value.DomainId);
            Assert.Equal(members.Aggregate(0u, (mask, k) => mask | (1u << k)), record.Value.Live);
            if (!record.Value.InSwap) pieces += record.Value.Pieces;
        }
        Assert.Equal(c.GroupMembers.Count + sharedGroups.Count, stats.PageGroups);
        Assert.Equal(sharedGroups.Count, stats.SharedBlobGroups);
        Assert.Equal(c.Patched + c.Compressed - c.SharedCompressed - c.Grouped + singleBlobs + pieces, stats.StoreBlobs);
        Assert.Equal(c.SharedBlobNames.Count, stats.SharedCompressedFrames);
        Assert.Equal(stats.FramesInUse * 4096 + stats.StoreAllocatedBytes + stats.MetadataBytes, stats.MemoryUsedBytes);
        AssertNumbersAddUp(host.TakeSnapshot());
    }

    /// <summary>
    /// The identities of docs/REPORT-SCHEMA.md ("The numbers") on a snapshot taken at rest: page counts add up to each
    /// domain's pages, the domains add up to the host, every frame and stored byte is charged to a page, and
    /// guest = used + saved to the byte.
    /// </summary>
    /// <remarks>
    /// With <paramref name="atRest"/> false (a live QEMU guest faulting pages in while the snapshot walks), frames may be
    /// taken or given back between the walk and the counts: every identity but those between the walk and the host's
    /// counters (nothing uncharged, the stored bytes) must still hold.
    /// </remarks>
    public static void AssertNumbersAddUp(Stats.HostSnapshot snapshot, bool atRest = true)
    {
        var h = snapshot.Host;
        foreach (var d in snapshot.Domains)
        {
            Assert.Equal(d.PageCount, d.PrivatePages + d.ZeroPages + d.UntouchedPages + d.UniformPages + d.SharedPages
                + d.PatchedPages + d.CompressedPages + d.SwappedPages);
            Assert.Equal((d.PageCount - d.UntouchedPages) * 4096, d.GuestBytes);
            Assert.Equal(d.GuestBytes, d.BytesUsed + d.BytesSaved);
        }
        Assert.Equal(snapshot.Domains.Sum(d => d.GuestBytes), h.GuestBytes);
        Assert.Equal(snapshot.Domains.Sum(d => d.UntouchedPages) * 4096, h.UntouchedBytes);
        Assert.Equal(snapshot.Domains.Sum(d => d.BytesUsed), h.DomainsUsedBytes);
        if (atRest) Assert.Equal(h.StoreStoredBytes, snapshot.Domains.Sum(d => d.StoredBytes)); // to the byte: apportioned together
        if (atRest) Assert.Equal(0, h.UnchargedBytes); // every frame and stored byte is some page's
        Assert.Equal(h.MemoryUsedBytes, h.DomainsUsedBytes + h.StoreSlackBytes + h.MetadataBytes + h.UnchargedBytes);
        // The metadata, part by part, is the metadata (docs/ARCHITECTURE.md, "Metadata").
        Assert.Equal(h.MetadataBytes, h.Metadata.Total);
        Assert.Equal(h.MetadataBytes, h.Metadata.Named().Sum(p => p.Bytes));
        Assert.All(h.Metadata.Named(), p => Assert.True(p.Bytes >= 0, $"{p.Part}: {p.Bytes}"));
        Assert.Equal(h.GuestBytes, h.MemoryUsedBytes + h.SavedBytes);
    }

    public static Domain LoadProcess(DEHost host, string name, int pid, DomainOptions? options = null)
    {
        using var src = MemorySource.OpenProcess(pid);
        return host.LoadDomain(name, src, options);
    }
}

/// <summary>Pages per state, counted by walking the P2M tables.</summary>
internal sealed class Census
{
    public long Private, Zero, Uniform, Shared, Patched, Compressed, SharedCompressed, Grouped, DistinctSharedFrames;

    /// <summary>Patched pages whose reference is a compressed shared frame (they name its blob).</summary>
    public long PatchesOnSharedBlobs;

    /// <summary>Page group id -> the member indexes pages name (each at most once).</summary>
    public Dictionary<uint, HashSet<int>> GroupMembers = new();

    /// <summary>Shared blob id -> how many pages and patches name it (compressed shared frames).</summary>
    public Dictionary<uint, int> SharedBlobNames = new();
    /// <summary>Per shared blob, the trust groups of the domains whose pages or patches name it.</summary>
    public Dictionary<uint, HashSet<string>> SharedBlobTrust = new();
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

/// <summary>
/// The swap file a host made at a path, as this process holds it: its name is removed once it is made, so it is found
/// among the process's descriptors ("path (deleted)") and opened again through /proc/self/fd.
/// </summary>
internal static class OpenSwapFile
{
    /// <summary>"/proc/self/fd/N" of the swap file made at <paramref name="path"/>, or null when none is open.</summary>
    public static string? Descriptor(string path) =>
        Directory.EnumerateFileSystemEntries("/proc/self/fd")
            .FirstOrDefault(fd => new FileInfo(fd).LinkTarget == path + " (deleted)");

    /// <summary>The swap file made at <paramref name="path"/>, opened again to read and write it behind the engine's back.</summary>
    public static FileStream Open(string path) =>
        new(Descriptor(path) ?? throw new FileNotFoundException("No swap file made at this path is open.", path),
            FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
}
