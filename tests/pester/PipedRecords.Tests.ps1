# Records piped to the cmdlets that take domains (from an audit, each failed before the fix):
#  - Set-DEPolicy took TrustGroup and CompressionAlgorithm by property name from any piped object, so a page-stats row
#    (or a CSV of one) set them back to what it recorded; only Get-DEPolicy output and rows of its columns carry values.
#  - A page-stats row or policy of a removed domain acted on a new domain of the same name (only Remove-DEDomain checked
#    the record's id); it is now DomainRemoved, per item.
#  - A removed Domain object was "DomainNotFound: No domain named ... exists on this host", false when one was made
#    again; it is now DomainRemoved, the engine's id (Get-DEPage already wrote it for a domain removed mid-way).
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    $hostName = "pester-pipedrecords-$([guid]::NewGuid().ToString('n').Substring(0, 8))"
    $deHost = Connect-DEHost -Name $hostName -PassThru

    # What remoting does to an object: serialize and deserialize (Deserialized.* property bags).
    function ConvertTo-RoundTrip($InputObject) {
        [Management.Automation.PSSerializer]::Deserialize([Management.Automation.PSSerializer]::Serialize($InputObject))
    }

    # A domain removed and made again under its name: the new one has another id.
    function Reset-TestDomain([string]$Name) {
        Remove-DEDomain -Name $Name -Confirm:$false
        $null = New-DEDomain -Name $Name -MemorySize 64KB
    }
}

AfterAll {
    if ($deHost) { $deHost | Disconnect-DEHost -Confirm:$false }
}

Describe 'Set-DEPolicy takes policy values only from policies' {
    BeforeEach {
        Get-DEDomain -DEHost $deHost | Remove-DEDomain -Confirm:$false
        $null = New-DEDomain -Name pr1 -MemorySize 64KB
        $null = New-DEDomain -Name pr2 -MemorySize 64KB
    }

    It 'a stale page-stats row changes only the value given, not the codec set since' {
        $before = Get-DEPageStats pr1
        Set-DEPolicy pr1 -CompressionAlgorithm Zstd
        $after = $before | Set-DEPolicy -C4Sweeps 3 -PassThru
        $after.C4Sweeps | Should -Be 3
        $after.CompressionAlgorithm | Should -Be 'Zstd'
    }

    It 'a stale page-stats row does not set the trust group back' {
        $before = Get-DEPageStats pr1
        Set-DEPolicy pr1 -TrustGroup blue
        $before | Set-DEPolicy -PatchThreshold 1024 -ErrorAction Stop
        $p = Get-DEPolicy pr1
        $p.TrustGroup | Should -Be 'blue'
        $p.PatchThreshold | Should -Be 1024
    }

    It 'a page-stats row gives no value: without one on the command line it is SetDEPolicyNoValue, saying why' {
        $err = { Get-DEPageStats pr1 | Set-DEPolicy } | Should -Throw -ErrorId 'SetDEPolicyNoValue,DifferenceEngine.Commands.SetDEPolicyCommand' -PassThru
        $err.Exception.Message | Should -Match 'DomainPageStats is not a policy'
    }

    It 'a CSV of page stats changes only the value given' {
        $csv = Join-Path $TestDrive 'pagestats.csv'
        Get-DEPageStats pr1, pr2 | Export-Csv -LiteralPath $csv
        Set-DEPolicy pr1, pr2 -TrustGroup green -CompressionAlgorithm WKdm
        Import-Csv -LiteralPath $csv | Set-DEPolicy -PatchThreshold 700 -ErrorAction Stop
        foreach ($p in Get-DEPolicy pr1, pr2) {
            $p.TrustGroup | Should -Be 'green'
            $p.CompressionAlgorithm | Should -Be 'WKdm'
            $p.PatchThreshold | Should -Be 700
        }
    }

    It 'page stats back through remoting change only the value given' {
        $row = ConvertTo-RoundTrip (Get-DEPageStats pr1)
        Set-DEPolicy pr1 -TrustGroup red
        $row | Set-DEPolicy -C4Sweeps 6 -ErrorAction Stop
        (Get-DEPolicy pr1).TrustGroup | Should -Be 'red'
        (Get-DEPolicy pr1).C4Sweeps | Should -Be 6
    }

    It 'Get-DEPolicy output, live or back through remoting, still sets its values' {
        Set-DEPolicy pr1 -TrustGroup blue -C4Sweeps 4
        $policy = Get-DEPolicy pr1
        Set-DEPolicy pr1 -TrustGroup default -C4Sweeps 9
        $policy | Set-DEPolicy -ErrorAction Stop
        (Get-DEPolicy pr1).TrustGroup | Should -Be 'blue'
        Set-DEPolicy pr1 -TrustGroup default
        ConvertTo-RoundTrip $policy | Set-DEPolicy -ErrorAction Stop
        (Get-DEPolicy pr1).TrustGroup | Should -Be 'blue'
        (Get-DEPolicy pr1).C4Sweeps | Should -Be 4
    }

    It 'a CSV of Get-DEPolicy, and a row of only its columns, set their values' {
        $csv = Join-Path $TestDrive 'policy.csv'
        Get-DEPolicy pr1 | Export-Csv -LiteralPath $csv
        $rows = Import-Csv -LiteralPath $csv
        $rows[0].TrustGroup = 'yellow'
        $rows | Set-DEPolicy -ErrorAction Stop
        (Get-DEPolicy pr1).TrustGroup | Should -Be 'yellow'
        [pscustomobject]@{ Domain = 'pr2'; PatchThreshold = 333 } | Set-DEPolicy -ErrorAction Stop
        (Get-DEPolicy pr2).PatchThreshold | Should -Be 333
    }

    It 'a row with a column Get-DEPolicy does not write gives no value' {
        { [pscustomobject]@{ Domain = 'pr2'; TrustGroup = 'x'; PageCount = 16 } | Set-DEPolicy } |
            Should -Throw -ErrorId 'SetDEPolicyNoValue,DifferenceEngine.Commands.SetDEPolicyCommand'
        (Get-DEPolicy pr2).TrustGroup | Should -Be 'default'
    }
}

Describe 'A piped record of a domain removed since does not act on a new domain of its name' {
    BeforeEach {
        Get-DEDomain -DEHost $deHost | Remove-DEDomain -Confirm:$false
        $null = New-DEDomain -Name rr1 -MemorySize 64KB
        $null = New-DEDomain -Name rr2 -MemorySize 64KB
    }

    It '<Case> | Set-DEPolicy is DomainRemoved for that record, and the next record goes on' -ForEach @(
        @{ Case = 'page stats'; Take = { Get-DEPageStats rr1 } }
        @{ Case = 'a policy'; Take = { Get-DEPolicy rr1 } }
    ) {
        $stale = & $Take
        Reset-TestDomain rr1
        $out = @($stale; Get-DEPageStats rr2) | Set-DEPolicy -C4Sweeps 7 -PassThru -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -Be 'DomainRemoved,DifferenceEngine.Commands.SetDEPolicyCommand'
        $err[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $err[0].Exception.Message | Should -Match 'has been removed'
        $err[0].Exception.Message | Should -Match ([regex]::Escape("host '$hostName'"))
        @($out).Domain | Should -Be 'rr2'
        (Get-DEPolicy rr1).C4Sweeps | Should -Not -Be 7
    }

    It 'stale <Case> | <Cmdlet> is DomainRemoved and outputs nothing for it' -ForEach @(
        @{ Case = 'page stats'; Cmdlet = 'Get-DEPageStats'; Take = { Get-DEPageStats rr1 } }
        @{ Case = 'a policy'; Cmdlet = 'Get-DEPageStats'; Take = { Get-DEPolicy rr1 } }
        @{ Case = 'page stats'; Cmdlet = 'Get-DEPolicy'; Take = { Get-DEPageStats rr1 } }
        @{ Case = 'a policy'; Cmdlet = 'Get-DEPolicy'; Take = { Get-DEPolicy rr1 } }
    ) {
        $stale = & $Take
        Reset-TestDomain rr1
        $out = $stale | & $Cmdlet -ErrorVariable err -ErrorAction SilentlyContinue
        $out | Should -BeNullOrEmpty
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -BeLike 'DomainRemoved,*'
    }

    It 'a record of a removed domain with no new one of its name is DomainRemoved too' {
        $stale = Get-DEPageStats rr1
        Remove-DEDomain rr1 -Confirm:$false
        $stale | Get-DEPageStats -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -Be 'DomainRemoved,DifferenceEngine.Commands.GetDEPageStatsCommand'
    }

    It '<Case> goes by name, as a CSV row does: its id may be of another process' -ForEach @(
        @{ Case = 'page stats back through remoting'; Take = { ConvertTo-RoundTrip (Get-DEPageStats rr1) } }
        @{ Case = 'a domain back through remoting'; Take = { ConvertTo-RoundTrip (Get-DEDomain rr1) } }
        @{ Case = 'a policy back through remoting'; Take = { ConvertTo-RoundTrip (Get-DEPolicy rr1) } }
    ) {
        $record = & $Take
        Reset-TestDomain rr1
        $out = @($record | Set-DEPolicy -C4Sweeps 7 -PassThru -ErrorAction Stop)
        $out.Domain | Should -Be 'rr1'
        (Get-DEPolicy rr1).C4Sweeps | Should -Be 7
    }

    It 'Get-DEPolicy saved with Export-Clixml restores the policies in a session whose domains have other ids' {
        Set-DEPolicy rr1 -C4Sweeps 5 -PatchThreshold 1000
        $file = Join-Path $TestDrive 'policies.xml'
        Get-DEPolicy rr1 | Export-Clixml -LiteralPath $file
        Reset-TestDomain rr1 # made again: another id, as in a new session
        Import-Clixml -LiteralPath $file | Set-DEPolicy -ErrorAction Stop
        $policy = Get-DEPolicy rr1
        $policy.C4Sweeps | Should -Be 5
        $policy.PatchThreshold | Should -Be 1000
    }

    It 'a custom row back through remoting, of only Get-DEPolicy''s columns, still sets its values' {
        $row = ConvertTo-RoundTrip ([pscustomobject]@{ Domain = 'rr1'; PatchThreshold = 333 })
        ($row | Set-DEPolicy -PassThru -ErrorAction Stop).PatchThreshold | Should -Be 333
    }

    It 'Remove-DEDomain still refuses a record back through remoting whose id is not the domain''s now, saying why' {
        $record = ConvertTo-RoundTrip (Get-DEPageStats rr1)
        Reset-TestDomain rr1
        $record | Remove-DEDomain -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -Be 'DomainRemoved,DifferenceEngine.Commands.RemoveDEDomainCommand'
        $err[0].Exception.Message | Should -Match 'or the record is of another session'
        Get-DEDomain rr1 | Should -Not -BeNullOrEmpty
    }

    It 'a CSV of names (Import-Csv) still goes by name' {
        $csv = Join-Path $TestDrive 'stats.csv'
        Get-DEPageStats rr1 | Export-Csv -LiteralPath $csv
        Reset-TestDomain rr1
        $rows = @(Import-Csv -LiteralPath $csv | Get-DEPageStats -ErrorAction Stop)
        $rows.Domain | Should -Be 'rr1'
        $rows.DomainId | Should -Be (Get-DEDomain rr1).Id
    }

    It 'a record of the domain as it is still acts on it' {
        (Get-DEPageStats rr1 | Set-DEPolicy -C4Sweeps 5 -PassThru -ErrorAction Stop).C4Sweeps | Should -Be 5
        (Get-DEPolicy rr1 | Get-DEPageStats -ErrorAction Stop).Domain | Should -Be 'rr1'
    }
}

Describe 'A removed Domain object is DomainRemoved, with a true message' {
    BeforeEach {
        Get-DEDomain -DEHost $deHost | Remove-DEDomain -Confirm:$false
        $domain = New-DEDomain -Name rd1 -MemorySize 64KB
        Reset-TestDomain rd1
    }

    It '<Name> says DomainRemoved, naming the host, not that no domain of that name exists' -ForEach @(
        @{ Name = 'Get-DEPageStats'; Run = { param($d) $d | Get-DEPageStats } }
        @{ Name = 'Get-DEPolicy'; Run = { param($d) $d | Get-DEPolicy } }
        @{ Name = 'Set-DEPolicy'; Run = { param($d) $d | Set-DEPolicy -C4Sweeps 3 } }
        @{ Name = 'Enable-DESharing'; Run = { param($d) $d | Enable-DESharing } }
        @{ Name = 'Invoke-DEScan'; Run = { param($d) $d | Invoke-DEScan -Passes 1 } }
        @{ Name = 'Read-DEGuestPage'; Run = { param($d) Read-DEGuestPage -Domain $d -Gfn 0 } }
    ) {
        $err = @(& $Run $domain 2>&1 | Where-Object { $_ -is [Management.Automation.ErrorRecord] })
        $err | Should -Not -BeNullOrEmpty
        $err[0].FullyQualifiedErrorId | Should -BeLike 'DomainRemoved,*'
        $err[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $err[0].Exception.Message | Should -Not -Match 'No domain named'
        $err[0].Exception.Message | Should -Match ([regex]::Escape("removed from host '$hostName'"))
        $err[0].Exception.Message | Should -Match "now is another \(id $((Get-DEDomain rd1).Id)\)"
    }
}
