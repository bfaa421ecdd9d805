using DifferenceEngine.Paging;

namespace DifferenceEngine.Tests.Engine;

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class SwapFileTests
{
    /// <summary>
    /// The swap file is made once (O_EXCL, 0600), then asked for O_DIRECT; DirectIo says what the kernel granted, as the
    /// file's flags in /proc/self/fdinfo show it (on a file system that refuses O_DIRECT: false, and buffered I/O). Its
    /// name is gone once it is made: only the descriptor has it, so nothing stays on disk when the process ends.
    /// </summary>
    [Fact]
    public void TheSwapFileIsPrivateUnnamedAndSaysWhetherItGotDirectIo()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "swap");
        string descriptor;
        using (var swap = SwapFile.Create(path, 1 << 20))
        {
            descriptor = $"/proc/self/fd/{swap.Descriptor}";
            Assert.False(File.Exists(path));
            Assert.Equal(path + " (deleted)", new FileInfo(descriptor).LinkTarget);
            // Opened again through /proc, as the kernel still has it: its mode and length.
            using (var reopened = File.OpenHandle(descriptor))
            {
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(reopened));
                Assert.Equal(1L << 20, RandomAccess.GetLength(reopened));
            }
            string flags = File.ReadLines($"/proc/self/fdinfo/{swap.Descriptor}").Single(l => l.StartsWith("flags:", StringComparison.Ordinal));
            bool direct = (Convert.ToInt32(flags["flags:".Length..].Trim(), 8) & 0x4000 /* O_DIRECT */) != 0;
            Assert.Equal(direct, swap.DirectIo);
            // A page written and read back, through whichever I/O it got (O_DIRECT needs aligned buffers: a page is).
            byte[] page = new byte[4096];
            new Random(3).NextBytes(page);
            using var aligned = new AlignedPage();
            page.CopyTo(aligned.Span);
            swap.Write(8192, aligned.Span);
            swap.Flush();
            aligned.Span.Clear();
            swap.Read(8192, aligned.Span);
            Assert.True(aligned.Span.SequenceEqual(page));
        }
        // Closed: that descriptor (if its number was not reused) is no longer the swap file.
        Assert.NotEqual(path + " (deleted)", new FileInfo(descriptor).LinkTarget);
        Assert.False(File.Exists(path));
        // Made exclusively: an existing file is refused, not reused.
        File.WriteAllText(path, "not a swap file");
        Assert.Equal("SwapFileExists", Assert.Throws<DEException>(() => SwapFile.Create(path, 1 << 20)).ErrorId);
    }

    private sealed unsafe class AlignedPage : IDisposable
    {
        private readonly byte* _page = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(4096, 4096);

        public Span<byte> Span => new(_page, 4096);

        public void Dispose() => System.Runtime.InteropServices.NativeMemory.AlignedFree(_page);
    }
}
