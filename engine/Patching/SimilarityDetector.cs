using System.IO.Hashing;
using System.Runtime.CompilerServices;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Patching;

/// <summary>
/// HashSimilarityDetector(k, s) of the paper: k*s blocks of 64 bytes at offsets drawn once from a
/// seed and then fixed; the hashes are grouped into k keys of s blocks each. Two pages that share a
/// key are likely similar, and make good patch/reference pairs.
/// </summary>
public sealed class SimilarityDetector
{
    public const int BlockSize = 64;
    public const int MaxKeys = 8;
    private readonly int[] _offsets;

    public SimilarityDetector(int keys, int blocksPerKey, int seed)
    {
        Check(keys, blocksPerKey);
        Keys = keys;
        BlocksPerKey = blocksPerKey;
        Seed = seed;
        var rng = new Random(seed);
        _offsets = new int[keys * blocksPerKey];
        for (int i = 0; i < _offsets.Length; i++) _offsets[i] = rng.Next(PageGeometry.PageSize - BlockSize + 1);
    }

    /// <summary>Refuses a k or s out of range (InvalidArgument); null is not checked.</summary>
    public static void Check(int? keys, int? blocksPerKey)
    {
        if (keys is < 1 or > MaxKeys)
            throw new DEException("PolicySimilarityKeysInvalid", DEErrorKind.InvalidArgument,
                $"The detector's k (keys per page) must be between 1 and {MaxKeys}; {keys} was given.", keys);
        if (blocksPerKey is < 1 or > 8)
            throw new DEException("PolicySimilarityBlocksInvalid", DEErrorKind.InvalidArgument,
                $"The detector's s (blocks per key) must be between 1 and 8; {blocksPerKey} was given.", blocksPerKey);
    }

    /// <summary>k: keys per page.</summary>
    public int Keys { get; }

    /// <summary>s: 64-byte blocks hashed into each key.</summary>
    public int BlocksPerKey { get; }

    public int Seed { get; }

    /// <summary>The block offsets in use (fixed for the detector's life).</summary>
    public IReadOnlyList<int> Offsets => Array.AsReadOnly(_offsets);

    /// <summary>Writes the page's k keys into <paramref name="keys"/>; key i is salted with i so groups never collide.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ComputeKeys(ReadOnlySpan<byte> page, Span<ulong> keys)
    {
        for (int k = 0; k < Keys; k++) keys[k] = ComputeKey(page, k);
    }

    /// <summary>Key <paramref name="group"/> of a page.</summary>
    public ulong ComputeKey(ReadOnlySpan<byte> page, int group)
    {
        ulong key = (ulong)(group + 1) * 0x9E3779B97F4A7C15UL;
        int first = group * BlocksPerKey;
        for (int b = 0; b < BlocksPerKey; b++)
            key = XxHash3.HashToUInt64(page.Slice(_offsets[first + b], BlockSize), (long)key);
        return key;
    }
}
