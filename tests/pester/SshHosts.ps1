# Helpers for tests that do real PowerShell remoting over SSH, dot-sourced in their BeforeAll. Start-DETestSshHost runs sshd daemons of this test run's own on 127.0.0.1, each on a free port,
# each a "host" of its own; Stop-DETestSshHost ends them and everything they started.
#
# Everything a run makes is in one private directory (mode 0700) under the temp folder, removed by Stop-DETestSshHost:
#   client_key, client_key.pub   the key the tests log in with (ed25519, no passphrase)
#   authorized_keys              that key, allowed only from 127.0.0.1, with no pty and no forwarding
#   pwsh-subsystem.sh            what sshd runs for the 'powershell' subsystem: this very pwsh, with -sshs
#   host<N>/                     one daemon: sshd_config, its host key, its pid file and its log (sshd.err)
#   owner                        the pid (and start time) of the pwsh that started the run: a later run ends the daemons
#                                of one whose pwsh is gone without stopping them (Remove-DETestSshStaleRun)
# The system's sshd (openssh-server's, on port 22) is neither needed nor touched: each daemon reads only its own config
# (-f), and nothing is written to /etc/ssh or ~/.ssh (the client is told UserKnownHostsFile=/dev/null).
#
# They wait for events, not for time: a daemon is ready when its port answers with an SSH banner (a bounded poll on the
# TCP connect, which fails at once with the daemon's log when sshd exits); the bounds only turn a hang into a failure.

$script:DESshd = '/usr/sbin/sshd'
# How long a PSSession's SSH connection may take before it fails (-SSHConnection's ConnectingTimeout, in ms; the
# hashtable form's default is no time at all). Only a bound: nothing waits for it.
$script:DESshConnectingTimeoutMs = 120000

# Why the SSH remoting tests cannot run here, as "needs ..." naming the packages; $null when they can.
function Test-DESshAvailable {
    $missing = @(
        if (-not $IsLinux) { 'Linux' }
        if (-not (Test-Path -LiteralPath $script:DESshd -PathType Leaf)) { "$($script:DESshd) (package openssh-server)" }
        foreach ($tool in 'ssh', 'ssh-keygen') {
            if (-not (Get-Command $tool -CommandType Application -ErrorAction Ignore)) { "$tool (package openssh-client)" }
        }
        # sshd lets a user in only when it runs as root (or as that user, which PermitRootLogin and the tests do not cover).
        if (-not [Environment]::IsPrivilegedProcess) { 'root (sshd runs as root to serve logins)' }
    )
    if ($missing) { "needs $($missing -join ', ')" } else { $null }
}

# The command line that runs this pwsh: dotnet and pwsh.dll when it is the .NET tool, else the pwsh executable.
function Get-DETestPwshCommand {
    $exe = [Environment]::ProcessPath
    if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet') {
        return @($exe, (Join-Path $PSHOME 'pwsh.dll'))
    }
    @($exe)
}

function Invoke-DETestNative([string]$FilePath, [string[]]$ArgumentList) {
    $output = & $FilePath @ArgumentList 2>&1
    if ($LASTEXITCODE -ne 0) {
        throw "$FilePath $($ArgumentList -join ' ') exited with ${LASTEXITCODE}: $($output -join [Environment]::NewLine)"
    }
}

function New-DETestPrivateDirectory([string]$Path) {
    $null = [IO.Directory]::CreateDirectory($Path)
    [IO.File]::SetUnixFileMode($Path, [IO.UnixFileMode]'UserRead, UserWrite, UserExecute')
    $Path
}

function Write-DETestFile([string]$Path, [string]$Text, [IO.UnixFileMode]$Mode = 'UserRead, UserWrite') {
    [IO.File]::WriteAllText($Path, $Text.Replace("`r`n", "`n"))
    [IO.File]::SetUnixFileMode($Path, $Mode)
}

# A TCP port on 127.0.0.1 that nothing listens on now: the kernel picks it, the socket is closed again.
function Get-DETestFreePort {
    $listener = [Net.Sockets.TcpListener]::new([Net.IPAddress]::Loopback, 0)
    try {
        $listener.Start()
        $listener.LocalEndpoint.Port
    }
    finally {
        $listener.Stop()
    }
}

# A port that refuses every connection for as long as the returned socket is open: it is bound but never listens, so no
# other program can take it meanwhile. Close the socket (Dispose) when done. For "a host that is not there".
function New-DETestRefusingPort {
    $socket = [Net.Sockets.Socket]::new([Net.Sockets.AddressFamily]::InterNetwork, [Net.Sockets.SocketType]::Stream,
        [Net.Sockets.ProtocolType]::Tcp)
    $socket.Bind([Net.IPEndPoint]::new([Net.IPAddress]::Loopback, 0))
    [pscustomobject]@{ Port = $socket.LocalEndPoint.Port; Socket = $socket }
}

# A stand-in `ssh`, first on PATH until Disable-DETestRefusingSsh, for "a host whose port refuses": for each of -Port it
# reads PowerShell's first packet from its stdin, then exits 255 with nothing on stderr (as ssh -o LogLevel=QUIET does when
# the connection is refused) and, when it did read a packet, leaves a file refused-<port> in its directory (so a test can
# check that it was used);
# a connection to any other port runs the real ssh with the same arguments.
# Why not the real ssh: PowerShell 7.6's SSH transport can kill its own process when ssh exits while PowerShell is still
# writing the session's first packet to ssh's stdin. Its error thread (ssh's stderr at end) disposes the stdin writer,
# whose flush of the half-written packet fails with EPIPE, unhandled on that thread. A refused connect makes ssh exit
# within a millisecond or two, racing that first write: 1 pwsh in 10 crashed here in 40 sessions to refused ports each.
# PowerShell writes that packet whole (one line) and then waits for the server's answer before it writes again, so ssh
# exiting only after reading it leaves nothing to flush: 0 crashes in 24 such runs.
function Enable-DETestRefusingSsh([Parameter(Mandatory)][int[]]$Port) {
    $realSsh = Get-Command ssh -CommandType Application -ErrorAction Ignore | Select-Object -First 1
    $directory = New-DETestPrivateDirectory (Join-Path ([IO.Path]::GetTempPath()) "de-refusing-ssh-$PID-$([guid]::NewGuid().ToString('n').Substring(0, 8))")
    # Paths in single quotes for bash, a quote in them written as '\''.
    function Quote([string]$Text) { "'" + $Text.Replace("'", "'\''") + "'" }
    $passThrough = if ($realSsh) { "exec $(Quote $realSsh.Source) `"`$@`"" } else { 'echo "ssh: not installed (stand-in for refused ports only)" >&2; exit 255' }
    $marker = Quote (Join-Path $directory 'refused-')
    try {
        Write-DETestFile -Path (Join-Path $directory 'ssh') -Mode 'UserRead, UserWrite, UserExecute' -Text @"
#!/bin/bash
# Stand-in ssh of a Pester test (Enable-DETestRefusingSsh in tests/pester/SshHosts.ps1).
port=22 previous=
for argument in "`$@"; do
    if [ "`$previous" = -p ]; then port=`$argument; fi
    previous=`$argument
done
case " $($Port -join ' ') " in
    *" `$port "*)
        # PowerShell's first packet: one line. The bound only keeps a broken test from hanging; it is never waited for.
        if IFS= read -r -t 600 packet; then : > $marker"`$port"; fi
        exit 255 ;;
esac
$passThrough
"@
    }
    catch {
        Remove-Item -LiteralPath $directory -Recurse -Force -ErrorAction SilentlyContinue
        throw
    }
    $previousPath = $env:PATH
    $env:PATH = "$directory$([IO.Path]::PathSeparator)$previousPath"
    [pscustomobject]@{ Directory = $directory; PreviousPath = $previousPath; Port = $Port }
}

# Whether the stand-in of Enable-DETestRefusingSsh refused a connection to the port.
function Test-DETestSshRefused([Parameter(Mandatory)][pscustomobject]$StandIn, [Parameter(Mandatory)][int]$Port) {
    Test-Path -LiteralPath (Join-Path $StandIn.Directory "refused-$Port")
}

# PATH as it was before Enable-DETestRefusingSsh, and the stand-in's directory removed.
function Disable-DETestRefusingSsh([pscustomobject]$StandIn) {
    if (-not $StandIn) { return }
    $env:PATH = $StandIn.PreviousPath
    Remove-Item -LiteralPath $StandIn.Directory -Recurse -Force -ErrorAction SilentlyContinue
}

# Whether an SSH server answers on the port: a TCP connect, and its first line is an SSH banner.
function Test-DETestSshBanner([int]$Port) {
    $client = [Net.Sockets.TcpClient]::new()
    try {
        $client.Connect([Net.IPAddress]::Loopback, $Port)
        $client.ReceiveTimeout = 30000
        $line = [IO.StreamReader]::new($client.GetStream(), [Text.Encoding]::ASCII).ReadLine()
        "$line".StartsWith('SSH-2.0-')
    }
    catch [Net.Sockets.SocketException] {
        $false
    }
    catch [IO.IOException] {
        $false
    }
    finally {
        $client.Dispose()
    }
}

# Every process now: Pid, ParentPid, StartTime (clock ticks since boot: with the pid, a process's identity) and State.
function Get-DETestProcessTable {
    foreach ($dir in [IO.Directory]::EnumerateDirectories('/proc')) {
        $name = [IO.Path]::GetFileName($dir)
        if ($name -notmatch '^\d+$') { continue }
        try { $stat = [IO.File]::ReadAllText("$dir/stat") } catch { continue }
        # The command name is in parentheses and may hold anything: the fields start after the last ')'.
        $fields = $stat.Substring($stat.LastIndexOf(')') + 2).Split(' ')
        [pscustomobject]@{ Pid = [int]$name; State = $fields[0]; ParentPid = [int]$fields[1]; StartTime = [ulong]$fields[19] }
    }
}

# The processes below $ProcessId (children, their children, ...), as Get-DETestProcessTable rows.
function Get-DETestDescendant([int]$ProcessId) {
    $table = @(Get-DETestProcessTable)
    $children = @{}
    foreach ($p in $table) { $children[$p.ParentPid] = @($children[$p.ParentPid]) + $p }
    $queue = [Collections.Generic.Queue[int]]::new()
    $queue.Enqueue($ProcessId)
    while ($queue.Count) {
        foreach ($child in @($children[$queue.Dequeue()])) {
            if (-not $child) { continue }
            $child
            $queue.Enqueue($child.Pid)
        }
    }
}

# Whether the process of a Get-DETestProcessTable row still runs: the pid exists, is the same process (start time), and
# is not a zombie (one waiting to be reaped runs no more; its reaping is its new parent's, not ours).
function Test-DETestProcessAlive([pscustomobject]$Process) {
    try { $stat = [IO.File]::ReadAllText("/proc/$($Process.Pid)/stat") } catch { return $false }
    $fields = $stat.Substring($stat.LastIndexOf(')') + 2).Split(' ')
    $fields[0] -ne 'Z' -and $fields[0] -ne 'X' -and [ulong]$fields[19] -eq $Process.StartTime
}

<#
Processes of a run that still run: those whose command line names the run directory (the daemons; sshd's per-connection
processes retitle themselves, see Stop-DETestSshHost) and those whose environment has DE_TEST_SSH_RUN set to it (the
pwsh subsystems the daemons started, whose wrapper sets it). Returns Pid and CommandLine; none when the run is over.
#>
function Get-DETestSshProcess([Parameter(Mandatory)][string]$RunDirectory) {
    $marker = "DE_TEST_SSH_RUN=$RunDirectory"
    foreach ($p in Get-DETestProcessTable) {
        if ($p.Pid -eq $PID -or -not (Test-DETestProcessAlive $p)) { continue }
        try {
            $cmdline = [IO.File]::ReadAllText("/proc/$($p.Pid)/cmdline").Replace([char]0, ' ').Trim()
            $environ = [IO.File]::ReadAllText("/proc/$($p.Pid)/environ").Split([char]0)
        }
        catch { continue }
        if ($cmdline.Contains($RunDirectory) -or $environ -contains $marker) {
            [pscustomobject]@{ Pid = $p.Pid; CommandLine = $cmdline }
        }
    }
}

<#
.SYNOPSIS
    Starts $Count sshd daemons on 127.0.0.1, each on a free port and with a host key of its own, that log root in with a
    key made for this run and serve this pwsh as the 'powershell' subsystem. Returns one object a daemon:
    Name (host1, host2, ...), HostName ('127.0.0.1'), Port, UserName ('root'), KeyFilePath, Pid, Dir (the daemon's
    folder), RunDirectory (the run's), LogPath, Options (the ssh client options for New-PSSession -Options),
    SSHConnection (a hashtable for New-PSSession/Invoke-Command -SSHConnection), Process.
    Each daemon is ready when returned (its port answers with an SSH banner). Stop them with Stop-DETestSshHost, in a
    finally or AfterAll; if starting one fails, those started are stopped and the run directory removed before it throws.
#>
function Start-DETestSshHost {
    param(
        [ValidateRange(1, 16)]
        [int]$Count = 1,

        # How long one daemon may take to answer before it counts as hung. Only a bound: nothing waits for it.
        [ValidateRange(1, 3600)]
        [int]$ReadySeconds = 60
    )

    # Privilege separation chroots into /run/sshd; Debian makes it at boot (tmpfiles.d), which a container may not do.
    if (-not (Test-Path -LiteralPath /run/sshd -PathType Container)) {
        $null = [IO.Directory]::CreateDirectory('/run/sshd')
        [IO.File]::SetUnixFileMode('/run/sshd', [IO.UnixFileMode]'UserRead, UserWrite, UserExecute, GroupRead, GroupExecute, OtherRead, OtherExecute')
    }

    Remove-DETestSshStaleRun
    $run = [IO.Directory]::CreateTempSubdirectory('de-ssh-').FullName
    $run = New-DETestPrivateDirectory $run
    $self = Get-DETestProcessTable | Where-Object Pid -EQ $PID
    Write-DETestFile (Join-Path $run 'owner') "$($self.Pid) $($self.StartTime)`n"
    $started = [Collections.Generic.List[object]]::new()
    try {
        $clientKey = Join-Path $run 'client_key'
        Invoke-DETestNative ssh-keygen @('-q', '-t', 'ed25519', '-N', '', '-C', 'difference-engine-tests', '-f', $clientKey)
        $publicKey = [IO.File]::ReadAllText("$clientKey.pub").Trim()
        $authorizedKeys = Join-Path $run 'authorized_keys'
        Write-DETestFile $authorizedKeys "restrict,from=`"127.0.0.1`" $publicKey`n"

        # sshd runs a subsystem through the user's shell, in an environment of its own making (a short PATH, no
        # DOTNET_ROOT): the wrapper names this pwsh by absolute paths, and marks its processes as the run's.
        $pwsh = @(Get-DETestPwshCommand)
        $dotnetRoot = if ([IO.Path]::GetFileNameWithoutExtension($pwsh[0]) -eq 'dotnet') { Split-Path -Parent $pwsh[0] } else { $env:DOTNET_ROOT }
        $quoted = ($pwsh + '-sshs', '-NoLogo', '-NoProfile' | ForEach-Object { "'" + $_.Replace("'", "'\''") + "'" }) -join ' '
        $wrapper = Join-Path $run 'pwsh-subsystem.sh'
        Write-DETestFile $wrapper -Mode 'UserRead, UserWrite, UserExecute' @"
#!/bin/sh
# The 'powershell' subsystem of the test sshd daemons in $run (tests/pester/SshHosts.ps1).
export DE_TEST_SSH_RUN='$run'
export DOTNET_ROOT='$dotnetRoot'
export DOTNET_CLI_TELEMETRY_OPTOUT=1
export DOTNET_NOLOGO=1
export PATH='$(Split-Path -Parent $pwsh[0]):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
# Its standard error (not part of the protocol, which is stdin and stdout) goes to a log of its own, for Write-DETestSshLog.
exec $quoted 2>>'$run/subsystem-'`$`$.err
"@

        for ($i = 1; $i -le $Count; $i++) {
            $started.Add((Start-DETestSshDaemon -Name "host$i" -RunDirectory $run -Wrapper $wrapper -AuthorizedKeys $authorizedKeys -ClientKey $clientKey -ReadySeconds $ReadySeconds))
        }
        $started.ToArray()
    }
    catch {
        $failure = $_
        try { Stop-DETestSshHost -SshHost $started -RunDirectory $run } catch { Write-Warning "Stopping the test sshd daemons after a failed start: $_" }
        throw $failure
    }
}

# One daemon of Start-DETestSshHost, in $RunDirectory/$Name. A port taken between choosing and binding it is chosen again.
function Start-DETestSshDaemon {
    param([string]$Name, [string]$RunDirectory, [string]$Wrapper, [string]$AuthorizedKeys, [string]$ClientKey, [int]$ReadySeconds)

    $dir = New-DETestPrivateDirectory (Join-Path $RunDirectory $Name)
    $hostKey = Join-Path $dir 'ssh_host_ed25519_key'
    Invoke-DETestNative ssh-keygen @('-q', '-t', 'ed25519', '-N', '', '-C', "difference-engine-tests-$Name", '-f', $hostKey)
    $config = Join-Path $dir 'sshd_config'
    $log = Join-Path $dir 'sshd.err'
    for ($attempt = 1; ; $attempt++) {
        $port = Get-DETestFreePort
        Write-DETestFile $config @"
# A test sshd of tests/pester/SshHosts.ps1: root by key only, from 127.0.0.1 only, the powershell subsystem only.
ListenAddress 127.0.0.1
Port $port
HostKey $hostKey
PidFile $dir/sshd.pid
AuthorizedKeysFile $AuthorizedKeys
AuthorizedPrincipalsFile none
AllowUsers root
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
GSSAPIAuthentication no
UsePAM no
StrictModes no
PermitTTY no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
AllowStreamLocalForwarding no
PermitTunnel no
PermitUserRC no
PrintMotd no
PrintLastLog no
UseDNS no
MaxStartups 64:30:128
LogLevel VERBOSE
Subsystem powershell $Wrapper
"@
        Invoke-DETestNative $script:DESshd @('-t', '-f', $config)
        $process = Start-Process -FilePath $script:DESshd -ArgumentList '-D', '-e', '-f', $config -PassThru `
            -RedirectStandardInput /dev/null -RedirectStandardOutput (Join-Path $dir 'sshd.out') -RedirectStandardError $log
        $watch = [Diagnostics.Stopwatch]::StartNew()
        $ready = $false
        while (-not $ready) {
            $ready = Test-DETestSshBanner $port
            if ($ready) { break }
            # The pause between two connects, and the check that sshd still runs, in one: it returns as soon as sshd exits.
            if ($process.WaitForExit(25)) { break }
            if ($watch.Elapsed.TotalSeconds -gt $ReadySeconds) {
                $process.Kill($true)
                $process.WaitForExit()
                throw "sshd $Name ($config) did not answer on 127.0.0.1:$port within $ReadySeconds s. Its log:`n$(Get-Content -LiteralPath $log -Raw)"
            }
        }
        if ($ready) { break }
        $process.WaitForExit()
        $text = Get-Content -LiteralPath $log -Raw
        if ($attempt -lt 5 -and $text -match 'Address already in use') { continue }
        throw "sshd $Name ($config) exited with $($process.ExitCode) before it answered on 127.0.0.1:${port}. Its log:`n$text"
    }
    $options = @{
        StrictHostKeyChecking = 'no'; UserKnownHostsFile = '/dev/null'; GlobalKnownHostsFile = '/dev/null'
        BatchMode = 'yes'; IdentitiesOnly = 'yes'; LogLevel = 'ERROR'
    }
    [pscustomobject]@{
        PSTypeName    = 'DETests.SshHost'
        Name          = $Name
        HostName      = '127.0.0.1'
        Port          = $port
        UserName      = 'root'
        KeyFilePath   = $ClientKey
        Pid           = $process.Id
        Dir           = $dir
        RunDirectory  = $RunDirectory
        LogPath       = $log
        Options       = $options
        # User and port go in HostName, not in keys of their own: PowerShell (7.6) reads HostName as user@host:port and lets
        # what it finds there, or the cmdlet's -UserName and -Port when it finds none, override the UserName and Port keys
        # met before it, and a hashtable's key order differs from one process to the next.
        SSHConnection = @{ HostName = "root@127.0.0.1:$port"; KeyFilePath = $ClientKey; Options = $options.Clone(); ConnectingTimeout = $script:DESshConnectingTimeoutMs }
        Process       = $process
    }
}

<#
.SYNOPSIS
    Writes the end of each daemon's log (sshd.err) and every powershell subsystem's standard error of the run to the
    host, so that a failure of a test's set-up (a session whose SSH transport ended, say) says what sshd and the remote
    pwsh saw. Best effort: what cannot be read is skipped.
#>
function Write-DETestSshLog {
    param([object[]]$SshHost = @(), [int]$Tail = 40)
    foreach ($h in $SshHost | Where-Object { $_ }) {
        if (Test-Path -LiteralPath $h.LogPath) {
            Write-Host "---- $($h.Name) sshd log (last $Tail lines): $($h.LogPath)"
            Get-Content -LiteralPath $h.LogPath -Tail $Tail -ErrorAction Ignore | ForEach-Object { Write-Host "  $_" }
        }
    }
    foreach ($run in @($SshHost | Where-Object { $_ } | ForEach-Object RunDirectory | Select-Object -Unique)) {
        foreach ($err in Get-ChildItem -LiteralPath $run -Filter 'subsystem-*.err' -File -ErrorAction Ignore) {
            if ($err.Length -eq 0) { continue }
            Write-Host "---- powershell subsystem standard error: $($err.Name)"
            Get-Content -LiteralPath $err.FullName -Tail $Tail -ErrorAction Ignore | ForEach-Object { Write-Host "  $_" }
        }
    }
}

# Ends what is left of runs whose pwsh is gone without stopping them (killed, say, by a CI time limit): their processes
# and their directories. A run of a pwsh that still runs is its own, whichever test file or job started it.
function Remove-DETestSshStaleRun {
    foreach ($dir in [IO.Directory]::EnumerateDirectories([IO.Path]::GetTempPath(), 'de-ssh-*')) {
        $owner = Join-Path $dir 'owner'
        if (-not (Test-Path -LiteralPath $owner -PathType Leaf)) { continue }
        $ownerPid, $ownerStart = (Get-Content -LiteralPath $owner -TotalCount 1) -split ' '
        if (-not $ownerStart -or (Test-DETestProcessAlive ([pscustomobject]@{ Pid = [int]$ownerPid; StartTime = [ulong]$ownerStart }))) { continue }
        Write-Warning "Ending the test sshd run ${dir}: its pwsh ($ownerPid) is gone without stopping it."
        Stop-DETestSshHost -RunDirectory ([IO.Path]::TrimEndingDirectorySeparator($dir))
    }
}

<#
.SYNOPSIS
    Ends daemons of Start-DETestSshHost, and everything they started, then removes the run directory. Throws when a
    process of the run still runs afterwards. Idempotent: what is already gone is skipped. Close the PSSessions first:
    their sshd and pwsh processes then end by themselves; what is left is killed.
.DESCRIPTION
    sshd's per-connection processes are found as the daemon's descendants (they retitle themselves, so their command
    line no longer names the run). They are given $GraceSeconds to end by themselves while the daemon runs, then killed,
    and the daemon, which reaps them, is killed only after they are gone. Then anything of the run that still runs (by
    command line or by the DE_TEST_SSH_RUN the subsystem wrapper sets) is killed. Processes that are not children of this
    pwsh cannot be waited for: a bounded poll; one that is a zombie runs no more and counts as gone.
#>
function Stop-DETestSshHost {
    param(
        [object[]]$SshHost = @(),

        # The run directory, when no daemon object has it (a start that failed before the first daemon).
        [string]$RunDirectory,

        # How long the per-connection processes may take to end by themselves before they are killed.
        [ValidateRange(0, 3600)]
        [int]$GraceSeconds = 10,

        # How long killed processes may take to be gone before this throws. Only a bound: nothing waits for it.
        [ValidateRange(1, 3600)]
        [int]$GoneSeconds = 30
    )

    $runs = @(@($SshHost | Where-Object { $_ } | ForEach-Object RunDirectory) + @($RunDirectory) | Where-Object { $_ } | Select-Object -Unique)
    $watch = [Diagnostics.Stopwatch]::StartNew()
    foreach ($h in $SshHost) {
        if (-not $h) { continue }
        $process = $h.Process
        if (-not $process.HasExited) {
            # The daemon reaps its per-connection processes as they end: they end once their client has gone, so they
            # are waited for while the daemon runs, and killed (then reaped by it) only when they do not end. Killed with
            # the daemon, they would be orphans, and zombies for good where init does not reap (a container's may not).
            $deadline = $watch.Elapsed.TotalSeconds + $GraceSeconds
            while (($left = @(Get-DETestDescendant $process.Id | Where-Object State -NE 'Z')).Count -and
                $watch.Elapsed.TotalSeconds -lt $deadline) {
                if ($process.WaitForExit(20)) { break }
            }
            foreach ($p in $left) {
                if (Test-DETestProcessAlive $p) {
                    try { [Diagnostics.Process]::GetProcessById($p.Pid).Kill() } catch [ArgumentException] { } catch [InvalidOperationException] { }
                }
            }
            $deadline = $watch.Elapsed.TotalSeconds + $GoneSeconds
            while (@(Get-DETestDescendant $process.Id).Count -and $watch.Elapsed.TotalSeconds -lt $deadline) {
                if ($process.WaitForExit(20)) { break }
            }
            if (-not $process.HasExited) { $process.Kill($true) }
        }
        $process.WaitForExit()
    }
    # What is left of a run is killed; a process of it that outlives its daemon is an orphan, waited for by a poll.
    $deadline = $watch.Elapsed.TotalSeconds + $GoneSeconds
    while ($true) {
        $left = @(foreach ($run in $runs) { Get-DETestSshProcess -RunDirectory $run })
        if ($left.Count -eq 0) { break }
        if ($watch.Elapsed.TotalSeconds -gt $deadline) {
            throw "Processes of the test sshd daemons still run $GoneSeconds s after they were killed: $(($left | ForEach-Object { "$($_.Pid) ($($_.CommandLine))" }) -join '; ')."
        }
        foreach ($p in $left) {
            try { [Diagnostics.Process]::GetProcessById($p.Pid).Kill() } catch [ArgumentException] { } catch [InvalidOperationException] { }
        }
        Start-Sleep -Milliseconds 20
    }
    foreach ($run in $runs) {
        if (Test-Path -LiteralPath $run) { Remove-Item -LiteralPath $run -Recurse -Force }
    }
}
