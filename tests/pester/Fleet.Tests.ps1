# New-DEFleetKey, Get-DEFingerprint, Measure-DEColocation and Get-DEPlacement on one machine (the same cmdlets over real
# ssh remoting: Fleet.Remoting.Tests.ps1). Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    $deHost = Connect-DEHost -Name "pester-fleet-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
    $dir = Join-Path ([IO.Path]::GetTempPath()) "de-fleet-$([guid]::NewGuid().ToString('n'))"
    $null = New-Item -ItemType Directory -Path $dir
    $keyPath = Join-Path $dir 'fleet.key'
    $null = New-DEFleetKey -Path $keyPath

    # Guest-like images from real files (this runtime's libraries), 4 MiB each: web1 and web2 share most of their
    # pages, db has its own; zero pages between.
    $libraries = @(Get-ChildItem -LiteralPath ([IO.Path]::GetDirectoryName([object].Assembly.Location)) -Filter '*.dll' |
            Sort-Object Length -Descending | Select-Object -First 6)
    function New-Image([string]$Name, [int[]]$Pick, [int]$Offset) {
        $path = Join-Path $dir "$Name.img"
        $out = [IO.File]::Create($path)
        try {
            foreach ($i in $Pick) {
                $bytes = [IO.File]::ReadAllBytes($libraries[$i].FullName)
                $start = [Math]::Min($Offset * 4096, [Math]::Max(0, $bytes.Length - 1MB))
                $out.Write($bytes, $start, [Math]::Min(1MB, $bytes.Length - $start))
                $out.Write([byte[]]::new(64KB), 0, 64KB)
            }
            while ($out.Length % 4096) { $out.WriteByte(0) }
        }
        finally { $out.Dispose() }
        $path
    }
    $web1Path = New-Image web1 @(0, 1, 2, 3) 0
    $web2Path = New-Image web2 @(0, 1, 2, 4) 0
    $dbPath = New-Image db @(5, 4, 3, 1) 40
    $null = New-DEDomain -Name web1 -Path $web1Path
    $null = New-DEDomain -Name web2 -Path $web2Path
    $null = New-DEDomain -Name db -Path $dbPath
}

AfterAll {
    $deHost | Disconnect-DEHost -Confirm:$false
    Remove-Item -LiteralPath $dir -Recurse -Force -ErrorAction Ignore
}

Describe 'New-DEFleetKey' {
    It 'writes 32 bytes only its owner can read, and never replaces a key unasked' {
        (Get-Item -LiteralPath $keyPath).Length | Should -Be 32
        [IO.File]::GetUnixFileMode($keyPath) | Should -Be ([IO.UnixFileMode]'UserRead, UserWrite')
        $err = $null
        try { New-DEFleetKey -Path $keyPath -ErrorAction Stop } catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -Be 'FleetKeyFileExists,DifferenceEngine.Commands.NewDEFleetKeyCommand'
        $err.CategoryInfo.Category | Should -Be 'ResourceExists'
    }

    It 'writes nothing with -WhatIf, and replaces a key with -Force' {
        $other = Join-Path $dir 'other.key'
        New-DEFleetKey -Path $other -WhatIf
        Test-Path -LiteralPath $other | Should -BeFalse
        $null = New-DEFleetKey -Path $other
        $before = [IO.File]::ReadAllBytes($other)
        $null = New-DEFleetKey -Path $other -Force
        [IO.File]::ReadAllBytes($other) | Should -Not -Be $before
    }

    It 'writes only to the file system: a path on another provider is PathNotFileSystem, and nothing is written' {
        $inCwd = Join-Path (Get-Location).ProviderPath 'DE_TEST_FLEET_KEY'
        { New-DEFleetKey -Path 'Env:\DE_TEST_FLEET_KEY' } | Should -Throw -ErrorId 'PathNotFileSystem,DifferenceEngine.Commands.NewDEFleetKeyCommand'
        Test-Path -LiteralPath $inCwd | Should -BeFalse
        Test-Path Env:\DE_TEST_FLEET_KEY | Should -BeFalse
    }
}

Describe 'Get-DEFingerprint' {
    BeforeAll {
        $fingerprints = @(Get-DEFingerprint -FleetKeyPath $keyPath)
    }

    It 'fingerprints every domain of the host, each a thousandth of its memory at most' {
        $fingerprints.Domain | Should -Be @('web1', 'web2', 'db')
        foreach ($f in $fingerprints) {
            $f | Should -BeOfType ([DifferenceEngine.Fleet.DomainFingerprint])
            $f.HostName | Should -Be $deHost.Name
            $f.SketchBytes | Should -BeLessOrEqual ($f.GuestBytes / 1000)
            $f.PageCount | Should -Be ($f.ZeroPages + $f.UniformPages + $f.ContentPages + $f.UnreadablePages)
            $f.KeyId | Should -Match '^[0-9a-f]{16}$'
        }
    }

    It 'takes domains by name and from the pipeline, and gives an image the fingerprint of its domain' {
        $byName = Get-DEFingerprint -Name web1 -FleetKeyPath $keyPath
        $piped = Get-DEDomain web1 | Get-DEFingerprint -FleetKeyPath $keyPath
        $fromFile = Get-DEFingerprint -Path $web1Path -FleetKeyPath $keyPath -HostName elsewhere
        $byName.Sketch | Should -Be $fingerprints[0].Sketch
        $piped.Sketch | Should -Be $fingerprints[0].Sketch
        $fromFile.Sketch | Should -Be $fingerprints[0].Sketch
        $fromFile.HostName | Should -Be 'elsewhere'
        # -Host is still short for -HostName here (the piped-host parameter is only on cmdlets that take domains).
        (Get-DEFingerprint -Path $web1Path -FleetKeyPath $keyPath -Host hostB).HostName | Should -Be 'hostB'
    }

    It 'stops with <Id> for a -<Parameter> no domain could have, before it reads any file' -ForEach @(
        @{ Parameter = 'TrustGroup'; Value = ' '; Id = 'PolicyTrustGroupInvalid' }
        @{ Parameter = 'TrustGroup'; Value = ''; Id = 'PolicyTrustGroupInvalid' }
        @{ Parameter = 'TrustGroup'; Value = 'a,b'; Id = 'PolicyTrustGroupInvalid' }
        @{ Parameter = 'HostName'; Value = 'h*'; Id = 'HostNameInvalid' }
        @{ Parameter = 'HostName'; Value = ''; Id = 'HostNameInvalid' }
    ) {
        $arguments = @{ $Parameter = $Value }
        $err = { Get-DEFingerprint -Path $web1Path, $web1Path -FleetKeyPath $keyPath @arguments -ErrorAction SilentlyContinue } |
            Should -Throw -ErrorId "$Id,DifferenceEngine.Commands.GetDEFingerprintCommand" -PassThru
        $err.CategoryInfo.Category | Should -Be 'InvalidArgument'
    }

    It 'changes nothing: after a scan it reads the pages where they are, and they stay there' {
        $null = Get-DEDomain | Enable-DESharing
        $null = Get-DEDomain | Enable-DEPatching
        $null = Get-DEDomain | Enable-DECompression
        $null = Invoke-DEScan -UntilStable
        $before = @(Get-DEPage -Domain web2 | ForEach-Object { "$($_.State)/$($_.Category)" })
        ($before | Where-Object { $_ -like 'Compressed/*' }).Count | Should -BeGreaterThan 0
        $after = Get-DEFingerprint -Name web2 -FleetKeyPath $keyPath
        $after.Sketch | Should -Be $fingerprints[1].Sketch
        @(Get-DEPage -Domain web2 | ForEach-Object { "$($_.State)/$($_.Category)" }) | Should -Be $before
    }

    It 'takes the secret itself as a byte array, as SecretManagement returns one' {
        $bytes = [IO.File]::ReadAllBytes($keyPath)
        (Get-DEFingerprint -Name db -FleetKey $bytes).Sketch | Should -Be $fingerprints[2].Sketch
    }

    It 'names a missing image, on a missing drive too, with FileNotFound and goes on with the others' {
        $paths = (Join-Path $TestDrive 'none.img'), 'NoSuchDrive:\x.img', $web1Path
        $found = @(Get-DEFingerprint -Path $paths -FleetKeyPath $keyPath -ErrorVariable failed -ErrorAction SilentlyContinue)
        $found.Domain | Should -Be ([IO.Path]::GetFileNameWithoutExtension($web1Path))
        $failed | Should -HaveCount 2
        $failed.FullyQualifiedErrorId | Should -Be @('FileNotFound,DifferenceEngine.Commands.GetDEFingerprintCommand', 'FileNotFound,DifferenceEngine.Commands.GetDEFingerprintCommand')
        $failed.CategoryInfo.Category | Should -Be @('ObjectNotFound', 'ObjectNotFound')
    }

    It 'names a missing domain and goes on with the others' {
        $found = @(Get-DEFingerprint -Name nosuch, db -FleetKeyPath $keyPath -ErrorVariable failed -ErrorAction SilentlyContinue)
        $found.Domain | Should -Be 'db'
        $failed[0].FullyQualifiedErrorId | Should -BeLike 'DomainNotFound,*'
    }

    It 'refuses <Case> with <Id>' -ForEach @(
        @{ Case = 'no key'; Id = 'FleetKeyRequired'; Run = { Get-DEFingerprint -Name db } }
        @{ Case = 'two keys'; Id = 'FleetKeyAmbiguous'; Run = { Get-DEFingerprint -Name db -FleetKeyPath $keyPath -FleetKey ([byte[]]::new(32)) } }
        @{ Case = 'a short secret'; Id = 'FleetKeyTooShort'; Run = { Get-DEFingerprint -Name db -FleetKey ([byte[]]::new(8)) } }
        @{ Case = 'a plain-text secret'; Id = 'FleetKeyInvalid'; Run = { Get-DEFingerprint -Name db -FleetKey 'secret in the history' } }
        @{ Case = 'a missing key file'; Id = 'FleetKeyFileNotFound'; Run = { Get-DEFingerprint -Name db -FleetKeyPath (Join-Path $dir 'none.key') } }
        @{ Case = 'a sample rate not a power of two'; Id = 'FingerprintSampleInvalid'; Run = { Get-DEFingerprint -Name db -FleetKeyPath $keyPath -SampleRate 24 } }
    ) {
        $err = $null
        try { & $Run -ErrorAction Stop } catch { $err = $_ }
        $err | Should -Not -BeNullOrEmpty
        $err.FullyQualifiedErrorId | Should -Be "$Id,DifferenceEngine.Commands.GetDEFingerprintCommand"
        $err.CategoryInfo.Category | Should -Not -Be 'NotSpecified'
    }

    It 'refuses a key file others can read' {
        $open = Join-Path $dir 'open.key'
        [IO.File]::WriteAllBytes($open, [byte[]](1..32))
        [IO.File]::SetUnixFileMode($open, [IO.UnixFileMode]'UserRead, UserWrite, GroupRead, OtherRead')
        $err = $null
        try { Get-DEFingerprint -Name db -FleetKeyPath $open -ErrorAction Stop } catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -Be 'FleetKeyFileInsecure,DifferenceEngine.Commands.GetDEFingerprintCommand'
        $err.CategoryInfo.Category | Should -Be 'PermissionDenied'
    }
}

Describe 'Get-DEFingerprint of piped objects, on the host they name' {
    # Another host, connected after $deHost and so the current one, with a web1 of its own (32 pages; $deHost's web1 is
    # the 4 MiB image): a piped object of $deHost must be fingerprinted on $deHost, never on the current host.
    BeforeAll {
        $other = Connect-DEHost -Name "pester-fleet-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        $null = New-DEDomain -DEHost $other -Name web1 -MemorySize 128KB
        $web1 = Get-DEDomain -DEHost $deHost -Name web1
        $reference = Get-DEFingerprint -DEHost $deHost -Name web1 -FleetKeyPath $keyPath
        # What remoting does to an object: serialize and deserialize (as Remoting.Objects.Tests.ps1 does).
        function ConvertTo-RoundTrip($InputObject) {
            [Management.Automation.PSSerializer]::Deserialize([Management.Automation.PSSerializer]::Serialize($InputObject))
        }
    }

    AfterAll {
        # $deHost is the current host again: the later Describes fingerprint it.
        if ($other) { $other | Disconnect-DEHost -Confirm:$false }
    }

    It 'fingerprints the domain of a piped <Source> row on its own host, not the current host''s domain of that name' -ForEach @(
        @{ Source = 'Get-DEPageStats'; Rows = { Get-DEPageStats -DEHost $deHost -Domain web1 } }
        @{ Source = 'Get-DEPolicy'; Rows = { Get-DEPolicy -DEHost $deHost -Domain web1 } }
        @{ Source = 'Get-DEDomain'; Rows = { Get-DEDomain -DEHost $deHost -Name web1 } }
        @{ Source = 'deserialized Get-DEPageStats'; Rows = { ConvertTo-RoundTrip (Get-DEPageStats -DEHost $deHost -Domain web1) } }
        @{ Source = 'deserialized Get-DEDomain'; Rows = { ConvertTo-RoundTrip (Get-DEDomain -DEHost $deHost -Name web1) } }
    ) {
        (Get-DEHost -Current).Name | Should -Be $other.Name
        $found = @(& $Rows | Get-DEFingerprint -FleetKeyPath $keyPath -ErrorVariable failed -ErrorAction SilentlyContinue)
        $failed | Should -BeNullOrEmpty
        $found | Should -HaveCount 1
        $found[0].HostName | Should -Be $deHost.Name
        $found[0].PageCount | Should -Be $web1.PageCount
        $found[0].Sketch | Should -Be $reference.Sketch
    }

    It 'finds a piped row''s domain that only its own host has (no DomainNotFound on the current host)' {
        $found = @(Get-DEPageStats -DEHost $deHost -Domain db | Get-DEFingerprint -FleetKeyPath $keyPath -ErrorVariable failed -ErrorAction SilentlyContinue)
        $failed | Should -BeNullOrEmpty
        $found.Domain | Should -Be 'db'
        $found.HostName | Should -Be $deHost.Name
    }

    It 'takes a piped host record without domains (Get-DEHostStats) as every domain of its host' {
        @(Get-DEHostStats -DEHost $deHost | Get-DEFingerprint -FleetKeyPath $keyPath).Domain | Should -Be @('web1', 'web2', 'db')
    }

    It 'writes HostNotFound for a row of a host no longer connected, fingerprints nothing for it, and goes on with the next' {
        $gone = Connect-DEHost -Name "pester-fleet-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        try {
            $null = New-DEDomain -DEHost $gone -Name web1 -MemorySize 64KB
            $rows = @(Get-DEPageStats -DEHost $gone -Domain web1) + @(Get-DEPageStats -DEHost $deHost -Domain db)
        }
        finally {
            $gone | Disconnect-DEHost -Confirm:$false
        }
        (Get-DEHost -Current).Name | Should -Be $other.Name -Because 'the current host has a web1 the row must not fall back on'
        $found = @($rows | Get-DEFingerprint -FleetKeyPath $keyPath -ErrorVariable failed -ErrorAction SilentlyContinue)
        $found.Domain | Should -Be 'db'
        $found.HostName | Should -Be $deHost.Name
        $failed | Should -HaveCount 1
        $failed[0].FullyQualifiedErrorId | Should -Be 'HostNotFound,DifferenceEngine.Commands.GetDEFingerprintCommand'
        $failed[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $failed[0].TargetObject | Should -Be $gone.Name
    }

    It 'gives -DEHost precedence over a piped row''s Host' {
        $found = Get-DEPageStats -DEHost $deHost -Domain web1 | Get-DEFingerprint -DEHost $other -FleetKeyPath $keyPath
        $found.HostName | Should -Be $other.Name
        $found.PageCount | Should -Be 32
    }

    It 'with -Path, takes a piped row''s Host as the images'' HostName (-HostName wins), and an invalid one is HostNameInvalid for that row' {
        $rows = @(
            [pscustomobject]@{ Path = $web1Path; Host = 'hostC' }
            [pscustomobject]@{ Path = $web1Path; Host = 'h*' }
            [pscustomobject]@{ Path = $web1Path }
        )
        $found = @($rows | Get-DEFingerprint -FleetKeyPath $keyPath -ErrorVariable failed -ErrorAction SilentlyContinue)
        $found.HostName | Should -Be @('hostC', [Environment]::MachineName)
        $found[0].Sketch | Should -Be $reference.Sketch
        $failed | Should -HaveCount 1
        $failed[0].FullyQualifiedErrorId | Should -Be 'HostNameInvalid,DifferenceEngine.Commands.GetDEFingerprintCommand'
        @($rows[0] | Get-DEFingerprint -FleetKeyPath $keyPath -HostName hostD).HostName | Should -Be 'hostD'
    }
}

Describe 'Measure-DEColocation' {
    BeforeAll {
        $fingerprints = @(Get-DEFingerprint -FleetKeyPath $keyPath)
    }

    It 'predicts the domains together, with used and saved adding up to their memory' {
        $p = $fingerprints | Measure-DEColocation
        $p.Domains | Should -Be @('db', 'web1', 'web2') # by domain, then host
        $p.GuestBytes | Should -Be (($fingerprints | Measure-Object GuestBytes -Sum).Sum)
        ($p.PredictedUsedBytes + $p.PredictedSavedBytes) | Should -Be $p.GuestBytes
        ($p.FrameBytes + $p.StoreBytes + $p.MetadataBytes) | Should -Be $p.PredictedUsedBytes
        $p.UsedWithSharingBytes | Should -BeGreaterOrEqual $p.UsedWithSharingAndPatchingBytes
        $p.SeparateUsedBytes | Should -Be (($fingerprints | Measure-Object PredictedUsedBytes -Sum).Sum)
        # web1 and web2 share most of their pages: together they need less than apart.
        $pair = Measure-DEColocation -Fingerprint $fingerprints[0], $fingerprints[1]
        $pair.ColocationSavedBytes | Should -BeGreaterThan ($fingerprints[0].GuestBytes / 8)
    }

    It 'reads fingerprints back from JSON to the same prediction' {
        $json = $fingerprints | ConvertTo-Json -Depth 3
        $back = $json | ConvertFrom-Json
        ($back | Measure-DEColocation).PredictedUsedBytes | Should -Be ($fingerprints | Measure-DEColocation).PredictedUsedBytes
    }

    It 'refuses a domain given twice (its host''s name in any case)' {
        $err = $null
        try { Measure-DEColocation -Fingerprint $fingerprints[0], $fingerprints[0] -ErrorAction Stop } catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -Be 'FingerprintDuplicate,DifferenceEngine.Commands.MeasureDEColocationCommand'
        $shouting = $fingerprints[0] | ConvertTo-Json -Depth 3 | ConvertFrom-Json
        $shouting.HostName = $shouting.HostName.ToUpperInvariant()
        $err = $null
        try { Measure-DEColocation -Fingerprint $fingerprints[0], $shouting -ErrorAction Stop } catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -Be 'FingerprintDuplicate,DifferenceEngine.Commands.MeasureDEColocationCommand'
    }

    It 'writes an error for each fingerprint of another fleet key or sample rate than most, and predicts with the rest' {
        $otherKey = Join-Path $dir 'fleet2.key'
        $null = New-DEFleetKey -Path $otherKey -Force
        $stranger = Get-DEFingerprint -Name db -FleetKeyPath $otherKey
        $coarse = Get-DEFingerprint -Name web2 -FleetKeyPath $keyPath -SampleRate 32
        $coarse.HostName = 'other'
        # The odd ones first: the blame goes to them, not to whichever arrived first.
        $p = Measure-DEColocation -Fingerprint $stranger, $coarse, $fingerprints[0], $fingerprints[1] -ErrorVariable odd -ErrorAction SilentlyContinue
        $p.Domains | Should -Be @('web1', 'web2')
        $p.PredictedUsedBytes | Should -Be (Measure-DEColocation -Fingerprint $fingerprints[0], $fingerprints[1]).PredictedUsedBytes
        $odd | Should -HaveCount 2
        $odd[0].FullyQualifiedErrorId | Should -Be 'FingerprintKeyMismatch,DifferenceEngine.Commands.MeasureDEColocationCommand'
        $odd[0].TargetObject | Should -Be "$($stranger.HostName)/db"
        $odd[0].CategoryInfo.Category | Should -Be 'InvalidData'
        $odd[1].FullyQualifiedErrorId | Should -Be 'FingerprintSampleMismatch,DifferenceEngine.Commands.MeasureDEColocationCommand'
        $odd[1].TargetObject | Should -Be 'other/web2'
        $odd[1].CategoryInfo.Category | Should -Be 'InvalidData'
        # As many of each key: the one seen first is kept.
        $p = Measure-DEColocation -Fingerprint $stranger, $fingerprints[0] -ErrorVariable odd -ErrorAction SilentlyContinue
        $p.Domains | Should -Be @('db')
        $odd | Should -HaveCount 1
        $odd[0].TargetObject | Should -Be "$($fingerprints[0].HostName)/web1"
    }

    It 'predicts the same whatever the order of its input' {
        $forward = Measure-DEColocation -Fingerprint $fingerprints[0], $fingerprints[1], $fingerprints[2]
        foreach ($order in @(@(2, 1, 0), @(1, 2, 0), @(2, 0, 1))) {
            # Before, these images' prediction moved by up to 3% with the order (the model replays the domains in turn).
            $again = Measure-DEColocation -Fingerprint $fingerprints[$order]
            $again.PredictedUsedBytes | Should -Be $forward.PredictedUsedBytes
            ($again | Select-Object * -ExcludeProperty Seconds | ConvertTo-Json) | Should -Be ($forward | Select-Object * -ExcludeProperty Seconds | ConvertTo-Json)
        }
    }

    It 'writes an error for an object that is no fingerprint and predicts with the rest' {
        $p = Measure-DEColocation -Fingerprint $fingerprints[0], ([pscustomobject]@{ Name = 'x' }) -ErrorVariable bad -ErrorAction SilentlyContinue
        $p.Domains | Should -Be @('web1')
        $bad[0].FullyQualifiedErrorId | Should -Be 'FingerprintInvalid,DifferenceEngine.Commands.MeasureDEColocationCommand'
        $bad[0].CategoryInfo.Category | Should -Be 'InvalidData'
    }

    It 'writes FingerprintInvalid for a fingerprint whose <Field> was set to <Value> among valid ones, and predicts with the rest' -ForEach @(
        @{ Field = 'SampleShift'; Value = 70 }
        @{ Field = 'SampleShift'; Value = -1 }
        @{ Field = 'PageCount'; Value = [long]::MaxValue }
        @{ Field = 'GuestBytes'; Value = -20480 }
        @{ Field = 'SampledPages'; Value = 130 }
    ) {
        $tampered = $fingerprints[2] | ConvertTo-Json -Depth 3 | ConvertFrom-Json
        $tampered.$Field = $Value
        $p = Measure-DEColocation -Fingerprint $fingerprints[0], $tampered, $fingerprints[1] -ErrorVariable bad -ErrorAction SilentlyContinue
        $p.Domains | Should -Be @('web1', 'web2')
        $bad | Should -HaveCount 1
        $bad[0].FullyQualifiedErrorId | Should -Be 'FingerprintInvalid,DifferenceEngine.Commands.MeasureDEColocationCommand'
        $bad[0].CategoryInfo.Category | Should -Be 'InvalidData'
        $bad[0].Exception.Message | Should -BeLike "*domain 'db'*$Field is $Value;*"
    }

    It 'checks a fingerprint object altered in place as it checks one read from JSON' {
        $altered = Get-DEFingerprint -Name db -FleetKeyPath $keyPath
        $altered.GuestBytes = 12345
        $p = $fingerprints[0], $altered | Measure-DEColocation -ErrorVariable bad -ErrorAction SilentlyContinue
        $p.Domains | Should -Be @('web1')
        $bad[0].FullyQualifiedErrorId | Should -Be 'FingerprintInvalid,DifferenceEngine.Commands.MeasureDEColocationCommand'
    }
}

Describe 'Get-DEPlacement' {
    BeforeAll {
        $fingerprints = @(Get-DEFingerprint -FleetKeyPath $keyPath)
        # Today: each domain on a host of its own.
        for ($i = 0; $i -lt $fingerprints.Count; $i++) { $fingerprints[$i].HostName = "today$i" }
    }

    It 'places every domain once, within each host''s capacity, on fewer hosts than today' {
        $r = $fingerprints | Get-DEPlacement -HostCapacity @{ a = 64MB; b = 64MB; c = 64MB }
        $r.Assignments.Count | Should -Be 3
        ($r.Assignments.Domain | Sort-Object) | Should -Be @('db', 'web1', 'web2')
        $r.CurrentHostsUsed | Should -Be 3
        $r.HostsUsed | Should -Be 1
        foreach ($h in $r.Hosts) { $h.PredictedUsedBytes | Should -BeLessOrEqual $h.CapacityBytes }
        $r.PredictedUsedBytes | Should -BeLessOrEqual $r.CurrentPredictedUsedBytes
        $r.Unplaced.Count | Should -Be 0
    }

    It 'keeps a trust group off a host that does not run it' {
        $hosts = @([pscustomobject]@{ Name = 'shared'; CapacityBytes = 64MB; TrustGroups = 'default' }
            [pscustomobject]@{ Name = 'tenant'; CapacityBytes = 64MB; TrustGroups = 'tenant' })
        $r = $fingerprints | Get-DEPlacement -PlacementHost $hosts
        ($r.Assignments | Where-Object HostName -eq 'tenant').Count | Should -Be 0
    }

    It 'writes an error for a domain that fits nowhere and places the others' {
        $r = $fingerprints | Get-DEPlacement -HostCapacity @{ tiny = 2MB } -ErrorVariable nofit -ErrorAction SilentlyContinue
        $r.Unplaced.Count | Should -BeGreaterThan 0
        $nofit.Count | Should -Be $r.Unplaced.Count
        $nofit[0].FullyQualifiedErrorId | Should -Be 'DomainDoesNotFit,DifferenceEngine.Commands.GetDEPlacementCommand'
    }

    It 'writes FingerprintInvalid for a domain of an impossible size and places the others' {
        $huge = $fingerprints[2] | ConvertTo-Json -Depth 3 | ConvertFrom-Json
        # 2^50 pages, 2^62 bytes: consistent, and more than any guest (Get-DEPlacement had put 2^63 bytes on 1 GiB).
        $huge.PageCount = [long]1 -shl 50
        $huge.GuestBytes = [long]1 -shl 62
        $r = $fingerprints[0], $huge | Get-DEPlacement -HostCapacity @{ h1 = 1GB } -ErrorVariable bad -ErrorAction SilentlyContinue
        $r.Assignments.Domain | Should -Be @('web1')
        $r.Hosts[0].FreeBytes | Should -BeGreaterThan 0
        $bad[0].FullyQualifiedErrorId | Should -Be 'FingerprintInvalid,DifferenceEngine.Commands.GetDEPlacementCommand'
        $bad[0].CategoryInfo.Category | Should -Be 'InvalidData'
        $bad[0].Exception.Message | Should -BeLike "*domain 'db'*PageCount is 1125899906842624;*"
    }

    It 'writes an error for each fingerprint of another fleet key than most, and places the rest' {
        $otherKey = Join-Path $dir 'fleet3.key'
        $null = New-DEFleetKey -Path $otherKey -Force
        $stranger = Get-DEFingerprint -Name db -FleetKeyPath $otherKey
        $stranger.HostName = 'stale'
        $r = @($stranger) + $fingerprints | Get-DEPlacement -HostCapacity @{ a = 64MB; b = 64MB } -ErrorVariable odd -ErrorAction SilentlyContinue
        ($r.Assignments.Domain | Sort-Object) | Should -Be @('db', 'web1', 'web2')
        $r.Assignments.CurrentHostName | Should -Not -Contain 'stale'
        $odd | Should -HaveCount 1
        $odd[0].FullyQualifiedErrorId | Should -Be 'FingerprintKeyMismatch,DifferenceEngine.Commands.GetDEPlacementCommand'
        $odd[0].TargetObject | Should -Be 'stale/db'
        $odd[0].CategoryInfo.Category | Should -Be 'InvalidData'
        "$($odd[0])" | Should -BeLike "*domain 'db' of host 'stale'*3 of the 4*"
    }

    It 'says a host without a capacity has none, rather than that it is not a number' {
        $err = $null
        try { $fingerprints | Get-DEPlacement -PlacementHost @{ Name = 'h1' } -ErrorAction Stop } catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -Be 'PlacementCapacityInvalid,DifferenceEngine.Commands.GetDEPlacementCommand'
        "$err" | Should -BeLike "Host 'h1' has no capacity*"
    }

    It 'says which of Schema and Sketch a would-be fingerprint lacks' {
        $noSketch = [pscustomobject]@{ Schema = $fingerprints[0].Schema; Sketch = $null }
        $p = Measure-DEColocation -Fingerprint $fingerprints[0], $noSketch -ErrorVariable bad -ErrorAction SilentlyContinue
        $bad[0].FullyQualifiedErrorId | Should -Be 'FingerprintInvalid,DifferenceEngine.Commands.MeasureDEColocationCommand'
        "$($bad[0])" | Should -BeLike '*it has no Sketch (*'
    }

    It 'refuses a capacity that is not a number of bytes: <Value>' -ForEach @(
        @{ Value = 'lots' }, @{ Value = '64XB' }, @{ Value = '1.5' }, @{ Value = '0.1KB' }, @{ Value = '-64GB' }, @{ Value = '9999999PB' }
    ) {
        $err = $null
        try { $fingerprints | Get-DEPlacement -HostCapacity @{ a = $Value } -ErrorAction Stop } catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -Be 'PlacementCapacityInvalid,DifferenceEngine.Commands.GetDEPlacementCommand'
        $err.CategoryInfo.Category | Should -Be 'InvalidArgument'
        "$err" | Should -BeLike "*host 'a'*KB, MB, GB, TB or PB*"
    }

    It 'takes a capacity as a string with a unit, as PowerShell means it (<Value>), from CSV, objects and hashtables' -ForEach @(
        @{ Value = '64GB'; Bytes = 64GB }, @{ Value = '64 gb'; Bytes = 64GB }, @{ Value = '1.5TB'; Bytes = 1.5TB }, @{ Value = '67108864'; Bytes = 64MB }
    ) {
        $r = $fingerprints | Get-DEPlacement -HostCapacity @{ a = $Value }
        $r.Hosts[0].CapacityBytes | Should -Be $Bytes
        $csv = "Name,CapacityBytes`nb,`"$Value`"" | ConvertFrom-Csv
        ($fingerprints | Get-DEPlacement -PlacementHost $csv).Hosts[0].CapacityBytes | Should -Be $Bytes
        ($fingerprints | Get-DEPlacement -PlacementHost @{ Name = 'c'; CapacityBytes = $Value }).Hosts[0].CapacityBytes | Should -Be $Bytes
    }

    It 'takes hosts as hashtables, keys in any case, and refuses one without a Name' {
        $hosts = @{ Name = 'h1'; CapacityBytes = 64MB; TrustGroups = 'default' }, @{ name = 'h2'; capacitybytes = 64MB; trustgroups = 'tenant' }
        $r = $fingerprints | Get-DEPlacement -PlacementHost $hosts
        $r.Hosts.HostName | Should -Be 'h1', 'h2'
        ($r.Assignments | Where-Object HostName -eq 'h2').Count | Should -Be 0
        $r.Assignments.Count | Should -Be 3
        $err = $null
        try { $fingerprints | Get-DEPlacement -PlacementHost @{ CapacityBytes = 64MB } -ErrorAction Stop } catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -Be 'PlacementHostInvalid,DifferenceEngine.Commands.GetDEPlacementCommand'
    }

    It 'splits a host''s TrustGroups string on commas and semicolons only: a trust group name may hold spaces' {
        $a = Get-DEFingerprint -Path $web1Path -HostName today9 -TrustGroup 'a' -FleetKeyPath $keyPath
        $tenantA = Get-DEFingerprint -Path $dbPath -HostName today9 -TrustGroup 'tenant a' -FleetKeyPath $keyPath
        $csv = "Name,CapacityBytes,TrustGroups`nsecure,67108864,tenant a`nother,67108864,`"zzz; b ,c`"" | ConvertFrom-Csv
        foreach ($hosts in @($csv, @([pscustomobject]@{ Name = 'secure'; CapacityBytes = 64MB; TrustGroups = 'tenant a' }
                    [pscustomobject]@{ Name = 'other'; CapacityBytes = 64MB; TrustGroups = 'zzz; b ,c' }))) {
            $r = $a, $tenantA | Get-DEPlacement -PlacementHost $hosts -ErrorVariable nofit -ErrorAction SilentlyContinue
            # Trust group 'a' is not 'tenant a': no host runs it.
            $r.Unplaced | Should -Be 'today9/web1'
            $nofit.Count | Should -Be 1
            $nofit[0].FullyQualifiedErrorId | Should -Be 'DomainDoesNotFit,DifferenceEngine.Commands.GetDEPlacementCommand'
            $nofit[0].TargetObject | Should -Be 'today9/web1'
            $r.Assignments.Domain | Should -Be 'db'
            $r.Assignments.HostName | Should -Be 'secure'
        }
    }
}
