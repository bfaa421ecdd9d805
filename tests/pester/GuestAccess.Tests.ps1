# Read-DEGuestPage, Write-DEGuestPage and Invoke-DEWorkload: guest access through the engine and its faults.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $deHost = Connect-DEHost -Name "pester-access-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
    $PageSize = 4096

    function Test-SameBytes([byte[]]$Left, [byte[]]$Right) { [Linq.Enumerable]::SequenceEqual($Left, $Right) }
}

AfterAll {
    $deHost | Disconnect-DEHost -Confirm:$false
}

Describe 'Write-DEGuestPage and Read-DEGuestPage' {
    BeforeAll {
        $null = New-DEDomain -Name g1 -MemorySize 1MB
        $null = New-DEDomain -Name g2 -MemorySize 1MB
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'reads an untouched page as zeros' {
        $page = Read-DEGuestPage -Domain g1 -Gfn 5
        $page | Should -BeOfType ([DifferenceEngine.Commands.GuestPage])
        $page.Domain | Should -Be 'g1'
        $page.Gfn | Should -Be 5
        $page.Bytes.Length | Should -Be $PageSize
        $page.IsZero | Should -BeTrue
    }

    It 'round-trips a whole page of random bytes' {
        $data = [byte[]]::new($PageSize)
        [Random]::new(11).NextBytes($data)
        Write-DEGuestPage -Domain g1 -Gfn 7 -Data $data
        Test-SameBytes (Read-DEGuestPage -Domain g1 -Gfn 7).Bytes $data | Should -BeTrue
    }

    It 'writes at an offset and leaves the rest of the page as it was' {
        $data = [byte[]](1..200)
        Write-DEGuestPage -Domain g1 -Gfn 8 -Data $data -Offset 1000
        $page = (Read-DEGuestPage -Domain g1 -Gfn 8).Bytes
        Test-SameBytes $page[1000..1199] $data | Should -BeTrue
        ($page[0..999] + $page[1200..4095] | Where-Object { $_ -ne 0 }) | Should -BeNullOrEmpty
    }

    It 'reports a zero-fill fault on the first write and none on the next with -PassThru' {
        $first = Write-DEGuestPage -Domain g1 -Gfn 9 -Data ([byte[]](1, 2, 3)) -PassThru
        $first | Should -BeOfType ([DifferenceEngine.Commands.GuestPageWrite])
        $first.Fault | Should -Be 'ZeroFill'
        $first.Length | Should -Be 3
        (Write-DEGuestPage -Domain g1 -Gfn 9 -Data ([byte[]](4)) -PassThru).Fault | Should -Be 'None'
    }

    It 'outputs nothing without -PassThru' {
        Write-DEGuestPage -Domain g1 -Gfn 10 -Data ([byte[]](1)) | Should -BeNullOrEmpty
    }

    It 'writes the same data to several pages and reads several pages' {
        Write-DEGuestPage -Domain g2 -Gfn 1, 2, 3 -Data ([byte[]](42, 43))
        $pages = Read-DEGuestPage -Domain g2 -Gfn 1, 2, 3
        $pages.Gfn | Should -Be @(1, 2, 3)
        $pages | ForEach-Object { $_.Bytes[0..1] | Should -Be @(42, 43) }
    }

    It 'returns plain byte arrays with -Raw' {
        $raw = Read-DEGuestPage -Domain g2 -Gfn 1 -Raw
        $raw.GetType() | Should -Be ([byte[]])
        $raw.Length | Should -Be $PageSize
    }

    It 'takes the domain from the pipeline, as a name or a Domain object' {
        ('g2' | Read-DEGuestPage -Gfn 1).Bytes[0] | Should -Be 42
        (Get-DEDomain g2 | Read-DEGuestPage -Gfn 2).Bytes[0] | Should -Be 42
        Get-DEDomain g2 | Write-DEGuestPage -Gfn 4 -Data ([byte[]](9))
        'g2' | Write-DEGuestPage -Gfn 5 -Data ([byte[]](9))
        (Read-DEGuestPage g2 4, 5).Bytes | Where-Object { $_ -ne 0 } | Should -Be @(9, 9)
    }

    It 'reads the pages Get-DEPage lists (Domain and Gfn by property name)' {
        $pages = Get-DEPage -Domain g2 -State Private | Read-DEGuestPage
        $pages.Gfn | Should -Be @(1, 2, 3, 4, 5)
    }

    It 'copies a page from one domain to another through the pipeline' {
        Read-DEGuestPage -Domain g1 -Gfn 7 | Write-DEGuestPage -Domain g2
        Test-SameBytes (Read-DEGuestPage g2 7).Bytes (Read-DEGuestPage g1 7).Bytes | Should -BeTrue
    }

    It 'changes nothing with -WhatIf' {
        $before = (Read-DEGuestPage -Domain g1 -Gfn 7).Bytes
        $frames = (Get-DEHostStats).FramesInUse
        Write-DEGuestPage -Domain g1 -Gfn 7, 100 -Data ([byte[]]::new(16)) -WhatIf
        Test-SameBytes (Read-DEGuestPage -Domain g1 -Gfn 7).Bytes $before | Should -BeTrue
        (Get-DEPage -Domain g1 -Gfn 100).State | Should -Be 'Zero'
        (Get-DEHostStats).FramesInUse | Should -Be $frames
    }

    It 'writes GfnOutOfRange for a page outside the domain and goes on' {
        $pages = Read-DEGuestPage -Domain g1 -Gfn 256, 0 -ErrorVariable err -ErrorAction SilentlyContinue
        $pages.Gfn | Should -Be 0
        $err[0].FullyQualifiedErrorId | Should -Be 'GfnOutOfRange,DifferenceEngine.Commands.ReadDEGuestPageCommand'
        { Write-DEGuestPage -Domain g1 -Gfn -1 -Data ([byte[]](1)) -ErrorAction Stop } |
            Should -Throw -ErrorId 'GfnOutOfRange,DifferenceEngine.Commands.WriteDEGuestPageCommand'
    }

    It 'refuses a write past the end of the page (WriteOutsidePage), once for the call, before any page is written' {
        $before = (Read-DEGuestPage -Domain g1 -Gfn 20).Bytes
        { Write-DEGuestPage -Domain g1 -Gfn 0 -Data ([byte[]]::new(100)) -Offset 4000 -ErrorAction Stop } |
            Should -Throw -ErrorId 'WriteOutsidePage,DifferenceEngine.Commands.WriteDEGuestPageCommand'
        # Without -ErrorAction Stop too: terminating (one error, not one a page), and page 20 (after 0..19) untouched.
        $caught = $null
        try { Write-DEGuestPage -Domain g1 -Gfn (0..20) -Data ([byte[]](1) * 4097) -ErrorVariable written -ErrorAction SilentlyContinue } catch { $caught = $_ }
        $caught.FullyQualifiedErrorId | Should -Be 'WriteOutsidePage,DifferenceEngine.Commands.WriteDEGuestPageCommand'
        @($written | Where-Object { $_ -is [Management.Automation.ErrorRecord] -and $_ -ne $caught -and $_.Exception -ne $caught.Exception }).Count | Should -Be 0
        (Read-DEGuestPage -Domain g1 -Gfn 20).Bytes | Should -Be $before
        # An offset at the page's end cannot take any byte: refused as an argument.
        { Write-DEGuestPage -Domain g1 -Gfn 0 -Data ([byte[]](1)) -Offset 4096 } | Should -Throw -ErrorId 'ParameterArgumentValidationError,DifferenceEngine.Commands.WriteDEGuestPageCommand'
    }

    It 'writes DomainNotFound for an unknown domain' {
        { Read-DEGuestPage -Domain nope -Gfn 0 -ErrorAction Stop } |
            Should -Throw -ErrorId 'DomainNotFound,DifferenceEngine.Commands.ReadDEGuestPageCommand'
        { Write-DEGuestPage -Domain nope -Gfn 0 -Data ([byte[]](1)) -ErrorAction Stop } |
            Should -Throw -ErrorId 'DomainNotFound,DifferenceEngine.Commands.WriteDEGuestPageCommand'
    }

    It 'fails with HostOutOfMemory when a fault needs a frame past the limit' {
        $small = Connect-DEHost -Name "pester-access-small-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -MemoryLimit 8KB -PassThru
        try {
            $null = New-DEDomain -Name tiny -MemorySize 64KB -DEHost $small
            Write-DEGuestPage -DEHost $small -Domain tiny -Gfn 0, 1 -Data ([byte[]](1))
            { Write-DEGuestPage -DEHost $small -Domain tiny -Gfn 2 -Data ([byte[]](1)) -ErrorAction Stop } |
                Should -Throw -ErrorId 'HostOutOfMemory,DifferenceEngine.Commands.WriteDEGuestPageCommand'
        }
        finally {
            $small | Disconnect-DEHost -Confirm:$false
        }
    }
}

Describe 'Invoke-DEWorkload' {
    BeforeAll {
        $path = Join-Path $TestDrive 'work.img'
        $bytes = [byte[]]::new(256 * $PageSize)
        [Random]::new(5).NextBytes($bytes)
        [IO.File]::WriteAllBytes($path, $bytes)
        $null = New-DEDomain -Name w1 -Path $path -EnableSharing
        $null = New-DEDomain -Name w2 -Path $path -EnableSharing
        $null = New-DEDomain -Name w3 -MemorySize 1MB -EnableSharing
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'runs the operations asked for and verifies every read (<Pattern>)' -ForEach @(
        @{ Pattern = 'Uniform' }
        @{ Pattern = 'Hotspot' }
        @{ Pattern = 'Sequential' }
    ) {
        $result = Invoke-DEWorkload -Domain w1, w3 -Operations 20000 -WriteFraction 0.4 -Pattern $Pattern -Seed 3 -ThrottleLimit 4 -Verify
        $result | Should -BeOfType ([DifferenceEngine.Workload.WorkloadResult])
        $result.Operations | Should -Be 20000
        $result.Reads + $result.Writes | Should -Be 20000
        $result.Writes | Should -BeGreaterThan 0
        $result.Verified | Should -BeTrue
        $result.Mismatches | Should -Be 0
        $result.Errors | Should -Be 0
        $result.Threads | Should -Be 4
    }

    It 'takes copy-on-write faults on shared pages and loses no write while they are taken' {
        $null = New-DEDomain -Name cow -Path $path -EnableSharing
        try {
            Invoke-DEScan -Domain w2, cow -UntilStable | Out-Null
            (Get-DEPageStats -Domain cow).SharedPages | Should -Be 256
            $result = Invoke-DEWorkload -Domain cow -Operations 5000 -WriteFraction 0.5 -Seed 1 -Verify
            $result.CopyOnWriteFaults | Should -BeGreaterThan 0
            $result.Mismatches | Should -Be 0
            $pages = Get-DEPageStats -Domain cow
            $pages.SharedPages + $pages.PrivatePages | Should -Be 256
            $pages.PrivatePages | Should -Be $result.CopyOnWriteFaults
        }
        finally {
            Remove-DEDomain -Name cow -Confirm:$false
        }
    }

    It 'loses no write while a scan runs at the same time' {
        # One scan of many passes runs in another runspace; the workload starts once it has written progress (it is
        # scanning) and ends before it has run all its passes (the host's pass count says so): every access of the
        # workload then happened while that scan ran, whatever the machine's load.
        $scanPasses = 100000
        $passesBefore = (Get-DEHostStats).ScanPasses
        $scan = [powershell]::Create()
        try {
            $null = $scan.AddScript({
                    param($module, $target, $passes)
                    Import-Module $module
                    Invoke-DEScan -DEHost $target -Passes $passes
                }).AddArgument($env:DE_MODULE_PATH).AddArgument($deHost).AddArgument($scanPasses)
            $null = $scan.BeginInvoke()
            Wait-FirstProgress $scan
            $result = Invoke-DEWorkload -Domain w* -Operations 300000 -WriteFraction 0.5 -Seed 9 -Verify
            $passesDuring = (Get-DEHostStats).ScanPasses - $passesBefore
            $scan.Stop()
        }
        finally {
            $scan.Dispose()
        }
        $passesDuring | Should -BeLessThan $scanPasses -Because 'the scan must still be running when the workload ends'
        $result.Operations | Should -Be 300000
        $result.Mismatches | Should -Be 0
        $result.Errors | Should -Be 0
    }

    It 'stops when the pipeline is stopped (Ctrl-C), cancelling the accesses left, with progress written until then' {
        $ps = [powershell]::Create()
        try {
            $null = $ps.AddScript({
                    param($module, $target)
                    Import-Module $module
                    Invoke-DEWorkload -DEHost $target -Domain w3 -Operations 1e12
                }).AddArgument($env:DE_MODULE_PATH).AddArgument($deHost)
            $null = $ps.BeginInvoke()
            Wait-FirstProgress $ps
            # A trillion accesses cannot be done: the call returns because stopping cancelled them.
            $ps.Stop()
            $ps.InvocationStateInfo.State | Should -Be 'Stopped'
            $ps.Streams.Progress[0].Activity | Should -Be 'Invoke-DEWorkload'
            $ps.Streams.Progress[0].StatusDescription | Should -Match '^[\d,]+ of [\d,]+ accesses on w3$'
            # Its workers are gone when Stop returns: nothing writes to the guest any more (30% of the accesses were writes).
            $first = Read-DEGuestPage -Domain w3 -Gfn (0..255) -Raw | ForEach-Object { [Convert]::ToHexString($_) }
            $second = Read-DEGuestPage -Domain w3 -Gfn (0..255) -Raw | ForEach-Object { [Convert]::ToHexString($_) }
            $second | Should -Be $first
        }
        finally {
            $ps.Dispose()
        }
    }

    It 'takes domains from the pipeline, as names and as Domain objects' {
        ('w1', 'w3' | Invoke-DEWorkload -Operations 1000 -Seed 1).Domains | Should -Be @('w1', 'w3')
        (Get-DEDomain w* | Invoke-DEWorkload -Operations 1000 -Seed 1).Domains | Should -Be @('w1', 'w2', 'w3')
    }

    It 'is repeatable: the same seed on one thread writes the same bytes' {
        $null = New-DEDomain -Name rep1 -MemorySize 256KB
        $null = New-DEDomain -Name rep2 -MemorySize 256KB
        try {
            $a = Invoke-DEWorkload -Domain rep1 -Operations 3000 -Seed 77 -ThrottleLimit 1 -WriteFraction 0.5
            $b = Invoke-DEWorkload -Domain rep2 -Operations 3000 -Seed 77 -ThrottleLimit 1 -WriteFraction 0.5
            $a.Writes | Should -Be $b.Writes
            $a.ZeroFillFaults | Should -Be $b.ZeroFillFaults
            $one = (Read-DEGuestPage -Domain rep1 -Gfn (0..63) -Raw) | ForEach-Object { [Convert]::ToHexString($_) }
            $two = (Read-DEGuestPage -Domain rep2 -Gfn (0..63) -Raw) | ForEach-Object { [Convert]::ToHexString($_) }
            $one | Should -Be $two
        }
        finally {
            Remove-DEDomain -Name rep* -Confirm:$false
        }
    }

    It 'refuses a write fraction outside 0..1' {
        { Invoke-DEWorkload -Domain w1 -WriteFraction 1.5 } | Should -Throw -ErrorId 'ParameterArgumentValidationError,DifferenceEngine.Commands.InvokeDEWorkloadCommand'
    }

    It 'writes DomainNotFound for an unknown domain' {
        { Invoke-DEWorkload -Domain nope -Operations 10 -ErrorAction Stop } |
            Should -Throw -ErrorId 'DomainNotFound,DifferenceEngine.Commands.InvokeDEWorkloadCommand'
    }

    It 'reports a failed access with the engine''s error id (HostOutOfMemory)' {
        $small = Connect-DEHost -Name "pester-work-small-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -MemoryLimit 16KB -PassThru
        try {
            $null = New-DEDomain -Name tiny -MemorySize 1MB -DEHost $small
            $result = Invoke-DEWorkload -DEHost $small -Domain tiny -Operations 2000 -WriteFraction 1 -ThrottleLimit 1 -ErrorVariable err -ErrorAction SilentlyContinue
            $result.Errors | Should -BeGreaterThan 0
            $result.FirstError | Should -BeLike 'HostOutOfMemory*'
            $err[0].FullyQualifiedErrorId | Should -Be 'HostOutOfMemory,DifferenceEngine.Commands.InvokeDEWorkloadCommand'
            $err[0].CategoryInfo.Category | Should -Be 'ResourceUnavailable'
            $err[0].ErrorDetails.Message | Should -BeLike '* worker(s) stopped on a failed guest access; the first: *'
        }
        finally {
            $small | Disconnect-DEHost -Confirm:$false
        }
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-DEPageStats
        $faults = (Get-DEHostStats).FaultCount
        Invoke-DEWorkload -Domain w* -Operations 10000 -WriteFraction 1 -WhatIf | Should -BeNullOrEmpty
        (Get-DEHostStats).FaultCount | Should -Be $faults
        $after = Get-DEPageStats
        $after.PrivatePages | Should -Be $before.PrivatePages
        $after.SharedPages | Should -Be $before.SharedPages
    }

    It 'shows a table that fits 120 columns' {
        $lines = (Invoke-DEWorkload -Domain w* -Operations 100 | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $lines -join "`n" | Should -Match 'w1, w2, w3'
    }
}

Describe 'Get-DEPage with piped pages' {
    BeforeAll {
        $null = New-DEDomain -Name gp1 -MemorySize 256KB
    }

    AfterAll {
        Get-DEDomain gp* | Remove-DEDomain -Confirm:$false
    }

    It 'takes a piped page''s Gfn, and every page of a piped domain' {
        @(Get-DEPage gp1 -Gfn 5 | Get-DEPage).Gfn | Should -Be @(5)
        $csv = Join-Path $TestDrive 'pages.csv'
        Get-DEPage gp1 -Gfn 0, 1, 2 | Export-Csv -LiteralPath $csv
        @(Import-Csv -LiteralPath $csv | Get-DEPage).Gfn | Should -Be @(0, 1, 2)
        @(Get-DEDomain gp1 | Get-DEPage).Count | Should -Be 64
    }

    It 'shows a page the guest never populated as Untouched in the table, its State being Zero' {
        $page = Get-DEPage gp1 -Gfn 7
        $page.State | Should -Be 'Zero'
        $page.Untouched | Should -BeTrue
        $page | Out-String -Width 200 | Should -Match '\b7\s+Untouched\b'
    }

    It 'shows domain names of 20 characters whole in the page stats table' {
        $null = New-DEDomain -Name gp-tenant-a-web-0001 -MemorySize 64KB
        $null = New-DEDomain -Name gp-tenant-a-web-0002 -MemorySize 64KB
        $text = Get-DEPageStats gp-tenant* | Out-String -Width 120
        $text | Should -Match 'gp-tenant-a-web-0001'
        $text | Should -Match 'gp-tenant-a-web-0002'
    }
}
