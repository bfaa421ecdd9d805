using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using DifferenceEngine.Memory;

namespace DifferenceEngine.Codecs;

/// <summary>The codecs' few errors, thrown from out-of-line helpers so the hot loops stay small.</summary>
internal static class CodecErrors
{
    /// <summary>Stable id of every malformed-encoding error, whatever the codec.</summary>
    public const string CorruptId = "CodecCorrupt";

    public const string PageSizeInvalidId = "PageSizeInvalid";

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void ThrowCorrupt(string codec, string detail) =>
        throw new DEException(CorruptId, DEErrorKind.InvalidData, $"The {codec} encoding of a page is corrupt: {detail}.", codec);

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void ThrowCorrupt(string codec, string detail, Exception inner) =>
        throw new DEException(CorruptId, DEErrorKind.InvalidData, $"The {codec} encoding of a page is corrupt: {detail}.", codec, inner);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void CheckPage(int length, string parameter)
    {
        if (length != PageGeometry.PageSize)
        {
            ThrowPageSize(length, parameter);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void CheckDisjoint(ReadOnlySpan<byte> input, Span<byte> output, string parameter)
    {
        if (input.Overlaps(output))
        {
            ThrowOverlap(parameter);
        }
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowPageSize(int length, string parameter) =>
        throw new DEException(PageSizeInvalidId, DEErrorKind.InvalidArgument,
            $"{parameter} must be exactly one page ({PageGeometry.PageSize} bytes), not {length} bytes.", parameter);

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowOverlap(string parameter) =>
        throw new DEException("CodecBuffersOverlap", DEErrorKind.InvalidArgument,
            $"The output buffer must not overlap {parameter}.", parameter);
}
