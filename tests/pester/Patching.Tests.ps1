# Enable-/Disable-DEPatching, Enable-/Disable-DECompression, Get-/Set-DEPolicy, the new New-DEDomain switches,
# and patching and compression end to end: every page read back is compared with the image file it was loaded from.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    $PageSize = 4096
    $Seed = 7
    $deHost = Connect-DEHost -Name "pester-patching-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -SimilaritySeed $Seed -PassThru

    function New-TestHostName { "pester-patching-$([guid]::NewGuid().ToString('n').Substring(0, 8))" }

    function Write-Image([string]$Name, [byte[]]$Bytes) {
        $path = Join-Path $TestDrive $Name
        [IO.File]::WriteAllBytes($path, $Bytes)
        $path
    }

    # One 4 KiB page of a byte array.
    function Get-ImagePage([byte[]]$Bytes, [int]$Gfn) {
        $page = [byte[]]::new($PageSize)
        [Array]::Copy($Bytes, $Gfn * $PageSize, $page, 0, $PageSize)
        , $page
    }

    function Test-SameBytes([byte[]]$Expected, [byte[]]$Actual) {
        [Linq.Enumerable]::SequenceEqual($Expected, $Actual)
    }

    # Copies page $From to page $To and changes $Count bytes of the copy, never inside one of the similarity
    # detector's 64-byte blocks: the copy then has the same keys as the original, and the detector finds it.
    function Set-NearCopy([byte[]]$Bytes, [int]$From, [int]$To, [int[]]$Offsets, [Random]$Random, [int]$Count = 6) {
        [Array]::Copy($Bytes, $From * $PageSize, $Bytes, $To * $PageSize, $PageSize)
        $changed = 0
        while ($changed -lt $Count) {
            $at = $Random.Next($PageSize)
            if (@($Offsets | Where-Object { $at -ge $_ -and $at -lt $_ + 64 }).Count -gt 0) { continue }
            $Bytes[$To * $PageSize + $at] = [byte](($Bytes[$To * $PageSize + $at] + 1 + $Random.Next(254)) % 256)
            $changed++
        }
    }

    # A page of 32-bit little-endian integers from 0 to 15: compressible, and like no other page.
    function Set-SmallIntegers([byte[]]$Bytes, [int]$Gfn, [Random]$Random) {
        [Array]::Clear($Bytes, $Gfn * $PageSize, $PageSize)
        for ($i = 0; $i -lt $PageSize; $i += 4) {
            $Bytes[$Gfn * $PageSize + $i] = [byte]$Random.Next(16)
        }
    }

    function Set-Text([byte[]]$Bytes, [int]$Gfn, [string]$Text) {
        $line = [Text.Encoding]::ASCII.GetBytes($Text)
        for ($i = 0; $i -lt $PageSize; $i++) { $Bytes[$Gfn * $PageSize + $i] = $line[$i % $line.Length] }
    }

    function Set-Word([byte[]]$Bytes, [int]$Gfn, [uint32]$Word) {
        $w = [BitConverter]::GetBytes($Word)
        for ($i = 0; $i -lt $PageSize; $i++) { $Bytes[$Gfn * $PageSize + $i] = $w[$i % 4] }
    }

    # The test image: a random reference page (0) and near-copies of it (1..8), two compressible pages
    # (9: small integers, 10: repeated text), a Uniform page (11), a zero page (12) and random pages (13..15).
    function New-TestImage([int[]]$Offsets, [int]$ImageSeed = 1) {
        $random = [Random]::new($ImageSeed)
        $bytes = [byte[]]::new(16 * $PageSize)
        $random.NextBytes($bytes)
        foreach ($gfn in 1..8) { Set-NearCopy $bytes 0 $gfn $Offsets $random }
        Set-SmallIntegers $bytes 9 $random
        Set-Text $bytes 10 'The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. '
        Set-Word $bytes 11 0x00C0FFEE
        [Array]::Clear($bytes, 12 * $PageSize, $PageSize)
        , $bytes
    }

    $Offsets = (Get-DEPolicy -HostPolicy).SimilarityOffsets
}

AfterAll {
    $deHost | Disconnect-DEHost -Confirm:$false
}

Describe 'Patching and compression end to end' {
    BeforeAll {
        $image = New-TestImage $Offsets
        $path = Write-Image 'e2e.img' $image
        $null = New-DEDomain -Name e2e -Path $path
        $before = Get-DEPageStats -Domain e2e

        Enable-DESharing -Domain e2e
        Enable-DEPatching -Domain e2e
        Enable-DECompression -Domain e2e -Algorithm Zstd
        Set-DEPolicy -Domain e2e -C4Sweeps 1
        $scan = Invoke-DEScan -UntilStable
        $stats = Get-DEPageStats -Domain e2e
        $faultsBefore = @{}
        (Get-DEHostStats).Faults | ForEach-Object { $faultsBefore["$($_.Kind)"] = $_.Count }

        function Get-FaultCount([string]$Kind) {
            ((Get-DEHostStats).Faults | Where-Object Kind -EQ $Kind).Count - $faultsBefore[$Kind]
        }
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'loads every page Private' {
        $before.PrivatePages | Should -Be 16
    }

    It 'reaches a stable state, having patched and compressed' {
        $scan.Stable | Should -BeTrue
        $scan.PagesPatched | Should -Be 8
        $scan.PagesCompressed | Should -Be 2
        $scan.UniformPagesFound | Should -Be 1
        @($scan.PassResults | Where-Object PagesCompressed -GT 0)[0].Pass | Should -BeGreaterThan 1 -Because 'no page is compressed before a full pass has examined it'
    }

    It 'counts pages per state: the near-copies Patched, the compressible pages Compressed' {
        $stats.PatchedPages | Should -Be 8
        $stats.CompressedPages | Should -Be 2
        $stats.UniformPages | Should -Be 1
        $stats.ZeroPages | Should -Be 1
        $stats.SharedPages | Should -Be 1 -Because 'the reference page is made immutable: Shared'
        $stats.PrivatePages | Should -Be 3
        $stats.StoredBytes | Should -BeGreaterThan 0
        $stats.PatchingEnabled | Should -BeTrue
        $stats.CompressionEnabled | Should -BeTrue
        $stats.CompressionAlgorithm | Should -Be 'Zstd'
        $stats.BytesUsed | Should -BeLessThan (5 * $PageSize)
    }

    It 'shows each Patched page''s reference, stored bytes and codec' {
        $patched = Get-DEPage -Domain e2e -State Patched
        $patched.Gfn | Should -Be (1..8)
        $patched | ForEach-Object {
            $_.ReferenceDomain | Should -Be 'e2e'
            $_.ReferenceGfn | Should -Be 0
            $_.StoredBytes | Should -BeGreaterThan 0
            $_.StoredBytes | Should -BeLessThan 256 -Because 'six bytes differ from the reference'
            $_.Codec | Should -Be 'Delta'
            $_.Frame | Should -BeNullOrEmpty
        }
        (Get-DEPage -Domain e2e -Gfn 0).State | Should -Be 'Shared'
    }

    It 'shows each Compressed page''s stored bytes and codec' {
        $compressed = Get-DEPage -Domain e2e -State Compressed
        $compressed.Gfn | Should -Be @(9, 10)
        $compressed.Codec | Should -Be @('Zstd', 'Zstd')
        $compressed | ForEach-Object {
            $_.StoredBytes | Should -BeLessOrEqual ($PageSize / 2)
            $_.ReferenceDomain | Should -BeNullOrEmpty
        }
    }

    It 'shows the word of a Uniform page' {
        $uniform = Get-DEPage -Domain e2e -State Uniform
        $uniform.Gfn | Should -Be 11
        $uniform.UniformWord | Should -Be 0x00C0FFEE
    }

    It 'fits Get-DEPage | Format-Table into 120 columns, with reference, stored bytes and codec' {
        $lines = (Get-DEPage -Domain e2e | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $text = $lines -join "`n"
        $text | Should -Match 'ReferenceDomain\s+StoredBytes\s+Codec'
        $text | Should -Match '\s1 Patched\s+C4\s+False\s+False\s+\d+\s+e2e:0\s+\d+ Delta'
        $text | Should -Match '\s9 Compressed\s+C4\s+False\s+False\s+0\s+\d+ Zstd'
        $text | Should -Match '\s11 Uniform\s+C4\s+False\s+False\s+0 word 00c0ffee'
    }

    It 'fits Get-DEPageStats | Format-Table into 120 columns, with Patched and Compressed counts' {
        $lines = (Get-DEPageStats | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        ($lines | Where-Object { $_ -match '^e2e\s' }) | Should -Match '^e2e\s+1\s+1\s+8\s+2\s+0\s'
    }

    It 'shows the store and every fault kind in Get-DEHostStats' {
        $host_ = Get-DEHostStats
        $host_.StoreBlobs | Should -Be 10
        $host_.StoreStoredBytes | Should -Be $stats.StoredBytes
        $host_.StoreAllocatedBytes | Should -BeGreaterOrEqual $host_.StoreStoredBytes
        $host_.MemoryUsedBytes | Should -Be ($host_.FrameBytes + $host_.StoreAllocatedBytes + $host_.MetadataBytes)
        $text = $host_ | Format-List | Out-String -Width 120
        $text | Should -Match 'Store\s*:\s*\S+ \S+ allocated, \S+ \S+ stored in 10 blobs, [\d.]+% fragmentation'
        $text | Should -Match 'Memory used\s*:.*\(domains .* \+ store slack .* \+ metadata .*\)'
        $host_.Metadata.Total | Should -Be $host_.MetadataBytes
        $host_.Metadata.Store | Should -BeGreaterThan ([DifferenceEngine.Store.CompactStore]::FixedMetadataBytes) -Because 'ten blobs are stored: slabs beyond the empty store''s size classes'
        $text | Should -Match 'Metadata\s*:\s*\S+ \S+ \(P2M \S+ \S+ \+ Frames .*\+ Store '
        foreach ($kind in 'ZeroFill', 'CopyOnWrite', 'PatternFill', 'Unpatch', 'Decompress') {
            $text | Should -Match "$kind\s+\d+\s+p50"
        }
    }

    It 'shows patched and compressed counts in the scan table' {
        $lines = ($scan | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $lines -join "`n" | Should -Match '\s8\s+2\s+\S+ \S+\s+[\d,]+ e2e'
    }

    It 'keeps a reference immutable: a guest write to it goes copy-on-write' {
        (Write-DEGuestPage -Domain e2e -Gfn 0 -Data ([byte[]](1, 2, 3)) -PassThru).Fault | Should -Be 'CopyOnWrite'
        (Get-DEPage -Domain e2e -Gfn 0).State | Should -Be 'Private'
        (Get-DEPage -Domain e2e -Gfn 1).State | Should -Be 'Patched'
        $image[0] = 1; $image[1] = 2; $image[2] = 3
    }

    It 'reads a Patched page back byte for byte (an Unpatch fault), and the page is Private afterwards' {
        $page = Read-DEGuestPage -Domain e2e -Gfn 1
        Test-SameBytes (Get-ImagePage ([IO.File]::ReadAllBytes($path)) 1) $page.Bytes | Should -BeTrue
        (Get-DEPage -Domain e2e -Gfn 1).State | Should -Be 'Private'
        Get-FaultCount 'Unpatch' | Should -Be 1
    }

    It 'reads a Compressed page back byte for byte (a Decompress fault), and the page is Private afterwards' {
        $page = Read-DEGuestPage -Domain e2e -Gfn 9
        Test-SameBytes (Get-ImagePage ([IO.File]::ReadAllBytes($path)) 9) $page.Bytes | Should -BeTrue
        (Get-DEPage -Domain e2e -Gfn 9).State | Should -Be 'Private'
        Get-FaultCount 'Decompress' | Should -Be 1
    }

    It 'fills a Uniform page with its word on the first write (a PatternFill fault)' {
        (Write-DEGuestPage -Domain e2e -Gfn 11 -Data ([byte[]](0xEE)) -Offset 4 -PassThru).Fault | Should -Be 'PatternFill'
        (Read-DEGuestPage -Domain e2e -Gfn 11).Bytes[0..7] | Should -Be @(0xEE, 0xFF, 0xC0, 0x00, 0xEE, 0xFF, 0xC0, 0x00)
    }

    It 'rebuilds the other Patched pages with Disable-DEPatching -Restore, saying how many in Verbose' {
        $verbose = Disable-DEPatching -Domain e2e -Restore -Verbose 4>&1
        "$verbose" | Should -Match "Domain 'e2e': 7 patched page\(s\) rebuilt into frames\."
        (Get-DEPageStats -Domain e2e).PatchedPages | Should -Be 0
        (Get-DEPolicy -Domain e2e).PatchingEnabled | Should -BeFalse
        Get-FaultCount 'Unpatch' | Should -Be 1 -Because 'a restore is not a guest access'
    }

    It 'decompresses the other Compressed page with Disable-DECompression -Restore' {
        $verbose = Disable-DECompression -Domain e2e -Restore -Verbose 4>&1
        "$verbose" | Should -Match "Domain 'e2e': 1 compressed page\(s\) rebuilt into frames\."
        (Get-DEPageStats -Domain e2e).CompressedPages | Should -Be 0
        (Get-DEPolicy -Domain e2e).CompressionEnabled | Should -BeFalse
        (Get-DEHostStats).StoreBlobs | Should -Be 0
    }

    It 'holds every page exactly as the image has it (page 0 and 11 as written)' {
        $image[11 * $PageSize + 4] = 0xEE
        $pages = Read-DEGuestPage -Domain e2e -Gfn (0..15)
        foreach ($p in $pages) {
            Test-SameBytes (Get-ImagePage $image $p.Gfn) $p.Bytes | Should -BeTrue -Because "page $($p.Gfn)"
        }
    }
}

Describe 'Enable-DEPatching and Disable-DEPatching' {
    BeforeAll {
        foreach ($n in 'pa1', 'pa2', 'pb1') { $null = New-DEDomain -Name $n -MemorySize 64KB }
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'turns patching on by name and pattern, and off again' {
        Enable-DEPatching -Domain pa* | Should -BeNullOrEmpty
        (Get-DEDomain).PatchingEnabled | Should -Be @($true, $true, $false)
        Disable-DEPatching -Domain pa1, pa2
        (Get-DEDomain).PatchingEnabled | Should -Be @($false, $false, $false)
    }

    It 'takes domains from the pipeline, as Domain objects and as names, and passes them through' {
        $out = Get-DEDomain pa1, pb1 | Enable-DEPatching -PassThru
        $out | Should -HaveCount 2
        $out[0] | Should -BeOfType ([DifferenceEngine.Domains.Domain])
        $out.Name | Should -Be @('pa1', 'pb1')
        ('pa1', 'pb1' | Disable-DEPatching -PassThru).PatchingEnabled | Should -Be @($false, $false)
    }

    It 'changes nothing with -WhatIf' {
        Enable-DEPatching -Domain * -WhatIf | Should -BeNullOrEmpty
        (Get-DEDomain).PatchingEnabled | Should -Not -Contain $true
        Enable-DEPatching -Domain pa1
        Disable-DEPatching -Domain pa1 -Restore -WhatIf
        (Get-DEDomain pa1).PatchingEnabled | Should -BeTrue
        Disable-DEPatching -Domain pa1
    }

    It 'writes DomainNotFound for an unknown domain and goes on with the others' {
        Enable-DEPatching -Domain nope, pa2 -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -Be 'DomainNotFound,DifferenceEngine.Commands.EnableDEPatchingCommand'
        (Get-DEDomain pa2).PatchingEnabled | Should -BeTrue
        { Disable-DEPatching -Domain nope -ErrorAction Stop } |
            Should -Throw -ErrorId 'DomainNotFound,DifferenceEngine.Commands.DisableDEPatchingCommand'
    }

    It 'restores nothing in a domain without patched pages' {
        $verbose = Disable-DEPatching -Domain pa2 -Restore -Verbose 4>&1
        "$verbose" | Should -Match "Domain 'pa2': 0 patched page\(s\)"
    }
}

Describe 'Enable-DECompression and Disable-DECompression' {
    BeforeAll {
        foreach ($n in 'ca1', 'ca2', 'cb1') { $null = New-DEDomain -Name $n -MemorySize 64KB }
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'turns compression on with the domain''s codec (LZ4 by default), and off again' {
        Enable-DECompression -Domain ca* | Should -BeNullOrEmpty
        (Get-DEDomain).CompressionEnabled | Should -Be @($true, $true, $false)
        (Get-DEDomain).CompressionAlgorithm | Should -Be @('LZ4', 'LZ4', 'LZ4')
        Disable-DECompression -Domain ca*
        (Get-DEDomain).CompressionEnabled | Should -Not -Contain $true
    }

    It 'chooses the codec with -Algorithm <_>, and keeps it when enabled again without one' -ForEach 'LZ4', 'WKdm', 'Zstd' {
        Enable-DECompression -Domain cb1 -Algorithm $_
        (Get-DEPolicy -Domain cb1).CompressionAlgorithm | Should -Be $_
        Disable-DECompression -Domain cb1
        Enable-DECompression -Domain cb1
        (Get-DEPolicy -Domain cb1).CompressionAlgorithm | Should -Be $_
        Disable-DECompression -Domain cb1
    }

    It 'takes domains from the pipeline, as Domain objects and as names, and passes them through' {
        $out = Get-DEDomain ca1, cb1 | Enable-DECompression -Algorithm WKdm -PassThru
        $out.Name | Should -Be @('ca1', 'cb1')
        $out.CompressionAlgorithm | Should -Be @('WKdm', 'WKdm')
        ('ca1', 'cb1' | Disable-DECompression -PassThru).CompressionEnabled | Should -Be @($false, $false)
    }

    It 'changes nothing with -WhatIf' {
        Enable-DECompression -Domain * -Algorithm Zstd -WhatIf | Should -BeNullOrEmpty
        (Get-DEDomain).CompressionEnabled | Should -Not -Contain $true
        (Get-DEDomain ca2).CompressionAlgorithm | Should -Be 'LZ4'
        Enable-DECompression -Domain ca2
        Disable-DECompression -Domain ca2 -Restore -WhatIf
        (Get-DEDomain ca2).CompressionEnabled | Should -BeTrue
        Disable-DECompression -Domain ca2
    }

    It 'refuses an algorithm it does not know, at parameter binding' {
        { Enable-DECompression -Domain ca1 -Algorithm Bogus } |
            Should -Throw -ErrorId 'CannotConvertArgumentNoMessage,DifferenceEngine.Commands.EnableDECompressionCommand'
        (Get-DEDomain ca1).CompressionEnabled | Should -BeFalse
    }

    It 'writes DomainNotFound for an unknown domain' {
        { Enable-DECompression -Domain nope -ErrorAction Stop } |
            Should -Throw -ErrorId 'DomainNotFound,DifferenceEngine.Commands.EnableDECompressionCommand'
        { Disable-DECompression -Domain nope -ErrorAction Stop } |
            Should -Throw -ErrorId 'DomainNotFound,DifferenceEngine.Commands.DisableDECompressionCommand'
    }
}

Describe 'Compressed shared frames' {
    BeforeAll {
        # Two clones of one image: a compressible page (0), repeated text (1) and a random page (2); all three are shared.
        $random = [Random]::new(11)
        $bytes = [byte[]]::new(3 * $PageSize)
        $random.NextBytes($bytes)
        Set-SmallIntegers $bytes 0 $random
        Set-Text $bytes 1 'Shared and cold: one blob for every page that shares this frame. '
        $path = Write-Image 'clone.img' $bytes
        foreach ($n in 'clone1', 'clone2') {
            $null = New-DEDomain -Name $n -Path $path -EnableSharing -EnableCompression -CompressionAlgorithm Zstd
            Set-DEPolicy -Domain $n -C4Sweeps 1
        }
        $scan = Invoke-DEScan -UntilStable
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'compresses each cold shared frame once, into a blob both clones name' {
        $scan.SharedFramesCompressed | Should -Be 2
        foreach ($gfn in 0, 1) {
            $pages = Get-DEDomain clone1, clone2 | Get-DEPage -Gfn $gfn
            $pages.State | Should -Be @('Compressed', 'Compressed')
            $pages[0].SharedBlob | Should -Not -BeNullOrEmpty
            $pages[1].SharedBlob | Should -Be $pages[0].SharedBlob
            $pages.ReferenceCount | Should -Be @(2, 2)
        }
        (Get-DEPage -Domain clone1 -Gfn 2).State | Should -Be 'Shared' -Because 'random bytes do not compress'
    }

    It 'counts them in Get-DEPageStats and Get-DEHostStats' {
        $stats = Get-DEPageStats -Domain clone1
        $stats.CompressedPages | Should -Be 2
        $stats.SharedCompressedPages | Should -Be 2
        $hostStats = Get-DEHostStats
        $hostStats.SharedCompressedFrames | Should -Be 2
        $hostStats.StoreBlobs | Should -Be 2
        $hostStats.FramesInUse | Should -Be 1
        $text = $hostStats | Format-List | Out-String -Width 120
        $text | Should -Match 'stored in 2 blobs,'
        $text | Should -Match 'Shared compressed\s*:\s*2 frames, one blob each'
    }

    It 'shows the blob in Get-DEPage | Format-Table' {
        $text = (Get-DEPage -Domain clone1 | Format-Table | Out-String -Width 120)
        $text | Should -Match '\s0 Compressed\s+C4\s+False\s+False\s+2\s+shared blob \d+\s+\d+ Zstd'
    }

    It 'gives a page read by the guest its own frame, with the bytes it had' {
        $page = Read-DEGuestPage -Domain clone2 -Gfn 1 -Raw
        Test-SameBytes (Get-ImagePage $bytes 1) $page | Should -BeTrue
        (Get-DEPage -Domain clone2 -Gfn 1).State | Should -Be 'Private'
        (Get-DEPage -Domain clone1 -Gfn 1).ReferenceCount | Should -Be 1
        Test-SameBytes (Get-ImagePage $bytes 1) (Read-DEGuestPage -Domain clone1 -Gfn 1 -Raw) | Should -BeTrue
        (Get-DEHostStats).SharedCompressedFrames | Should -Be 1
    }

    It 'decompresses them with Disable-DESharing -Unshare, and then lets the trust group change' {
        { Set-DEPolicy -Domain clone1 -TrustGroup apart -ErrorAction Stop } |
            Should -Throw -ErrorId 'TrustGroupChangeNeedsUnshare,DifferenceEngine.Commands.SetDEPolicyCommand'
        Disable-DESharing -Domain clone1 -Unshare -Confirm:$false
        (Get-DEPage -Domain clone1).State | Should -Be @('Private', 'Private', 'Private')
        Set-DEPolicy -Domain clone1 -TrustGroup apart
        foreach ($gfn in 0..2) {
            Test-SameBytes (Get-ImagePage $bytes $gfn) (Read-DEGuestPage -Domain clone1 -Gfn $gfn -Raw) | Should -BeTrue
            Test-SameBytes (Get-ImagePage $bytes $gfn) (Read-DEGuestPage -Domain clone2 -Gfn $gfn -Raw) | Should -BeTrue
        }
    }
}

Describe 'New-DEDomain with patching and compression' {
    AfterEach {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'turns patching and compression on from the start, with the codec given' {
        $d = New-DEDomain -Name np1 -MemorySize 64KB -EnablePatching -EnableCompression -CompressionAlgorithm WKdm
        $d.PatchingEnabled | Should -BeTrue
        $d.CompressionEnabled | Should -BeTrue
        $d.CompressionAlgorithm | Should -Be 'WKdm'
        $d.SharingEnabled | Should -BeFalse
    }

    It 'leaves them off, with LZ4, by default' {
        $d = New-DEDomain -Name np2 -MemorySize 64KB
        $d.PatchingEnabled | Should -BeFalse
        $d.CompressionEnabled | Should -BeFalse
        $d.CompressionAlgorithm | Should -Be 'LZ4'
    }

    It 'shows the mechanisms in the domain table' {
        $null = New-DEDomain -Name np3 -MemorySize 64KB -EnableSharing -EnablePatching -EnableCompression -CompressionAlgorithm Zstd
        $lines = (Get-DEDomain np3 | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $lines -join "`n" | Should -Match 'SharingEnabled\s+PatchingEnabled\s+CompressionEnabled'
        $lines -join "`n" | Should -Match 'np3\s+Running\s+64\.0 KiB\s+default\s+On\s+On\s+Zstd\s+empty'
    }
}

Describe 'Get-DEPolicy' {
    BeforeAll {
        $null = New-DEDomain -Name g1 -MemorySize 64KB
        $null = New-DEDomain -Name g2 -MemorySize 64KB -TrustGroup tenant -C4Sweeps 5 -EnableSharing
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'gives one object per domain, every domain by default, with the defaults' {
        $policies = Get-DEPolicy
        $policies | Should -HaveCount 2
        $policies[0] | Should -BeOfType ([DifferenceEngine.Commands.DomainPolicyView])
        $policies.Domain | Should -Be @('g1', 'g2')
        $g1 = $policies[0]
        $g1.Host | Should -Be $deHost.Name
        $g1.TrustGroup | Should -Be 'default'
        $g1.SharingEnabled, $g1.PatchingEnabled, $g1.CompressionEnabled | Should -Be @($false, $false, $false)
        $g1.CompressionAlgorithm | Should -Be 'LZ4'
        $g1.PatchThreshold | Should -Be 2048
        $g1.CompressionThreshold | Should -Be 0.75
        $g1.C4Sweeps | Should -Be 2
    }

    It 'shows each domain''s own values' {
        $g2 = Get-DEPolicy -Domain g2
        $g2.TrustGroup | Should -Be 'tenant'
        $g2.C4Sweeps | Should -Be 5
        $g2.SharingEnabled | Should -BeTrue
    }

    It 'carries the host''s detector settings beside each domain''s policy' {
        $g1 = Get-DEPolicy -Domain g1
        $g1.SimilarityKeys | Should -Be 2
        $g1.SimilarityBlocksPerKey | Should -Be 1
        $g1.SimilarityCandidates | Should -Be 1
        $g1.SimilaritySeed | Should -Be $Seed
        $g1.CompactionThreshold | Should -Be 0.25
    }

    It 'gives the host''s policy with -HostPolicy' {
        $hp = Get-DEPolicy -HostPolicy
        $hp | Should -BeOfType ([DifferenceEngine.Commands.HostPolicyView])
        $hp.Host | Should -Be $deHost.Name
        $hp.SimilarityKeys | Should -Be 2
        $hp.SimilarityBlocksPerKey | Should -Be 1
        $hp.SimilarityCandidates | Should -Be 1
        $hp.SimilaritySeed | Should -Be $Seed
        $hp.SimilarityOffsets | Should -HaveCount 2
        $hp.SimilarityOffsets | ForEach-Object { $_ | Should -BeLessOrEqual ($PageSize - 64) }
        $hp.CompactionThreshold | Should -Be 0.25
        (Get-DEPolicy -HostP).SimilarityOffsets | Should -Be $hp.SimilarityOffsets -Because 'a prefix names it'
    }

    It 'draws the same block offsets from the same seed' {
        $other = Connect-DEHost -Name (New-TestHostName) -SimilaritySeed $Seed -PassThru
        try {
            (Get-DEPolicy -HostPolicy -DEHost $other).SimilarityOffsets | Should -Be $Offsets
        }
        finally {
            $other | Disconnect-DEHost -Confirm:$false
        }
    }

    It 'takes domains from the pipeline, as Domain objects and as names' {
        (Get-DEDomain g2 | Get-DEPolicy).Domain | Should -Be 'g2'
        ('g2', 'g1' | Get-DEPolicy).Domain | Should -Be @('g2', 'g1')
    }

    It 'does not take -Domain and -HostPolicy together' {
        { Get-DEPolicy -Domain g1 -HostPolicy } | Should -Throw -ErrorId 'AmbiguousParameterSet,DifferenceEngine.Commands.GetDEPolicyCommand'
    }

    It 'writes DomainNotFound for an unknown domain' {
        { Get-DEPolicy -Domain nope -ErrorAction Stop } | Should -Throw -ErrorId 'DomainNotFound,DifferenceEngine.Commands.GetDEPolicyCommand'
    }

    It 'shows a table that fits 120 columns' {
        $lines = (Get-DEPolicy | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $text = $lines -join "`n"
        $text | Should -Match 'Domain\s+TrustGroup\s+SharingEnabled\s+PatchingEnabled\s+CompressionEnabled\s+PatchThreshold\s+CompressionThreshold\s+C4Sweeps'
        $text | Should -Match 'g2\s+tenant\s+On\s+Off\s+Off\s+2.00 KiB\s+75.0%\s+5'
    }

    It 'shows the host policy as a list' {
        $text = Get-DEPolicy -HostPolicy | Out-String -Width 120
        $text | Should -Match 'Similarity detector\s*:\s*k=2 keys of s=1 64-byte blocks, c=1 candidates per key'
        $text | Should -Match "Seed\s*:\s*$Seed"
        $text | Should -Match "Block offsets\s*:\s*$($Offsets -join ', ')"
        $text | Should -Match 'Compaction threshold\s*:\s*25.0% fragmentation'
    }
}

Describe 'Set-DEPolicy' {
    BeforeAll {
        # A host of its own: the detector settings changed here must not reach the other tests.
        $previous = Get-DEHost -Current
        $policyHost = Connect-DEHost -Name (New-TestHostName) -SimilaritySeed 3 -PassThru
        foreach ($n in 's1', 's2', 't1') { $null = New-DEDomain -Name $n -MemorySize 64KB }
    }

    AfterAll {
        $policyHost | Disconnect-DEHost -Confirm:$false
        (Get-DEHost -Current).Name | Should -Be $previous.Name
    }

    It 'changes every value given, and only those' {
        Set-DEPolicy -Domain s1 -C4Sweeps 4 -PatchThreshold 1024 -CompressionThreshold 0.25 -CompressionAlgorithm WKdm -TrustGroup blue |
            Should -BeNullOrEmpty
        $p = Get-DEPolicy -Domain s1
        $p.C4Sweeps | Should -Be 4
        $p.PatchThreshold | Should -Be 1024
        $p.CompressionThreshold | Should -Be 0.25
        $p.CompressionAlgorithm | Should -Be 'WKdm'
        $p.TrustGroup | Should -Be 'blue'
        Set-DEPolicy -Domain s1 -PatchThreshold 512
        $p = Get-DEPolicy -Domain s1
        $p.PatchThreshold | Should -Be 512
        $p.C4Sweeps | Should -Be 4
        $p.CompressionAlgorithm | Should -Be 'WKdm'
    }

    It 'round-trips through a CSV: Get-DEPolicy | Export-Csv, edit, Import-Csv | Set-DEPolicy' {
        Set-DEPolicy -Domain t1 -C4Sweeps 3 -PatchThreshold 700 -CompressionAlgorithm Zstd
        $csv = Join-Path $TestDrive 'policy.csv'
        Get-DEPolicy -Domain s2, t1 | Export-Csv -LiteralPath $csv
        $rows = Import-Csv -LiteralPath $csv
        ($rows | Where-Object Domain -EQ t1).CompressionAlgorithm | Should -Be 'Zstd'   # a name, not a number
        foreach ($row in $rows) { $row.PatchThreshold = 900; $row.C4Sweeps = 5 }
        $rows | Export-Csv -LiteralPath $csv
        Import-Csv -LiteralPath $csv | Set-DEPolicy
        foreach ($name in 's2', 't1') {
            $p = Get-DEPolicy -Domain $name
            $p.PatchThreshold | Should -Be 900
            $p.C4Sweeps | Should -Be 5
        }
        (Get-DEPolicy -Domain t1).CompressionAlgorithm | Should -Be 'Zstd'
        (Get-DEPolicy -Domain s2).CompressionAlgorithm | Should -Be 'LZ4'
    }

    It 'writes the codec as its name in JSON' {
        (Get-DEPolicy -Domain t1 | ConvertTo-Json | ConvertFrom-Json).CompressionAlgorithm | Should -Be 'Zstd'
    }

    It 'writes a domain''s host by name in Export-Csv' {
        $csv = Join-Path $TestDrive 'domains.csv'
        Get-DEDomain -Name t1 | Export-Csv -LiteralPath $csv
        (Import-Csv -LiteralPath $csv).Host | Should -Be $policyHost.Name
    }

    It 'passes the new policy through, and takes domains by pattern and from the pipeline' {
        $out = Set-DEPolicy -Domain s* -C4Sweeps 6 -PassThru
        $out | Should -HaveCount 2
        $out[0] | Should -BeOfType ([DifferenceEngine.Commands.DomainPolicyView])
        $out.C4Sweeps | Should -Be @(6, 6)
        (Get-DEDomain t1 | Set-DEPolicy -C4Sweeps 7 -PassThru).C4Sweeps | Should -Be 7
        (Get-DEDomain t1 | Set-DEPolicy -TrustGroup green -PassThru).TrustGroup | Should -Be 'green' -Because 'a value given on the command line is kept'
        ('s2', 't1' | Set-DEPolicy -PatchThreshold 300 -PassThru).Domain | Should -Be @('s2', 't1')
        (Get-DEPolicy -Domain s2, t1 | Set-DEPolicy -CompressionThreshold 0.4 -PassThru).CompressionThreshold | Should -Be @(0.4, 0.4)
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-DEPolicy | ConvertTo-Json
        Set-DEPolicy -Domain * -C4Sweeps 9 -PatchThreshold 100 -CompressionAlgorithm Zstd -TrustGroup red -WhatIf | Should -BeNullOrEmpty
        Set-DEPolicy -HostPolicy -SimilarityKeys 5 -SimilaritySeed 99 -CompactionThreshold 0.9 -WhatIf | Should -BeNullOrEmpty
        Get-DEPolicy | ConvertTo-Json | Should -Be $before
        (Get-DEPolicy -HostPolicy).SimilaritySeed | Should -Be 3
    }

    It 'stops with <Id> for <Name> = <Value>, changing nothing' -ForEach @(
        @{ Name = 'C4Sweeps'; Value = 0; Id = 'PolicyC4SweepsInvalid' }
        @{ Name = 'C4Sweeps'; Value = 16; Id = 'PolicyC4SweepsInvalid' }
        @{ Name = 'PatchThreshold'; Value = 99999; Id = 'PolicyPatchThresholdInvalid' }
        @{ Name = 'PatchThreshold'; Value = 8; Id = 'PolicyPatchThresholdInvalid' }
        @{ Name = 'CompressionThreshold'; Value = 2.0; Id = 'PolicyCompressionThresholdInvalid' }
        @{ Name = 'TrustGroup'; Value = ' '; Id = 'PolicyTrustGroupInvalid' }
        @{ Name = 'TrustGroup'; Value = ''; Id = 'PolicyTrustGroupInvalid' }
        @{ Name = 'TrustGroup'; Value = 'a;b'; Id = 'PolicyTrustGroupInvalid' }
    ) {
        $before = Get-DEPolicy | ConvertTo-Json
        # A good value beside the bad one: it must not be applied either.
        $arguments = @{ C4Sweeps = 3; PatchThreshold = 1000 }
        $arguments[$Name] = $Value
        { Set-DEPolicy -Domain * @arguments } | Should -Throw -ErrorId "$Id,DifferenceEngine.Commands.SetDEPolicyCommand"
        try { Set-DEPolicy -Domain * @arguments } catch { $_.CategoryInfo.Category | Should -Be 'InvalidArgument' }
        Get-DEPolicy | ConvertTo-Json | Should -Be $before
    }

    It 'stops with SetDEPolicyNoValue when no value is given' {
        { Set-DEPolicy -Domain s1 } | Should -Throw -ErrorId 'SetDEPolicyNoValue,DifferenceEngine.Commands.SetDEPolicyCommand'
        # A piped domain's own TrustGroup and CompressionAlgorithm are not values to set.
        { Get-DEDomain s1 | Set-DEPolicy } | Should -Throw -ErrorId 'SetDEPolicyNoValue,DifferenceEngine.Commands.SetDEPolicyCommand'
        { Set-DEPolicy -HostPolicy } | Should -Throw -ErrorId 'SetDEPolicyNoValue,DifferenceEngine.Commands.SetDEPolicyCommand'
    }

    It 'changes the host''s detector and compaction threshold with -HostPolicy' {
        $hp = Set-DEPolicy -HostPolicy -SimilarityKeys 3 -SimilarityBlocksPerKey 2 -SimilarityCandidates 4 -SimilaritySeed 11 -CompactionThreshold 0.4 -PassThru
        $hp | Should -BeOfType ([DifferenceEngine.Commands.HostPolicyView])
        $hp.SimilarityKeys | Should -Be 3
        $hp.SimilarityBlocksPerKey | Should -Be 2
        $hp.SimilarityCandidates | Should -Be 4
        $hp.SimilaritySeed | Should -Be 11
        $hp.SimilarityOffsets | Should -HaveCount 6
        $hp.CompactionThreshold | Should -Be 0.4
        (Get-DEPolicy -Domain s1).SimilarityKeys | Should -Be 3
        (Set-DEPolicy -HostPolicy -SimilarityCandidates 1 -PassThru).SimilarityKeys | Should -Be 3 -Because 'values not given stay'
    }

    It 'stops with <Id> for host <Name> = <Value>, changing nothing' -ForEach @(
        @{ Name = 'SimilarityKeys'; Value = 0; Id = 'PolicySimilarityKeysInvalid' }
        @{ Name = 'SimilarityKeys'; Value = 9; Id = 'PolicySimilarityKeysInvalid' }
        @{ Name = 'SimilarityBlocksPerKey'; Value = 0; Id = 'PolicySimilarityBlocksInvalid' }
        @{ Name = 'SimilarityCandidates'; Value = 99; Id = 'PolicySimilarityCandidatesInvalid' }
        @{ Name = 'CompactionThreshold'; Value = 1.5; Id = 'PolicyCompactionThresholdInvalid' }
    ) {
        $before = Get-DEPolicy -HostPolicy | ConvertTo-Json
        $arguments = @{ $Name = $Value }
        { Set-DEPolicy -HostPolicy -SimilaritySeed 12345 @arguments } | Should -Throw -ErrorId "$Id,DifferenceEngine.Commands.SetDEPolicyCommand"
        try { Set-DEPolicy -HostPolicy @arguments } catch { $_.CategoryInfo.Category | Should -Be 'InvalidArgument' }
        Get-DEPolicy -HostPolicy | ConvertTo-Json | Should -Be $before
    }

    It 'does not mix domain and host values' {
        { Set-DEPolicy -HostPolicy -C4Sweeps 3 } | Should -Throw -ErrorId 'AmbiguousParameterSet,DifferenceEngine.Commands.SetDEPolicyCommand'
        { Set-DEPolicy -Domain s1 -SimilarityKeys 3 } | Should -Throw -ErrorId 'AmbiguousParameterSet,DifferenceEngine.Commands.SetDEPolicyCommand'
    }

    It 'refuses a new trust group while the domain has Shared pages (TrustGroupChangeNeedsUnshare), and goes on with the others' {
        $data = [byte[]]::new($PageSize)
        [Random]::new(5).NextBytes($data)
        foreach ($n in 'tg1', 'tg2') {
            $null = New-DEDomain -Name $n -MemorySize 64KB -EnableSharing
            Write-DEGuestPage -Domain $n -Gfn 0, 1 -Data $data
        }
        $null = Invoke-DEScan -Domain tg1, tg2 -UntilStable
        (Get-DEPageStats -Domain tg1).SharedPages | Should -Be 2
        Set-DEPolicy -Domain tg1, t1 -TrustGroup green -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -Be 'TrustGroupChangeNeedsUnshare,DifferenceEngine.Commands.SetDEPolicyCommand'
        $err[0].CategoryInfo.Category | Should -Be 'InvalidOperation'
        (Get-DEPolicy -Domain tg1).TrustGroup | Should -Be 'default'
        (Get-DEPolicy -Domain t1).TrustGroup | Should -Be 'green'
        Disable-DESharing -Domain tg1 -Unshare
        (Set-DEPolicy -Domain tg1 -TrustGroup green -PassThru).TrustGroup | Should -Be 'green'
    }

    It 'keeps the trust group when it is given unchanged, even with Shared pages' {
        (Get-DEPageStats -Domain tg2).SharedPages | Should -BeGreaterThan 0
        (Set-DEPolicy -Domain tg2 -TrustGroup default -C4Sweeps 3 -PassThru).C4Sweeps | Should -Be 3
    }
}

Describe 'Restoring under a memory limit' {
    BeforeAll {
        # 256 frames: the pages to restore outnumber the frames left free after a filler takes the rest.
        $small = Connect-DEHost -Name (New-TestHostName) -MemoryLimit 1MB -SimilaritySeed $Seed -PassThru
        $smallImage = New-TestImage $Offsets 2
        $null = New-DEDomain -DEHost $small -Name r1 -Path (Write-Image 'r1.img' $smallImage) -EnableSharing -EnablePatching -EnableCompression -CompressionAlgorithm Zstd
        Set-DEPolicy -DEHost $small -Domain r1 -C4Sweeps 1
        $null = Invoke-DEScan -DEHost $small -Domain r1 -UntilStable
        # r2, scanned after r1 so that r1's page 0 is the reference: a near-copy of that page, and a random page.
        $r2 = [byte[]]::new(2 * $PageSize)
        [Random]::new(3).NextBytes($r2)
        [Array]::Copy($smallImage, 0, $r2, 0, $PageSize)
        Set-NearCopy $r2 0 0 $Offsets ([Random]::new(4))
        $null = New-DEDomain -DEHost $small -Name r2 -Path (Write-Image 'r2.img' $r2) -EnablePatching
        $null = Invoke-DEScan -DEHost $small -Domain r2 -UntilStable
        $free = (Get-DEHostStats -DEHost $small).FramesFree
        # Leave one frame free.
        $null = New-DEDomain -DEHost $small -Name filler -MemorySize 1MB
        $data = [byte[]]::new(64)
        [Random]::new(6).NextBytes($data)
        Write-DEGuestPage -DEHost $small -Domain filler -Gfn (0..($free - 2)) -Data $data
    }

    AfterAll {
        $small | Disconnect-DEHost -Confirm:$false
    }

    It 'has patched and compressed pages, and one free frame' {
        (Get-DEPageStats -DEHost $small -Domain r1).PatchedPages | Should -Be 8
        (Get-DEPageStats -DEHost $small -Domain r1).CompressedPages | Should -Be 2
        (Get-DEPageStats -DEHost $small -Domain r2).PatchedPages | Should -Be 1
        (Get-DEHostStats -DEHost $small).FramesFree | Should -Be 1
    }

    It 'writes InsufficientMemoryToRestore for a domain whose pages do not fit, changes it not, and goes on with the next' {
        Disable-DEPatching -DEHost $small -Domain r1, r2 -Restore -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -Be 'InsufficientMemoryToRestore,DifferenceEngine.Commands.DisableDEPatchingCommand'
        $err[0].CategoryInfo.Category | Should -Be 'ResourceUnavailable'
        $err[0].TargetObject.Name | Should -Be 'r1'
        (Get-DEPageStats -DEHost $small -Domain r1).PatchedPages | Should -Be 8 -Because 'nothing was changed'
        (Get-DEPolicy -DEHost $small -Domain r1).PatchingEnabled | Should -BeTrue
        (Get-DEPageStats -DEHost $small -Domain r2).PatchedPages | Should -Be 0
        (Get-DEPolicy -DEHost $small -Domain r2).PatchingEnabled | Should -BeFalse
    }

    It 'writes InsufficientMemoryToRestore for compressed pages that do not fit' {
        { Disable-DECompression -DEHost $small -Domain r1 -Restore -ErrorAction Stop } |
            Should -Throw -ErrorId 'InsufficientMemoryToRestore,DifferenceEngine.Commands.DisableDECompressionCommand'
        (Get-DEPageStats -DEHost $small -Domain r1).CompressedPages | Should -Be 2
        (Get-DEPolicy -DEHost $small -Domain r1).CompressionEnabled | Should -BeTrue
    }

    It 'restores once the frames are there' {
        Remove-DEDomain -DEHost $small -Name filler -Confirm:$false
        Disable-DEPatching -DEHost $small -Domain r1 -Restore
        Disable-DECompression -DEHost $small -Domain r1 -Restore
        $stats = Get-DEPageStats -DEHost $small -Domain r1
        $stats.PatchedPages + $stats.CompressedPages | Should -Be 0
        $pages = Read-DEGuestPage -DEHost $small -Domain r1 -Gfn (0..15)
        foreach ($p in $pages) {
            Test-SameBytes (Get-ImagePage $smallImage $p.Gfn) $p.Bytes | Should -BeTrue -Because "page $($p.Gfn)"
        }
    }
}
