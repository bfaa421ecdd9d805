#Requires -Version 7.6
#Requires -Modules DifferenceEngine

<#
.SYNOPSIS
    Fleet placement in one call: gathers the fingerprints of every host's domains over SSH remoting, in
    parallel, and recommends which domain goes on which host.

.DESCRIPTION
    Opens a PowerShell session to every host of -HostName over SSH (or takes the open sessions of
    -Session), runs Get-DEFingerprint in all of them at once, at most -ThrottleLimit at a time, and places
    the fingerprints that come back with Get-DEPlacement, here: only the fingerprints cross the network
    (about 0.05% of each domain's memory), never a page. docs/FLEET.md describes the fingerprints and the
    model behind the placement.

    Each host answers when its fingerprints are all made; the progress bar counts the hosts that have.
    A host that fails (it cannot be reached, has no key file, or its fingerprints fail) is written as a
    non-terminating error naming the host (the error's TargetObject is its name, as "name" or
    "name:port" for an SSH port other than 22), and the other hosts' fingerprints are still placed: the
    domains of a failed host are not in the placement. A failed host that sent no fingerprint is also
    left out of -HostCapacity (a warning, and a line of the report, say so): its real domains were never
    seen, so nothing may be placed on it as if it were empty. It is matched to -HostCapacity by the name
    its session was connected to (its ComputerName, or that name's first DNS label), ignoring case. When
    no host sends a fingerprint the script stops.

    The fleet key file must be on every host, at the same -FleetKeyPath, mode 0600 (New-DEFleetKey; copy
    it with scp -p). Get-DEFingerprint on each host uses the DifferenceEngine host current in the session;
    in a session without one (every session this script opens itself) it connects the machine's Xen
    hypervisor, named after the machine (Connect-DEHost -Xen), and disconnects it when done. For other
    set-ups, open and prepare the sessions yourself and give -Session; the script leaves them open.

    The fingerprints carry the name of the DifferenceEngine host that made them (HostName); that is
    where each domain runs today, and the names -HostCapacity gives capacities for.

    With -Fingerprint (or fingerprints piped in) nothing is gathered: fingerprints gathered before, for
    instance saved with Export-Clixml or ConvertTo-Json, are placed.

.PARAMETER HostName
    The hosts to gather fingerprints from: SSH targets as New-PSSession -HostName takes them (host,
    user@host or user@host:port). Sessions are opened -ThrottleLimit at a time and closed at the end.

.PARAMETER Session
    Open PowerShell sessions (New-PSSession) to gather fingerprints through, instead of -HostName. The
    DifferenceEngine module and a host in each session are used as they are. They are left open.

.PARAMETER Fingerprint
    Fingerprints gathered before (Get-DEFingerprint objects, as remoting returns them, or from JSON):
    placed without gathering anything. Also from the pipeline.

.PARAMETER HostCapacity
    The hosts to place on, as host name = the memory the engine may use there, in bytes
    (@{ h1 = 64GB; h2 = 48GB }). The names are the fingerprints' HostName.

.PARAMETER Goal
    FewestHosts (as few hosts as the domains fit on) or LeastMemory (the least memory in all).

.PARAMETER FleetKeyPath
    The fleet key file on each host (the same path everywhere; ~ is the home folder of the remote user).

.PARAMETER ThrottleLimit
    At most this many hosts are connected to, and fingerprint, at a time.

.PARAMETER UserName
    With -HostName: the user to log in as over SSH (New-PSSession -UserName).

.PARAMETER KeyFilePath
    With -HostName: the SSH private key to log in with (New-PSSession -KeyFilePath).

.PARAMETER Port
    With -HostName: the SSH port of every host (New-PSSession -Port).

.PARAMETER SshOption
    With -HostName: ssh client options, as ssh -o takes them (New-PSSession -Options), for instance
    @{ StrictHostKeyChecking = 'accept-new'; ConnectTimeout = '10' }.

.PARAMETER AsReport
    Output a short report (lines of text: the totals, the domains to move, the hosts) instead of the
    placement object.

.EXAMPLE
    ./Get-FleetPlacement.ps1 -HostName h1, h2, h3 -HostCapacity @{ h1 = 64GB; h2 = 64GB; h3 = 48GB } -AsReport

    Gathers the fingerprints of the three hosts' Xen domains over SSH with the key ~/.de/fleet.key on
    each, and prints how many hosts the domains need, what that saves, and which domains to move.

.EXAMPLE
    $sessions = New-PSSession -HostName (Get-Content ./hosts.txt) -UserName admin
    Invoke-Command -Session $sessions { Import-Module DifferenceEngine; $null = Connect-DEHost -Xen -Name ([Net.Dns]::GetHostName()) }
    $placement = ./Get-FleetPlacement.ps1 -Session $sessions -HostCapacity $capacity -Goal LeastMemory -ErrorVariable failed -Verbose
    $placement.Assignments | Where-Object Moved | Export-Csv ./moves.csv
    $failed | ForEach-Object { "no fingerprints from $($_.TargetObject)" }

    Gathers through sessions opened and prepared beforehand (each connected to its Xen hypervisor under
    the host's DNS name, the names $capacity uses), says how many fingerprints each host sent, writes the
    moves to a CSV file and lists the hosts that failed. The sessions stay open.

.EXAMPLE
    Import-Clixml ./fingerprints.xml | ./Get-FleetPlacement.ps1 -HostCapacity @{ h1 = 64GB; h2 = 64GB }

    Places fingerprints gathered earlier, without connecting to any host.

.INPUTS
    DifferenceEngine.Fleet.DomainFingerprint: fingerprints to place (-Fingerprint).

.OUTPUTS
    DifferenceEngine.Fleet.PlacementResult: what Get-DEPlacement returns. With -AsReport, System.String:
    the lines of the report.
#>
[CmdletBinding(DefaultParameterSetName = 'HostName')]
[OutputType('DifferenceEngine.Fleet.PlacementResult')]
[OutputType([string])]
param(
    [Parameter(Position = 0, ParameterSetName = 'HostName')]
    [ValidateNotNullOrEmpty()]
    [string[]]$HostName,

    [Parameter(Mandatory, ParameterSetName = 'Session')]
    [ValidateNotNullOrEmpty()]
    [System.Management.Automation.Runspaces.PSSession[]]$Session,

    [Parameter(Mandatory, ParameterSetName = 'Fingerprint', ValueFromPipeline)]
    [ValidateNotNull()]
    [object[]]$Fingerprint,

    [Parameter(Mandatory)]
    [ValidateNotNullOrEmpty()]
    [hashtable]$HostCapacity,

    [ValidateSet('FewestHosts', 'LeastMemory')]
    [string]$Goal = 'FewestHosts',

    [Parameter(ParameterSetName = 'HostName')]
    [Parameter(ParameterSetName = 'Session')]
    [ValidateNotNullOrEmpty()]
    [string]$FleetKeyPath = '~/.de/fleet.key',

    [Parameter(ParameterSetName = 'HostName')]
    [Parameter(ParameterSetName = 'Session')]
    [ValidateRange(1, 1024)]
    [int]$ThrottleLimit = 8,

    [Parameter(ParameterSetName = 'HostName')]
    [ValidateNotNullOrEmpty()]
    [string]$UserName,

    [Parameter(ParameterSetName = 'HostName')]
    [ValidateNotNullOrEmpty()]
    [string]$KeyFilePath,

    [Parameter(ParameterSetName = 'HostName')]
    [ValidateRange(1, 65535)]
    [int]$Port,

    [Parameter(ParameterSetName = 'HostName')]
    [ValidateNotNull()]
    [hashtable]$SshOption,

    [switch]$AsReport
)

begin {
    Set-StrictMode -Version Latest
    # Not $ErrorActionPreference = 'Stop': a host that fails is a non-terminating error of this script, which the
    # caller's -ErrorAction governs; what must stop the script stops it explicitly.
    $given = [System.Collections.Generic.List[object]]::new()
    $doneType = 'DifferenceEngine.Examples.FleetHostDone'

    function New-ErrorRecord([string]$Id, [System.Management.Automation.ErrorCategory]$Category, [string]$Message, [object]$Target) {
        [System.Management.Automation.ErrorRecord]::new([System.InvalidOperationException]::new($Message), $Id, $Category, $Target)
    }

    # How a host is named in errors and progress: its name, and its SSH port when that is not 22.
    function Get-ConnectionLabel([System.Management.Automation.Runspaces.RunspaceConnectionInfo]$Info) {
        $p = if ($Info -is [System.Management.Automation.Runspaces.SSHConnectionInfo]) { $Info.Port } else { 0 }
        if ($p -and $p -ne 22) { "$($Info.ComputerName):$p" } else { $Info.ComputerName }
    }

    # A host as errors and -HostCapacity know it: Label (its name and port, for errors and progress) and ComputerName
    # (the name it was connected to, which -HostCapacity is matched against when it fails).
    function Get-ConnectionHost([System.Management.Automation.Runspaces.RunspaceConnectionInfo]$Info) {
        [pscustomobject]@{ Label = Get-ConnectionLabel $Info; ComputerName = $Info.ComputerName }
    }

    # The host an error of New-PSSession or Invoke-Command is about (a Label and a ComputerName).
    function Get-ErrorHost([System.Management.Automation.ErrorRecord]$Record, [hashtable]$ByRunspace) {
        $origin = if ($Record -is [System.Management.Automation.Runspaces.RemotingErrorRecord]) { $Record.OriginInfo }
        if ($origin -and $ByRunspace.ContainsKey($origin.RunspaceID)) { return $ByRunspace[$origin.RunspaceID] }
        if ($origin) { return [pscustomobject]@{ Label = $origin.PSComputerName; ComputerName = $origin.PSComputerName } }
        $target = $Record.TargetObject
        if ($target -is [System.Management.Automation.Runspaces.PSSession]) { return Get-ConnectionHost $target.Runspace.ConnectionInfo }
        if ($target -is [System.Management.Automation.Runspaces.Runspace]) { return Get-ConnectionHost $target.ConnectionInfo }
        if ($target -is [string] -and $target) { return [pscustomobject]@{ Label = $target; ComputerName = $target } }
        [pscustomobject]@{ Label = 'an unknown host'; ComputerName = $null }
    }

    # The -HostCapacity names of the hosts that failed without sending a fingerprint: their domains were never seen, so
    # nothing may be placed on them as if they were empty. A name matches a failed host's ComputerName, or its first
    # DNS label (h1 for h1.example.com), ignoring case.
    function Get-FailedCapacityName([hashtable]$Capacity, [object[]]$Failed) {
        foreach ($name in @($Capacity.Keys)) {
            foreach ($f in $Failed) {
                $computer = "$($f.ComputerName)"
                $short = if ($computer -as [ipaddress]) { $computer } else { $computer.Split('.')[0] }
                if ($computer -and ("$name" -eq $computer -or "$name" -eq $short)) { $name; break }
            }
        }
    }

    # A host's failure, as an error of this script: the host is its target and starts its message; the id, category
    # and exception are the original's.
    function Write-HostError([System.Management.Automation.ErrorRecord]$Record, [string]$Name) {
        $message = if ($Record.ErrorDetails -and $Record.ErrorDetails.Message) { $Record.ErrorDetails.Message } else { $Record.Exception.Message }
        $id = "$($Record.FullyQualifiedErrorId)".Split(',')[0]
        $hostError = [System.Management.Automation.ErrorRecord]::new($Record.Exception, $id, $Record.CategoryInfo.Category, $Name)
        $hostError.ErrorDetails = [System.Management.Automation.ErrorDetails]::new("Host ${Name}: $message")
        $PSCmdlet.WriteError($hostError)
    }

    # Runs on every host: its fingerprints, then one object that says the host is done (also when it failed, after the
    # error), so that the progress counts hosts, not fingerprints.
    $gather = {
        param([string]$KeyPath, [string]$DoneType)
        $count = 0
        $failed = $false
        $connected = $null
        try {
            if (-not (Get-Module DifferenceEngine)) { Import-Module DifferenceEngine -ErrorAction Stop }
            if (-not (Get-DEHost -Current)) {
                $connected = Connect-DEHost -Xen -Name ([Environment]::MachineName) -PassThru -ErrorAction Stop
            }
            Get-DEFingerprint -FleetKeyPath $KeyPath | ForEach-Object { $count++; $_ }
        }
        catch {
            $failed = $true
            Write-Error -ErrorRecord $_
        }
        finally {
            if ($connected) { $connected | Disconnect-DEHost -Confirm:$false -ErrorAction SilentlyContinue }
        }
        [pscustomobject]@{ PSTypeName = $DoneType; Fingerprints = $count; Failed = $failed }
    }
}

process {
    if ($PSCmdlet.ParameterSetName -eq 'Fingerprint') {
        foreach ($f in $Fingerprint) { $given.Add($f) }
    }
}

end {
    if ($PSCmdlet.ParameterSetName -eq 'HostName' -and -not $HostName) {
        $PSCmdlet.ThrowTerminatingError((New-ErrorRecord 'FleetPlacementNothingToPlace' InvalidArgument `
                    'Nothing to place: give -HostName (the hosts to gather fingerprints from over SSH), -Session (open sessions to them) or -Fingerprint (fingerprints gathered before).' $null))
    }

    $activity = 'Get-FleetPlacement: gathering fingerprints'
    $opened = [System.Collections.Generic.List[System.Management.Automation.Runspaces.PSSession]]::new()
    $fingerprints = [System.Collections.Generic.List[object]]::new()
    $failedHosts = [System.Collections.Generic.List[string]]::new()
    # The hosts that failed (Label, ComputerName, and the session's runspace, if any) and the fingerprints each session sent.
    $failed = [System.Collections.Generic.List[object]]::new()
    $sentBy = @{}
    $total = 0
    try {
        if ($PSCmdlet.ParameterSetName -eq 'Fingerprint') {
            $fingerprints.AddRange($given)
        }
        else {
            $sessions = @()
            if ($PSCmdlet.ParameterSetName -eq 'HostName') {
                $total = $HostName.Count
                $ssh = @{}
                if ($UserName) { $ssh.UserName = $UserName }
                if ($KeyFilePath) { $ssh.KeyFilePath = $KeyFilePath }
                if ($Port) { $ssh.Port = $Port }
                if ($SshOption) { $ssh.Options = $SshOption }
                for ($i = 0; $i -lt $HostName.Count; $i += $ThrottleLimit) {
                    $batch = $HostName[$i..([Math]::Min($i + $ThrottleLimit, $HostName.Count) - 1)]
                    Write-Progress -Activity $activity -Status "Connecting to $($i + 1)-$($i + $batch.Count) of $total hosts" -PercentComplete 0
                    # Errors merged into the output (2>&1), not collected with -ErrorVariable: only the errors this script
                    # writes, naming their hosts, reach the caller's -ErrorVariable.
                    New-PSSession -HostName $batch @ssh -ErrorAction Continue 2>&1 | ForEach-Object {
                        if ($_ -is [System.Management.Automation.ErrorRecord]) {
                            $where = Get-ErrorHost $_ @{}
                            $failedHosts.Add($where.Label)
                            $failed.Add([pscustomobject]@{ Label = $where.Label; ComputerName = $where.ComputerName; RunspaceId = $null })
                            Write-HostError $_ $where.Label
                        }
                        else {
                            $opened.Add($_)
                        }
                    }
                }
                $sessions = $opened.ToArray()
            }
            else {
                $total = $Session.Count
                $sessions = $Session
            }

            $byRunspace = @{}
            foreach ($s in $sessions) { $byRunspace[$s.InstanceId] = Get-ConnectionHost $s.Runspace.ConnectionInfo }
            $answered = $failedHosts.Count
            if ($sessions) {
                Write-Progress -Activity $activity -Status "$answered of $total hosts answered" -PercentComplete (100 * $answered / $total)
                Invoke-Command -Session $sessions -ThrottleLimit $ThrottleLimit -ScriptBlock $gather -ArgumentList $FleetKeyPath, $doneType `
                    -ErrorAction Continue 2>&1 | ForEach-Object {
                    if ($_ -is [System.Management.Automation.ErrorRecord]) {
                        $where = Get-ErrorHost $_ $byRunspace
                        $name = $where.Label
                        Write-HostError $_ $name
                        if ($name -notin $failedHosts) {
                            $failedHosts.Add($name)
                            $runspace = @($byRunspace.Keys | Where-Object { $byRunspace[$_].Label -eq $name }) | Select-Object -First 1
                            $failed.Add([pscustomobject]@{ Label = $name; ComputerName = $where.ComputerName; RunspaceId = $runspace })
                        }
                        # An error of the host's own script is followed by its "done"; one of the connection is all there is.
                        if ($_ -isnot [System.Management.Automation.Runspaces.RemotingErrorRecord]) { $answered++ }
                    }
                    elseif ($_.PSObject.TypeNames -contains "Deserialized.$doneType") {
                        $answered++
                        Write-Verbose "$($byRunspace[$_.RunspaceId].Label): $($_.Fingerprints) fingerprints$(if ($_.Failed) { ', then failed' })"
                    }
                    else {
                        $fingerprints.Add($_)
                        $sentBy[$_.RunspaceId] = 1 + [int]$sentBy[$_.RunspaceId]
                        return
                    }
                    Write-Progress -Activity $activity -Status "$answered of $total hosts answered, $($fingerprints.Count) fingerprints" `
                        -PercentComplete ([Math]::Min(100, 100 * $answered / $total))
                }
            }
            Write-Progress -Activity $activity -Completed
        }
    }
    finally {
        if ($opened.Count) { $opened | Remove-PSSession -ErrorAction SilentlyContinue }
    }

    if ($fingerprints.Count -eq 0) {
        $why = if ($PSCmdlet.ParameterSetName -eq 'Fingerprint') { 'none was given' }
        elseif ($failedHosts.Count -ge $total) { "every host failed ($($failedHosts -join ', '))" }
        else { 'no host runs a domain' }
        $PSCmdlet.ThrowTerminatingError((New-ErrorRecord 'FleetPlacementNoFingerprints' ObjectNotFound "No fingerprints to place: $why." $null))
    }

    # A host that failed and sent no fingerprint is left out of the capacities: its domains were never seen, and it must
    # not take others as if it were empty.
    $capacity = $HostCapacity.Clone()
    $silent = @($failed | Where-Object { -not ($_.RunspaceId -and $sentBy[$_.RunspaceId]) })
    $leftOut = @(Get-FailedCapacityName $capacity $silent)
    foreach ($name in $leftOut) { $capacity.Remove($name) }
    if ($leftOut) {
        Write-Warning "Left out of -HostCapacity, as they sent no fingerprints (their domains are unknown): $($leftOut -join ', '). Nothing is placed on them."
    }
    if ($capacity.Count -eq 0) {
        $PSCmdlet.ThrowTerminatingError((New-ErrorRecord 'FleetPlacementNoHosts' InvalidArgument `
                    "No host to place on: every host of -HostCapacity failed ($($leftOut -join ', '))." $null))
    }

    # DomainDoesNotFit (a domain placed nowhere) and FingerprintInvalid pass through as they are; what stops
    # Get-DEPlacement stops the script.
    try {
        $placement = Get-DEPlacement -Fingerprint $fingerprints.ToArray() -HostCapacity $capacity -Goal $Goal
    }
    catch {
        $PSCmdlet.ThrowTerminatingError($_)
    }
    if (-not $placement) { return }

    if (-not $AsReport) {
        $placement
        return
    }
    $bytes = { param([long]$Value) [DifferenceEngine.Commands.DisplayFormat]::Bytes($Value) }
    $moves = @($placement.Assignments | Where-Object Moved)
    $report = @(
        "Placement ($($placement.Goal)) of $($placement.Assignments.Count) domains" +
        $(if ($total) { ", from $($total - $failedHosts.Count) of $total hosts" } else { '' })
        "  hosts used: $($placement.HostsUsed) (now $($placement.CurrentHostsUsed))"
        "  memory:     $(& $bytes $placement.PredictedUsedBytes) (now $(& $bytes $placement.CurrentPredictedUsedBytes)), saves $(& $bytes $placement.SavedBytes)"
        "  moves:      $($moves.Count)"
        if ($placement.Unplaced.Count) { "  unplaced:   $($placement.Unplaced -join ', ')" }
        if ($failedHosts.Count) { "  errors:     $($failedHosts -join ', ') (their domains are placed only as far as they sent fingerprints)" }
        if ($leftOut) { "  left out:   $($leftOut -join ', ') (failed, no fingerprints: not placed on)" }
        ''
        if ($moves) {
            ($moves | Sort-Object Domain | Format-Table Domain, TrustGroup, CurrentHostName, HostName,
                @{ Label = 'GuestBytes'; Expression = { & $bytes $_.GuestBytes }; Alignment = 'Right' } | Out-String -Width 120).Trim("`r", "`n")
            ''
        }
        ($placement.Hosts | Format-Table HostName, Domains,
            @{ Label = 'CapacityBytes'; Expression = { & $bytes $_.CapacityBytes }; Alignment = 'Right' },
            @{ Label = 'PredictedUsedBytes'; Expression = { & $bytes $_.PredictedUsedBytes }; Alignment = 'Right' },
            @{ Label = 'FreeBytes'; Expression = { & $bytes $_.FreeBytes }; Alignment = 'Right' } | Out-String -Width 120).Trim("`r", "`n")
    )
    $report | ForEach-Object { $_ -split '\r?\n' }
}
