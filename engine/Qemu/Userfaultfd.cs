using System.Runtime.InteropServices;

namespace DifferenceEngine.Qemu;

/// <summary>
/// A userfaultfd that serves another process's memory (libdeqemu.so made it in QEMU and registered guest RAM with it):
/// reading its fault messages and resolving them with UFFDIO_COPY / UFFDIO_ZEROPAGE / UFFDIO_WRITEPROTECT / UFFDIO_WAKE.
/// Addresses are QEMU's. The ioctls are the kernel's (linux/userfaultfd.h); the descriptor is non-blocking.
/// </summary>
internal sealed unsafe class Userfaultfd : IDisposable
{
    public const int PageSize = 4096;

    // _IOWR/_IOR(0xAA, nr, struct) as linux/userfaultfd.h defines them.
    private const nuint UFFDIO_WAKE = 0x8010AA02;
    private const nuint UFFDIO_COPY = 0xC028AA03;
    private const nuint UFFDIO_ZEROPAGE = 0xC020AA04;
    private const ulong UFFDIO_ZEROPAGE_MODE_DONTWAKE = 1;
    private const ulong UFFDIO_COPY_MODE_DONTWAKE = 1;
    private const nuint UFFDIO_WRITEPROTECT = 0xC018AA06;
    private const ulong UFFDIO_WRITEPROTECT_MODE_WP = 1;

    public const byte EventPageFault = 0x12;
    public const ulong PageFaultFlagWrite = 1;
    public const ulong PageFaultFlagWriteProtect = 2;

    private int fd;

    public Userfaultfd(int fd) => this.fd = fd;

    public int Handle => fd;

    /// <summary>uffd_msg, 32 bytes; for a page fault: its flags and address.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Message
    {
        public byte Event;
        public byte Reserved1;
        public ushort Reserved2;
        public uint Reserved3;
        public ulong Flags;
        public ulong Address;
        public ulong Tail;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Range
    {
        public ulong Start;
        public ulong Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct CopyArgs
    {
        public ulong Destination;
        public ulong Source;
        public ulong Length;
        public ulong Mode;
        public long Copied;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct ZeroPageArgs
    {
        public Range Range;
        public ulong Mode;
        public long Zeroed;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct WriteProtectArgs
    {
        public Range Range;
        public ulong Mode;
    }

    /// <summary>
    /// Reads the waiting messages into <paramref name="messages"/>; returns how many (0: none waiting). Throws on a
    /// failure other than "none waiting".
    /// </summary>
    public int ReadMessages(Span<Message> messages)
    {
        fixed (Message* p = messages)
        {
            while (true)
            {
                nint n = LinuxNative.Read(fd, p, (nuint)(messages.Length * sizeof(Message)));
                if (n >= 0) return (int)(n / sizeof(Message));
                int errno = LinuxNative.Errno;
                if (errno == LinuxNative.EAGAIN) return 0;
                if (errno != LinuxNative.EINTR) throw Failure("read", errno);
            }
        }
    }

    /// <summary>
    /// Blocks until fault messages may be waiting (true) or <paramref name="stopFd"/> (an eventfd, or any descriptor)
    /// becomes readable (false).
    /// </summary>
    public bool Wait(int stopFd)
    {
        var fds = stackalloc LinuxNative.PollFd[2];
        fds[0] = new LinuxNative.PollFd { Fd = fd, Events = LinuxNative.POLLIN };
        fds[1] = new LinuxNative.PollFd { Fd = stopFd, Events = LinuxNative.POLLIN };
        while (LinuxNative.Poll(fds, 2, -1) < 0)
        {
            int errno = LinuxNative.Errno;
            if (errno != LinuxNative.EINTR) throw Failure("poll", errno);
        }
        return fds[1].Returned == 0;
    }

    /// <summary>
    /// Installs <paramref name="page"/> at <paramref name="address"/> and wakes its waiters. False: a page is there
    /// already; its waiters are woken all the same (the kernel wakes them only for a page installed, and a thread that
    /// faulted before the page came by another way would otherwise sleep for good).
    /// </summary>
    /// <remarks>
    /// With <paramref name="wake"/> false nobody is woken, installed or not: the caller wakes them (<see cref="Wake"/>)
    /// once it has done what must come first (the crash journal's drop record).
    /// </remarks>
    public bool Copy(ulong address, ReadOnlySpan<byte> page, bool wake = true)
    {
        bool installed;
        fixed (byte* source = page)
        {
            var args = new CopyArgs
            {
                Destination = address, Source = (ulong)source, Length = PageSize, Mode = wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE,
            };
            installed = Resolve(UFFDIO_COPY, &args, "UFFDIO_COPY", address);
        }
        if (!installed && wake) Wake(address, PageSize);
        return installed;
    }

    /// <summary>
    /// Installs a zero page at <paramref name="address"/> and wakes its waiters, unless <paramref name="wake"/> is false
    /// (then <see cref="Wake"/> does, once the caller has counted it: a woken reader sees the count). False: a page is
    /// there already; with <paramref name="wake"/> its waiters are woken all the same, as <see cref="Copy"/> does.
    /// </summary>
    public bool ZeroPage(ulong address, bool wake = true)
    {
        var args = new ZeroPageArgs { Range = new Range { Start = address, Length = PageSize }, Mode = wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE };
        bool installed = Resolve(UFFDIO_ZEROPAGE, &args, "UFFDIO_ZEROPAGE", address);
        if (!installed && wake) Wake(address, PageSize);
        return installed;
    }

    /// <summary>Write-protects the page at <paramref name="address"/> (on), or lifts that and wakes writers waiting on it.</summary>
    public void WriteProtect(ulong address, ulong length, bool on)
    {
        var args = new WriteProtectArgs
        {
            Range = new Range { Start = address, Length = length },
            Mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
        };
        while (LinuxNative.Ioctl(fd, UFFDIO_WRITEPROTECT, &args) != 0)
        {
            int errno = LinuxNative.Errno;
            if (errno != LinuxNative.EAGAIN && errno != LinuxNative.EINTR) throw Failure("UFFDIO_WRITEPROTECT", errno, address);
        }
    }

    /// <summary>Wakes every thread waiting on a fault in the range: each retries its access, and faults again if it must.</summary>
    public void Wake(ulong address, ulong length)
    {
        var range = new Range { Start = address, Length = length };
        if (LinuxNative.Ioctl(fd, UFFDIO_WAKE, &range) != 0) throw Failure("UFFDIO_WAKE", LinuxNative.Errno, address);
    }

    private bool Resolve(nuint request, void* args, string name, ulong address)
    {
        while (LinuxNative.Ioctl(fd, request, args) != 0)
        {
            int errno = LinuxNative.Errno;
            if (errno == LinuxNative.EEXIST) return false;
            // EAGAIN: the memory map changed under the call (QEMU mapped or unmapped something); it can be retried.
            if (errno != LinuxNative.EAGAIN && errno != LinuxNative.EINTR) throw Failure(name, errno, address);
        }
        return true;
    }

    private static DEException Failure(string call, int errno, ulong address = 0) => errno == LinuxNative.ESRCH
        // The kernel's answer once the process whose memory this is has exited (its mm is gone).
        ? new("QemuGuestExited", DEErrorKind.ConnectionError,
            $"{call}{(address != 0 ? $" at 0x{address:x}" : "")} failed: the QEMU process has exited (its memory is gone).", null)
        : new("QemuUserfaultfdFailed", DEErrorKind.ConnectionError,
            $"{call}{(address != 0 ? $" at 0x{address:x}" : "")} failed: {LinuxNative.Describe(errno)} (errno {errno}).", null);

    private const nuint UFFDIO_API = 0xC018AA3F;
    private const nuint UFFDIO_REGISTER = 0xC020AA00;
    private const ulong UFFD_API = 0xAA;
    private const ulong UFFD_FEATURE_MISSING_SHMEM = 1 << 5;
    private const ulong UFFDIO_REGISTER_MODE_MISSING = 1;
    private const long UFFD_USER_MODE_ONLY = 1;

    /// <summary>
    /// A userfaultfd of this process on which a read of a hole in the engine's own mappings of guest RAM is a fault message
    /// instead of a page allocated as zeros (<see cref="GuardReads"/>), or null with the reason it could not be made.
    /// </summary>
    public static Userfaultfd? CreateReadGuard(out string? failure)
    {
        failure = null;
        long number = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => 323,
            Architecture.Arm64 => 282,
            _ => -1,
        };
        if (number < 0)
        {
            failure = $"no userfaultfd system call number known for {RuntimeInformation.ProcessArchitecture}";
            return null;
        }
        // User-mode faults only: what the kernel reads on another's behalf (/proc/PID/mem, process_vm_readv) fails at once,
        // and no privilege is needed (vm.unprivileged_userfaultfd stays as it is).
        int fd = (int)LinuxNative.Syscall(number, LinuxNative.O_CLOEXEC | LinuxNative.O_NONBLOCK | UFFD_USER_MODE_ONLY);
        if (fd < 0)
        {
            failure = $"userfaultfd: {LinuxNative.Describe(LinuxNative.Errno)}";
            return null;
        }
        // Fault messages, served by QemuRam's guard thread: a hole the engine reads where the guest has the page (QEMU let
        // it go itself: a balloon, free page reporting) gets a zero page, as any reader of a discarded page does; a
        // hole where the engine holds the page is a bug of the engine, which stops there rather than read zeros.
        var api = stackalloc ulong[3];
        api[0] = UFFD_API;
        api[1] = UFFD_FEATURE_MISSING_SHMEM;
        api[2] = 0;
        if (LinuxNative.Ioctl(fd, UFFDIO_API, api) != 0)
        {
            failure = $"UFFDIO_API (shared memory): {LinuxNative.Describe(LinuxNative.Errno)}";
            LinuxNative.Close(fd);
            return null;
        }
        return new Userfaultfd(fd);
    }

    /// <summary>
    /// Registers a mapping of this process for missing faults on a <see cref="CreateReadGuard"/> descriptor: a read of a
    /// page the memfd does not have waits for the guard's answer (QemuRam's guard thread), and one through /proc/PID/mem
    /// fails with EIO at once, the page staying a hole. Present pages read as before. Returns the error message, or null.
    /// </summary>
    public string? GuardReads(void* address, ulong length)
    {
        var register = stackalloc ulong[4];
        register[0] = (ulong)address;
        register[1] = length;
        register[2] = UFFDIO_REGISTER_MODE_MISSING;
        register[3] = 0;
        return LinuxNative.Ioctl(fd, UFFDIO_REGISTER, register) == 0 ? null : $"UFFDIO_REGISTER: {LinuxNative.Describe(LinuxNative.Errno)}";
    }

    public void Dispose()
    {
        if (fd >= 0) LinuxNative.Close(fd);
        fd = -1;
    }
}
