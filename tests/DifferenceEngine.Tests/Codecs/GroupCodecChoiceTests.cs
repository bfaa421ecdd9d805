using DifferenceEngine.Codecs;
using DifferenceEngine.Compression;
using ZstdSharp;
using ZstdSharp.Unsafe;

namespace DifferenceEngine.Tests.Codecs;

/// <summary>
/// The Zstd group codec's two parameter sets (<see cref="GroupCodecChoice"/>): which one a group gets, against the two
/// sets' streams computed here on their own, and that every stream decodes to its payload.
/// </summary>
public class GroupCodecChoiceTests
{
    private const int Members = 4;

    /// <summary>A group's payload as a pass makes it: member headers (random: checksums), then the pages.</summary>
    private static byte[] Payload(Random r, Func<Random, byte[]> page)
    {
        var payload = new byte[Members * (GroupCompression.HeaderPerMember + TestPages.PageSize)];
        r.NextBytes(payload.AsSpan(0, Members * GroupCompression.HeaderPerMember));
        for (int m = 0; m < Members; m++)
            page(r).CopyTo(payload, Members * GroupCompression.HeaderPerMember + m * TestPages.PageSize);
        return payload;
    }

    /// <summary>
    /// Pages made of tokens of <paramref name="token"/> bytes drawn from a small vocabulary: matches exactly that long,
    /// which the long-match set (no match under 7 bytes) cannot use when they are shorter.
    /// </summary>
    private static byte[] Tokens(Random r, int token)
    {
        var vocabulary = new byte[64][];
        var seeded = new Random(token);
        for (int i = 0; i < vocabulary.Length; i++)
        {
            vocabulary[i] = new byte[token];
            seeded.NextBytes(vocabulary[i]);
        }
        var page = new byte[TestPages.PageSize];
        for (int at = 0; at < page.Length; at += token)
            vocabulary[r.Next(vocabulary.Length)].AsSpan(0, Math.Min(token, page.Length - at)).CopyTo(page.AsSpan(at));
        return page;
    }

    /// <summary>The stream length one set makes on its own, with the engine's parameters.</summary>
    private static int Alone(byte[] payload, int level, int minMatch)
    {
        using var compressor = new Compressor(level);
        compressor.SetParameter(ZSTD_cParameter.ZSTD_c_experimentalParam2, (int)ZSTD_format_e.ZSTD_f_zstd1_magicless);
        if (minMatch != 0) compressor.SetParameter(ZSTD_cParameter.ZSTD_c_minMatch, minMatch);
        return compressor.Wrap(payload).Length;
    }

    private static int Dense(byte[] payload) => Alone(payload, GroupCodec.ZstdLevel, 0);

    private static int LongMatch(byte[] payload) => Alone(payload, GroupCodec.ZstdLongMatchLevel, GroupCodec.ZstdLongMatchMinMatch);

    private static void AssertDecodes(byte[] payload, byte[] stream, int written)
    {
        var back = new byte[payload.Length];
        GroupCodec.DecodePrefix(CompressionAlgorithm.Zstd, stream.AsSpan(0, written), back);
        Assert.True(back.AsSpan().SequenceEqual(payload), "a group's stream decodes to another payload");
    }

    [Theory]
    [InlineData(4)] // short tokens: level 3 wins
    [InlineData(12)] // long tokens broken by random headers and mixed pages: either may win
    public void TheChoiceFollowsTheSetThatMadeFewerBytesOnTheGroupsTriedWithBothAndEveryStreamDecodes(int token)
    {
        var r = new Random(20081208 + token);
        var choice = new GroupCodecChoice();
        long denseTried = 0, longTried = 0;
        int triedBoth = 0, followed = 0;
        var stream = new byte[GroupCodec.Bound(Members * (GroupCompression.HeaderPerMember + TestPages.PageSize))];
        for (int g = 0; g < 80; g++)
        {
            byte[] payload = Payload(r, g % 3 == 0 ? TestPages.TextLike : p => Tokens(p, token));
            int dense = Dense(payload), longMatch = LongMatch(payload);
            bool both = choice.TriesBoth;
            bool prefersLong = longTried < denseTried;
            Assert.Equal(prefersLong, choice.PrefersLongMatches);
            Assert.True(GroupCodec.TryCompress(CompressionAlgorithm.Zstd, payload, stream, ref choice, int.MaxValue, out int written));
            Assert.Equal(g + 1, choice.Groups);
            if (both)
            {
                // Tried with both: the smaller stream is kept, and both lengths count towards the choice.
                Assert.Equal(Math.Min(dense, longMatch), written);
                denseTried += dense;
                longTried += longMatch;
                triedBoth++;
            }
            else
            {
                Assert.Equal(prefersLong ? longMatch : dense, written);
                followed++;
            }
            AssertDecodes(payload, stream, written);
        }
        // Both kinds of group happened: groups 0-7 tried with both, then 16, 32, 48 and 64.
        Assert.Equal(12, triedBoth);
        Assert.Equal(80 - triedBoth, followed);
        if (token == 4) Assert.False(choice.PrefersLongMatches, "short tokens should leave the long-match set behind");
    }

    [Fact]
    public void AGroupTheChosenSetCannotBringUnderWhatItMustIsTriedWithTheOtherSet()
    {
        // Establish a preference for level 3 on short tokens, then hand over groups on which the long-match set does
        // better (long runs of 32-byte tokens, where level 3's shorter matches fragment; found, not assumed).
        var r = new Random(7);
        var choice = new GroupCodecChoice();
        var stream = new byte[GroupCodec.Bound(Members * (GroupCompression.HeaderPerMember + TestPages.PageSize))];
        for (int g = 0; g < GroupCodecChoice.FirstTried; g++)
            Assert.True(GroupCodec.TryCompress(CompressionAlgorithm.Zstd, Payload(r, p => Tokens(p, 4)), stream, ref choice, int.MaxValue, out _));
        Assert.False(choice.PrefersLongMatches);
        int checkedGroups = 0;
        for (int g = 0; g < 400 && checkedGroups < 3; g++)
        {
            byte[] payload = Payload(r, p => g % 2 == 0 ? Tokens(p, 9 + g % 23) : TestPages.PointerLike(p));
            int dense = Dense(payload), longMatch = LongMatch(payload);
            if (choice.TriesBoth || longMatch >= dense)
            {
                Assert.True(GroupCodec.TryCompress(CompressionAlgorithm.Zstd, payload, stream, ref choice, int.MaxValue, out int w));
                AssertDecodes(payload, stream, w);
                continue;
            }
            // Level 3 is chosen and makes dense bytes; the group must come under longMatch + 1: the other set is tried.
            Assert.True(GroupCodec.TryCompress(CompressionAlgorithm.Zstd, payload, stream, ref choice, longMatch + 1, out int written));
            Assert.Equal(longMatch, written);
            AssertDecodes(payload, stream, written);
            checkedGroups++;
        }
        Assert.True(checkedGroups == 3, $"only {checkedGroups} groups where the long-match set did better were found");
    }
}
