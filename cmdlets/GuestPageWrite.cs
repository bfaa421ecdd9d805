using DifferenceEngine.Domains;

namespace DifferenceEngine.Commands;

/// <summary>What one Write-DEGuestPage did: where it wrote, how much, and the fault the write took.</summary>
public sealed class GuestPageWrite(string host, string domain, long gfn, int offset, int length, FaultKind fault)
{
    /// <summary>The name of the domain's host; piped on, it names the host (PipedDomainCmdlet.InputHost, alias -Host).</summary>
    public string Host { get; } = host;

    public string Domain { get; } = domain;
    public long Gfn { get; } = gfn;
    public int Offset { get; } = offset;
    public int Length { get; } = length;

    /// <summary>None, ZeroFill (first write to a Zero page) or CopyOnWrite (write to a Shared page).</summary>
    public FaultKind Fault { get; } = fault;
}
