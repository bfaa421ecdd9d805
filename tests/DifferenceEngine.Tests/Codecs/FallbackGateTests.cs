using DifferenceEngine.Codecs;
using DifferenceEngine.Compression;
using DifferenceEngine.Domains;
using K4os.Compression.LZ4;

namespace DifferenceEngine.Tests.Codecs;

/// <summary>
/// The fallback codec's gate (CompressionPass.TryCompressBody): a page LZ4 cannot shrink at all is tried with the groups'
/// codec only when its order-0 entropy could bring it under the threshold.
/// </summary>
public class FallbackGateTests
{
    [Fact]
    public void TheOrder0EntropyOfAPageIsItsBytesTimesTheBitsEachValueNeeds()
    {
        var page = new byte[4096];
        Assert.Equal(0, PageEntropy.Order0Bytes(page)); // one value: nothing to code
        for (int i = 0; i < page.Length; i++) page[i] = (byte)(i % 16);
        Assert.Equal(2048, PageEntropy.Order0Bytes(page), 9); // 16 values, equally often: 4 bits each
        for (int i = 0; i < page.Length; i++) page[i] = (byte)i;
        Assert.Equal(4096, PageEntropy.Order0Bytes(page), 9); // every value, equally often: 8 bits each
        for (int i = 0; i < page.Length; i++) page[i] = (byte)(i < 2048 ? 0 : 1);
        Assert.Equal(512, PageEntropy.Order0Bytes(page), 9); // two values, half and half: a bit each
        Assert.Equal("PageSizeInvalid", Assert.Throws<DEException>(() => PageEntropy.Order0Bytes(new byte[100])).ErrorId);
    }

    [Fact]
    public void APageLz4CannotShrinkGoesToZstdOnlyWhenItsEntropyCouldFitTheThreshold()
    {
        var policy = new DomainPolicy(); // LZ4, groups of four with Zstd: the default
        var body = new byte[4096 + 64];
        var lz4 = new byte[LZ4Codec.MaximumOutputSize(4096)];

        // 32 symbols drawn at random: next to no repeats for LZ4, but 5 bits a byte for Zstd's literals.
        var rng = new Random(11);
        var hex = Enumerable.Range(0, 4096).Select(_ => (byte)('0' + rng.Next(32))).ToArray();
        Assert.True(LZ4Codec.Encode(hex, lz4, LZ4Level.L00_FAST) >= 4096, "LZ4 cannot shrink it at all");
        Assert.True(PageEntropy.Order0Bytes(hex) < 4096 * 0.75 - 10);
        Assert.True(CompressionPass.TryCompressBody(policy, policy.CompressionThreshold, hex, body, out int written, out var algorithm));
        Assert.Equal(CompressionAlgorithm.Zstd, algorithm);
        var back = new byte[4096];
        PageCompressors.Get(algorithm).Decompress(body.AsSpan(0, written), back);
        Assert.Equal(hex, back);

        // Every byte value: LZ4 and the entropy bound both say no, and the page stays as it is.
        var noise = new byte[4096];
        new Random(12).NextBytes(noise);
        Assert.True(PageEntropy.Order0Bytes(noise) > 4096 * 0.75);
        Assert.False(CompressionPass.TryCompressBody(policy, policy.CompressionThreshold, noise, body, out written, out _));
        Assert.Equal(0, written);

        // A page LZ4 shrinks, but not enough: Zstd is tried whatever its entropy (here it fits).
        // (896 zero bytes, then 3200 of the 32 symbols.)
        var page = new byte[4096];
        hex.AsSpan(0, 3200).CopyTo(page.AsSpan(896));
        int lz4Size = LZ4Codec.Encode(page, lz4, LZ4Level.L00_FAST);
        Assert.InRange(lz4Size, (int)(4096 * 0.75) - 9, 4095);
        Assert.True(CompressionPass.TryCompressBody(policy, policy.CompressionThreshold, page, body, out written, out algorithm));
        Assert.Equal(CompressionAlgorithm.Zstd, algorithm);
    }

    [Fact]
    public void AGroupFastSingleTakesTheGroupsCodecAtItsFastLevelAndItsUsualOneOnlyForANearMiss()
    {
        var policy = new DomainPolicy(); // LZ4, groups of four with Zstd
        var body = new byte[4096 + 64];
        var back = new byte[4096];
        int limit = (int)(4096 * policy.CompressionThreshold) - EncodedPage.CompressedHeader;
        var rng = new Random(5);
        var fast = PageCompressors.Fallback(CompressionAlgorithm.Zstd);
        var usual = PageCompressors.Get(CompressionAlgorithm.Zstd);
        var scratch = new byte[8192];
        int seen = 0, nearMisses = 0;
        // Pages of words (4 to 7 bytes) drawn from vocabularies of different sizes, with a share of random bytes between
        // them: from easy to just past the threshold, where the usual level's longer search finds repeats the fast one
        // misses.
        for (int vocabulary = 16; vocabulary <= 600 && seen < 60; vocabulary += 8)
        {
            var words = Enumerable.Range(0, vocabulary).Select(_ => Enumerable.Range(0, 4 + rng.Next(4)).Select(_ => (byte)rng.Next(256)).ToArray()).ToArray();
            var page = new byte[4096];
            for (int at = 0; at < page.Length;)
            {
                if (rng.Next(4) == 0) page[at++] = (byte)rng.Next(256);
                else
                {
                    var word = words[rng.Next(vocabulary)];
                    int n = Math.Min(word.Length, page.Length - at);
                    word.AsSpan(0, n).CopyTo(page.AsSpan(at));
                    at += n;
                }
            }
            Assert.True(fast.TryCompress(page, scratch, out int fastSize));
            bool fitsFast = fastSize <= limit;
            bool nearMiss = !fitsFast && fastSize <= limit + limit / 8;
            bool fitsUsual = usual.TryCompress(page, scratch, out int usualSize) && usualSize <= limit;
            bool ok = CompressionPass.TryCompressBody(policy, policy.CompressionThreshold, page, body, out int written, out var algorithm,
                groupCodecFirst: true, groupFast: true);
            // Fits at the fast level: that blob; a near miss: the usual level's, if it fits; else refused.
            Assert.Equal(fitsFast || (nearMiss && fitsUsual), ok);
            if (!ok) continue;
            seen++;
            if (!fitsFast) nearMisses++;
            Assert.Equal(CompressionAlgorithm.Zstd, algorithm);
            Assert.Equal(fitsFast ? fastSize : usualSize, written);
            usual.Decompress(body.AsSpan(0, written), back);
            Assert.Equal(page, back);
        }
        Assert.True(seen >= 10, $"only {seen} pages fitted");
        Assert.True(nearMisses >= 1, $"no near miss among {seen} pages: the usual level was never tried");
    }
}
