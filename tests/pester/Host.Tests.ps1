# Connect-DEHost, Get-DEHost, Disconnect-DEHost, Get-DEHostStats and the host every cmdlet falls back on.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop

    # Test hosts get names no other test file uses, so leftovers cannot collide.
    function New-TestHostName { "pester-host-$([guid]::NewGuid().ToString('n').Substring(0, 8))" }
}

Describe 'Connect-DEHost' {
    BeforeAll {
        $name = New-TestHostName
        $deHost = Connect-DEHost -Name $name -MemoryLimit 2GB -PassThru
    }

    AfterAll {
        $deHost | Disconnect-DEHost -Confirm:$false
    }

    It 'returns the host with -PassThru, connected and with the limit given' {
        $deHost | Should -BeOfType ([DifferenceEngine.Hosting.DEHost])
        $deHost.Name | Should -Be $name
        $deHost.IsConnected | Should -BeTrue
        $deHost.MemoryLimitBytes | Should -Be 2GB
    }

    It 'makes the new host current' {
        (Get-DEHost -Current).Name | Should -Be $name
        $deHost.IsCurrent | Should -BeTrue
    }

    It 'outputs nothing without -PassThru' {
        $other = New-TestHostName
        try {
            Connect-DEHost -Name $other | Should -BeNullOrEmpty
        }
        finally {
            Get-DEHost -Name $other | Disconnect-DEHost -Confirm:$false
        }
    }

    It 'refuses a second host with the same name (HostExists), a failure -ErrorAction decides on' {
        { Connect-DEHost -Name $name -ErrorAction Stop } | Should -Throw -ErrorId 'HostExists,DifferenceEngine.Commands.ConnectDEHostCommand'
        @(Get-DEHost -Name $name).Count | Should -Be 1
        # Non-terminating: -ErrorAction SilentlyContinue silences it, -ErrorVariable still gets it.
        { Connect-DEHost -Name $name -ErrorAction SilentlyContinue -ErrorVariable taken } | Should -Not -Throw
        Connect-DEHost -Name $name -ErrorAction SilentlyContinue -ErrorVariable taken
        $taken[0].FullyQualifiedErrorId | Should -Be 'HostExists,DifferenceEngine.Commands.ConnectDEHostCommand'
        $taken[0].CategoryInfo.Category | Should -Be 'ResourceExists'
        @(Get-DEHost -Name $name).Count | Should -Be 1
    }

    It 'refuses a memory limit below one page (MemoryLimitInvalid)' {
        { Connect-DEHost -Name (New-TestHostName) -MemoryLimit 100 } |
            Should -Throw -ErrorId 'MemoryLimitInvalid,DifferenceEngine.Commands.ConnectDEHostCommand'
    }

    It 'refuses a swap path of spaces (SwapPathInvalid), creating nothing' {
        Push-Location $TestDrive
        try {
            { Connect-DEHost -Name (New-TestHostName) -MemoryLimit 1MB -SwapPath ' ' } |
                Should -Throw -ErrorId 'SwapPathInvalid,DifferenceEngine.Commands.ConnectDEHostCommand'
            Get-ChildItem -LiteralPath $TestDrive -Force | Where-Object Name -Match '^\s+$' | Should -BeNullOrEmpty
        }
        finally {
            Pop-Location
        }
    }

    It 'refuses host names with wildcards, surrounding spaces or control characters (HostNameInvalid)' -ForEach @(
        @{ Name = 'a*b' }, @{ Name = 'lab?' }, @{ Name = ' lab' }, @{ Name = "la`tb" }
    ) {
        { Connect-DEHost -Name $Name } | Should -Throw -ErrorId 'HostNameInvalid,DifferenceEngine.Commands.ConnectDEHostCommand'
    }

    It 'says a name of only spaces is only white space, not empty' {
        { Connect-DEHost -Name '  ' } | Should -Throw -ExpectedMessage '*it is only white space*'
    }

    It 'puts crash journals where -JournalPath says, resolved like other paths, and needs the folder (JournalDirectoryNotFound)' {
        $journals = New-Item -ItemType Directory -Path (Join-Path $TestDrive 'journals')
        Push-Location $TestDrive
        try {
            $h = Connect-DEHost -Name (New-TestHostName) -JournalPath ./journals -PassThru
            $h.JournalDirectory | Should -Be $journals.FullName
            $h | Disconnect-DEHost -Confirm:$false
        }
        finally {
            Pop-Location
        }
        $err = { Connect-DEHost -Name (New-TestHostName) -JournalPath (Join-Path $TestDrive 'missing') } |
            Should -Throw -ErrorId 'JournalDirectoryNotFound,DifferenceEngine.Commands.ConnectDEHostCommand' -PassThru
        $err.CategoryInfo.Category | Should -Be 'ObjectNotFound'
        # A file is not a folder that is missing.
        $file = New-Item -ItemType File -Path (Join-Path $TestDrive 'a-file')
        $err = { Connect-DEHost -Name (New-TestHostName) -JournalPath $file.FullName } |
            Should -Throw -ErrorId 'JournalPathNotDirectory,DifferenceEngine.Commands.ConnectDEHostCommand' -PassThru
        $err.CategoryInfo.Category | Should -Be 'InvalidArgument'
        # Without -JournalPath: the swap file's folder, else /var/tmp.
        $d = Connect-DEHost -Name (New-TestHostName) -PassThru
        $d.JournalDirectory | Should -Be '/var/tmp'
        $d | Disconnect-DEHost -Confirm:$false
    }

    It 'connects nothing with -WhatIf' {
        $other = New-TestHostName
        Connect-DEHost -Name $other -WhatIf
        Get-DEHost -Name "$other*" | Should -BeNullOrEmpty
        (Get-DEHost -Current).Name | Should -Be $name
    }
}

Describe 'Get-DEHost' {
    BeforeAll {
        $first = Connect-DEHost -Name (New-TestHostName) -PassThru
        $second = Connect-DEHost -Name (New-TestHostName) -PassThru
    }

    AfterAll {
        $first, $second | Disconnect-DEHost -Confirm:$false
    }

    It 'lists every connected host, oldest first' {
        $names = (Get-DEHost).Name
        $names | Should -Contain $first.Name
        $names | Should -Contain $second.Name
        [array]::IndexOf($names, $first.Name) | Should -BeLessThan ([array]::IndexOf($names, $second.Name))
    }

    It 'takes wildcards' {
        (Get-DEHost -Name ($first.Name.Substring(0, 15) + '*')).Name | Should -Contain $first.Name
    }

    It 'writes HostNotFound for a name without wildcards that matches nothing' {
        Get-DEHost -Name 'no-such-host' -ErrorVariable err -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $err[0].FullyQualifiedErrorId | Should -BeLike 'HostNotFound,*'
    }

    It 'shows the host connected last as current' {
        (Get-DEHost -Current).Name | Should -Be $second.Name
        $first.IsCurrent | Should -BeFalse
    }

    It 'lists each host once, however many of the names match it' {
        $found = @(Get-DEHost -Name $first.Name, ($first.Name.Substring(0, 15) + '*'), '*')
        @($found | Where-Object Name -EQ $first.Name).Count | Should -Be 1
        @($found | Where-Object Name -EQ $second.Name).Count | Should -Be 1
    }

    It 'finds a host whose name holds a backtick by that name' {
        $odd = Connect-DEHost -Name ("$(New-TestHostName)``x") -PassThru
        try {
            (Get-DEHost -Name $odd.Name -ErrorAction Stop).Name | Should -Be $odd.Name
            # Escaped as a wildcard pattern would be ('a``b' for a`b): still that host.
            (Get-DEHost -Name ($odd.Name -replace '`', '``') -ErrorAction Stop).Name | Should -Be $odd.Name
        }
        finally {
            $odd | Disconnect-DEHost -Confirm:$false
        }
    }
}

Describe 'Disconnect-DEHost' {
    It 'disconnects the current host and the one connected before becomes current' {
        $before = Connect-DEHost -Name (New-TestHostName) -PassThru
        $after = Connect-DEHost -Name (New-TestHostName) -PassThru
        try {
            Disconnect-DEHost -Confirm:$false
            $after.IsConnected | Should -BeFalse
            (Get-DEHost -Current).Name | Should -Be $before.Name
        }
        finally {
            $before, $after | Disconnect-DEHost -Confirm:$false
        }
    }

    It 'takes hosts from the pipeline' {
        $hosts = 1..2 | ForEach-Object { Connect-DEHost -Name (New-TestHostName) -PassThru }
        $hosts | Disconnect-DEHost -Confirm:$false
        $hosts.IsConnected | Should -Not -Contain $true
        (Get-DEHost).Name | Should -Not -Contain $hosts[0].Name
    }

    It 'discards the domains of the host' {
        $h = Connect-DEHost -Name (New-TestHostName) -PassThru
        $d = New-DEDomain -Name d1 -MemorySize 1MB -DEHost $h
        $h | Disconnect-DEHost -Confirm:$false
        $d.IsRemoved | Should -BeTrue
    }

    It 'leaves objects readable, but every cmdlet given the old host or its domains says HostDisconnected' {
        $h = Connect-DEHost -Name (New-TestHostName) -PassThru
        $d = New-DEDomain -DEHost $h -Name kept -MemorySize 1MB
        $h | Disconnect-DEHost -Confirm:$false
        $h.Name | Should -Not -BeNullOrEmpty
        $d.Name | Should -Be 'kept'
        foreach ($call in @(
                { Get-DEDomain -DEHost $h -ErrorAction Stop }
                { Get-DEDomain -DEHost $h -Name kept -ErrorAction Stop }
                { Get-DEPageStats -DEHost $h -ErrorAction Stop }
                { Get-DEHostStats -DEHost $h -ErrorAction Stop }
                { Get-DEEngine -DEHost $h -ErrorAction Stop }
                { Invoke-DEScan -DEHost $h -ErrorAction Stop }
                { New-DEDomain -DEHost $h -Name again -MemorySize 1MB -ErrorAction Stop }
                { $d | Get-DEPageStats -ErrorAction Stop }
                { $d | Enable-DESharing -ErrorAction Stop }
            )) {
            $err = $call | Should -Throw -PassThru -Because $call.ToString()
            $err.FullyQualifiedErrorId | Should -BeLike 'HostDisconnected,*' -Because $call.ToString()
            $err.CategoryInfo.Category | Should -Be 'ConnectionError' -Because $call.ToString()
        }
        # Disconnecting it again is no error: there is nothing left to do.
        { $h | Disconnect-DEHost -Confirm:$false -ErrorAction Stop } | Should -Not -Throw
    }

    It 'changes nothing with -WhatIf' {
        $h = Connect-DEHost -Name (New-TestHostName) -PassThru
        try {
            $h | Disconnect-DEHost -WhatIf
            $h.IsConnected | Should -BeTrue
            (Get-DEHost).Name | Should -Contain $h.Name
        }
        finally {
            $h | Disconnect-DEHost -Confirm:$false
        }
    }
}

Describe 'Hosts by name' {
    BeforeAll {
        $script:lab = New-TestHostName
        $script:other = New-TestHostName
        $labHost = Connect-DEHost -Name $lab -PassThru
        $null = New-DEDomain -DEHost $labHost -Name web1 -MemorySize 1MB
        $null = New-DEDomain -DEHost $labHost -Name web2 -MemorySize 1MB
        $otherHost = Connect-DEHost -Name $other -PassThru   # current from here on
        $null = New-DEDomain -DEHost $otherHost -Name db1 -MemorySize 1MB
    }
    AfterAll {
        Get-DEHost -Name $lab, $other -ErrorAction Ignore | Disconnect-DEHost -Confirm:$false
    }

    It 'takes a host by name in -DEHost, not only the current one' {
        (Get-DEDomain -DEHost $lab).Name | Should -Be @('web1', 'web2')
        (Get-DEHostStats -DEHost $lab.ToUpperInvariant()).UntouchedBytes | Should -Be 2MB   # names ignore case
        (Get-DEDomain).Name | Should -Be 'db1'
    }

    It 'lists the domains of hosts piped from Get-DEHost' {
        (Get-DEHost -Name $lab | Get-DEDomain -ErrorVariable errors).Name | Should -Be @('web1', 'web2')
        $errors | Should -BeNullOrEmpty
        (Get-DEHost -Name $lab, $other | Get-DEDomain).Name | Should -Be @('web1', 'web2', 'db1')
    }

    It 'still takes piped strings as domain names, and piped domains as domains' {
        ('db1' | Get-DEDomain).Name | Should -Be 'db1'
        (Get-DEDomain -DEHost $lab -Name web2 | Get-DEDomain).Name | Should -Be 'web2'
    }

    It 'says which host name is unknown, as a bad argument' {
        $err = { Get-DEDomain -DEHost no-such-host -ErrorAction Stop } | Should -Throw -PassThru
        $err.FullyQualifiedErrorId | Should -Be 'CannotConvertArgumentNoMessage,DifferenceEngine.Commands.GetDEDomainCommand'
        $err.CategoryInfo.Category | Should -Be 'InvalidArgument'
        $err.Exception.Message | Should -BeLike "*No connected host is named 'no-such-host'*Get-DEHost lists*"
    }

    It 'completes host names for -DEHost of every cmdlet, and domain names of the host named there' {
        $commands = Get-Command -Module DifferenceEngine | Where-Object { $_.Parameters.ContainsKey('DEHost') }
        $commands.Count | Should -BeGreaterThan 20
        foreach ($c in $commands) {
            $completer = $c.Parameters.DEHost.Attributes | Where-Object { $_ -is [System.Management.Automation.ArgumentCompleterAttribute] }
            $completer.Type | Should -Be ([DifferenceEngine.Commands.HostNameCompleter]) -Because "$($c.Name) -DEHost completes host names"
        }
        $prefix = $lab.Substring(0, $lab.Length - 3)
        $line = "Get-DEDomain -DEHost $prefix"
        (TabExpansion2 $line $line.Length).CompletionMatches.CompletionText | Should -Contain $lab
        $line = "Get-DEHost -Name $prefix"
        (TabExpansion2 $line $line.Length).CompletionMatches.CompletionText | Should -Contain $lab
        $line = "Get-DEPageStats -DEHost $lab -Domain w"
        (TabExpansion2 $line $line.Length).CompletionMatches.CompletionText | Should -Be @('web1', 'web2')
    }

    It 'disconnects a host by name, also piped' {
        $third = New-TestHostName
        $null = Connect-DEHost -Name $third
        Disconnect-DEHost $third -Confirm:$false
        Get-DEHost -Name $third -ErrorAction Ignore | Should -BeNullOrEmpty
        $fourth = New-TestHostName
        $null = Connect-DEHost -Name $fourth
        $fourth | Disconnect-DEHost -Confirm:$false
        Get-DEHost -Name $fourth -ErrorAction Ignore | Should -BeNullOrEmpty
    }
}

Describe 'Piped objects carry their host' {
    # Two hosts with a domain of the same name: an object piped from one must act on that one, not on the current host.
    BeforeAll {
        $script:lab = New-TestHostName
        $script:other = New-TestHostName
        $null = Connect-DEHost -Name $lab
        $null = New-DEDomain -Name web1 -MemorySize 64KB
        $null = Connect-DEHost -Name $other   # current from here on
        $null = New-DEDomain -Name web1 -MemorySize 128KB
        function Get-FirstByte([string] $OnHost, [long] $Gfn) { (Read-DEGuestPage -DEHost $OnHost -Domain web1 -Gfn $Gfn).Bytes[0] }
    }
    AfterAll {
        Get-DEHost -Name $lab, $other -ErrorAction Ignore | Disconnect-DEHost -Confirm:$false
    }

    It 'writes a page read from one host back on that host' {
        (Get-DEHost -Current).Name | Should -Be $other
        $page = Read-DEGuestPage -DEHost $lab -Domain web1 -Gfn 3
        $page.Host | Should -Be $lab
        $page.Bytes[0] = 7
        $written = $page | Write-DEGuestPage -PassThru
        $written.Host | Should -Be $lab
        $written.Fault | Should -Be 'ZeroFill'
        Get-FirstByte $lab 3 | Should -Be 7
        Get-FirstByte $other 3 | Should -Be 0 -Because 'the current host''s web1 was not written'
    }

    It 'writes the pages Get-DEPage lists on their own host' {
        $pages = Get-DEPage -DEHost $lab -Domain web1 -Gfn 4, 5
        $pages.Host | Should -Be @($lab, $lab)
        $pages | Write-DEGuestPage -Data ([byte[]](9)) -ErrorVariable errors
        $errors | Should -BeNullOrEmpty
        Get-FirstByte $lab 4 | Should -Be 9
        Get-FirstByte $lab 5 | Should -Be 9
        Get-FirstByte $other 4 | Should -Be 0
    }

    It 'finds piped page stats, policies and domains on their own host' {
        $stats = Get-DEPageStats -DEHost $lab -Domain web1
        $stats.Host | Should -Be $lab
        ($stats | Get-DEPageStats).PageCount | Should -Be 16 -Because 'lab''s web1 has 16 pages, the current host''s 32'
        ($stats | Invoke-DEScan).PagesSwept | Should -Be 16
        (Get-DEPolicy -DEHost $lab -Domain web1 | Set-DEPolicy -C4Sweeps 6 -PassThru).Host | Should -Be $lab
        (Get-DEPolicy -DEHost $lab -Domain web1).C4Sweeps | Should -Be 6
        (Get-DEPolicy -DEHost $other -Domain web1).C4Sweeps | Should -Not -Be 6
        (Get-DEDomain -DEHost $lab -Name web1 | Get-DEPageStats).PageCount | Should -Be 16
    }

    It 'runs a workload and writes a report on the piped objects'' host' {
        $untouched = (Get-DEPageStats -DEHost $lab -Domain web1).UntouchedPages
        (Get-DEPageStats -DEHost $lab -Domain web1 | Invoke-DEWorkload -Operations 64 -WriteFraction 1).Operations | Should -Be 64
        (Get-DEPageStats -DEHost $lab -Domain web1).UntouchedPages | Should -BeLessThan $untouched -Because 'the workload wrote lab''s web1'
        (Get-DEPageStats -DEHost $other -Domain web1).UntouchedPages | Should -Be 32 -Because 'the current host''s web1 was never written'
        $json = Join-Path $TestDrive 'lab.json'
        Get-DEPageStats -DEHost $lab -Domain web1 | Export-DEReport -Path $json
        $report = Get-Content -LiteralPath $json -Raw | ConvertFrom-Json
        $report.host.name | Should -Be $lab
        $report.domains.pageCount | Should -Be 16
    }

    It 'uses the current host for objects without a Host, also after one with a Host' {
        $rows = @(
            [pscustomobject]@{ Host = $lab; Domain = 'web1'; Gfn = 10 }
            [pscustomobject]@{ Domain = 'web1'; Gfn = 11 }
        )
        ($rows | Read-DEGuestPage).Host | Should -Be @($lab, $other)
    }

    It 'gives -DEHost precedence over the piped objects'' Host' {
        (Get-DEPage -DEHost $lab -Domain web1 -Gfn 12 | Write-DEGuestPage -DEHost $other -Data ([byte[]](5)) -PassThru).Host | Should -Be $other
        Get-FirstByte $other 12 | Should -Be 5
        Get-FirstByte $lab 12 | Should -Be 0
    }

    It 'takes an object with a Host but no domain as every domain of its host' {
        $stats = Get-DEHostStats -DEHost $lab
        $stats.Host | Should -Be $lab
        ($stats | Invoke-DEScan).PagesSwept | Should -Be 16 -Because 'lab has one domain of 16 pages'
        $json = Join-Path $TestDrive 'whole-lab.json'
        $stats | Export-DEReport -Path $json
        $report = Get-Content -LiteralPath $json -Raw | ConvertFrom-Json
        $report.host.name | Should -Be $lab
        @($report.domains).Count | Should -Be 1
    }

    It 'is taken by the cmdlets that take domains only, not by those that work on hosts' {
        foreach ($name in 'Get-DEPage', 'Get-DEPageStats', 'Get-DEPolicy', 'Set-DEPolicy', 'Read-DEGuestPage', 'Write-DEGuestPage',
            'Invoke-DEScan', 'Invoke-DEWorkload', 'Export-DEReport', 'Enable-DESharing', 'Disable-DECompression', 'Get-DEFingerprint') {
            (Get-Command $name).Parameters.ContainsKey('InputHost') | Should -BeTrue -Because $name
        }
        foreach ($name in 'Connect-DEHost', 'Disconnect-DEHost', 'Get-DEHost', 'Get-DEHostStats', 'Get-DEEngine', 'Start-DEEngine',
            'Stop-DEEngine', 'New-DEDomain', 'Remove-DEDomain', 'Get-DEDomain', 'Get-DEPlacement',
            'Measure-DEColocation', 'New-DEFleetKey', 'Start-DEGuest') {
            (Get-Command $name).Parameters.ContainsKey('InputHost') | Should -BeFalse -Because $name
        }
        # So a domain piped to a host cmdlet is still refused, not taken as its host.
        { Get-DEDomain -DEHost $lab | Disconnect-DEHost -Confirm:$false -ErrorAction Stop } | Should -Throw
        Get-DEHost -Name $lab | Should -Not -BeNullOrEmpty
    }

    It 'writes HostNotFound for an object of a host not connected, and goes on with the next' {
        $rows = @(
            [pscustomobject]@{ Host = 'pester-no-such-host'; Domain = 'web1'; Gfn = 1 }
            [pscustomobject]@{ Host = $lab; Domain = 'web1'; Gfn = 1 }
        )
        $read = $rows | Read-DEGuestPage -ErrorVariable errors -ErrorAction SilentlyContinue
        $read.Host | Should -Be $lab
        $errors | Should -HaveCount 1
        $errors[0].FullyQualifiedErrorId | Should -Be 'HostNotFound,DifferenceEngine.Commands.ReadDEGuestPageCommand'
        $errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $errors[0].Exception.Message | Should -BeLike "*'pester-no-such-host'*Get-DEHost lists*"
        { $rows[0] | Get-DEPageStats -ErrorAction Stop } | Should -Throw -ErrorId 'HostNotFound,DifferenceEngine.Commands.GetDEPageStatsCommand'
    }
}

Describe 'Get-DEHostStats' {
    BeforeAll {
        $deHost = Connect-DEHost -Name (New-TestHostName) -MemoryLimit 64MB -PassThru
        $null = New-DEDomain -Name s1 -MemorySize 1MB
        Write-DEGuestPage -Domain s1 -Gfn 0, 1, 2 -Data ([byte[]](1..64))
    }

    AfterAll {
        $deHost | Disconnect-DEHost -Confirm:$false
    }

    It 'counts frames, guest memory and the zero-fill faults taken' {
        $stats = Get-DEHostStats
        $stats | Should -BeOfType ([DifferenceEngine.Stats.HostStats])
        $stats.Host | Should -Be $deHost.Name
        $stats.Domains | Should -Be 1
        $stats.FramesInUse | Should -Be 3
        $stats.GuestBytes | Should -Be 12KB        # the pages the guest wrote
        $stats.UntouchedBytes | Should -Be (1MB - 12KB)
        $stats.GuestBytes | Should -Be ($stats.MemoryUsedBytes + $stats.SavedBytes)
        $stats.MemoryLimitBytes | Should -Be 64MB
        ($stats.Faults | Where-Object Kind -EQ 'ZeroFill').Count | Should -Be 3
        $stats.FaultCount | Should -Be 3
        $stats.EngineTime.Mechanism | Should -Contain 'Sharing'
    }

    It 'names the bytes saved both ways, on the host and on its domains' {
        $stats = Get-DEHostStats
        $stats.BytesSaved | Should -Be $stats.SavedBytes
        $domain = Get-DEPageStats -Domain s1
        $domain.SavedBytes | Should -Be $domain.BytesSaved
    }

    It 'gives its metadata peak, never below what is held, with parts that add up to it' {
        $stats = Get-DEHostStats
        $stats.MetadataPeakBytes | Should -BeGreaterOrEqual $stats.MetadataBytes
        $stats.MetadataPeak.Total | Should -Be $stats.MetadataPeakBytes
        $stats | Format-List | Out-String -Width 160 | Should -Match 'Metadata peak\s*:\s*\S+ \S+ \(P2M '
    }

    It 'keeps its faults, engine time and metadata parts as objects when serialized, as remoting does' {
        $stats = Get-DEHostStats
        $back = [Management.Automation.PSSerializer]::Deserialize([Management.Automation.PSSerializer]::Serialize($stats))
        $back.PSObject.TypeNames[0] | Should -Be 'Deserialized.DifferenceEngine.Stats.HostStats'
        ($back.Faults | Where-Object Kind -EQ 'ZeroFill').Count | Should -Be 3
        $back.EngineTime.Mechanism | Should -Contain 'Sharing'
        $back.Metadata.P2M | Should -Be $stats.Metadata.P2M
        $text = $back | Format-List | Out-String -Width 120
        $text | Should -Match 'Metadata\s*:\s*\S+ \S+ \(P2M \S+ \S+ \+'
        $text | Should -Match 'ZeroFill\s+3\s+p50'
        $text | Should -Match 'Engine time\s*:\s*Clock'
    }

    It 'takes the host from the pipeline and from -DEHost' {
        ($deHost | Get-DEHostStats).Host | Should -Be $deHost.Name
        (Get-DEHostStats -DEHost $deHost).Host | Should -Be $deHost.Name
    }

    It 'works on a host that is not current, given -DEHost' {
        $other = Connect-DEHost -Name (New-TestHostName) -PassThru
        try {
            (Get-DEHostStats -DEHost $deHost).Domains | Should -Be 1
            (Get-DEHostStats).Domains | Should -Be 0
        }
        finally {
            $other | Disconnect-DEHost -Confirm:$false
        }
    }

    It 'reads well in a list' {
        $text = Get-DEHostStats | Format-List | Out-String -Width 120
        $text | Should -Match 'Frames\s*:\s*3 in use'
        $text | Should -Match 'ZeroFill\s+3\s+p50'
    }
}

Describe 'With no host connected' {
    BeforeAll {
        # Hosts are process-wide: other test files disconnect theirs in AfterAll, and any left over go here.
        Get-DEHost | Disconnect-DEHost -Confirm:$false
    }

    BeforeDiscovery {
        $commands = @(
            @{ Command = { Get-DEDomain } }
            @{ Command = { New-DEDomain -Name x -MemorySize 1MB } }
            @{ Command = { Get-DEPageStats } }
            @{ Command = { Get-DEHostStats } }
            @{ Command = { Invoke-DEScan } }
            @{ Command = { Enable-DESharing -Domain x } }
            @{ Command = { Enable-DEPatching -Domain x } }
            @{ Command = { Disable-DECompression -Domain x -Restore } }
            @{ Command = { Get-DEPolicy } }
            @{ Command = { Get-DEPolicy -HostPolicy } }
            @{ Command = { Set-DEPolicy -Domain x -C4Sweeps 3 } }
            @{ Command = { Set-DEPolicy -HostPolicy -SimilarityKeys 3 } }
            @{ Command = { Get-DEPage -Domain x } }
            @{ Command = { Start-DEEngine } }
            @{ Command = { Stop-DEEngine } }
            @{ Command = { Get-DEEngine } }
            @{ Command = { Get-DEEngine -History } }
            @{ Command = { Disconnect-DEHost -Confirm:$false } }
        )
    }

    It 'fails with NoHostConnected: <Command>' -ForEach $commands {
        { & $Command } | Should -Throw -ErrorId 'NoHostConnected,DifferenceEngine.Commands.*'
        try { & $Command } catch { $_.CategoryInfo.Category | Should -Be 'ConnectionError' }
    }

    It 'lists no host' {
        Get-DEHost | Should -BeNullOrEmpty
    }
}

Describe 'Connect-DEHost -Xen' {
    BeforeAll {
        Import-Module $env:DE_MODULE_PATH -Force
        # Xen.Tests.ps1 points the engine at the fake Xen with this variable; here it must be unset, so that this is the
        # machine as it is. It is put back afterwards.
        $savedShimPath = $env:DE_XEN_SHIM_PATH
        Remove-Item Env:DE_XEN_SHIM_PATH -ErrorAction Ignore
    }

    AfterAll {
        $env:DE_XEN_SHIM_PATH = $savedShimPath
    }

    It 'fails at once with XenNotAvailable on a machine without Xen, before it loads any native code' -Skip:(Test-Path /dev/xen/privcmd) {
        { Connect-DEHost -Xen -ErrorAction Stop } | Should -Throw -ErrorId 'XenNotAvailable,DifferenceEngine.Commands.ConnectDEHostCommand'
        try { Connect-DEHost -Xen -ErrorAction Stop } catch { $e = $_ }
        $e.CategoryInfo.Category | Should -Be 'ResourceUnavailable'
        $e.TargetObject | Should -Be '/dev/xen/privcmd'
        Get-DEHost | Where-Object Kind -EQ 'Xen' | Should -BeNullOrEmpty

        # At once: missing /dev/xen/privcmd is found before the shim or Xen's libraries are loaded, so nothing is opened
        # or waited for. A fresh process shows it (this one may have loaded the shim for other tests): after the
        # attempt, neither is mapped in it.
        $probe = Join-Path $TestDrive 'Connect-Xen.ps1'
        Set-Content -LiteralPath $probe -Value @'
param([string]$ModulePath)
Import-Module $ModulePath -ErrorAction Stop
try { Connect-DEHost -Xen -ErrorAction Stop; 'CONNECTED' } catch { "ERROR $($_.FullyQualifiedErrorId)" }
Get-Content -LiteralPath /proc/self/maps | Where-Object { $_ -match 'libdexen|libxen' } | ForEach-Object { "MAPPED $_" }
'@
        $pwsh = [Environment]::ProcessPath
        $pwshArgs = @(if ([IO.Path]::GetFileNameWithoutExtension($pwsh) -eq 'dotnet') { Join-Path $PSHOME 'pwsh.dll' })
        $output = @(& $pwsh @pwshArgs -NoProfile -NonInteractive -File $probe -ModulePath $env:DE_MODULE_PATH 2>&1 | ForEach-Object { "$_" })
        $output | Should -Be @('ERROR XenNotAvailable,DifferenceEngine.Commands.ConnectDEHostCommand')
    }

    It 'checks its arguments before it looks for Xen' {
        { Connect-DEHost -Xen -MemoryLimit 1GB -ErrorAction Stop } |
            Should -Throw -ErrorId 'XenMemoryLimitNeedsSwap,DifferenceEngine.Commands.ConnectDEHostCommand'
        { Connect-DEHost -Xen -SwapSize 1MB -ErrorAction Stop } |
            Should -Throw -ErrorId 'ConnectDEHostSwapSizeNeedsSwapPath,DifferenceEngine.Commands.ConnectDEHostCommand'
    }

    It 'honours -WhatIf' {
        { Connect-DEHost -Xen -WhatIf } | Should -Not -Throw
        Get-DEHost | Where-Object Kind -EQ 'Xen' | Should -BeNullOrEmpty
    }
}
