namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// The test guests themselves, before any engine touches them: they boot under QEMU with their RAM in a shared memfd,
/// verify their own memory round after round, and do catch a page that changed behind their back.
/// </summary>
public class TestGuestTests
{
    [RequiresFact(Requirement.QemuGuests)]
    public void AGuestFillsItsMemoryAndFindsEveryPageAsItLeftIt()
    {
        // de.hold=1: after "done" the guest waits (QEMU lives on) until it is killed, so its maps can be read then.
        using var guest = TestGuest.Boot(workloadMiB: 32, rounds: 3, options: "de.hold=1");
        var ready = guest.WaitFor(@"^deworkload ready pages=(\d+)");
        Assert.Equal(32 * 256, int.Parse(ready.Groups[1].Value));
        for (int round = 1; round <= 3; round++)
        {
            var line = guest.WaitFor($@"^deworkload round={round} pages=8192 mismatches=(\d+) total=\d+ rewritten=(\d+)");
            Assert.Equal("0", line.Groups[1].Value);
            Assert.True(int.Parse(line.Groups[2].Value) > 0, "every round rewrites some pages");
        }
        guest.WaitFor(@"^deworkload done rounds=3 mismatches=0$");
        // Guest RAM is the memfd QEMU shares: the mapping the engine will page.
        Assert.Contains(File.ReadLines($"/proc/{guest.Pid}/maps"), l => l.Contains("/memfd:mem", StringComparison.Ordinal));
        Assert.DoesNotContain(guest.Lines, l => l.Contains("MISMATCH", StringComparison.Ordinal));
    }

    [RequiresFact(Requirement.QemuGuests)]
    public void AGuestReportsAPageThatChangedBehindItsBack()
    {
        // de.selftest=1 flips one byte of page 7 after round 1 without updating its checksum.
        using var guest = TestGuest.Boot(workloadMiB: 8, rounds: 3, options: "de.selftest=1");
        guest.WaitFor(@"^deworkload round=1 pages=2048 mismatches=0 ");
        guest.WaitFor(@"^deworkload MISMATCH round=2 page=7$");
        guest.WaitFor(@"^deworkload round=2 pages=2048 mismatches=1 total=1 ");
        guest.WaitFor(@"^deworkload done rounds=3 mismatches=1$");
        Assert.Equal(0, guest.WaitForExit());
    }

    [RequiresFact(Requirement.QemuGuests)]
    public void AGuestWithAWorkingSetTouchesOnlyItsHotPagesEachRoundAndVerifiesTheColdOnesAtTheEnd()
    {
        // de.hot=20: a round checks about a fifth of the pages; de.mix=2: mostly unique data (the database-like guest).
        using var guest = TestGuest.Boot(workloadMiB: 16, rounds: 2, options: "de.hot=20 de.mix=2");
        for (int round = 1; round <= 2; round++)
        {
            var line = guest.WaitFor($@"^deworkload round={round} pages=4096 mismatches=0 total=0 rewritten=\d+ checked=(\d+) us=\d+$");
            int checkedPages = int.Parse(line.Groups[1].Value);
            Assert.InRange(checkedPages, 4096 * 15 / 100, 4096 * 25 / 100);
        }
        guest.WaitFor(@"^deworkload verified pages=4096 mismatches=0 total=0$");
        guest.WaitFor(@"^deworkload done rounds=2 mismatches=0$");
        Assert.Equal(0, guest.WaitForExit());
    }

    [RequiresFact(Requirement.QemuGuests)]
    public void TwoGuestsWithDifferentSeedsBothHoldTheSharedPagesInTheirRam()
    {
        // The workload's "shared" pages g (layout kind 2 or 3) hold fill_random(1000000 + g % 64) whatever the seed,
        // until a round rewrites them. After one round, held still (de.hold), both guests' RAM, read from QEMU's memfd
        // mapping as the engine will read it, must hold each such content its workload still has.
        using var a = TestGuest.Boot(workloadMiB: 8, rounds: 1, seed: 1, options: "de.hold=1");
        using var b = TestGuest.Boot(workloadMiB: 8, rounds: 1, seed: 2, options: "de.hold=1");
        foreach (var (guest, seed) in new[] { (a, 1UL), (b, 2UL) })
        {
            guest.WaitFor(@"^deworkload done rounds=1 mismatches=0$");
            var expected = Enumerable.Range(0, 2048).Select(g => (ulong)g)
                .Where(g => Mix(g ^ 0x5eedUL) % 10 is 2 or 3 && Mix(g * 7919 + 1 + seed * 104729) % 1000 >= 10)
                .Select(g => System.IO.Hashing.XxHash64.HashToUInt64(SharedPage((int)(g % 64)))).ToHashSet();
            Assert.True(expected.Count > 50, $"the layout has shared pages of most of the 64 contents ({expected.Count})");
            var held = GuestRamPageHashes(guest.Pid);
            var absent = expected.Except(held).ToArray();
            Assert.True(absent.Length == 0, $"{absent.Length} of the {expected.Count} shared contents are not in guest {guest.Pid}'s RAM");
        }
    }

    /// <summary>deworkload.c's fill_random(p, 1000000 + k): 64-bit words of splitmix64.</summary>
    private static byte[] SharedPage(int k)
    {
        var page = new byte[4096];
        ulong seed = 1_000_000UL + (ulong)k;
        for (int i = 0; i < 512; i++) BitConverter.TryWriteBytes(page.AsSpan(i * 8), Mix(seed * 4099 + (ulong)i));
        return page;
    }

    private static ulong Mix(ulong x)
    {
        x += 0x9e3779b97f4a7c15UL;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9UL;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebUL;
        return x ^ (x >> 31);
    }

    /// <summary>The hash of every page of the guest's RAM: QEMU's memfd mapping, read through /proc/PID/mem.</summary>
    private static HashSet<ulong> GuestRamPageHashes(int pid)
    {
        var ram = File.ReadLines($"/proc/{pid}/maps").Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Single(f => f.Length >= 6 && f[5].StartsWith("/memfd:mem", StringComparison.Ordinal));
        var range = ram[0].Split('-');
        long start = Convert.ToInt64(range[0], 16), end = Convert.ToInt64(range[1], 16);
        var hashes = new HashSet<ulong>();
        using var mem = new FileStream($"/proc/{pid}/mem", FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 20);
        var page = new byte[4096];
        for (long at = start; at < end; at += page.Length)
        {
            mem.Position = at;
            mem.ReadExactly(page);
            hashes.Add(System.IO.Hashing.XxHash64.HashToUInt64(page));
        }
        return hashes;
    }
}
