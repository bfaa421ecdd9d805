using DifferenceEngine.Store;

namespace DifferenceEngine.Tests.Store;

/// <summary>Blob walks for tests that keep their handles in an array.</summary>
internal static class StoreWalks
{
    /// <summary>Hands every handle of <paramref name="handles"/> over (0 is none) and keeps what the mover returns.</summary>
    public static BlobWalk All(ulong[] handles) => mover =>
    {
        for (int i = 0; i < handles.Length; i++)
            if (handles[i] != 0 && mover.Wants(handles[i])) handles[i] = mover.Move(handles[i]);
    };

    /// <summary>A walk that must not be called: there is nothing to move.</summary>
    public static readonly BlobWalk Never = _ => throw new InvalidOperationException("nothing to move");
}
