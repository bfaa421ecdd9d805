# The fleet cmdlets over real PowerShell remoting: three sshd daemons of the test's own on 127.0.0.1 (SshHosts.ps1), each
# serving a "host" (an embedded DifferenceEngine host in the pwsh behind it) with domains of its own, loaded from memory
# images made here. Fingerprints are gathered from all three hosts in parallel over SSH (New-PSSession, Invoke-Command
# -Session), and placed here: what comes back deserialized is what Measure-DEColocation and Get-DEPlacement are fed.
# The daemons are stopped in AfterAll, whatever happened, and nothing of them may be left running.
# Without sshd (package openssh-server) or root every test is reported skipped, saying which.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    . (Join-Path $PSScriptRoot 'SshHosts.ps1')
    $skipReason = Test-DESshAvailable
    $modulePath = $env:DE_MODULE_PATH
    if ($skipReason) { return }

    # A raw memory image from pieces of files that are on every machine this runs on (the .NET runtime, PowerShell, sshd):
    # real code and data, the same bytes wherever two images take the same piece. A piece without File is zero pages.
    function New-TestImage([string]$Name, [object[]]$Pieces) {
        $path = Join-Path $TestDrive $Name
        $out = [IO.File]::Create($path)
        try {
            foreach ($piece in $Pieces) {
                $bytes = [byte[]]::new($piece.Length)
                if ($piece.File) {
                    $in = [IO.File]::OpenRead($piece.File)
                    try {
                        $in.Position = $piece.Offset
                        $in.ReadExactly($bytes, 0, $piece.Length)
                    }
                    finally {
                        $in.Dispose()
                    }
                }
                $out.Write($bytes, 0, $bytes.Length)
            }
        }
        finally {
            $out.Dispose()
        }
        $path
    }
    $coreLib = [object].Assembly.Location                                   # ~15 MiB
    $automation = [Management.Automation.PowerShell].Assembly.Location     # ~7 MiB
    $sshd = '/usr/sbin/sshd'                                               # ~1.2 MiB
    $ssh = (Get-Command ssh -CommandType Application | Select-Object -First 1).Source
    $images = @{
        # web1 and web2 share their first 3 MiB; web3 is web1's twin, on another host; db1 and db2 share 2 MiB.
        web1 = New-TestImage web1.img @(@{ File = $coreLib; Offset = 0; Length = 3MB }, @{ File = $automation; Offset = 0; Length = 2MB }, @{ Length = 1MB })
        web2 = New-TestImage web2.img @(@{ File = $coreLib; Offset = 0; Length = 3MB }, @{ File = $automation; Offset = 2MB; Length = 2MB }, @{ File = $ssh; Offset = 0; Length = 1MB })
        db1  = New-TestImage db1.img @(@{ File = $coreLib; Offset = 8MB; Length = 2MB }, @{ File = $sshd; Offset = 0; Length = 1MB }, @{ Length = 1MB })
        db2  = New-TestImage db2.img @(@{ File = $coreLib; Offset = 8MB; Length = 2MB }, @{ File = $automation; Offset = 4MB; Length = 2MB })
    }
    $images.web3 = Join-Path $TestDrive web3.img
    Copy-Item -LiteralPath $images.web1 -Destination $images.web3

    # Which host serves which domains (the current placement), and their trust groups.
    $plan = @{
        host1 = @(@{ Name = 'web1'; Path = $images.web1; TrustGroup = 'web' }, @{ Name = 'web2'; Path = $images.web2; TrustGroup = 'web' })
        host2 = @(@{ Name = 'db1'; Path = $images.db1; TrustGroup = 'db' })
        host3 = @(@{ Name = 'web3'; Path = $images.web3; TrustGroup = 'web' }, @{ Name = 'db2'; Path = $images.db2; TrustGroup = 'db' })
    }
    $allDomains = @($plan.Values | ForEach-Object { $_ } | ForEach-Object Name | Sort-Object)

    $sshHosts = @(Start-DETestSshHost -Count 3)
    # A set-up that fails says what the daemons and the remote pwsh processes saw (their logs go with the run directory).
    trap { Write-DETestSshLog -SshHost $sshHosts; break }
    $sessions = @(New-PSSession -SSHConnection $sshHosts.SSHConnection -ErrorAction Stop)
    # Which daemon each session went through, from the remote side: the server port sshd puts in SSH_CONNECTION.
    $hostOfSession = @{}
    foreach ($answer in Invoke-Command -Session $sessions -ThrottleLimit 3 -ErrorAction Stop -ScriptBlock {
            [pscustomobject]@{ Port = [int]($env:SSH_CONNECTION -split ' ')[3]; Pid = $PID }
        }) {
        $sshHost = $sshHosts | Where-Object Port -EQ $answer.Port
        $hostOfSession[$answer.RunspaceId] = [pscustomobject]@{ SshHost = $sshHost; RemotePid = $answer.Pid; Port = $answer.Port }
    }
    foreach ($session in $sessions) {
        $name = $hostOfSession[$session.InstanceId].SshHost.Name
        Invoke-Command -Session $session -ErrorAction Stop -ArgumentList $name -ScriptBlock { param($Name) $global:DETestHostName = $Name }
    }
    # Every host loads the module and its own domains, all at once: an embedded host named as the SSH host is.
    $null = Invoke-Command -Session $sessions -ThrottleLimit 3 -ErrorAction Stop -ScriptBlock {
        Import-Module $using:modulePath -ErrorAction Stop
        $null = Connect-DEHost -Name $global:DETestHostName -ErrorAction Stop
        foreach ($d in ($using:plan)[$global:DETestHostName]) {
            $null = New-DEDomain -Name $d.Name -Path $d.Path -Format Raw -TrustGroup $d.TrustGroup -ErrorAction Stop
        }
    }

    # The results of one Invoke-Command, by the name of the host whose session sent them.
    function Group-ByHost([object[]]$Result) {
        $byHost = @{}
        foreach ($r in $Result) {
            $name = $hostOfSession[$r.RunspaceId].SshHost.Name
            $byHost[$name] = @($byHost[$name]) + $r | Where-Object { $null -ne $_ }
        }
        $byHost
    }
}

AfterAll {
    try {
        # Every session to our daemons, also those of a New-PSSession that failed for another host (never assigned).
        if ($sshHosts) {
            Get-PSSession | Where-Object { $_.Transport -eq 'SSH' -and $_.Runspace.ConnectionInfo.Port -in $sshHosts.Port } |
                Remove-PSSession -ErrorAction Continue
        }
    }
    finally {
        # Throws when a process of the run is still there afterwards: a failure of this file. (A start that failed has
        # stopped what it started itself.)
        if ($sshHosts) { Stop-DETestSshHost -SshHost $sshHosts }
    }
}

Describe 'SSH hosts for the fleet tests' {
    It 'runs one sshd a host, each on its own port of 127.0.0.1, with a pwsh behind it for each session' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $sshHosts.Count | Should -Be 3
        @($sshHosts.Port | Select-Object -Unique).Count | Should -Be 3
        @($sshHosts.Pid | Select-Object -Unique).Count | Should -Be 3
        $sessions.Count | Should -Be 3
        $sessions.State | Should -Be 'Opened', 'Opened', 'Opened'
        $hostOfSession.Count | Should -Be 3
        @($hostOfSession.Values.SshHost.Name | Sort-Object) | Should -Be 'host1', 'host2', 'host3'
        foreach ($s in $hostOfSession.Values) {
            # The remote pwsh is a process of this machine, below that host's daemon (its per-connection sshd processes).
            (Get-DETestDescendant $s.SshHost.Pid).Pid | Should -Contain $s.RemotePid
            Get-Content -LiteralPath $s.SshHost.LogPath -Raw | Should -Match "Accepted publickey for root from 127\.0\.0\.1"
        }
        # The run's files are private to root.
        [IO.File]::GetUnixFileMode($sshHosts[0].RunDirectory) | Should -Be ([IO.UnixFileMode]'UserRead, UserWrite, UserExecute')
    }

    It 'gives every host its own embedded host and domains, named after it' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $answers = Invoke-Command -Session $sessions -ThrottleLimit 3 -ErrorAction Stop -ScriptBlock {
            [pscustomobject]@{
                Hosts   = @(Get-DEHost | ForEach-Object Name)
                Current = (Get-DEHost -Current).Name
                Stats   = @(Get-DEPageStats | Select-Object Domain, PageCount, GuestBytes, TrustGroup)
            }
        }
        $byHost = Group-ByHost $answers
        @($byHost.Keys | Sort-Object) | Should -Be 'host1', 'host2', 'host3'
        foreach ($name in $plan.Keys) {
            $answer = @($byHost[$name])
            $answer.Count | Should -Be 1
            $answer[0].Hosts | Should -Be @($name)
            $answer[0].Current | Should -Be $name
            $stats = @($answer[0].Stats | Sort-Object Domain)
            $expected = @($plan[$name] | Sort-Object Name)
            $stats.Domain | Should -Be $expected.Name
            foreach ($i in 0..($expected.Count - 1)) {
                $stats[$i].GuestBytes | Should -Be (Get-Item -LiteralPath $expected[$i].Path).Length
                $stats[$i].PageCount | Should -Be ((Get-Item -LiteralPath $expected[$i].Path).Length / 4096)
                $stats[$i].TrustGroup | Should -Be $expected[$i].TrustGroup
            }
        }
    }

    It 'opens the sessions of the hosts that answer, and writes one error for a host whose port refuses' {
        # Two of the hosts (each session is a pwsh to start) with the refusing one between them.
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $refusing = New-DETestRefusingPort
        $more = @()
        $standIn = $null
        try {
            # ssh to the refusing port is a stand-in that is refused after reading PowerShell's first packet; the other
            # hosts get the real ssh (Enable-DETestRefusingSsh says why: a race in PowerShell's SSH transport).
            $standIn = Enable-DETestRefusingSsh -Port $refusing.Port
            $bogus = $sshHosts[0].SSHConnection.Clone()
            $bogus.HostName = "root@127.0.0.1:$($refusing.Port)"
            $bogus.Options = $bogus.Options.Clone()
            $bogus.Options.LogLevel = 'QUIET' # as a real ssh would be told: its "Connection refused" line is only noise
            $answering = @($sshHosts[0], $sshHosts[2])
            $more = @(New-PSSession -SSHConnection $answering[0].SSHConnection, $bogus, $answering[1].SSHConnection -ErrorVariable err -ErrorAction SilentlyContinue)
            $err.Count | Should -Be 1
            # PowerShell's SSH transport reports the refused connection one of two ways, depending on whether it sees ssh
            # exit before or after it starts reading the (empty) reply: a transport error, or "a remote session might have
            # ended" (PSRemotingDataStructureException; seen on a loaded machine). Either way one OpenError for that host.
            $err[0].Exception.GetType().FullName | Should -BeIn @(
                'System.Management.Automation.Remoting.PSRemotingTransportException',
                'System.Management.Automation.Remoting.PSRemotingDataStructureException')
            $err[0].CategoryInfo.Category | Should -Be 'OpenError'
            # docs/FLEET.md's error loop names such a host by the runspace New-PSSession could not open.
            $err[0].OriginInfo | Should -BeNullOrEmpty
            $err[0].TargetObject.ConnectionInfo.ComputerName | Should -Be '127.0.0.1'
            $err[0].TargetObject.ConnectionInfo.Port | Should -Be $refusing.Port
            $more.Count | Should -Be 2
            $more.State | Should -Be 'Opened', 'Opened'
            $ports = Invoke-Command -Session $more -ErrorAction Stop -ScriptBlock { [int]($env:SSH_CONNECTION -split ' ')[3] }
            @($ports | Sort-Object) | Should -Be @($answering.Port | Sort-Object)
            Test-DETestSshRefused -StandIn $standIn -Port $refusing.Port | Should -BeTrue
        }
        finally {
            Disable-DETestRefusingSsh $standIn
            if ($more) { $more | Remove-PSSession }
            $refusing.Socket.Dispose()
        }
    }
}

Describe 'Fleet fingerprints gathered over SSH' {
    BeforeAll {
        if ($skipReason) { return }
        # One fleet key, made here and copied to every host (all of them this machine: a copy in each host's folder).
        $keyPath = Join-Path $TestDrive 'fleet.key'
        New-DEFleetKey -Path $keyPath
        $hostKeys = @{}
        foreach ($h in $sshHosts) {
            $hostKeys[$h.Name] = Join-Path $h.Dir 'fleet.key'
            Copy-Item -LiteralPath $keyPath -Destination $hostKeys[$h.Name]
        }
        $fingerprints = @(Invoke-Command -Session $sessions -ThrottleLimit 3 -ErrorAction Stop -ScriptBlock {
                Get-DEDomain | Get-DEFingerprint -FleetKeyPath ($using:hostKeys)[$global:DETestHostName]
            })
        $fingerprintsByHost = Group-ByHost $fingerprints

        # The same images, fingerprinted here, on a host of this process.
        $localHost = Connect-DEHost -Name "pester-fleet-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        foreach ($d in $plan.Values | ForEach-Object { $_ }) {
            $null = New-DEDomain -Name $d.Name -Path $d.Path -Format Raw -TrustGroup $d.TrustGroup -DEHost $localHost
        }
        $localFingerprints = @(Get-DEFingerprint -Name $allDomains -FleetKeyPath $keyPath)

        # What the model predicts for a set of domains on one host (none need nothing). Given in the order of their names:
        # the model takes the first of similar pages, in domain order, as the reference the others are patched against.
        function Measure-Used([object[]]$Fingerprint) {
            if (-not $Fingerprint) { return 0 }
            (Measure-DEColocation -Fingerprint @($Fingerprint | Sort-Object Domain)).PredictedUsedBytes
        }

        # Whether two predictions of the same set agree, when one was made with the domains in an order not known here:
        # the reference of similar pages may then differ, which changes the bytes of a patch, never more (1% of the set's
        # guest bytes; a prediction that double counts a shared page or leaves a domain out is off by far more).
        function Assert-SamePrediction([long]$Actual, [long]$Expected, [long]$GuestBytes, [string]$Because) {
            [Math]::Abs($Actual - $Expected) | Should -BeLessOrEqual ([long]($GuestBytes / 100)) -Because "$Because ($Actual predicted, $Expected measured)"
        }

        # Checks a placement of all the fingerprints on host1..3 with these capacities.
        function Assert-Placement($Placement, [hashtable]$Capacity) {
            $Placement.Assignments.Count | Should -Be $allDomains.Count
            @($Placement.Assignments.Domain | Sort-Object) | Should -Be $allDomains
            # Hosts lists every host a domain is placed on (hosts left empty may be listed too), each once.
            foreach ($a in $Placement.Assignments) { $Placement.Hosts.HostName | Should -Contain $a.HostName }
            foreach ($h in $Placement.Hosts) { $Capacity.Keys | Should -Contain $h.HostName }
            @($Placement.Hosts.HostName | Select-Object -Unique).Count | Should -Be @($Placement.Hosts).Count
            $total = 0
            foreach ($h in $Placement.Hosts) {
                $h.CapacityBytes | Should -Be $Capacity[$h.HostName]
                $h.PredictedUsedBytes | Should -BeLessOrEqual $h.CapacityBytes
                $placed = @($fingerprints | Where-Object Domain -In @($Placement.Assignments | Where-Object HostName -EQ $h.HostName | ForEach-Object Domain))
                Assert-SamePrediction $h.PredictedUsedBytes (Measure-Used $placed) ($placed | Measure-Object GuestBytes -Sum).Sum `
                    "$($h.HostName)'s prediction is the model's for the domains placed there"
                $total += $h.PredictedUsedBytes
            }
            $Placement.PredictedUsedBytes | Should -Be $total
            $Placement.HostsUsed | Should -Be @($Placement.Assignments.HostName | Select-Object -Unique).Count
            $Placement.CurrentHostsUsed | Should -Be 3
            $current = 0
            foreach ($name in $plan.Keys) { $current += Measure-Used $fingerprintsByHost[$name] }
            Assert-SamePrediction $Placement.CurrentPredictedUsedBytes $current ($fingerprints | Measure-Object GuestBytes -Sum).Sum `
                "the current prediction is the model's for the domains where they are"
        }
    }

    AfterAll {
        if ($localHost) { $localHost | Disconnect-DEHost -Confirm:$false }
    }

    It 'gets a fingerprint of every domain from every host, named after the host that made it' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        @($fingerprintsByHost.Keys | Sort-Object) | Should -Be 'host1', 'host2', 'host3'
        foreach ($name in $plan.Keys) {
            $fps = @($fingerprintsByHost[$name] | Sort-Object Domain)
            $fps.Domain | Should -Be @($plan[$name].Name | Sort-Object)
            foreach ($fp in $fps) {
                $fp.PSObject.TypeNames | Should -Contain 'Deserialized.DifferenceEngine.Fleet.DomainFingerprint'
                $fp.HostName | Should -Be $name
                $fp.TrustGroup | Should -Be ($plan[$name] | Where-Object Name -EQ $fp.Domain).TrustGroup
                $fp.GuestBytes | Should -Be (Get-Item -LiteralPath $images[$fp.Domain]).Length
                $fp.PageCount | Should -Be ($fp.GuestBytes / 4096)
                $fp.Sketch | Should -Not -BeNullOrEmpty
            }
        }
        # One key for the fleet; the twins on two hosts have one sketch, other domains others.
        @($fingerprints.KeyId | Select-Object -Unique).Count | Should -Be 1
        ($fingerprints | Where-Object Domain -EQ web3).Sketch | Should -Be ($fingerprints | Where-Object Domain -EQ web1).Sketch
        @($fingerprints.Sketch | Select-Object -Unique).Count | Should -Be ($allDomains.Count - 1)
    }

    It 'gets the same fingerprint over SSH as for the same image here' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $localFingerprints.Count | Should -Be $allDomains.Count
        foreach ($remote in $fingerprints) {
            $local = $localFingerprints | Where-Object Domain -EQ $remote.Domain
            $local.HostName | Should -Be $localHost.Name
            $remote.KeyId | Should -Be $local.KeyId
            $remote.PageCount | Should -Be $local.PageCount
            $remote.GuestBytes | Should -Be $local.GuestBytes
            $remote.TrustGroup | Should -Be $local.TrustGroup
            $remote.Sketch | Should -Be $local.Sketch -Because "the fingerprint of $($remote.Domain) does not depend on the host"
        }
    }

    It 'measures the colocation of fingerprints that came over SSH as of those made here' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        # In one order (by name): the arrival order of the remote ones is whichever host answered first.
        $remote = Measure-DEColocation -Fingerprint @($fingerprints | Sort-Object Domain)
        $local = Measure-DEColocation -Fingerprint @($localFingerprints | Sort-Object Domain)
        $remote.GuestBytes | Should -Be (($allDomains | ForEach-Object { (Get-Item -LiteralPath $images[$_]).Length } | Measure-Object -Sum).Sum)
        $remote.GuestBytes | Should -Be ($remote.PredictedUsedBytes + $remote.PredictedSavedBytes)
        $remote.PredictedUsedBytes | Should -BeGreaterThan 0
        $remote.PredictedUsedBytes | Should -Be $local.PredictedUsedBytes
        $remote.PredictedSavedBytes | Should -Be $local.PredictedSavedBytes
        # web3, web1's twin from another host, has every page in common with it: with sharing alone they need what web1
        # needs alone and the second copy's page tables; with every mechanism less than the two apart. (Not more than
        # web1 alone, necessarily: shared pages are compressed one page at a time with Zstd, which can beat LZ4 and
        # groups; the embedded host does use less for these twins than for web1 alone.)
        $twins = Measure-DEColocation -Fingerprint @($fingerprints | Where-Object Domain -In web1, web3 | Sort-Object Domain)
        $alone = Measure-DEColocation -Fingerprint @($fingerprints | Where-Object Domain -EQ web1)
        $twins.GuestBytes | Should -Be (2 * $alone.GuestBytes)
        $twins.UsedWithSharingBytes | Should -BeGreaterOrEqual $alone.UsedWithSharingBytes
        $twins.UsedWithSharingBytes | Should -BeLessThan (1.1 * $alone.UsedWithSharingBytes)
        $twins.PredictedUsedBytes | Should -BeLessThan (2 * $alone.PredictedUsedBytes)
    }

    It 'places every domain once, within room enough for all on one host, using less memory than now' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $capacity = @{ host1 = 64MB; host2 = 64MB; host3 = 64MB }
        $placement = Get-DEPlacement -Fingerprint $fingerprints -HostCapacity $capacity
        Assert-Placement $placement $capacity
        # web3 is web1's twin on another host now: any placement that puts them together beats the current one.
        $placement.PredictedUsedBytes | Should -BeLessThan $placement.CurrentPredictedUsedBytes
        $placement.HostsUsed | Should -BeLessOrEqual $placement.CurrentHostsUsed
    }

    It 'places every domain once, within capacities too small to hold them all on one host' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        # Room for the most any host needs now, rounded up to pages: the current placement fits, all on one host does not.
        $most = ($plan.Keys | ForEach-Object { Measure-Used $fingerprintsByHost[$_] } | Measure-Object -Maximum).Maximum
        $room = [long]([Math]::Ceiling($most / 4096) * 4096)
        (Measure-Used $fingerprints) | Should -BeGreaterThan $room -Because 'this test needs capacities that cannot hold every domain at once'
        $capacity = @{ host1 = $room; host2 = $room; host3 = $room }
        $placement = Get-DEPlacement -Fingerprint $fingerprints -HostCapacity $capacity
        Assert-Placement $placement $capacity
        $placement.HostsUsed | Should -BeGreaterOrEqual 2
    }

    It 'returns a placement made on a host with its assignments and hosts as objects (SerializationDepth 2)' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $session = $sessions | Where-Object { $hostOfSession[$_.InstanceId].SshHost.Name -eq 'host1' }
        $remote = Invoke-Command -Session $session -ErrorAction Stop -ScriptBlock {
            Get-DEDomain | Get-DEFingerprint -FleetKeyPath ($using:hostKeys)[$global:DETestHostName] |
                Get-DEPlacement -HostCapacity @{ host1 = 64MB; other = 64MB }
        }
        $remote.PSObject.TypeNames | Should -Contain 'Deserialized.DifferenceEngine.Fleet.PlacementResult'
        @($remote.Assignments).Count | Should -Be $plan.host1.Count
        foreach ($a in $remote.Assignments) {
            $a.PSObject.TypeNames | Should -Contain 'Deserialized.DifferenceEngine.Fleet.PlacementAssignment'
            $a.Domain | Should -BeIn $plan.host1.Name
            $a.CurrentHostName | Should -Be 'host1'
            $a.HostName | Should -BeIn 'host1', 'other'
        }
        @($remote.Hosts).Count | Should -Be 2
        foreach ($h in $remote.Hosts) {
            $h.PSObject.TypeNames | Should -Contain 'Deserialized.DifferenceEngine.Fleet.PlacementHostResult'
            $h.CapacityBytes | Should -Be 64MB
        }
    }

    It 'gets the fingerprints of the other hosts, and one error naming its session, when the script of one host throws' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $failing = $sessions | Where-Object { $hostOfSession[$_.InstanceId].SshHost.Name -eq 'host2' }
        $result = @(Invoke-Command -Session $sessions -ThrottleLimit 3 -ErrorVariable err -ErrorAction SilentlyContinue -ScriptBlock {
                if ($global:DETestHostName -eq 'host2') { throw "host2 fails on purpose" }
                Get-DEDomain | Get-DEFingerprint -FleetKeyPath ($using:hostKeys)[$global:DETestHostName]
            })
        $err.Count | Should -Be 1
        $err[0].OriginInfo.RunspaceID | Should -Be $failing.InstanceId
        # docs/FLEET.md's error loop names the host of an Invoke-Command error by its OriginInfo (its TargetObject is no name).
        $err[0].OriginInfo.PSComputerName | Should -Be $failing.ComputerName
        $err[0].TargetObject | Should -Not -Be $failing.ComputerName
        $err[0].Exception.Message | Should -BeLike '*host2 fails on purpose*'
        $byHost = Group-ByHost $result
        @($byHost.Keys | Sort-Object) | Should -Be 'host1', 'host3'
        @($result.Domain | Sort-Object) | Should -Be @(@($plan.host1.Name) + @($plan.host3.Name) | Sort-Object)
        foreach ($fp in $result) { $fp.Sketch | Should -Be ($fingerprints | Where-Object Domain -EQ $fp.Domain).Sketch }
        # The failed script leaves its session open: the host answers the next call.
        (Invoke-Command -Session $failing -ErrorAction Stop -ScriptBlock { @(Get-DEDomain).Count }) | Should -Be $plan.host2.Count
    }

    It 'places with examples/Get-FleetPlacement.ps1 over the sessions: every domain of the hosts that answer once, one error naming the host that fails' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $script = Join-Path $PSScriptRoot '../../examples/Get-FleetPlacement.ps1'
        # One relative -FleetKeyPath for all, resolved in each session's current folder: host1's and host3's folders hold
        # the key; host2's is a copy others can read, which Get-DEFingerprint refuses (FleetKeyFileInsecure).
        $insecure = Join-Path $TestDrive 'insecure-key'
        $null = New-Item -ItemType Directory -Path $insecure -Force
        Copy-Item -LiteralPath $keyPath -Destination (Join-Path $insecure 'fleet.key')
        [IO.File]::SetUnixFileMode((Join-Path $insecure 'fleet.key'), [IO.UnixFileMode]'UserRead, UserWrite, GroupRead, OtherRead')
        $failingHost = $sshHosts | Where-Object Name -EQ 'host2'
        foreach ($session in $sessions) {
            $name = $hostOfSession[$session.InstanceId].SshHost.Name
            $folder = if ($name -eq 'host2') { $insecure } else { Split-Path -Parent $hostKeys[$name] }
            Invoke-Command -Session $session -ErrorAction Stop -ArgumentList $folder -ScriptBlock { param($Folder) Push-Location -LiteralPath $Folder }
        }
        $capacity = @{ host1 = 64MB; host2 = 64MB; host3 = 64MB }
        try {
            $placement = & $script -Session $sessions -FleetKeyPath fleet.key -HostCapacity $capacity -ThrottleLimit 3 -ErrorVariable err -ErrorAction SilentlyContinue
            # A host that fails without a fingerprint is left out of -HostCapacity as well, matched by the name its session
            # was connected to (127.0.0.1 here, host2's ComputerName; in a fleet, the host's own name): its domains were
            # never seen, so nothing goes on it. Here it is the largest host, where everything would have gone.
            $report = & $script -Session $sessions -FleetKeyPath fleet.key -HostCapacity ($capacity + @{ '127.0.0.1' = 256MB }) -ThrottleLimit 3 -AsReport `
                -ErrorAction SilentlyContinue -WarningVariable leftOut -WarningAction SilentlyContinue
        }
        finally {
            Invoke-Command -Session $sessions -ErrorAction Stop -ScriptBlock { Pop-Location }
        }
        # One error, for host2, named by its session's address; nothing else leaks out of the script.
        @($err).Count | Should -Be 1
        $err[0].TargetObject | Should -Be "127.0.0.1:$($failingHost.Port)"
        $err[0].FullyQualifiedErrorId | Should -BeLike 'FleetKeyFileInsecure,*'
        "$($err[0])" | Should -BeLike "Host 127.0.0.1:$($failingHost.Port): *can be read or written by others*"
        # Every domain of host1 and host3 placed once, on the hosts given; host2's are not in the placement.
        $answered = @(@($plan.host1.Name) + @($plan.host3.Name) | Sort-Object)
        $placement.PSObject.TypeNames | Should -Contain 'DifferenceEngine.Fleet.PlacementResult'
        @($placement.Assignments.Domain | Sort-Object) | Should -Be $answered
        $placement.Unplaced | Should -BeNullOrEmpty
        foreach ($a in $placement.Assignments) {
            $capacity.Keys | Should -Contain $a.HostName
            $a.CurrentHostName | Should -BeIn 'host1', 'host3'
        }
        $placement.CurrentHostsUsed | Should -Be 2
        # What Get-DEPlacement makes of the same hosts' fingerprints, gathered above: the script only gathers and places.
        $direct = Get-DEPlacement -Fingerprint @($fingerprints | Where-Object Domain -In $answered) -HostCapacity $capacity
        $placement.PredictedUsedBytes | Should -Be $direct.PredictedUsedBytes
        $placement.HostsUsed | Should -Be $direct.HostsUsed
        @($leftOut).Count | Should -Be 1
        "$($leftOut[0])" | Should -BeLike '*sent no fingerprints*: 127.0.0.1.*'
        $report | Should -Contain '  left out:   127.0.0.1 (failed, no fingerprints: not placed on)'
        @($report | Where-Object { $_ -match '^127\.0\.0\.1\s' }) | Should -BeNullOrEmpty -Because 'the host left out is not in the table of hosts'
        @($report | Where-Object { $_ -match '^host1\s' }) | Should -HaveCount 1
        # The sessions are the caller's: left open, and host2 answers the next call.
        $sessions.State | Should -Be 'Opened', 'Opened', 'Opened'
        (Invoke-Command -Session ($sessions | Where-Object { $hostOfSession[$_.InstanceId].SshHost.Name -eq 'host2' }) -ErrorAction Stop -ScriptBlock { @(Get-DEDomain).Count }) |
            Should -Be $plan.host2.Count
    }
}

Describe 'Stopping the SSH hosts' {
    It 'stops every sshd it started and every pwsh they served, and removes their files' {
        if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
        $run = $sshHosts[0].RunDirectory
        $remotePids = @($hostOfSession.Values.RemotePid)
        $sessions | Remove-PSSession
        Stop-DETestSshHost -SshHost $sshHosts
        Get-DETestSshProcess -RunDirectory $run | Should -BeNullOrEmpty
        foreach ($h in $sshHosts) {
            $h.Process.HasExited | Should -BeTrue
            Test-DETestSshBanner $h.Port | Should -BeFalse
        }
        foreach ($p in $remotePids) {
            Get-DETestProcessTable | Where-Object { $_.Pid -eq $p -and $_.State -ne 'Z' } | Should -BeNullOrEmpty
        }
        Test-Path -LiteralPath $run | Should -BeFalse
    }
}
