using System.Security.Cryptography;
using System.Text;
using DifferenceEngine.Qemu;

namespace DifferenceEngine.Fleet;

/// <summary>
/// The fleet's secret, from which every hash a fingerprint holds is keyed: two AES-256 keys derived with HKDF-SHA256
/// (one for page contents, one for similarity keys and block signatures), and a public key id that names the secret
/// without revealing it. Fingerprints made with different secrets share no value for the same page and cannot be
/// combined; without the secret, no value in a fingerprint can be checked against a guessed page.
/// </summary>
public sealed class FleetKey
{
    /// <summary>Fewest bytes a fleet secret may have (a key file holds 32 random bytes; New-DEFleetKey writes one).</summary>
    public const int MinimumSecretBytes = 16;

    /// <summary>Most bytes read from a key file: a key file is a secret, not a document.</summary>
    public const int MaximumSecretBytes = 4096;

    private static readonly byte[] Salt = Encoding.ASCII.GetBytes("DifferenceEngine fleet fingerprint v1");
    private readonly byte[] _contentKey;
    private readonly byte[] _similarityKey;

    private FleetKey(ReadOnlySpan<byte> secret)
    {
        _contentKey = HKDF.DeriveKey(HashAlgorithmName.SHA256, secret.ToArray(), 32, Salt, "content"u8.ToArray());
        _similarityKey = HKDF.DeriveKey(HashAlgorithmName.SHA256, secret.ToArray(), 32, Salt, "similarity"u8.ToArray());
        var id = HKDF.DeriveKey(HashAlgorithmName.SHA256, secret.ToArray(), 8, Salt, "key id"u8.ToArray());
        KeyId = Convert.ToHexStringLower(id);
    }

    /// <summary>16 hex digits naming the secret (HKDF of it): equal for fingerprints of one fleet, and nothing more.</summary>
    public string KeyId { get; }

    /// <summary>A fleet key from the secret's bytes (at least <see cref="MinimumSecretBytes"/>).</summary>
    public static FleetKey FromSecret(ReadOnlySpan<byte> secret)
    {
        if (secret.Length < MinimumSecretBytes)
            throw new DEException("FleetKeyTooShort", DEErrorKind.InvalidArgument,
                $"A fleet secret must hold at least {MinimumSecretBytes} bytes; this one holds {secret.Length}. Make one with New-DEFleetKey.",
                secret.Length);
        return new FleetKey(secret);
    }

    /// <summary>
    /// A fleet key from a key file: its bytes are the secret. The file must be readable by its owner only (mode 0600 or
    /// stricter, as New-DEFleetKey writes it): a secret others can read is refused ("FleetKeyFileInsecure").
    /// </summary>
    public static FleetKey FromFile(string path)
    {
        if (string.IsNullOrWhiteSpace(path))
            throw new DEException("FleetKeyPathInvalid", DEErrorKind.InvalidArgument, "A fleet key file path is required.", path);
        FileInfo info;
        try
        {
            info = new FileInfo(path);
            // A directory is not a missing file, and opening a FIFO would wait for a writer.
            if (LinuxNative.NotRegularFile(path) is { } what)
                throw new DEException("FleetKeyFileInvalid", DEErrorKind.InvalidData,
                    $"The fleet key file '{path}' is {what}, not a file holding a fleet secret.", path);
            if (!info.Exists)
                throw new DEException("FleetKeyFileNotFound", DEErrorKind.ObjectNotFound,
                    $"The fleet key file '{path}' does not exist. Make one with New-DEFleetKey -Path '{path}'.", path);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new DEException("FleetKeyPathInvalid", DEErrorKind.InvalidArgument, $"'{path}' is not a valid path: {e.Message}", path, e);
        }
        if (!OperatingSystem.IsWindows())
        {
            var mode = File.GetUnixFileMode(path);
            const UnixFileMode others = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
                                        | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;
            if ((mode & others) != 0)
                throw new DEException("FleetKeyFileInsecure", DEErrorKind.PermissionDenied,
                    $"The fleet key file '{path}' can be read or written by others (mode {Convert.ToString((int)mode, 8)}); a fleet secret must be the owner's alone: chmod 600 '{path}'.",
                    path);
        }
        if (info.Length > MaximumSecretBytes)
            throw new DEException("FleetKeyFileInvalid", DEErrorKind.InvalidData,
                $"The fleet key file '{path}' holds {info.Length} bytes; a key file holds a secret of {MinimumSecretBytes} to {MaximumSecretBytes} bytes.", path);
        byte[] secret;
        try
        {
            secret = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DEException("FleetKeyFileUnreadable", DEErrorKind.ReadError, $"The fleet key file '{path}' cannot be read: {e.Message}", path, e);
        }
        try
        {
            if (secret.Length < MinimumSecretBytes)
                throw new DEException("FleetKeyFileInvalid", DEErrorKind.InvalidData,
                    $"The fleet key file '{path}' holds {secret.Length} bytes; a key file holds a secret of {MinimumSecretBytes} to {MaximumSecretBytes} bytes. Make one with New-DEFleetKey.", path);
            return FromSecret(secret);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
        }
    }

    /// <summary>
    /// Writes a new fleet key file: 32 bytes from the system's cryptographic random source, created with mode 0600 (the
    /// file never exists with wider permissions). An existing file is replaced only with <paramref name="overwrite"/>.
    /// </summary>
    public static void CreateFile(string path, bool overwrite)
    {
        if (string.IsNullOrWhiteSpace(path))
            throw new DEException("FleetKeyPathInvalid", DEErrorKind.InvalidArgument, "A fleet key file path is required.", path);
        if (File.Exists(path) && !overwrite)
            throw new DEException("FleetKeyFileExists", DEErrorKind.ResourceExists,
                $"The fleet key file '{path}' already exists; replacing it would orphan every fingerprint made with it. Give -Force to replace it.", path);
        if (LinuxNative.NotRegularFile(path) is { } what)
            throw new DEException("FleetKeyFileUnwritable", DEErrorKind.WriteError,
                $"The fleet key file '{path}' cannot be written: it is {what}.", path);
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is null || !Directory.Exists(folder))
            throw new DEException("FleetKeyDirectoryNotFound", DEErrorKind.ObjectNotFound,
                $"The folder of the fleet key file '{path}' does not exist; create it first.", path);
        byte[] secret = RandomNumberGenerator.GetBytes(32);
        // Not named after the key file: a name of up to 255 bytes must leave room for what a temporary name adds.
        string temp = Path.Combine(folder, ".de-fleet-key-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8)) + ".tmp");
        bool moved = false;
        try
        {
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            using (var stream = new FileStream(temp, options))
            {
                stream.Write(secret);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite);
            moved = true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new DEException("FleetKeyFileUnwritable", DEErrorKind.WriteError, $"The fleet key file '{path}' cannot be written: {e.Message}", path, e);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
            // A failed write or rename (the path is a directory, say) leaves no copy of the secret behind.
            if (!moved)
            {
                try { File.Delete(temp); } catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException) { }
            }
        }
    }

    /// <summary>A keyed transform of one instance: AES-256 in ECB over 16-byte blocks (a pseudorandom permutation).</summary>
    internal KeyedHasher CreateHasher() => new(_contentKey, _similarityKey);
}

/// <summary>
/// The AES instances of one fingerprint pass (not thread-safe: one per builder). Each 16-byte block in gives one
/// 16-byte block out; a fingerprint keeps the first 8 bytes.
/// </summary>
internal sealed class KeyedHasher : IDisposable
{
    private readonly Aes _content;
    private readonly Aes _similarity;

    public KeyedHasher(byte[] contentKey, byte[] similarityKey)
    {
        _content = Aes.Create();
        _content.Key = contentKey;
        _similarity = Aes.Create();
        _similarity.Key = similarityKey;
    }

    public void Content(ReadOnlySpan<byte> blocks, Span<byte> output) => _content.EncryptEcb(blocks, output, PaddingMode.None);

    public void Similarity(ReadOnlySpan<byte> blocks, Span<byte> output) => _similarity.EncryptEcb(blocks, output, PaddingMode.None);

    public void Dispose()
    {
        _content.Dispose();
        _similarity.Dispose();
    }
}
