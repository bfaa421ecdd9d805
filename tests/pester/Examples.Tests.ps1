# The admin scripts in examples/, each run against a small embedded host, so that they never rot.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder (and
# puts it on PSModulePath, which the scripts' #Requires -Modules DifferenceEngine needs).

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    $Examples = (Resolve-Path -LiteralPath (Join-Path $PSScriptRoot '../../examples')).ProviderPath
    $PageSize = 4096

    function New-TestHostName { "pester-examples-$([guid]::NewGuid().ToString('n').Substring(0, 8))" }

    function New-Page([Random]$Random) {
        $page = [byte[]]::new($PageSize)
        $Random.NextBytes($page)
        , $page
    }

    # Pages every domain has (the same OS, the same libraries), then pages of its own; the rest zero.
    function Initialize-Domains([object[]]$Domains, [int]$Common = 40, [int]$Own = 10) {
        $random = [Random]::new(42)
        $shared = @(1..$Common | ForEach-Object { New-Page $random })
        foreach ($d in $Domains) {
            $gfn = 0
            foreach ($page in $shared) { $null = $d.WritePage($gfn++, $page) }
            for ($i = 0; $i -lt $Own; $i++) { $null = $d.WritePage($gfn++, (New-Page $random)) }
        }
    }
}

Describe 'Measure-Consolidation.ps1' {
    BeforeAll {
        $script = Join-Path $Examples 'Measure-Consolidation.ps1'
        $deHost = Connect-DEHost -Name (New-TestHostName) -PassThru
        $web = @(1..3 | ForEach-Object { New-DEDomain -DEHost $deHost -Name "web$_" -MemorySize 256KB })
        $other = New-DEDomain -DEHost $deHost -Name 'other' -MemorySize 256KB
        Initialize-Domains $web
    }

    AfterAll {
        $deHost | Disconnect-DEHost -Confirm:$false
    }

    It 'changes nothing with -WhatIf, and estimates nothing' {
        $estimate = & $script -Domain web* -HostMemory 64MB -DEHost $deHost -WhatIf
        $estimate | Should -BeNullOrEmpty
        (Get-DEPolicy -DEHost $deHost -Domain web*).SharingEnabled | Should -Not -Contain $true
    }

    It 'estimates how many more VMs like the ones measured fit' {
        $estimate = & $script -Domain web* -HostMemory 64MB -Reserve 4MB -DEHost $deHost
        $estimate.PSObject.TypeNames | Should -Contain 'DifferenceEngine.ConsolidationEstimate'
        $estimate.VMs | Should -Be 3
        $estimate.GuestBytesPerVM | Should -Be 200KB -Because 'each VM wrote 50 of its 64 pages: the other 14 are not guest memory'
        $estimate.BytesUsedPerVM | Should -BeLessThan 200KB
        $estimate.FitWithout | Should -Be ([Math]::Floor(60MB / 200KB))
        $estimate.HostOverhead | Should -BeGreaterThan 0
        $estimate.FitWith | Should -Be ([Math]::Floor((60MB - $estimate.HostOverhead) / $estimate.BytesUsedPerVM))
        $estimate.MoreVMs | Should -Be ($estimate.FitWith - $estimate.FitWithout)
        $estimate.MoreVMs | Should -BeGreaterThan 0
        # Every mechanism was on for the VMs measured, and for them only.
        Get-DEPolicy -DEHost $deHost -Domain web* | ForEach-Object {
            $_.SharingEnabled, $_.PatchingEnabled, $_.CompressionEnabled | Should -Be $true, $true, $true
        }
        (Get-DEPolicy -DEHost $deHost -Domain other).SharingEnabled | Should -BeFalse
    }

    It 'measures memory images in a scratch host, which it disconnects' {
        $random = [Random]::new(7)
        $common = [byte[]]::new(32 * $PageSize)
        $random.NextBytes($common)
        $images = foreach ($n in 1..2) {
            $own = [byte[]]::new(8 * $PageSize)
            $random.NextBytes($own)
            $path = Join-Path $TestDrive "vm$n.img"
            [IO.File]::WriteAllBytes($path, [byte[]]($common + $own + [byte[]]::new(24 * $PageSize)))
            $path
        }
        $before = @(Get-DEHost).Name
        $current = (Get-DEHost -Current).Name

        $estimate = & $script -Path $images -HostMemory 1GB
        $estimate.VMs | Should -Be 2
        $estimate.GuestBytesPerVM | Should -Be (64 * $PageSize)
        $estimate.SavingsPercent | Should -BeGreaterThan 30
        @(Get-DEHost).Name | Should -Be $before
        (Get-DEHost -Current).Name | Should -Be $current
    }

    It 'refuses a reserve that leaves no memory' {
        { & $script -Domain web* -HostMemory 64MB -Reserve 64MB -DEHost $deHost } | Should -Throw '*leaves nothing*'
    }
}

Describe 'Set-PolicyFromCsv.ps1' {
    BeforeAll {
        $script = Join-Path $Examples 'Set-PolicyFromCsv.ps1'
        $deHost = Connect-DEHost -Name (New-TestHostName) -PassThru
        $domains = @(
            New-DEDomain -DEHost $deHost -Name web1 -MemorySize 256KB
            New-DEDomain -DEHost $deHost -Name web2 -MemorySize 256KB
            New-DEDomain -DEHost $deHost -Name db1 -MemorySize 256KB -EnableSharing
            New-DEDomain -DEHost $deHost -Name db2 -MemorySize 256KB -EnableSharing
        )
        Initialize-Domains $domains
        # db1 shares pages with db2 in the default trust group: moving it needs unsharing first.
        $null = Invoke-DEScan -DEHost $deHost -UntilStable
        function Write-Csv([string]$Name, [string[]]$Lines) {
            $path = Join-Path $TestDrive $Name
            Set-Content -LiteralPath $path -Value $Lines
            $path
        }
        $policyCsv = Write-Csv 'policy.csv' @(
            'Domain,Sharing,Patching,Compression,Algorithm,PatchThreshold,CompressionThreshold,C4Sweeps,TrustGroup'
            'web*,On,On,On,Zstd,1024,,,tenant-a'
            'db1,,Off,,,,0.25,4,tenant-b'
        )
    }

    AfterAll {
        $deHost | Disconnect-DEHost -Confirm:$false
    }

    It 'changes nothing with -WhatIf' {
        & $script -Path $policyCsv -DEHost $deHost -WhatIf
        $policies = Get-DEPolicy -DEHost $deHost
        $policies.TrustGroup | Sort-Object -Unique | Should -Be 'default'
        (Get-DEPolicy -DEHost $deHost -Domain web1).SharingEnabled | Should -BeFalse
        (Get-DEPageStats -DEHost $deHost -Domain db1).SharedPages | Should -BeGreaterThan 0
    }

    It 'checks the whole file before changing anything' {
        $bad = Write-Csv 'bad.csv' @(
            'Domain,Sharing,TrustGroup'
            'web1,On,tenant-a'
            'web2,maybe,tenant-a'
        )
        { & $script -Path $bad -DEHost $deHost } | Should -Throw "*Row 3: Sharing is 'maybe'*"
        (Get-DEPolicy -DEHost $deHost -Domain web1).SharingEnabled | Should -BeFalse

        $typo = Write-Csv 'typo.csv' @('Domain,Shareing', 'web1,On')
        { & $script -Path $typo -DEHost $deHost } | Should -Throw '*Unknown column(s) Shareing*'

        $missing = Write-Csv 'missing.csv' @('Domain,Sharing', 'nosuch*,On')
        { & $script -Path $missing -DEHost $deHost } | Should -Throw "*no domain*matches 'nosuch*'*"
    }

    It 'sets every domain as its row says, moving trust groups safely' {
        $result = @(& $script -Path $policyCsv -DEHost $deHost -PassThru)
        $result.Domain | Should -Be 'web1', 'web2', 'db1'

        foreach ($name in 'web1', 'web2') {
            $p = Get-DEPolicy -DEHost $deHost -Domain $name
            $p.TrustGroup | Should -Be 'tenant-a'
            $p.SharingEnabled, $p.PatchingEnabled, $p.CompressionEnabled | Should -Be $true, $true, $true
            "$($p.CompressionAlgorithm)" | Should -Be 'Zstd'
            $p.PatchThreshold | Should -Be 1024
        }
        $db1 = Get-DEPolicy -DEHost $deHost -Domain db1
        $db1.TrustGroup | Should -Be 'tenant-b'
        $db1.SharingEnabled | Should -BeTrue -Because 'an empty Sharing cell keeps sharing as it was'
        $db1.PatchingEnabled | Should -BeFalse
        $db1.CompressionThreshold | Should -Be 0.25
        $db1.C4Sweeps | Should -Be 4
        (Get-DEPolicy -DEHost $deHost -Domain db2).TrustGroup | Should -Be 'default'
    }
}

Describe 'Export-NightlyReport.ps1' {
    BeforeAll {
        $script = Join-Path $Examples 'Export-NightlyReport.ps1'
        $deHost = Connect-DEHost -Name (New-TestHostName) -PassThru
        $domains = @(1..2 | ForEach-Object { New-DEDomain -DEHost $deHost -Name "vm$_" -MemorySize 256KB -EnableSharing })
        Initialize-Domains $domains
    }

    AfterAll {
        $deHost | Disconnect-DEHost -Confirm:$false
    }

    It 'writes nothing with -WhatIf, not even the folder' {
        $folder = Join-Path $TestDrive 'whatif-reports'
        & $script -Folder $folder -DEHost $deHost -WhatIf | Should -BeNullOrEmpty
        $folder | Should -Not -Exist
        (Get-DEPageStats -DEHost $deHost).SharedPages | Should -Not -Contain 40 -Because 'nothing was scanned'
    }

    It 'scans, writes dated HTML and JSON reports into a new folder, and keeps the newest <Keep>' -ForEach @{ Keep = 2 } {
        $folder = Join-Path $TestDrive 'reports'
        $start = [datetime]'2025-06-01T02:00:00'
        foreach ($night in 0..3) {
            $files = @(& $script -Folder $folder -Keep $Keep -Time $start.AddDays($night) -DEHost $deHost)
            $files | Should -HaveCount 2
            $files[0] | Should -BeOfType ([IO.FileInfo])
            $files.Extension | Should -Be '.html', '.json'
        }
        $names = @(Get-ChildItem -LiteralPath $folder -File | Sort-Object Name).Name
        $names | Should -Be @(
            "de-report-$($deHost.Name)-20250603-020000.html"
            "de-report-$($deHost.Name)-20250603-020000.json"
            "de-report-$($deHost.Name)-20250604-020000.html"
            "de-report-$($deHost.Name)-20250604-020000.json"
        )
        (Get-DEPageStats -DEHost $deHost -Domain vm1).SharedPages | Should -Be 40 -Because 'the script scanned first'
        $json = Get-Content -LiteralPath (Join-Path $folder $names[-1]) -Raw | ConvertFrom-Json
        @($json.domains).domain | Should -Be 'vm1', 'vm2'
    }
}

Describe 'Get-FleetPlacement.ps1' {
    # The placement part, from fingerprints made here; gathering them over SSH (-Session) is tested in
    # Fleet.Remoting.Tests.ps1, against real sshd daemons.
    BeforeAll {
        $script = Join-Path $Examples 'Get-FleetPlacement.ps1'
        $keyPath = Join-Path $TestDrive 'fleet.key'
        $null = New-DEFleetKey -Path $keyPath
        # Two hosts of two domains each; the four share 40 of their 50 pages, so one host for all saves memory.
        $hostA = Connect-DEHost -Name (New-TestHostName) -PassThru
        $hostB = Connect-DEHost -Name (New-TestHostName) -PassThru
        $domains = @(
            New-DEDomain -DEHost $hostA -Name a1 -MemorySize 256KB
            New-DEDomain -DEHost $hostA -Name a2 -MemorySize 256KB
            New-DEDomain -DEHost $hostB -Name b1 -MemorySize 256KB
            New-DEDomain -DEHost $hostB -Name b2 -MemorySize 256KB
        )
        Initialize-Domains $domains
        $fingerprints = @(Get-DEFingerprint -DEHost $hostA -FleetKeyPath $keyPath) + @(Get-DEFingerprint -DEHost $hostB -FleetKeyPath $keyPath)
        $capacity = @{ $hostA.Name = 64MB; $hostB.Name = 64MB }
        $direct = Get-DEPlacement -Fingerprint $fingerprints -HostCapacity $capacity
    }

    AfterAll {
        $hostA, $hostB | Where-Object { $_ } | Disconnect-DEHost -Confirm:$false
    }

    It 'has help: a synopsis, every parameter described, examples' {
        $help = Get-Help $script -Full
        "$($help.Synopsis)" | Should -BeLike 'Fleet placement in one call*' -Because 'the comment-based help is the script''s (not the generated syntax)'
        $parameters = (Get-Command $script).Parameters.Keys | Where-Object { $_ -notin [Management.Automation.PSCmdlet]::CommonParameters }
        foreach ($name in $parameters) {
            (@($help.parameters.parameter | Where-Object Name -EQ $name).description.Text -join ' ').Trim() | Should -Not -BeNullOrEmpty -Because "-$name is described"
        }
        @($help.examples.example).Count | Should -BeGreaterOrEqual 2
    }

    It 'places the fingerprints of -Fingerprint: every domain once, all on one host, as Get-DEPlacement does' {
        $fingerprints.Count | Should -Be 4
        $placement = & $script -Fingerprint $fingerprints -HostCapacity $capacity
        $placement.PSObject.TypeNames | Should -Contain 'DifferenceEngine.Fleet.PlacementResult'
        @($placement.Assignments.Domain | Sort-Object) | Should -Be 'a1', 'a2', 'b1', 'b2'
        $placement.Unplaced | Should -BeNullOrEmpty
        $placement.CurrentHostsUsed | Should -Be 2
        $placement.HostsUsed | Should -Be 1
        $placement.SavedBytes | Should -BeGreaterThan 0 -Because 'the domains of the two hosts share most of their pages'
        $placement.PredictedUsedBytes | Should -Be $direct.PredictedUsedBytes
        @($placement.Assignments | Where-Object Moved).Count | Should -Be 2
    }

    It 'places fingerprints piped in, also as they come back from JSON' {
        $piped = $fingerprints | & $script -HostCapacity $capacity -Goal LeastMemory
        $piped.Goal | Should -Be 'LeastMemory'
        $piped.Assignments.Count | Should -Be 4
        $fromJson = $fingerprints | ConvertTo-Json | ConvertFrom-Json | & $script -HostCapacity $capacity
        @($fromJson.Assignments.Domain | Sort-Object) | Should -Be 'a1', 'a2', 'b1', 'b2'
        $fromJson.PredictedUsedBytes | Should -Be $direct.PredictedUsedBytes
    }

    It 'writes a short report with -AsReport: the totals, the moves and the hosts' {
        $lines = @(& $script -Fingerprint $fingerprints -HostCapacity $capacity -AsReport)
        foreach ($line in $lines) { $line | Should -BeOfType ([string]) }
        $text = $lines -join "`n"
        $text | Should -Match 'Placement \(FewestHosts\) of 4 domains'
        $text | Should -Match 'hosts used: 1 \(now 2\)'
        $text | Should -Match 'moves: +2'
        foreach ($move in $direct.Assignments | Where-Object Moved) {
            $text | Should -Match ('(?m)^{0}\s+default\s+{1}\s+{2}\s' -f $move.Domain, [regex]::Escape($move.CurrentHostName), [regex]::Escape($move.HostName))
        }
        foreach ($h in $capacity.Keys) { $text | Should -Match ('(?m)^{0}\s+\d+\s+64\.0 MiB' -f [regex]::Escape($h)) }
    }

    It 'writes DomainDoesNotFit for each domain that fits on no host' {
        $placement = & $script -Fingerprint $fingerprints -HostCapacity @{ $hostA.Name = 4KB } -ErrorVariable err -ErrorAction SilentlyContinue
        @($err).Count | Should -Be 4
        foreach ($e in $err) { $e.FullyQualifiedErrorId | Should -BeLike 'DomainDoesNotFit,*' }
        # Each as host/domain: the host it runs on today, and its name.
        @($placement.Unplaced | Sort-Object) | Should -Be @("$($hostA.Name)/a1", "$($hostA.Name)/a2", "$($hostB.Name)/b1", "$($hostB.Name)/b2" | Sort-Object)
        @($err.TargetObject | Sort-Object) | Should -Be @($placement.Unplaced | Sort-Object)
        $placement.Assignments | Should -BeNullOrEmpty
    }

    It 'stops when given nothing to place, saying what to give' {
        { & $script -HostCapacity $capacity } | Should -Throw -ErrorId 'FleetPlacementNothingToPlace,*' -ExpectedMessage '*-HostName*-Session*-Fingerprint*'
        # One source of fingerprints: hosts to gather them from, sessions, or fingerprints.
        { & $script -HostName a -Fingerprint $fingerprints -HostCapacity $capacity } | Should -Throw -ErrorId 'AmbiguousParameterSet,*'
    }

    It 'writes an error naming each host of -HostName it cannot reach, and stops when none answers' {
        # Two ports of 127.0.0.1 bound but not listening, and ssh a stand-in that is refused on them after reading
        # PowerShell's first packet (not the real ssh: see Enable-DETestRefusingSsh in SshHosts.ps1 for PowerShell's race).
        . (Join-Path $PSScriptRoot 'SshHosts.ps1')
        $refusing = @(1..2 | ForEach-Object { New-DETestRefusingPort })
        $standIn = $null
        try {
            $standIn = Enable-DETestRefusingSsh -Port $refusing.Port
            $targets = @($refusing | ForEach-Object { "127.0.0.1:$($_.Port)" })
            $err = @()
            $failure = $null
            try {
                & $script -HostName $targets -HostCapacity $capacity -SshOption @{ BatchMode = 'yes'; LogLevel = 'QUIET' } -ErrorVariable err -ErrorAction SilentlyContinue
            }
            catch {
                $failure = $_
            }
            $failure | Should -Not -BeNullOrEmpty
            $failure.FullyQualifiedErrorId | Should -BeLike 'FleetPlacementNoFingerprints,*'
            "$failure" | Should -BeLike '*every host failed*'
            # One error a host, and nothing else but the terminating error (New-PSSession's own errors do not leak out).
            $hostErrors = @($err | Where-Object { $_ -is [Management.Automation.ErrorRecord] -and $_.FullyQualifiedErrorId -notlike 'FleetPlacementNoFingerprints,*' })
            @($err).Count | Should -Be 3
            $hostErrors.Count | Should -Be 2
            @($hostErrors.TargetObject | Sort-Object) | Should -Be @($targets | Sort-Object)
            foreach ($e in $hostErrors) {
                "$e" | Should -BeLike "Host $($e.TargetObject): *"
                $e.CategoryInfo.Category | Should -Be 'OpenError'
            }
            foreach ($r in $refusing) { Test-DETestSshRefused -StandIn $standIn -Port $r.Port | Should -BeTrue }
        }
        finally {
            Disable-DETestRefusingSsh $standIn
            $refusing.Socket | ForEach-Object { $_.Dispose() }
        }
    }
}

Describe 'HostPolicy.Tests.ps1' {
    BeforeAll {
        $testFile = Join-Path $Examples 'HostPolicy.Tests.ps1'
        # Pester cannot run inside Pester: the policy test runs in a child pwsh, against a host built there.
        $pwsh = [Environment]::ProcessPath
        $pwshArgs = @(if ([IO.Path]::GetFileNameWithoutExtension($pwsh) -eq 'dotnet') { Join-Path $PSHOME 'pwsh.dll' })
        $runner = Join-Path $TestDrive 'Run-HostPolicy.ps1'
        Set-Content -LiteralPath $runner -Value @'
param([string]$PesterPath, [string]$ModulePath, [string]$TestFile, [string]$Db2Group)
$ErrorActionPreference = 'Stop'
Import-Module $PesterPath
Import-Module $ModulePath
$null = Connect-DEHost -Name policy-check
$null = New-DEDomain -Name secure-db1 -MemorySize 64KB -TrustGroup secure-db1
$null = New-DEDomain -Name secure-db2 -MemorySize 64KB -TrustGroup $Db2Group
# Two web VMs whose 4 MiB are all zero pages (an image of them): sharing saves nearly all of them, metadata paid.
$image = Join-Path $PSScriptRoot 'zero.img'
[IO.File]::WriteAllBytes($image, [byte[]]::new(4MB))
$null = New-DEDomain -Name shop-web1 -Path $image -TrustGroup shop -EnableSharing
$null = New-DEDomain -Name shop-web2 -Path $image -TrustGroup shop -EnableSharing
$null = Invoke-DEScan -UntilStable
$container = New-PesterContainer -Path $TestFile -Data @{ Tenant = 'secure'; SharingExpected = 'shop-*'; MinimumSavingsPercent = 50 }
$result = Invoke-Pester -Container $container -PassThru -Output None
"RESULT $($result.PassedCount) $($result.FailedCount) $($result.FailedBlocksCount + $result.FailedContainersCount)"
'@
        function Invoke-HostPolicyTest([string]$Db2Group) {
            $output = & $pwsh @pwshArgs -NoProfile -NonInteractive -File $runner `
                -PesterPath (Get-Module Pester).Path -ModulePath $env:DE_MODULE_PATH -TestFile $testFile -Db2Group $Db2Group 2>&1
            $line = @($output | Where-Object { "$_" -like 'RESULT *' })
            $line | Should -HaveCount 1 -Because ($output -join "`n")
            $passed, $failed, $broken = ("$($line[0])" -split ' ')[1..3] | ForEach-Object { [int]$_ }
            [pscustomobject]@{ Passed = $passed; Failed = $failed; Broken = $broken }
        }
    }

    It 'passes on a host that follows the policy' {
        $result = Invoke-HostPolicyTest -Db2Group 'secure-db2'
        $result.Failed | Should -Be 0
        $result.Broken | Should -Be 0
        $result.Passed | Should -Be 6
    }

    It 'fails on a host where a tenant shares a trust group with another' {
        $result = Invoke-HostPolicyTest -Db2Group 'shop'
        $result.Failed | Should -Be 2 -Because 'secure-db2 is not alone in its group, and the group mixes tenants'
        $result.Broken | Should -Be 0
    }
}
