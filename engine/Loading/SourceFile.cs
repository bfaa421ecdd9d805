using DifferenceEngine.Qemu;
using Microsoft.Win32.SafeHandles;

namespace DifferenceEngine.Loading;

/// <summary>Opening and positional reading of image and core files, with their failures turned into <see cref="DEException"/>s.</summary>
internal static class SourceFile
{
    public static SafeFileHandle OpenRead(string path)
    {
        // A directory opens on some platforms and fails on others, and opening a FIFO waits for a writer: say what it is.
        if (LinuxNative.NotRegularFile(path) is { } what)
        {
            throw new DEException("FileUnreadable", DEErrorKind.ReadError,
                $"'{path}' is {what}, not a memory image or core file.", path);
        }

        try
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.SequentialScan);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            throw OpenFailure(path, e);
        }
    }

    /// <summary>Maps the exceptions of opening a file to the loader's error ids.</summary>
    internal static DEException OpenFailure(string path, Exception e) => e switch
    {
        FileNotFoundException or DirectoryNotFoundException =>
            new DEException("FileNotFound", DEErrorKind.ObjectNotFound, $"Memory image '{path}' does not exist.", path, e),
        UnauthorizedAccessException =>
            new DEException("FileUnreadable", DEErrorKind.PermissionDenied,
                $"Memory image '{path}' cannot be read: permission denied.", path, e),
        _ => new DEException("FileUnreadable", DEErrorKind.ReadError, $"Memory image '{path}' cannot be read: {e.Message}", path, e),
    };

    /// <summary>Reads until <paramref name="buffer"/> is full or the file ends; returns the bytes read.</summary>
    public static int ReadAtMost(SafeFileHandle file, Span<byte> buffer, long offset, string path)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n;
            try
            {
                n = RandomAccess.Read(file, buffer[done..], offset + done);
            }
            catch (IOException e)
            {
                throw new DEException("FileUnreadable", DEErrorKind.ReadError,
                    $"Reading '{path}' at offset 0x{offset + done:x} failed: {e.Message}", path, e);
            }

            if (n == 0)
            {
                break;
            }

            done += n;
        }

        return done;
    }

    /// <summary>Reads exactly <paramref name="buffer"/>.Length bytes; the file shrinking under us is a read error.</summary>
    public static void ReadExactly(SafeFileHandle file, Span<byte> buffer, long offset, string path)
    {
        int n = ReadAtMost(file, buffer, offset, path);
        if (n != buffer.Length)
        {
            throw new DEException("FileUnreadable", DEErrorKind.ReadError,
                $"'{path}' ended at offset 0x{offset + n:x} while 0x{offset + buffer.Length:x} was expected: was it truncated while being read?",
                path);
        }
    }
}
