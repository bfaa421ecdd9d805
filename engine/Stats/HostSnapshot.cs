namespace DifferenceEngine.Stats;

/// <summary>
/// A host and all its domains measured in one walk, so that the figures add up to the byte: the domains' page stats, and
/// the host's totals whose guest memory and charged bytes are the sums of the domains'. docs/REPORT-SCHEMA.md, "The
/// numbers", defines every figure; Get-DEHostStats, Get-DEPageStats and Export-DEReport all take theirs from here.
/// </summary>
public sealed record HostSnapshot(HostStats Host, IReadOnlyList<DomainPageStats> Domains)
{
    /// <summary>The stats of the domain with id <paramref name="domainId"/>; null when the snapshot has no such domain.</summary>
    public DomainPageStats? Find(int domainId) => Domains.FirstOrDefault(d => d.DomainId == domainId);
}

/// <summary>
/// Builds a <see cref="HostSnapshot"/> from each domain's page stats and its exact charge, the same for every kind of
/// host: a shared frame's 4096 bytes split between n users is a fraction each, and rounding each domain on its own would
/// let the domains' bytes drift a few bytes from the host's frames and store. The charges are rounded together instead
/// (largest remainder), so they sum exactly to the rounded whole; so are the domains' shares of the store
/// (<see cref="DomainPageStats.StoredBytes"/>: a blob named by pages of n domains is a fraction each), which sum to the
/// store's stored bytes.
/// </summary>
internal sealed class SnapshotBuilder
{
    private readonly List<(DomainPageStats Stats, double Charge, double Stored)> _domains = [];

    /// <summary>
    /// A domain's stats (its BytesUsed and StoredBytes are replaced), its exact charge in bytes and its exact share of the
    /// store's (or the Xen pager's) stored bytes.
    /// </summary>
    public void Add(DomainPageStats stats, double charge, double stored) => _domains.Add((stats, charge, stored));

    /// <summary>
    /// The snapshot: every domain with its rounded charge as BytesUsed and its rounded share of the store as StoredBytes
    /// (each rounded together with the other domains'), and <paramref name="host"/> with its guest memory, untouched bytes
    /// and domains' bytes set to the sums over the domains.
    /// </summary>
    public HostSnapshot Build(HostStats host)
    {
        long[] used = Apportion(_domains.Select(d => d.Charge).ToArray());
        long[] stored = Apportion(_domains.Select(d => d.Stored).ToArray());
        var domains = new DomainPageStats[_domains.Count];
        for (int i = 0; i < domains.Length; i++) domains[i] = _domains[i].Stats with { BytesUsed = used[i], StoredBytes = stored[i] };
        return new HostSnapshot(host with
        {
            GuestBytes = domains.Sum(d => d.GuestBytes),
            UntouchedBytes = domains.Sum(d => d.UntouchedPages) * Memory.PageGeometry.PageSize,
            DomainsUsedBytes = used.Sum(),
        }, domains);
    }

    /// <summary>
    /// Whole numbers as close as can be to <paramref name="exact"/> (non-negative) whose sum is the rounded sum of
    /// <paramref name="exact"/>: each is rounded down, and the bytes left over go one each to the largest fractions
    /// (the earlier on a tie).
    /// </summary>
    internal static long[] Apportion(double[] exact)
    {
        var whole = new long[exact.Length];
        double total = 0;
        long floors = 0;
        for (int i = 0; i < exact.Length; i++)
        {
            total += exact[i];
            whole[i] = (long)Math.Floor(exact[i]);
            floors += whole[i];
        }
        long left = (long)Math.Round(total) - floors;
        if (left <= 0) return whole;
        var byFraction = Enumerable.Range(0, exact.Length)
            .OrderByDescending(i => exact[i] - whole[i]).ThenBy(i => i)
            .Take((int)Math.Min(left, exact.Length));
        foreach (int i in byFraction) whole[i]++;
        return whole;
    }
}
