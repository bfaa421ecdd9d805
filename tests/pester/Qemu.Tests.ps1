# A running QEMU guest as a domain, through the module: New-DEDomain -QemuSocket, the stats, a scan that takes pages
# out of it while it verifies its memory, Remove-DEDomain.
# The guest is the build's test guest (build.ps1 -Task Guests makes out/guests); QEMU runs under TCG with the
# module's own libdeqemu.so preloaded. Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $repoRoot = (Resolve-Path -LiteralPath (Join-Path $PSScriptRoot '../..')).ProviderPath
    $guests = Join-Path $repoRoot 'out/guests'
    $library = Join-Path $env:DE_MODULE_PATH 'runtimes/linux-x64/native/libdeqemu.so'
    $qemu = Get-Command qemu-system-x86_64 -CommandType Application -ErrorAction Ignore | Select-Object -First 1
    $missing = @(
        if (-not $qemu) { 'qemu-system-x86_64 (package qemu-system-x86)' }
        if (-not (Test-Path -LiteralPath (Join-Path $guests 'vmlinuz'))) { 'the test guests (build.ps1 -Task Guests)' }
        if (-not (Test-Path -LiteralPath $library)) { 'libdeqemu.so in the module (native/ was not built)' }
        if (-not [Environment]::IsPrivilegedProcess -and (Get-Content /proc/sys/vm/unprivileged_userfaultfd) -ne '1') { 'root, or vm.unprivileged_userfaultfd=1' }
    )
    $deHost = Connect-DEHost -Name "pester-qemu-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
}

AfterAll {
    $deHost | Disconnect-DEHost -Confirm:$false
}

Describe 'New-DEDomain -QemuSocket' {
    It 'writes QemuSocketNotFound, as a per-item error, when no QEMU listens there' {
        $socket = Join-Path $TestDrive 'nobody.sock'
        $d = New-DEDomain -Name nobody -QemuSocket $socket -ErrorVariable err -ErrorAction SilentlyContinue
        $d | Should -BeNullOrEmpty
        $err[0].FullyQualifiedErrorId | Should -Be 'QemuSocketNotFound,DifferenceEngine.Commands.NewDEDomainCommand'
        $err[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        Get-DEDomain -Name nobody -ErrorAction Ignore | Should -BeNullOrEmpty
    }

    It 'stops with QemuSocketPathInvalid for a path no Unix socket can have' {
        { New-DEDomain -Name long -QemuSocket (Join-Path $TestDrive ('s' * 120)) -ErrorAction SilentlyContinue } |
            Should -Throw -ErrorId 'QemuSocketPathInvalid,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'attaches a running guest, shows its pages, and hands it back when the domain is removed' {
        if ($missing) {
            Set-ItResult -Skipped -Because "needs $($missing -join ', ')"
            return
        }
        $socket = Join-Path $TestDrive 'vm1.sock'
        $psi = [Diagnostics.ProcessStartInfo]::new($qemu.Source)
        foreach ($a in '-accel', 'tcg', '-m', '128M', '-nodefaults', '-no-reboot', '-display', 'none', '-serial', 'stdio',
            '-monitor', 'none', '-nic', 'none', '-object', 'memory-backend-memfd,id=mem,size=128M,share=on', '-machine', 'memory-backend=mem',
            '-kernel', (Join-Path $guests 'vmlinuz'), '-initrd', (Join-Path $guests 'initramfs.cpio.gz'),
            '-append', 'console=ttyS0 quiet loglevel=0 panic=-1 de.mem=8 de.rounds=0') { $psi.ArgumentList.Add($a) }
        $psi.Environment['LD_PRELOAD'] = $library
        $psi.Environment['DE_QEMU_SOCKET'] = $socket
        $psi.RedirectStandardOutput = $true
        $psi.RedirectStandardInput = $true
        $psi.UseShellExecute = $false
        $guest = [Diagnostics.Process]::Start($psi)
        try {
            # Lines are read as they come: the workload says it is ready, then a line a round. The wait for a line is
            # bounded only to turn a hang into a failure.
            function Read-Until([string]$Pattern) {
                while ($true) {
                    $next = $guest.StandardOutput.ReadLineAsync()
                    if (-not $next.Wait([TimeSpan]::FromMinutes(3))) { throw "No console line within 3 minutes while waiting for $Pattern" }
                    if ($null -eq $next.Result) { throw "QEMU ended before a line matched $Pattern" }
                    if ($next.Result -match $Pattern) { return $Matches }
                }
            }
            $null = Read-Until 'deworkload ready pages=2048'
            $vm = New-DEDomain -Name vm1 -QemuSocket $socket
            $vm.QemuPid | Should -Be $guest.Id
            $stats = Get-DEPageStats -Domain vm1
            $stats.PageCount | Should -Be (128MB / 4096)
            $stats.PrivatePages | Should -BeGreaterThan 2048
            $stats.UntouchedPages | Should -BeGreaterThan 0
            ($stats.PrivatePages + $stats.UntouchedPages) | Should -Be $stats.PageCount
            $stats.GuestBytes | Should -Be ($stats.BytesUsed + $stats.BytesSaved)
            # The guest owns its memory: the engine takes pages out and puts them back, but never writes into it.
            { Write-DEGuestPage -Domain vm1 -Gfn 0 -Data ([byte[]](1)) -Confirm:$false -ErrorAction Stop } |
                Should -Throw -ErrorId 'QemuMechanismNotYetSupported,*'
            Enable-DESharing -Domain vm1
            Enable-DECompression -Domain vm1
            Set-DEPolicy -Domain vm1 -C4Sweeps 1 -Confirm:$false
            $null = Invoke-DEScan -Domain vm1 -Passes 3
            $held = Get-DEPageStats -Domain vm1
            ($held.ZeroPages + $held.SharedPages + $held.CompressedPages) | Should -BeGreaterThan 0 -Because 'the scan took pages out of the running guest'
            $round = [int](Read-Until 'deworkload round=(\d+) pages=2048 mismatches=0 ')[1]
            Remove-DEDomain -Name vm1 -Confirm:$false
            (Get-DEHostStats).FramesInUse | Should -Be 0
            $null = Read-Until "deworkload round=$($round + 2) pages=2048 mismatches=0 total=0 "
        }
        finally {
            if (-not $guest.HasExited) { $guest.Kill() }
            $guest.WaitForExit()
            $guest.Dispose()
        }
    }
}
