# Start-DEEngine, Stop-DEEngine, Get-DEEngine: the background engine running passes while a workload runs in
# the foreground of the same session, its status and history, -WhatIf, error ids, and a run of 120 passes.
# The tests wait for the engine's passes (its PassesRun), never for time.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $PageSize = 4096

    function New-TestHostName { "pester-engine-$([guid]::NewGuid().ToString('n').Substring(0, 8))" }

    # An image of $Pages pages: a quarter random, a quarter zero, a quarter repeated text (compressible), a quarter
    # copies of the random quarter. Domains loaded from it start all Private: nothing is saved until passes run.
    function New-EngineImage([string]$Path, [int]$Pages, [int]$Seed) {
        $bytes = [byte[]]::new($Pages * $PageSize)
        $quarter = $Pages / 4
        $random = [Random]::new($Seed)
        $chunk = [byte[]]::new($quarter * $PageSize)
        $random.NextBytes($chunk)
        [Array]::Copy($chunk, 0, $bytes, 0, $chunk.Length)
        $line = [Text.Encoding]::ASCII.GetBytes("engine test line ${Seed}: the quick brown fox jumps over the lazy dog. ")
        $text = [byte[]]::new($PageSize)
        for ($i = 0; $i -lt $PageSize; $i++) { $text[$i] = $line[$i % $line.Length] }
        for ($p = 2 * $quarter; $p -lt 3 * $quarter; $p++) { [Array]::Copy($text, 0, $bytes, $p * $PageSize, $PageSize) }
        [Array]::Copy($chunk, 0, $bytes, 3 * $quarter * $PageSize, $chunk.Length)
        [IO.File]::WriteAllBytes($Path, $bytes)
    }

    # Runs verified workloads in the foreground until the engine of the current host has run $Passes passes, one
    # workload between two passes: guests paced by the engine's passes, not by the clock (2000 page touches a pass,
    # mostly to a hot tenth, a tenth of them writes), and not flat out, which would rewrite every page between two
    # passes and leave nothing to save. Every pass after the first finds the guests' work since the one before.
    function Invoke-WorkloadForPasses {
        [CmdletBinding()]
        param([string[]]$Domain, [long]$Passes)
        $seed = 0
        $done = (Get-DEEngine).PassesRun
        while ($done -lt $Passes) {
            Invoke-DEWorkload -Domain $Domain -Operations 2000 -WriteFraction 0.1 -Pattern Hotspot -ThrottleLimit 2 -Seed ($seed++) -Verify
            $done = (Wait-DEEnginePass -Count ($done + 1)).PassesRun
        }
    }

    function Get-FaultCount { [long]((Get-DEHostStats).Faults | Measure-Object -Property Count -Sum).Sum }
}

Describe 'The background engine with a workload running' {
    BeforeAll {
        $deHost = Connect-DEHost -Name (New-TestHostName) -PassThru
        $image = Join-Path $TestDrive 'engine.img'
        New-EngineImage -Path $image -Pages 1024 -Seed 1
        foreach ($n in 'e1', 'e2', 'e3') {
            $null = New-DEDomain -Name $n -Path $image -EnableSharing -EnablePatching -EnableCompression
        }
        $savedBefore = (Get-DEHostStats).SavedBytes
        $faultsBefore = Get-FaultCount

        # A monotonic clock around the run, for the one bound that time sets: no more passes than intervals.
        $watch = [Diagnostics.Stopwatch]::StartNew()
        $started = Start-DEEngine -Interval 0.2 -PassThru
        $results = @(Invoke-WorkloadForPasses -Domain e1, e2, e3 -Passes 10 -ErrorVariable workloadErrors)
        $running = Get-DEEngine
        $elapsed = $watch.Elapsed
        $savedDuring = (Get-DEHostStats).SavedBytes
        $faultsDuring = Get-FaultCount

        $stopped = Stop-DEEngine -PassThru
        $stateAfterStop = (Get-DEEngine).State
        $scanPassesAfterStop = (Get-DEHostStats).ScanPasses
    }

    AfterAll {
        $deHost | Disconnect-DEHost -Confirm:$false
    }

    It 'starts with the interval given, in seconds' {
        $started | Should -BeOfType ([DifferenceEngine.Hosting.EngineStatus])
        $started.State | Should -Be 'Running'
        $started.Interval | Should -Be ([TimeSpan]::FromMilliseconds(200))
        $started.Host | Should -Be $deHost.Name
    }

    It 'runs passes while the workload runs, never more than one per interval' {
        $running.State | Should -Be 'Running'
        $running.PassesRun | Should -BeGreaterThan 5
        $running.LastPass | Should -Not -BeNullOrEmpty
        $running.BusyTime | Should -BeGreaterThan ([TimeSpan]::Zero)
        $running.LastError | Should -BeNullOrEmpty
        # Pass n starts no earlier than n - 1 intervals after the start (less the millisecond to which the engine's
        # wait is rounded): a bound that load only makes easier to keep.
        $running.PassesRun | Should -BeLessOrEqual ([Math]::Floor(($elapsed.TotalSeconds + 0.001) / 0.2) + 1)
    }

    It 'keeps the guests running meanwhile: every workload verified, no error' {
        $workloadErrors | Should -BeNullOrEmpty
        $results.Count | Should -BeGreaterThan 0
        ($results | Measure-Object -Property Mismatches -Sum).Sum | Should -Be 0
        ($results | Measure-Object -Property Errors -Sum).Sum | Should -Be 0
    }

    It 'raises the savings and serves faults' {
        $savedDuring | Should -BeGreaterThan $savedBefore
        $faultsDuring | Should -BeGreaterThan $faultsBefore
    }

    It 'is Stopped when Stop-DEEngine returns, with no pass after, and -PassThru tells what it did' {
        $stopped.State | Should -Be 'Stopped'
        $stateAfterStop | Should -Be 'Stopped'
        $stopped.PassesRun | Should -BeGreaterOrEqual $running.PassesRun
        # Every pass the host ran is one the stopped engine counted: none was still going on, none came after.
        $scanPassesAfterStop | Should -Be $stopped.PassesRun
        (Get-DEHostStats).ScanPasses | Should -Be $stopped.PassesRun
        (Get-DEEngine).PassesRun | Should -Be $stopped.PassesRun
    }

    It 'keeps a stats sample per pass for reports' {
        $history = @(Get-DEEngine -History)
        $history.Count | Should -BeGreaterOrEqual ($running.PassesRun + 1)
        $history[0] | Should -BeOfType ([DifferenceEngine.Hosting.StatsSample])
        $times = $history.Time
        for ($i = 1; $i -lt $times.Count; $i++) { $times[$i] | Should -BeGreaterOrEqual $times[$i - 1] }
        $history[-1].SavedBytes | Should -BeGreaterThan $savedBefore
        (Get-DEEngine).Samples | Should -Be $history.Count
    }

    It 'shows the status in a table and a list of 120 columns, and the history in a table' {
        $lines = (Get-DEEngine | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $lines -join "`n" | Should -Match 'Host\s+State\s+Interval\s+PassesRun\s+LastPass\s+LastPassDuration\s+BusyPercent\s+CpuTime\s+Samples\s+LastError'
        $text = $running | Format-List | Out-String -Width 120
        $text | Should -Match 'State\s*:\s*Running'
        $text | Should -Match 'Interval\s*:\s*200\.0 ms'
        $text | Should -Match ('Passes run\s*:\s*' + $running.PassesRun.ToString('#,0', [cultureinfo]::InvariantCulture))
        $text | Should -Match 'Busy\s*:\s*\S+ \S+ \([\d.]+% of the time since started\)'
        # Once stopped, the share is of the time it ran: it stays what it was, however long ago that was.
        $stoppedText = $stopped | Format-List | Out-String -Width 120
        $stoppedText | Should -Match 'Busy\s*:\s*\S+ \S+ \([\d.]+% of the time it ran\)'
        $stopped.Stopped | Should -BeGreaterOrEqual $stopped.Started
        $stopped.BusyPercent | Should -Be ([Math]::Round(100.0 * $stopped.BusyTime.TotalSeconds / ($stopped.Stopped - $stopped.Started).TotalSeconds, 1))
        $lines = (Get-DEEngine -History | Format-Table | Out-String -Width 120) -split '\r?\n'
        $lines | Where-Object { $_.Length -gt 120 } | Should -BeNullOrEmpty
        $lines -join "`n" | Should -Match 'Time\s+GuestBytes\s+MemoryUsedBytes\s+SavedBytes\s+StoreAllocatedBytes\s+SwapUsedBytes\s+Faults\s+ScanPasses'
    }
}

Describe 'Start-DEEngine and Stop-DEEngine' {
    BeforeAll {
        $deHost = Connect-DEHost -Name (New-TestHostName) -PassThru
        $null = New-DEDomain -Name s1 -MemorySize 1MB -EnableSharing
    }

    AfterEach {
        Stop-DEEngine -DEHost $deHost -Confirm:$false
    }

    AfterAll {
        $deHost | Disconnect-DEHost -Confirm:$false
    }

    It 'runs every 4 seconds by default, as the paper''s sweeps' {
        (Start-DEEngine -PassThru).Interval | Should -Be ([TimeSpan]::FromSeconds(4))
    }

    It 'takes -Interval as <Given>' -ForEach @(
        @{ Given = 'seconds'; Interval = 2; Expected = [TimeSpan]::FromSeconds(2) }
        @{ Given = 'fractional seconds'; Interval = 0.5; Expected = [TimeSpan]::FromMilliseconds(500) }
        @{ Given = 'a string of seconds'; Interval = '1.5'; Expected = [TimeSpan]::FromMilliseconds(1500) }
        @{ Given = 'a TimeSpan string'; Interval = '00:00:03'; Expected = [TimeSpan]::FromSeconds(3) }
        @{ Given = 'a TimeSpan'; Interval = [TimeSpan]::FromMilliseconds(300); Expected = [TimeSpan]::FromMilliseconds(300) }
    ) {
        (Start-DEEngine -Interval $Interval -PassThru).Interval | Should -Be $Expected
        (Get-DEEngine).Interval | Should -Be $Expected
    }

    It 'outputs nothing without -PassThru' {
        Start-DEEngine -Interval 1 | Should -BeNullOrEmpty
        Stop-DEEngine | Should -BeNullOrEmpty
    }

    It 'refuses a second start (EngineAlreadyRunning), leaving the running engine as it was' {
        Start-DEEngine -Interval 1
        Start-DEEngine -Interval 2 -ErrorVariable err -ErrorAction SilentlyContinue
        $err.Count | Should -Be 1
        $err[0].FullyQualifiedErrorId | Should -Be 'EngineAlreadyRunning,DifferenceEngine.Commands.StartDEEngineCommand'
        $err[0].CategoryInfo.Category | Should -Be 'InvalidOperation'
        $err[0].TargetObject | Should -Be $deHost.Name
        $err[0].Exception.Message | Should -BeLike "*already running, a pass every 1 s; Stop-DEEngine first*"
        { Start-DEEngine -ErrorAction Stop } | Should -Throw -ErrorId 'EngineAlreadyRunning,DifferenceEngine.Commands.StartDEEngineCommand'
        (Get-DEEngine).Interval | Should -Be ([TimeSpan]::FromSeconds(1))
    }

    It 'refuses an interval under 100 ms or over a day (EngineIntervalInvalid)' -ForEach @(0.05, 0, -1, 86401) {
        { Start-DEEngine -Interval $_ } | Should -Throw -ErrorId 'EngineIntervalInvalid,DifferenceEngine.Commands.StartDEEngineCommand'
        # Checked before -WhatIf says it would start, too.
        { Start-DEEngine -Interval $_ -WhatIf } | Should -Throw -ErrorId 'EngineIntervalInvalid,DifferenceEngine.Commands.StartDEEngineCommand'
        (Get-DEEngine).State | Should -Be 'Stopped'
    }

    It 'refuses an interval that is not a time (parameter binding)' {
        { Start-DEEngine -Interval 'soon' } | Should -Throw -ErrorId 'CannotConvertArgumentNoMessage,DifferenceEngine.Commands.StartDEEngineCommand'
    }

    It 'starts nothing with -WhatIf' {
        Start-DEEngine -Interval 0.2 -WhatIf
        (Get-DEEngine).State | Should -Be 'Stopped'
    }

    It 'stops nothing with -WhatIf' {
        Start-DEEngine -Interval 0.2
        Stop-DEEngine -WhatIf
        (Get-DEEngine).State | Should -Be 'Running'
    }

    It 'does nothing when the engine does not run, and says so with -Verbose' {
        $out = Stop-DEEngine -PassThru -Verbose 4>&1
        ($out | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }).Message | Should -Match 'not running'
        ($out | Where-Object { $_ -is [DifferenceEngine.Hosting.EngineStatus] }).State | Should -Be 'Stopped'
    }

    It 'takes hosts from the pipeline' {
        $other = Connect-DEHost -Name (New-TestHostName) -PassThru
        try {
            $both = $deHost, $other
            ($both | Start-DEEngine -Interval 0.5 -PassThru).Host | Should -Be $both.Name
            ($both | Get-DEEngine).State | Should -Be @('Running', 'Running')
            ($both | Stop-DEEngine -PassThru).State | Should -Be @('Stopped', 'Stopped')
        }
        finally {
            $other | Disconnect-DEHost -Confirm:$false
        }
    }

    It 'stops at once while it waits for its next pass: the pass due a day later never runs' {
        Start-DEEngine -Interval 86400
        $null = Wait-DEEnginePass -Count 1
        # Returning at all is the point: the engine waits a day before its second pass, and stopping ends the wait.
        $stopped = Stop-DEEngine -PassThru
        $stopped.State | Should -Be 'Stopped'
        $stopped.PassesRun | Should -Be 1
        (Get-DEEngine).State | Should -Be 'Stopped'
        (Get-DEEngine).PassesRun | Should -Be 1
    }

    It 'is stopped by Disconnect-DEHost, even while it waits for its next pass' {
        $other = Connect-DEHost -Name (New-TestHostName) -PassThru
        Start-DEEngine -DEHost $other -Interval 86400
        $null = Wait-DEEnginePass -DEHost $other -Count 1
        $other | Disconnect-DEHost -Confirm:$false
        # The host object stays readable; cmdlets refuse a disconnected host.
        $other.EngineStatus.State | Should -Be 'Stopped'
        $other.EngineStatus.PassesRun | Should -Be 1
        { Get-DEEngine -DEHost $other -ErrorAction Stop } | Should -Throw -ErrorId 'HostDisconnected,DifferenceEngine.Commands.GetDEEngineCommand'
        (Get-DEEngine -DEHost $deHost).State | Should -Be 'Stopped'
    }

    It 'shows the engine state in the Get-DEHost table' {
        Start-DEEngine -Interval 1
        Get-DEHost -Name $deHost.Name | Format-Table | Out-String -Width 120 | Should -Match 'SwapBytes\s+EngineState[\s\S]*none\s+Running'
    }
}

Describe 'A hundred and twenty passes of engine and workload, every mechanism on' -Tag 'Slow' {
    BeforeAll {
        $deHost = Connect-DEHost -Name (New-TestHostName) -PassThru
        $images = foreach ($seed in 1, 2) {
            $path = Join-Path $TestDrive "img$seed"
            New-EngineImage -Path $path -Pages 2048 -Seed $seed
            $path
        }
        $null = New-DEDomain -Name s1 -Path $images[0] -EnableSharing -EnablePatching -EnableCompression
        $null = New-DEDomain -Name s2 -Path $images[0] -EnableSharing -EnablePatching -EnableCompression -CompressionAlgorithm Zstd
        $null = New-DEDomain -Name s3 -Path $images[1] -EnableSharing -EnablePatching -EnableCompression -CompressionAlgorithm WKdm
        $before = Get-DEHostStats
        Start-DEEngine -Interval 0.25
        $results = @(Invoke-WorkloadForPasses -Domain s1, s2, s3 -Passes 120 -ErrorVariable workloadErrors)
        $after = Get-DEHostStats
        $status = Get-DEEngine
        $stopped = Stop-DEEngine -PassThru
        $stateAfterStop = (Get-DEEngine).State
        $scanPassesAfterStop = (Get-DEHostStats).ScanPasses
    }

    AfterAll {
        $deHost | Disconnect-DEHost -Confirm:$false
    }

    It 'raises the savings' {
        $after.SavedBytes | Should -BeGreaterThan $before.SavedBytes
        $status.PassesRun | Should -BeGreaterThan 20
        $status.LastError | Should -BeNullOrEmpty
    }

    It 'serves faults, and every read matches the workload''s shadow copy' {
        $workloadErrors | Should -BeNullOrEmpty
        ($results | Measure-Object -Property Mismatches -Sum).Sum | Should -Be 0
        ($results | Measure-Object -Property Errors -Sum).Sum | Should -Be 0
        $served = [long]($after.Faults | Measure-Object -Property Count -Sum).Sum - [long]($before.Faults | Measure-Object -Property Count -Sum).Sum
        $served | Should -BeGreaterThan 0
    }

    It 'is Stopped when Stop-DEEngine returns, and no pass runs after' {
        $stopped.State | Should -Be 'Stopped'
        $stateAfterStop | Should -Be 'Stopped'
        $scanPassesAfterStop | Should -Be $stopped.PassesRun
        (Get-DEHostStats).ScanPasses | Should -Be $stopped.PassesRun
    }

    It 'accounts for every page afterwards, and leaves every domain Running' {
        foreach ($stats in Get-DEPageStats) {
            ($stats.PrivatePages + $stats.ZeroPages + $stats.UniformPages + $stats.SharedPages + $stats.PatchedPages +
                $stats.CompressedPages + $stats.SwappedPages) | Should -Be $stats.PageCount
        }
        (Get-DEDomain).Status | Select-Object -Unique | Should -Be 'Running'
    }
}

Describe 'Get-DEEngine reports the CPU the engine used' {
    BeforeAll {
        Import-Module $env:DE_MODULE_PATH -Force
        $script:h = Connect-DEHost -Name "cpu-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        $null = New-DEDomain -DEHost $h -Name cpu1 -ProcessId $PID -EnableSharing
    }
    AfterAll {
        Disconnect-DEHost -DEHost $h -Confirm:$false
    }

    It 'measures user + system time of the engine threads, no more than they could have used' {
        $sw = [Diagnostics.Stopwatch]::StartNew()
        Start-DEEngine -DEHost $h -Interval 0.1
        $null = Wait-DEEnginePass -DEHost $h -Count 3
        $final = Stop-DEEngine -DEHost $h -PassThru
        $sw.Stop()
        $final.PassesRun | Should -BeGreaterThan 2
        $final.CpuTime | Should -BeGreaterThan ([TimeSpan]::Zero)
        # Every core at most, for as long as it ran: an upper bound that load only makes easier to keep.
        $final.CpuTime.TotalSeconds | Should -BeLessThan ([Environment]::ProcessorCount * $sw.Elapsed.TotalSeconds)
        (Get-DEEngine -DEHost $h).CpuTime | Should -Be $final.CpuTime
        (Get-DEHostStats -DEHost $h).EngineCpuTime | Should -BeGreaterOrEqual $final.CpuTime
    }
}
