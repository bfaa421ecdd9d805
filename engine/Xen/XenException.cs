namespace DifferenceEngine.Xen;

/// <summary>A Xen call that failed: the <see cref="DEException"/> with the errno and the operation kept for callers that decide on them.</summary>
public sealed class XenException : DEException
{
    internal XenException(string errorId, DEErrorKind kind, string message, int errno, string operation, object? target, Exception? inner = null)
        : base(errorId, kind, message, target, inner)
    {
        Errno = errno;
        Operation = operation;
    }

    /// <summary>The Linux errno Xen or its libraries returned (0 when no call was made).</summary>
    public int Errno { get; }

    /// <summary>What was being done, in words ("nominate a page for sharing").</summary>
    public string Operation { get; }
}
