using DifferenceEngine.Compression;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// The buffers a pass collects into (cold shared pages, nominations for groups of shared blobs): appended from several
/// workers, counted while they hold memory, and holding none between passes.
/// </summary>
public class PassBufferTests
{
    [Fact]
    public void BatchesFromSeveralWorkersAreAllKeptAndTheMemoryIsCountedOnlyDuringAPass()
    {
        using var buffer = new PassBuffer<SharedNomination>();
        Assert.Equal(0, buffer.MetadataBytes);
        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 4 }, worker =>
        {
            Span<SharedNomination> batch = stackalloc SharedNomination[100];
            for (int round = 0; round < 10; round++)
            {
                for (int i = 0; i < batch.Length; i++) batch[i] = new SharedNomination(worker, (uint)(worker * 1000 + round * 100 + i), round * 100 + i);
                buffer.Add(batch);
            }
        });
        Assert.Equal(8000, buffer.Count);
        // Every item once, none torn.
        var blobs = buffer.Items.ToArray().Select(n => n.Blob).ToHashSet();
        Assert.Equal(8000, blobs.Count);
        Assert.All(buffer.Items.ToArray(), n => Assert.Equal((uint)(n.DomainId * 1000 + n.Gfn), n.Blob));
        long held = buffer.MetadataBytes;
        Assert.True(held >= 8000 * 16, $"{held} bytes counted for 8,000 nominations of 16 bytes");

        buffer.EndPass();
        Assert.Equal(0, buffer.Count);
        Assert.Equal(0, buffer.MetadataBytes);
        // The next pass's first append takes room for what this pass collected and a sixteenth, so a pass like it does not
        // grow.
        buffer.Add([new SharedNomination(1, 2, 3), new SharedNomination(4, 5, 6)]);
        Assert.Equal(8500L * 16, buffer.MetadataBytes);
        Assert.Equal(new SharedNomination(1, 2, 3), buffer.Items[0]);

        // A consumer that compacted the items in place keeps the first ones; the memory stays until the pass ends.
        buffer.Truncate(1);
        Assert.Equal(1, buffer.Count);
        Assert.Equal(new SharedNomination(1, 2, 3), buffer.Items[0]);
        Assert.Equal(8500L * 16, buffer.MetadataBytes);
        buffer.EndPass();
        Assert.Equal(0, buffer.MetadataBytes);
    }

    [Fact]
    public void TheNextPassTakesRoomForTheMostThisPassHeldThoughAConsumerEmptiedItBeforeTheEnd()
    {
        using var buffer = new PassBuffer<SharedNomination>();
        var batch = new SharedNomination[3000];
        for (int i = 0; i < 3; i++) buffer.Add(batch); // 9,000
        buffer.Truncate(100); // a consumer that compacted them in place (SharedGrouping keeps each blob once)
        buffer.Clear();       // and emptied the buffer when done
        buffer.EndPass();
        buffer.Add(batch.AsSpan(0, 1));
        Assert.Equal(9562L * 16, buffer.MetadataBytes); // 9,000 and a sixteenth: a pass like the last grows it no more
        buffer.EndPass();     // a pass that held one item: the next takes the least room again
        buffer.Add(batch.AsSpan(0, 1));
        Assert.Equal(256L * 16, buffer.MetadataBytes);
    }

    [Fact]
    public void APassThatCollectsMoreThanTheLastGrowsByAQuarterAtATime()
    {
        using var buffer = new PassBuffer<SharedNomination>();
        var batch = new SharedNomination[1000];
        for (int i = 0; i < 4; i++) buffer.Add(batch); // 4,000 from the least room: 256, then 1,256 (a batch), ...
        long held = buffer.MetadataBytes / 16;
        Assert.True(held >= 4000 && held <= 4000 * 5 / 4, $"room for {held} nominations after 4,000 came");
        buffer.EndPass();
        buffer.Add(batch);
        Assert.Equal(4250L * 16, buffer.MetadataBytes);
        for (int i = 0; i < 5; i++) buffer.Add(batch); // 6,000: grows from 4,250 by a quarter, to 5,312, then 6,640
        Assert.Equal(6640L * 16, buffer.MetadataBytes);
    }

    [Fact]
    public void AColdSharedPageTakesTwelveBytesAndHoldsAnyGfnOfAnEmbeddedDomain()
    {
        Assert.Equal(12, System.Runtime.CompilerServices.Unsafe.SizeOf<SharedCandidate>());
        Assert.True(DifferenceEngine.Loading.LoadGeometry.MaxGuestBytes / 4096 - 1 <= SharedCandidate.MaxGfn);
        var last = new SharedCandidate(7, 3, SharedCandidate.MaxGfn);
        Assert.Equal(SharedCandidate.MaxGfn, last.Page);
        Assert.False(last.IsPatch);
        var patch = SharedCandidate.ForPatch(7, 3, SharedCandidate.MaxGfn);
        Assert.Equal(SharedCandidate.MaxGfn, patch.Page);
        Assert.True(patch.IsPatch);
        // In a domain, patches sort before the pages sharing the frame, whatever their gfns.
        Assert.True(patch.SortKey < new SharedCandidate(7, 3, 0).SortKey);
        Assert.Throws<ArgumentOutOfRangeException>(() => new SharedCandidate(7, 3, SharedCandidate.MaxGfn + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => SharedCandidate.ForPatch(7, 3, -1));
    }
}
