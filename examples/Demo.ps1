<#
.SYNOPSIS
    The main job: real programs' memory on the embedded host, shared, with the stats to show for it.

.DESCRIPTION
    Starts a few different real programs (two PowerShell sessions, a Perl interpreter, a shell, and
    Python when the machine has it), snapshots each one's memory into a domain of an embedded
    DifferenceEngine host, enables sharing, scans until nothing more merges, runs a short guest
    workload with verification, prints the per-domain stats table and the host stats, and writes a
    JSON report (no page bytes) whose path is the last line printed.

.PARAMETER ModulePath
    The built module folder; defaults to $env:DE_MODULE_PATH, then out/DifferenceEngine.

.PARAMETER ReportPath
    Where the report goes; defaults to out/demo/report.json.

.EXAMPLE
    ./build.ps1 -Task Demo

.EXAMPLE
    dotnet pwsh -NoProfile -File examples/Demo.ps1 -ReportPath /tmp/de-report.json
#>
[CmdletBinding()]
param(
    [string]$ModulePath = $(if ($env:DE_MODULE_PATH) { $env:DE_MODULE_PATH } else { Join-Path $PSScriptRoot '../out/DifferenceEngine' }),
    [string]$ReportPath = (Join-Path $PSScriptRoot '../out/demo/report.json')
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
Import-Module $ModulePath -Force

function Start-Program {
    # Starts a program that waits, so its memory can be snapshotted; returns the process.
    param([string]$Label, [string]$FilePath, [string[]]$Arguments)
    $psi = [System.Diagnostics.ProcessStartInfo]::new($FilePath)
    foreach ($a in $Arguments) { $psi.ArgumentList.Add($a) }
    $psi.UseShellExecute = $false
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardInput = $true
    $p = [System.Diagnostics.Process]::Start($psi)
    [pscustomobject]@{ Label = $Label; Process = $p }
}

# The pwsh running this script is the pinned .NET tool: start more of the same (dotnet + pwsh.dll).
$pwshHost = [Environment]::ProcessPath
$pwshArgs = @(if ($pwshHost -like '*dotnet') { "$PSHOME/pwsh.dll" })
$wait = 'Import-Module Microsoft.PowerShell.Utility; $null = [Console]::In.ReadLine()'

$programs = [System.Collections.Generic.List[object]]::new()
$programs.Add((Start-Program 'pwsh-a' $pwshHost ($pwshArgs + @('-NoProfile', '-NonInteractive', '-Command', $wait))))
$programs.Add((Start-Program 'pwsh-b' $pwshHost ($pwshArgs + @('-NoProfile', '-NonInteractive', '-Command', "Get-ChildItem / | Out-Null; $wait"))))
$programs.Add((Start-Program 'perl' 'perl' @('-MPOSIX', '-MData::Dumper', '-MFile::Find', '-e', 'my %h = map { $_ => "x" x 64 } 1..20000; <STDIN>;')))
$programs.Add((Start-Program 'bash' 'bash' @('-c', 'read line')))
if (Get-Command python3 -CommandType Application -ErrorAction Ignore) {
    $programs.Add((Start-Program 'python' 'python3' @('-c', 'import json, decimal, email, http.client, sqlite3, sys; sys.stdin.readline()')))
}
Start-Sleep -Seconds 3   # let the interpreters finish starting

$reportDir = Split-Path -Parent $ReportPath
if ($reportDir) { $null = New-Item -ItemType Directory -Force -Path $reportDir }

Connect-DEHost -Name demo
try {
    foreach ($p in $programs) {
        $d = New-DEDomain -Name $p.Label -ProcessId $p.Process.Id
        Write-Host ("Loaded {0,-7} pid {1,-7} {2,7} pages ({3} not resident)" -f $p.Label, $p.Process.Id,
            $d.LoadReport.PagesLoaded, $d.LoadReport.PagesNotResident)
    }
}
finally {
    # The snapshots are taken: the programs can go.
    foreach ($p in $programs) {
        try { $p.Process.Kill(); $p.Process.Dispose() } catch { Write-Verbose "$($p.Label): $_" }
    }
}

Get-DEDomain | Enable-DESharing
Write-Host "`nBefore sharing:"
Get-DEPageStats | Format-Table | Out-String -Width 120 | Write-Host

$scan = Invoke-DEScan -UntilStable
Write-Host ("Scan: {0} passes over {1:N0} pages in {2:N1} ms ({3:N0} pages/s), {4:N0} zero pages found, {5:N0} pages merged." -f
    $scan.Passes, $scan.PagesSwept, $scan.Elapsed.TotalMilliseconds, $scan.PagesPerSecond, $scan.ZeroPagesFound, $scan.PagesMerged)

# Guest activity through the engine: writes break sharing (copy-on-write), reads are verified.
$work = Get-DEDomain | Invoke-DEWorkload -Operations 200000 -WriteFraction 0.2 -Pattern Hotspot -Seed 42 -Verify
Write-Host ("Workload: {0:N0} operations, {1:N0} faults, {2} mismatches." -f $work.Operations, $work.Faults, $work.Mismatches)
if ($work.Mismatches -ne 0) { throw "The workload read back bytes that differ from what it wrote." }
$null = Invoke-DEScan -UntilStable

Write-Host "`nAfter sharing:"
$stats = Get-DEPageStats
$stats | Format-Table | Out-String -Width 120 | Write-Host
$hostStats = Get-DEHostStats
$hostStats | Format-List | Out-String -Width 120 | Write-Host

$report = [ordered]@{
    generated = (Get-Date).ToString('o')
    machine   = "$([Environment]::ProcessorCount) cores, $([Math]::Round((Get-Content /proc/meminfo -TotalCount 1).Split(' ', [StringSplitOptions]::RemoveEmptyEntries)[1] / 1MB, 1)) GiB, $([System.Runtime.InteropServices.RuntimeInformation]::OSDescription)"
    scan      = [ordered]@{ passes = $scan.Passes; pages = $scan.PagesSwept; milliseconds = [Math]::Round($scan.Elapsed.TotalMilliseconds, 2); pagesPerSecond = [Math]::Round($scan.PagesPerSecond) }
    domains   = @($stats | Select-Object Domain, PageCount, PrivatePages, ZeroPages, SharedPages, GuestBytes, BytesUsed, BytesSaved, SavingsPercent)
    host      = $hostStats | Select-Object Host, Domains, FramesInUse, GuestBytes, MemoryUsedBytes, MetadataBytes, SavedBytes, SavingsPercent
    faults    = @($hostStats.Faults | Select-Object Kind, Count, P50Microseconds, P99Microseconds)
}
$report | ConvertTo-Json -Depth 5 | Set-Content -LiteralPath $ReportPath -Encoding utf8NoBOM
if (-not $IsWindows) { chmod 600 $ReportPath }
Disconnect-DEHost -Confirm:$false
Write-Host "Report: $((Resolve-Path -LiteralPath $ReportPath).Path)"
