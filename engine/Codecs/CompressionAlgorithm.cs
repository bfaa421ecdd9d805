using Newtonsoft.Json;
using Newtonsoft.Json.Converters;

namespace DifferenceEngine.Codecs;

/// <summary>The page compressors a domain can choose; the value is stored with every compressed page, so it never changes.</summary>
[JsonConverter(typeof(StringEnumConverter))] // a name, not a number, in ConvertTo-Json
public enum CompressionAlgorithm : byte
{
    LZ4 = 1,
    WKdm = 2,
    Zstd = 3,
}
