using DifferenceEngine.Qemu;

namespace DifferenceEngine.Tests.Qemu;

/// <summary>
/// What the guest's library does with the crash journal's deposits, for tests of the journal without a guest: it keeps
/// its own descriptor, the newest replacing the last, and hands a duplicate to the next engine.
/// </summary>
internal sealed class LibraryDeposits : IDisposable
{
    private readonly List<int> _deposited = [];

    /// <summary>The journal's deposit callback.</summary>
    public void Deposit(int fd)
    {
        int own = LinuxNative.Dup(fd);
        Assert.True(own >= 0);
        foreach (int old in _deposited) LinuxNative.Close(old);
        _deposited.Clear();
        _deposited.Add(own);
    }

    /// <summary>The descriptor the library holds.</summary>
    public int Held => _deposited.Single();

    /// <summary>The descriptor the library would hand the next engine (a duplicate: the library keeps its own).</summary>
    public int Handed() => LinuxNative.Dup(Held);

    public void Dispose()
    {
        foreach (int fd in _deposited) LinuxNative.Close(fd);
        _deposited.Clear();
    }
}
