namespace DifferenceEngine.Xen;

/// <summary>One guest page of a Xen domain: domain id and guest frame number.</summary>
public readonly record struct XenPageRef(uint DomainId, ulong Gfn)
{
    public override string ToString() => $"domain {DomainId} gfn 0x{Gfn:x}";
}
