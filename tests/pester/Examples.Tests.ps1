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
