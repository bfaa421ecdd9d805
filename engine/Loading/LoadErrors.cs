using static DifferenceEngine.Loading.LoadGeometry;

namespace DifferenceEngine.Loading;

/// <summary>Errors more than one memory source raises, worded once.</summary>
internal static class LoadErrors
{
    public static DEException TooLarge(string what, ulong bytes, object target) =>
        new("ImageTooLarge", DEErrorKind.InvalidData,
            $"{what} describes {bytes} bytes ({Gib(bytes)}) of guest memory, over the {Gib((ulong)MaxGuestBytes)} limit.",
            target);
}
