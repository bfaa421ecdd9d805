using DifferenceEngine.Compression;

namespace DifferenceEngine.Tests.Engine;

/// <summary>
/// The page group and shared blob tables' metadata, and the figure the fleet's model computes for them without a table
/// (MetadataBytesFor): the same bytes for any number of ids, so a prediction counts the chunks a host really allocates.
/// </summary>
public class IdTableMetadataTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(127)]
    [InlineData(128)]
    [InlineData(129)]
    [InlineData(1000)]
    [InlineData(5000)]
    public void PageGroupTableMetadataIsWhatTheModelComputes(int groups)
    {
        var table = new PageGroupTable();
        for (int i = 0; i < groups; i++) table.Reserve();
        Assert.Equal(PageGroupTable.MetadataBytesFor(groups), table.MetadataBytes);
        // Whole chunks of 128 groups: a small host's few hundred groups take a few chunks, not one of 1,024.
        long chunks = groups == 0 ? 0 : groups / PageGroupTable.RecordsPerChunk + 1;
        Assert.InRange(table.MetadataBytes - chunks * PageGroupTable.ChunkBytes, 0, 2048);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(255)]
    [InlineData(256)]
    [InlineData(3000)]
    public void SharedBlobTableMetadataIsWhatTheModelComputes(int blobs)
    {
        var table = new SharedBlobTable();
        for (int i = 0; i < blobs; i++) table.Reserve();
        Assert.Equal(SharedBlobTable.MetadataBytesFor(blobs), table.MetadataBytes);
        Assert.InRange(table.MetadataBytes, blobs * 10L, blobs * 10L + 10L * 256 + 2048); // 10 bytes a blob (a 48-bit handle and a count)
    }
}
