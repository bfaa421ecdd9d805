using Newtonsoft.Json;
using Newtonsoft.Json.Converters;

namespace DifferenceEngine.Domains;

/// <summary>Where a guest page's bytes live.</summary>
[JsonConverter(typeof(StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum PageState : byte
{
    /// <summary>All zero, no frame (never written, or found zero by a scan).</summary>
    Zero = 0,
    /// <summary>The page has a frame of its own.</summary>
    Private = 1,
    /// <summary>Mapped read-only to a frame shared with other pages; a write breaks the sharing (copy-on-write).</summary>
    Shared = 2,
    /// <summary>Stored as a patch (delta) against a reference frame, in the compact store; no frame of its own.</summary>
    Patched = 3,
    /// <summary>Stored compressed in the compact store; no frame of its own.</summary>
    Compressed = 4,
    /// <summary>Paged out to a slot of the host's swap file; no frame.</summary>
    Swapped = 5,
    /// <summary>Every 32-bit word of the page is the same non-zero value, kept in the entry itself: no frame, no blob.</summary>
    Uniform = 6,
}

/// <summary>The clock's not-recently-used category of a page (PAPER.md), deciding what may be done to it.</summary>
[JsonConverter(typeof(StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum PageCategory : byte
{
    /// <summary>Not yet seen by a clock sweep: nothing may be done to it.</summary>
    None = 0,
    /// <summary>Recently modified: left alone.</summary>
    C1 = 1,
    /// <summary>Recently read, not modified: may be shared, may serve as a patch reference.</summary>
    C2 = 2,
    /// <summary>Not recently accessed: may be shared or patched.</summary>
    C3 = 3,
    /// <summary>Not accessed for the policy's extended period: eligible for everything.</summary>
    C4 = 4,
}

/// <summary>The kinds of fault the engine services on guest access.</summary>
[JsonConverter(typeof(StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum FaultKind : byte
{
    None = 0,
    /// <summary>First write to a Zero page: a frame is allocated and cleared.</summary>
    ZeroFill = 1,
    /// <summary>Write to a Shared page: the writer gets a private copy.</summary>
    CopyOnWrite = 2,
    /// <summary>Access to a Patched page: rebuilt from its reference and patch into a frame.</summary>
    Unpatch = 3,
    /// <summary>Access to a Compressed page: decompressed into a frame.</summary>
    Decompress = 4,
    /// <summary>First write to a Uniform page: a frame is allocated and filled with the page's word.</summary>
    PatternFill = 5,
    /// <summary>Access to a Swapped page: read back from the swap file into a frame.</summary>
    SwapIn = 6,
}
