# New-DEDomain (empty, image, ELF core, process), Get-DEDomain, Remove-DEDomain, and the errors of bad input.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $deHost = Connect-DEHost -Name "pester-domain-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru

    $PageSize = 4096

    # A raw image of random pages (seeded), written under $TestDrive.
    function New-RawImage([string]$Name, [int]$Pages, [int]$Seed = 1) {
        $bytes = [byte[]]::new($Pages * $PageSize)
        [Random]::new($Seed).NextBytes($bytes)
        $path = Join-Path $TestDrive $Name
        [IO.File]::WriteAllBytes($path, $bytes)
        $path
    }

    # A minimal little-endian ELF64 core (ET_CORE) with one PT_LOAD segment.
    function New-ElfCore([string]$Name, [uint64]$Offset, [uint64]$FileSize, [uint64]$PhysicalAddress, [byte[]]$Payload) {
        $stream = [IO.MemoryStream]::new()
        $w = [IO.BinaryWriter]::new($stream)
        $w.Write([byte[]](0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0)) # ELF64, little-endian, version 1
        $w.Write([uint16]4)    # e_type ET_CORE
        $w.Write([uint16]62)   # e_machine x86-64
        $w.Write([uint32]1)    # e_version
        $w.Write([uint64]0)    # e_entry
        $w.Write([uint64]64)   # e_phoff: right after this header
        $w.Write([uint64]0)    # e_shoff
        $w.Write([uint32]0)    # e_flags
        $w.Write([uint16]64)   # e_ehsize
        $w.Write([uint16]56)   # e_phentsize
        $w.Write([uint16]1)    # e_phnum
        $w.Write([uint16]0)    # e_shentsize
        $w.Write([uint16]0)    # e_shnum
        $w.Write([uint16]0)    # e_shstrndx
        $w.Write([uint32]1)    # p_type PT_LOAD
        $w.Write([uint32]6)    # p_flags RW
        $w.Write($Offset)      # p_offset
        $w.Write([uint64]0)    # p_vaddr
        $w.Write($PhysicalAddress)
        $w.Write($FileSize)    # p_filesz
        $w.Write($FileSize)    # p_memsz
        $w.Write([uint64]4096) # p_align
        $w.Flush()
        $stream.SetLength([long]$Offset)
        $stream.Position = [long]$Offset
        if ($Payload) { $w.Write($Payload) }
        $w.Flush()
        $path = Join-Path $TestDrive $Name
        [IO.File]::WriteAllBytes($path, $stream.ToArray())
        $path
    }

    function Get-ErrorId([scriptblock]$Command) {
        $err = $null
        $out = & $Command -ErrorVariable err -ErrorAction SilentlyContinue
        @($err)[0].FullyQualifiedErrorId
    }
}

AfterAll {
    $deHost | Disconnect-DEHost -Confirm:$false
}

Describe 'New-DEDomain' {
    AfterEach {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'makes an empty domain whose pages are all untouched: neither guest memory nor saved' {
        $d = New-DEDomain -Name empty1 -MemorySize 4MB
        $d | Should -BeOfType ([DifferenceEngine.Domains.Domain])
        $d.PageCount | Should -Be 1024
        $d.Source | Should -Be 'empty'
        $stats = Get-DEPageStats -Domain empty1
        $stats.UntouchedPages | Should -Be 1024
        $stats.ZeroPages | Should -Be 0
        $stats.GuestBytes | Should -Be 0
        $stats.BytesSaved | Should -Be 0
        $stats.SavingsPercent | Should -Be 0
        (Get-DEPage -Domain empty1 -Gfn 7).Untouched | Should -BeTrue
    }

    It 'sets the trust group, the C4 period and sharing from its parameters' {
        $d = New-DEDomain -Name policy1 -MemorySize 1MB -TrustGroup tenant-a -C4Sweeps 5 -EnableSharing
        $d.Policy.TrustGroup | Should -Be 'tenant-a'
        $d.TrustGroup | Should -Be 'tenant-a'
        $d.Policy.C4Sweeps | Should -Be 5
        $d.SharingEnabled | Should -BeTrue
        (New-DEDomain -Name policy2 -MemorySize 1MB).SharingEnabled | Should -BeFalse
    }

    It 'loads a raw image page for page' {
        $path = New-RawImage -Name raw1.img -Pages 64 -Seed 7
        $d = New-DEDomain -Name raw1 -Path $path
        $d.PageCount | Should -Be 64
        $d.LoadReport.PagesLoaded | Should -Be 64
        $bytes = [IO.File]::ReadAllBytes($path)
        foreach ($gfn in 0, 31, 63) {
            $page = (Read-DEGuestPage -Domain raw1 -Gfn $gfn).Bytes
            [Linq.Enumerable]::SequenceEqual($page, [byte[]]$bytes[($gfn * $PageSize)..(($gfn + 1) * $PageSize - 1)]) |
                Should -BeTrue -Because "page $gfn must hold the image's bytes"
        }
    }

    It 'resolves a relative path against the current location' {
        $null = New-RawImage -Name rel.img -Pages 2
        Push-Location $TestDrive
        try {
            (New-DEDomain -Name rel1 -Path ./rel.img).PageCount | Should -Be 2
        }
        finally {
            Pop-Location
        }
    }

    It 'takes files from the pipeline (FullName and Name by property name)' {
        $null = New-RawImage -Name pipe-a.img -Pages 2
        $null = New-RawImage -Name pipe-b.img -Pages 3
        $domains = Get-ChildItem -LiteralPath $TestDrive -Filter 'pipe-*.img' | New-DEDomain
        $domains.Name | Should -Be @('pipe-a.img', 'pipe-b.img')
        $domains.PageCount | Should -Be @(2, 3)
    }

    It 'loads an ELF core at the physical addresses of its segments' {
        $payload = [byte[]]::new(2 * $PageSize)
        [Random]::new(3).NextBytes($payload)
        $path = New-ElfCore -Name good.core -Offset 4096 -FileSize (2 * $PageSize) -PhysicalAddress 0x2000 -Payload $payload
        $d = New-DEDomain -Name elf1 -Path $path
        $d.LoadReport.Format | Should -Be 'ElfCore'
        $d.PageCount | Should -Be 4
        (Read-DEGuestPage -Domain elf1 -Gfn 0).IsZero | Should -BeTrue
        $read = (Read-DEGuestPage -Domain elf1 -Gfn 2, 3).Bytes
        [Linq.Enumerable]::SequenceEqual([byte[]]$read, $payload) | Should -BeTrue
    }

    It 'snapshots a live process (this one)' {
        $d = New-DEDomain -Name self -ProcessId $PID
        $d.Source | Should -BeLike "pid $PID*"
        $d.LoadReport.Format | Should -Be 'Process'
        $d.LoadReport.PagesLoaded | Should -BeGreaterThan 100
        (Get-DEPageStats -Domain self).PrivatePages | Should -Be $d.LoadReport.PagesLoaded
    }

    It 'creates nothing with -WhatIf (<Set>)' -ForEach @(
        @{ Set = 'Empty'; Arguments = @{ MemorySize = 1MB } }
        @{ Set = 'Path'; Arguments = @{ Path = '/dev/null' } }
        @{ Set = 'Process'; Arguments = @{ ProcessId = $PID } }
    ) {
        New-DEDomain -Name whatif1 @Arguments -WhatIf | Should -BeNullOrEmpty
        Get-DEDomain -Name whatif1 -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        (Get-DEHostStats).FramesInUse | Should -Be 0
    }

    It 'offers domain names to tab completion' {
        $null = New-DEDomain -Name 'complete-me' -MemorySize 1MB
        $null = New-DEDomain -Name 'complete too' -MemorySize 1MB
        $line = 'Get-DEPageStats -Domain compl'
        $completions = (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches
        $completions.CompletionText | Should -Contain 'complete-me'
        $completions.CompletionText | Should -Contain "'complete too'"
        $line = 'Get-DEDomain -Name complete-'
        (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText | Should -Be 'complete-me'
    }
}

Describe 'New-DEDomain with bad input' {
    BeforeAll {
        $null = New-DEDomain -Name taken -MemorySize 1MB
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'refuses a raw image that is not a whole number of pages (ImageNotPageAligned)' {
        $path = Join-Path $TestDrive 'short.img'
        [IO.File]::WriteAllBytes($path, [byte[]]::new(3 * $PageSize + 100))
        { New-DEDomain -Name short -Path $path -ErrorAction Stop } |
            Should -Throw -ErrorId 'ImageNotPageAligned,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'refuses a truncated raw image (ImageNotPageAligned)' {
        $path = New-RawImage -Name whole.img -Pages 4
        $bytes = [IO.File]::ReadAllBytes($path)
        $cut = Join-Path $TestDrive 'cut.img'
        [IO.File]::WriteAllBytes($cut, [byte[]]$bytes[0..(2 * $PageSize + 999)])
        { New-DEDomain -Name cut -Path $cut -ErrorAction Stop } |
            Should -Throw -ErrorId 'ImageNotPageAligned,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'refuses a file with a bad ELF magic number as a core (ElfBadMagic); by content it is a raw image' {
        $path = Join-Path $TestDrive 'bad-magic.core'
        $bytes = [byte[]]::new($PageSize)
        ([byte[]](0x7F, 0x45, 0x4C, 0x58)).CopyTo($bytes, 0) # 0x7F 'E' 'L' 'X'
        [IO.File]::WriteAllBytes($path, $bytes)
        { New-DEDomain -Name badmagic -Path $path -Format ElfCore -ErrorAction Stop } |
            Should -Throw -ErrorId 'ElfBadMagic,DifferenceEngine.Commands.NewDEDomainCommand'
        $d = New-DEDomain -Name badmagic -Path $path
        $d.PageCount | Should -Be 1
        Remove-DEDomain -Name badmagic -Confirm:$false
    }

    It 'refuses an ELF core whose segment runs past the end of the file (ElfSegmentPastEnd)' {
        # The segment claims 3 pages from offset 4096; the file holds only one.
        $path = New-ElfCore -Name past-end.core -Offset 4096 -FileSize (3 * $PageSize) -PhysicalAddress 0 -Payload ([byte[]]::new($PageSize))
        (Get-Item $path).Length | Should -Be (2 * $PageSize)
        { New-DEDomain -Name pastend -Path $path -ErrorAction Stop } |
            Should -Throw -ErrorId 'ElfSegmentPastEnd,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'refuses a file that does not exist (FileNotFound)' {
        { New-DEDomain -Name missing -Path (Join-Path $TestDrive 'no-such.img') -ErrorAction Stop } |
            Should -Throw -ErrorId 'FileNotFound,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'refuses a path that is not on the file system (PathNotFileSystem)' {
        { New-DEDomain -Name env -Path Env:PATH -ErrorAction Stop } |
            Should -Throw -ErrorId 'PathNotFileSystem,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'refuses a process that does not exist (ProcessNotFound)' {
        { New-DEDomain -Name noproc -ProcessId 2147483647 -ErrorAction Stop } |
            Should -Throw -ErrorId 'ProcessNotFound,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'refuses a process whose memory cannot be read (ProcessUnreadable)' {
        # As root every process can be read (CAP_SYS_PTRACE), so this only runs as an ordinary user:
        # pid 1 (init) belongs to root.
        if ([Environment]::IsPrivilegedProcess) {
            Set-ItResult -Skipped -Because 'this runs as root, who can read every process (CAP_SYS_PTRACE); it needs an ordinary user'
            return
        }
        { New-DEDomain -Name init -ProcessId 1 -ErrorAction Stop } |
            Should -Throw -ErrorId 'ProcessUnreadable,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'refuses a process whose memory cannot be read even as root: a kernel thread (ProcessUnreadable)' {
        # Kernel threads are alive but have no user memory. The one taken is kthreadd, told by the PF_KTHREAD flag
        # (0x00200000, field 9 of /proc/<pid>/stat) and its name: the parent of every kernel thread lives as long as
        # the kernel, where a worker thread may be gone by the time it is read, and a zombie (no memory either) is
        # not a kernel thread.
        $kthread = Get-ChildItem /proc -Directory | Where-Object { $_.Name -match '^\d+$' } | Where-Object {
            $stat = Get-Content -LiteralPath (Join-Path $_.FullName 'stat') -Raw -ErrorAction Ignore
            if (-not $stat) { return $false }
            $name = $stat.Substring($stat.IndexOf('(') + 1, $stat.LastIndexOf(')') - $stat.IndexOf('(') - 1)
            $flags = [uint64]($stat.Substring($stat.LastIndexOf(')') + 2) -split ' ')[6]
            $name -eq 'kthreadd' -and ($flags -band 0x00200000) -ne 0
        } | Select-Object -First 1
        if (-not $kthread) { Set-ItResult -Skipped -Because 'no kernel thread is visible in this pid namespace'; return }
        { New-DEDomain -Name kthread -ProcessId ([int]$kthread.Name) -ErrorAction Stop } |
            Should -Throw -ErrorId 'ProcessUnreadable,DifferenceEngine.Commands.NewDEDomainCommand'
        $Error[0].Exception.Message | Should -Match 'kernel thread'
    }

    It 'refuses a load larger than its memory cgroup leaves, though the machine has room (InsufficientMemoryToLoad)' {
        # A container's limit kills the process at the limit whatever the machine has free. A child pwsh runs in a new
        # memory cgroup under this one, limited to 768 MiB, and loads a sparse 2 GiB image the machine has room for.
        $v1 = Test-Path -LiteralPath /sys/fs/cgroup/memory/cgroup.procs
        $line = Get-Content /proc/self/cgroup | Where-Object { if ($v1) { $_ -match '^\d+:([^:]*,)?memory(,[^:]*)?:' } else { $_ -like '0::*' } }
        $own = if ($v1) { '/sys/fs/cgroup/memory' + ($line -split ':', 3)[2] } else { '/sys/fs/cgroup' + ($line -split ':', 3)[2] }
        $usable = [Environment]::IsPrivilegedProcess -and $line -and (Test-Path -LiteralPath $own) -and
            ($v1 -or ((Get-Content -LiteralPath (Join-Path $own cgroup.subtree_control) -ErrorAction Ignore) -split ' ' -contains 'memory'))
        if (-not $usable) {
            Set-ItResult -Skipped -Because 'it needs root and a memory cgroup (v1, or v2 with memory in this cgroup''s subtree_control) to make a child in'
            return
        }
        $room = [long]((Get-Content /proc/meminfo | Where-Object { $_ -like 'MemAvailable:*' }) -replace '\D', '') * 1KB
        if ($room -lt 3GB) { Set-ItResult -Skipped -Because 'the machine itself has under 3 GiB available'; return }
        $image = Join-Path $TestDrive 'sparse-2g.img'
        $f = [IO.File]::Create($image); $f.SetLength(2GB); $f.Dispose()
        $child = Join-Path $own "de-pester-$([guid]::NewGuid().ToString('n').Substring(0, 12))"
        $null = New-Item -ItemType Directory -Path $child
        try {
            Set-Content -LiteralPath (Join-Path $child $(if ($v1) { 'memory.limit_in_bytes' } else { 'memory.max' })) -Value (768MB)
            $probe = Join-Path $TestDrive 'load-in-cgroup.ps1'
            Set-Content -LiteralPath $probe -Value @'
param($ModulePath, $Image)
Import-Module $ModulePath -ErrorAction Stop
$null = Connect-DEHost -Name cgroup-probe -ErrorAction Stop
$d = New-DEDomain -Path $Image -ErrorVariable err -ErrorAction SilentlyContinue
"loaded: $([bool]$d)"
foreach ($e in $err) { "error: $($e.FullyQualifiedErrorId) | $($e.CategoryInfo.Category) | $($e.Exception.Message)" }
'@
            $pwsh = [Environment]::ProcessPath
            $pwshArgs = @(if ([IO.Path]::GetFileNameWithoutExtension($pwsh) -eq 'dotnet') { Join-Path $PSHOME 'pwsh.dll' })
            # The shell moves itself into the cgroup, then becomes pwsh: every page pwsh takes is charged there.
            $output = @(& sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh $child $pwsh @pwshArgs -NoProfile -NonInteractive `
                    -File $probe -ModulePath $env:DE_MODULE_PATH -Image $image 2>&1 | ForEach-Object { "$_" })
            $output | Should -Contain 'loaded: False' -Because ($output -join [Environment]::NewLine)
            $errorLine = $output | Where-Object { $_ -like 'error: *' } | Select-Object -First 1
            $errorLine | Should -BeLike 'error: InsufficientMemoryToLoad,DifferenceEngine.Commands.NewDEDomainCommand | ResourceUnavailable | *'
            $errorLine | Should -BeLike "*memory cgroup this process runs in ($child,*"
        }
        finally {
            [IO.Directory]::Delete($child) # rmdir: a cgroup goes once its processes have (the child pwsh has exited)
        }
    }

    It 'refuses a name already in use (DomainExists)' {
        { New-DEDomain -Name taken -MemorySize 1MB -ErrorAction Stop } |
            Should -Throw -ErrorId 'DomainExists,DifferenceEngine.Commands.NewDEDomainCommand'
        { New-DEDomain -Name TAKEN -MemorySize 1MB -ErrorAction Stop } |
            Should -Throw -ErrorId 'DomainExists,*' -Because 'names are case-insensitive'
    }

    It 'refuses a size over the 64 GiB a domain may have (MemorySizeInvalid, InvalidArgument): <Size>' -ForEach @(
        @{ Size = '64TB'; Bytes = 64TB }
        @{ Size = '64GB + 4096'; Bytes = 64GB + 4096 }
        @{ Size = '1PB'; Bytes = 1PB }
        @{ Size = 'the largest multiple of 4096 in a long'; Bytes = [long]::MaxValue - 4095 }
    ) {
        $err = { New-DEDomain -Name huge -MemorySize $Bytes -ErrorAction Stop } |
            Should -Throw -ErrorId 'MemorySizeInvalid,DifferenceEngine.Commands.NewDEDomainCommand' -PassThru
        $err.CategoryInfo.Category | Should -Be 'InvalidArgument'
        $err.Exception.Message | Should -BeLike '*64 GiB*'
        Get-DEDomain -Name huge -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }

    It 'refuses a size that is not a multiple of the page size (MemorySizeInvalid)' {
        { New-DEDomain -Name odd -MemorySize 5000 -ErrorAction Stop } |
            Should -Throw -ErrorId 'MemorySizeInvalid,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'refuses a name with wildcards (DomainNameInvalid)' {
        { New-DEDomain -Name 'web*' -MemorySize 1MB -ErrorAction Stop } |
            Should -Throw -ErrorId 'DomainNameInvalid,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'refuses a trust group no domain may have, a bad argument (PolicyTrustGroupInvalid, InvalidArgument): <Label>' -ForEach @(
        @{ Label = 'empty'; Group = '' }
        @{ Label = 'only spaces'; Group = '   ' }
        @{ Label = 'a comma'; Group = 'a,b' }
        @{ Label = 'a semicolon'; Group = 'a;b' }
        @{ Label = '65 characters'; Group = 'g' * 65 }
    ) {
        # -ErrorAction SilentlyContinue does not silence a bad argument; and no binding error comes before the module's id.
        $err = { New-DEDomain -Name tg1 -MemorySize 1MB -TrustGroup $Group -ErrorAction SilentlyContinue } |
            Should -Throw -ErrorId 'PolicyTrustGroupInvalid,DifferenceEngine.Commands.NewDEDomainCommand' -PassThru
        $err.CategoryInfo.Category | Should -Be 'InvalidArgument'
        Get-DEDomain -Name tg1 -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }

    It 'writes the error and goes on with the next item of the pipeline' {
        $items = @(
            [pscustomobject]@{ Name = 'taken'; MemorySize = 1MB }
            [pscustomobject]@{ Name = 'fresh'; MemorySize = 1MB }
        )
        $made = $items | New-DEDomain -ErrorVariable err -ErrorAction SilentlyContinue
        $made.Name | Should -Be 'fresh'
        $err.Count | Should -Be 1
        $err[0].FullyQualifiedErrorId | Should -BeLike 'DomainExists,*'
        $err[0].CategoryInfo.Category | Should -Be 'ResourceExists'
        $err[0].TargetObject | Should -Be 'taken'
    }

    It 'leaves no frame behind after failed loads' {
        (Get-DEHostStats).FramesInUse | Should -Be 0
    }
}

Describe 'Get-DEDomain' {
    BeforeAll {
        foreach ($n in 'web1', 'web2', 'db1') { $null = New-DEDomain -Name $n -MemorySize 1MB }
    }

    AfterAll {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'lists every domain by id' {
        (Get-DEDomain).Name | Should -Be @('web1', 'web2', 'db1')
    }

    It 'takes wildcards' {
        (Get-DEDomain web*).Name | Should -Be @('web1', 'web2')
        (Get-DEDomain -Name 'WEB?').Name | Should -Be @('web1', 'web2')
    }

    It 'takes names from the pipeline' {
        ('db1', 'web2' | Get-DEDomain).Name | Should -Be @('db1', 'web2')
    }

    It 'writes nothing for a pattern that matches nothing' {
        Get-DEDomain -Name 'zzz*' -ErrorVariable err | Should -BeNullOrEmpty
        $err | Should -BeNullOrEmpty
    }

    It 'writes a non-terminating DomainNotFound for an unknown name and goes on' {
        $found = Get-DEDomain -Name 'nope', 'db1' -ErrorVariable err -ErrorAction SilentlyContinue
        $found.Name | Should -Be 'db1'
        $err[0].FullyQualifiedErrorId | Should -Be 'DomainNotFound,DifferenceEngine.Commands.GetDEDomainCommand'
        $err[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $err[0].TargetObject | Should -Be 'nope'
        { Get-DEDomain -Name 'nope' -ErrorAction Stop } | Should -Throw -ErrorId 'DomainNotFound,DifferenceEngine.Commands.GetDEDomainCommand'
    }

    It 'lists the domains of the host given with -DEHost' {
        $other = Connect-DEHost -Name "pester-domain-other-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        try {
            $null = New-DEDomain -Name only-here -MemorySize 1MB -DEHost $other
            (Get-DEDomain -DEHost $other).Name | Should -Be 'only-here'
            (Get-DEDomain -DEHost $deHost).Name | Should -Not -Contain 'only-here'
        }
        finally {
            $other | Disconnect-DEHost -Confirm:$false
        }
    }

    It 'shows a table that fits 120 columns' {
        $lines = (Get-DEDomain | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        ($lines -join "`n") | Should -Match 'web1\s+Running\s+1\.00 MiB\s+default\s+Off\s+Off\s+Off\s+empty'
    }
}

Describe 'Remove-DEDomain' {
    BeforeEach {
        foreach ($n in 'web1', 'web2', 'db1') { $null = New-DEDomain -Name $n -MemorySize 1MB }
        foreach ($n in 'web1', 'web2', 'db1') { Write-DEGuestPage -Domain $n -Gfn 0 -Data ([byte[]](1, 2, 3)) }
    }

    AfterEach {
        Get-DEDomain | Remove-DEDomain -Confirm:$false
    }

    It 'removes by name with wildcards and frees the frames' {
        (Get-DEHostStats).FramesInUse | Should -Be 3
        Remove-DEDomain -Name web* -Confirm:$false
        (Get-DEDomain).Name | Should -Be 'db1'
        (Get-DEHostStats).FramesInUse | Should -Be 1
    }

    It 'removes Domain objects from the pipeline' {
        $d = Get-DEDomain db1
        $d | Remove-DEDomain -Confirm:$false
        $d.IsRemoved | Should -BeTrue
        (Get-DEDomain).Name | Should -Be @('web1', 'web2')
    }

    It 'removes names from the pipeline' {
        'web2' | Remove-DEDomain -Confirm:$false
        (Get-DEDomain).Name | Should -Be @('web1', 'db1')
    }

    It 'removes the domains of page stats and policies from the pipeline, each on its own host' {
        Get-DEPageStats | Where-Object Domain -Like 'web*' | Remove-DEDomain -Confirm:$false
        (Get-DEDomain).Name | Should -Be 'db1'
        Get-DEPolicy -Domain db1 | Remove-DEDomain -Confirm:$false
        Get-DEDomain | Should -BeNullOrEmpty
        $other = Connect-DEHost -Name "pester-remove-other-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        try {
            $null = New-DEDomain -Name web1 -MemorySize 1MB -DEHost $other
            $null = New-DEDomain -Name web1 -MemorySize 1MB -DEHost $deHost
            # The other host is current now; the record names its own host, so web1 of $deHost goes, the other's stays.
            Get-DEPageStats -DEHost $deHost | Remove-DEDomain -Confirm:$false
            Get-DEDomain -DEHost $deHost | Should -BeNullOrEmpty
            (Get-DEDomain -DEHost $other).Name | Should -Be 'web1'
        }
        finally {
            $other | Disconnect-DEHost -Confirm:$false
        }
    }

    It 'does not remove a domain made again under the name of a piped record' {
        $old = Get-DEPageStats -Domain web1
        Remove-DEDomain web1 -Confirm:$false
        $null = New-DEDomain -Name web1 -MemorySize 1MB
        $old | Remove-DEDomain -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
        $err.Count | Should -Be 1
        $err[0].FullyQualifiedErrorId | Should -Be 'DomainRemoved,DifferenceEngine.Commands.RemoveDEDomainCommand'
        $err[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $err[0].Exception.Message | Should -Match 'has been removed'
        (Get-DEDomain).Name | Should -Contain 'web1'
    }

    It 'does not remove a domain of a host connected again under the name of the record''s host' {
        # Domain ids are the process's: the new host's first domain does not take the id the old host's had.
        $name = "pester-remove-again-$([guid]::NewGuid().ToString('n').Substring(0, 8))"
        $first = Connect-DEHost -Name $name -PassThru
        $null = New-DEDomain -Name d -MemorySize 1MB -DEHost $first
        $old = Get-DEPageStats -DEHost $first
        $first | Disconnect-DEHost -Confirm:$false
        $again = Connect-DEHost -Name $name -PassThru
        try {
            $null = New-DEDomain -Name d -MemorySize 1MB -DEHost $again
            (Get-DEDomain -DEHost $again).Id | Should -Not -Be $old.DomainId
            $old | Remove-DEDomain -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $err.Count | Should -Be 1
            $err[0].FullyQualifiedErrorId | Should -Be 'DomainRemoved,DifferenceEngine.Commands.RemoveDEDomainCommand'
            (Get-DEDomain -DEHost $again).Name | Should -Be 'd'
        }
        finally {
            $again | Disconnect-DEHost -Confirm:$false
        }
    }

    It 'writes HostNotFound for a record of a host no longer connected, and InputObjectNotDomain for anything else' {
        $other = Connect-DEHost -Name "pester-remove-gone-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        $null = New-DEDomain -Name gone -MemorySize 1MB -DEHost $other
        $record = Get-DEPageStats -DEHost $other
        $other | Disconnect-DEHost -Confirm:$false
        $record, [pscustomobject]@{ Domain = 'web1' }, (Get-DEDomain db1) |
            Remove-DEDomain -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
        $err.FullyQualifiedErrorId | Should -Be @('HostNotFound,DifferenceEngine.Commands.RemoveDEDomainCommand',
            'InputObjectNotDomain,DifferenceEngine.Commands.RemoveDEDomainCommand')
        (Get-DEDomain).Name | Should -Be @('web1', 'web2')
    }

    It 'writes DomainNotFound for an unknown name and removes the others' {
        Remove-DEDomain -Name 'nope', 'db1' -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -Be 'DomainNotFound,DifferenceEngine.Commands.RemoveDEDomainCommand'
        (Get-DEDomain).Name | Should -Be @('web1', 'web2')
    }

    It 'writes DomainRemoved for a Domain object already removed' {
        $d = Get-DEDomain db1
        $d | Remove-DEDomain -Confirm:$false
        { $d | Remove-DEDomain -Confirm:$false -ErrorAction Stop } |
            Should -Throw -ErrorId 'DomainRemoved,DifferenceEngine.Commands.RemoveDEDomainCommand'
    }

    It 'removes nothing with -WhatIf' {
        Get-DEDomain | Remove-DEDomain -WhatIf
        Remove-DEDomain -Name * -WhatIf
        (Get-DEDomain).Name | Should -Be @('web1', 'web2', 'db1')
        (Get-DEHostStats).FramesInUse | Should -Be 3
    }
}

Describe 'New-DEDomain -Path with wildcards, -LiteralPath, and progress' {
    BeforeAll {
        $script:h = Connect-DEHost -Name "paths-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        $script:images = Join-Path $TestDrive 'images'
        $null = New-Item -ItemType Directory -Path $images
        foreach ($n in 'vm-a', 'vm-b', 'vm-c') {
            $bytes = [byte[]]::new(2 * 4096); $bytes[1] = [byte]$n[-1]
            [IO.File]::WriteAllBytes((Join-Path $images "$n.img"), $bytes)
        }
        [IO.File]::WriteAllBytes((Join-Path $images 'notes.txt'), [byte[]]::new(4096))
    }
    AfterAll {
        $h | Disconnect-DEHost -Confirm:$false
    }

    It 'loads every file a pattern matches, each domain named after its file' {
        $made = @(New-DEDomain -DEHost $h -Path (Join-Path $images '*.img'))
        $made.Name | Should -Be @('vm-a.img', 'vm-b.img', 'vm-c.img')
        (Read-DEGuestPage -DEHost $h -Domain vm-b.img -Gfn 0 -Raw)[1] | Should -Be ([byte][char]'b')
        $made | Remove-DEDomain -Confirm:$false
    }

    It 'names a domain the same whether its file comes by -Path pattern or from Get-ChildItem' {
        $byPath = @(New-DEDomain -DEHost $h -Path (Join-Path $images 'vm-a.*')).Name
        Remove-DEDomain -DEHost $h -Name $byPath -Confirm:$false
        $piped = @(Get-ChildItem -LiteralPath $images -Filter 'vm-a.*' | New-DEDomain -DEHost $h).Name
        Remove-DEDomain -DEHost $h -Name $piped -Confirm:$false
        $byPath | Should -Be 'vm-a.img'
        $piped | Should -Be $byPath
    }

    It 'refuses one -Name for several files (NewDEDomainNameForSeveralFiles) and makes nothing' {
        { New-DEDomain -DEHost $h -Name one -Path (Join-Path $images 'vm-*.img') -ErrorAction Stop } |
            Should -Throw -ErrorId 'NewDEDomainNameForSeveralFiles,DifferenceEngine.Commands.NewDEDomainCommand'
        Get-DEDomain -DEHost $h | Should -BeNullOrEmpty
    }

    It 'takes -Name with a pattern that matches one file' {
        (New-DEDomain -DEHost $h -Name only -Path (Join-Path $images 'vm-a.*')).Name | Should -Be 'only'
        Remove-DEDomain -DEHost $h -Name only -Confirm:$false
    }

    It 'makes nothing, and says nothing, for a pattern that matches no file' {
        @(New-DEDomain -DEHost $h -Path (Join-Path $images '*.none') -ErrorVariable none).Count | Should -Be 0
        $none | Should -BeNullOrEmpty
    }

    It 'still says FileNotFound for a path without wildcards that does not exist' {
        { New-DEDomain -DEHost $h -Path (Join-Path $images 'absent.img') -ErrorAction Stop } |
            Should -Throw -ErrorId 'FileNotFound,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'takes a file whose name holds wildcard characters as it is' {
        $odd = Join-Path $images 'odd[1].img'
        [IO.File]::WriteAllBytes($odd, [byte[]]::new(4096))
        (New-DEDomain -DEHost $h -Name odd -Path $odd).PageCount | Should -Be 1
        Remove-DEDomain -DEHost $h -Name odd -Confirm:$false
    }

    It 'writes DomainNameInvalid for a file whose name no domain can have, and loads the files after it' {
        # Named after its file, the name is not the caller's argument: one file's failure, not the cmdlet's.
        $named = Join-Path $TestDrive 'named'
        $null = New-Item -ItemType Directory -Path $named
        foreach ($n in 'x-a.img', 'x[b].img', 'x-c.img') { [IO.File]::WriteAllBytes((Join-Path $named $n), [byte[]]::new(4096)) }
        $made = @(New-DEDomain -DEHost $h -Path (Join-Path $named '*.img') -ErrorVariable err -ErrorAction SilentlyContinue)
        $made.Name | Should -Be @('x-a.img', 'x-c.img')
        $err.Count | Should -Be 1
        $err[0].FullyQualifiedErrorId | Should -Be 'DomainNameInvalid,DifferenceEngine.Commands.NewDEDomainCommand'
        $made | Remove-DEDomain -Confirm:$false
        # A -Name the caller gave is an argument still: it stops the cmdlet.
        { New-DEDomain -DEHost $h -Name 'bad*' -Path (Join-Path $named 'x-a.img') -ErrorAction Stop } |
            Should -Throw -ErrorId 'DomainNameInvalid,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'needs -Name for an empty domain (NewDEDomainNameRequired)' {
        { New-DEDomain -DEHost $h -MemorySize 1MB -ErrorAction Stop } |
            Should -Throw -ErrorId 'NewDEDomainNameRequired,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'shows progress while it loads a large image, and completes it' {
        $big = Join-Path $TestDrive 'big.img'
        $file = [IO.File]::Create($big); $file.SetLength(64MB); $file.Dispose()   # sparse: 16,384 zero pages
        $ps = [powershell]::Create()
        try {
            $null = $ps.AddScript('param($m, $h, $p) Import-Module $m; New-DEDomain -DEHost $h -Name big -Path $p').
                AddArgument($env:DE_MODULE_PATH).AddArgument($h).AddArgument($big)
            $out = $ps.Invoke()
            $out[0].PageCount | Should -Be 16384
            $records = @($ps.Streams.Progress | Where-Object Activity -Like 'New-DEDomain big: loading*')
            $records.Count | Should -BeGreaterThan 1
            @($records | Where-Object RecordType -EQ 'Processing' | Where-Object PercentComplete -GT 0).Count | Should -BeGreaterThan 0
            $records[-1].RecordType | Should -Be 'Completed'
        }
        finally {
            $ps.Dispose()
        }
        Remove-DEDomain -DEHost $h -Name big -Confirm:$false
    }
}

Describe 'New-DEDomain -Format' {
    BeforeAll {
        Import-Module $env:DE_MODULE_PATH -Force
        $script:h = Connect-DEHost -Name "fmt-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        # A raw snapshot that begins like an ELF executable (as a process's memory does): 3 pages.
        $bytes = [byte[]]::new(3 * 4096)
        [byte[]](0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0) | ForEach-Object -Begin { $i = 0 } -Process { $bytes[$i++] = $_ }
        $bytes[16] = 2   # e_type ET_EXEC: an executable's header, not a core
        $bytes[5000] = 42
        $script:img = Join-Path $TestDrive 'elf-looking.raw'
        [IO.File]::WriteAllBytes($img, $bytes)
    }
    AfterAll {
        Disconnect-DEHost -DEHost $h -Confirm:$false
    }

    It 'detects by content by default: an ELF header that is not a core''s begins a raw image' {
        $d = New-DEDomain -DEHost $h -Name auto1 -Path $img
        $d.PageCount | Should -Be 3
        (Read-DEGuestPage -DEHost $h -Domain auto1 -Gfn 0 -Raw)[0..3] | Should -Be @(0x7F, 0x45, 0x4C, 0x46)
        (Read-DEGuestPage -DEHost $h -Domain auto1 -Gfn 1 -Raw)[5000 - 4096] | Should -Be 42
    }

    It 'loads a raw snapshot of a live process (it begins with the executable''s ELF header) bit-exact, with no -Format' {
        # The resident pages of a live cat, in address order, as a raw file: page 0 is cat's ET_DYN header.
        $cat = Start-ReadyProcess   # in its read loop: loaded and settled
        try {
            $live = New-DEDomain -DEHost $h -Name live1 -ProcessId $cat.Id
        }
        finally {
            Stop-ReadyProcess $cat
        }
        $raw = Join-Path $TestDrive 'cat.raw'
        $file = [IO.File]::Create($raw)
        try {
            foreach ($gfn in 0..($live.PageCount - 1)) {
                $file.Write((Read-DEGuestPage -DEHost $h -Domain live1 -Gfn $gfn -Raw), 0, 4096)
            }
        }
        finally { $file.Dispose() }
        $bytes = [IO.File]::ReadAllBytes($raw)
        $bytes[0..3] | Should -Be @(0x7F, 0x45, 0x4C, 0x46)
        [BitConverter]::ToUInt16($bytes, 16) | Should -Not -Be 4

        $d = New-DEDomain -DEHost $h -Name rawsnap -Path $raw
        $d.PageCount | Should -Be $live.PageCount
        foreach ($gfn in 0..($d.PageCount - 1)) {
            $page = Read-DEGuestPage -DEHost $h -Domain rawsnap -Gfn $gfn -Raw
            [Linq.Enumerable]::SequenceEqual([byte[]]$page, [byte[]][ArraySegment[byte]]::new($bytes, $gfn * 4096, 4096).ToArray()) |
                Should -BeTrue -Because "page $gfn reads back as written"
        }
    }

    It 'reads the file as raw pages with -Format Raw' {
        $d = New-DEDomain -DEHost $h -Name raw1 -Path $img -Format Raw
        $d.PageCount | Should -Be 3
        (Read-DEGuestPage -DEHost $h -Domain raw1 -Gfn 1 -Raw)[5000 - 4096] | Should -Be 42
        (Read-DEGuestPage -DEHost $h -Domain raw1 -Gfn 0 -Raw)[0..3] | Should -Be @(0x7F, 0x45, 0x4C, 0x46)
    }

    It 'insists on a core with -Format ElfCore' {
        $plain = Join-Path $TestDrive 'plain.raw'
        [IO.File]::WriteAllBytes($plain, [byte[]]::new(4096))
        { New-DEDomain -DEHost $h -Name elf1 -Path $plain -Format ElfCore -ErrorAction Stop } | Should -Throw -ErrorId 'ElfBadMagic,DifferenceEngine.Commands.NewDEDomainCommand'
    }

    It 'insists on a core with -Format ElfCore, and the refusal names -Format Raw' {
        $err = { New-DEDomain -DEHost $h -Name elf2 -Path $img -Format ElfCore -ErrorAction Stop } |
            Should -Throw -ErrorId 'ElfNotCore,DifferenceEngine.Commands.NewDEDomainCommand' -PassThru
        $err.Exception.Message | Should -BeLike '*not a core dump*-Format Raw*'
    }
}
