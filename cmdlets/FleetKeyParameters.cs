using System.Management.Automation;
using System.Runtime.InteropServices;
using System.Security;
using System.Text;
using DifferenceEngine.Fleet;

namespace DifferenceEngine.Commands;

/// <summary>The fleet secret as cmdlets take it: a key file (-FleetKeyPath) or the secret itself (-FleetKey).</summary>
internal static class FleetKeyParameters
{
    /// <summary>
    /// The fleet key from exactly one of the two: a key file path (resolved by the caller), or a secret as
    /// SecretManagement's Get-Secret returns it (a SecureString, or a byte[] secret).
    /// </summary>
    public static FleetKey Resolve(string? path, object? secret)
    {
        if (path is null == secret is null)
            throw new DEException(path is null ? "FleetKeyRequired" : "FleetKeyAmbiguous", DEErrorKind.InvalidArgument,
                path is null
                    ? "Fingerprints are keyed with the fleet's secret: give -FleetKeyPath (a key file from New-DEFleetKey) or -FleetKey (e.g. (Get-Secret DEFleet))."
                    : "Give either -FleetKeyPath or -FleetKey, not both.");
        if (path is not null) return FleetKey.FromFile(path);
        object value = secret is PSObject ps ? ps.BaseObject : secret!;
        switch (value)
        {
            case SecureString secure:
            {
                IntPtr text = Marshal.SecureStringToGlobalAllocUnicode(secure);
                byte[]? bytes = null;
                try
                {
                    string plain = Marshal.PtrToStringUni(text, secure.Length);
                    bytes = Encoding.UTF8.GetBytes(plain);
                    return FleetKey.FromSecret(bytes);
                }
                finally
                {
                    Marshal.ZeroFreeGlobalAllocUnicode(text);
                    if (bytes is not null) Array.Clear(bytes);
                }
            }
            case byte[] bytes:
                return FleetKey.FromSecret(bytes);
            default:
                throw new DEException("FleetKeyInvalid", DEErrorKind.InvalidArgument,
                    $"-FleetKey takes a SecureString or a byte[] (what Get-Secret returns), not a {value.GetType().Name}; a secret in plain text would be left in the session's history.",
                    value.GetType().Name);
        }
    }
}
