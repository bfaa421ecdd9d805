#Requires -Version 7.6
#Requires -Modules DifferenceEngine

<#
.SYNOPSIS
    Sets each domain's DifferenceEngine policy from a CSV file: which mechanisms run, with what settings,
    in which trust group.

.DESCRIPTION
    One row per domain (or per wildcard pattern of domains). Every column but Domain is optional, and an
    empty cell leaves that setting as it is:

      Domain                names or a wildcard pattern (web*); required
      Sharing               On or Off (also True/False, Yes/No, 1/0)
      Patching              On or Off
      Compression           On or Off
      Algorithm             LZ4, WKdm or Zstd: the codec for compressed pages
      PatchThreshold        largest patch accepted, 16 to 4000 bytes
      CompressionThreshold  largest compressed size accepted, a fraction of a page (0.01 to 0.95)
      C4Sweeps              sweeps without access after which a page is cold (1 to 15)
      TrustGroup            pages are shared only within a trust group; put tenants that do not trust
                            each other in different groups

    The whole file is checked before anything changes: unknown columns, values that are not On/Off or
    numbers, and patterns that match no domain stop the script with the row number. Then the rows are
    applied in order (a later row wins for a domain two rows name).

    Moving a domain to another trust group needs its Shared and Patched pages given back their own
    frames first; the script does that (Disable-DESharing -Unshare, Disable-DEPatching -Restore), moves
    it, and turns sharing and patching back on as they were unless the row says otherwise. Turning a
    mechanism Off leaves pages as they are unless -Restore is given.

    Every change goes through the cmdlet that makes it, so -WhatIf shows them all and changes nothing,
    and -Confirm asks for each.

.PARAMETER Path
    The CSV file (a header row, comma-separated, as Export-Csv and spreadsheet programs write it).

.PARAMETER Restore
    With Off: give shared pages frames of their own again, rebuild patched and decompress compressed
    pages (more memory used, as if the mechanism had never run).

.PARAMETER DEHost
    The host whose domains are set; by default the current host.

.PARAMETER PassThru
    Output the policy of every domain the file names, after the changes (Get-DEPolicy).

.EXAMPLE
    ./Set-PolicyFromCsv.ps1 -Path ./policy.csv -WhatIf

    Shows every change the file would make, and makes none.

.EXAMPLE
    ./Set-PolicyFromCsv.ps1 -Path ./policy.csv -PassThru | Format-Table Domain, TrustGroup, SharingEnabled, PatchingEnabled, CompressionEnabled

    With policy.csv holding:

        Domain,Sharing,Patching,Compression,Algorithm,PatchThreshold,TrustGroup
        web*,On,On,On,LZ4,2048,tenant-a
        db1,On,Off,On,Zstd,,tenant-b
        build,Off,Off,Off,,,build

.OUTPUTS
    With -PassThru, the domains' policies (DifferenceEngine.Commands.DomainPolicyView).
#>
[CmdletBinding(SupportsShouldProcess)]
param(
    [Parameter(Mandatory, Position = 0)]
    [ValidateNotNullOrEmpty()]
    [string]$Path,

    [switch]$Restore,

    [DifferenceEngine.Hosting.DEHost]$DEHost,

    [switch]$PassThru
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$columns = 'Domain', 'Sharing', 'Patching', 'Compression', 'Algorithm', 'PatchThreshold', 'CompressionThreshold', 'C4Sweeps', 'TrustGroup'
$target = if ($DEHost) { $DEHost } else { Get-DEHost -Current }
if (-not $target) {
    throw 'No DifferenceEngine host is connected: run Connect-DEHost first, or pass -DEHost.'
}

function ConvertTo-Switch([string]$Text, [string]$Column, [int]$Row) {
    # $null: leave the setting as it is.
    switch -Regex ($Text.Trim()) {
        '^$' { return $null }
        '^(on|true|yes|1|enabled?)$' { return $true }
        '^(off|false|no|0|disabled?)$' { return $false }
        default { throw "Row ${Row}: $Column is '$Text'; use On or Off (or leave it empty)." }
    }
}

function ConvertTo-Number([string]$Text, [string]$Column, [int]$Row, [type]$Type) {
    if ([string]::IsNullOrWhiteSpace($Text)) { return $null }
    $value = $null
    $style = [Globalization.NumberStyles]::Float
    $parsed = if ($Type -eq [int]) {
        [int]::TryParse($Text.Trim(), [Globalization.NumberStyles]::Integer, [cultureinfo]::InvariantCulture, [ref]$value)
    }
    else {
        [double]::TryParse($Text.Trim(), $style, [cultureinfo]::InvariantCulture, [ref]$value)
    }
    if (-not $parsed) { throw "Row ${Row}: $Column is '$Text', which is not a number." }
    $value
}

# ---- Read and check the whole file first: a typo must not leave half the host changed. -------------
$resolved = (Resolve-Path -LiteralPath $Path).ProviderPath
$rows = @(Import-Csv -LiteralPath $resolved)
if ($rows.Count -eq 0) {
    Write-Warning "$resolved has no rows: nothing to do."
    return
}
$unknown = @($rows[0].PSObject.Properties.Name | Where-Object { $_ -notin $columns })
if ($unknown.Count -gt 0) {
    throw "Unknown column(s) $($unknown -join ', ') in $resolved. Known columns: $($columns -join ', ')."
}
if ('Domain' -notin $rows[0].PSObject.Properties.Name) {
    throw "$resolved has no Domain column."
}

$plan = for ($i = 0; $i -lt $rows.Count; $i++) {
    $row = $rows[$i]
    $number = $i + 2 # the header is line 1
    $cell = { param($name) if ($row.PSObject.Properties[$name]) { [string]$row.$name } else { '' } }
    if ([string]::IsNullOrWhiteSpace((& $cell 'Domain'))) {
        throw "Row ${number}: the Domain cell is empty."
    }
    $domains = @(Get-DEDomain -DEHost $target -Name (& $cell 'Domain').Trim() -ErrorAction SilentlyContinue)
    if ($domains.Count -eq 0) {
        throw "Row ${number}: no domain on host '$($target.Name)' matches '$(& $cell 'Domain')'."
    }
    $algorithm = (& $cell 'Algorithm').Trim()
    if ($algorithm -and $algorithm -notin 'LZ4', 'WKdm', 'Zstd') {
        throw "Row ${number}: Algorithm is '$algorithm'; use LZ4, WKdm or Zstd."
    }
    [pscustomobject]@{
        Row                  = $number
        Domains              = $domains
        Sharing              = ConvertTo-Switch (& $cell 'Sharing') 'Sharing' $number
        Patching             = ConvertTo-Switch (& $cell 'Patching') 'Patching' $number
        Compression          = ConvertTo-Switch (& $cell 'Compression') 'Compression' $number
        Algorithm            = $algorithm
        PatchThreshold       = ConvertTo-Number (& $cell 'PatchThreshold') 'PatchThreshold' $number ([int])
        CompressionThreshold = ConvertTo-Number (& $cell 'CompressionThreshold') 'CompressionThreshold' $number ([double])
        C4Sweeps             = ConvertTo-Number (& $cell 'C4Sweeps') 'C4Sweeps' $number ([int])
        TrustGroup           = (& $cell 'TrustGroup').Trim()
    }
}

# ---- Apply, row by row. Each cmdlet asks ShouldProcess itself: -WhatIf and -Confirm reach them all. --
$common = @{ DEHost = $target }
$touched = [Collections.Generic.List[object]]::new()
foreach ($step in $plan) {
    Write-Verbose "Row $($step.Row): $(@($step.Domains).Name -join ', ')"
    foreach ($d in $step.Domains) {
        $sharing = $step.Sharing
        $patching = $step.Patching
        $policy = Get-DEPolicy @common -Domain $d
        if ($step.TrustGroup -and $step.TrustGroup -ne $policy.TrustGroup) {
            # Shared and patched pages belong to the old group's index: give them frames before moving.
            $pages = Get-DEPageStats @common -Domain $d
            if ($pages.SharedPages + $pages.PatchedPages -gt 0) {
                if ($null -eq $sharing) { $sharing = $policy.SharingEnabled }
                if ($null -eq $patching) { $patching = $policy.PatchingEnabled }
                Disable-DESharing @common -Domain $d -Unshare
                Disable-DEPatching @common -Domain $d -Restore
            }
            Set-DEPolicy @common -Domain $d -TrustGroup $step.TrustGroup
        }

        $settings = @{}
        if ($step.Algorithm) { $settings.CompressionAlgorithm = $step.Algorithm }
        if ($null -ne $step.PatchThreshold) { $settings.PatchThreshold = $step.PatchThreshold }
        if ($null -ne $step.CompressionThreshold) { $settings.CompressionThreshold = $step.CompressionThreshold }
        if ($null -ne $step.C4Sweeps) { $settings.C4Sweeps = $step.C4Sweeps }
        if ($settings.Count -gt 0) { Set-DEPolicy @common -Domain $d @settings }

        $codec = @{}
        if ($step.Algorithm) { $codec.Algorithm = $step.Algorithm }
        switch ($sharing) {
            $true { Enable-DESharing @common -Domain $d }
            $false { Disable-DESharing @common -Domain $d -Unshare:$Restore }
        }
        switch ($patching) {
            $true { Enable-DEPatching @common -Domain $d }
            $false { Disable-DEPatching @common -Domain $d -Restore:$Restore }
        }
        switch ($step.Compression) {
            $true { Enable-DECompression @common -Domain $d @codec }
            $false { Disable-DECompression @common -Domain $d -Restore:$Restore }
        }
        if (-not $touched.Contains($d)) { $touched.Add($d) }
    }
}

if ($PassThru) {
    $touched | Get-DEPolicy @common
}
