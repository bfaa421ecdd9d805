# Enable-DESharing, Disable-DESharing, Invoke-DEScan, Get-DEPageStats and Get-DEPage, and sharing end to end:
# the engine's counts are checked against counts made here from the page contents, not by the engine.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $deHost = Connect-DEHost -Name "pester-sharing-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
    $PageSize = 4096
    $ZeroKey = [Convert]::ToHexString([Security.Cryptography.SHA256]::HashData([byte[]]::new($PageSize)))

    # SHA-256 of every 4 KiB page of a byte array, as hex strings: an identity of page contents
    # that shares no code with the engine (which hashes with xxHash3 and compares bytes). A page that is one
    # 32-bit word repeated, not zero, gets the key "uniform:" and its hash: the engine folds such a page into
    # its word (Uniform) instead of sharing it.
    function Get-PageKeys([byte[]]$Bytes) {
        $sha = [Security.Cryptography.SHA256]::Create()
        try {
            for ($offset = 0; $offset -lt $Bytes.Length; $offset += $PageSize) {
                $key = [Convert]::ToHexString($sha.ComputeHash($Bytes, $offset, $PageSize))
                if ($key -ne $ZeroKey -and (Test-UniformPage $Bytes $offset)) { "uniform:$key" } else { $key }
            }
        }
        finally {
            $sha.Dispose()
        }
    }

    # Whether the page at $Offset is one 32-bit word repeated: each byte equals the one four before it.
    function Test-UniformPage([byte[]]$Bytes, [int]$Offset) {
        [Linq.Enumerable]::SequenceEqual([ArraySegment[byte]]::new($Bytes, $Offset + 4, $PageSize - 4),
            [ArraySegment[byte]]::new($Bytes, $Offset, $PageSize - 4))
    }

    # What sharing must reach: per domain, pages that are zero, pages that are one word repeated (uniform),
    # pages whose contents occur more than once among the domains of its trust group (shared), and the rest
    # (private); and the frames that remain. $Pages maps a domain name to @{ Group = trust group; Keys = page
    # keys in gfn order, from Get-PageKeys }.
    function Get-ExpectedSharing([hashtable]$Pages) {
        $occurrences = @{}
        foreach ($d in $Pages.Values) {
            foreach ($key in $d.Keys) {
                if ($key -eq $ZeroKey -or $key.StartsWith('uniform:')) { continue }
                $groupKey = "$($d.Group)|$key"
                $occurrences[$groupKey] = 1 + [int]$occurrences[$groupKey]
            }
        }
        $expected = @{}
        $privateTotal = 0
        foreach ($name in $Pages.Keys) {
            $d = $Pages[$name]
            $zero = 0; $uniform = 0; $shared = 0; $private = 0
            foreach ($key in $d.Keys) {
                if ($key -eq $ZeroKey) { $zero++ }
                elseif ($key.StartsWith('uniform:')) { $uniform++ }
                elseif ($occurrences["$($d.Group)|$key"] -gt 1) { $shared++ }
                else { $private++ }
            }
            $expected[$name] = [pscustomobject]@{ Zero = $zero; Uniform = $uniform; Shared = $shared; Private = $private }
            $privateTotal += $private
        }
        $sharedFrames = @($occurrences.Values | Where-Object { $_ -gt 1 }).Count
        [pscustomobject]@{ Domains = $expected; Frames = $privateTotal + $sharedFrames; SharedFrames = $sharedFrames }
    }

    function Copy-Page([byte[]]$Bytes, [int]$From, [int]$To) {
        [Array]::Copy($Bytes, $From * $PageSize, $Bytes, $To * $PageSize, $PageSize)
    }

    function Clear-Page([byte[]]$Bytes, [int[]]$Gfn) {
        foreach ($g in $Gfn) { [Array]::Clear($Bytes, $g * $PageSize, $PageSize) }
    }

    function Write-Image([string]$Name, [byte[]]$Bytes) {
        $path = Join-Path $TestDrive $Name
        [IO.File]::WriteAllBytes($path, $Bytes)
        $path
    }
}

AfterAll {
    $deHost | Disconnect-DEHost -Confirm:$false
}

Describe 'Sharing random images with planted duplicates and zero pages' {
    BeforeAll {
        # Image A: random pages, some zero, some repeated within it.
        $a = [byte[]]::new(512 * $PageSize)
        [Random]::new(1).NextBytes($a)
        Clear-Page $a (@(3) + (400..409))
        Copy-Page $a 10 11
        Copy-Page $a 10 12
        Copy-Page $a 100 200
        # Image B: its first 128 pages are A's, the rest its own, with zero pages and a repeat of its own.
        $b = [byte[]]::new(512 * $PageSize)
        [Random]::new(2).NextBytes($b)
        [Array]::Copy($a, 0, $b, 0, 128 * $PageSize)
        Clear-Page $b (300..309)
        Copy-Page $b 256 257
        $pathA = Write-Image 'a.img' $a
        $pathB = Write-Image 'b.img' $b

        # a1 and b1 share a trust group; c1 holds A again but alone in its group.
        $null = New-DEDomain -Name a1 -Path $pathA
        $null = New-DEDomain -Name b1 -Path $pathB
        $null = New-DEDomain -Name c1 -Path $pathA -TrustGroup isolated
        $null = New-DEDomain -Name idle -MemorySize 1MB

        $expected = Get-ExpectedSharing @{
            a1   = @{ Group = 'default'; Keys = @(Get-PageKeys $a) }
            b1   = @{ Group = 'default'; Keys = @(Get-PageKeys $b) }
            c1   = @{ Group = 'isolated'; Keys = @(Get-PageKeys $a) }
            idle = @{ Group = 'default'; Keys = @(Get-PageKeys ([byte[]]::new(1MB))) }
        }
        $before = Get-DEPageStats
        Get-DEDomain | Enable-DESharing
        $scan = Invoke-DEScan -UntilStable
        $stats = @{}
        Get-DEPageStats | ForEach-Object { $stats[$_.Domain] = $_ }
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'loads every page as Private before scanning' {
        ($before | Where-Object Domain -NE 'idle').PrivatePages | Should -Be @(512, 512, 512)
        ($before | Where-Object Domain -NE 'idle').SharedPages | Should -Be @(0, 0, 0)
    }

    It 'reaches a stable state' {
        $scan | Should -BeOfType ([DifferenceEngine.Scanning.ScanResult])
        $scan.Stable | Should -BeTrue
        $scan.Passes | Should -BeGreaterOrEqual 2
        $scan.PagesMerged | Should -BeGreaterThan 0
    }

    It 'finds every zero, shared and private page of <_> that an independent count finds' -ForEach 'a1', 'b1', 'c1', 'idle' {
        $want = $expected.Domains[$_]
        $got = $stats[$_]
        # idle was never written: its zero pages are untouched (not guest memory), the others' are zero pages.
        if ($_ -eq 'idle') { $got.UntouchedPages | Should -Be $want.Zero -Because 'an empty domain''s pages are untouched' }
        else { $got.ZeroPages | Should -Be $want.Zero -Because 'zero pages' }
        $got.UniformPages | Should -Be $want.Uniform -Because 'pages of one word repeated'
        $got.SharedPages | Should -Be $want.Shared -Because 'shared pages'
        $got.PrivatePages | Should -Be $want.Private -Because 'private pages'
    }

    It 'shares only within a trust group' {
        # c1 is a copy of a1 but alone in its group: only A's own repeats are shared there.
        $stats['c1'].SharedPages | Should -Be 5 -Because 'pages 10, 11, 12 and pages 100, 200 are the repeats within A'
    }

    It 'keeps exactly one frame per private page and per distinct shared contents' {
        $host_ = Get-DEHostStats
        $host_.FramesInUse | Should -Be $expected.Frames
        $host_.SharedFrames | Should -Be $expected.SharedFrames
    }

    It 'still returns every page''s original bytes' {
        $a1 = Read-DEGuestPage -Domain a1 -Gfn (0..511) -Raw | ForEach-Object { [Convert]::ToHexString([Security.Cryptography.SHA256]::HashData($_)) }
        $a1 | Should -Be @(Get-PageKeys $a)
    }

    It 'lists only Shared pages with Get-DEPage -State Shared' {
        $shared = @(Get-DEPage -Domain b1 -State Shared)
        $shared.Count | Should -Be $stats['b1'].SharedPages
        $shared.State | Select-Object -Unique | Should -Be 'Shared'
        $shared | ForEach-Object { $_.ReferenceCount | Should -BeGreaterOrEqual 2 }
        $shared | ForEach-Object { $_.Hash | Should -Not -BeNullOrEmpty }
    }

    It 'gives Zero pages no frame and no hash' {
        $zero = @(Get-DEPage -Domain a1 -State Zero)
        $zero.Gfn | Should -Be (@(3) + (400..409))
        $zero | ForEach-Object { $_.Frame | Should -BeNullOrEmpty; $_.Hash | Should -BeNullOrEmpty }
    }

    It 'breaks sharing with copy-on-write on a guest write, and the other sharers keep their bytes' {
        $gfn = (Get-DEPage -Domain b1 -State Shared | Select-Object -First 1).Gfn
        $original = (Read-DEGuestPage -Domain a1 -Gfn $gfn).Bytes
        (Write-DEGuestPage -Domain b1 -Gfn $gfn -Data ([byte[]](1, 2, 3)) -PassThru).Fault | Should -Be 'CopyOnWrite'
        (Get-DEPage -Domain b1 -Gfn $gfn).State | Should -Be 'Private'
        [Linq.Enumerable]::SequenceEqual([byte[]](Read-DEGuestPage -Domain a1 -Gfn $gfn).Bytes, [byte[]]$original) | Should -BeTrue
    }

    It 'fits Get-DEPageStats | Format-Table into 120 columns' {
        $lines = (Get-DEPageStats | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $header = $lines | Where-Object { $_ -match '^Domain\s' }
        $header | Should -Match 'ZeroPages\s+SharedPages\s+PatchedPages\s+CompressedPages\s+SwappedPages\s+BytesUsed\s+BytesSaved\s+SavingsPercent'
        ($lines | Where-Object { $_ -match '^idle\s' }) | Should -Match '^idle\s+0\s+0\s+0\s+0\s+0\s+0 B\s+0 B\s+0\.0%'
    }
}

Describe 'Sharing real process memory' {
    BeforeAll {
        # Two copies of a small program, snapshotted: they share their binary and libraries with each other.
        # Each has echoed a line back before its snapshot, so it is loaded and waits in its read loop; both
        # live until AfterAll ends them.
        $programs = @(Start-ReadyProcess; Start-ReadyProcess)
        $pages = @{}
        foreach ($i in 0, 1) {
            $name = "cat$i"
            $null = New-DEDomain -Name $name -ProcessId $programs[$i].Id
            $count = (Get-DEDomain $name).PageCount
            # The snapshot does not change any more: its bytes, read before any scan, are the truth to count.
            $bytes = [byte[]]::new($count * $PageSize)
            $gfn = 0
            Read-DEGuestPage -Domain $name -Gfn (0..($count - 1)) -Raw | ForEach-Object { [Array]::Copy($_, 0, $bytes, $PageSize * $gfn++, $PageSize) }
            $pages[$name] = @{ Group = 'default'; Keys = @(Get-PageKeys $bytes) }
        }
        $expected = Get-ExpectedSharing $pages
        'cat0', 'cat1' | Enable-DESharing
        $null = Invoke-DEScan -UntilStable
        $stats = @{}
        Get-DEPageStats | ForEach-Object { $stats[$_.Domain] = $_ }
    }

    AfterAll {
        Stop-ReadyProcess $programs
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'finds the zero, uniform, shared and private pages of <_> that an independent count finds' -ForEach 'cat0', 'cat1' {
        $want = $expected.Domains[$_]
        $stats[$_].ZeroPages | Should -Be $want.Zero
        $stats[$_].UniformPages | Should -Be $want.Uniform
        $stats[$_].SharedPages | Should -Be $want.Shared
        $stats[$_].PrivatePages | Should -Be $want.Private
    }

    It 'shares something between the two processes' {
        $stats['cat1'].SharedPages | Should -BeGreaterThan 10
        (Get-DEHostStats).FramesInUse | Should -Be $expected.Frames
    }
}

Describe 'Enable-DESharing and Disable-DESharing' {
    BeforeAll {
        $img = [byte[]]::new(64 * $PageSize)
        [Random]::new(9).NextBytes($img)
        $path = Write-Image 'share.img' $img
        foreach ($n in 'web1', 'web2', 'db1') { $null = New-DEDomain -Name $n -Path $path }
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    BeforeEach {
        Get-DEDomain | Disable-DESharing -Unshare
    }

    It 'enables the domains Get-DEDomain pipes in' {
        Get-DEDomain web* | Enable-DESharing
        (Get-DEDomain).SharingEnabled | Should -Be @($true, $true, $false)
    }

    It 'enables domains named on the pipeline' {
        'db1' | Enable-DESharing
        (Get-DEDomain db1).SharingEnabled | Should -BeTrue
    }

    It 'outputs the domains with -PassThru and nothing without' {
        (Enable-DESharing -Domain web* -PassThru).Name | Should -Be @('web1', 'web2')
        Enable-DESharing -Domain db1 | Should -BeNullOrEmpty
        (Disable-DESharing -Domain db1 -PassThru).Name | Should -Be 'db1'
    }

    It 'enables nothing with -WhatIf' {
        Get-DEDomain | Enable-DESharing -WhatIf
        (Get-DEDomain).SharingEnabled | Should -Not -Contain $true
    }

    It 'stops merging without unsharing, and unshares with -Unshare' {
        Enable-DESharing -Domain *
        $null = Invoke-DEScan -UntilStable
        (Get-DEPageStats -Domain web1).SharedPages | Should -Be 64
        Disable-DESharing -Domain web1
        (Get-DEDomain web1).SharingEnabled | Should -BeFalse
        (Get-DEPageStats -Domain web1).SharedPages | Should -Be 64
        Disable-DESharing -Domain web1 -Unshare
        (Get-DEPageStats -Domain web1).SharedPages | Should -Be 0
        (Get-DEPageStats -Domain web1).PrivatePages | Should -Be 64
        (Get-DEPageStats -Domain web2).SharedPages | Should -Be 64 -Because 'web2 and db1 still share'
        $null = Invoke-DEScan -UntilStable
        (Get-DEPageStats -Domain web1).SharedPages | Should -Be 0 -Because 'scans no longer merge web1'
    }

    It 'unshares nothing with -WhatIf' {
        Enable-DESharing -Domain *
        $null = Invoke-DEScan -UntilStable
        Get-DEDomain | Disable-DESharing -Unshare -WhatIf
        (Get-DEPageStats).SharedPages | Should -Be @(64, 64, 64)
        (Get-DEDomain).SharingEnabled | Should -Be @($true, $true, $true)
    }

    It 'writes DomainNotFound for an unknown domain and goes on with the others' {
        Enable-DESharing -Domain nope, db1 -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -Be 'DomainNotFound,DifferenceEngine.Commands.EnableDESharingCommand'
        (Get-DEDomain db1).SharingEnabled | Should -BeTrue
        { Disable-DESharing -Domain nope -ErrorAction Stop } |
            Should -Throw -ErrorId 'DomainNotFound,DifferenceEngine.Commands.DisableDESharingCommand'
    }

    It 'refuses to unshare when the memory limit leaves too few frames (InsufficientMemoryToUnshare)' {
        # 25 frames: 24 pages of the same contents merge into one frame, a filler takes 16, and unsharing
        # s2's 16 shared pages would need more than the 8 left.
        $small = Connect-DEHost -Name "pester-sharing-small-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -MemoryLimit 100KB -PassThru
        try {
            $null = New-DEDomain -DEHost $small -Name s2 -MemorySize 64KB -EnableSharing
            $null = New-DEDomain -DEHost $small -Name s3 -MemorySize 32KB -EnableSharing
            $data = [byte[]]::new($PageSize)
            [Random]::new(4).NextBytes($data)
            Write-DEGuestPage -DEHost $small -Domain s2 -Gfn (0..15) -Data $data
            Write-DEGuestPage -DEHost $small -Domain s3 -Gfn (0..7) -Data $data
            $null = Invoke-DEScan -DEHost $small -UntilStable
            (Get-DEHostStats -DEHost $small).FramesInUse | Should -Be 1
            $null = New-DEDomain -DEHost $small -Name filler -MemorySize 64KB
            Write-DEGuestPage -DEHost $small -Domain filler -Gfn (0..15) -Data ([byte[]](1))
            { Disable-DESharing -DEHost $small -Domain s2 -Unshare -ErrorAction Stop } |
                Should -Throw -ErrorId 'InsufficientMemoryToUnshare,DifferenceEngine.Commands.DisableDESharingCommand'
            (Get-DEPageStats -DEHost $small -Domain s2).SharedPages | Should -Be 16 -Because 'nothing was changed'
            (Get-DEDomain -DEHost $small -Name s2).SharingEnabled | Should -BeTrue
        }
        finally {
            $small | Disconnect-DEHost -Confirm:$false
        }
    }
}

Describe 'Invoke-DEScan' {
    BeforeAll {
        $img = [byte[]]::new(32 * $PageSize)
        [Random]::new(3).NextBytes($img)
        Clear-Page $img (5, 6)
        $path = Write-Image 'scan.img' $img
        foreach ($n in 'alpha', 'beta', 'gamma') { $null = New-DEDomain -Name $n -Path $path -EnableSharing }
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'changes nothing with -WhatIf' {
        $passes = (Get-DEHostStats).ScanPasses
        Invoke-DEScan -UntilStable -WhatIf | Should -BeNullOrEmpty
        Invoke-DEScan -Domain alpha -Passes 2 -WhatIf | Should -BeNullOrEmpty
        (Get-DEHostStats).ScanPasses | Should -Be $passes
        (Get-DEPageStats).PrivatePages | Should -Be @(32, 32, 32)
        (Get-DEDomain).Sweeps | Should -Be @(0, 0, 0)
        (Get-DEPage -Domain alpha -Gfn 0).Category | Should -Be 'None'
    }

    It 'runs the passes asked for over the domains named' {
        $result = Invoke-DEScan -Domain alpha, beta -Passes 3
        $result.Passes | Should -Be 3
        $result.PassResults.Pass | Should -Be @(1, 2, 3)
        $result.Domains | Should -Be @('alpha', 'beta')
        $result.PagesSwept | Should -Be (3 * 64)
        (Get-DEDomain).Sweeps | Should -Be @(3, 3, 0)
        (Get-DEPageStats -Domain gamma).SharedPages | Should -Be 0
    }

    It 'takes domains from the pipeline, as Domain objects and as names' {
        (Get-DEDomain gam* | Invoke-DEScan).Domains | Should -Be 'gamma'
        ('gamma', 'alpha' | Invoke-DEScan).Domains | Should -Be @('alpha', 'gamma')
    }

    It 'scans nothing, not every domain, when the pipeline brings no domain' {
        $passes = (Get-DEHostStats).ScanPasses
        Get-DEDomain nomatch* | Invoke-DEScan | Should -BeNullOrEmpty
        @() | Invoke-DEScan | Should -BeNullOrEmpty
        (Get-DEHostStats).ScanPasses | Should -Be $passes
        # -Domain given with an empty pipeline still scans that domain.
        (@() | Invoke-DEScan -Domain alpha).Domains | Should -Be 'alpha'
    }

    It 'scans every domain by default, until stable with -UntilStable' {
        $result = Invoke-DEScan -UntilStable -MaxPasses 10
        $result.Domains | Should -Be @('alpha', 'beta', 'gamma')
        $result.Stable | Should -BeTrue
        (Get-DEPageStats).SharedPages | Should -Be @(30, 30, 30)
        (Get-DEPageStats).ZeroPages | Should -Be @(2, 2, 2)
    }

    It 'ages pages: written pages are C1, read pages C2, idle pages C3 then C4' {
        $null = Invoke-DEScan -Domain alpha -Passes 2
        Write-DEGuestPage -Domain alpha -Gfn 0 -Data ([byte[]](1))
        $null = Read-DEGuestPage -Domain alpha -Gfn 1
        (Get-DEPage -Domain alpha -Gfn 0).Modified | Should -BeTrue
        (Get-DEPage -Domain alpha -Gfn 1).Referenced | Should -BeTrue
        $null = Invoke-DEScan -Domain alpha
        (Get-DEPage -Domain alpha -Gfn 0, 1, 2).Category | Should -Be @('C1', 'C2', 'C4')
        (Get-DEPage -Domain alpha -Category C1).Gfn | Should -Be 0
        (Get-DEPage -Domain alpha -Gfn 0).Modified | Should -BeFalse -Because 'a sweep clears the bits'
    }

    It 'writes DomainNotFound for an unknown domain and scans nothing' {
        $passes = (Get-DEHostStats).ScanPasses
        { Invoke-DEScan -Domain nope -ErrorAction Stop } | Should -Throw -ErrorId 'DomainNotFound,DifferenceEngine.Commands.InvokeDEScanCommand'
        Invoke-DEScan -Domain nope -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        (Get-DEHostStats).ScanPasses | Should -Be $passes
    }

    It 'does not take -Passes and -UntilStable together' {
        { Invoke-DEScan -Passes 2 -UntilStable } | Should -Throw -ErrorId 'AmbiguousParameterSet,DifferenceEngine.Commands.InvokeDEScanCommand'
    }

    It 'stops its scan with it when its progress cannot be written (-ProgressAction Stop)' {
        { Invoke-DEScan -UntilStable -ProgressAction Stop -ErrorAction Stop } | Should -Throw -ErrorId 'ActionPreferenceStop,DifferenceEngine.Commands.InvokeDEScanCommand'
        # Nothing of that scan runs on behind the error: the next scan's one pass is the only one added.
        $passes = (Get-DEHostStats).ScanPasses
        $null = Invoke-DEScan -Passes 1
        (Get-DEHostStats).ScanPasses | Should -Be ($passes + 1)
    }

    It 'writes progress from the pipeline thread and ends it with a Completed record' {
        $ps = [powershell]::Create()
        try {
            $null = $ps.AddScript({
                    param($module, $target)
                    Import-Module $module
                    Invoke-DEScan -DEHost $target -Passes 2
                }).AddArgument($env:DE_MODULE_PATH).AddArgument($deHost)
            $result = $ps.Invoke()
            $ps.HadErrors | Should -BeFalse
            $result.Passes | Should -Be 2
            $progress = @($ps.Streams.Progress)
            $progress.Count | Should -BeGreaterOrEqual 2
            $progress.Activity | Select-Object -Unique | Should -Be 'Invoke-DEScan'
            $progress[-1].RecordType | Should -Be 'Completed'
            $progress[0].StatusDescription | Should -Match '^Pass \d+: [\d,]+ of [\d,]+ pages$'
        }
        finally {
            $ps.Dispose()
        }
    }

    It 'shows a table that fits 120 columns' {
        $lines = (Invoke-DEScan | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $lines -join "`n" | Should -Match 'Passes\s+PagesSwept\s+ZeroPagesFound\s+FramesFreed\s+PagesPatched\s+PagesCompressed\s+Elapsed\s+PagesPerSecond'
    }
}

Describe 'Get-DEPageStats' {
    BeforeAll {
        $null = New-DEDomain -Name p1 -MemorySize 64KB
        $null = New-DEDomain -Name p2 -MemorySize 128KB
        Write-DEGuestPage -Domain p1 -Gfn 0, 1 -Data ([byte[]](7))
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'gives one object per domain, every domain by default' {
        $stats = Get-DEPageStats
        $stats | Should -HaveCount 2
        $stats[0] | Should -BeOfType ([DifferenceEngine.Stats.DomainPageStats])
        $stats.Domain | Should -Be @('p1', 'p2')
    }

    It 'counts pages per state and the bytes used and saved' {
        $p1 = Get-DEPageStats -Domain p1
        $p1.PageCount | Should -Be 16
        $p1.PrivatePages | Should -Be 2
        $p1.ZeroPages | Should -Be 0
        $p1.UntouchedPages | Should -Be 14 -Because 'the guest never wrote them'
        $p1.GuestBytes | Should -Be (2 * $PageSize)
        $p1.BytesUsed | Should -Be (2 * $PageSize)
        $p1.BytesSaved | Should -Be 0
        $p1.SavingsPercent | Should -Be 0
        # Once a scan finds a written page zero, it is guest memory that needs no memory: saved.
        Write-DEGuestPage -Domain p1 -Gfn 1 -Data ([byte[]]::new(4096))
        Enable-DESharing -Domain p1
        $null = Invoke-DEScan -Domain p1 -UntilStable
        $p1 = Get-DEPageStats -Domain p1
        $p1.ZeroPages | Should -Be 1
        $p1.BytesSaved | Should -Be $PageSize
        $p1.SavingsPercent | Should -Be 50
        $p1.SavedMiB | Should -Be ([Math]::Round($PageSize / 1MB, 2))
    }

    It 'takes domains from the pipeline, as Domain objects and as names' {
        (Get-DEDomain p2 | Get-DEPageStats).Domain | Should -Be 'p2'
        ('p2', 'p1' | Get-DEPageStats).Domain | Should -Be @('p2', 'p1')
        (Get-DEDomain | Get-DEPageStats).Domain | Should -Be @('p1', 'p2')
    }

    It 'writes DomainNotFound for an unknown domain' {
        { Get-DEPageStats -Domain nope -ErrorAction Stop } | Should -Throw -ErrorId 'DomainNotFound,DifferenceEngine.Commands.GetDEPageStatsCommand'
    }
}

Describe 'Get-DEPage' {
    BeforeAll {
        $null = New-DEDomain -Name q1 -MemorySize 64KB
        Write-DEGuestPage -Domain q1 -Gfn 3, 4 -Data ([byte[]](1))
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'streams a PageInfo per page in gfn order' {
        $pages = Get-DEPage -Domain q1
        $pages | Should -HaveCount 16
        $pages[0] | Should -BeOfType ([DifferenceEngine.Domains.PageInfo])
        $pages.Gfn | Should -Be (0..15)
        $pages[3].State | Should -Be 'Private'
        $pages[3].ReferenceCount | Should -Be 1
        $pages[3].Refs | Should -Be 1
        $pages[3].HashHex | Should -Match '^[0-9a-f]{16}$'
    }

    It 'filters by gfn and by state' {
        (Get-DEPage -Domain q1 -Gfn 4, 5).State | Should -Be @('Private', 'Zero')
        (Get-DEPage -Domain q1 -State Private).Gfn | Should -Be @(3, 4)
        (Get-DEPage -Domain q1 -State Zero, Private) | Should -HaveCount 16
        Get-DEPage -Domain q1 -State Shared | Should -BeNullOrEmpty
    }

    It 'takes the domain from the pipeline' {
        (Get-DEDomain q1 | Get-DEPage -Gfn 3).Gfn | Should -Be 3
        ('q1' | Get-DEPage -Gfn 4).Domain | Should -Be 'q1'
    }

    It 'streams, and stops early under Select-Object -First' {
        $null = New-DEDomain -Name big -MemorySize 1GB
        try {
            # Page 5 of the 262,144 is written once page 0 has come out: if Get-DEPage had looked at every page
            # before writing the first, page 5 would come out Zero; streaming, it comes out as it is then.
            $seen = 0
            $pages = Get-DEDomain big | Get-DEPage | ForEach-Object {
                if ($seen++ -eq 0) { Write-DEGuestPage -Domain big -Gfn 5 -Data ([byte[]](1)) }
                $_
            } | Select-Object -First 6
            $pages.Gfn | Should -Be @(0, 1, 2, 3, 4, 5)
            $pages.State | Should -Be @('Zero', 'Zero', 'Zero', 'Zero', 'Zero', 'Private')
            $seen | Should -Be 6 -Because 'the pipeline stopped Get-DEPage after the sixth page'
        }
        finally {
            Remove-DEDomain -Name big -Confirm:$false
        }
    }

    It 'writes GfnOutOfRange for a page outside the domain and DomainNotFound for an unknown domain' {
        $pages = Get-DEPage -Domain q1 -Gfn 99, 3 -ErrorVariable err -ErrorAction SilentlyContinue
        $pages.Gfn | Should -Be 3
        $err[0].FullyQualifiedErrorId | Should -Be 'GfnOutOfRange,DifferenceEngine.Commands.GetDEPageCommand'
        { Get-DEPage -Domain nope -ErrorAction Stop } | Should -Throw -ErrorId 'DomainNotFound,DifferenceEngine.Commands.GetDEPageCommand'
    }

    It 'shows a table grouped by domain that fits 120 columns' {
        $lines = (Get-DEPage -Domain q1 -Gfn 3, 5 | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $lines -join "`n" | Should -Match 'Domain: q1'
        $lines -join "`n" | Should -Match '\s3 Private\s+None\s+True\s+True\s+1 [0-9a-f]{16}'
    }
}
