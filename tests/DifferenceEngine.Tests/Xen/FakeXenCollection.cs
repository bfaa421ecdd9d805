namespace DifferenceEngine.Tests.Xen;

/// <summary>The fake Xen is one process-wide hypervisor: its tests run one at a time, apart from the parallel ones.</summary>
[CollectionDefinition(nameof(FakeXenCollection), DisableParallelization = true)]
public sealed class FakeXenCollection;
