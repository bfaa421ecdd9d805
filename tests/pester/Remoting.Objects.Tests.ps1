# What the module's objects look like after a CLIXML round trip (PowerShell remoting's serialization,
# depth 1 unless the type sets SerializationDepth), and whether the module's views and cmdlets still work with them.
# Every It states the behaviour an admin using Invoke-Command would expect (from a read-only audit, session 33: each
# failed before; a domain piped back was ignored and the cmdlet acted on every domain of its host).
# The last Describe repeats a few of them over real SSH remoting (one sshd of the test's own on 127.0.0.1, as
# Fleet.Remoting.Tests.ps1 does); it is skipped without sshd or root.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    $modulePath = $env:DE_MODULE_PATH

    # What remoting does to an object: serialize (at the type's SerializationDepth, else 1) and deserialize.
    function ConvertTo-RoundTrip($InputObject) {
        [Management.Automation.PSSerializer]::Deserialize([Management.Automation.PSSerializer]::Serialize($InputObject))
    }

    $hostName = "pester-ra-$([guid]::NewGuid().ToString('n').Substring(0, 8))"
    $deHost = Connect-DEHost -Name $hostName -MemoryLimit 64MB -PassThru
    $null = New-DEDomain -Name ra1 -MemorySize 1MB
    $null = New-DEDomain -Name ra2 -MemorySize 1MB
    $null = Write-DEGuestPage -Domain ra1, ra2 -Gfn 0, 1, 2 -Data ([byte[]](1..64))
}

AfterAll {
    if ($deHost) { $deHost | Disconnect-DEHost -Confirm:$false }
}

Describe 'Format views of deserialized objects' {
    BeforeAll {
        $null = Start-DEEngine -Interval 00:00:00.1
        while ((Get-DEEngine).PassesRun -lt 2) { Start-Sleep -Milliseconds 20 }
        $status = Get-DEEngine
        $sample = Get-DEEngine -History | Select-Object -First 1
        $hostObject = Get-DEHost -Name $hostName
    }
    AfterAll {
        $null = Stop-DEEngine
    }

    It 'Get-DEEngine (table): LastPass shows the time of the last pass for a deserialized status' {
        $status.LastPass | Should -Not -BeNullOrEmpty
        $expected = $status.LastPass.ToLocalTime().ToString('HH:mm:ss')
        ($status | Out-String -Width 200) | Should -Match ([regex]::Escape($expected))
        $back = ConvertTo-RoundTrip $status
        ($back | Out-String -Width 200) | Should -Match ([regex]::Escape($expected))
    }

    It 'Get-DEEngine (list): Started and Last pass are shown for a deserialized status' {
        $back = ConvertTo-RoundTrip $status
        $text = $back | Format-List | Out-String -Width 200
        $text | Should -Match 'Started\s*:\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d'
        $text | Should -Match 'Last pass\s*:\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d, took'
    }

    It 'Get-DEEngine -History: the Time column is shown for a deserialized sample' {
        $expected = $sample.Time.ToLocalTime().ToString('yyyy-MM-dd HH:mm:ss')
        ($sample | Out-String -Width 200) | Should -Match ([regex]::Escape($expected))
        $back = ConvertTo-RoundTrip $sample
        ($back | Out-String -Width 200) | Should -Match ([regex]::Escape($expected))
    }

    It 'Get-DEHost: the EngineStatus and Connected columns are shown for a deserialized host' {
        $expected = $hostObject.Connected.ToString('yyyy-MM-dd HH:mm:ss')
        # The Name column is 14 wide: the row starts with the name's first characters.
        $prefix = [regex]::Escape($hostName.Substring(0, 12))
        $row = ($hostObject | Out-String -Width 200) -split "`n" | Where-Object { $_ -match "^$prefix" }
        $row | Should -Match 'Running'
        $row | Should -Match ([regex]::Escape($expected))
        $back = ConvertTo-RoundTrip $hostObject
        $backRow = ($back | Out-String -Width 200) -split "`n" | Where-Object { $_ -match "^$prefix" }
        $backRow | Should -Match 'Running'
        $backRow | Should -Match ([regex]::Escape($expected))
    }

    It 'Get-DEHost: the engine''s state arrives as EngineState (EngineStatus itself arrives as its text)' {
        $back = ConvertTo-RoundTrip $hostObject
        $back.EngineState | Should -Be 'Running'
    }

}

Describe 'Nested data of deserialized objects' {
    It 'Invoke-DEScan: PassResults arrive as objects with their properties, not as strings' {
        $scan = Invoke-DEScan -Passes 2
        $scan.PassResults[0].PagesSwept | Should -BeGreaterThan 0
        $back = ConvertTo-RoundTrip $scan
        $back.PassResults | Should -HaveCount 2
        $back.PassResults[0] | Should -Not -BeOfType ([string])
        $back.PassResults[0].PagesSwept | Should -Be $scan.PassResults[0].PagesSwept
    }

}

Describe 'Piping deserialized objects into the module''s cmdlets' {
    BeforeEach {
        if (-not (Get-DEDomain -Name ra2 -ErrorAction Ignore)) {
            $null = New-DEDomain -Name ra2 -MemorySize 1MB
            $null = Write-DEGuestPage -Domain ra2 -Gfn 0, 1, 2 -Data ([byte[]](1..64))
        }
        $domain = ConvertTo-RoundTrip (Get-DEDomain ra1)
    }

    It 'a deserialized domain | Get-DEPageStats gives that domain''s stats only' {
        @(Get-DEDomain ra1 | Get-DEPageStats).Domain | Should -Be 'ra1'
        @($domain | Get-DEPageStats).Domain | Should -Be 'ra1'
    }

    It 'a deserialized domain | Get-DEPolicy gives that domain''s policy only' {
        @(Get-DEDomain ra1 | Get-DEPolicy).Domain | Should -Be 'ra1'
        @($domain | Get-DEPolicy).Domain | Should -Be 'ra1'
    }

    It 'a deserialized domain | Invoke-DEScan scans that domain only' {
        (Get-DEDomain ra1 | Invoke-DEScan).Domains | Should -Be 'ra1'
        ($domain | Invoke-DEScan).Domains | Should -Be 'ra1'
    }

    It 'a deserialized domain | Export-DEReport reports that domain only' {
        $live = Join-Path $TestDrive 'live.json'
        $deser = Join-Path $TestDrive 'deser.json'
        $null = Get-DEDomain ra1 | Export-DEReport -Path $live
        $null = $domain | Export-DEReport -Path $deser
        (Get-Content -LiteralPath $live -Raw | ConvertFrom-Json).domains | Should -HaveCount 1
        (Get-Content -LiteralPath $deser -Raw | ConvertFrom-Json).domains | Should -HaveCount 1
    }

    It 'a deserialized domain | Enable-DESharing enables it (as a live domain object does)' {
        $done = $domain | Enable-DESharing -PassThru -ErrorAction Stop
        $done.Name | Should -Be 'ra1'
    }

    It 'a deserialized domain | Set-DEPolicy sets its policy' {
        $done = $domain | Set-DEPolicy -C4Sweeps 3 -PassThru -ErrorAction Stop
        $done.Domain | Should -Be 'ra1'
    }

    It 'Get-DEPageStats -Domain takes a deserialized domain' {
        { Get-DEPageStats -Domain $domain -ErrorAction Stop } | Should -Not -Throw
    }

    It 'deserialized page stats | Remove-DEDomain removes the domain' {
        $stats = ConvertTo-RoundTrip (Get-DEPageStats ra2)
        $stats | Remove-DEDomain -Confirm:$false -ErrorVariable failed -ErrorAction SilentlyContinue
        $failed | ForEach-Object { Write-Host "Remove-DEDomain wrote: $($_.FullyQualifiedErrorId): $($_.Exception.Message)" }
        $failed | Should -BeNullOrEmpty
        Get-DEDomain -Name ra2 -ErrorAction Ignore | Should -BeNullOrEmpty
    }

    It 'a deserialized policy | Remove-DEDomain removes the domain' {
        $policy = ConvertTo-RoundTrip (Get-DEPolicy ra2)
        $policy | Remove-DEDomain -Confirm:$false -ErrorVariable failed -ErrorAction SilentlyContinue
        $failed | Should -BeNullOrEmpty
        Get-DEDomain -Name ra2 -ErrorAction Ignore | Should -BeNullOrEmpty
    }

    It 'Get-DEHostStats -DEHost takes a deserialized host' {
        $h = ConvertTo-RoundTrip (Get-DEHost -Name $hostName)
        (Get-DEHostStats -DEHost $h -ErrorAction Stop).Host | Should -Be $hostName
    }

    It 'a deserialized host | Get-DEHostStats gives that host''s stats' {
        $h = ConvertTo-RoundTrip (Get-DEHost -Name $hostName)
        ($h | Get-DEHostStats -ErrorAction Stop).Host | Should -Be $hostName
    }
}

Describe 'New-DEFleetKey output' {
    It 'writes the key file as Get-Item gives it (provider properties: PSPath, UnixMode), as Export-DEReport -PassThru does' {
        $key = Join-Path $TestDrive 'fleet.key'
        $file = New-DEFleetKey -Path $key
        $file.PSPath | Should -Not -BeNullOrEmpty
        $file.UnixMode | Should -Be (Get-Item -LiteralPath $key).UnixMode
    }
}

Describe 'Over real SSH remoting (one sshd on 127.0.0.1)' {
    BeforeAll {
        . (Join-Path $PSScriptRoot 'SshHosts.ps1')
        $skipReason = Test-DESshAvailable
        if (-not $skipReason) {
            $sshHosts = @(Start-DETestSshHost -Count 1)
            $session = New-PSSession -SSHConnection $sshHosts[0].SSHConnection -ErrorAction Stop
            $remoteHost = "pester-ra-remote-$([guid]::NewGuid().ToString('n').Substring(0, 6))"
            Invoke-Command -Session $session -ErrorAction Stop -ScriptBlock {
                Import-Module $using:modulePath -ErrorAction Stop
                $null = Connect-DEHost -Name $using:remoteHost -MemoryLimit 64MB
                $null = New-DEDomain -Name r1 -MemorySize 1MB
                $null = New-DEDomain -Name r2 -MemorySize 1MB
                $null = Write-DEGuestPage -Domain r1, r2 -Gfn 0, 1 -Data ([byte[]](1..64))
                $null = Start-DEEngine -Interval 00:00:00.1
                while ((Get-DEEngine).PassesRun -lt 2) { Start-Sleep -Milliseconds 20 }
            }
        }
    }
    AfterAll {
        try {
            if ($session) { $session | Remove-PSSession -ErrorAction Continue }
        }
        finally {
            if ($sshHosts) { Stop-DETestSshHost -SshHost $sshHosts }
        }
    }

    It 'Invoke-Command { Get-DEEngine } shows the last pass''s time' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $status = Invoke-Command -Session $session -ScriptBlock { Get-DEEngine }
        $status.PSObject.TypeNames[0] | Should -Be 'Deserialized.DifferenceEngine.Hosting.EngineStatus'
        $text = $status | Format-List | Out-String -Width 200
        $text | Should -Match 'Last pass\s*:\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d, took'
    }

    It 'Invoke-Command { Get-DEHost } shows the engine''s state' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $h = Invoke-Command -Session $session -ScriptBlock { Get-DEHost }
        $h.EngineState | Should -Be 'Running'
        ($h | Format-Table | Out-String -Width 200) | Should -Match 'Running'
    }

    It 'a domain got over remoting and passed back (-ArgumentList) to Get-DEPageStats gives that domain only' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $d = Invoke-Command -Session $session -ScriptBlock { Get-DEDomain r1 }
        $names = Invoke-Command -Session $session -ArgumentList $d -ScriptBlock { param($Domain) @($Domain | Get-DEPageStats).Domain }
        @($names) | Should -Be 'r1'
    }

    It 'page stats got over remoting and passed back to Remove-DEDomain remove the domain' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $stats = Invoke-Command -Session $session -ScriptBlock { Get-DEPageStats r2 }
        $answer = Invoke-Command -Session $session -ArgumentList $stats -ScriptBlock {
            param($Stats)
            $Stats | Remove-DEDomain -Confirm:$false -ErrorVariable failed -ErrorAction SilentlyContinue
            [pscustomobject]@{ Errors = @($failed | ForEach-Object { "$($_.FullyQualifiedErrorId): $($_.Exception.Message)" }); Left = @((Get-DEDomain).Name) }
        }
        $answer.Errors | ForEach-Object { Write-Host "remote Remove-DEDomain wrote: $_" }
        $answer.Errors | Should -BeNullOrEmpty
        $answer.Left | Should -Not -Contain 'r2'
    }
}
