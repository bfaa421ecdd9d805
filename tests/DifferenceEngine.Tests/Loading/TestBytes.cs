namespace DifferenceEngine.Tests.Loading;

/// <summary>Seeded content for images and segments: reproducible, and never mistaken for zero pages.</summary>
internal static class TestBytes
{
    public static byte[] Random(Random rng, int length)
    {
        var bytes = new byte[length];
        rng.NextBytes(bytes);
        return bytes;
    }

    public static byte[] Page(byte[] memory, long gfn) => memory.AsSpan((int)(gfn * 4096), 4096).ToArray();
}
