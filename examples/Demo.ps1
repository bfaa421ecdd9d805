<#
.SYNOPSIS
    The main job: real programs' memory on the embedded host, shared, with the stats to show for it.

.DESCRIPTION
    Starts a few different real programs (two PowerShell sessions, a Perl interpreter, a shell, and
    Python when the machine has it), snapshots each one's memory into a domain of an embedded
    DifferenceEngine host, shares identical pages until nothing more merges (timed), then adds
    patching and compression, runs a verified guest workload with the background engine on, prints
    the host stats and the per-domain stats table, and writes an HTML report (and a JSON one beside
    it; no page bytes in either) whose path is the last line printed.

.PARAMETER ModulePath
    The built module folder; defaults to $env:DE_MODULE_PATH, then out/DifferenceEngine.

.PARAMETER ReportPath
    Where the HTML report goes; defaults to out/demo/report.html (a JSON report is written beside it).

.EXAMPLE
    ./build.ps1 -Task Demo

.EXAMPLE
    dotnet pwsh -NoProfile -File examples/Demo.ps1 -ReportPath /tmp/de-report.html
#>
[CmdletBinding()]
param(
    [string]$ModulePath = $(if ($env:DE_MODULE_PATH) { $env:DE_MODULE_PATH } else { Join-Path $PSScriptRoot '../out/DifferenceEngine' }),
    [string]$ReportPath = (Join-Path $PSScriptRoot '../out/demo/report.html')
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
Import-Module $ModulePath -Force

function Start-Program {
    # Starts a program that says "ready" once it has started and then waits on its standard input, so its memory can be
    # snapshotted; returns once it is ready (not after some time: a loaded machine only takes longer).
    param([string]$Label, [string]$FilePath, [string[]]$Arguments)
    $psi = [System.Diagnostics.ProcessStartInfo]::new($FilePath)
    foreach ($a in $Arguments) { $psi.ArgumentList.Add($a) }
    $psi.UseShellExecute = $false
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardInput = $true
    $p = [System.Diagnostics.Process]::Start($psi)
    $line = $p.StandardOutput.ReadLine()
    if ($line -ne 'ready') {
        try { $p.Kill() } catch { Write-Verbose "${Label}: $_" }
        throw "$Label ($FilePath) did not start: it said '$line' instead of 'ready'."
    }
    [pscustomobject]@{ Label = $Label; Process = $p }
}

# The pwsh running this script is the pinned .NET tool: start more of the same (dotnet + pwsh.dll).
$pwshHost = [Environment]::ProcessPath
$pwshArgs = @(if ($pwshHost -like '*dotnet') { "$PSHOME/pwsh.dll" })
$wait = 'Import-Module Microsoft.PowerShell.Utility; [Console]::Out.WriteLine(''ready''); [Console]::Out.Flush(); $null = [Console]::In.ReadLine()'

$programs = [System.Collections.Generic.List[object]]::new()
$programs.Add((Start-Program 'pwsh-a' $pwshHost ($pwshArgs + @('-NoProfile', '-NonInteractive', '-Command', $wait))))
$programs.Add((Start-Program 'pwsh-b' $pwshHost ($pwshArgs + @('-NoProfile', '-NonInteractive', '-Command', "Get-ChildItem / | Out-Null; $wait"))))
if (Get-Command perl -CommandType Application -ErrorAction Ignore) {
    $programs.Add((Start-Program 'perl' 'perl' @('-MPOSIX', '-MData::Dumper', '-MFile::Find', '-e', 'my %h = map { $_ => "x" x 64 } 1..20000; $| = 1; print "ready\n"; <STDIN>;')))
}
$programs.Add((Start-Program 'bash' 'bash' @('-c', 'echo ready; read line')))
if (Get-Command python3 -CommandType Application -ErrorAction Ignore) {
    $programs.Add((Start-Program 'python' 'python3' @('-c', 'import json, decimal, email, http.client, sqlite3, sys; print("ready", flush=True); sys.stdin.readline()')))
}


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
Write-Host "`nBefore the engine:"
Get-DEPageStats | Format-Table | Out-String -Width 120 | Write-Host

# 1. Whole-page sharing alone, until a pass merges nothing (the paper's first mechanism).
$scan = Invoke-DEScan -UntilStable
Write-Host ("Sharing: {0} passes over {1:N0} pages in {2:N1} ms ({3:N0} pages/s): {4:N0} zero pages, {5:N0} pages merged." -f
    $scan.Passes, $scan.PagesSwept, $scan.Elapsed.TotalMilliseconds, $scan.PagesPerSecond, $scan.ZeroPagesFound, $scan.PagesMerged)
$afterSharing = Get-DEHostStats

# 2. Patching and compression on top: similar pages become patches, cold ones are compressed.
Get-DEDomain | Enable-DEPatching
Get-DEDomain | Enable-DECompression -Algorithm LZ4
Get-DEDomain | Set-DEPolicy -C4Sweeps 1     # every page may become C4 after one idle sweep: a demo, not a policy
$full = Invoke-DEScan -UntilStable
Write-Host ("All mechanisms: {0} passes in {1:N1} ms: {2:N0} pages patched, {3:N0} compressed, {4:N0} one-word pages." -f
    $full.Passes, $full.Elapsed.TotalMilliseconds, $full.PagesPatched, $full.PagesCompressed, $full.UniformPagesFound)

# 3. The engine in the background while the guests run: faults are served, every read is checked.
Start-DEEngine -Interval 0.5
$work = Get-DEDomain | Invoke-DEWorkload -Operations 200000 -WriteFraction 0.1 -Pattern Hotspot -Seed 42 -Verify
Stop-DEEngine
Write-Host ("Workload: {0:N0} operations, {1:N0} faults, {2} mismatches." -f $work.Operations, $work.Faults, $work.Mismatches)
if ($work.Mismatches -ne 0) { throw "The workload read back bytes that differ from what it wrote." }
$null = Invoke-DEScan -UntilStable

$hostStats = Get-DEHostStats
Write-Host ("`nSharing alone saved {0:N1} MiB ({1}%); all mechanisms save {2:N1} MiB ({3}%) of {4:N1} MiB of guest memory." -f
    ($afterSharing.SavedBytes / 1MB), $afterSharing.SavingsPercent, ($hostStats.SavedBytes / 1MB), $hostStats.SavingsPercent, ($hostStats.GuestBytes / 1MB))
$hostStats | Format-List | Out-String -Width 120 | Write-Host

$reportDir = Split-Path -Parent $ReportPath
if ($reportDir) { $null = New-Item -ItemType Directory -Force -Path $reportDir }
$json = [IO.Path]::GetFullPath([IO.Path]::ChangeExtension($ReportPath, ".json"))
Export-DEReport -Path $json
$html = Export-DEReport -Path $ReportPath -PassThru

Write-Host "After the engine:"
Get-DEPageStats | Format-Table | Out-String -Width 120 | Write-Host
Disconnect-DEHost -Confirm:$false
Write-Host "Report: $($html.FullName) (and $json)"
