# Smoke runs of the benchmarks and the whole-run comparison, so neither rots: one dry iteration of
# every BenchmarkDotNet benchmark, and Compare on small inputs (KSM and zram too when this machine
# has them and runs as root; their knobs must be back as they were afterwards).

Describe 'Benchmarks and Compare (smoke)' -Tag 'Smoke' {
    BeforeAll {
        $script:repo = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path
        $script:build = Join-Path $repo 'build.ps1'
        # The pwsh running this suite: dotnet plus pwsh.dll when it is the .NET tool.
        $script:exe = [Environment]::ProcessPath
        $script:prefix = [string[]]@(if ($exe -like '*dotnet') { "$PSHOME/pwsh.dll" })
        function script:Read-Knob([string]$path) { if (Test-Path $path) { (Get-Content -Raw $path).Trim() } }
    }

    It 'runs every micro-benchmark once (build.ps1 -Task Bench -Quick) and writes the reports' {
        $out = & $exe @prefix -NoProfile -NonInteractive -File $build -Task Bench -Quick 2>&1
        $LASTEXITCODE | Should -Be 0 -Because ($out | Select-Object -Last 30 | Out-String)
        $reports = Get-ChildItem (Join-Path $repo 'out/bench') -Filter '*.md'
        $reports.Count | Should -BeGreaterThan 3
        ($reports | Get-Content -Raw) -join "`n" | Should -Match 'share_pages|SharePages|Share'
    }

    It 'runs Compare on small inputs (build.ps1 -Task Compare -Quick) and restores KSM and zram' {
        $ksmBefore = Read-Knob /sys/kernel/mm/ksm/run
        $zramBefore = Read-Knob /sys/block/zram0/disksize
        $out = & $exe @prefix -NoProfile -NonInteractive -File $build -Task Compare -Quick 2>&1
        $LASTEXITCODE | Should -Be 0 -Because ($out | Select-Object -Last 30 | Out-String)
        $csv = Import-Csv (Join-Path $repo 'out/compare/compare.csv')
        $csv.Count | Should -BeGreaterThan 2
        Test-Path (Join-Path $repo 'out/compare/compare.md') | Should -BeTrue
        Read-Knob /sys/kernel/mm/ksm/run | Should -Be $ksmBefore
        Read-Knob /sys/block/zram0/disksize | Should -Be $zramBefore
    }

    It 'refuses an input that is not a raw image of whole pages in one line, without a stack trace' {
        $bad = Join-Path $TestDrive 'three-bytes.img'
        [IO.File]::WriteAllBytes($bad, [byte[]](1, 2, 3))
        foreach ($case in @(@{ Path = $bad; Why = '3 bytes is not a raw image of whole 4 KiB pages' }, @{ Path = $TestDrive; Why = 'a directory, not a raw image' })) {
            $out = & $exe @prefix -NoProfile -NonInteractive -File $build -Task Compare -Path $case.Path 2>&1 | Out-String
            $LASTEXITCODE | Should -Not -Be 0
            $out | Should -Match ([regex]::Escape("compare: $($case.Path): $($case.Why)"))
            $out | Should -Not -Match 'Unhandled exception'
        }
    }

    It 'runs the live-guest comparison (build.ps1 -Task Compare -Guests -Quick): four ways, no mismatch, KSM, zram and swap put back' {
        $qemu = Get-Command qemu-system-x86_64 -CommandType Application -ErrorAction Ignore
        if (-not $qemu -or -not (Get-Command busybox -CommandType Application -ErrorAction Ignore) -or -not [Environment]::IsPrivilegedProcess) {
            Set-ItResult -Skipped -Because 'needs qemu-system-x86, busybox-static and root'
            return
        }
        $ksmBefore = Read-Knob /sys/kernel/mm/ksm/run
        $zramBefore = Read-Knob /sys/block/zram0/disksize
        # The swap devices in use (their names), not the whole file: its Used column moves with the machine's own paging.
        function Get-SwapDevice { (Get-Content /proc/swaps | Select-Object -Skip 1 | ForEach-Object { ($_ -split '\s+')[0] }) -join ', ' }
        $swapsBefore = Get-SwapDevice
        $out = & $exe @prefix -NoProfile -NonInteractive -File $build -Task Compare -Guests -Quick 2>&1
        $LASTEXITCODE | Should -Be 0 -Because ($out | Select-Object -Last 30 | Out-String)
        $md = Get-Content -Raw (Join-Path $repo 'out/compare/guests.md')
        foreach ($way in 'no engine', 'DifferenceEngine, LZ4', 'DifferenceEngine, Zstd') {
            $md | Should -Match "(?m)^\| $way \| [0-9.]+ MiB \| [0-9.]+x \| .* \| 0 \|$"
        }
        $md | Should -Match '(?m)^\| KSM \+ zram \(proactive reclaim\) \| ([0-9.]+ MiB \| .* \| 0|skipped: .*) \|'
        $md | Should -Match 'fault round trip'
        Read-Knob /sys/kernel/mm/ksm/run | Should -Be $ksmBefore
        Read-Knob /sys/block/zram0/disksize | Should -Be $zramBefore
        Get-SwapDevice | Should -Be $swapsBefore
    }
}
