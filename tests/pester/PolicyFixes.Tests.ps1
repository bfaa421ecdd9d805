# Set-DEPolicy's checks of values: before -WhatIf and -Confirm, and per piped row.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
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
