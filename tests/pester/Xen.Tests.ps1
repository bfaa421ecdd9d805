# The cmdlets on a Xen host: Connect-DEHost -Xen over the fake Xen (tests/native/fakexen), which build.ps1 builds into
# out/native/fake before the Pester suite runs. DE_XEN_SHIM_PATH points the engine at the shim linked against the fake;
# the fake's test API (create domains, guest reads and writes) is bound from the very libfakexen.so that shim loads, so
# both sides see the same in-process hypervisor. Domain 0 is a fake domain with id 0, as the engine treats any domain 0.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.
# Without the fake Xen build (build.ps1 skips native/ when gcc, make or libxen-dev is missing) every test here is
# reported skipped, and the first one says why.

BeforeDiscovery {
    $fakeFolder = Join-Path $PSScriptRoot '../../out/native/fake'
    $fakeMissing = -not ((Test-Path -LiteralPath (Join-Path $fakeFolder 'libdexen.so') -PathType Leaf) -and
        (Test-Path -LiteralPath (Join-Path $fakeFolder 'libfakexen.so') -PathType Leaf))
}

BeforeAll {
    $repoRoot = (Resolve-Path -LiteralPath (Join-Path $PSScriptRoot '../..')).ProviderPath
    $fakeFolder = Join-Path $repoRoot 'out/native/fake'
    $shim = Join-Path $fakeFolder 'libdexen.so'
    $fakeLibrary = Join-Path $fakeFolder 'libfakexen.so'
    $fakeMissing = -not ((Test-Path -LiteralPath $shim -PathType Leaf) -and (Test-Path -LiteralPath $fakeLibrary -PathType Leaf))
    $fakeMissingReason = ("the fake Xen build is missing ($fakeFolder): native/ was not built, as gcc, make or " +
        'libxen-dev is missing; build.ps1 installs them when run as root')
    $savedShimPath = $env:DE_XEN_SHIM_PATH
    if ($fakeMissing) { return }

    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')

    # Every Xen host of this file talks to the fake; the variable is put back in AfterAll, so Host.Tests.ps1's
    # "fails at once with XenNotAvailable" keeps meaning what it says whichever file runs first.
    $env:DE_XEN_SHIM_PATH = $shim

    if (-not ('DETests.FakeXen' -as [type])) {
        Add-Type -TypeDefinition @"
using System.Runtime.InteropServices;
namespace DETests
{
    // tests/native/fakexen/fakexen.h; every int result is 0 or -errno.
    public static class FakeXen
    {
        private const string Library = "$fakeLibrary";
        [DllImport(Library)] public static extern int fakexen_reset();
        [DllImport(Library)] public static extern int fakexen_create_domain(uint domid, ulong pages, byte[] content);
        [DllImport(Library)] public static extern int fakexen_set_domain_name(uint domid, string name);
        [DllImport(Library)] public static extern int fakexen_guest_read(uint domid, ulong gfn, byte[] page);
        [DllImport(Library)] public static extern int fakexen_guest_write(uint domid, ulong gfn, byte[] page);
        [DllImport(Library)] public static extern int fakexen_set_timeout_ms(uint ms);
        [DllImport(Library)] public static extern ulong fakexen_frame_count();
        [DllImport(Library)] public static extern ulong fakexen_requests_posted(uint domid);
    }
}
"@
    }

    function Assert-Fake([int]$Result, [string]$What) {
        if ($Result -ne 0) { throw "fakexen: $What failed with errno $(-$Result)" }
    }

    # Random pages, the same for the same seed (what identical guests hold).
    function New-RandomPages([int]$Pages, [int]$Seed) {
        $bytes = [byte[]]::new($Pages * 4096)
        [Random]::new($Seed).NextBytes($bytes)
        , $bytes
    }

    # Pages of text: they compress well, and no two are alike.
    function New-TextPages([int]$Pages) {
        $bytes = [byte[]]::new($Pages * 4096)
        for ($g = 0; $g -lt $Pages; $g++) {
            $line = [Text.Encoding]::ASCII.GetBytes("guest page $g of the cold domain, mostly text that nobody reads; ")
            for ($i = 0; $i -lt 4096; $i++) { $bytes[$g * 4096 + $i] = $line[$i % $line.Length] }
        }
        , $bytes
    }

    # Pages alike but for a few bytes each: one random page with its first bytes changed per page (patching's input).
    function New-SimilarPages([int]$Pages, [int]$Seed) {
        $base = [byte[]]::new(4096)
        [Random]::new($Seed).NextBytes($base)
        $bytes = [byte[]]::new($Pages * 4096)
        for ($g = 0; $g -lt $Pages; $g++) {
            [Array]::Copy($base, 0, $bytes, $g * 4096, 4096)
            for ($i = 0; $i -lt 8; $i++) { $bytes[$g * 4096 + $i] = [byte](($g * 8 + $i) % 256) }
        }
        , $bytes
    }

    function New-FakeDomain([uint32]$Id, [byte[]]$Content, [string]$Name) {
        Assert-Fake ([DETests.FakeXen]::fakexen_create_domain($Id, [uint64]($Content.Length / 4096), $Content)) "create domain $Id"
        if ($Name) { Assert-Fake ([DETests.FakeXen]::fakexen_set_domain_name($Id, $Name)) "name domain $Id" }
    }

    # A guest vCPU reads the page: an evicted page waits for the pager, as on Xen.
    function Read-Guest([uint32]$Id, [uint64]$Gfn) {
        $page = [byte[]]::new(4096)
        Assert-Fake ([DETests.FakeXen]::fakexen_guest_read($Id, $Gfn, $page)) "guest read of domain $Id gfn $Gfn"
        , $page
    }

    function Get-ContentPage([byte[]]$Content, [int]$Gfn) {
        , [byte[]]$Content[($Gfn * 4096)..($Gfn * 4096 + 4095)]
    }

    function Test-SameBytes([byte[]]$A, [byte[]]$B) {
        [Linq.Enumerable]::SequenceEqual($A, $B)
    }

    # The engine's id and category of an error from a script block (the first one written or thrown).
    function Get-DEError([scriptblock]$Command) {
        $ErrorActionPreference = 'Stop'
        try {
            $null = & $Command
        }
        catch {
            return [pscustomobject]@{ Id = $_.FullyQualifiedErrorId.Split(',')[0]; Category = "$($_.CategoryInfo.Category)"; Message = "$_" }
        }
        throw "No error from: $Command"
    }

    Assert-Fake ([DETests.FakeXen]::fakexen_reset()) 'reset'
    Assert-Fake ([DETests.FakeXen]::fakexen_set_timeout_ms(10000)) 'set the timeout'
    $pages = 32
    $shared = New-RandomPages $pages 7
    $cold = New-TextPages $pages
    $similar = New-SimilarPages $pages 11
    $lone = New-RandomPages 8 13
    New-FakeDomain 0 (New-RandomPages 4 1) 'Domain-0'
    New-FakeDomain 1 $shared 'web1'
    New-FakeDomain 2 $shared 'web2'
    New-FakeDomain 3 $cold 'cold'
    New-FakeDomain 4 $similar 'similar'
    New-FakeDomain 5 $lone $null   # no name in xenstore: listed as Domain-5
}

AfterAll {
    if (-not $fakeMissing) {
        Get-DEHost | Where-Object Kind -EQ 'Xen' | Disconnect-DEHost -Confirm:$false
        $null = [DETests.FakeXen]::fakexen_reset()
    }
    $env:DE_XEN_SHIM_PATH = $savedShimPath
}

Describe 'The fake Xen' {
    It 'is built in out/native/fake, and the engine is pointed at its shim' {
        if ($fakeMissing) {
            Set-ItResult -Skipped -Because "$fakeMissingReason (so every test of Xen.Tests.ps1 is skipped)"
            return
        }
        $env:DE_XEN_SHIM_PATH | Should -Be $shim
        [DETests.FakeXen]::fakexen_frame_count() | Should -BeGreaterThan 0
    }
}

Describe 'Connect-DEHost -Xen' -Skip:$fakeMissing {
    BeforeAll {
        $xen = Connect-DEHost -Xen -SimilaritySeed 5 -PassThru
    }

    It 'returns the Xen host with -PassThru, named xen by default, connected and current' {
        $xen | Should -BeOfType ([DifferenceEngine.Xen.XenHost])
        $xen.Name | Should -Be 'xen'
        $xen.Kind | Should -Be 'Xen'
        $xen.IsConnected | Should -BeTrue
        $xen.IsCurrent | Should -BeTrue
        (Get-DEHost -Current).Name | Should -Be 'xen'
        $xen.Policy.SimilaritySeed | Should -Be 5
    }

    It 'is listed by Get-DEHost, in a table of its own' {
        (Get-DEHost -Name xen).Kind | Should -Be 'Xen'
        $text = Get-DEHost -Name xen | Format-Table | Out-String -Width 140
        $text | Should -Match 'Name\s+IsCurrent\s+DomainCount\s+PagerStoredBytes'
        $text | Should -Match 'xen\s+Yes\s+6\s'
    }

    It 'refuses a second connection to the local Xen, whatever its name (HostExists)' {
        $e = Get-DEError { Connect-DEHost -Xen -Name other-xen }
        $e.Id | Should -Be 'HostExists'
        $e.Category | Should -Be 'ResourceExists'
        @(Get-DEHost | Where-Object Kind -EQ 'Xen').Count | Should -Be 1
    }

    It 'refuses -MemoryLimit without -SwapPath on Xen (XenMemoryLimitNeedsSwap)' {
        Get-DEHost -Name xen | Disconnect-DEHost -Confirm:$false
        try {
            (Get-DEError { Connect-DEHost -Xen -MemoryLimit 64MB }).Id | Should -Be 'XenMemoryLimitNeedsSwap'
        }
        finally {
            $null = Connect-DEHost -Xen -SimilaritySeed 5
        }
    }

    It 'takes the pager''s memory limit and swap file, unnamed once made and closed on disconnect' {
        Get-DEHost -Name xen | Disconnect-DEHost -Confirm:$false
        $swap = Join-Path ([IO.Path]::GetTempPath()) "de-xen-$([guid]::NewGuid().ToString('n')).swap"
        try {
            $limited = Connect-DEHost -Xen -Name xen-swap -MemoryLimit 64KB -SwapPath $swap -SwapSize 1MB -PassThru
            $limited.Name | Should -Be 'xen-swap'
            $limited.PagerMemoryLimitBytes | Should -Be 64KB
            $limited.SwapPath | Should -Be $swap
            Test-Path -LiteralPath $swap | Should -BeFalse
            $open = @(Get-SwapDescriptor $swap)
            $open.Count | Should -Be 1
            $open[0].Length | Should -Be 1MB
            (Get-DEHostStats).SwapBytes | Should -Be 1MB
            $limited | Disconnect-DEHost -Confirm:$false
            @(Get-SwapDescriptor $swap).Count | Should -Be 0
            Test-Path -LiteralPath $swap | Should -BeFalse
        }
        finally {
            Get-DEHost | Where-Object Kind -EQ 'Xen' | Disconnect-DEHost -Confirm:$false
            Remove-Item -LiteralPath $swap -ErrorAction Ignore
            $null = Connect-DEHost -Xen -SimilaritySeed 5
        }
    }

    It 'connects nothing with -WhatIf' {
        Connect-DEHost -Xen -Name xen-whatif -WhatIf
        Get-DEHost -Name 'xen-whatif*' | Should -BeNullOrEmpty
    }
}

Describe 'Get-DEDomain on a Xen host' -Skip:$fakeMissing {
    It 'lists the domains Xen has, domain 0 included, named from xenstore' {
        $domains = Get-DEDomain
        $domains | Should -BeOfType ([DifferenceEngine.Xen.XenDomain])
        $domains.Id | Should -Be @(0, 1, 2, 3, 4, 5)
        $domains.Name | Should -Be @('Domain-0', 'web1', 'web2', 'cold', 'similar', 'Domain-5')
        ($domains | Where-Object Id -EQ 1).PageCount | Should -Be $pages
        ($domains | Where-Object Id -EQ 0).IsControlDomain | Should -BeTrue
        ($domains | Where-Object Id -EQ 1).SupportsSharingAndPaging | Should -BeTrue
    }

    It 'finds domains by name, pattern and domain id' {
        (Get-DEDomain web1).Id | Should -Be 1
        (Get-DEDomain web*).Name | Should -Be @('web1', 'web2')
        (Get-DEDomain 3).Name | Should -Be 'cold'
        (Get-DEDomain 5).Name | Should -Be 'Domain-5'
        (Get-DEDomain 0).Name | Should -Be 'Domain-0'
    }

    It 'writes DomainNotFound for a name that matches nothing' {
        Get-DEDomain nosuch -ErrorVariable err -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $err[0].FullyQualifiedErrorId | Should -Be 'DomainNotFound,DifferenceEngine.Commands.GetDEDomainCommand'
    }

    It 'shows a table with id, name, status, size, shared and paged pages and mechanisms' {
        $text = Get-DEDomain | Format-Table | Out-String -Width 140
        $text | Should -Match 'Id\s+Name\s+Status\s+SizeBytes\s+SharedPages\s+PagedPages\s+SharingEnabled\s+PatchingEnabled\s+CompressionEnabled'
        $text | Should -Match '0\s+Domain-0\s+Running\s+16\.0 KiB\s+0\s+0\s+dom0'
        $text | Should -Match '1\s+web1\s+Running\s+128 KiB\s+0\s+0\s+Off\s+Off\s+Off'
    }

    It 'converts names, XenDomain and Domain objects to DomainSelector' {
        $byName = [DifferenceEngine.Commands.DomainSelector]'web1'
        $byName.Name | Should -Be 'web1'
        $byName.Domain | Should -BeNullOrEmpty
        $xenDomain = Get-DEDomain web2
        $byXen = [DifferenceEngine.Commands.DomainSelector]$xenDomain
        $byXen.Domain | Should -Be $xenDomain
        $byXen.Name | Should -Be 'web2'
        $embedded = Connect-DEHost -Name "pester-xen-embedded-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        try {
            $domain = New-DEDomain -Name e1 -MemorySize 64KB
            $byDomain = [DifferenceEngine.Commands.DomainSelector]$domain
            $byDomain.Domain | Should -Be $domain
            $byDomain.Domain | Should -BeOfType ([DifferenceEngine.Domains.Domain])
            # Objects of another host than the current one bind and resolve by themselves.
            ($xenDomain | Get-DEPolicy).Host | Should -Be 'xen'
            (Get-DEPolicy -Domain $domain).Host | Should -Be $embedded.Name
        }
        finally {
            $embedded | Disconnect-DEHost -Confirm:$false
        }
        (Get-DEHost -Current).Name | Should -Be 'xen'
    }
}

Describe 'Get-DEFingerprint on a Xen host' -Skip:$fakeMissing {
    It 'fingerprints every guest domain, and domain 0 only when it is given' {
        $keyPath = Join-Path $TestDrive 'fleet.key'
        $null = New-DEFleetKey -Path $keyPath
        $guests = @(Get-DEDomain | Where-Object { -not $_.IsControlDomain } | ForEach-Object Name)
        $guests | Should -Not -Contain 'Domain-0'
        # Every domain by default: the guests, as reports and scans take them; domain 0 runs the engine and stays put.
        $all = @(Get-DEFingerprint -FleetKeyPath $keyPath)
        $all.Domain | Should -Be $guests
        $all | ForEach-Object { $_.HostName | Should -Be 'xen' }
        # Named (by name, id or object), it is fingerprinted.
        (Get-DEFingerprint -Domain Domain-0 -FleetKeyPath $keyPath).Domain | Should -Be 'Domain-0'
        (Get-DEDomain 0 | Get-DEFingerprint -FleetKeyPath $keyPath).PageCount | Should -Be 4
    }
}

Describe 'Sharing on a Xen host' -Skip:$fakeMissing {
    BeforeAll {
        $framesBefore = [DETests.FakeXen]::fakexen_frame_count()
        Get-DEDomain web* | Enable-DESharing
        $scan = Invoke-DEScan -Domain web1, web2
    }

    It 'turns sharing on, by object from the pipeline' {
        (Get-DEDomain web*).SharingEnabled | Should -Be @($true, $true)
        (Get-DEPolicy -Domain web1).SharingEnabled | Should -BeTrue
    }

    It 'shares the identical pages of two domains through Xen' {
        $scan.PassResults[0].PagesMerged | Should -Be $pages
        (Get-DEPageStats -Domain web1).SharedPages | Should -Be $pages
        (Get-DEPageStats -Domain web2).SharedPages | Should -Be $pages
        (Get-DEDomain web1).SharedPages | Should -Be $pages
        [DETests.FakeXen]::fakexen_frame_count() | Should -Be ($framesBefore - $pages)
        (Get-DEPageStats -Domain web1).BytesSaved | Should -BeGreaterThan 0
    }

    It 'leaves the guests reading what they had, and a guest write gets a copy of its own' {
        Test-SameBytes (Read-Guest 1 3) (Get-ContentPage $shared 3) | Should -BeTrue
        Test-SameBytes (Read-DEGuestPage -Domain web2 -Gfn 3 -Raw) (Get-ContentPage $shared 3) | Should -BeTrue
        $written = [byte[]]::new(4096)
        $written[0] = 42
        Assert-Fake ([DETests.FakeXen]::fakexen_guest_write(1, 3, $written)) 'guest write'
        Test-SameBytes (Read-Guest 1 3) $written | Should -BeTrue
        Test-SameBytes (Read-Guest 2 3) (Get-ContentPage $shared 3) | Should -BeTrue
        (Get-DEPageStats -Domain web1).SharedPages | Should -Be ($pages - 1)
    }

    It 'refuses Disable-DESharing -Unshare (XenUnshareNotSupported) and leaves sharing on' {
        $e = Get-DEError { Disable-DESharing -Domain web1 -Unshare }
        $e.Id | Should -Be 'XenUnshareNotSupported'
        $e.Category | Should -Be 'NotImplemented'
        (Get-DEDomain web1).SharingEnabled | Should -BeTrue
    }

    It 'turns sharing off; pages shared stay shared' {
        Disable-DESharing -Domain web1, web2 -PassThru | ForEach-Object Name | Should -Be @('web1', 'web2')
        (Get-DEDomain web*).SharingEnabled | Should -Be @($false, $false)
        (Get-DEPageStats -Domain web2).SharedPages | Should -BeGreaterThan 0
    }
}

Describe 'Compression on a Xen host' -Skip:$fakeMissing {
    BeforeAll {
        Set-DEPolicy -Domain cold -C4Sweeps 1
        Enable-DECompression -Domain cold -Algorithm Zstd
        $scans = Invoke-DEScan -Domain cold -Passes 2
    }

    It 'takes the domain''s policy' {
        $policy = Get-DEPolicy -Domain cold
        $policy.CompressionEnabled | Should -BeTrue
        $policy.CompressionAlgorithm | Should -Be 'Zstd'
        $policy.C4Sweeps | Should -Be 1
        $policy.CompactionThreshold | Should -BeNullOrEmpty
    }

    It 'evicts the cold pages compressed into the pager' {
        $scans.PassResults[-1].PagesCompressed | Should -Be $pages
        $stats = Get-DEPageStats -Domain cold
        $stats.CompressedPages | Should -Be $pages
        $stats.CompressionEnabled | Should -BeTrue
        $stats.BytesSaved | Should -BeGreaterThan 0
        (Get-DEDomain cold).PagedPages | Should -Be $pages
        (Get-DEHostStats).StoreStoredBytes | Should -BeGreaterThan 0
    }

    It 'reads an evicted page without paging it in (Read-DEGuestPage)' {
        $posted = [DETests.FakeXen]::fakexen_requests_posted(3)
        Test-SameBytes (Read-DEGuestPage -Domain cold -Gfn 5 -Raw) (Get-ContentPage $cold 5) | Should -BeTrue
        (Read-DEGuestPage -Domain 3 -Gfn 6).Bytes.Count | Should -Be 4096
        [DETests.FakeXen]::fakexen_requests_posted(3) | Should -Be $posted
        (Get-DEPageStats -Domain cold).CompressedPages | Should -Be $pages
    }

    It 'serves the guest''s access to an evicted page with the bytes it had (page-in)' {
        $posted = [DETests.FakeXen]::fakexen_requests_posted(3)
        Test-SameBytes (Read-Guest 3 7) (Get-ContentPage $cold 7) | Should -BeTrue
        [DETests.FakeXen]::fakexen_requests_posted(3) | Should -Be ($posted + 1)
        (Get-DEPageStats -Domain cold).CompressedPages | Should -Be ($pages - 1)
        ((Get-DEHostStats).Faults | Where-Object Kind -EQ 'Decompress').Count | Should -BeGreaterOrEqual 1
    }

    It 'loads the compressed pages back with Disable-DECompression -Restore' {
        $verbose = Disable-DECompression -Domain cold -Restore -Verbose 4>&1 | ForEach-Object { "$_" }
        $verbose -join "`n" | Should -Match "Domain 'cold': $($pages - 1) compressed page\(s\) rebuilt"
        $stats = Get-DEPageStats -Domain cold
        $stats.CompressedPages | Should -Be 0
        $stats.CompressionEnabled | Should -BeFalse
        (Get-DEDomain cold).PagedPages | Should -Be 0
        $posted = [DETests.FakeXen]::fakexen_requests_posted(3)
        foreach ($gfn in 0, 5, 31) {
            Test-SameBytes (Read-Guest 3 $gfn) (Get-ContentPage $cold $gfn) | Should -BeTrue
        }
        [DETests.FakeXen]::fakexen_requests_posted(3) | Should -Be $posted
    }
}

Describe 'Patching on a Xen host' -Skip:$fakeMissing {
    BeforeAll {
        Enable-DEPatching -Domain similar
        # Pages are patched once a pass has seen them unchanged: the second pass patches.
        $scans = Invoke-DEScan -Domain similar -Passes 2
    }

    It 'stores similar pages as patches against a reference page' {
        ($scans.PassResults | Measure-Object -Property PagesPatched -Sum).Sum | Should -BeGreaterThan 0
        $stats = Get-DEPageStats -Domain similar
        $stats.PatchedPages | Should -BeGreaterThan 0
        $stats.ReferencePages | Should -BeGreaterThan 0
        $stats.PatchingEnabled | Should -BeTrue
        $stats.BytesSaved | Should -BeGreaterThan 0
    }

    It 'reads every page back right, through the pager and through the guest' {
        for ($gfn = 0; $gfn -lt $pages; $gfn++) {
            Test-SameBytes (Read-DEGuestPage -Domain similar -Gfn $gfn -Raw) (Get-ContentPage $similar $gfn) | Should -BeTrue
        }
        foreach ($gfn in 1, 17, 30) {
            Test-SameBytes (Read-Guest 4 $gfn) (Get-ContentPage $similar $gfn) | Should -BeTrue
        }
    }

    It 'loads the patched pages and references back with Disable-DEPatching -Restore' {
        Disable-DEPatching -Domain similar -Restore
        $stats = Get-DEPageStats -Domain similar
        $stats.PatchedPages | Should -Be 0
        $stats.ReferencePages | Should -Be 0
        (Get-DEDomain similar).PagedPages | Should -Be 0
        Test-SameBytes (Read-Guest 4 9) (Get-ContentPage $similar 9) | Should -BeTrue
    }
}

Describe 'Errors on a Xen host' -Skip:$fakeMissing {
    It 'refuses to treat domain 0 (XenControlDomainNotTreated): <Name>' -ForEach @(
        @{ Name = 'Enable-DESharing'; Command = { Enable-DESharing -Domain Domain-0 } }
        @{ Name = 'Enable-DEPatching'; Command = { Enable-DEPatching -Domain 0 } }
        @{ Name = 'Enable-DECompression'; Command = { Enable-DECompression -Domain Domain-0 } }
        @{ Name = 'Invoke-DEScan'; Command = { Invoke-DEScan -Domain Domain-0 } }
    ) {
        $e = Get-DEError $Command
        $e.Id | Should -Be 'XenControlDomainNotTreated'
        $e.Category | Should -Be 'InvalidOperation'
        (Get-DEDomain 0).SharingEnabled | Should -BeFalse
    }

    It 'treats the other domains named with domain 0 (a per-domain error)' {
        Enable-DESharing -Domain Domain-0, Domain-5 -ErrorVariable err -ErrorAction SilentlyContinue
        $err.Count | Should -Be 1
        (Get-DEDomain 5).SharingEnabled | Should -BeTrue
        Disable-DESharing -Domain Domain-5
    }

    It 'says <Name> works on embedded hosts only (NotSupportedOnXenHost)' -ForEach @(
        @{ Name = 'New-DEDomain'; Command = { New-DEDomain -Name x -MemorySize 1MB } }
        @{ Name = 'Remove-DEDomain'; Command = { Remove-DEDomain -Name web1 -Confirm:$false } }
        @{ Name = 'Remove-DEDomain (object)'; Command = { Get-DEDomain web1 | Remove-DEDomain -Confirm:$false } }
        @{ Name = 'Write-DEGuestPage'; Command = { Write-DEGuestPage -Domain web1 -Gfn 0 -Data 1, 2 } }
        @{ Name = 'Invoke-DEWorkload'; Command = { Invoke-DEWorkload -Domain web1 -Operations 10 } }
        @{ Name = 'Get-DEPage'; Command = { Get-DEPage -Domain web1 } }
        @{ Name = 'Set-DEPolicy -LowWatermark'; Command = { Set-DEPolicy -HostPolicy -LowWatermark 0.2 } }
        @{ Name = 'Set-DEPolicy -CompactionThreshold'; Command = { Set-DEPolicy -HostPolicy -CompactionThreshold 0.5 } }
        @{ Name = 'Set-DEPolicy -GroupSize'; Command = { Set-DEPolicy -Domain web1 -GroupSize 4 } }
        @{ Name = 'Set-DEPolicy -GroupAfterSweeps'; Command = { Set-DEPolicy -Domain web1 -GroupAfterSweeps 2 } }
        @{ Name = 'Set-DEPolicy -GroupAlgorithm'; Command = { Get-DEDomain web1 | Set-DEPolicy -GroupAlgorithm LZ4 } }
    ) {
        $e = Get-DEError $Command
        $e.Id | Should -Be 'NotSupportedOnXenHost'
        $e.Category | Should -Be 'NotImplemented'
        $e.Message | Should -Match "host 'xen' is a Xen host"
        (Get-DEDomain web1).Name | Should -Be 'web1'
    }

    It 'stops Set-DEPolicy with page-group values once, a bad argument for the call, before any domain changes' {
        $before = (Get-DEPolicy -Domain web1, web2).C4Sweeps
        $threw = $null
        try {
            Set-DEPolicy -Domain web1, web2 -C4Sweeps 5 -GroupSize 4 -ErrorAction SilentlyContinue -ErrorVariable err
        }
        catch {
            $threw = $_
        }
        $threw | Should -Not -BeNullOrEmpty -Because '-ErrorAction does not silence a bad argument'
        $threw.FullyQualifiedErrorId | Should -Be 'NotSupportedOnXenHost,DifferenceEngine.Commands.SetDEPolicyCommand'
        "$($threw.CategoryInfo.Category)" | Should -Be 'NotImplemented'
        # One error for the call (-ErrorVariable holds the terminating one), none per domain.
        @($err).Count | Should -Be 1
        $record = if ($err[0] -is [Management.Automation.ErrorRecord]) { $err[0] } else { $err[0].ErrorRecord }
        $record.FullyQualifiedErrorId | Should -Be 'NotSupportedOnXenHost,DifferenceEngine.Commands.SetDEPolicyCommand'
        (Get-DEPolicy -Domain web1, web2).C4Sweeps | Should -Be $before
    }

    It 'refuses a Xen domain given to a cmdlet of the embedded host, even when an embedded host is current' {
        $xenDomain = Get-DEDomain web1
        $embedded = Connect-DEHost -Name "pester-xen-embedded-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        try {
            $null = New-DEDomain -Name web1 -MemorySize 64KB
            (Get-DEError { $xenDomain | Remove-DEDomain -Confirm:$false }).Id | Should -Be 'NotSupportedOnXenHost'
            (Get-DEError { Get-DEPage -Domain $xenDomain }).Id | Should -Be 'NotSupportedOnXenHost'
            (Get-DEDomain web1 -DEHost $embedded).IsRemoved | Should -BeFalse
        }
        finally {
            $embedded | Disconnect-DEHost -Confirm:$false
        }
    }
}

Describe 'Policy on a Xen host' -Skip:$fakeMissing {
    It 'shows the host policy without compaction and watermarks' {
        $policy = Get-DEPolicy -HostPolicy
        $policy.Kind | Should -Be 'Xen'
        $policy.SimilaritySeed | Should -Be 5
        $policy.LowWatermark | Should -BeNullOrEmpty
        $policy.CompactionThreshold | Should -BeNullOrEmpty
        Get-DEPolicy -HostPolicy | Out-String -Width 140 | Should -Match 'Reclaim watermarks\s*:\s*n/a on Xen'
    }

    It 'changes the similarity detector' {
        $policy = Set-DEPolicy -HostPolicy -SimilarityKeys 3 -SimilarityCandidates 2 -PassThru
        $policy.SimilarityKeys | Should -Be 3
        $policy.SimilarityCandidates | Should -Be 2
        Set-DEPolicy -HostPolicy -SimilarityKeys 2 -SimilarityCandidates 1
    }

    It 'changes a domain''s policy, and stops on a value out of range' {
        Set-DEPolicy -Domain Domain-5 -PatchThreshold 1024 -TrustGroup lone -PassThru | ForEach-Object TrustGroup | Should -Be 'lone'
        (Get-DEDomain 5).TrustGroup | Should -Be 'lone'
        (Get-DEError { Set-DEPolicy -Domain Domain-5 -C4Sweeps 99 }).Id | Should -Be 'PolicyC4SweepsInvalid'
    }
}

Describe 'The background engine on a Xen host' -Skip:$fakeMissing {
    It 'starts, runs passes over the treated domains, and stops' {
        Enable-DESharing -Domain web1, web2
        try {
            $status = Start-DEEngine -Interval 0.2 -PassThru
            $status.State | Should -Be 'Running'
            $running = Wait-DEEnginePass -Count 2
            $running.PassesRun | Should -BeGreaterOrEqual 2
            $running.LastError | Should -BeNullOrEmpty
            $final = Stop-DEEngine -PassThru
            $final.State | Should -Be 'Stopped'
            @(Get-DEEngine -History).Count | Should -BeGreaterOrEqual 2
            (Get-DEHostStats).ScanPasses | Should -BeGreaterOrEqual 2
        }
        finally {
            Stop-DEEngine
            Disable-DESharing -Domain web1, web2
        }
    }
}

Describe 'Get-DEHostStats on a Xen host' -Skip:$fakeMissing {
    It 'counts the guest domains, their frames and what the pager holds' {
        $stats = Get-DEHostStats
        $stats | Should -BeOfType ([DifferenceEngine.Stats.HostStats])
        $stats.Host | Should -Be 'xen'
        $stats.Domains | Should -Be 5
        $stats.GuestBytes | Should -Be ((4 * $pages + 8) * 4096)
        $stats.SharedFrames | Should -BeGreaterThan 0
        Get-DEHostStats | Format-List | Out-String -Width 140 | Should -Match 'Host\s*:\s*xen'
    }

    It 'has Get-DEPageStats rows, domain 0 left out, that add up to its figures to the byte' {
        $stats = Get-DEHostStats
        $rows = @(Get-DEPageStats)
        $rows.Domain | Should -Not -Contain 'Domain-0'
        $rows.Count | Should -Be $stats.Domains
        # Shared frames split between their users: the rows' shares are rounded together.
        ($rows | Measure-Object -Property SharedPages -Sum).Sum | Should -BeGreaterThan 0
        ($rows | Measure-Object -Property BytesUsed -Sum).Sum | Should -Be $stats.DomainsUsedBytes
        ($rows | Measure-Object -Property GuestBytes -Sum).Sum | Should -Be $stats.GuestBytes
        ($rows | Measure-Object -Property BytesSaved -Sum).Sum | Should -Be ($stats.GuestBytes - $stats.DomainsUsedBytes)
    }

    It 'gives domain 0 a row, measured alone, only when it is named' {
        (Get-DEPageStats -Domain Domain-0).PageCount | Should -Be 4
        (Get-DEPageStats 0).Domain | Should -Be 'Domain-0'
        (Get-DEDomain 0 | Get-DEPageStats).Domain | Should -Be 'Domain-0'
    }
}

Describe 'Export-DEReport on a Xen host' -Skip:$fakeMissing {
    It 'writes a JSON report of the guest domains, without domain 0, with the page-ins as faults' {
        Set-DEPolicy -Domain cold -C4Sweeps 1
        Enable-DECompression -Domain cold
        $null = Invoke-DEScan -Domain cold -Passes 2
        $path = Join-Path $TestDrive 'xen.json'
        Export-DEReport -Path $path | Should -BeNullOrEmpty
        $json = Get-Content -LiteralPath $path -Raw | ConvertFrom-Json
        $json.host.name | Should -Be 'xen'
        $json.host.kind | Should -Be 'Xen'
        $json.allDomains | Should -BeTrue
        $names = @($json.domains.domain)
        $names | Should -Not -Contain 'Domain-0'
        $names.Count | Should -Be (Get-DEHostStats).Domains
        $cold = $json.domains | Where-Object domain -EQ 'cold'
        $cold.compressedPages | Should -Be (Get-DEPageStats -Domain cold).CompressedPages
        $cold.compressedPages | Should -BeGreaterThan 0
        @($json.host.faults.kind) | Should -Contain 'Decompress'
        # The host policy as Get-DEPolicy -HostPolicy shows it: no watermarks and no compaction threshold on Xen.
        $json.hostPolicy.similaritySeed | Should -Be (Get-DEPolicy -HostPolicy).SimilaritySeed
        foreach ($field in 'lowWatermark', 'highWatermark', 'compactionThreshold') {
            $json.hostPolicy.PSObject.Properties.Name | Should -Contain $field
            $json.hostPolicy.$field | Should -BeNullOrEmpty -Because "$field does not apply on Xen"
        }
        (Get-Item -LiteralPath $path).UnixFileMode | Should -Be ([IO.UnixFileMode]'UserRead, UserWrite')
    }

    It 'reports the domains it is given, by name or from the pipeline' {
        $path = Join-Path $TestDrive 'two.csv'
        Get-DEDomain cold, similar | Export-DEReport -Path $path
        $rows = Import-Csv -LiteralPath $path
        $rows.Domain | Should -Be @('cold', 'similar')
    }

    It 'writes an HTML report that names the host a Xen dom0 service' {
        $path = Join-Path $TestDrive 'xen.html'
        Export-DEReport -Path $path -Domain cold
        $html = Get-Content -LiteralPath $path -Raw
        $html | Should -Match 'id="host-kind">Xen dom0 service<'
        $html | Should -Match 'Host xen'
        $html | Should -Match 'Reclaim watermarks</t[dh]>\s*<td[^>]*>n/a on Xen'
        $html | Should -Match 'Compaction above</t[dh]>\s*<td[^>]*>n/a on Xen'
    }
}

Describe 'Disconnect-DEHost from a Xen host' -Skip:$fakeMissing {
    It 'loads every page the pager holds back into the guests, and the domains run on' {
        Set-DEPolicy -Domain cold -C4Sweeps 1
        Enable-DECompression -Domain cold
        Enable-DEPatching -Domain similar
        $null = Invoke-DEScan -Domain cold, similar -Passes 2
        (Get-DEPageStats -Domain cold).CompressedPages | Should -BeGreaterThan 0
        (Get-DEPageStats -Domain similar).PatchedPages | Should -BeGreaterThan 0
        $xen = Get-DEHost -Name xen

        $xen | Disconnect-DEHost -Confirm:$false

        $xen.IsConnected | Should -BeFalse
        Get-DEHost | Where-Object Kind -EQ 'Xen' | Should -BeNullOrEmpty
        (Get-DEError { Get-DEDomain -DEHost $xen }).Id | Should -Be 'HostDisconnected'
        $xen.EngineStatus.State | Should -Be 'Stopped'
        $posted = [DETests.FakeXen]::fakexen_requests_posted(3) + [DETests.FakeXen]::fakexen_requests_posted(4)
        for ($gfn = 0; $gfn -lt $pages; $gfn++) {
            Test-SameBytes (Read-Guest 3 $gfn) (Get-ContentPage $cold $gfn) | Should -BeTrue
            Test-SameBytes (Read-Guest 4 $gfn) (Get-ContentPage $similar $gfn) | Should -BeTrue
        }
        # No guest access needed the pager: every page was back in its domain.
        [DETests.FakeXen]::fakexen_requests_posted(3) + [DETests.FakeXen]::fakexen_requests_posted(4) | Should -Be $posted

        $again = Connect-DEHost -Xen -PassThru
        try {
            (Get-DEDomain | Measure-Object -Property PagedPages -Sum).Sum | Should -Be 0
            (Get-DEDomain cold).CompressionEnabled | Should -BeFalse
        }
        finally {
            $again | Disconnect-DEHost -Confirm:$false
        }
    }
}

Describe 'A corrupt copy in the pager on a Xen host' -Skip:$fakeMissing {
    It 'is never loaded, and Get-DEHostStats shows it (PagerFailures, LastPagerError: XenPageCorrupt)' {
        New-FakeDomain 6 (New-TextPages 8) 'corrupt'
        $xen = Connect-DEHost -Xen -Name xen-corrupt -PassThru
        Assert-Fake ([DETests.FakeXen]::fakexen_set_timeout_ms(500)) 'set the timeout'
        try {
            (Get-DEHostStats).PagerFailures | Should -Be 0
            (Get-DEHostStats).LastPagerError | Should -BeNullOrEmpty
            Get-DEHostStats | Format-List | Out-String -Width 200 | Should -Not -Match 'Pager failures'
            Set-DEPolicy -Domain corrupt -C4Sweeps 1
            Enable-DECompression -Domain corrupt
            $null = Invoke-DEScan -Domain corrupt -Passes 2
            (Get-DEPageStats -Domain corrupt).CompressedPages | Should -Be 8
            # The test hook flips a bit of the pager's copy of gfn 2 (internal: reached by reflection).
            $flags = [Reflection.BindingFlags]'Instance, NonPublic'
            $xen.Pager.GetType().GetMethod('CorruptForTest', $flags).Invoke($xen.Pager, @([uint32]6, [uint64]2)) | Should -BeTrue
            # The guest's read waits on the page: the fake gives up after its timeout (ETIMEDOUT), the vCPU stays paused.
            [DETests.FakeXen]::fakexen_guest_read(6, 2, [byte[]]::new(4096)) | Should -Be -110
            # The pager's thread counts it once it has met the request, which the fake's timeout does not wait for: waited
            # for as a state (it comes; a count that never comes is the failure), not for a time.
            while ((Get-DEHostStats).PagerFailures -eq 0) { Start-Sleep -Milliseconds 20 }
            $stats = Get-DEHostStats
            $stats.PagerFailures | Should -Be 1
            $stats.LastPagerError | Should -Match '^XenPageCorrupt: .*domain 6 gfn 0x2'
            $stats | Format-List | Out-String -Width 300 | Should -Match 'Pager failures\s*:\s*1, the last: XenPageCorrupt'
            # Asked for by a cmdlet, the same copy is that cmdlet's error.
            $e = Get-DEError { Read-DEGuestPage -Domain corrupt -Gfn 2 }
            $e.Id | Should -Be 'XenPageCorrupt'
            $e.Category | Should -Be 'InvalidData'
            $e = Get-DEError { Disable-DECompression -Domain corrupt -Restore }
            $e.Id | Should -Be 'XenPageCorrupt'
            $e.Category | Should -Be 'InvalidData'
        }
        finally {
            Assert-Fake ([DETests.FakeXen]::fakexen_set_timeout_ms(10000)) 'set the timeout'
            # The corrupt page cannot go back: the disconnection says so (XenPagerRestoreFailed) and happens all the same.
            $xen | Disconnect-DEHost -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $err.Count | Should -Be 1
            $err[0].FullyQualifiedErrorId | Should -Match '^XenPagerRestoreFailed,'
            $xen.IsConnected | Should -BeFalse
        }
    }
}
