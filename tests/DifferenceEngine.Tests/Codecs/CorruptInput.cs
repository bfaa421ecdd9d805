using DifferenceEngine.Codecs;

namespace DifferenceEngine.Tests.Codecs;

/// <summary>Feeds damaged encodings to a decoder: each must give a whole page or "CodecCorrupt", and stay inside its output.</summary>
internal static class CorruptInput
{
    /// <summary>Every truncation, and <paramref name="flips"/> random single-bit flips (every bit when the encoding is small).</summary>
    public static void Check(string context, byte[] encoded, Action<ReadOnlySpan<byte>, Span<byte>> decode, Random random, int flips = 300)
    {
        var output = new GuardedBuffer(TestPages.PageSize);
        int decodedTruncations = 0;
        for (int length = 0; length < encoded.Length; length++)
        {
            if (Attempt(context, $"truncated to {length}", encoded.AsSpan(0, length), decode, output))
            {
                decodedTruncations++;
            }
        }

        byte[] damaged = (byte[])encoded.Clone();
        int bits = encoded.Length * 8;
        int count = bits <= flips ? bits : flips;
        for (int i = 0; i < count; i++)
        {
            int bit = bits <= flips ? i : random.Next(bits);
            damaged[bit >> 3] ^= (byte)(1 << (bit & 7));
            Attempt(context, $"bit {bit} flipped", damaged, decode, output);
            damaged[bit >> 3] ^= (byte)(1 << (bit & 7));
        }

        // Appending bytes is damage too.
        Attempt(context, "one byte appended", [.. encoded, 0x00], decode, output);
    }

    private static bool Attempt(string context, string damage, ReadOnlySpan<byte> input, Action<ReadOnlySpan<byte>, Span<byte>> decode, GuardedBuffer output)
    {
        output.Reset();
        bool decoded;
        try
        {
            decode(input, output.Span);
            decoded = true;
        }
        catch (DEException e) when (e.ErrorId == "CodecCorrupt")
        {
            Assert.Equal(DEErrorKind.InvalidData, e.Kind);
            decoded = false;
        }
        catch (Exception e)
        {
            Assert.Fail($"{context}, {damage}: {e.GetType().Name} instead of CodecCorrupt: {e.Message}");
            throw;
        }

        output.AssertGuardsIntact($"{context}, {damage}");
        return decoded;
    }
}
