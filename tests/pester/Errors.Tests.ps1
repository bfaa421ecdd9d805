# Every error an admin can meet carries a stable id and a category: numbers at and beyond the ends of every numeric
# parameter (the 64TB case and its kin) give our own ids or PowerShell's binding ids, never a bare .NET exception
# (System.OverflowException, "NotSpecified"). A bad argument terminates; a failure of one item does not, and honours
# -ErrorAction.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeDiscovery {
    $long = @([long]::MaxValue, [long]::MinValue, -1, 0, 64TB, 4095)
    $int = @([int]::MaxValue, [int]::MinValue, -1, 0)
    # One case a line: what to run, with the value in $Value (and a parameter's name in $Param), on the host $h holding domain d1 (4 pages).
    $cases = @(
        foreach ($v in $long) {
            @{ Case = "New-DEDomain -MemorySize $v"; Run = { New-DEDomain -DEHost $h -Name "m$([guid]::NewGuid().ToString('n').Substring(0, 6))" -MemorySize $Value }; Value = $v }
            @{ Case = "Connect-DEHost -MemoryLimit $v"; Run = { Connect-DEHost -Name (New-Name) -MemoryLimit $Value -PassThru }; Value = $v }
            @{ Case = "Connect-DEHost -SwapSize $v"; Run = { Connect-DEHost -Name (New-Name) -MemoryLimit 64MB -SwapPath (Join-Path $TestDrive (New-Name)) -SwapSize $Value -PassThru }; Value = $v }
            @{ Case = "Get-DEPage -Gfn $v"; Run = { Get-DEPage -DEHost $h -Domain d1 -Gfn $Value }; Value = $v }
            @{ Case = "Read-DEGuestPage -Gfn $v"; Run = { Read-DEGuestPage -DEHost $h -Domain d1 -Gfn $Value -Raw }; Value = $v }
            @{ Case = "Write-DEGuestPage -Gfn $v"; Run = { Write-DEGuestPage -DEHost $h -Domain d1 -Gfn $Value -Data ([byte[]](1, 2)) -Confirm:$false }; Value = $v }
        }
        foreach ($v in $int) {
            @{ Case = "New-DEDomain -ProcessId $v"; Run = { New-DEDomain -DEHost $h -Name "p$([guid]::NewGuid().ToString('n').Substring(0, 6))" -ProcessId $Value }; Value = $v }
            @{ Case = "Connect-DEHost -SimilaritySeed $v"; Run = { Connect-DEHost -Name (New-Name) -SimilaritySeed $Value -PassThru }; Value = $v }
            @{ Case = "Invoke-DEWorkload -Seed $v"; Run = { Invoke-DEWorkload -DEHost $h -Domain d1 -Operations 10 -Seed $Value }; Value = $v }
            @{ Case = "Write-DEGuestPage -Offset $v"; Run = { Write-DEGuestPage -DEHost $h -Domain d1 -Gfn 0 -Offset $Value -Data ([byte[]](1, 2)) -Confirm:$false }; Value = $v }
            foreach ($p in 'C4Sweeps', 'PatchThreshold', 'CompressionThreshold') {
                @{ Case = "Set-DEPolicy -$p $v"; Run = { $a = @{ $Param = $Value }; Set-DEPolicy -DEHost $h -Domain d1 @a -Confirm:$false }; Value = $v; Param = $p }
            }
            foreach ($p in 'SimilarityKeys', 'SimilarityBlocksPerKey', 'SimilarityCandidates', 'SimilaritySeed', 'CompactionThreshold', 'LowWatermark', 'HighWatermark') {
                @{ Case = "Set-DEPolicy -HostPolicy -$p $v"; Run = { $a = @{ $Param = $Value }; Set-DEPolicy -DEHost $h -HostPolicy @a -Confirm:$false }; Value = $v; Param = $p }
            }
        }
        foreach ($v in [timespan]::MaxValue, [timespan]::Zero, [timespan]::FromSeconds(-1), [timespan]::MinValue) {
            @{ Case = "Start-DEEngine -Interval $v"; Run = { Start-DEEngine -DEHost $h -Interval $Value -PassThru }; Value = $v }
        }
        @{ Case = 'Invoke-DEWorkload -Operations -1'; Run = { Invoke-DEWorkload -DEHost $h -Domain d1 -Operations -1 }; Value = -1; Fails = $true }
        @{ Case = 'Export-DEReport -Path x.unknown'; Run = { Export-DEReport -DEHost $h -Path (Join-Path $TestDrive 'x.unknown') }; Value = 0; Fails = $true }
        @{ Case = 'New-DEDomain -Path (a directory)'; Run = { New-DEDomain -DEHost $h -Name dir1 -LiteralPath $TestDrive }; Value = 0; Fails = $true }
        # Paths an admin can get wrong: folders, devices, files of the kernel, places nobody may write.
        foreach ($path in '/dev/null', '/proc/self/mem', '/proc/self/status', '/sys/kernel/mm/ksm/run', '/proc/1/nope.img') {
            @{ Case = "New-DEDomain -LiteralPath $path"; Run = { New-DEDomain -DEHost $h -Name "f$([guid]::NewGuid().ToString('n').Substring(0, 6))" -LiteralPath $Value }; Value = $path; Fails = $true }
        }
        foreach ($path in '/proc/de-report.html', '/sys/de-report.json', '/dev/null/de.csv', '/nonexistent-folder/de.html') {
            @{ Case = "Export-DEReport -Path $path"; Run = { Export-DEReport -DEHost $h -Path $Value }; Value = $path; Fails = $true }
        }
        foreach ($path in '/proc/de.swap', '/dev/null', '/nonexistent-folder/de.swap') {
            @{ Case = "Connect-DEHost -SwapPath $path"; Run = { Connect-DEHost -Name (New-Name) -MemoryLimit 64MB -SwapPath $Value -SwapSize 16MB -PassThru }; Value = $path; Fails = $true }
        }
    )
}

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    function New-Name { "pester-err-$([guid]::NewGuid().ToString('n').Substring(0, 8))" }
    $script:h = Connect-DEHost -Name (New-Name) -MemoryLimit 256MB -PassThru
    $null = New-DEDomain -DEHost $h -Name d1 -MemorySize 16KB

    # Runs a case: returns every error record it raised, each with whether it terminated the cmdlet (reached the
    # catch) or was written as a non-terminating error (came out of the error stream, merged into the output).
    function Get-CaseError([scriptblock]$Run) {
        $terminating = @()
        $output = @()
        try {
            $ErrorActionPreference = 'Continue'
            $output = @(& $Run 2>&1)
        }
        catch {
            $terminating += $_
        }
        $made = @($output | Where-Object { $_ -isnot [System.Management.Automation.ErrorRecord] })
        $written = @($output | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] })
        # Whatever a case made is dropped again: hosts disconnected, domains removed, the engine stopped.
        foreach ($o in $made) {
            if ($o -is [DifferenceEngine.Hosting.IDEHost]) { $o | Disconnect-DEHost -Confirm:$false }
            elseif ($o -is [DifferenceEngine.Domains.Domain]) { $o | Remove-DEDomain -Confirm:$false }
        }
        Stop-DEEngine -DEHost $h -ErrorAction Ignore
        foreach ($e in $terminating) { [pscustomobject]@{ Record = $e; Terminating = $true } }
        foreach ($e in $written) { [pscustomobject]@{ Record = $e; Terminating = $false } }
    }
}

AfterAll {
    Get-DEHost -Name 'pester-err-*' | Disconnect-DEHost -Confirm:$false
}

Describe 'Errors at the ends of every numeric parameter' {
    It '<Case>: a stable id and category, never a bare .NET exception; a bad argument terminates' -ForEach $cases {
        $errors = @(Get-CaseError $Run)
        if ($Fails) { $errors.Count | Should -BeGreaterThan 0 -Because "'$Case' cannot succeed" }
        foreach ($e in $errors) {
            $r = $e.Record
            $because = "'$Case' wrote $($r.FullyQualifiedErrorId) ($($r.CategoryInfo.Category)): $($r.Exception.Message)"
            $r.FullyQualifiedErrorId.Split(',')[0] | Should -Not -Match '\.|Exception$' -Because $because
            $r.CategoryInfo.Category | Should -Not -Be 'NotSpecified' -Because $because
            # A value out of range for the whole call terminates; a guest frame number is checked per domain (a frame
            # one domain lacks another may have), so GfnOutOfRange is a failure of that item.
            if ($r.CategoryInfo.Category -eq 'InvalidArgument') {
                $e.Terminating | Should -Be ($r.FullyQualifiedErrorId -notlike 'GfnOutOfRange,*') -Because $because
            }
        }
    }
}

Describe 'The 64TB case' {
    It 'New-DEDomain -MemorySize 64TB is MemorySizeInvalid, a bad argument that -ErrorAction does not silence' {
        $err = { New-DEDomain -DEHost $h -Name big -MemorySize 64TB -ErrorAction SilentlyContinue } | Should -Throw -PassThru
        $err.FullyQualifiedErrorId | Should -Be 'MemorySizeInvalid,DifferenceEngine.Commands.NewDEDomainCommand'
        $err.CategoryInfo.Category | Should -Be 'InvalidArgument'
        Get-DEDomain -DEHost $h -Name big -ErrorAction Ignore | Should -BeNullOrEmpty
    }
}
