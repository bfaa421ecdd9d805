using System.Runtime.CompilerServices;

namespace DifferenceEngine.Domains;

/// <summary>
/// The P2M entry of one guest page packed in 64 bits: state, access bits, lock bit, clock
/// category and idle count, and a 48-bit payload (a frame number for Private and Shared).
/// </summary>
/// <remarks>
/// Layout: bits 0-2 state, 3 referenced, 4 modified, 5 lock, 6-8 category, 9-12 idle sweeps,
/// 13 examined by an engine pass since last modified, 16-63 payload.
/// Every change to an entry is made while holding its lock bit; see <see cref="Domain"/>.
/// </remarks>
internal static class PageEntry
{
    public const ulong StateMask = 0x7;
    public const ulong Referenced = 1UL << 3;
    public const ulong Modified = 1UL << 4;
    public const ulong Locked = 1UL << 5;
    private const int CategoryShift = 6;
    private const ulong CategoryMask = 0x7UL << CategoryShift;
    private const int IdleShift = 9;
    private const ulong IdleMask = 0xFUL << IdleShift;
    public const int MaxIdle = 15;
    public const ulong SharingSeen = 1UL << 13;
    private const int PayloadShift = 16;
    private const ulong FlagsMask = (1UL << PayloadShift) - 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PageState State(ulong e) => (PageState)(e & StateMask);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Frame(ulong e) => (uint)(e >> PayloadShift);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PageCategory Category(ulong e) => (PageCategory)((e & CategoryMask) >> CategoryShift);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Idle(ulong e) => (int)((e & IdleMask) >> IdleShift);

    /// <summary>The 48-bit payload: a frame number, a store handle (Patched, Compressed) or a word (Uniform).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Payload(ulong e) => e >> PayloadShift;

    public const ulong MaxPayload = (1UL << (64 - PayloadShift)) - 1;

    /// <summary>Same flags, new state and a 48-bit payload.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong WithPayload(ulong e, PageState state, ulong payload) =>
        (e & FlagsMask & ~StateMask) | (ulong)state | (payload << PayloadShift);

    /// <summary>Same flags (access bits, clock state), new state and payload.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong With(ulong e, PageState state, uint frame) =>
        (e & FlagsMask & ~StateMask) | (ulong)state | ((ulong)frame << PayloadShift);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong WithClock(ulong e, PageCategory category, int idle) =>
        (e & ~(CategoryMask | IdleMask)) | ((ulong)category << CategoryShift) | ((ulong)idle << IdleShift);
}
