using System.Runtime.InteropServices;
using System.Text;

namespace DifferenceEngine.Qemu;

/// <summary>One guest RAM mapping of a QEMU: where QEMU has it, and where it is in which memfd.</summary>
public sealed record QemuRegion(ulong HostAddress, ulong Length, ulong FileOffset, int MemfdIndex, long FirstGfn)
{
    public long PageCount => (long)(Length / Userfaultfd.PageSize);
}

/// <summary>
/// The engine's connection to one QEMU through libdeqemu.so's socket (native/deqemu.h): the hello that hands over the
/// userfaultfd, the guest RAM memfds and any state an earlier engine deposited; reading guest pages from the memfd and
/// punching them out of it; deposit and detach. Guest frame numbers run over the regions in order (region 0's pages
/// first). Deposit and detach are serialized (a pass's journal compaction may deposit while the domain is removed).
/// </summary>
internal sealed unsafe class QemuLink : IDisposable
{
    private const int PageSize = Userfaultfd.PageSize;
    private int socket;
    private readonly object socketGate = new();
    private bool broken; // a reply did not come in time (under socketGate)

    /// <summary>How long this link waits for a reply (<see cref="ReplyPatience"/>; tests shorten it).</summary>
    internal TimeSpan Patience { get; set; } = ReplyPatience;
    private readonly int[] memfds;
    private int stateFd;

    private QemuLink(int socket, QemuProtocol.HelloReply hello, int[] fds)
    {
        this.socket = socket;
        Pid = (int)hello.Pid;
        WriteProtect = (hello.Flags & QemuProtocol.HelloWriteProtect) != 0;
        Reattached = (hello.Flags & QemuProtocol.HelloReattach) != 0;
        Faults = new Userfaultfd(fds[0]);
        bool hasState = (hello.Flags & QemuProtocol.HelloState) != 0;
        memfds = fds[1..(hasState ? fds.Length - 1 : fds.Length)];
        stateFd = hasState ? fds[^1] : -1;
        var regions = new List<QemuRegion>();
        long gfn = 0;
        for (int i = 0; i < hello.RegionCount; i++)
        {
            var r = hello.RegionAt(i);
            regions.Add(new QemuRegion(r.HostAddress, r.Length, r.FileOffset, (int)r.MemfdIndex, gfn));
            gfn += (long)(r.Length / PageSize);
        }
        Regions = regions;
        PageCount = gfn;
    }

    /// <summary>QEMU's process id.</summary>
    public int Pid { get; }

    /// <summary>The userfaultfd takes write-protect faults (shared-memory write-protect: Linux 5.19 and later).</summary>
    public bool WriteProtect { get; }

    /// <summary>An earlier engine had this userfaultfd: faults it read and never answered may wait (wake them).</summary>
    public bool Reattached { get; }

    public IReadOnlyList<QemuRegion> Regions { get; }

    /// <summary>Guest pages over all regions.</summary>
    public long PageCount { get; }

    public Userfaultfd Faults { get; }

    /// <summary>The descriptor an earlier engine deposited (its state), or -1; this link owns it until <see cref="TakeState"/>.</summary>
    public int StateFd => stateFd;

    /// <summary>Takes ownership of the deposited state descriptor (-1 when there was none).</summary>
    public int TakeState()
    {
        int fd = stateFd;
        stateFd = -1;
        return fd;
    }

    /// <summary>
    /// Connects to the socket of a QEMU running with libdeqemu.so and says hello. Errors: "QemuSocketNotFound" (no socket
    /// at the path, or nothing listening), "QemuAttachRefused" (another engine is attached, or this user may not),
    /// "QemuProtocolError".
    /// </summary>
    public static QemuLink Attach(string socketPath) => Attach(socketPath, ReplyPatience);

    /// <summary>
    /// How long the library may take to answer a hello or a detach (it answers at once, from a thread of its own): a peer
    /// that says nothing to a hello is not one, and a QEMU that does not answer a detach (stopped, say) does not hold
    /// Remove-DEDomain for good. A deposit is awaited without limit (see <see cref="Deposit"/>).
    /// </summary>
    internal static readonly TimeSpan ReplyPatience = TimeSpan.FromSeconds(10);

    /// <summary>Most guest RAM a QEMU domain may have: a domain's bound (its tables are sized by it).</summary>
    private const ulong MaxGuestBytes = (ulong)Loading.LoadGeometry.MaxGuestBytes;

    /// <summary>As <see cref="Attach(string)"/>, the link waiting <paramref name="patience"/> for the hello's reply and a detach's.</summary>
    internal static QemuLink Attach(string socketPath, TimeSpan patience)
    {
        byte[] path = Encoding.UTF8.GetBytes(socketPath);
        if (path.Length == 0 || path.Length > 107)
            throw new DEException("QemuSocketPathInvalid", DEErrorKind.InvalidArgument,
                $"'{socketPath}' cannot be a Unix socket path (1 to 107 bytes).", socketPath);
        int s = LinuxNative.Socket(LinuxNative.AF_UNIX, LinuxNative.SOCK_SEQPACKET | LinuxNative.SOCK_CLOEXEC, 0);
        if (s < 0) throw Failure("socket", LinuxNative.Errno, socketPath);
        try
        {
            byte* address = stackalloc byte[110];
            new Span<byte>(address, 110).Clear();
            *(ushort*)address = LinuxNative.AF_UNIX;
            path.CopyTo(new Span<byte>(address + 2, 108));
            // A Unix socket's connect waits while the listener's queue is full, which a stopped QEMU's is once a few engines
            // have given up on it (each attempt that gave up stays queued until the library hangs up on it): the wait is
            // the patience's, as the hello's reply (SO_SNDTIMEO bounds connect on Unix sockets; put back to none after).
            int patienceMs = Milliseconds(patience);
            SetSendTimeout(s, patienceMs, socketPath);
            int connected;
            while ((connected = LinuxNative.Connect(s, address, 110)) != 0 && LinuxNative.Errno == LinuxNative.EINTR) { }
            if (connected != 0)
            {
                int errno = LinuxNative.Errno;
                if (errno == LinuxNative.EAGAIN)
                    throw new DEException("QemuLinkFailed", DEErrorKind.ConnectionError,
                        $"QEMU at {socketPath} took no connection within {patienceMs / 1000.0:0.#} s: its library's queue of " +
                        "connections is full (is its QEMU stopped?).", socketPath);
                throw errno is LinuxNative.ENOENT or LinuxNative.ECONNREFUSED
                    ? new DEException("QemuSocketNotFound", DEErrorKind.ObjectNotFound,
                        $"No QEMU listens at {socketPath}: start QEMU with LD_PRELOAD=libdeqemu.so and DE_QEMU_SOCKET={socketPath}, " +
                        "and guest RAM from -object memory-backend-memfd,share=on.", socketPath)
                    : errno == LinuxNative.EACCES
                        ? Refused(socketPath, "this user may not connect to the socket (it is owner-only)")
                        : Failure("connect", errno, socketPath);
            }
            SetSendTimeout(s, 0, socketPath);
            // The peer must be this user's or root's, as the library checks the engine: a socket another user serves
            // could hand this engine a guest of theirs, whose pages would then be shared and patched with this user's.
            var peer = new LinuxNative.UCred();
            uint peerLength = (uint)sizeof(LinuxNative.UCred);
            if (LinuxNative.GetSockOpt(s, LinuxNative.SOL_SOCKET, LinuxNative.SO_PEERCRED, &peer, ref peerLength) != 0)
                throw Failure("getsockopt(SO_PEERCRED)", LinuxNative.Errno, socketPath);
            uint self = LinuxNative.GetEuid();
            if (peer.Uid != self && peer.Uid != 0)
                throw Refused(socketPath, $"the process serving it (pid {peer.Pid}) runs as uid {peer.Uid}, neither this user (uid {self}) nor root");
            // A library that refuses (another engine is attached) answers at once and hangs up, maybe before the hello is
            // sent: its answer is read even when the send failed.
            int sendErrno = TrySend(s, QemuProtocol.Message.For(QemuProtocol.Hello), -1);
            var fds = new int[QemuProtocol.MaxRegions + 2];
            QemuProtocol.HelloReply hello;
            int received = Receive(s, &hello, sizeof(QemuProtocol.HelloReply), fds, out int fdCount, socketPath, patienceMs);
            if (received == sizeof(QemuProtocol.Message) && hello.Magic == QemuProtocol.Magic && hello.Op == QemuProtocol.Error)
            {
                CloseAll(fds.AsSpan(0, fdCount));
                ulong errno = ((QemuProtocol.Message*)&hello)->Arg0;
                throw errno == LinuxNative.EBUSY
                    ? Refused(socketPath, "another engine is attached to this QEMU")
                    : errno == LinuxNative.EACCES
                        ? Refused(socketPath, "QEMU's library refused this user")
                        : Failure("hello", (int)errno, socketPath);
            }
            if (sendErrno != 0)
            {
                CloseAll(fds.AsSpan(0, fdCount));
                throw Failure("send (hello)", sendErrno, socketPath);
            }
            bool hasState = (hello.Flags & QemuProtocol.HelloState) != 0;
            if (received != sizeof(QemuProtocol.HelloReply) || hello.Magic != QemuProtocol.Magic ||
                hello.Version != QemuProtocol.Version || hello.Op != QemuProtocol.Ok || hello.RegionCount is 0 or > QemuProtocol.MaxRegions)
            {
                CloseAll(fds.AsSpan(0, fdCount));
                throw ProtocolError(socketPath, "the reply to hello is not a DEQM version 1 hello");
            }
            if (BadRegions(hello) is { } bad)
            {
                CloseAll(fds.AsSpan(0, fdCount));
                if (!hasState) TryDetach(s, patienceMs);
                throw bad.Id == "QemuProtocolError" ? ProtocolError(socketPath, bad.Why)
                    : new DEException(bad.Id, DEErrorKind.InvalidArgument, $"The QEMU guest at {socketPath} {bad.Why}.", socketPath);
            }
            uint files = 0;
            for (int i = 0; i < hello.RegionCount; i++) files = Math.Max(files, hello.RegionAt(i).MemfdIndex + 1);
            if (fdCount != 1 + files + (hasState ? 1 : 0))
            {
                CloseAll(fds.AsSpan(0, fdCount));
                if (!hasState) TryDetach(s, patienceMs);
                throw ProtocolError(socketPath, $"the hello came with {fdCount} descriptors, not {1 + files + (hasState ? 1 : 0)}");
            }
            // Guest RAM in huge pages of hugetlbfs (memory-backend-memfd,hugetlb=on, or a file under /dev/hugepages):
            // a 4 KiB hole punched there only zeroes the bytes in place, the huge page staying, so the guest would read
            // zeros where the engine expects a fault to give its page back. (Transparent huge pages of shmem are split
            // by the punch and by write protection, and fault as the engine expects: docs/QEMU.md.)
            for (int i = 1; i <= files; i++)
            {
                if (LinuxNative.FileSystemType(fds[i]) != LinuxNative.HUGETLBFS_MAGIC) continue;
                CloseAll(fds.AsSpan(0, fdCount));
                if (!hasState) TryDetach(s, patienceMs);
                throw new DEException("QemuHugePagesUnsupported", DEErrorKind.NotImplemented,
                    $"The QEMU guest at {socketPath} has its RAM in hugetlbfs huge pages (hugetlb=on, or a file under " +
                    "/dev/hugepages): the engine takes pages out 4 KiB at a time, which hugetlbfs does not allow. Give the " +
                    "guest memory-backend-memfd,share=on without hugetlb.", socketPath);
            }
            var link = new QemuLink(s, hello, fds[..fdCount]) { Patience = patience };
            s = -1;
            return link;
        }
        finally
        {
            if (s >= 0) LinuxNative.Close(s);
        }
    }

    /// <summary>Sets SO_SNDTIMEO (0: none), which bounds a blocking connect on a Unix socket.</summary>
    private static void SetSendTimeout(int socket, int milliseconds, string socketPath)
    {
        milliseconds = Math.Max(0, milliseconds); // an infinite patience: no bound
        var timeout = new LinuxNative.TimeVal { Seconds = milliseconds / 1000, Microseconds = milliseconds % 1000 * 1000 };
        if (LinuxNative.SetSockOpt(socket, LinuxNative.SOL_SOCKET, LinuxNative.SO_SNDTIMEO, &timeout, (uint)sizeof(LinuxNative.TimeVal)) != 0)
            throw Failure("setsockopt(SO_SNDTIMEO)", LinuxNative.Errno, socketPath);
    }

    /// <summary>
    /// What is wrong with the hello's regions, or null: each must be a non-empty whole number of pages at page-aligned
    /// addresses and offsets, in one of the descriptors sent (at most one per region), with no address or offset
    /// overflowing; all of them together at most a domain's bound ("MemorySizeInvalid": a real guest that is too large).
    /// </summary>
    private static (string Id, string Why)? BadRegions(in QemuProtocol.HelloReply hello)
    {
        ulong total = 0;
        for (int i = 0; i < hello.RegionCount; i++)
        {
            var r = hello.RegionAt(i);
            string? why = r.MemfdIndex >= QemuProtocol.MaxRegions ? $"names descriptor {r.MemfdIndex} (at most {QemuProtocol.MaxRegions} are sent)"
                : r.Length == 0 ? "is empty"
                : (r.Length | r.HostAddress | r.FileOffset) % PageSize != 0 ? "is not page-aligned"
                : r.HostAddress > ulong.MaxValue - r.Length || r.FileOffset > long.MaxValue - r.Length ? "runs past the end of the address space"
                : null;
            if (why is not null)
                return ("QemuProtocolError", $"guest RAM region {i} of the hello (0x{r.Length:x} bytes at 0x{r.HostAddress:x}, " +
                                             $"offset 0x{r.FileOffset:x} of descriptor {r.MemfdIndex}) {why}");
            total += Math.Min(r.Length, MaxGuestBytes + 1);
            if (total > MaxGuestBytes)
                return ("MemorySizeInvalid", $"has more than {MaxGuestBytes >> 30} GiB of RAM, the most a domain may have");
            // Two regions over the same addresses, or the same bytes of one memfd (QEMU mapping a backend again over
            // itself, MAP_FIXED, as after a hardware memory error): two gfns would be one page, and a hole punched
            // through one would empty the other.
            for (int j = 0; j < i; j++)
            {
                var o = hello.RegionAt(j);
                bool sameAddresses = r.HostAddress < o.HostAddress + o.Length && o.HostAddress < r.HostAddress + r.Length;
                bool sameBytes = r.MemfdIndex == o.MemfdIndex &&
                                 r.FileOffset < o.FileOffset + o.Length && o.FileOffset < r.FileOffset + r.Length;
                if (sameAddresses || sameBytes)
                    return ("QemuProtocolError", $"guest RAM regions {j} and {i} of the hello overlap (" +
                                                 (sameAddresses ? "the same addresses" : $"the same bytes of descriptor {r.MemfdIndex}") +
                                                 "): two guest pages would be one");
            }
        }
        return null;
    }

    /// <summary>
    /// The socket of running QEMU <paramref name="pid"/>: the DE_QEMU_SOCKET in its environment (relative to its working
    /// folder when relative), checked to have libdeqemu.so loaded. Errors: "QemuProcessNotFound" (no such process, or
    /// not readable by this user), "QemuLibraryNotLoaded" (it runs without libdeqemu.so or without DE_QEMU_SOCKET).
    /// </summary>
    public static string SocketOf(int pid)
    {
        string proc = $"/proc/{pid}";
        byte[] environ;
        string[] maps;
        try
        {
            environ = File.ReadAllBytes(Path.Combine(proc, "environ"));
            maps = File.ReadAllLines(Path.Combine(proc, "maps"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DEException("QemuProcessNotFound", DEErrorKind.ObjectNotFound,
                $"No process {pid} whose environment this user may read ({e.Message}).", pid.ToString());
        }
        string? socket = Encoding.UTF8.GetString(environ).Split('\0')
            .Where(v => v.StartsWith("DE_QEMU_SOCKET=", StringComparison.Ordinal)).Select(v => v["DE_QEMU_SOCKET=".Length..]).LastOrDefault();
        bool loaded = maps.Any(l => l.EndsWith("/libdeqemu.so", StringComparison.Ordinal));
        if (string.IsNullOrEmpty(socket) || !loaded)
            throw new DEException("QemuLibraryNotLoaded", DEErrorKind.InvalidArgument,
                $"Process {pid} does not run with libdeqemu.so{(loaded ? "" : " loaded")} and DE_QEMU_SOCKET set: start QEMU with " +
                "LD_PRELOAD=libdeqemu.so and DE_QEMU_SOCKET=<socket path> (docs/QEMU.md).", pid.ToString());
        if (!Path.IsPathRooted(socket))
        {
            // The library binds it made absolute from the folder QEMU started in, which QEMU may have left since
            // (-daemonize goes to /): the path it bound, among the sockets it listens on, before its folder now.
            if (ListeningSocketEndingWith(pid, socket) is string bound) return bound;
            string? cwd = new DirectoryInfo(Path.Combine(proc, "cwd")).LinkTarget;
            socket = Path.Combine(cwd ?? "/", socket);
        }
        return socket;
    }

    /// <summary>
    /// The one Unix socket process <paramref name="pid"/> listens on whose bound path is <paramref name="relative"/> or
    /// ends with "/" + it (/proc/PID/net/unix, the sockets matched by inode to the process's descriptors); null when there
    /// is none, several, or they cannot be read.
    /// </summary>
    internal static string? ListeningSocketEndingWith(int pid, string relative)
    {
        const int AcceptingConnections = 0x10000; // __SO_ACCEPTCON in the Flags column
        try
        {
            var inodes = new HashSet<string>(StringComparer.Ordinal);
            foreach (string fd in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
            {
                string? target = new FileInfo(fd).LinkTarget;
                if (target is not null && target.StartsWith("socket:[", StringComparison.Ordinal)) inodes.Add(target[8..^1]);
            }
            string want = relative.StartsWith("./", StringComparison.Ordinal) ? relative[2..] : relative;
            var found = new List<string>();
            foreach (string line in File.ReadLines($"/proc/{pid}/net/unix").Skip(1))
            {
                // "Num RefCount Protocol Flags Type St Inode Path": the path is the rest of the line, spaces and all.
                string[] f = line.Split(' ', 8, StringSplitOptions.RemoveEmptyEntries);
                if (f.Length < 8 || !inodes.Contains(f[6])) continue;
                if (!int.TryParse(f[3], System.Globalization.NumberStyles.HexNumber, null, out int flags) || (flags & AcceptingConnections) == 0) continue;
                string path = f[7];
                // Absolute only: a library of an earlier build bound the relative path as given (in QEMU's folder then),
                // which the caller joins with QEMU's folder as before.
                if (path.StartsWith('/') && path.EndsWith("/" + want, StringComparison.Ordinal)) found.Add(path);
            }
            return found.Count == 1 ? found[0] : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The region and the page's offset in it, for a guest frame number.</summary>
    public (QemuRegion Region, ulong Offset) Locate(long gfn)
    {
        if ((ulong)gfn >= (ulong)PageCount)
            throw new DEException("GfnOutOfRange", DEErrorKind.InvalidArgument,
                $"Guest frame {gfn} is outside this QEMU's RAM, which has pages 0 to {PageCount - 1}.", gfn.ToString());
        foreach (var r in Regions)
            if (gfn < r.FirstGfn + r.PageCount) return (r, (ulong)(gfn - r.FirstGfn) * PageSize);
        throw new InvalidOperationException("unreachable: regions cover every gfn");
    }

    /// <summary>The guest frame number of a QEMU address in guest RAM, or -1 when it is in none.</summary>
    public long GfnOf(ulong hostAddress)
    {
        foreach (var r in Regions)
            if (hostAddress - r.HostAddress < r.Length) return r.FirstGfn + (long)((hostAddress - r.HostAddress) / PageSize);
        return -1;
    }

    /// <summary>QEMU's address of a guest page.</summary>
    public ulong AddressOf(long gfn)
    {
        var (region, offset) = Locate(gfn);
        return region.HostAddress + offset;
    }

    /// <summary>
    /// Copies a guest page from its memfd. A page the guest does not have (a hole) reads as zeros and stays a hole: the
    /// read goes through the file, never through a mapping that would fill it.
    /// </summary>
    public void ReadPage(long gfn, Span<byte> page)
    {
        var (region, offset) = Locate(gfn);
        fixed (byte* p = page)
        {
            long at = (long)(region.FileOffset + offset);
            nint n;
            while ((n = LinuxNative.PRead(memfds[region.MemfdIndex], p, PageSize, at)) < 0 && LinuxNative.Errno == LinuxNative.EINTR) { }
            if (n != PageSize) throw Failure("pread of guest RAM", n < 0 ? LinuxNative.Errno : LinuxNative.EIO /* short */, $"gfn {gfn}");
        }
    }

    /// <summary>
    /// Maps a region's memfd into the engine, read-only and shared: the guest's pages as they are, read in place. Only
    /// pages the memfd has may be read through it (a read of a hole would fill it behind QEMU's back).
    /// </summary>
    public byte* MapRegion(QemuRegion region)
    {
        void* at = LinuxNative.Mmap(null, (nuint)region.Length, LinuxNative.PROT_READ, LinuxNative.MAP_SHARED,
            memfds[region.MemfdIndex], (long)region.FileOffset);
        if (at == (void*)-1) throw Failure("mmap of guest RAM", LinuxNative.Errno, $"region at gfn {region.FirstGfn}");
        // Not in the engine's core dumps: they would hold the guest's memory (its secrets), and dumping a page the engine
        // holds reads the hole through this mapping, which allocates it in the memfd as zeros: a guest page lost. (Any
        // reader of this process's memory would do the same; QemuRam guards the mapping against that: docs/QEMU.md.)
        LinuxNative.Madvise(at, (nuint)region.Length, LinuxNative.MADV_DONTDUMP);
        return (byte*)at;
    }

    /// <summary>The runs of pages a region's memfd holds (SEEK_DATA, SEEK_HOLE): first gfn and page count of each.</summary>
    public List<(long Gfn, long Pages)> PresentRuns(QemuRegion region)
    {
        var runs = new List<(long, long)>();
        int fd = memfds[region.MemfdIndex];
        long start = (long)region.FileOffset, end = start + (long)region.Length;
        for (long at = start; at < end;)
        {
            long data = LinuxNative.Lseek(fd, at, LinuxNative.SEEK_DATA);
            if (data < 0)
            {
                if (LinuxNative.Errno == LinuxNative.ENXIO) break; // no data after this
                throw Failure("lseek(SEEK_DATA) of guest RAM", LinuxNative.Errno, $"region at gfn {region.FirstGfn}");
            }
            if (data >= end) break;
            long hole = LinuxNative.Lseek(fd, data, LinuxNative.SEEK_HOLE);
            if (hole < 0) throw Failure("lseek(SEEK_HOLE) of guest RAM", LinuxNative.Errno, $"region at gfn {region.FirstGfn}");
            hole = Math.Min(hole, end);
            runs.Add((region.FirstGfn + (data - start) / PageSize, (hole - data + PageSize - 1) / PageSize));
            at = hole;
        }
        return runs;
    }

    /// <summary>Whether the memfd has guest page <paramref name="gfn"/> (the next data at or after it is it).</summary>
    public bool IsPresent(long gfn)
    {
        var (region, offset) = Locate(gfn);
        long at = (long)(region.FileOffset + offset);
        long data = LinuxNative.Lseek(memfds[region.MemfdIndex], at, LinuxNative.SEEK_DATA);
        return data == at;
    }

    /// <summary>Takes a guest page out of the memfd (and so out of QEMU): the guest's next access faults.</summary>
    public void Punch(long gfn)
    {
        var (region, offset) = Locate(gfn);
        if (LinuxNative.Fallocate(memfds[region.MemfdIndex], LinuxNative.FALLOC_FL_PUNCH_HOLE | LinuxNative.FALLOC_FL_KEEP_SIZE,
                (long)(region.FileOffset + offset), PageSize) != 0)
            throw Failure("fallocate(PUNCH_HOLE) of guest RAM", LinuxNative.Errno, $"gfn {gfn}");
    }

    /// <summary>
    /// Gives the library a descriptor to hold for the next engine (the engine's state); the library keeps its own copy.
    /// Its reply is awaited for as long as it takes: a deposit the library takes after the engine gave up on it would leave
    /// it holding a journal the engine no longer writes (a compaction's new file), and the pages taken out after that would
    /// be missing from what a next engine replays.
    /// </summary>
    /// <remarks>
    /// Once the engine leaves the guest (<see cref="BeginLeaving"/>: its domain is being removed, and no page is taken out
    /// any more) the wait goes on for the link's patience (as a detach's), then gives up ("QemuDepositAbandoned"; the link
    /// takes no more requests): a QEMU stopped (SIGSTOP, a
    /// frozen cgroup) in a compaction's deposit would otherwise hold the journal, and the removal behind it, until it
    /// resumes. Should the library take the deposit later, it holds a copy of the journal as it was (nothing was written
    /// while the compaction held it), and the pages the removal puts back are present, which a replay leaves as they are.
    /// </remarks>
    public void Deposit(int fd)
    {
        lock (socketGate)
        {
            Send(QemuProtocol.Message.For(QemuProtocol.Deposit), fd, "deposit");
            Interlocked.Increment(ref depositsSent);
            var poll = new LinuxNative.PollFd { Fd = socket, Events = LinuxNative.POLLIN };
            int ready;
            long waitedLeaving = 0; // ms waited since the engine began to leave: as long as a detach's patience, then no more
            while ((ready = LinuxNative.Poll(&poll, 1, 100)) == 0 || (ready < 0 && LinuxNative.Errno == LinuxNative.EINTR))
            {
                if (ready == 0 && leaving && (waitedLeaving += 100) >= PatienceMs)
                {
                    broken = true; // its reply, should it come, would be taken for another request's
                    throw new DEException("QemuDepositAbandoned", DEErrorKind.ConnectionError,
                        "The guest's library did not take the crash journal's new generation before the engine left the guest " +
                        "(is its QEMU stopped?): the link takes no more requests.", "deposit");
                }
            }
            if (ready < 0) throw Failure("poll (deposit)", LinuxNative.Errno, "deposit");
            ExpectOk("deposit", patienceMs: -1);
        }
    }

    private volatile bool leaving;
    private long depositsSent;

    /// <summary>Deposits sent to the library (tests: a compaction's deposit is waiting for its reply).</summary>
    internal long DepositsSent => Interlocked.Read(ref depositsSent);

    /// <summary>The engine leaves the guest (its domain is being removed): a deposit in flight stops waiting (see <see cref="Deposit"/>).</summary>
    public void BeginLeaving() => leaving = true;

    /// <summary>
    /// Tells the library the engine leaves for good: it unregisters and closes the userfaultfd. Load every page back
    /// first: a page still out of QEMU reads as zeros afterwards.
    /// </summary>
    /// <remarks>
    /// On a link that takes no more requests (a deposit given up while QEMU was stopped, a reply that never came) the
    /// DETACH is still sent, and no reply awaited: the library serves requests in order, so once QEMU runs again it takes
    /// what is queued before (the late deposit), then this, which unregisters the RAM. Not sent, the userfaultfd stayed
    /// registered with no engine behind it, and the guest's next touch of a hole (a zero page, one QEMU let go) waited for
    /// good. Its reply, and the late deposit's, go unread: the link is closed after this.
    /// </remarks>
    public void Detach()
    {
        lock (socketGate)
        {
            if (broken)
            {
                Send(socket, QemuProtocol.Message.For(QemuProtocol.Detach), -1, "detach");
                // The replies still to come (the request given up on, and this one) are read within the patience: closing
                // with one unread resets the connection, and a library built before it took ECONNRESET as the engine gone,
                // leaving the DETACH queued behind it unread.
                DrainReplies(2, PatienceMs);
                return;
            }
            Send(QemuProtocol.Message.For(QemuProtocol.Detach), -1, "detach");
            ExpectOk("detach", PatienceMs);
        }
    }

    /// <summary>
    /// Hands the guest back when the engine will not serve it after all (its attach failed after the hello, which had the
    /// library register the guest's RAM with the userfaultfd): DETACH, so that its faults do not wait for a next engine.
    /// Only where no earlier engine left a journal with the library: detaching drops it, and its pages with it. Failures
    /// are ignored (the engine is refusing already); the reply is awaited at most the hello's patience.
    /// </summary>
    public void TryDetach()
    {
        lock (socketGate)
            if (!broken) TryDetach(socket, PatienceMs);
    }

    /// <summary>Reads up to <paramref name="count"/> replies within <paramref name="patienceMs"/> in all; errors end it.</summary>
    private void DrainReplies(int count, int patienceMs)
    {
        long started = Environment.TickCount64;
        for (int i = 0; i < count; i++)
            if (!TryReceiveReply(socket, (int)Math.Max(0, patienceMs - (Environment.TickCount64 - started)))) return;
    }

    private static void TryDetach(int socket, int patienceMs)
    {
        if (socket < 0 || TrySend(socket, QemuProtocol.Message.For(QemuProtocol.Detach), -1) != 0) return;
        TryReceiveReply(socket, patienceMs); // no answer, or a broken one: the attach fails all the same
    }

    /// <summary>Reads one reply, waiting at most <paramref name="patienceMs"/>, and lets it go; false when none came or it broke.</summary>
    private static bool TryReceiveReply(int socket, int patienceMs)
    {
        QemuProtocol.Message reply;
        Span<int> none = stackalloc int[4];
        try
        {
            Receive(socket, &reply, sizeof(QemuProtocol.Message), none, out int fdCount, "detach", patienceMs);
            CloseAll(none[..fdCount]);
            return true;
        }
        catch (DEException)
        {
            return false; // no reply within the patience (QEMU still stopped), or the library hung up
        }
    }

    private int PatienceMs => Milliseconds(Patience);

    private static int Milliseconds(TimeSpan patience) => (int)Math.Min(int.MaxValue, patience.TotalMilliseconds);

    private void ExpectOk(string what, int patienceMs)
    {
        QemuProtocol.Message reply;
        Span<int> none = stackalloc int[4];
        int n;
        try
        {
            n = Receive(socket, &reply, sizeof(QemuProtocol.Message), none, out int received, what, patienceMs);
            CloseAll(none[..received]);
        }
        catch (DEException)
        {
            // A reply that comes late would be taken for the next request's: nothing more is sent on this link.
            broken = true;
            throw;
        }
        if (n != sizeof(QemuProtocol.Message) || reply.Magic != QemuProtocol.Magic || reply.Op != QemuProtocol.Ok)
            throw ProtocolError(what, reply.Op == QemuProtocol.Error ? $"refused ({LinuxNative.Describe((int)reply.Arg0)})" : "no OK");
    }

    private void Send(QemuProtocol.Message message, int fd, string what)
    {
        if (broken) throw ProtocolError(what, "an earlier request's reply never came, so this link takes no more requests");
        Send(socket, message, fd, what);
    }

    private static void Send(int socket, QemuProtocol.Message message, int fd, string what)
    {
        int errno = TrySend(socket, message, fd);
        if (errno != 0) throw Failure($"send ({what})", errno, what);
    }

    /// <summary>Sends one request; returns 0, or the errno it failed with.</summary>
    private static int TrySend(int socket, QemuProtocol.Message message, int fd)
    {
        int space = LinuxNative.ControlSpace(1);
        byte* control = stackalloc byte[space];
        new Span<byte>(control, space).Clear();
        var iov = new LinuxNative.IoVec { Base = &message, Length = (nuint)sizeof(QemuProtocol.Message) };
        var header = new LinuxNative.MsgHdr { Iov = &iov, IovLength = 1 };
        if (fd >= 0)
        {
            var c = (LinuxNative.CmsgHdr*)control;
            c->Length = (nuint)LinuxNative.ControlLength(1);
            c->Level = LinuxNative.SOL_SOCKET;
            c->Type = LinuxNative.SCM_RIGHTS;
            *(int*)(c + 1) = fd;
            header.Control = control;
            header.ControlLength = (nuint)space;
        }
        nint sent;
        while ((sent = LinuxNative.SendMsg(socket, &header, LinuxNative.MSG_NOSIGNAL)) < 0 && LinuxNative.Errno == LinuxNative.EINTR) { }
        return sent == sizeof(QemuProtocol.Message) ? 0 : sent < 0 ? LinuxNative.Errno : LinuxNative.EIO;
    }

    private static int Receive(int socket, void* buffer, int size, Span<int> fds, out int fdCount, string what, int patienceMs = -1)
    {
        fdCount = 0;
        if (patienceMs >= 0)
        {
            // Waits for the reply at most that long (poll's time counts again after a signal: at most a few times as long).
            var poll = new LinuxNative.PollFd { Fd = socket, Events = LinuxNative.POLLIN };
            int ready;
            while ((ready = LinuxNative.Poll(&poll, 1, patienceMs)) < 0 && LinuxNative.Errno == LinuxNative.EINTR) { }
            if (ready < 0) throw Failure($"poll ({what})", LinuxNative.Errno, what);
            if (ready == 0)
                throw ProtocolError(what, $"no reply within {patienceMs / 1000.0:0.#} s (is it a QEMU running libdeqemu.so, and is it running?)");
        }
        int space = LinuxNative.ControlSpace(fds.Length);
        byte* control = stackalloc byte[space];
        var iov = new LinuxNative.IoVec { Base = buffer, Length = (nuint)size };
        var header = new LinuxNative.MsgHdr { Iov = &iov, IovLength = 1, Control = control, ControlLength = (nuint)space };
        nint n;
        while ((n = LinuxNative.RecvMsg(socket, &header, LinuxNative.MSG_CMSG_CLOEXEC)) < 0 && LinuxNative.Errno == LinuxNative.EINTR) { }
        if (n < 0) throw Failure($"receive ({what})", LinuxNative.Errno, what);
        // The library sends at most one SCM_RIGHTS message with a reply.
        var c = (LinuxNative.CmsgHdr*)control;
        if (header.ControlLength >= (nuint)sizeof(LinuxNative.CmsgHdr) && c->Level == LinuxNative.SOL_SOCKET &&
            c->Type == LinuxNative.SCM_RIGHTS)
        {
            int count = (int)((c->Length - (nuint)sizeof(LinuxNative.CmsgHdr)) / sizeof(int));
            for (int i = 0; i < count; i++)
            {
                int fd = ((int*)(c + 1))[i];
                if (fdCount < fds.Length) fds[fdCount++] = fd;
                else LinuxNative.Close(fd);
            }
        }
        if ((header.Flags & (LinuxNative.MSG_TRUNC | LinuxNative.MSG_CTRUNC)) != 0)
        {
            CloseAll(fds[..fdCount]);
            fdCount = 0;
            throw ProtocolError(what, "a reply larger than the protocol allows");
        }
        return (int)n;
    }

    private static void CloseAll(ReadOnlySpan<int> fds)
    {
        foreach (int fd in fds) LinuxNative.Close(fd);
    }

    private static DEException Refused(string socketPath, string why) =>
        new("QemuAttachRefused", DEErrorKind.PermissionDenied, $"QEMU at {socketPath} refused the engine: {why}.", socketPath);

    private static DEException ProtocolError(string what, string why) =>
        new("QemuProtocolError", DEErrorKind.InvalidData, $"libdeqemu.so ({what}): {why}. Engine and library must be of one build.", what);

    private static DEException Failure(string call, int errno, string target) =>
        new("QemuLinkFailed", DEErrorKind.ConnectionError, $"{call} ({target}) failed: {LinuxNative.Describe(errno)} (errno {errno}).", target);

    public void Dispose()
    {
        Faults.Dispose();
        CloseAll(memfds);
        Array.Fill(memfds, -1);
        if (stateFd >= 0) LinuxNative.Close(stateFd);
        stateFd = -1;
        if (socket >= 0) LinuxNative.Close(socket);
        socket = -1;
    }
}
