namespace DifferenceEngine.Tests.Codecs;

/// <summary>An output buffer with 0xCD guard regions on both sides, to prove a codec never writes out of range.</summary>
internal sealed class GuardedBuffer
{
    public const byte Guard = 0xCD;
    public const int GuardSize = 64;

    private readonly byte[] _storage;

    public GuardedBuffer(int length)
    {
        Length = length;
        _storage = new byte[length + (2 * GuardSize)];
        _storage.AsSpan().Fill(Guard);
    }

    public int Length { get; }

    /// <summary>The usable middle, between the guards.</summary>
    public Span<byte> Span => _storage.AsSpan(GuardSize, Length);

    /// <summary>Fills the usable middle too, so bytes a codec leaves alone are recognisable.</summary>
    public void Reset() => _storage.AsSpan().Fill(Guard);

    public void AssertGuardsIntact(string context)
    {
        int before = _storage.AsSpan(0, GuardSize).IndexOfAnyExcept(Guard);
        int after = _storage.AsSpan(GuardSize + Length).IndexOfAnyExcept(Guard);
        Assert.True(before < 0, $"{context}: the guard before the buffer was overwritten at -{GuardSize - before}");
        Assert.True(after < 0, $"{context}: the guard after the buffer was overwritten at +{after}");
    }
}
