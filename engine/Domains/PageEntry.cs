using System.Runtime.CompilerServices;

namespace DifferenceEngine.Domains;

/// <summary>
/// The P2M entry of one guest page packed in 64 bits: state, access bits, lock bit, clock
/// category and idle count, and a 48-bit payload (a frame number for Private and Shared).
/// </summary>
/// <remarks>
/// Layout: bits 0-2 state, 3 referenced, 4 modified, 5 lock, 6-8 category, 9-12 idle sweeps,
/// 13 examined by an engine pass since last modified, 14 shared blob (a Compressed page whose payload is an id in
/// the host's SharedBlobTable, not a store handle; with payload bit 47 also set, a member of a page group: group id in
/// payload bits 0-31, member index in bits 32-37), 15 incompressible (a Private page's content did not compress under
/// its domain's policy; on a single Compressed page: grouping it did not pay; cleared by a write or a change of that
/// policy), 16-63 payload.
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

    /// <summary>On a Compressed entry: the payload is a shared blob's id (a compressed shared frame), not a store handle.</summary>
    public const ulong SharedBlob = 1UL << 14;

    /// <summary>
    /// The page's content did not compress within its domain's threshold: passes do not try again until the page is
    /// written, merged into a shared frame (which is tried under its group's policies), or its trust group's
    /// compression policy changes.
    /// </summary>
    public const ulong Incompressible = 1UL << 15;
    private const int PayloadShift = 16;
    private const ulong FlagsMask = (1UL << PayloadShift) - 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PageState State(ulong e) => (PageState)(e & StateMask);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Frame(ulong e) => (uint)(e >> PayloadShift);

    /// <summary>A Compressed page whose blob it shares with other pages (a compressed shared frame).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsSharedBlob(ulong e) => (e & (SharedBlob | GroupedBit)) == SharedBlob && State(e) == PageState.Compressed;

    /// <summary>On a <see cref="SharedBlob"/> entry: the payload names a member of a page group (PageGroupTable), not a shared blob.</summary>
    private const ulong GroupedBit = 1UL << (PayloadShift + 47);

    /// <summary>A Compressed page kept in a page group: compressed together with other cold pages of its domain.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsGrouped(ulong e) => (e & (SharedBlob | GroupedBit)) == (SharedBlob | GroupedBit) && State(e) == PageState.Compressed;

    /// <summary>A Compressed page with a blob of its own in the store (neither a shared blob nor a group member).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsSingleCompressed(ulong e) => (e & SharedBlob) == 0 && State(e) == PageState.Compressed;

    /// <summary>The group of a grouped page (see <see cref="IsGrouped"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint GroupId(ulong e) => (uint)Payload(e);

    /// <summary>The member index of a grouped page within its group.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int GroupMember(ulong e) => (int)((Payload(e) >> 32) & 0x3F);

    /// <summary>Same flags, now a Compressed page kept as member <paramref name="member"/> of group <paramref name="id"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong WithGroup(ulong e, uint id, int member) =>
        WithPayload(e, PageState.Compressed, id | ((ulong)member << 32) | (1UL << 47)) | SharedBlob;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PageCategory Category(ulong e) => (PageCategory)((e & CategoryMask) >> CategoryShift);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Idle(ulong e) => (int)((e & IdleMask) >> IdleShift);

    /// <summary>The 48-bit payload: a frame number, a store handle (Patched, Compressed) or a word (Uniform).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Payload(ulong e) => e >> PayloadShift;

    public const ulong MaxPayload = (1UL << (64 - PayloadShift)) - 1;

    /// <summary>
    /// A page the guest never populated: Zero with payload 1 (every page of an empty domain starts so; a write or a load
    /// gives it a frame, and a page found zero later is Zero with payload 0). It reads as zeros like any Zero page, but it
    /// is not guest memory, so it is never counted as saved (docs/REPORT-SCHEMA.md, "The numbers").
    /// </summary>
    public const ulong Untouched = 1UL << PayloadShift;

    /// <summary>A Zero page the guest never populated (see <see cref="Untouched"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsUntouched(ulong e) => State(e) == PageState.Zero && Payload(e) == 1;

    /// <summary>Same flags (but never <see cref="SharedBlob"/>), new state and a 48-bit payload.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong WithPayload(ulong e, PageState state, ulong payload) =>
        (e & FlagsMask & ~(StateMask | SharedBlob)) | (ulong)state | (payload << PayloadShift);

    /// <summary>
    /// A page merged into shared <paramref name="frame"/>: Shared, same flags but its incompressible mark, because a
    /// shared frame is tried under the policies of all its pages (SharedCompression marks them all if it fails).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Merged(ulong e, uint frame) => With(e & ~Incompressible, PageState.Shared, frame);

    /// <summary>Same flags, now a Compressed page naming shared blob <paramref name="id"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong WithSharedBlob(ulong e, uint id) => WithPayload(e, PageState.Compressed, id) | SharedBlob;

    /// <summary>Same flags (access bits, clock state; never <see cref="SharedBlob"/>), new state and frame.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong With(ulong e, PageState state, uint frame) =>
        (e & FlagsMask & ~(StateMask | SharedBlob)) | (ulong)state | ((ulong)frame << PayloadShift);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong WithClock(ulong e, PageCategory category, int idle) =>
        (e & ~(CategoryMask | IdleMask)) | ((ulong)category << CategoryShift) | ((ulong)idle << IdleShift);
}
