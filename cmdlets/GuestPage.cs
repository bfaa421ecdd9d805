namespace DifferenceEngine.Commands;

/// <summary>The bytes of one guest page as Read-DEGuestPage returns them.</summary>
public sealed class GuestPage(string host, string domain, long gfn, byte[] bytes)
{
    /// <summary>The name of the domain's host; piped on, it names the host (PipedDomainCmdlet.InputHost, alias -Host), so the page is written where it was read.</summary>
    public string Host { get; } = host;

    public string Domain { get; } = domain;
    public long Gfn { get; } = gfn;

    /// <summary>The page's 4096 bytes (a copy: changing it does not change the guest).</summary>
    public byte[] Bytes { get; } = bytes;

    /// <summary>Whether every byte is zero.</summary>
    public bool IsZero => !Bytes.AsSpan().ContainsAnyExcept((byte)0);

    public override string ToString() => $"{Domain}:{Gfn}";
}
