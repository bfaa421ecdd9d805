#Requires -Version 7.6
#Requires -Modules DifferenceEngine

<#
.SYNOPSIS
    The nightly report: scans the host, writes an HTML and a JSON report with the date in their names
    into a folder, and keeps only the newest few.

.DESCRIPTION
    For a scheduled task or a cron job. Runs engine passes over every domain until nothing more changes
    (skipped when the background engine is running: it keeps the host scanned, and its history is what
    the report's "savings over time" chart shows), then writes

        <Folder>/<Prefix>-<host>-<yyyyMMdd-HHmmss>.html   the page to look at (charts, no network)
        <Folder>/<Prefix>-<host>-<yyyyMMdd-HHmmss>.json   the same numbers for scripts (docs/REPORT-SCHEMA.md)

    and deletes the oldest reports of this host beyond -Keep (pairs of .html and .json). The folder is
    created if missing. The reports are readable by their owner only; they hold per-domain and host-wide
    numbers, never page contents.

.PARAMETER Folder
    Where the reports go.

.PARAMETER Keep
    How many reports (of this host and prefix) to keep, the new one included.

.PARAMETER Prefix
    The start of the file names.

.PARAMETER MaxPasses
    At most this many engine passes before the report.

.PARAMETER NoScan
    Report the host as it is, without scanning first.

.PARAMETER Time
    The time in the file names; now by default.

.PARAMETER DEHost
    The host to report; by default the current host.

.EXAMPLE
    ./Export-NightlyReport.ps1 -Folder /var/lib/difference-engine/reports -Keep 30

.EXAMPLE
    # crontab: every night at 02:00
    # 0 2 * * * pwsh -NoProfile -File /opt/de/Export-NightlyReport.ps1 -Folder /var/lib/de/reports

.EXAMPLE
    ./Export-NightlyReport.ps1 -Folder ./reports -WhatIf

    Says what it would scan, write and delete, and does none of it.

.OUTPUTS
    System.IO.FileInfo: the HTML report, then the JSON report.
#>
[CmdletBinding(SupportsShouldProcess)]
[OutputType([IO.FileInfo])]
param(
    [Parameter(Mandatory, Position = 0)]
    [ValidateNotNullOrEmpty()]
    [string]$Folder,

    [ValidateRange(1, 10000)]
    [int]$Keep = 14,

    [ValidatePattern('^[\w.-]+$')]
    [string]$Prefix = 'de-report',

    [ValidateRange(1, 1000)]
    [int]$MaxPasses = 16,

    [switch]$NoScan,

    [datetime]$Time = (Get-Date),

    [DifferenceEngine.Hosting.DEHost]$DEHost
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$target = if ($DEHost) { $DEHost } else { Get-DEHost -Current }
if (-not $target) {
    throw 'No DifferenceEngine host is connected: run Connect-DEHost first, or pass -DEHost.'
}

$folderReady = Test-Path -LiteralPath $Folder -PathType Container
if (-not $folderReady -and $PSCmdlet.ShouldProcess($Folder, 'Create the report folder')) {
    $null = New-Item -ItemType Directory -Path $Folder -Force
    $folderReady = $true
}

if (-not $NoScan) {
    if ((Get-DEEngine -DEHost $target).State -eq 'Running') {
        Write-Verbose "The background engine of host '$($target.Name)' is running: no scan needed."
    }
    else {
        $scan = Invoke-DEScan -DEHost $target -UntilStable -MaxPasses $MaxPasses
        if ($scan) { Write-Verbose "Scanned $($scan.Passes) pass(es), $($scan.PagesMerged) pages merged." }
    }
}

# File names sort by time: the host name made safe for any file system, then the time stamp.
$hostPart = $target.Name -replace '[^\w.-]', '_'
$stem = '{0}-{1}-{2}' -f $Prefix, $hostPart, $Time.ToString('yyyyMMdd-HHmmss', [cultureinfo]::InvariantCulture)
if (-not $folderReady) {
    # -WhatIf without the folder: Export-DEReport would only say the folder is missing.
    $null = $PSCmdlet.ShouldProcess((Join-Path $Folder "$stem.html, .json"), 'Write the HTML and JSON reports')
    return
}
foreach ($extension in 'html', 'json') {
    Export-DEReport -DEHost $target -Path (Join-Path $Folder "$stem.$extension") -PassThru
}

# Keep the newest reports of this host; older ones go in .html/.json pairs.
$pattern = '^' + [regex]::Escape("$Prefix-$hostPart-") + '\d{8}-\d{6}$'
$stems = @(Get-ChildItem -LiteralPath $Folder -File |
        Where-Object { $_.Extension -in '.html', '.json' -and $_.BaseName -match $pattern } |
        Select-Object -ExpandProperty BaseName |
        Sort-Object -Descending -Unique)
foreach ($old in $stems | Select-Object -Skip $Keep) {
    Get-ChildItem -LiteralPath $Folder -File |
        Where-Object { $_.BaseName -eq $old -and $_.Extension -in '.html', '.json' } |
        Remove-Item
}
