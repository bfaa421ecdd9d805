using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace DifferenceEngine.Qemu;

/// <summary>
/// The Linux calls the engine makes itself (libc, no library of ours): for the QEMU backend the Unix socket to
/// libdeqemu.so with descriptors passed as SCM_RIGHTS, the userfaultfd ioctls, and reads and hole punches of the
/// guest's memfd, and the crash journal's file; for the frame pool, giving freed frames' memory back (madvise, or
/// process_madvise on its own pidfd for many ranges at once) and asking what is resident (mincore); for the swap file, creating and reserving it (open, posix_fallocate, fdatasync). Every
/// call returns what libc returns; the errno is <see cref="Marshal.GetLastPInvokeError"/>. x86_64 and arm64 layouts
/// (LP64) only.
/// </summary>
internal static unsafe partial class LinuxNative
{
    private const string Libc = "libc";

    public const int AF_UNIX = 1;
    public const int SOCK_SEQPACKET = 5;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1;
    public const int SCM_RIGHTS = 1;
    public const int MSG_NOSIGNAL = 0x4000;
    public const int MSG_CMSG_CLOEXEC = 0x40000000;
    public const int MSG_TRUNC = 0x20;
    public const int MSG_CTRUNC = 0x8;
    public const int FALLOC_FL_KEEP_SIZE = 1;
    public const int FALLOC_FL_PUNCH_HOLE = 2;
    public const int PROT_READ = 1;
    public const int MADV_DONTNEED = 4;
    public const int MADV_NOHUGEPAGE = 15;
    public const int MADV_DONTDUMP = 16;
    public const int MADV_POPULATE_WRITE = 23;
    public const int MAP_SHARED = 1;
    public const int SEEK_DATA = 3;
    public const int SEEK_HOLE = 4;
    public const int ENXIO = 6;
    public const short POLLIN = 1;

    public const int ENOENT = 2;
    public const int ESRCH = 3;
    public const int EINTR = 4;
    public const int EIO = 5;
    public const int EAGAIN = 11;
    public const int EACCES = 13;
    public const int EBUSY = 16;
    public const int EEXIST = 17;
    public const int ECONNREFUSED = 111;

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct CmsgHdr
    {
        public nuint Length;
        public int Level;
        public int Type;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Returned;
    }

    [LibraryImport(Libc, EntryPoint = "socket", SetLastError = true)]
    public static partial int Socket(int domain, int type, int protocol);

    [LibraryImport(Libc, EntryPoint = "connect", SetLastError = true)]
    public static partial int Connect(int fd, byte* address, uint length);

    [LibraryImport(Libc, EntryPoint = "sendmsg", SetLastError = true)]
    public static partial nint SendMsg(int fd, MsgHdr* message, int flags);

    [LibraryImport(Libc, EntryPoint = "recvmsg", SetLastError = true)]
    public static partial nint RecvMsg(int fd, MsgHdr* message, int flags);

    [LibraryImport(Libc, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Libc, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Ioctl(int fd, nuint request, void* argument);

    [LibraryImport(Libc, EntryPoint = "pread", SetLastError = true)]
    public static partial nint PRead(int fd, byte* buffer, nuint count, long offset);

    [LibraryImport(Libc, EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, void* buffer, nuint count);

    [LibraryImport(Libc, EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, void* buffer, nuint count);

    [LibraryImport(Libc, EntryPoint = "fallocate", SetLastError = true)]
    public static partial int Fallocate(int fd, int mode, long offset, long length);

    [LibraryImport(Libc, EntryPoint = "mmap", SetLastError = true)]
    public static partial void* Mmap(void* address, nuint length, int protection, int flags, int fd, long offset);

    [LibraryImport(Libc, EntryPoint = "munmap", SetLastError = true)]
    public static partial int Munmap(void* address, nuint length);

    [LibraryImport(Libc, EntryPoint = "lseek", SetLastError = true)]
    public static partial long Lseek(int fd, long offset, int whence);

    [LibraryImport(Libc, EntryPoint = "madvise", SetLastError = true)]
    public static partial int Madvise(void* address, nuint length, int advice);

    /// <summary>statx(2); its buffer (256 bytes) has one layout on every architecture: the mode is the u16 at <see cref="StatxModeOffset"/>.</summary>
    [LibraryImport(Libc, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Statx(int directoryFd, string path, int flags, uint mask, byte* buffer);

    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const uint STATX_TYPE = 1;
    public const uint STATX_MODE = 2;
    public const uint STATX_UID = 8;
    public const int StatxUidOffset = 20;
    public const int StatxModeOffset = 28;
    public const int S_IFDIR = 0x4000;

    [LibraryImport(Libc, EntryPoint = "geteuid")]
    public static partial uint GetEuid();

    [LibraryImport(Libc, EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);

    private static volatile bool s_noMallocTrim = OperatingSystem.IsWindows();

    /// <summary>
    /// glibc's malloc_trim(0): gives the memory its heaps hold free back to the system (free pages in the middle of a heap
    /// too). Native memory the process freed otherwise stays resident in the C library's heaps. False where the C library
    /// has no such call (musl, Windows).
    /// </summary>
    public static bool TryMallocTrim()
    {
        if (s_noMallocTrim) return false;
        try
        {
            MallocTrim(0);
            return true;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            s_noMallocTrim = true;
            return false;
        }
    }

    [LibraryImport(Libc, EntryPoint = "fstatfs", SetLastError = true)]
    private static partial int FStatFs(int fd, byte* buffer);

    /// <summary>hugetlbfs's f_type (linux/magic.h).</summary>
    public const long HUGETLBFS_MAGIC = 0x958458f6;

    /// <summary>The f_type of the file system a descriptor's file is on (fstatfs); -1 with errno set when it fails.</summary>
    public static long FileSystemType(int fd)
    {
        byte* buffer = stackalloc byte[256]; // struct statfs is 120 bytes on 64-bit Linux; f_type comes first
        return FStatFs(fd, buffer) == 0 ? *(long*)buffer : -1;
    }

    [LibraryImport(Libc, EntryPoint = "setsockopt", SetLastError = true)]
    public static partial int SetSockOpt(int socket, int level, int option, void* value, uint length);

    /// <summary>struct timeval (64-bit Linux).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct TimeVal
    {
        public long Seconds;
        public long Microseconds;
    }

    /// <summary>SO_SNDTIMEO for 64-bit time (the plain value on x86-64 and arm64).</summary>
    public const int SO_SNDTIMEO = 21;

    [LibraryImport(Libc, EntryPoint = "getsockopt", SetLastError = true)]
    public static partial int GetSockOpt(int socket, int level, int option, void* value, ref uint length);

    public const int SO_PEERCRED = 17;

    /// <summary>struct ucred: the credentials of a Unix socket's peer (SO_PEERCRED).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct UCred
    {
        public int Pid;
        public uint Uid;
        public uint Gid;
    }
    public const int StatxBufferSize = 256;
    public const int S_IFMT = 0xF000;
    public const int S_IFREG = 0x8000;
    public const int S_IFIFO = 0x1000;
    public const int S_IFCHR = 0x2000;
    public const int S_IFBLK = 0x6000;
    public const int S_IFSOCK = 0xC000;

    /// <summary>
    /// What <paramref name="path"/> is (symbolic links followed) when it is not a regular file: "a directory", "a FIFO
    /// (named pipe)", ...; null for a regular file, or when it cannot be looked at (opening it then gives the reason).
    /// Checked before a file is opened to be read: opening a FIFO waits for a writer, which may never come.
    /// </summary>
    public static string? NotRegularFile(string path)
    {
        return FileType(path) switch
        {
            -1 => null,
            S_IFREG => null,
            S_IFDIR => "a directory",
            S_IFIFO => "a FIFO (named pipe)",
            S_IFCHR => "a character device",
            S_IFBLK => "a block device",
            S_IFSOCK => "a socket",
            _ => "not a regular file",
        };
    }

    public const int AT_EMPTY_PATH = 0x1000;
    public const int S_IFLNK = 0xA000;
    public const int S_ISVTX = 0x200;

    /// <summary>The type and permission bits (st_mode) and the owner of a file, as statx(2) gives them.</summary>
    public readonly record struct FileStatus(int Mode, uint Owner)
    {
        public int Type => Mode & S_IFMT;
    }

    /// <summary>
    /// What <paramref name="path"/> names (the link itself unless <paramref name="followLinks"/>); null when it cannot be
    /// looked at (it does not exist, say) or on Windows.
    /// </summary>
    public static FileStatus? StatusOf(string path, bool followLinks)
    {
        if (OperatingSystem.IsWindows()) return null;
        byte* stat = stackalloc byte[StatxBufferSize];
        return Statx(AT_FDCWD, path, followLinks ? 0 : AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_MODE | STATX_UID, stat) == 0
            ? new FileStatus(*(ushort*)(stat + StatxModeOffset), *(uint*)(stat + StatxUidOffset))
            : null;
    }

    /// <summary>What the open file <paramref name="handle"/> is; null when it cannot be looked at or on Windows.</summary>
    public static FileStatus? StatusOf(SafeHandle handle)
    {
        if (OperatingSystem.IsWindows()) return null;
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            byte* stat = stackalloc byte[StatxBufferSize];
            return Statx((int)handle.DangerousGetHandle(), "", AT_EMPTY_PATH, STATX_TYPE | STATX_MODE | STATX_UID, stat) == 0
                ? new FileStatus(*(ushort*)(stat + StatxModeOffset), *(uint*)(stat + StatxUidOffset))
                : null;
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    /// <summary>
    /// The type bits (S_IFMT) of what <paramref name="path"/> names, symbolic links followed; -1 when it cannot be looked
    /// at (it does not exist, say). On Windows, and with a C library without statx, only a directory is told apart.
    /// </summary>
    public static int FileType(string path)
    {
        if (!OperatingSystem.IsWindows())
        {
            byte* stat = stackalloc byte[StatxBufferSize];
            try
            {
                return Statx(AT_FDCWD, path, 0, STATX_TYPE, stat) == 0 ? *(ushort*)(stat + StatxModeOffset) & S_IFMT : -1;
            }
            catch (EntryPointNotFoundException)
            {
                // glibc before 2.28: as on Windows.
            }
        }
        return Directory.Exists(path) ? S_IFDIR : File.Exists(path) ? S_IFREG : -1;
    }
    public const int EPERM = 1;

    /// <summary>syscall(2) with one argument (for calls libc has no wrapper for, such as userfaultfd).</summary>
    [LibraryImport(Libc, EntryPoint = "syscall", SetLastError = true)]
    public static partial long Syscall(long number, long argument);

    /// <summary>syscall(2) with five arguments (process_madvise).</summary>
    [LibraryImport(Libc, EntryPoint = "syscall", SetLastError = true)]
    public static partial long Syscall(long number, long a1, long a2, long a3, long a4, long a5);

    /// <summary>pidfd_open(2) and process_madvise(2): the same number on x86_64 and arm64 (the generic table).</summary>
    public const long SYS_pidfd_open = 434;
    public const long SYS_process_madvise = 440;
    public const int ENOSYS = 38;

    /// <summary>
    /// A pidfd for process <paramref name="pid"/> (pidfd_open, close-on-exec), or null where the kernel or a seccomp filter
    /// refuses the call, or the process is gone. It names that process for as long as it is held, even after its pid is
    /// given to another (<see cref="HasExited"/>).
    /// </summary>
    public static SafeFileHandle? OpenPidFd(int pid)
    {
        if (OperatingSystem.IsWindows()) return null;
        long fd = Syscall(SYS_pidfd_open, pid, 0, 0, 0, 0);
        return fd < 0 ? null : new SafeFileHandle((nint)fd, ownsHandle: true);
    }

    /// <summary>Whether the process of a pidfd has exited (a pidfd polls readable once it has: zombie or reaped).</summary>
    public static bool HasExited(SafeFileHandle pidFd)
    {
        bool added = false;
        try
        {
            pidFd.DangerousAddRef(ref added);
            var poll = new PollFd { Fd = (int)pidFd.DangerousGetHandle(), Events = POLLIN };
            int n;
            do n = Poll(&poll, 1, 0);
            while (n < 0 && Marshal.GetLastPInvokeError() == EINTR);
            return n > 0 && (poll.Returned & POLLIN) != 0;
        }
        finally
        {
            if (added) pidFd.DangerousRelease();
        }
    }

    [LibraryImport(Libc, EntryPoint = "mincore", SetLastError = true)]
    public static partial int Mincore(void* address, nuint length, byte* vector);

    [LibraryImport(Libc, EntryPoint = "poll", SetLastError = true)]
    public static partial int Poll(PollFd* fds, nuint count, int timeoutMs);

    public const int O_RDWR = 2;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_CLOEXEC = 0x80000;
    public const int O_NONBLOCK = 0x800;
    public const int EINVAL = 22;

    /// <summary>
    /// O_DIRECT and O_DIRECTORY are swapped between x86 and Arm (asm/fcntl.h): 0x4000 and 0x10000 on x86, 0x10000 and
    /// 0x4000 on arm and arm64. With x86's values on arm64 O_TMPFILE asked for O_DIRECT instead of a directory (EINVAL:
    /// no crash journal) and the swap file's O_DIRECT was O_DIRECTORY, which F_SETFL ignores (pages through the page cache).
    /// </summary>
    private static readonly bool ArmFlags =
        RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm;

    public static readonly int O_DIRECT = ArmFlags ? 0x10000 : 0x4000;
    public static readonly int O_DIRECTORY = ArmFlags ? 0x4000 : 0x10000;
    public static readonly int O_TMPFILE = 0x400000 | O_DIRECTORY; // __O_TMPFILE | O_DIRECTORY
    public const int SEEK_END = 2;
    public const int POSIX_FADV_DONTNEED = 4;
    public const int EOPNOTSUPP = 95;
    public const int EISDIR = 21;
    public const int ENOSPC = 28;

    [LibraryImport(Libc, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags, uint mode);

    /// <summary>fcntl(2) with an int argument (F_GETFL, F_SETFL).</summary>
    [LibraryImport(Libc, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int Fcntl(int fd, int command, int argument);

    public const int F_GETFL = 3;
    public const int F_SETFL = 4;

    [LibraryImport(Libc, EntryPoint = "unlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Unlink(string path);

    [LibraryImport(Libc, EntryPoint = "dup", SetLastError = true)]
    public static partial int Dup(int fd);

    [LibraryImport(Libc, EntryPoint = "pwrite", SetLastError = true)]
    public static partial nint PWrite(int fd, byte* buffer, nuint count, long offset);

    [LibraryImport(Libc, EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int Ftruncate(int fd, long length);

    [LibraryImport(Libc, EntryPoint = "fdatasync", SetLastError = true)]
    public static partial int Fdatasync(int fd);

    [LibraryImport(Libc, EntryPoint = "posix_fallocate")]
    public static partial int PosixFallocate(int fd, long offset, long length); // returns the errno itself

    [LibraryImport(Libc, EntryPoint = "posix_fadvise")]
    public static partial int PosixFadvise(int fd, long offset, long length, int advice); // returns the errno itself

    [LibraryImport(Libc, EntryPoint = "eventfd", SetLastError = true)]
    public static partial int EventFd(uint initial, int flags);

    /// <summary>The control buffer size for <paramref name="fds"/> descriptors (CMSG_SPACE).</summary>
    public static int ControlSpace(int fds) => sizeof(CmsgHdr) + Align(sizeof(int) * fds);

    /// <summary>CMSG_LEN: the header and the descriptors, without the trailing alignment.</summary>
    public static int ControlLength(int fds) => sizeof(CmsgHdr) + sizeof(int) * fds;

    private static int Align(int n) => (n + sizeof(nuint) - 1) & ~(sizeof(nuint) - 1);

    /// <summary>errno of the last call that failed on this thread.</summary>
    public static int Errno => Marshal.GetLastPInvokeError();

    /// <summary>The system's message for an errno (strerror).</summary>
    public static string Describe(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}
