using Newtonsoft.Json;
using Newtonsoft.Json.Converters;

namespace DifferenceEngine;

/// <summary>What kind of failure a <see cref="DEException"/> is; the cmdlets map it to an ErrorCategory.</summary>
[JsonConverter(typeof(StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum DEErrorKind
{
    InvalidArgument,
    InvalidData,
    ObjectNotFound,
    ResourceExists,
    ResourceUnavailable,
    PermissionDenied,
    ReadError,
    WriteError,
    InvalidOperation,
    NotImplemented,
    ConnectionError,
}

/// <summary>
/// Every error the engine raises on purpose: a stable <see cref="ErrorId"/> (never reworded),
/// a kind, a message for people and the offending input as <see cref="Target"/>.
/// </summary>
public class DEException : Exception
{
    public DEException(string errorId, DEErrorKind kind, string message, object? target = null, Exception? inner = null)
        : base(message, inner)
    {
        ErrorId = errorId;
        Kind = kind;
        Target = target;
    }

    /// <summary>Stable identifier, e.g. "ImageNotPageAligned"; scripts and tests match on it.</summary>
    public string ErrorId { get; }

    public DEErrorKind Kind { get; }

    public object? Target { get; }
}
