using System.Net.Sockets;
using System.Runtime.InteropServices;
using DifferenceEngine.Qemu;
using DifferenceEngine.Tests.Engine;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// A peer on the socket that is not a well-behaved libdeqemu.so: a hello reply whose regions no QEMU would send, or no
/// reply at all. Each is a clear error, not an exception of the runtime or a wait without end. The peer is a
/// SOCK_SEQPACKET socket of this test, answering with the bytes given.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class QemuHelloValidationTests
{
    private static QemuProtocol.Region Region(ulong length, uint memfd = 0, ulong address = 0x7f0000000000, ulong offset = 0) =>
        new() { HostAddress = address, Length = length, FileOffset = offset, MemfdIndex = memfd };

    private static readonly Dictionary<string, (QemuProtocol.Region[] Regions, string ErrorId)> Cases = new()
    {
        ["a descriptor index past those sent"] = ([Region(1 << 20, memfd: uint.MaxValue)], "QemuProtocolError"),
        ["an empty region"] = ([Region(0)], "QemuProtocolError"),
        ["a length that is not whole pages"] = ([Region((1 << 20) + 100)], "QemuProtocolError"),
        ["an address that is not page-aligned"] = ([Region(1 << 20, address: 0x7f0000000010)], "QemuProtocolError"),
        ["an offset past the end of a file"] = ([Region(1 << 20, offset: long.MaxValue - 4095)], "QemuProtocolError"),
        ["an address range that wraps"] = ([Region(1UL << 40, address: ulong.MaxValue - 4095)], "QemuProtocolError"),
        ["2^60 bytes of RAM"] = ([Region(1UL << 60)], "MemorySizeInvalid"),
        ["two regions of 2^63 bytes"] = ([Region(1UL << 63), Region(1UL << 63, memfd: 1, address: 0x1000)], "MemorySizeInvalid"),
        ["two regions at overlapping addresses"] = ([Region(1 << 20), Region(1 << 20, memfd: 1, address: 0x7f0000000000 + (512 << 10))], "QemuProtocolError"),
        ["two regions over the same bytes of one memfd"] = ([Region(1 << 20), Region(1 << 20, address: 0x7f0000200000, offset: 4096)], "QemuProtocolError"),
        ["more RAM than a domain may have, by a page"] = ([Region(32UL << 30), Region((32UL << 30) + 4096, memfd: 1)], "MemorySizeInvalid"),
    };

    public static TheoryData<string> BadReplies() => new(Cases.Keys);

    /// <summary>
    /// Each refused; and since the hello had the library register the guest's RAM, the engine detaches before it hangs
    /// up, so that the guest's faults do not wait for a next engine.
    /// </summary>
    [Theory]
    [MemberData(nameof(BadReplies))]
    public async Task AHelloWhoseRegionsNoQemuWouldSendIsRefusedAndTheGuestHandedBack(string what)
    {
        var (regions, errorId) = Cases[what];
        var (e, detached) = await Refused(regions, withState: false);
        Assert.True(e.ErrorId == errorId, $"{what}: {e.ErrorId}: {e.Message}");
        Assert.Equal(errorId == "MemorySizeInvalid" ? DEErrorKind.InvalidArgument : DEErrorKind.InvalidData, e.Kind);
        Assert.True(detached, $"{what}: the engine hung up without DETACH");
    }

    /// <summary>
    /// Guest RAM in hugetlbfs (memory-backend-memfd,hugetlb=on): a 4 KiB hole punched there only zeroes the bytes, the
    /// huge page staying, so the guest would read zeros where the engine counts on a fault to give its page back. It was
    /// attached as any memfd; it is refused, and the guest handed back.
    /// </summary>
    [Fact]
    public async Task AGuestWhoseRamIsInHugetlbfsIsRefusedAndHandedBack()
    {
        const uint MFD_HUGETLB = 4, MFD_CLOEXEC = 1;
        var (e, detached) = await Refused([Region(2 << 20)], withState: false, memfd: () =>
        {
            int fd = MemfdCreate("guest-ram", MFD_HUGETLB | MFD_CLOEXEC);
            Assert.True(fd >= 0, $"memfd_create(MFD_HUGETLB): errno {Marshal.GetLastPInvokeError()}");
            Assert.Equal(LinuxNative.HUGETLBFS_MAGIC, LinuxNative.FileSystemType(fd));
            return new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        });
        Assert.Equal("QemuHugePagesUnsupported", e.ErrorId);
        Assert.Equal(DEErrorKind.NotImplemented, e.Kind);
        Assert.True(detached, "the engine hung up without DETACH");
    }

    [DllImport("libc", EntryPoint = "memfd_create", SetLastError = true)]
    private static extern int MemfdCreate(string name, uint flags);

    /// <summary>With an earlier engine's journal at the library (its pages), a refusal does not detach: that would drop them.</summary>
    [Fact]
    public async Task ARefusedHelloThatCameWithAnEarlierEnginesJournalLeavesItThere()
    {
        var (e, detached) = await Refused(Cases["an empty region"].Regions, withState: true);
        Assert.Equal("QemuProtocolError", e.ErrorId);
        Assert.False(detached);
    }

    /// <summary>
    /// Attaches to a peer that answers the hello with <paramref name="regions"/> (and, <paramref name="withState"/>, an
    /// earlier engine's state); returns the engine's error and whether it sent DETACH before hanging up.
    /// </summary>
    private static async Task<(DEException Error, bool Detached)> Refused(QemuProtocol.Region[] regions, bool withState,
        Func<SafeHandle>? memfd = null)
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "peer.sock");
        using var listener = Listen(path);
        var peer = Task.Run(() =>
        {
            using Socket engine = listener.Accept();
            var message = new byte[Marshal.SizeOf<QemuProtocol.Message>()];
            engine.Receive(message);
            // With as many descriptors as the engine counts for these regions (its count wraps as an unchecked one
            // would), so that the reply is refused for its regions and not for a descriptor count.
            uint files = 0;
            foreach (var r in regions) files = Math.Max(files, unchecked(r.MemfdIndex + 1));
            SendWithDescriptors(engine, Reply(regions, withState), (int)Math.Min(1 + files + (withState ? 1u : 0u), 8), memfd);
            // What the engine does next: DETACH (answered OK), or hang up (0 bytes).
            int n = engine.Receive(message);
            bool detached = n == message.Length && BitConverter.ToUInt32(message, 8) == QemuProtocol.Detach;
            if (detached)
            {
                var ok = QemuProtocol.Message.For(QemuProtocol.Ok);
                engine.Send(MemoryMarshal.AsBytes(new ReadOnlySpan<QemuProtocol.Message>(ref ok)));
                Assert.Equal(0, engine.Receive(message)); // then it hangs up
            }
            return detached;
        });
        var e = Assert.Throws<DEException>(() => QemuLink.Attach(path));
        return (e, await peer);
    }

    /// <summary>
    /// A socket served by another user (nobody) is refused before the hello: its guest's pages would otherwise be shared
    /// and patched with this user's. The library checks the engine's credentials the same way.
    /// </summary>
    [RequiresFact(Requirement.OtherUser)]
    public void ASocketServedByAnotherUserIsRefused()
    {
        using var dir = new TempDir();
        File.SetUnixFileMode(dir.Path, (UnixFileMode)0x1FF); // nobody may make its socket there
        string path = Path.Combine(dir.Path, "theirs.sock");
        var start = new System.Diagnostics.ProcessStartInfo("setpriv")
        {
            ArgumentList =
            {
                "--reuid=65534", "--regid=65534", "--clear-groups", Requirement.SystemPython, "-c",
                "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET)\ns.bind(sys.argv[1])\ns.listen(1)\n" +
                "print('ready',flush=True)\nc,_=s.accept()\nsys.stdin.read()",
                path,
            },
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
        };
        using var server = System.Diagnostics.Process.Start(start)!;
        try
        {
            Assert.Equal("ready", server.StandardOutput.ReadLine());
            var e = Assert.Throws<DEException>(() => QemuLink.Attach(path));
            Assert.Equal("QemuAttachRefused", e.ErrorId);
            Assert.Equal(DEErrorKind.PermissionDenied, e.Kind);
            Assert.Contains("uid 65534", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            server.Kill();
            server.WaitForExit();
        }
    }

    [Fact]
    public async Task APeerThatNeverAnswersTheHelloIsAProtocolErrorOnceItsPatienceRunsOut()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "silent.sock");
        using var listener = Listen(path);
        using var stop = new ManualResetEventSlim();
        var peer = Task.Run(() =>
        {
            using Socket engine = listener.Accept();
            stop.Wait(); // says nothing until the engine has given up
        });
        try
        {
            var e = Assert.Throws<DEException>(() => QemuLink.Attach(path, TimeSpan.FromMilliseconds(50)));
            Assert.Equal("QemuProtocolError", e.ErrorId);
            Assert.Contains("no reply", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            stop.Set();
            await peer;
        }
    }

    private static Socket Listen(string path)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Seqpacket, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(path));
        socket.Listen(1);
        return socket;
    }

    /// <summary>
    /// Sends <paramref name="bytes"/> with <paramref name="count"/> descriptors (SCM_RIGHTS): of /dev/null, or for the
    /// memfds (every one after the first, the userfaultfd's place) what <paramref name="memfd"/> makes.
    /// </summary>
    private static unsafe void SendWithDescriptors(Socket socket, byte[] bytes, int count, Func<SafeHandle>? memfd = null)
    {
        var files = Enumerable.Range(0, count)
            .Select(i => i > 0 && memfd is not null ? memfd() : (SafeHandle)File.OpenHandle("/dev/null")).ToArray();
        try
        {
            int space = LinuxNative.ControlSpace(count);
            byte* control = stackalloc byte[space];
            new Span<byte>(control, space).Clear();
            var c = (LinuxNative.CmsgHdr*)control;
            c->Length = (nuint)LinuxNative.ControlLength(count);
            c->Level = LinuxNative.SOL_SOCKET;
            c->Type = LinuxNative.SCM_RIGHTS;
            for (int i = 0; i < count; i++) ((int*)(c + 1))[i] = (int)files[i].DangerousGetHandle();
            fixed (byte* data = bytes)
            {
                var iov = new LinuxNative.IoVec { Base = data, Length = (nuint)bytes.Length };
                var header = new LinuxNative.MsgHdr { Iov = &iov, IovLength = 1, Control = control, ControlLength = (nuint)space };
                Assert.Equal(bytes.Length, (int)LinuxNative.SendMsg((int)socket.Handle, &header, LinuxNative.MSG_NOSIGNAL));
            }
        }
        finally
        {
            foreach (var f in files) f.Dispose();
        }
    }

    private static unsafe byte[] Reply(QemuProtocol.Region[] regions, bool withState)
    {
        var reply = new QemuProtocol.HelloReply
        {
            Magic = QemuProtocol.Magic,
            Version = QemuProtocol.Version,
            Op = QemuProtocol.Ok,
            Flags = QemuProtocol.HelloWriteProtect | (withState ? QemuProtocol.HelloState | QemuProtocol.HelloReattach : 0),
            Pid = 1,
            RegionCount = (uint)regions.Length,
        };
        var placed = (QemuProtocol.Region*)reply.Regions;
        for (int i = 0; i < regions.Length; i++) placed[i] = regions[i];
        return new ReadOnlySpan<byte>(&reply, sizeof(QemuProtocol.HelloReply)).ToArray();
    }
}
