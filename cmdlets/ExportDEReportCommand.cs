using System.Management.Automation;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;
using DifferenceEngine.Reports;

namespace DifferenceEngine.Commands;

/// <summary>
/// Writes a report of a host to a file (Export-DEReport): a self-contained HTML page with charts, JSON
/// (docs/REPORT-SCHEMA.md) or CSV with one row per domain. Per-domain and host-wide numbers only, never
/// page contents; the file is readable by its owner only. Domains from the pipeline limit the report
/// to them; without any, it covers every domain of the host (on Xen every guest domain: domain 0 is not treated).
/// Works on embedded and Xen hosts alike; on Xen the store is what the pager holds and the faults are its page-ins.
/// </summary>
[Cmdlet(VerbsData.Export, "DEReport", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(FileInfo))]
public sealed class ExportDEReportCommand : PipedDomainCmdlet
{
    /// <summary>The report file; taken literally (no wildcards). Its folder must exist.</summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    /// <summary>Html, Json or Csv; by default from the extension of -Path (.html/.htm, .json, .csv).</summary>
    [Parameter]
    public ReportFormat Format { get; set; }

    /// <summary>The domains to report (names, patterns, Domain or XenDomain objects, domain ids on Xen); every domain of the host by default.</summary>
    [Parameter(ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public DomainSelector[]? Domain { get; set; }

    /// <summary>Replace the file even when it is read-only (as Export-Csv -Force does); a writable file is replaced anyway.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>Never replace an existing file: fail with ReportFileExists instead (as Export-Csv -NoClobber does).</summary>
    [Parameter]
    [Alias("NoOverwrite")]
    public SwitchParameter NoClobber { get; set; }

    /// <summary>Output the report's FileInfo.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    private readonly GatheredDomains _domains = new();
    // The host of the first piped object without domains (Get-DEHostStats output, a host policy): a report of all of it.
    private IDEHost? _wholeHost;
    private string _fullPath = "";
    private ReportFormat _format;

    /// <summary>
    /// A bad path, format or an existing file stops the cmdlet before it reads any input. The path is checked first: a folder
    /// is "ReportPathIsDirectory" whatever its name, not "ReportFormatUnknown" for having no extension.
    /// </summary>
    protected override void BeginProcessing()
    {
        try
        {
            _fullPath = ResolvePath();
            ReportFile.CheckTarget(_fullPath, overwrite: !NoClobber, replaceReadOnly: Force);
            _format = MyInvocation.BoundParameters.ContainsKey(nameof(Format)) ? Format : ReportFile.FormatOf(_fullPath);
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
        }
    }

    protected override void ProcessRecord()
    {
        if (Domain is not null) Gather(_domains, Domain);
        else _wholeHost ??= HostOfRecordWithoutDomains();
    }

    protected override void EndProcessing()
    {
        // -Domain given with a pipeline that brought nothing: ProcessRecord never ran.
        if (!_domains.Selected && Domain is not null) Gather(_domains, Domain);
        InputHost = null; // each record's host was used as it came; what follows is the whole report's
        // A piped object without domains asks for all of its host. Otherwise piped input that turned out empty
        // (Get-DEDomain nomatch* | ...) is an empty selection, not "all".
        bool whole = _wholeHost is not null && !_domains.Selected;
        bool selected = !whole && (_domains.Selected || MyInvocation.ExpectingInput || MyInvocation.BoundParameters.ContainsKey(nameof(Domain)));
        IReadOnlyList<IDEDomain>? domains = selected ? _domains.Domains : null;
        if (domains is { Count: 0 })
        {
            // A selection that selected nothing: every name not found, every piped object's host not connected, a pattern
            // or a pipeline that matched no domain. There is nothing to report, and no host the input named to report on
            // (the current host is not one): no file is written, and one already there is left as it was, rather than
            // replaced by a report of no domain (or of another host).
            WriteDEError(NothingToReport());
            return;
        }
        // The report's host: -DEHost as given, else the first domain's, else the piped host's, else the current one (the
        // last two only for a report of every domain: a selection has its first domain's host).
        var host = DEHost is not null ? TargetHost : domains is { Count: > 0 } ? domains[0].Host : _wholeHost ?? TargetHost;
        if (domains is not null)
        {
            // One report, one host: domain objects of another host are not found on this one.
            foreach (var stray in domains.Where(d => !ReferenceEquals(d.Host, host)))
                WriteDEError(DomainOfAnotherHost(stray, host, ": a report covers one host; export each host's domains to a file of its own"));
            domains = domains.Where(d => ReferenceEquals(d.Host, host)).ToArray();
            if (domains.Count == 0)
            {
                WriteDEError(NothingToReport());
                return;
            }
        }
        string scope = domains is null ? "every domain" : domains.Count == 1 ? "1 domain" : $"{domains.Count} domains";
        if (!ShouldProcess(_fullPath, $"Write a {_format} report of {scope} of host '{host.Name}'")) return;
        FileInfo file;
        try
        {
            var model = ReportModel.FromHost(host, domains, cancellationToken: StopToken);
            file = ReportFile.WriteFile(model, _fullPath, _format, overwrite: !NoClobber, replaceReadOnly: Force, cancellationToken: StopToken);
        }
        catch (DEException ex)
        {
            WriteDEError(ex);
            return;
        }
        catch (OperationCanceledException) when (StopToken.IsCancellationRequested)
        {
            throw new PipelineStoppedException(); // Ctrl-C while the snapshot waited for a pass, or a FIFO for its reader: nothing written
        }
        WriteVerbose($"Wrote {file.FullName} ({DisplayFormat.Bytes(file.Length)}).");
        // Through the provider, so the FileInfo has PSPath and the rest, as Get-Item gives it.
        if (PassThru) WriteObject(InvokeProvider.Item.Get([file.FullName], force: true, literalPath: true), enumerateCollection: true);
    }

    /// <summary>
    /// "ReportNothingSelected" (ObjectNotFound): the domains given or piped came to none, so no report is written. Written
    /// after the errors of the selectors that failed (DomainNotFound, HostNotFound, ...), which say why; alone when a pattern
    /// or the pipeline matched no domain, which is no error of its own in this module but leaves the report unwritten.
    /// </summary>
    private DEException NothingToReport() =>
        new("ReportNothingSelected", DEErrorKind.ObjectNotFound,
            $"No report was written to '{_fullPath}': the domains given selected none (a name not found, a host not connected, " +
            "or a pattern or pipeline that matched no domain). A file already there is left as it was. Leave out -Domain and " +
            "the pipeline to report every domain of the host.", _fullPath);

    /// <summary>-Path as a file system path, relative paths against the current location.</summary>
    private string ResolvePath() => GetFileSystemPath(Path, "report", "ReportDirectoryNotFound");
}
