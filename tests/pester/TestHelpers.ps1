# Helpers the Pester files share, dot-sourced in their BeforeAll. They wait for events, never for time: a test that
# waits on the clock passes or fails with the load of the machine.

# Starts `cat` with its standard input and output redirected and waits until it has echoed a line back: it is then
# loaded and in its read loop, where it stays, unchanged, until Stop-ReadyProcess ends it. For tests that snapshot the
# memory of a live process, which must be neither still starting nor gone by then.
function Start-ReadyProcess {
    $process = [Diagnostics.Process]::Start([Diagnostics.ProcessStartInfo]@{
            FileName = 'cat'; UseShellExecute = $false; RedirectStandardInput = $true; RedirectStandardOutput = $true })
    $process.StandardInput.WriteLine('ready')
    $process.StandardInput.Flush()
    $echo = $process.StandardOutput.ReadLine()
    if ($echo -ne 'ready') {
        Stop-ReadyProcess $process
        throw "cat did not echo its first line back (it wrote '$echo')."
    }
    $process
}

# Ends processes (from Start-ReadyProcess, or any other; none for $null) and waits until they are gone.
function Stop-ReadyProcess([Diagnostics.Process[]]$Process) {
    foreach ($p in $Process) {
        if (-not $p) { continue }
        if (-not $p.HasExited) { $p.Kill() }
        $p.WaitForExit()
        $p.Dispose()
    }
}

# Waits until the background engine of the host has run at least $Count passes since it was started, and returns its
# status then. The engine offers nothing to block on, so this polls Get-DEEngine; the pause between two looks is only
# the poll period, nothing depends on it. There is no time bound: while the engine runs a pass comes every interval,
# and once it does not run no pass will come, so that fails at once.
function Wait-DEEnginePass {
    param(
        [Parameter(Mandatory)]
        [long]$Count,
        [object]$DEHost
    )
    $target = if ($DEHost) { @{ DEHost = $DEHost } } else { @{} }
    while ($true) {
        $status = Get-DEEngine @target
        if ($status.PassesRun -ge $Count) { return $status }
        if ($status.State -ne 'Running') {
            throw "The engine of host '$($status.Host)' is $($status.State) after $($status.PassesRun) pass(es), before $Count ($($status.LastError))."
        }
        Start-Sleep -Milliseconds 20
    }
}

# Waits until a [powershell] started with BeginInvoke has written its first progress record, on the events its progress
# stream and its state raise: no polling, no time bound. Throws when the invocation ends (completes, fails or is
# stopped) without having written one.
function Wait-FirstProgress([powershell]$PowerShell) {
    $id = [guid]::NewGuid().ToString('n')
    $progressEvent = "progress-$id"
    $stateEvent = "state-$id"
    $null = Register-ObjectEvent -InputObject $PowerShell.Streams.Progress -EventName DataAdded -SourceIdentifier $progressEvent
    $null = Register-ObjectEvent -InputObject $PowerShell -EventName InvocationStateChanged -SourceIdentifier $stateEvent
    try {
        # Registered first, looked at second: a record or a state change after this look raises an event.
        while ($PowerShell.Streams.Progress.Count -eq 0) {
            $state = $PowerShell.InvocationStateInfo
            if ($state.State -notin 'NotStarted', 'Running', 'Stopping') {
                throw "The invocation ended ($($state.State)) before it wrote any progress. $($state.Reason) $($PowerShell.Streams.Error)"
            }
            $raised = Wait-Event
            if ($raised.SourceIdentifier -notin $progressEvent, $stateEvent) {
                throw "Unexpected event '$($raised.SourceIdentifier)' while waiting for progress."
            }
            $raised | Remove-Event
        }
    }
    finally {
        Unregister-Event -SourceIdentifier $progressEvent
        Unregister-Event -SourceIdentifier $stateEvent
        foreach ($source in $progressEvent, $stateEvent) { Get-Event -SourceIdentifier $source -ErrorAction Ignore | Remove-Event }
    }
}

# The swap file made at $Path, as this process holds it: its name is removed once it is made, so it is found among the
# process's descriptors ("<path> (deleted)"). One object per descriptor (none once the host is disconnected), with the
# file's Mode and Length read through the descriptor.
function Get-SwapDescriptor([string]$Path) {
    foreach ($entry in Get-ChildItem -LiteralPath "/proc/$PID/fd" -ErrorAction Ignore) {
        if ($entry.LinkTarget -ne "$Path (deleted)") { continue }
        $file = [IO.File]::OpenHandle($entry.FullName)
        try {
            [pscustomobject]@{ Descriptor = $entry.FullName; Mode = [IO.File]::GetUnixFileMode($file); Length = [IO.RandomAccess]::GetLength($file) }
        }
        finally {
            $file.Dispose()
        }
    }
}
