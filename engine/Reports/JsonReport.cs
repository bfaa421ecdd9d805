using DifferenceEngine.Hosting;
using DifferenceEngine.Stats;
using Newtonsoft.Json;

namespace DifferenceEngine.Reports;

/// <summary>
/// Writes a <see cref="ReportModel"/> as JSON, field by field as docs/REPORT-SCHEMA.md lists them
/// (schemaVersion 2): sizes in bytes, durations in seconds or microseconds as the name says, times in
/// ISO 8601 with their offset.
/// </summary>
public static class JsonReport
{
    public const int SchemaVersion = 2;

    public static void Write(ReportModel model, TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(writer);
        using var w = new JsonTextWriter(writer)
        {
            Formatting = Formatting.Indented,
            CloseOutput = false,
            DateFormatHandling = DateFormatHandling.IsoDateFormat,
            FloatFormatHandling = FloatFormatHandling.Symbol,
        };
        w.WriteStartObject();
        Field(w, "schemaVersion", SchemaVersion);
        w.WritePropertyName("generator");
        w.WriteStartObject();
        Field(w, "name", "DifferenceEngine");
        Field(w, "version", model.GeneratorVersion);
        w.WriteEndObject();
        Field(w, "generatedAt", model.GeneratedAt);
        WriteMachine(w, model.Machine);
        WriteSummary(w, model.Summary);
        WriteHost(w, model);
        WriteEngine(w, model.Engine);
        WritePolicy(w, model.Policy);
        Field(w, "allDomains", model.AllDomains);
        w.WritePropertyName("domains");
        w.WriteStartArray();
        foreach (var d in model.Domains) WriteDomain(w, d);
        w.WriteEndArray();
        w.WritePropertyName("history");
        w.WriteStartArray();
        foreach (var s in model.History) WriteSample(w, s);
        w.WriteEndArray();
        w.WriteEndObject();
        w.Flush();
        writer.WriteLine();
        writer.Flush();
    }

    private static void WriteMachine(JsonWriter w, MachineInfo m)
    {
        w.WritePropertyName("machine");
        w.WriteStartObject();
        Field(w, "name", m.Name);
        Field(w, "processorCount", m.ProcessorCount);
        Field(w, "memoryBytes", m.MemoryBytes);
        Field(w, "operatingSystem", m.OperatingSystem);
        Field(w, "runtime", m.Runtime);
        w.WriteEndObject();
    }

    private static void WriteSummary(JsonWriter w, ReportSummary s)
    {
        w.WritePropertyName("summary");
        w.WriteStartObject();
        Field(w, "guestBytes", s.GuestBytes);
        Field(w, "memoryUsedBytes", s.MemoryUsedBytes);
        Field(w, "savedBytes", s.SavedBytes);
        Field(w, "savingsPercent", s.SavingsPercent);
        Field(w, "untouchedBytes", s.UntouchedBytes);
        w.WritePropertyName("memoryUsedParts");
        w.WriteStartArray();
        foreach (var p in s.Parts)
        {
            w.WriteStartObject();
            Field(w, "part", p.Part);
            Field(w, "bytes", p.Bytes);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WriteHost(JsonWriter w, ReportModel model)
    {
        var s = model.HostStats;
        w.WritePropertyName("host");
        w.WriteStartObject();
        Field(w, "name", model.HostName);
        Field(w, "kind", model.HostKind);
        Field(w, "connectedAt", model.HostConnected);
        Field(w, "domains", s.Domains);
        Field(w, "memoryLimitBytes", s.MemoryLimitBytes);
        Field(w, "guestBytes", s.GuestBytes);
        Field(w, "memoryUsedBytes", s.MemoryUsedBytes);
        Field(w, "savedBytes", s.SavedBytes);
        Field(w, "savingsPercent", s.SavingsPercent);
        Field(w, "untouchedBytes", s.UntouchedBytes);
        Field(w, "domainsUsedBytes", s.DomainsUsedBytes);
        Field(w, "storeSlackBytes", s.StoreSlackBytes);
        Field(w, "unchargedBytes", s.UnchargedBytes);
        Field(w, "frameBytes", s.FrameBytes);
        Field(w, "framesInUse", s.FramesInUse);
        Field(w, "framesFree", s.FramesFree);
        Field(w, "framesAllocated", s.FramesAllocated);
        Field(w, "sharedFrames", s.SharedFrames);
        Field(w, "metadataBytes", s.MetadataBytes);
        w.WritePropertyName("metadataParts");
        w.WriteStartObject();
        // Each part under its name in camel case (P2M: p2m), in MetadataParts' order.
        foreach (var (part, bytes) in s.Metadata.Named())
            Field(w, part == "P2M" ? "p2m" : char.ToLowerInvariant(part[0]) + part[1..], bytes);
        w.WriteEndObject();
        Field(w, "metadataPeakBytes", s.MetadataPeakBytes);
        Field(w, "scanPasses", s.ScanPasses);
        Field(w, "outOfMemoryEvents", s.OutOfMemoryEvents);

        w.WritePropertyName("store");
        w.WriteStartObject();
        Field(w, "allocatedBytes", s.StoreAllocatedBytes);
        Field(w, "storedBytes", s.StoreStoredBytes);
        Field(w, "blobs", s.StoreBlobs);
        Field(w, "fragmentation", s.StoreFragmentation);
        w.WriteEndObject();

        w.WritePropertyName("swap");
        w.WriteStartObject();
        Field(w, "path", s.SwapPath);
        Field(w, "sizeBytes", s.SwapBytes);
        Field(w, "usedBytes", s.SwapUsedBytes);
        Field(w, "groupBytes", s.SwapGroupBytes);
        Field(w, "pageOuts", s.PageOuts);
        Field(w, "pageOutP50Microseconds", s.PageOutP50.TotalMicroseconds);
        Field(w, "pageOutP99Microseconds", s.PageOutP99.TotalMicroseconds);
        Field(w, "writeFailures", s.SwapWriteFailures);
        Field(w, "reclaimRuns", s.ReclaimRuns);
        w.WriteEndObject();

        w.WritePropertyName("faults");
        w.WriteStartArray();
        foreach (var f in model.Faults) WriteFault(w, f);
        w.WriteEndArray();

        w.WritePropertyName("engineTime");
        w.WriteStartArray();
        foreach (var t in s.EngineTime)
        {
            w.WriteStartObject();
            Field(w, "mechanism", t.Mechanism);
            Field(w, "busySeconds", t.BusyTime.TotalSeconds);
            Field(w, "pages", t.Pages);
            Field(w, "nanosecondsPerPage", t.NanosecondsPerPage);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WriteFault(JsonWriter w, FaultDistribution f)
    {
        w.WriteStartObject();
        Field(w, "kind", f.Kind.ToString());
        Field(w, "count", f.Count);
        Field(w, "p50Microseconds", f.P50.TotalMicroseconds);
        Field(w, "p99Microseconds", f.P99.TotalMicroseconds);
        Field(w, "meanMicroseconds", f.Mean.TotalMicroseconds);
        w.WritePropertyName("histogram");
        w.WriteStartArray();
        foreach (var b in f.Buckets)
        {
            w.WriteStartObject();
            Field(w, "upperBoundMicroseconds", b.UpperBound.TotalMicroseconds);
            Field(w, "count", b.Count);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WriteEngine(JsonWriter w, EngineStatus e)
    {
        w.WritePropertyName("engine");
        w.WriteStartObject();
        Field(w, "state", e.State.ToString());
        Field(w, "intervalSeconds", e.Interval.TotalSeconds);
        Field(w, "startedAt", e.Started);
        Field(w, "stoppedAt", e.Stopped);
        Field(w, "passesRun", e.PassesRun);
        Field(w, "lastPassAt", e.LastPass);
        Field(w, "lastPassSeconds", e.LastPassDuration.TotalSeconds);
        Field(w, "busySeconds", e.BusyTime.TotalSeconds);
        Field(w, "samples", e.Samples);
        Field(w, "lastError", e.LastError);
        w.WriteEndObject();
    }

    private static void WritePolicy(JsonWriter w, PolicySnapshot p)
    {
        w.WritePropertyName("hostPolicy");
        w.WriteStartObject();
        Field(w, "similarityKeys", p.SimilarityKeys);
        Field(w, "similarityBlocksPerKey", p.SimilarityBlocksPerKey);
        Field(w, "similarityCandidates", p.SimilarityCandidates);
        Field(w, "similaritySeed", p.SimilaritySeed);
        Field(w, "lowWatermark", p.LowWatermark);
        Field(w, "highWatermark", p.HighWatermark);
        Field(w, "compactionThreshold", p.CompactionThreshold);
        w.WriteEndObject();
    }

    private static void WriteDomain(JsonWriter w, DomainReport d)
    {
        var s = d.Stats;
        w.WriteStartObject();
        Field(w, "domain", s.Domain);
        Field(w, "domainId", s.DomainId);
        Field(w, "status", s.Status);
        Field(w, "trustGroup", s.TrustGroup);
        Field(w, "pageCount", s.PageCount);
        Field(w, "privatePages", s.PrivatePages);
        Field(w, "zeroPages", s.ZeroPages);
        Field(w, "untouchedPages", s.UntouchedPages);
        Field(w, "uniformPages", s.UniformPages);
        Field(w, "sharedPages", s.SharedPages);
        Field(w, "patchedPages", s.PatchedPages);
        Field(w, "compressedPages", s.CompressedPages);
        Field(w, "sharedCompressedPages", s.SharedCompressedPages);
        Field(w, "groupedPages", s.GroupedPages);
        Field(w, "swappedPages", s.SwappedPages);
        Field(w, "referencePages", s.ReferencePages);
        Field(w, "guestBytes", s.GuestBytes);
        Field(w, "bytesUsed", s.BytesUsed);
        Field(w, "bytesSaved", s.BytesSaved);
        Field(w, "savingsPercent", s.SavingsPercent);
        Field(w, "storedBytes", s.StoredBytes);
        Field(w, "sharingEnabled", s.SharingEnabled);
        Field(w, "patchingEnabled", s.PatchingEnabled);
        Field(w, "compressionEnabled", s.CompressionEnabled);
        Field(w, "compressionAlgorithm", s.CompressionAlgorithm);
        Field(w, "patchThreshold", d.PatchThreshold);
        Field(w, "compressionThreshold", d.CompressionThreshold);
        Field(w, "c4Sweeps", d.C4Sweeps);
        w.WriteEndObject();
    }

    private static void WriteSample(JsonWriter w, StatsSample s)
    {
        w.WriteStartObject();
        Field(w, "time", s.Time);
        Field(w, "guestBytes", s.GuestBytes);
        Field(w, "memoryUsedBytes", s.MemoryUsedBytes);
        Field(w, "savedBytes", s.SavedBytes);
        Field(w, "framesInUse", s.FramesInUse);
        Field(w, "storeAllocatedBytes", s.StoreAllocatedBytes);
        Field(w, "swapUsedBytes", s.SwapUsedBytes);
        Field(w, "faults", s.Faults);
        Field(w, "scanPasses", s.ScanPasses);
        w.WriteEndObject();
    }

    /// <summary>One field; Newtonsoft writes strings, integers, booleans, times and null. NaN and infinities (no JSON number) as null.</summary>
    private static void Field(JsonWriter w, string name, object? value)
    {
        w.WritePropertyName(name);
        if (value is double d && !double.IsFinite(d)) w.WriteNull();
        else w.WriteValue(value);
    }
}
