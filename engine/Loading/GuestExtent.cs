namespace DifferenceEngine.Loading;

/// <summary>File bytes that land at a guest-physical byte address; what follows up to the next extent stays zero.</summary>
internal readonly record struct GuestExtent(long Address, long FileOffset, long FileLength);
