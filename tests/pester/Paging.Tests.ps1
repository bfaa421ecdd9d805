# Connect-DEHost -MemoryLimit -SwapPath -SwapSize, and what paging shows through the cmdlets: an overcommitted
# domain that reads back right, page-outs and swap-ins in Get-DEHostStats, Swapped pages and their slots in
# Get-DEPage and Get-DEPageStats, the swap file's life, and running out of memory for real.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $PageSize = 4096

    function New-TestHostName { "pester-paging-$([guid]::NewGuid().ToString('n').Substring(0, 8))" }

    function Test-SameBytes([byte[]]$Expected, [byte[]]$Actual) {
        [Linq.Enumerable]::SequenceEqual($Expected, $Actual)
    }

    # Background reclaim may still be paging out after a fault woke it. It runs when free memory falls under the low
    # watermark and pages out until free memory is at the high one; with the guests idle nothing else moves a page.
    # So it has settled, and no page-out comes until the guests use memory again, once free memory is at or over the
    # high watermark and every swap slot in use holds a page counted out (page-outs less swap-ins: no batch is half
    # done). Under the high watermark the reclaimer may be paging out, or idle for good between the two watermarks:
    # watermarks raised over the free memory there is now make it page out, surely, up to the new high one; they are
    # put back once it is there. Polls Get-DEHostStats (the reclaimer offers nothing to block on) with no time bound:
    # each look either finds it settled or finds it still on its way there, which it checked it can reach.
    function Wait-ReclaimSettled {
        $policy = Get-DEPolicy -HostPolicy
        $stats = Get-DEHostStats
        $limit = $stats.MemoryLimitBytes
        $high = $policy.HighWatermark
        $raised = (Get-FreeBytes $stats) -lt $high * $limit
        if ($raised) {
            $high = $policy.HighWatermark + 0.1
            $needed = [Math]::Ceiling(($high * $limit - (Get-FreeBytes $stats)) / $PageSize)
            $private = (Get-DEPageStats | Measure-Object -Property PrivatePages -Sum).Sum
            $freeSlots = ($stats.SwapBytes - $stats.SwapUsedBytes) / $PageSize
            if ($high -ge 1 -or $needed -gt $private -or $needed + 16 -gt $freeSlots) {
                throw "Reclaim cannot free $needed more pages: $private Private pages, $freeSlots free swap slots, high watermark $high."
            }
            Set-DEPolicy -HostPolicy -LowWatermark ($policy.HighWatermark + 0.05) -HighWatermark $high
        }
        try {
            while (-not (Test-ReclaimSettled (Get-DEHostStats) $high)) { Start-Sleep -Milliseconds 20 }
        }
        finally {
            if ($raised) { Set-DEPolicy -HostPolicy -LowWatermark $policy.LowWatermark -HighWatermark $policy.HighWatermark }
        }
    }

    function Get-FreeBytes($Stats) { $Stats.MemoryLimitBytes - $Stats.FramesInUse * $PageSize - $Stats.StoreAllocatedBytes }

    function Test-ReclaimSettled($Stats, [double]$High) {
        (Get-FreeBytes $Stats) -ge $High * $Stats.MemoryLimitBytes -and
            $Stats.SwapUsedBytes / $PageSize -eq $Stats.PageOuts - $Stats.SwapIns
    }
}

Describe 'An overcommitted host with a swap file' {
    BeforeAll {
        $swapPath = Join-Path $TestDrive 'swap'
        $deHost = Connect-DEHost -Name (New-TestHostName) -MemoryLimit 8MB -SwapPath $swapPath -SwapSize 64MB -PassThru

        # 12 MiB of random bytes: half again the limit, and nothing for sharing or compression to save.
        $image = [byte[]]::new(12MB)
        [Random]::new(11).NextBytes($image)
        $imagePath = Join-Path $TestDrive 'random.img'
        [IO.File]::WriteAllBytes($imagePath, $image)
        $loaded = New-DEDomain -Name loaded -Path $imagePath
        $written = New-DEDomain -Name written -MemorySize 16MB
        $workload = Invoke-DEWorkload -Domain written -Operations 40000 -WriteFraction 0.7 -Seed 5 -Verify -ErrorVariable workloadErrors
    }

    AfterAll {
        $deHost | Disconnect-DEHost -Confirm:$false
    }

    It 'creates the swap file private to its owner (mode 0600) at the size given, its name removed at once' {
        # Only this process's descriptor has it: nothing of it stays on disk when the process ends, however it ends.
        Test-Path -LiteralPath $swapPath | Should -BeFalse
        $open = @(Get-SwapDescriptor $swapPath)
        $open.Count | Should -Be 1
        $open[0].Mode | Should -Be ([IO.UnixFileMode]'UserRead, UserWrite')
        $open[0].Length | Should -Be 64MB
        $deHost.SwapPath | Should -Be $swapPath
    }

    It 'keeps memory used within the limit while the guests hold more' {
        $stats = Get-DEHostStats
        ($stats.GuestBytes + $stats.UntouchedBytes) | Should -Be 28MB
        $stats.GuestBytes | Should -Be ($stats.MemoryUsedBytes + $stats.SavedBytes)
        ($stats.FrameBytes + $stats.StoreAllocatedBytes) | Should -BeLessOrEqual 8MB
    }

    It 'reads back every page of a domain loaded past the limit' {
        $pages = Read-DEGuestPage -Domain loaded -Gfn (0..(12MB / $PageSize - 1)) -Raw
        @($pages).Count | Should -Be (12MB / $PageSize)
        $wrong = 0
        for ($gfn = 0; $gfn -lt $pages.Count; $gfn++) {
            $expected = [byte[]]::new($PageSize)
            [Array]::Copy($image, $gfn * $PageSize, $expected, 0, $PageSize)
            if (-not (Test-SameBytes $expected $pages[$gfn])) { $wrong++ }
        }
        $wrong | Should -Be 0
    }

    It 'verifies every read of a workload on a domain twice the limit' {
        $workloadErrors | Should -BeNullOrEmpty
        $workload.Errors | Should -Be 0
        $workload.Mismatches | Should -Be 0
        $workload.Verified | Should -BeTrue
    }

    It 'counts page-outs, swap-ins and swap use in Get-DEHostStats' {
        $stats = Get-DEHostStats
        $stats.PageOuts | Should -BeGreaterThan 0
        $stats.SwapIns | Should -BeGreaterThan 0
        ($stats.Faults | Where-Object Kind -EQ 'SwapIn').Count | Should -Be $stats.SwapIns
        $stats.SwapUsedBytes | Should -BeGreaterThan 0
        $stats.SwapBytes | Should -Be 64MB
        $stats.SwapPath | Should -Be $swapPath
        $stats.PageOutP99 | Should -BeGreaterOrEqual $stats.PageOutP50
        $stats.SwapWriteFailures | Should -Be 0
        $stats.OutOfMemoryEvents | Should -Be 0
    }

    It 'shows the paging lines of Get-DEHostStats in a list of 120 columns' {
        $lines = (Get-DEHostStats | Format-List | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $text = $lines -join "`n"
        $text | Should -Match 'Memory limit\s*:\s*8\.00 MiB'
        $text | Should -Match ('Swap\s*:\s*\S+ \S+ of 64\.0 MiB used, ' + [regex]::Escape($swapPath))
        $text | Should -Match 'Page-outs\s*:\s*[\d,]+\s+p50\s+\S+ \S+\s+p99\s+\S+ \S+'
        $text | Should -Match 'Swap-ins\s*:\s*[\d,]+\s+p50\s+\S+ \S+\s+p99'
        $text | Should -Match 'Swap write failures\s*:\s*0'
        $text | Should -Match 'Reclaim runs\s*:\s*[\d,]+'
        $text | Should -Match 'Out of memory\s*:\s*0 event\(s\)'
        $text | Should -Match 'SwapIn\s+[\d,]+\s+p50'
    }

    It 'lists Swapped pages with their slots in Get-DEPage' {
        Wait-ReclaimSettled
        $swapped = @('loaded', 'written' | Get-DEPage -State Swapped -ErrorAction Stop)
        $swapped.Count | Should -BeGreaterThan 0
        $swapped.State | Select-Object -Unique | Should -Be 'Swapped'
        $swapped | Where-Object { $null -eq $_.SwapSlot } | Should -BeNullOrEmpty
        $swapped | Where-Object { $null -ne $_.Frame } | Should -BeNullOrEmpty
        @($swapped.SwapSlot | Select-Object -Unique).Count | Should -Be $swapped.Count -Because 'no two pages share a slot'
        $swapped.Count | Should -Be ((Get-DEHostStats).SwapUsedBytes / $PageSize)
    }

    It 'shows the slot in the Reference column of a 120-column table' {
        $page = Get-DEPage -Domain written -State Swapped | Select-Object -First 1
        $lines = ($page | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $lines -join "`n" | Should -Match ("\s$($page.Gfn) Swapped\s.*\sslot $($page.SwapSlot)(\s|$)")
    }

    It 'counts Swapped pages per domain in Get-DEPageStats and accounts for every page' {
        Wait-ReclaimSettled
        foreach ($stats in Get-DEPageStats -Domain loaded, written) {
            $stats.SwappedPages | Should -Be @(Get-DEPage -Domain $stats.Domain -State Swapped).Count
            ($stats.PrivatePages + $stats.ZeroPages + $stats.UntouchedPages + $stats.UniformPages + $stats.SharedPages + $stats.PatchedPages +
                $stats.CompressedPages + $stats.SwappedPages) | Should -Be $stats.PageCount
        }
        (Get-DEPageStats).SwappedPages | Measure-Object -Sum | ForEach-Object Sum |
            Should -Be ((Get-DEHostStats).SwapUsedBytes / $PageSize)
    }

    It 'shows a Swapped column in the Get-DEPageStats table' {
        Wait-ReclaimSettled
        $lines = (Get-DEPageStats | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $swappedPages = (Get-DEPageStats -Domain written).SwappedPages
        ($lines | Where-Object { $_ -match '^Domain\s' }) | Should -Match 'CompressedPages\s+SwappedPages\s+BytesUsed'
        ($lines | Where-Object { $_ -match '^written\s' }) | Should -Match ('\s' + [regex]::Escape($swappedPages.ToString('#,0', [cultureinfo]::InvariantCulture)) + '\s+\S+ \S+\s+\S+ \S+\s+[\d.]+%$')
    }

    It 'shows the swap size in Get-DEHost and the domains Running in Get-DEDomain' {
        (Get-DEDomain).Status | Should -Be @('Running', 'Running')
        $text = Get-DEHost -Name $deHost.Name | Format-Table | Out-String -Width 120
        $text | Should -Match 'MemoryLimitBytes\s+SwapBytes\s+EngineState'
        $text | Should -Match '8\.00 MiB\s+64\.0 MiB\s+Stopped'
    }
}

Describe 'The swap file' {
    It 'has no name once made, and is closed by Disconnect-DEHost' {
        $path = Join-Path $TestDrive 'gone'
        $h = Connect-DEHost -Name (New-TestHostName) -MemoryLimit 1MB -SwapPath $path -SwapSize 1MB -PassThru
        $path | Should -Not -Exist
        @(Get-SwapDescriptor $path).Count | Should -Be 1
        $h | Disconnect-DEHost -Confirm:$false
        @(Get-SwapDescriptor $path).Count | Should -Be 0
        $path | Should -Not -Exist
    }

    It 'leaves nothing on disk when the shell ends without Disconnect-DEHost' {
        $path = Join-Path $TestDrive 'left'
        $script = "Import-Module '$env:DE_MODULE_PATH'; `$null = Connect-DEHost -Name left -MemoryLimit 1MB -SwapPath '$path' -SwapSize 1MB; " +
            "@(Get-ChildItem /proc/`$PID/fd | Where-Object LinkTarget -EQ '$path (deleted)').Count"
        $pwsh = [Environment]::ProcessPath
        $arguments = @(if ([IO.Path]::GetFileNameWithoutExtension($pwsh) -eq 'dotnet') { Join-Path $PSHOME 'pwsh.dll' }) +
            @('-NoProfile', '-NonInteractive', '-Command', $script)
        $output = & $pwsh @arguments
        $LASTEXITCODE | Should -Be 0
        $output | Should -Be 1 -Because 'the other shell had the swap file open'
        $path | Should -Not -Exist
        Get-ChildItem -LiteralPath $TestDrive -Filter 'left*' | Should -BeNullOrEmpty
    }

    It 'is resolved relative to the current location' {
        Push-Location -LiteralPath $TestDrive
        try {
            $h = Connect-DEHost -Name (New-TestHostName) -MemoryLimit 1MB -SwapPath ./relative -SwapSize 1MB -PassThru
            $h.SwapPath | Should -Be (Join-Path $TestDrive 'relative')
            @(Get-SwapDescriptor (Join-Path $TestDrive 'relative')).Count | Should -Be 1
        }
        finally {
            Pop-Location
            $h | Disconnect-DEHost -Confirm:$false
        }
    }

    It 'takes 4GB-style sizes' {
        $path = Join-Path $TestDrive 'sized'
        $h = Connect-DEHost -Name (New-TestHostName) -MemoryLimit 1MB -SwapPath $path -SwapSize 2MB -PassThru
        try {
            (Get-SwapDescriptor $path).Length | Should -Be 2MB
            (Get-DEHostStats -DEHost $h).SwapBytes | Should -Be 2MB
        }
        finally {
            $h | Disconnect-DEHost -Confirm:$false
        }
    }

    It 'is not created with -WhatIf' {
        $path = Join-Path $TestDrive 'whatif'
        Connect-DEHost -Name (New-TestHostName) -MemoryLimit 1MB -SwapPath $path -WhatIf
        $path | Should -Not -Exist
    }

    It 'needs a memory limit (SwapNeedsMemoryLimit)' {
        $path = Join-Path $TestDrive 'nolimit'
        { Connect-DEHost -Name (New-TestHostName) -SwapPath $path } |
            Should -Throw -ErrorId 'SwapNeedsMemoryLimit,DifferenceEngine.Commands.ConnectDEHostCommand'
        $path | Should -Not -Exist
    }

    It 'must be a new file (SwapFileExists), and the file there is left alone' {
        $path = Join-Path $TestDrive 'exists'
        Set-Content -LiteralPath $path -Value 'keep me'
        { Connect-DEHost -Name (New-TestHostName) -MemoryLimit 1MB -SwapPath $path } |
            Should -Throw -ErrorId 'SwapFileExists,DifferenceEngine.Commands.ConnectDEHostCommand'
        Get-Content -LiteralPath $path | Should -Be 'keep me'
    }

    It 'needs an existing folder (SwapDirectoryNotFound)' {
        { Connect-DEHost -Name (New-TestHostName) -MemoryLimit 1MB -SwapPath (Join-Path $TestDrive 'no/such/folder/swap') } |
            Should -Throw -ErrorId 'SwapDirectoryNotFound,DifferenceEngine.Commands.ConnectDEHostCommand'
    }

    It 'must be on the file system (PathNotFileSystem)' {
        { Connect-DEHost -Name (New-TestHostName) -MemoryLimit 1MB -SwapPath Env:/swap } |
            Should -Throw -ErrorId 'PathNotFileSystem,DifferenceEngine.Commands.ConnectDEHostCommand'
    }

    It 'needs a size that is a multiple of 4096 (SwapSizeInvalid)' {
        { Connect-DEHost -Name (New-TestHostName) -MemoryLimit 1MB -SwapPath (Join-Path $TestDrive 'odd') -SwapSize 1000 } |
            Should -Throw -ErrorId 'SwapSizeInvalid,DifferenceEngine.Commands.ConnectDEHostCommand'
    }

    It 'takes -SwapSize only with -SwapPath (ConnectDEHostSwapSizeNeedsSwapPath)' {
        { Connect-DEHost -Name (New-TestHostName) -MemoryLimit 1MB -SwapSize 1MB } |
            Should -Throw -ErrorId 'ConnectDEHostSwapSizeNeedsSwapPath,DifferenceEngine.Commands.ConnectDEHostCommand'
    }
}

Describe 'When memory truly runs out' {
    BeforeAll {
        # 16 frames and a swap file of 4 slots (one kept for swap-ins): room for about 19 written pages.
        $deHost = Connect-DEHost -Name (New-TestHostName) -MemoryLimit 64KB -SwapPath (Join-Path $TestDrive 'tiny') -SwapSize 16KB -PassThru
        $null = New-DEDomain -Name starved -MemorySize 1MB
        $null = New-DEDomain -Name bystander -MemorySize 1MB
        Write-DEGuestPage -Domain bystander -Gfn 0 -Data ([byte[]](9, 9, 9))
        $data = [byte[]](1..16)
        $writes = Write-DEGuestPage -Domain starved -Gfn (0..39) -Data $data -PassThru -ErrorVariable oom -ErrorAction SilentlyContinue
    }

    AfterAll {
        $deHost | Disconnect-DEHost -Confirm:$false
    }

    It 'fails the writes that need a frame with HostOutOfMemory, naming the domain, and goes on with the next page' {
        $oom.Count | Should -BeGreaterThan 0
        @($writes).Count + $oom.Count | Should -Be 40
        $oom | ForEach-Object { $_.FullyQualifiedErrorId | Should -Be 'HostOutOfMemory,DifferenceEngine.Commands.WriteDEGuestPageCommand' }
        $oom[0].CategoryInfo.Category | Should -Be 'ResourceUnavailable'
        $oom[0].TargetObject.Name | Should -Be 'starved'
        $oom[0].Exception.Message | Should -Match "domain 'starved'"
    }

    It 'stops at once with -ErrorAction Stop' {
        { Write-DEGuestPage -Domain starved -Gfn 100 -Data $data -ErrorAction Stop } |
            Should -Throw -ErrorId 'HostOutOfMemory,DifferenceEngine.Commands.WriteDEGuestPageCommand'
    }

    It 'marks the domain OutOfMemory in Get-DEDomain, and only that domain' {
        (Get-DEDomain starved).Status | Should -Be 'OutOfMemory'
        (Get-DEDomain starved).OutOfMemoryEvents | Should -BeGreaterThan 0
        (Get-DEDomain bystander).Status | Should -Be 'Running'
        (Get-DEPageStats -Domain starved).Status | Should -Be 'OutOfMemory'
        $text = Get-DEDomain | Format-Table | Out-String -Width 120
        $text | Should -Match 'starved\s+OutOfMemory\s+1\.00 MiB'
        $text | Should -Match 'bystander\s+Running\s+1\.00 MiB'
    }

    It 'loses no page: what was written reads back, the page that failed is still zero' {
        foreach ($w in $writes) {
            $bytes = (Read-DEGuestPage -Domain starved -Gfn $w.Gfn).Bytes
            Test-SameBytes $data $bytes[0..15] | Should -BeTrue
        }
        $failedGfn = 100
        (Read-DEGuestPage -Domain starved -Gfn $failedGfn).IsZero | Should -BeTrue
        (Read-DEGuestPage -Domain bystander -Gfn 0).Bytes[0..2] | Should -Be @(9, 9, 9)
    }

    It 'counts the events in Get-DEHostStats' {
        $stats = Get-DEHostStats
        $stats.OutOfMemoryEvents | Should -BeGreaterOrEqual ($oom.Count + 1)
        $stats | Format-List | Out-String -Width 120 | Should -Match 'Out of memory\s*:\s*[\d,]+ event\(s\)'
    }
}

Describe 'Without a swap file' {
    It 'fails a write past the limit with HostOutOfMemory' {
        $h = Connect-DEHost -Name (New-TestHostName) -MemoryLimit 16KB -PassThru
        try {
            $null = New-DEDomain -Name nosw -MemorySize 64KB
            Write-DEGuestPage -Domain nosw -Gfn (0..5) -Data ([byte[]](1)) -ErrorVariable err -ErrorAction SilentlyContinue
            $err.Count | Should -Be 2
            $err[0].FullyQualifiedErrorId | Should -Be 'HostOutOfMemory,DifferenceEngine.Commands.WriteDEGuestPageCommand'
            (Get-DEDomain nosw).Status | Should -Be 'OutOfMemory'
            (Get-DEHostStats).SwapPath | Should -BeNullOrEmpty
            Get-DEHostStats | Format-List | Out-String -Width 120 | Should -Match 'Swap\s*:\s*none'
        }
        finally {
            $h | Disconnect-DEHost -Confirm:$false
        }
    }
}
