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
    # A test guest under TCG with libdeqemu.so preloaded and its socket at $Socket; its console on the process's stdout.
    function script:Start-TestGuest([string]$Socket, [string]$Append) {
        $psi = [Diagnostics.ProcessStartInfo]::new($qemu.Source)
        foreach ($a in '-accel', 'tcg', '-m', '128M', '-nodefaults', '-no-reboot', '-display', 'none', '-serial', 'stdio',
            '-monitor', 'none', '-nic', 'none', '-object', 'memory-backend-memfd,id=mem,size=128M,share=on', '-machine', 'memory-backend=mem',
            '-kernel', (Join-Path $guests 'vmlinuz'), '-initrd', (Join-Path $guests 'initramfs.cpio.gz'),
            '-append', "console=ttyS0 quiet loglevel=0 panic=-1 $Append") { $psi.ArgumentList.Add($a) }
        $psi.Environment['LD_PRELOAD'] = $library
        $psi.Environment['DE_QEMU_SOCKET'] = $Socket
        $psi.RedirectStandardOutput = $true
        $psi.RedirectStandardInput = $true
        $psi.UseShellExecute = $false
        [Diagnostics.Process]::Start($psi)
    }
    # Lines are read as they come: the workload says it is ready, then a line a round. The wait for a line is bounded
    # only to turn a hang into a failure. A MISMATCH line fails at once.
    function script:Read-GuestLine([Diagnostics.Process]$Guest, [string]$Pattern) {
        while ($true) {
            $next = $Guest.StandardOutput.ReadLineAsync()
            if (-not $next.Wait([TimeSpan]::FromMinutes(3))) { throw "No console line within 3 minutes while waiting for $Pattern" }
            if ($null -eq $next.Result) { throw "QEMU ended before a line matched $Pattern" }
            if ($next.Result -cmatch 'deworkload MISMATCH') { throw "The guest found its memory changed: $($next.Result)" }
            if ($next.Result -match $Pattern) { return $Matches }
        }
    }
    # An engine in another process attached to the guest at $Socket: every mechanism on, three passes, the background
    # engine taking pages out while the guest verifies; it says "held <pages> journal <bytes>", then waits for its stdin.
    function script:Start-EngineProcess([string]$Socket, [string]$Journals) {
        $engineScript = Join-Path $TestDrive 'engine.ps1'
        Set-Content -LiteralPath $engineScript -Value @'
param([string]$ModulePath, [string]$Socket, [string]$Journals)
$ErrorActionPreference = 'Stop'
Import-Module $ModulePath
$null = Connect-DEHost -Name other -JournalPath $Journals
$null = New-DEDomain -Name vm1 -QemuSocket $Socket
Enable-DESharing -Domain vm1
Enable-DEPatching -Domain vm1
Enable-DECompression -Domain vm1
Set-DEPolicy -Domain vm1 -C4Sweeps 1 -Confirm:$false
$null = Invoke-DEScan -Domain vm1 -Passes 3
$s = Get-DEPageStats -Domain vm1
Start-DEEngine -Interval ([TimeSpan]::FromMilliseconds(200))
"held $($s.PageCount - $s.PrivatePages - $s.UntouchedPages) journal $((Get-DEHostStats).JournalBytes)"
$null = [Console]::In.ReadLine() # until its stdin closes (then the script ends, and with it the process) or a signal
'@
        $pwsh = [Environment]::ProcessPath
        $psi = [Diagnostics.ProcessStartInfo]::new($pwsh)
        if ([IO.Path]::GetFileNameWithoutExtension($pwsh) -eq 'dotnet') { $psi.ArgumentList.Add((Join-Path $PSHOME 'pwsh.dll')) }
        foreach ($a in '-NoProfile', '-NonInteractive', '-File', $engineScript, '-ModulePath', $env:DE_MODULE_PATH,
            '-Socket', $Socket, '-Journals', $Journals) { $psi.ArgumentList.Add($a) }
        $psi.RedirectStandardOutput = $true
        $psi.RedirectStandardInput = $true
        $psi.RedirectStandardError = $true
        $psi.UseShellExecute = $false
        $engine = [Diagnostics.Process]::Start($psi)
        $errors = $engine.StandardError.ReadToEndAsync()
        $line = $engine.StandardOutput.ReadLineAsync()
        if (-not $line.Wait([TimeSpan]::FromMinutes(3)) -or $line.Result -notmatch '^held (\d+) journal (\d+)$') {
            if (-not $engine.HasExited) { $engine.Kill() }
            throw "The engine process did not report its held pages: '$($line.Result)' $($errors.Result)"
        }
        [long]$Matches[1] | Should -BeGreaterThan 1000 -Because 'three passes took pages out of the guest'
        [long]$Matches[2] | Should -BeGreaterThan 0 -Because 'every page taken out is in the journal'
        $engine
    }
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

    It 'writes QemuLibraryNotLoaded for -QemuProcessId of a process without libdeqemu.so, and QemuProcessNotFound for none' {
        New-DEDomain -Name notqemu -QemuProcessId $PID -ErrorVariable err -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $err[0].FullyQualifiedErrorId | Should -Be 'QemuLibraryNotLoaded,DifferenceEngine.Commands.NewDEDomainCommand'
        $err[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        New-DEDomain -Name gone -QemuProcessId ([int]::MaxValue) -ErrorVariable err -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $err[0].FullyQualifiedErrorId | Should -Be 'QemuProcessNotFound,DifferenceEngine.Commands.NewDEDomainCommand'
        $err[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
    }

    It 'attaches a running guest by its process id, through the socket in its environment' {
        if ($missing) {
            Set-ItResult -Skipped -Because "needs $($missing -join ', ')"
            return
        }
        $guest = Start-TestGuest -Socket (Join-Path $TestDrive 'bypid.sock') -Append 'de.mem=8 de.rounds=0'
        try {
            $null = Read-GuestLine -Guest $guest -Pattern 'deworkload ready pages=2048'
            $vm = New-DEDomain -Name bypid -QemuProcessId $guest.Id
            $vm.QemuPid | Should -Be $guest.Id
            (Get-DEPageStats -Domain bypid).PrivatePages | Should -BeGreaterThan 2048
            $round = [int](Read-GuestLine -Guest $guest -Pattern 'deworkload round=(\d+) pages=2048 mismatches=0 ')[1]
            Remove-DEDomain -Name bypid -Confirm:$false
            $null = Read-GuestLine -Guest $guest -Pattern "deworkload round=$($round + 1) pages=2048 mismatches=0 total=0 "
        }
        finally {
            if (-not $guest.HasExited) { $guest.Kill() }
            $guest.WaitForExit()
            $guest.Dispose()
        }
    }

    It 'attaches a running guest, shows its pages, and hands it back when the domain is removed' {
        if ($missing) {
            Set-ItResult -Skipped -Because "needs $($missing -join ', ')"
            return
        }
        $socket = Join-Path $TestDrive 'vm1.sock'
        $guest = Start-TestGuest -Socket $socket -Append 'de.mem=8 de.rounds=0'
        try {
            function Read-Until([string]$Pattern) { Read-GuestLine -Guest $guest -Pattern $Pattern }
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

# An engine in another process holds thousands of pages of a running guest (every mechanism, the background engine on),
# and its process ends without Disconnect-DEHost. Killed (SIGKILL: no handler, no cleanup), it leaves them out of the
# guest, whose faults wait; a new engine attaches, gets the journal the dead one deposited with the library, and serves
# them. Ended any other way (its script's end, SIGTERM, SIGHUP: the module's exit handlers), it hands them back first,
# and the next engine finds nothing to recover. Either way the guest verifies every page, round after round.
Describe 'An engine whose process ends while it holds pages of a running guest' {
    It 'ended by <How>: <Outcome>; a new engine attaches and the guest verifies on' -ForEach @(
        @{ How = 'SIGKILL'; Signal = 'KILL'; Recovers = $true; Outcome = 'the guest waits, the new engine serves its pages from the crash journal' }
        @{ How = 'the end of its script'; Signal = $null; Recovers = $false; Outcome = 'it hands the pages back first' }
        @{ How = 'SIGTERM'; Signal = 'TERM'; Recovers = $false; Outcome = 'it hands the pages back first' }
        @{ How = 'SIGHUP (its terminal closed)'; Signal = 'HUP'; Recovers = $false; Outcome = 'it hands the pages back first' }
    ) {
        if ($missing) {
            Set-ItResult -Skipped -Because "needs $($missing -join ', ')"
            return
        }
        $id = [guid]::NewGuid().ToString('n').Substring(0, 8)
        $socket = Join-Path $TestDrive "guest-$id.sock"
        $journals = New-Item -ItemType Directory -Path (Join-Path $TestDrive "journals-$id")
        $guest = Start-TestGuest -Socket $socket -Append 'de.mem=24 de.rounds=0 de.rewrite=20'
        $engine = $null
        try {
            $null = Read-GuestLine -Guest $guest -Pattern 'deworkload ready pages=6144'
            $engine = Start-EngineProcess -Socket $socket -Journals $journals.FullName
            # The guest goes on for a round with that engine serving its faults and the background engine running.
            $before = [int](Read-GuestLine -Guest $guest -Pattern 'deworkload round=(\d+) pages=6144 mismatches=0 ')[1]
            if ($Signal -eq 'KILL') {
                $engine.Kill()
            }
            elseif ($Signal) {
                & kill -s $Signal $engine.Id
                $LASTEXITCODE | Should -Be 0
            }
            else {
                $engine.StandardInput.Close() # its script ends; the shell exits without Disconnect-DEHost
            }
            $engine.WaitForExit()
            if ($Signal -eq 'KILL') {
                $engine.ExitCode | Should -Be 137 -Because 'the engine was killed by SIGKILL (128 + 9)'
            }

            # A new engine (this process) attaches. What the library hands it tells what the ended one left: a journal of
            # the pages it held, or nothing (in a run with the exit handlers stubbed out, 24,388 pages left to recover).
            $vm = New-DEDomain -Name ended -QemuSocket $socket
            if ($Recovers) {
                $vm.QemuRecoveredPages | Should -BeGreaterThan 0 -Because 'the killed engine held pages of the guest'
            }
            else {
                $vm.QemuRecoveredPages | Should -Be 0 -Because 'the engine handed every page back as its process ended'
                (Get-DEPageStats -Domain ended).PrivatePages + (Get-DEPageStats -Domain ended).UntouchedPages | Should -Be 32768
            }
            $stats = Get-DEPageStats -Domain ended
            $stats.GuestBytes | Should -Be ($stats.BytesUsed + $stats.BytesSaved)
            # The guest goes on, its faults served by this engine, and finds every page intact; also after this engine
            # takes pages out again and hands the guest back.
            $null = Read-GuestLine -Guest $guest -Pattern "deworkload round=$($before + 2) pages=6144 mismatches=0 total=0 "
            Enable-DECompression -Domain ended
            Set-DEPolicy -Domain ended -C4Sweeps 1 -Confirm:$false
            $null = Invoke-DEScan -Domain ended -Passes 2
            $null = Read-GuestLine -Guest $guest -Pattern "deworkload round=$($before + 4) pages=6144 mismatches=0 total=0 "
            Remove-DEDomain -Name ended -Confirm:$false
            $null = Read-GuestLine -Guest $guest -Pattern "deworkload round=$($before + 6) pages=6144 mismatches=0 total=0 "
        }
        finally {
            Stop-ReadyProcess $engine, $guest
        }
    }
}

Describe 'Start-DEGuest' {
    It 'stops with GuestKernelNotFound for a kernel that does not exist, and starts nothing' {
        { Start-DEGuest -Name nokernel -Kernel (Join-Path $TestDrive 'missing-vmlinuz') -StatePath $TestDrive -ErrorAction Stop } |
            Should -Throw -ErrorId 'GuestKernelNotFound,DifferenceEngine.Commands.StartDEGuestCommand'
        Join-Path $TestDrive 'nokernel.sock' | Should -Not -Exist
    }

    It 'stops with <Id> for a <Case>, before it looks for QEMU' -ForEach @(
        @{ Case = 'kernel on a drive that does not exist'; Id = 'GuestKernelNotFound'; Arguments = @{ Kernel = 'NoSuchDrive:\vmlinuz' } }
        @{ Case = 'kernel on another provider'; Id = 'PathNotFileSystem'; Arguments = @{ Kernel = 'Env:\HOME' } }
        @{ Case = 'state folder on another provider'; Id = 'PathNotFileSystem'; Arguments = @{ Kernel = $PSCommandPath; StatePath = 'Function:\x' } }
        @{ Case = 'state folder on a drive that does not exist'; Id = 'GuestStatePathFailed'; Arguments = @{ Kernel = $PSCommandPath; StatePath = 'NoSuchDrive:\state' } }
    ) {
        $err = { Start-DEGuest -Name paths @Arguments -ErrorAction Stop } | Should -Throw -PassThru
        $err.FullyQualifiedErrorId | Should -Be "$Id,DifferenceEngine.Commands.StartDEGuestCommand"
        $err.CategoryInfo.Category | Should -Not -Be 'NotSpecified'
    }

    It 'stops with QemuStartFailed, with QEMU''s own reason, when QEMU cannot start the guest' {
        if ($missing) {
            Set-ItResult -Skipped -Because "needs $($missing -join ', ')"
            return
        }
        $err = { Start-DEGuest -Name bad -Kernel (Join-Path $guests 'vmlinuz') -StatePath $TestDrive -Accelerator tcg -ArgumentList '-no-such-option' -ErrorAction Stop } |
            Should -Throw -ErrorId 'QemuStartFailed,DifferenceEngine.Commands.StartDEGuestCommand' -PassThru
        $err.Exception.Message | Should -Match 'no-such-option'
    }

    It 'starts nothing with -WhatIf' {
        if ($missing) {
            Set-ItResult -Skipped -Because "needs $($missing -join ', ')"
            return
        }
        Start-DEGuest -Name whatif -Kernel (Join-Path $guests 'vmlinuz') -StatePath $TestDrive -WhatIf | Should -BeNullOrEmpty
        Join-Path $TestDrive 'whatif.console' | Should -Not -Exist
        # Nor a state folder.
        $folder = Join-Path $TestDrive 'whatif-state'
        Start-DEGuest -Name whatif -Kernel (Join-Path $guests 'vmlinuz') -StatePath $folder -WhatIf | Should -BeNullOrEmpty
        $folder | Should -Not -Exist
    }

    It 'stops with QemuNotFound for a QEMU that is not there, before it makes the state folder' {
        if (-not (Test-Path -LiteralPath $library)) {
            Set-ItResult -Skipped -Because 'needs libdeqemu.so in the module (native/ was not built)'
            return
        }
        $folder = Join-Path $TestDrive 'noqemu-state/deeper'
        $err = { Start-DEGuest -Name noqemu -Kernel $PSCommandPath -StatePath $folder -QemuPath (Join-Path $TestDrive 'no-qemu') -ErrorAction Stop } |
            Should -Throw -ErrorId 'QemuNotFound,DifferenceEngine.Commands.StartDEGuestCommand' -PassThru
        $err.CategoryInfo.Category | Should -Be 'ObjectNotFound'
        Join-Path $TestDrive 'noqemu-state' | Should -Not -Exist
        { Start-DEGuest -Name noqemu -Kernel $PSCommandPath -StatePath $folder -QemuPath 'no-such-qemu-on-path' -ErrorAction Stop } |
            Should -Throw -ErrorId 'QemuNotFound,DifferenceEngine.Commands.StartDEGuestCommand'
        Join-Path $TestDrive 'noqemu-state' | Should -Not -Exist
    }

    It 'refuses more memory than a domain may have (64 GiB) before it starts anything' {
        { Start-DEGuest -Name huge -Kernel $PSCommandPath -MemorySize 65GB -StatePath $TestDrive -QemuPath (Join-Path $TestDrive 'no-qemu') } |
            Should -Throw -ErrorId 'ParameterArgumentValidationError,DifferenceEngine.Commands.StartDEGuestCommand'
    }

    It 'stops with GuestInitrdNotFound for an initramfs that does not exist' {
        if ($missing) {
            Set-ItResult -Skipped -Because "needs $($missing -join ', ')"
            return
        }
        { Start-DEGuest -Name noinitrd -Kernel (Join-Path $guests 'vmlinuz') -Initrd (Join-Path $TestDrive 'missing.cpio.gz') -StatePath $TestDrive -ErrorAction Stop } |
            Should -Throw -ErrorId 'GuestInitrdNotFound,DifferenceEngine.Commands.StartDEGuestCommand'
    }

    It 'starts a detached guest with the library and its socket; piped to New-DEDomain it is attached, paged and handed back' {
        if ($missing) {
            Set-ItResult -Skipped -Because "needs $($missing -join ', ')"
            return
        }
        $state = New-Item -ItemType Directory -Path (Join-Path $TestDrive 'state')
        $g = Start-DEGuest -Name started -Kernel (Join-Path $guests 'vmlinuz') -Initrd (Join-Path $guests 'initramfs.cpio.gz') `
            -MemorySize 128MB -Accelerator tcg -StatePath $state -Append 'console=ttyS0 quiet loglevel=0 panic=-1 de.mem=8 de.rounds=0 de.pause=50'
        try {
            $g.Name | Should -Be 'started'
            $g.QemuSocket | Should -Be (Join-Path $state.FullName 'started.sock')
            (Get-Process -Id $g.QemuPid).ProcessName | Should -BeLike 'qemu-system*'
            [IO.File]::GetUnixFileMode($g.ConsolePath) | Should -Be ([IO.UnixFileMode]'UserRead, UserWrite')
            # The console is a file: its lines are read as the guest writes them.
            $reader = [IO.StreamReader]::new([IO.FileStream]::new($g.ConsolePath, 'Open', 'Read', 'ReadWrite'))
            function Read-Console([string]$Pattern) {
                $deadline = [Diagnostics.Stopwatch]::StartNew()
                while ($deadline.Elapsed -lt [TimeSpan]::FromMinutes(3)) {
                    $line = $reader.ReadLine()
                    if ($null -eq $line) { Start-Sleep -Milliseconds 50; continue } # a file has no end to wait on: poll it
                    if ($line -cmatch 'deworkload MISMATCH') { throw "The guest found its memory changed: $line" }
                    if ($line -match $Pattern) { return $Matches }
                }
                throw "No console line matched $Pattern within 3 minutes"
            }
            $null = Read-Console 'deworkload ready pages=2048'
            $vm = $g | New-DEDomain -EnableCompression -C4Sweeps 1
            $vm.Name | Should -Be 'started'
            $vm.QemuPid | Should -Be $g.QemuPid
            $null = Invoke-DEScan -Domain started -Passes 3
            (Get-DEPageStats -Domain started).CompressedPages | Should -BeGreaterThan 0
            $round = [int](Read-Console 'deworkload round=(\d+) pages=2048 mismatches=0 ')[1]
            Remove-DEDomain -Name started -Confirm:$false
            $null = Read-Console "deworkload round=$($round + 2) pages=2048 mismatches=0 total=0 "
            $reader.Dispose()
            { Start-DEGuest -Name started -Kernel (Join-Path $guests 'vmlinuz') -StatePath $state -ErrorAction Stop } |
                Should -Throw -ErrorId 'QemuSocketExists,DifferenceEngine.Commands.StartDEGuestCommand'
        }
        finally {
            Stop-Process -Id $g.QemuPid -Force -ErrorAction Ignore
        }
    }
}
