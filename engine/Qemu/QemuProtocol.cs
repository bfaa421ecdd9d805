using System.Runtime.InteropServices;

namespace DifferenceEngine.Qemu;

/// <summary>The protocol of libdeqemu.so's socket, as native/deqemu.h declares it (field for field, same sizes).</summary>
internal static class QemuProtocol
{
    public const uint Magic = 0x4d514544; // "DEQM"
    public const uint Version = 1;
    public const int MaxRegions = 8;

    public const uint Hello = 1;
    public const uint Deposit = 2;
    public const uint Detach = 3;
    public const uint Ok = 100;
    public const uint Error = 101;

    public const uint HelloWriteProtect = 1 << 0;
    public const uint HelloState = 1 << 1;
    public const uint HelloReattach = 1 << 2;

    /// <summary>de_qemu_msg: a request, and the replies OK / ERROR. 24 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Message
    {
        public uint Magic;
        public uint Version;
        public uint Op;
        public uint Reserved;
        public ulong Arg0;

        public static Message For(uint op) => new() { Magic = QemuProtocol.Magic, Version = QemuProtocol.Version, Op = op };
    }

    /// <summary>de_qemu_region: one guest RAM mapping in QEMU. 32 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Region
    {
        public ulong HostAddress;
        public ulong Length;
        public ulong FileOffset;
        public uint MemfdIndex;
        public uint Reserved;
    }

    /// <summary>de_qemu_hello: the reply to a hello. 24 + 32 * <see cref="MaxRegions"/> bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public unsafe struct HelloReply
    {
        public uint Magic;
        public uint Version;
        public uint Op;
        public uint Flags;
        public uint Pid;
        public uint RegionCount;
        public fixed byte Regions[32 * MaxRegions];

        public readonly Region RegionAt(int i)
        {
            if ((uint)i >= RegionCount || i >= MaxRegions) throw new ArgumentOutOfRangeException(nameof(i));
            fixed (byte* p = Regions) return ((Region*)p)[i];
        }
    }
}
