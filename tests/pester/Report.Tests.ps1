# Export-DEReport: each format checked against Get-DEPageStats, -WhatIf, the error ids, the file mode,
# domains from the pipeline; and the HTML report opened in headless Chromium, whose rendered page must
# show the numbers of Get-DEPageStats, with a screenshot kept in out/test-results/report.png.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $PageSize = 4096
    $CmdletId = 'DifferenceEngine.Commands.ExportDEReportCommand'
    # Written into guest pages; no report may contain it.
    $Marker = 'PESTER-REPORT-MARKER-51c7'
    $Numbers = 'PageCount', 'PrivatePages', 'ZeroPages', 'UniformPages', 'SharedPages', 'PatchedPages',
        'CompressedPages', 'SwappedPages', 'GuestBytes', 'BytesUsed', 'BytesSaved', 'SavingsPercent'

    function New-TestHostName { "pester-report-$([guid]::NewGuid().ToString('n').Substring(0, 8))" }

    function New-Page([Random]$Random) {
        $page = [byte[]]::new($PageSize)
        $Random.NextBytes($page)
        , $page
    }

    # A page of text repeated: compresses well, and shows up in a report if page bytes ever leak.
    function New-TextPage([string]$Text) {
        $line = $Text + ' '
        , [Text.Encoding]::ASCII.GetBytes(($line * [Math]::Ceiling($PageSize / $line.Length)).Substring(0, $PageSize))
    }

    # Per domain: pages the same in every domain (shared), pages like those of other domains but for a
    # few bytes (patched), text of its own (compressed once cold), one repeated word (uniform), random
    # pages of its own (private), the rest zero. $Scale multiplies every count.
    function Initialize-Domains([object[]]$Domains, [int]$Scale = 1) {
        $random = [Random]::new(20250601)
        $common = @(1..(30 * $Scale) | ForEach-Object { New-Page $random })
        $similar = @(1..(15 * $Scale) | ForEach-Object { New-Page $random })
        $uniform = [byte[]]::new($PageSize)
        for ($o = 0; $o -lt $PageSize; $o += 4) { [BitConverter]::GetBytes([uint32]0x3C0FFEE1).CopyTo($uniform, $o) }
        $n = 0
        foreach ($d in $Domains) {
            $gfn = 0
            foreach ($page in $common) { $null = $d.WritePage($gfn++, $page) }
            foreach ($page in $similar) {
                $copy = [byte[]]$page.Clone()
                for ($k = 0; $k -lt 24; $k++) { $copy[($n * 97 + $k * 131) % $PageSize] = [byte]($n + $k) }
                $null = $d.WritePage($gfn++, $copy)
            }
            for ($i = 0; $i -lt 15 * $Scale; $i++) {
                $null = $d.WritePage($gfn++, (New-TextPage "$Marker log line $i of $($d.Name): request served in $($i * 7) ms;"))
            }
            for ($i = 0; $i -lt 3 * $Scale; $i++) { $null = $d.WritePage($gfn++, $uniform) }
            for ($i = 0; $i -lt (10 + $n) * $Scale; $i++) { $null = $d.WritePage($gfn++, (New-Page $random)) }
            $n++
        }
    }

    # The cells of the domain table: "<domain>|<field>" -> data-value, names decoded as the browser would.
    function Get-ReportCells([string]$Html) {
        $cells = @{}
        $pattern = 'data-domain="([^"]*)" data-field="([^"]*)" data-value="([^"]*)"'
        foreach ($m in [regex]::Matches($Html, $pattern)) {
            $domain = [Net.WebUtility]::HtmlDecode($m.Groups[1].Value)
            $cells["$domain|$($m.Groups[2].Value)"] = [Net.WebUtility]::HtmlDecode($m.Groups[3].Value)
        }
        $cells
    }

    # Every number of Get-DEPageStats for every domain, as the report must show it.
    function Assert-CellsMatchPageStats([hashtable]$Cells, [object[]]$Stats) {
        foreach ($s in $Stats) {
            $Cells["$($s.Domain)|Domain"] | Should -Be $s.Domain
            foreach ($field in $Numbers) {
                [double]$Cells["$($s.Domain)|$field"] | Should -Be ([double]$s.$field) -Because "$($s.Domain) $field"
            }
        }
    }

    $deHost = Connect-DEHost -Name (New-TestHostName) -PassThru
    $domains = foreach ($name in 'web1', 'web2', 'db "main" <eu>, 1&2') {
        New-DEDomain -Name $name -MemorySize 512KB -EnableSharing
    }
    Initialize-Domains $domains
    $null = Invoke-DEScan -UntilStable
    $null = $deHost.RecordSample()
    $null = $deHost.RecordSample()
}

AfterAll {
    $deHost | Disconnect-DEHost -Confirm:$false
}

Describe 'Export-DEReport' {
    It 'writes a <Format> report chosen by the extension .<Extension>, and outputs nothing' -ForEach @(
        @{ Format = 'Html'; Extension = 'html'; Start = '<!DOCTYPE html>' }
        @{ Format = 'Html'; Extension = 'htm'; Start = '<!DOCTYPE html>' }
        @{ Format = 'Json'; Extension = 'json'; Start = '{' }
        @{ Format = 'Csv'; Extension = 'csv'; Start = 'Domain,DomainId,' }
    ) {
        $path = Join-Path $TestDrive "by-extension.$Extension"
        Export-DEReport -Path $path | Should -BeNullOrEmpty
        (Get-Content -LiteralPath $path -Raw).StartsWith($Start) | Should -BeTrue
    }

    It 'writes JSON whose domains equal Get-DEPageStats' {
        $path = Join-Path $TestDrive 'numbers.json'
        Export-DEReport -Path $path
        $json = Get-Content -LiteralPath $path -Raw | ConvertFrom-Json
        $json.schemaVersion | Should -Be 2
        $json.allDomains | Should -BeTrue
        $stats = @(Get-DEPageStats)
        @($json.domains).Count | Should -Be $stats.Count
        foreach ($s in $stats) {
            $row = $json.domains | Where-Object domain -EQ $s.Domain
            foreach ($field in $Numbers) {
                $row.($field.Substring(0, 1).ToLowerInvariant() + $field.Substring(1)) | Should -Be $s.$field -Because "$($s.Domain) $field"
            }
        }
        $json.host.savedBytes | Should -Be (Get-DEHostStats).SavedBytes
    }

    It 'writes CSV whose rows equal Get-DEPageStats' {
        $path = Join-Path $TestDrive 'numbers.csv'
        Export-DEReport -Path $path
        $rows = @(Import-Csv -LiteralPath $path)
        $stats = @(Get-DEPageStats)
        $rows.Count | Should -Be $stats.Count
        foreach ($s in $stats) {
            $row = $rows | Where-Object Domain -EQ $s.Domain
            $row | Should -Not -BeNullOrEmpty -Because "the name '$($s.Domain)' must survive CSV quoting"
            foreach ($field in $Numbers) { [double]$row.$field | Should -Be ([double]$s.$field) -Because "$($s.Domain) $field" }
            [bool]::Parse($row.SharingEnabled) | Should -Be $s.SharingEnabled
        }
    }

    It 'writes HTML whose domain cells equal Get-DEPageStats, every name escaped' {
        $path = Join-Path $TestDrive 'numbers.html'
        Export-DEReport -Path $path
        $html = Get-Content -LiteralPath $path -Raw
        $html | Should -Not -BeLike '*db "main" <eu>*'
        Assert-CellsMatchPageStats (Get-ReportCells $html) @(Get-DEPageStats)
    }

    It 'takes the format from -Format whatever the extension' {
        $path = Join-Path $TestDrive 'forced.txt'
        Export-DEReport -Path $path -Format Json
        (Get-Content -LiteralPath $path -Raw | ConvertFrom-Json).schemaVersion | Should -Be 2
    }

    It 'outputs the file with -PassThru' {
        $path = Join-Path $TestDrive 'passthru.json'
        $file = Export-DEReport -Path $path -PassThru
        $file | Should -BeOfType ([IO.FileInfo])
        $file.FullName | Should -Be $path
        $file.PSPath | Should -Not -BeNullOrEmpty
    }

    It 'resolves a relative path against the current location' {
        Push-Location -LiteralPath $TestDrive
        try {
            Export-DEReport -Path 'relative.csv'
        }
        finally {
            Pop-Location
        }
        Join-Path $TestDrive 'relative.csv' | Should -Exist
    }

    It 'writes nothing with -WhatIf' {
        $path = Join-Path $TestDrive 'whatif.html'
        Export-DEReport -Path $path -WhatIf
        $path | Should -Not -Exist
        @(Get-ChildItem -LiteralPath $TestDrive -Force -Filter '.whatif*') | Should -BeNullOrEmpty
    }

    It 'replaces an existing file as Export-Csv does, twice in a row' {
        $path = Join-Path $TestDrive 'exists.csv'
        Set-Content -LiteralPath $path -Value 'replace me'
        Export-DEReport -Path $path
        Export-DEReport -Path $path
        (Get-Content -LiteralPath $path -TotalCount 1) | Should -BeLike 'Domain,DomainId,*'
    }

    It 'refuses to replace a file with -NoClobber (ReportFileExists)' {
        $path = Join-Path $TestDrive 'keep.csv'
        Set-Content -LiteralPath $path -Value 'keep me'
        { Export-DEReport -Path $path -NoClobber } | Should -Throw -ErrorId "ReportFileExists,$CmdletId"
        $err = $null
        try { Export-DEReport -Path $path -NoClobber } catch { $err = $_ }
        $err.CategoryInfo.Category | Should -Be 'ResourceExists'
        $err.TargetObject | Should -Be $path
        (Get-Content -LiteralPath $path -Raw).Trim() | Should -Be 'keep me'
        Export-DEReport -Path (Join-Path $TestDrive 'new.csv') -NoClobber
        Join-Path $TestDrive 'new.csv' | Should -Exist
    }

    It 'replaces a read-only file only with -Force (ReportFileReadOnly)' -Skip:$IsWindows {
        $path = Join-Path $TestDrive 'readonly.csv'
        Set-Content -LiteralPath $path -Value 'read only'
        [IO.File]::SetUnixFileMode($path, [IO.UnixFileMode]'UserRead, GroupRead')
        { Export-DEReport -Path $path } | Should -Throw -ErrorId "ReportFileReadOnly,$CmdletId"
        (Get-Content -LiteralPath $path -Raw).Trim() | Should -Be 'read only'
        Export-DEReport -Path $path -Force
        (Get-Content -LiteralPath $path -TotalCount 1) | Should -BeLike 'Domain,DomainId,*'
    }

    It 'writes the host and the time on every CSV row' {
        $path = Join-Path $TestDrive 'hosttime.csv'
        $before = [DateTimeOffset]::Now
        Export-DEReport -Path $path
        $rows = @(Import-Csv -LiteralPath $path)
        $rows.Count | Should -BeGreaterThan 0
        foreach ($row in $rows) {
            $row.Host | Should -Be (Get-DEHost -Current).Name
            [DateTimeOffset]::Parse($row.Time, [cultureinfo]::InvariantCulture) | Should -BeGreaterOrEqual $before
        }
    }

    It 'refuses an unknown extension without -Format (ReportFormatUnknown)' {
        $path = Join-Path $TestDrive 'report.txt'
        { Export-DEReport -Path $path } | Should -Throw -ErrorId "ReportFormatUnknown,$CmdletId"
        $path | Should -Not -Exist
    }

    It 'refuses a folder as -Path, <Case> (ReportPathIsDirectory)' -ForEach @(
        @{ Case = 'one without an extension'; Name = 'somedir'; Format = $null }
        @{ Case = 'one named like a report'; Name = 'folder.json'; Format = $null }
        @{ Case = 'with -Format'; Name = 'somedir2'; Format = 'Csv' }
    ) {
        $path = Join-Path $TestDrive $Name
        $null = New-Item -ItemType Directory -Path $path -Force
        $arguments = if ($Format) { @{ Format = $Format } } else { @{} }
        $err = { Export-DEReport -Path $path @arguments } | Should -Throw -ErrorId "ReportPathIsDirectory,$CmdletId" -PassThru
        $err.CategoryInfo.Category | Should -Be 'InvalidArgument'
        $err.TargetObject | Should -Be $path
        @(Get-ChildItem -LiteralPath $path -Force) | Should -BeNullOrEmpty
    }

    It 'refuses a folder that does not exist (ReportDirectoryNotFound)' {
        $path = Join-Path $TestDrive 'no/such/folder/report.html'
        { Export-DEReport -Path $path } | Should -Throw -ErrorId "ReportDirectoryNotFound,$CmdletId"
        Join-Path $TestDrive 'no' | Should -Not -Exist
    }

    It 'creates the file readable by its owner only (0600)' -Skip:$IsWindows {
        foreach ($extension in 'html', 'json', 'csv') {
            $path = Join-Path $TestDrive "private.$extension"
            Export-DEReport -Path $path
            (Get-Item -LiteralPath $path).UnixFileMode | Should -Be ([IO.UnixFileMode]'UserRead, UserWrite')
        }
        # Also when it replaces a file that others could read.
        $path = Join-Path $TestDrive 'was-public.json'
        Set-Content -LiteralPath $path -Value '{}'
        [IO.File]::SetUnixFileMode($path, [IO.UnixFileMode]'UserRead, UserWrite, GroupRead, OtherRead')
        Export-DEReport -Path $path -Force
        (Get-Item -LiteralPath $path).UnixFileMode | Should -Be ([IO.UnixFileMode]'UserRead, UserWrite')
    }

    It 'reports only the domains from the pipeline' {
        $path = Join-Path $TestDrive 'web.csv'
        Get-DEDomain web* | Export-DEReport -Path $path
        @(Import-Csv -LiteralPath $path).Domain | Should -Be @('web1', 'web2')

        $json = Join-Path $TestDrive 'web.json'
        Get-DEDomain web2 | Export-DEReport -Path $json
        $report = Get-Content -LiteralPath $json -Raw | ConvertFrom-Json
        $report.allDomains | Should -BeFalse
        @($report.domains).domain | Should -Be @('web2')
        $report.host.domains | Should -Be 3
    }

    It 'writes no file when <Case> selects no domain (ReportNothingSelected), and leaves one already there as it was' -ForEach @(
        @{ Case = 'a pipeline'; Run = { param($Path) Get-DEDomain nothing-like-this* | Export-DEReport -Path $Path } }
        @{ Case = 'an empty pipeline with -Domain'; Run = { param($Path) @() | Export-DEReport -Path $Path -Domain nothing-like-this* } }
        @{ Case = 'a -Domain pattern'; Run = { param($Path) Export-DEReport -Path $Path -Domain nothing-like-this* } }
    ) {
        $path = Join-Path $TestDrive 'none.csv'
        Remove-Item -LiteralPath $path -ErrorAction Ignore
        $errs = @(& $Run $path 2>&1)
        $errs | Should -HaveCount 1 -Because 'a pattern that matches nothing is no error of its own; the report not written is one'
        $errs[0].FullyQualifiedErrorId | Should -Be "ReportNothingSelected,$CmdletId"
        $errs[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $errs[0].TargetObject | Should -Be $path
        $path | Should -Not -Exist
        Set-Content -LiteralPath $path -Value 'the report of yesterday'
        $null = & $Run $path 2>&1
        (Get-Content -LiteralPath $path -Raw).Trim() | Should -Be 'the report of yesterday'
    }

    It 'leaves an existing report as it was when no domain given is found (DomainNotFound, then ReportNothingSelected)' {
        $path = Join-Path $TestDrive 'keep.json'
        Export-DEReport -Path $path
        $before = [IO.File]::ReadAllBytes($path)
        Export-DEReport -Path $path -Domain wbe1, 'nosuch' -ErrorVariable errs -ErrorAction SilentlyContinue
        [IO.File]::ReadAllBytes($path) | Should -Be $before -Because 'a typo must not replace a good report with one of no domain'
        $errs.FullyQualifiedErrorId | Should -Be @("DomainNotFound,$CmdletId", "DomainNotFound,$CmdletId", "ReportNothingSelected,$CmdletId")
        { Export-DEReport -Path $path -Domain wbe1 -ErrorAction Stop } | Should -Throw -ErrorId "DomainNotFound,$CmdletId"
        [IO.File]::ReadAllBytes($path) | Should -Be $before
        # -WhatIf says nothing would be written: there is nothing to write.
        Export-DEReport -Path $path -Domain wbe1 -WhatIf -ErrorAction SilentlyContinue -ErrorVariable whatIfErrs
        $whatIfErrs.FullyQualifiedErrorId | Should -Be @("DomainNotFound,$CmdletId", "ReportNothingSelected,$CmdletId")
    }

    It 'writes HostNotFound for objects of a host no longer connected, and no report (of the current host or any other): <Case>' -ForEach @(
        @{ Case = 'page stats'; Take = { param($h) Get-DEPageStats -DEHost $h } }
        @{ Case = 'host stats'; Take = { param($h) Get-DEHostStats -DEHost $h } }
    ) {
        $gone = Connect-DEHost -Name (New-TestHostName) -PassThru
        try {
            $null = New-DEDomain -DEHost $gone -Name web1 -MemorySize 64KB
            $rows = & $Take $gone
        }
        finally {
            $gone | Disconnect-DEHost -Confirm:$false
        }
        (Get-DEHost -Current).Name | Should -Be $deHost.Name -Because 'the current host has a web1 the rows must not fall back on'
        $path = Join-Path $TestDrive 'gone.json'
        Set-Content -LiteralPath $path -Value 'keep me'
        $rows | Export-DEReport -Path $path -ErrorVariable errs -ErrorAction SilentlyContinue
        (Get-Content -LiteralPath $path -Raw).Trim() | Should -Be 'keep me' -Because 'no report of the current host, which the rows do not name'
        $errs.FullyQualifiedErrorId | Should -Be @("HostNotFound,$CmdletId", "ReportNothingSelected,$CmdletId")
        $errs[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $errs[0].TargetObject | Should -Be $gone.Name
        Remove-Item -LiteralPath $path
        $rows | Export-DEReport -Path $path -ErrorAction SilentlyContinue
        $path | Should -Not -Exist
    }

    It 'writes DomainNotFound for an unknown -Domain and reports the others' {
        $path = Join-Path $TestDrive 'some.csv'
        Export-DEReport -Path $path -Domain web1, nosuchdomain -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs.Count | Should -Be 1
        $errs[0].FullyQualifiedErrorId | Should -Be "DomainNotFound,$CmdletId"
        @(Import-Csv -LiteralPath $path).Domain | Should -Be @('web1')
    }

    It 'never writes page bytes: the marker in guest memory is in no <_> report' -ForEach 'html', 'json', 'csv' {
        $page = Read-DEGuestPage -Domain web1 -Gfn 45
        [Text.Encoding]::ASCII.GetString($page.Bytes) | Should -BeLike "*$Marker*" -Because 'the marker is in guest memory'
        $path = Join-Path $TestDrive "marker.$_"
        Export-DEReport -Path $path
        Get-Content -LiteralPath $path -Raw | Should -Not -BeLike "*$Marker*"
    }
}

Describe 'The HTML report in headless Chromium' {
    BeforeAll {
        $chromium = Get-Command -Name chromium, chromium-browser -CommandType Application -ErrorAction Ignore | Select-Object -First 1
        $repoRoot = (Resolve-Path -LiteralPath (Join-Path $PSScriptRoot '../..')).ProviderPath
        $artifacts = Join-Path $repoRoot 'out/test-results'
        $null = New-Item -ItemType Directory -Path $artifacts -Force

        # Runs chromium headless with the flags that keep it off the network and out of any profile.
        function Invoke-Chromium([string[]]$Arguments, [int]$TimeoutSeconds = 120) {
            $psi = [Diagnostics.ProcessStartInfo]::new($chromium.Source)
            $profileDir = Join-Path $TestDrive "chromium-profile-$([guid]::NewGuid().ToString('n'))"
            $null = New-Item -ItemType Directory -Path $profileDir
            foreach ($a in @('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                    '--disable-background-networking', '--disable-component-update', '--disable-sync',
                    "--user-data-dir=$profileDir") + $Arguments) {
                $psi.ArgumentList.Add($a)
            }
            $psi.UseShellExecute = $false
            $psi.RedirectStandardOutput = $true
            $psi.RedirectStandardError = $true
            $process = [Diagnostics.Process]::Start($psi)
            try {
                $stdout = $process.StandardOutput.ReadToEndAsync()
                $stderr = $process.StandardError.ReadToEndAsync()
                if (-not $process.WaitForExit($TimeoutSeconds * 1000)) {
                    $process.Kill($true)
                    throw "chromium did not finish within $TimeoutSeconds s. $($stderr.Result)"
                }
                $process.WaitForExit()
                [pscustomobject]@{ ExitCode = $process.ExitCode; Output = $stdout.Result; Error = $stderr.Result }
            }
            finally {
                $process.Dispose()
            }
        }

        # A host that looks like one: three tenants' domains with every mechanism on, the engine running
        # eighteen passes (history), and guest activity between them (faults of several kinds).
        $richHost = Connect-DEHost -Name (New-TestHostName) -PassThru
        $rich = @(
            New-DEDomain -DEHost $richHost -Name 'web1' -MemorySize 4MB -TrustGroup 'tenant-a' -EnableSharing -EnablePatching -EnableCompression
            New-DEDomain -DEHost $richHost -Name 'web2' -MemorySize 4MB -TrustGroup 'tenant-a' -EnableSharing -EnablePatching -EnableCompression
            New-DEDomain -DEHost $richHost -Name 'web3' -MemorySize 4MB -TrustGroup 'tenant-a' -EnableSharing -EnablePatching -EnableCompression
            New-DEDomain -DEHost $richHost -Name 'db1' -MemorySize 4MB -TrustGroup 'tenant-b' -EnableSharing -EnablePatching -EnableCompression -CompressionAlgorithm Zstd
            New-DEDomain -DEHost $richHost -Name 'cache <eu> & "hot"' -MemorySize 4MB -TrustGroup 'tenant-b' -EnableSharing
            New-DEDomain -DEHost $richHost -Name 'build' -MemorySize 4MB -TrustGroup 'tenant-c'
        )
        Initialize-Domains $rich -Scale 6
        $null = $richHost.StartEngine([TimeSpan]::FromMilliseconds(250))
        try {
            $null = Wait-DEEnginePass -DEHost $richHost -Count 6
            $null = Invoke-DEWorkload -DEHost $richHost -Domain web1, web2, db1 -Operations 4000 -WriteFraction 0.3 -Pattern Hotspot -Seed 7
            $null = Wait-DEEnginePass -DEHost $richHost -Count 12
            $null = Invoke-DEWorkload -DEHost $richHost -Domain web3, build -Operations 3000 -WriteFraction 0.5 -Seed 8
            $null = Wait-DEEnginePass -DEHost $richHost -Count 18
        }
        finally {
            $null = $richHost.StopEngine()
        }
        $reportPath = Join-Path $artifacts 'report.html'
        Export-DEReport -DEHost $richHost -Path $reportPath -Force
        $richStats = @(Get-DEPageStats -DEHost $richHost)
    }

    AfterAll {
        if ($richHost) { $richHost | Disconnect-DEHost -Confirm:$false }
    }

    It 'renders the report, and the rendered page shows the numbers of Get-DEPageStats' {
        if (-not $chromium) {
            Set-ItResult -Skipped -Because 'chromium is not installed (build.ps1 installs it when run as root: apt-packages.txt)'
            return
        }
        $run = Invoke-Chromium @('--dump-dom', [Uri]::new($reportPath).AbsoluteUri)
        $run.ExitCode | Should -Be 0 -Because $run.Error
        $dom = $run.Output
        $dom | Should -BeLike '*id="domain-table"*'
        $dom | Should -BeLike '*id="state-bars"*'
        $dom | Should -BeLike '*id="history-chart"*'
        $dom | Should -BeLike '*data-fault="CopyOnWrite"*'
        $cells = Get-ReportCells $dom
        Assert-CellsMatchPageStats $cells $richStats
        $cells.Keys | Should -Contain 'cache <eu> & "hot"|SharedPages' -Because 'the browser decodes the escaped name to the real one'
        ($richStats | Measure-Object PatchedPages -Sum).Sum | Should -BeGreaterThan 0 -Because 'the report shows every mechanism at work'
        ($richStats | Measure-Object CompressedPages -Sum).Sum | Should -BeGreaterThan 0
    }

    It 'shows, for the Demo''s report, tiles equal to the table''s totals, columns that add up, and used + saved = guest in its JSON' {
        if (-not $chromium) {
            Set-ItResult -Skipped -Because 'chromium is not installed (build.ps1 installs it when run as root: apt-packages.txt)'
            return
        }
        # The Demo as the README runs it, its report in the test output folder with a screenshot beside it.
        $demoHtml = Join-Path $artifacts 'demo/report.html'
        $demoJson = [IO.Path]::ChangeExtension($demoHtml, '.json')
        Remove-Item -LiteralPath $demoHtml, $demoJson -ErrorAction Ignore
        $pwsh = [Environment]::ProcessPath
        $pwshArgs = @(if ([IO.Path]::GetFileNameWithoutExtension($pwsh) -eq 'dotnet') { Join-Path $PSHOME 'pwsh.dll' })
        $output = & $pwsh @pwshArgs -NoProfile -NonInteractive -File (Join-Path $repoRoot 'examples/Demo.ps1') `
            -ModulePath $env:DE_MODULE_PATH -ReportPath $demoHtml 2>&1
        $LASTEXITCODE | Should -Be 0 -Because ($output -join "`n")

        # What Chromium renders: every td with its data-* attributes.
        $run = Invoke-Chromium @('--dump-dom', [Uri]::new($demoHtml).AbsoluteUri)
        $run.ExitCode | Should -Be 0 -Because $run.Error
        $cells = foreach ($td in [regex]::Matches($run.Output, '<(?:td|div)\s[^>]*data-value="[^"]*"[^>]*>')) {
            $attributes = @{}
            foreach ($a in [regex]::Matches($td.Value, '(data-[a-z-]+)="([^"]*)"')) { $attributes[$a.Groups[1].Value] = [Net.WebUtility]::HtmlDecode($a.Groups[2].Value) }
            [pscustomobject]$attributes
        }
        function Tile([string]$Field) { [long]($cells | Where-Object { $_.'data-field' -eq "summary.$Field" }).'data-value' }
        function Total([string]$Field) { [long]($cells | Where-Object { $_.'data-total' -eq $Field }).'data-value' }
        Tile GuestBytes | Should -Be (Total GuestBytes)
        Tile MemoryUsedBytes | Should -Be (Total BytesUsed)
        Tile SavedBytes | Should -Be (Total BytesSaved)
        (Tile GuestBytes) | Should -Be ((Tile MemoryUsedBytes) + (Tile SavedBytes))
        foreach ($field in 'GuestBytes', 'BytesUsed', 'BytesSaved') {
            $rows = @($cells | Where-Object { $_.'data-field' -eq $field -and ($_.'data-domain' -or $_.'data-part') })
            ($rows | ForEach-Object { [long]$_.'data-value' } | Measure-Object -Sum).Sum | Should -Be (Total $field) -Because "the $field column adds up"
        }
        @($cells | Where-Object 'data-part' -EQ 'Metadata').Count | Should -Be 2 -Because 'metadata has a line of its own'

        $json = Get-Content -LiteralPath $demoJson -Raw | ConvertFrom-Json
        [long]$json.host.guestBytes | Should -Be ([long]$json.host.memoryUsedBytes + [long]$json.host.savedBytes)
        [long]$json.summary.guestBytes | Should -Be ([long]$json.summary.memoryUsedBytes + [long]$json.summary.savedBytes)
        [long]$json.host.memoryUsedBytes | Should -Be ([long]$json.host.domainsUsedBytes + [long]$json.host.storeSlackBytes + [long]$json.host.metadataBytes + [long]$json.host.unchargedBytes)
        ($json.host.metadataParts.PSObject.Properties.Value | ForEach-Object { [long]$_ } | Measure-Object -Sum).Sum | Should -Be ([long]$json.host.metadataBytes) -Because 'the metadata is its parts'
        [long]$json.host.savedBytes | Should -Be (Tile SavedBytes) -Because 'the Demo writes both reports with the engine stopped'
        [long]$json.history[-1].savedBytes | Should -Be ([long]$json.host.savedBytes) -Because 'the history ends at the report'

        $png = Join-Path $artifacts 'demo/report.png'
        Remove-Item -LiteralPath $png -ErrorAction Ignore
        $shot = Invoke-Chromium @("--screenshot=$png", '--window-size=1280,1600', '--hide-scrollbars', [Uri]::new($demoHtml).AbsoluteUri)
        $shot.ExitCode | Should -Be 0 -Because $shot.Error
        [Convert]::ToHexString([IO.File]::ReadAllBytes($png), 0, 8) | Should -Be '89504E470D0A1A0A' -Because 'it is a PNG'
    }

    It 'keeps a screenshot of the report in out/test-results/report.png' {
        if (-not $chromium) {
            Set-ItResult -Skipped -Because 'chromium is not installed (build.ps1 installs it when run as root: apt-packages.txt)'
            return
        }
        $png = Join-Path $artifacts 'report.png'
        Remove-Item -LiteralPath $png -ErrorAction Ignore
        $run = Invoke-Chromium @("--screenshot=$png", '--window-size=1280,1600', '--hide-scrollbars', [Uri]::new($reportPath).AbsoluteUri)
        $run.ExitCode | Should -Be 0 -Because $run.Error
        $png | Should -Exist
        $bytes = [IO.File]::ReadAllBytes($png)
        [Convert]::ToHexString($bytes, 0, 8) | Should -Be '89504E470D0A1A0A' -Because 'it is a PNG'
        $bytes.Length | Should -BeGreaterThan 20KB -Because 'a blank page compresses to almost nothing'
    }
}
