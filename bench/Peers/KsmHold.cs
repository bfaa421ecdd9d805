using DifferenceEngine.Memory;

namespace DifferenceEngine.Bench.Peers;

/// <summary>
/// The hidden "ksm-hold IMAGE" mode: a child of the comparison that maps anonymous memory the size of one image,
/// marks it MADV_MERGEABLE, copies the image in (every page written, zero pages too, as a running guest holds them),
/// prints "READY pages", and waits on stdin; it ends when stdin closes or it is killed.
/// </summary>
internal static unsafe class KsmHold
{
    public const string Verb = "ksm-hold";

    public static int Run(string[] args)
    {
        if (args.Length != 1)
        {
            Console.Error.WriteLine($"usage: {Verb} IMAGE");
            return 2;
        }
        using var file = File.OpenHandle(args[0]);
        long length = RandomAccess.GetLength(file);
        if (length == 0 || length % PageGeometry.PageSize != 0)
        {
            Console.Error.WriteLine($"{args[0]}: {length} bytes, not whole pages.");
            return 2;
        }
        nint region = LibC.Mmap(0, (nuint)length, LibC.ProtRead | LibC.ProtWrite, LibC.MapPrivate | LibC.MapAnonymous, -1, 0);
        if (region == LibC.MapFailed)
        {
            Console.Error.WriteLine($"mmap of {length} bytes failed: {LibC.LastError()}");
            return 1;
        }
        try
        {
            // Small pages only: KSM merges 4 KiB pages, and the engine's frames are 4 KiB.
            LibC.Madvise(region, (nuint)length, LibC.MadvNoHugePage);
            if (LibC.Madvise(region, (nuint)length, LibC.MadvMergeable) != 0)
            {
                Console.Error.WriteLine($"madvise(MADV_MERGEABLE) failed: {LibC.LastError()}");
                return 1;
            }
            const int chunk = 1 << 20;
            for (long offset = 0; offset < length;)
            {
                int n = (int)Math.Min(chunk, length - offset);
                var span = new Span<byte>((byte*)region + offset, n);
                int read = RandomAccess.Read(file, span, offset);
                if (read <= 0)
                {
                    Console.Error.WriteLine($"{args[0]}: ended at {offset} of {length} bytes.");
                    return 1;
                }
                offset += read;
            }
            Console.Out.WriteLine($"READY {length / PageGeometry.PageSize}");
            Console.Out.Flush();
            _ = Console.In.ReadLine();
            return 0;
        }
        finally
        {
            LibC.Munmap(region, (nuint)length);
        }
    }
}
