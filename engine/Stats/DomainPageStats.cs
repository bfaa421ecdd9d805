namespace DifferenceEngine.Stats;

/// <summary>Pages per state and the memory a domain uses and saves. A shared frame is charged to its users in equal parts.</summary>
public sealed record DomainPageStats(
    string Domain,
    int DomainId,
    long PageCount,
    long PrivatePages,
    long ZeroPages,
    long SharedPages,
    long GuestBytes,
    long BytesUsed,
    string TrustGroup,
    bool SharingEnabled)
{
    public long BytesSaved => GuestBytes - BytesUsed;
    public double SavingsPercent => GuestBytes == 0 ? 0 : Math.Round(100.0 * BytesSaved / GuestBytes, 2);
}
