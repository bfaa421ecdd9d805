#Requires -Version 7.6
#Requires -Modules DifferenceEngine

<#
.SYNOPSIS
    Consolidation what-if: how many more VMs of this kind would fit in a host's memory with the
    DifferenceEngine than without it.

.DESCRIPTION
    Measures a few VMs of one kind with every mechanism on (sharing, patching, compression), scanned
    until nothing more changes, and works out from the bytes each VM was measured to use how many such
    VMs fit in -HostMemory (less -Reserve), against how many fit when each needs its whole guest memory.

    The VMs can be:
      -Domain     domains already on a host (names or wildcards). Sharing, patching and compression are
                  turned on for them: use -WhatIf to see what would change, or measure on a test host.
      -Path       memory images or ELF cores, loaded into a scratch embedded host.
      -ProcessId  snapshots of running Linux processes, loaded into a scratch embedded host.
    A scratch host is disconnected at the end, whatever happens.

    Bytes per VM are the mean of Get-DEPageStats' BytesUsed over the VMs measured: each VM's own frames,
    its equal part of the frames it shares and the bytes its patched and compressed pages take. What
    the host spends that no domain is charged for (engine metadata, the store's slack) is taken off the
    host's memory once, as it is mostly tables sized for the host; the page table of each VM (0.2% of
    its memory) is left out. VMs of one kind share with each other, so measure at least two or three:
    one VM alone shares only with itself. The figure assumes new VMs look like the ones measured.

.PARAMETER Domain
    Domains of the host to measure (names or wildcards).

.PARAMETER Path
    Memory images (raw, page-aligned) or ELF core dumps of the VMs to measure.

.PARAMETER ProcessId
    Running processes to snapshot and measure, each as one VM.

.PARAMETER HostMemory
    The memory of the host to fill, in bytes (256GB works).

.PARAMETER Reserve
    Memory of that host kept for other things (hypervisor, management domain), in bytes.

.PARAMETER CompressionAlgorithm
    The codec for compressed pages: LZ4 (fast), WKdm or Zstd (smaller).

.PARAMETER MaxPasses
    At most this many engine passes; scanning stops earlier once a pass changes nothing.

.PARAMETER DEHost
    With -Domain: the host the domains are on; by default the current host.

.EXAMPLE
    ./Measure-Consolidation.ps1 -Domain web* -HostMemory 256GB -Reserve 8GB

    Measures the host's web domains and prints how many more of them a 256 GiB host would take.

.EXAMPLE
    ./Measure-Consolidation.ps1 -Path ./images/web1.img, ./images/web2.img, ./images/web3.img -HostMemory 64GB

    Loads three VM images into a scratch host, measures them and discards the scratch host.

.EXAMPLE
    ./Measure-Consolidation.ps1 -ProcessId (Get-Process python3).Id -HostMemory 16GB -CompressionAlgorithm Zstd

    Treats each running python3 process as a VM.

.OUTPUTS
    DifferenceEngine.ConsolidationEstimate: VMs measured, guest and measured bytes per VM, savings, the
    host's own overhead, how many VMs fit without and with the engine, and MoreVMs, the difference.
#>
[CmdletBinding(SupportsShouldProcess, DefaultParameterSetName = 'Domain')]
[OutputType('DifferenceEngine.ConsolidationEstimate')]
param(
    [Parameter(Mandatory, Position = 0, ParameterSetName = 'Domain')]
    [ValidateNotNullOrEmpty()]
    [string[]]$Domain,

    [Parameter(Mandatory, ParameterSetName = 'Path')]
    [ValidateNotNullOrEmpty()]
    [string[]]$Path,

    [Parameter(Mandatory, ParameterSetName = 'Process')]
    [ValidateNotNullOrEmpty()]
    [int[]]$ProcessId,

    [Parameter(Mandatory)]
    [ValidateRange(4096, [long]::MaxValue)]
    [long]$HostMemory,

    [ValidateRange(0, [long]::MaxValue)]
    [long]$Reserve = 0,

    [ValidateSet('LZ4', 'WKdm', 'Zstd')]
    [string]$CompressionAlgorithm = 'LZ4',

    [ValidateRange(1, 1000)]
    [int]$MaxPasses = 32,

    [Parameter(ParameterSetName = 'Domain')]
    [DifferenceEngine.Hosting.DEHost]$DEHost
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

if ($Reserve -ge $HostMemory) {
    throw "The reserve ($Reserve bytes) leaves nothing of the host's $HostMemory bytes for VMs."
}

$scratch = $null
try {
    if ($PSCmdlet.ParameterSetName -eq 'Domain') {
        $target = if ($DEHost) { $DEHost } else { Get-DEHost -Current }
        if (-not $target) {
            throw 'No DifferenceEngine host is connected: run Connect-DEHost first, or pass -DEHost.'
        }
        $domains = @(Get-DEDomain -DEHost $target -Name $Domain)
        # A change to someone's host: each Enable-* below asks ShouldProcess (-WhatIf, -Confirm).
        $scratchOnly = @{}
    }
    else {
        # Only this script sees the scratch host: changing it needs nobody's consent.
        $scratchOnly = @{ WhatIf = $false; Confirm = $false }
        $scratch = Connect-DEHost -Name "consolidation-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru @scratchOnly
        $target = $scratch
        $domains = @(
            if ($PSCmdlet.ParameterSetName -eq 'Path') {
                $n = 0
                foreach ($file in $Path) {
                    $name = '{0}-{1}' -f (++$n), [IO.Path]::GetFileNameWithoutExtension($file)
                    New-DEDomain -DEHost $scratch -Name $name -Path $file @scratchOnly
                }
            }
            else {
                foreach ($id in $ProcessId) {
                    $process = Get-Process -Id $id
                    New-DEDomain -DEHost $scratch -Name "$($process.ProcessName)-$id" -ProcessId $id @scratchOnly
                }
            }
        )
    }
    if ($domains.Count -eq 0) {
        throw 'No VMs to measure: no domain matched.'
    }

    $domains | Enable-DESharing -DEHost $target @scratchOnly
    $domains | Enable-DEPatching -DEHost $target @scratchOnly
    $domains | Enable-DECompression -DEHost $target -Algorithm $CompressionAlgorithm @scratchOnly
    $scan = Invoke-DEScan -DEHost $target -Domain $domains -UntilStable -MaxPasses $MaxPasses @scratchOnly
    if (-not $scan) {
        return # -WhatIf: nothing was scanned, so there is nothing to measure
    }
    if (-not $scan.Stable) {
        Write-Warning "Still changing after $MaxPasses passes: the VMs may use less than measured. Try a larger -MaxPasses."
    }

    $stats = @(Get-DEPageStats -DEHost $target -Domain $domains)
    $hostStats = Get-DEHostStats -DEHost $target
    foreach ($s in $stats) {
        Write-Verbose ('{0}: {1:N0} of {2:N0} bytes used ({3}% saved)' -f $s.Domain, $s.BytesUsed, $s.GuestBytes, $s.SavingsPercent)
    }

    $guestPerVm = ($stats | Measure-Object GuestBytes -Average).Average
    if ($guestPerVm -le 0) {
        throw "The VMs measured ($($stats.Domain -join ', ')) hold no guest memory yet: their pages were never written, so there is nothing to estimate from."
    }
    $usedPerVm = [Math]::Max(1, ($stats | Measure-Object BytesUsed -Average).Average)
    # What the host spends that no domain is charged for (engine metadata, the store's slack) is paid
    # once, not per VM: most of it is tables sized for the host, not for one more VM.
    $overhead = $hostStats.MetadataBytes + $hostStats.StoreSlackBytes
    $available = $HostMemory - $Reserve
    $without = [Math]::Floor($available / $guestPerVm)
    $with = [Math]::Max(0, [Math]::Floor(($available - $overhead) / $usedPerVm))

    [pscustomobject]@{
        PSTypeName      = 'DifferenceEngine.ConsolidationEstimate'
        VMs             = $stats.Count
        GuestBytesPerVM = [long][Math]::Round($guestPerVm)
        BytesUsedPerVM  = [long][Math]::Round($usedPerVm)
        SavingsPercent  = [Math]::Round(100 * (1 - $usedPerVm / $guestPerVm), 2) # rounded as Get-DEPageStats rounds it; host-wide costs apart, as there
        HostOverhead    = [long]$overhead
        HostMemory      = $HostMemory
        Reserve         = $Reserve
        FitWithout      = [long]$without
        FitWith         = [long]$with
        MoreVMs         = [long]($with - $without)
        ScanPasses      = $scan.Passes
    }
}
finally {
    if ($scratch) {
        $scratch | Disconnect-DEHost -WhatIf:$false -Confirm:$false
    }
}
