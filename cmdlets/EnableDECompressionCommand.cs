using System.Management.Automation;
using DifferenceEngine.Codecs;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Xen;

namespace DifferenceEngine.Commands;

/// <summary>
/// Lets scans compress a domain's cold (C4) pages that matched nothing, after a full pass has seen
/// them, optionally choosing the codec (Enable-DECompression).
/// </summary>
[Cmdlet(VerbsLifecycle.Enable, "DECompression", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(Domain), typeof(XenDomain))]
public sealed class EnableDECompressionCommand : DomainMechanismCmdlet
{
    /// <summary>The codec for pages compressed from now on: LZ4, WKdm or Zstd; the domain's current one by default.</summary>
    [Parameter]
    public CompressionAlgorithm? Algorithm { get; set; }

    protected override string Action(IDEDomain domain) =>
        $"Enable page compression with {Algorithm ?? domain.Policy.CompressionAlgorithm}";

    protected override long Apply(IDEDomain domain)
    {
        domain.EnableCompression(Algorithm);
        return 0;
    }
}
