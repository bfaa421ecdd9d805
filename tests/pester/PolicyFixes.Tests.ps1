# Set-DEPolicy's checks of values: before -WhatIf and -Confirm, and per piped row; a whole-host Invoke-DEScan that waits
# for another scan; Enable-DEPatching's warning for a domain that can find no reference.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $deHost = Connect-DEHost -Name "pester-policyfixes-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
}

AfterAll {
    $deHost | Disconnect-DEHost -Confirm:$false
}

Describe 'Set-DEPolicy checks values before -WhatIf and before a row changes anything' {
    BeforeAll {
        $null = New-DEDomain -Name pf1 -MemorySize 64KB
        $null = New-DEDomain -Name pf2 -MemorySize 64KB
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'refuses a value out of range with -WhatIf, printing no What if' {
        { Set-DEPolicy -Domain pf1 -C4Sweeps 99 -WhatIf -ErrorAction Stop } |
            Should -Throw -ErrorId 'PolicyC4SweepsInvalid,DifferenceEngine.Commands.SetDEPolicyCommand'
    }

    It 'stops piped rows at the bad row: the rows before it stay changed, the bad row changes nothing' {
        $rows = @(
            [pscustomobject]@{ Domain = 'pf1'; C4Sweeps = 4 }
            [pscustomobject]@{ Domain = 'pf2'; C4Sweeps = 99 }
        )
        { $rows | Set-DEPolicy -ErrorAction Stop } |
            Should -Throw -ErrorId 'PolicyC4SweepsInvalid,DifferenceEngine.Commands.SetDEPolicyCommand'
        (Get-DEPolicy -Domain pf1).C4Sweeps | Should -Be 4
        (Get-DEPolicy -Domain pf2).C4Sweeps | Should -Not -Be 99
    }
}

Describe 'Set-DEPolicy -HostPolicy checks values before -WhatIf and -Confirm' {
    It 'refuses <Name> out of range with -WhatIf, changing nothing' -ForEach @(
        @{ Name = 'SimilarityKeys'; Values = @{ SimilarityKeys = 99 }; ErrorId = 'PolicySimilarityKeysInvalid' }
        @{ Name = 'SimilarityBlocksPerKey'; Values = @{ SimilarityBlocksPerKey = 0 }; ErrorId = 'PolicySimilarityBlocksInvalid' }
        @{ Name = 'SimilarityCandidates'; Values = @{ SimilarityCandidates = 9 }; ErrorId = 'PolicySimilarityCandidatesInvalid' }
        @{ Name = 'CompactionThreshold'; Values = @{ CompactionThreshold = 2 }; ErrorId = 'PolicyCompactionThresholdInvalid' }
        @{ Name = 'a low watermark over the high one'; Values = @{ LowWatermark = 0.95 }; ErrorId = 'PolicyWatermarksInvalid' }
    ) {
        # Before, -WhatIf printed What if for these and returned: no error until the call was made for real.
        $before = Get-DEPolicy -HostPolicy | ConvertTo-Json -Compress
        { Set-DEPolicy -HostPolicy @Values -WhatIf -ErrorAction Stop } |
            Should -Throw -ErrorId "$ErrorId,DifferenceEngine.Commands.SetDEPolicyCommand"
        Get-DEPolicy -HostPolicy | ConvertTo-Json -Compress | Should -Be $before
    }

    It 'says which watermark was not given but taken from the host' {
        { Set-DEPolicy -HostPolicy -LowWatermark 0.95 -ErrorAction Stop } |
            Should -Throw -ExpectedMessage "*that would make low 0.95 and high * (the host's now).*"
    }

    It 'takes values in range with -WhatIf without an error, changing nothing' {
        $before = Get-DEPolicy -HostPolicy | ConvertTo-Json -Compress
        Set-DEPolicy -HostPolicy -SimilarityKeys 3 -WhatIf -ErrorAction Stop 6>$null
        Get-DEPolicy -HostPolicy | ConvertTo-Json -Compress | Should -Be $before
    }
}

Describe 'Invoke-DEScan over a whole host while another scan holds it' {
    BeforeAll {
        # Big enough that a scan of 100,000 passes over it takes long (about 100 s on the 2-core machine of session 35,
        # against the few seconds this test needs): the first scan below is still running when the test stops it, which
        # the test checks rather than assumes.
        $null = New-DEDomain -Name held1 -MemorySize 64MB -EnableSharing
        $null = 0..4095 | ForEach-Object { Write-DEGuestPage -Domain held1 -Gfn ($_ * 4) -Offset 0 -Data ([BitConverter]::GetBytes([long]$_)) }
        $null = New-DEDomain -Name held2 -MemorySize 64KB -EnableSharing
    }

    AfterAll {
        Get-DEDomain held* | Remove-DEDomain -Confirm:$false
    }

    It 'says in its progress that it waits, and leaves out a domain removed meanwhile' {
        $first = [powershell]::Create()
        $second = [powershell]::Create()
        try {
            $null = $first.AddScript({
                    param($module, $target)
                    Import-Module $module
                    Invoke-DEScan -DEHost $target -Domain held1 -Passes 100000
                }).AddArgument($env:DE_MODULE_PATH).AddArgument($deHost)
            $null = $first.BeginInvoke()
            Wait-FirstProgress $first
            # The whole host, no -Domain: it takes the host's domains as they are once it holds the scan lock.
            $null = $second.AddScript({
                    param($module, $target)
                    Import-Module $module
                    Invoke-DEScan -DEHost $target -Passes 1
                }).AddArgument($env:DE_MODULE_PATH).AddArgument($deHost)
            $async = $second.BeginInvoke()
            Wait-FirstProgress $second
            $second.Streams.Progress[0].StatusDescription |
                Should -Be "Waiting for another scan of host '$($deHost.Name)' to end (another Invoke-DEScan, or the engine's background pass)"
            Remove-DEDomain -Name held2 -Confirm:$false
            $first.InvocationStateInfo.State | Should -Be 'Running' -Because 'the first scan must still hold the lock'
            $first.Stop()
            $result = $second.EndInvoke($async)
            $second.Streams.Error | Should -BeNullOrEmpty
            $result.Domains | Should -Be @('held1')
            $result.Passes | Should -Be 1
        }
        finally {
            $first.Dispose()
            $second.Dispose()
        }
    }
}

Describe 'Enable-DEPatching warns when no domain of the trust group gives references' {
    AfterEach {
        Get-DEDomain ref* | Remove-DEDomain -Confirm:$false
    }

    It 'warns for a patching-only domain alone in its trust group, from Enable-DEPatching and New-DEDomain' {
        $null = New-DEDomain -Name ref1 -MemorySize 64KB -TrustGroup lonely
        Enable-DEPatching -Domain ref1 -WarningVariable warned -WarningAction SilentlyContinue
        $warned.Count | Should -Be 1
        "$($warned[0])" | Should -Be ("Domain 'ref1': no domain of trust group 'lonely' has sharing on, and only such a domain gives " +
            "patch references: this domain's pages are not patched until one does (Enable-DESharing).")
        $null = New-DEDomain -Name ref2 -MemorySize 64KB -TrustGroup lonely -EnablePatching -WarningVariable created -WarningAction SilentlyContinue
        $created.Count | Should -Be 1
        "$($created[0])" | Should -BeLike "Domain 'ref2': no domain of trust group 'lonely' has sharing on*"
    }

    It 'does not warn once a domain of the same trust group shares, nor for a domain that shares itself' {
        $null = New-DEDomain -Name ref3 -MemorySize 64KB -TrustGroup together -EnableSharing
        $null = New-DEDomain -Name ref4 -MemorySize 64KB -TrustGroup together
        $null = New-DEDomain -Name ref5 -MemorySize 64KB -TrustGroup elsewhere -EnableSharing
        Enable-DEPatching -Domain ref4, ref5 -WarningVariable warned -WarningAction SilentlyContinue
        $warned.Count | Should -Be 0
        # A sharing domain of another trust group gives this one nothing.
        $null = New-DEDomain -Name ref6 -MemorySize 64KB -TrustGroup apart
        Enable-DEPatching -Domain ref6 -WarningVariable apart -WarningAction SilentlyContinue
        $apart.Count | Should -Be 1
    }
}
