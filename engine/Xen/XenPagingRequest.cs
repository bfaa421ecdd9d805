namespace DifferenceEngine.Xen;

/// <summary>A page-in request from a domain's paging ring; answer it with <see cref="XenConnection.Respond"/>, unchanged.</summary>
public readonly record struct XenPagingRequest(uint DomainId, uint Vcpu, ulong Gfn, uint Flags, uint PagingFlags)
{
    internal const uint VcpuPausedFlag = 1;
    internal const uint DropPageFlag = 1;
    internal const uint EvictFailFlag = 2;

    /// <summary>A guest vCPU waits for this page (else the request came from a foreign mapping in dom0).</summary>
    public bool VcpuPaused => (Flags & VcpuPausedFlag) != 0;

    /// <summary>The page was nominated, not evicted, when it was touched: the eviction will fail and nothing needs loading.</summary>
    public bool EvictFailed => (PagingFlags & EvictFailFlag) != 0;

    /// <summary>The guest released the page: the pager may forget its copy.</summary>
    public bool DropPage => (PagingFlags & DropPageFlag) != 0;

    public XenPageRef Page => new(DomainId, Gfn);
}
