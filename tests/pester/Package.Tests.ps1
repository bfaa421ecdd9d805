# The package that build.ps1 -Task Package publishes to out/repository (the Test task publishes it before the suite
# runs): installed with Install-PSResource as an admin would, into a module path of its own, it imports and works.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

Describe 'The package in out/repository' {
    BeforeAll {
        $repoRoot = (Resolve-Path -LiteralPath (Join-Path $PSScriptRoot '../..')).ProviderPath
        $repository = Join-Path $repoRoot 'out/repository'
        $version = (Import-PowerShellDataFile -LiteralPath (Join-Path $env:DE_MODULE_PATH 'DifferenceEngine.psd1')).ModuleVersion
        $nupkg = Join-Path $repository "DifferenceEngine.$version.nupkg"
        $pwsh = [Environment]::ProcessPath
        $pwshArgs = @(if ([IO.Path]::GetFileNameWithoutExtension($pwsh) -eq 'dotnet') { Join-Path $PSHOME 'pwsh.dll' })

        # A child pwsh whose home is a scratch folder (PSResourceGet keeps its repositories and installs CurrentUser
        # modules under ~/.local/share), and whose module path is PowerShell's own plus that home's: nothing of this
        # machine's modules, and nothing of the test left in the real home.
        $userHome = Join-Path $TestDrive 'home'
        $null = New-Item -ItemType Directory -Path $userHome
        $userModules = Join-Path $userHome '.local/share/powershell/Modules'
        function Invoke-Clean([string]$Script) {
            $path = Join-Path $TestDrive "step-$([guid]::NewGuid().ToString('n')).ps1"
            Set-Content -LiteralPath $path -Value ("`$ErrorActionPreference = 'Stop'`n" + $Script)
            $saved = @{ HOME = $env:HOME; XDG_DATA_HOME = $env:XDG_DATA_HOME; PSModulePath = $env:PSModulePath; DE_MODULE_PATH = $env:DE_MODULE_PATH }
            try {
                $env:HOME = $userHome
                $env:XDG_DATA_HOME = $null
                $env:PSModulePath = $userModules + [IO.Path]::PathSeparator + (Join-Path $PSHOME 'Modules')
                $env:DE_MODULE_PATH = $null
                $output = & $pwsh @pwshArgs -NoProfile -NonInteractive -File $path 2>&1
                [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = @($output | ForEach-Object { "$_" }) }
            }
            finally {
                foreach ($name in $saved.Keys) {
                    if ($null -eq $saved[$name]) { Remove-Item -LiteralPath "env:$name" -ErrorAction Ignore }
                    else { Set-Item -LiteralPath "env:$name" -Value $saved[$name] }
                }
            }
        }
    }

    It 'is a nupkg of this build''s version' {
        $nupkg | Should -Exist -Because 'build.ps1 -Task Package (run by -Task Test) publishes it'
    }

    It 'installs with Install-PSResource into the user''s module folder, and nowhere else' {
        $run = Invoke-Clean @"
Register-PSResourceRepository -Name DifferenceEngineLocal -Uri '$repository' -Trusted
Install-PSResource -Name DifferenceEngine -Version '$version' -Repository DifferenceEngineLocal -Scope CurrentUser
(Get-Module -ListAvailable DifferenceEngine).ModuleBase
"@
        $run.ExitCode | Should -Be 0 -Because ($run.Output -join "`n")
        $installed = Join-Path $userModules "DifferenceEngine/$version"
        $run.Output[-1] | Should -Be $installed
        Join-Path $installed 'DifferenceEngine.psd1' | Should -Exist
        Join-Path $installed 'LICENSE' | Should -Exist
        Join-Path $installed 'docs/REPORT-SCHEMA.md' | Should -Exist
        @(Get-ChildItem -LiteralPath $installed -Recurse -Filter '*.pdb') | Should -BeNullOrEmpty
        # The very module under test: the same engine, byte for byte.
        (Get-FileHash (Join-Path $installed 'DifferenceEngine.Engine.dll')).Hash |
            Should -Be (Get-FileHash (Join-Path $env:DE_MODULE_PATH 'DifferenceEngine.Engine.dll')).Hash
    }

    It 'imports by name from there and runs the Demo''s first steps' {
        $run = Invoke-Clean @'
Import-Module DifferenceEngine
"base $((Get-Module DifferenceEngine).ModuleBase)"
$cat = [Diagnostics.Process]::Start([Diagnostics.ProcessStartInfo]@{ FileName = 'cat'; UseShellExecute = $false; RedirectStandardInput = $true; RedirectStandardOutput = $true })
try {
    $cat.StandardInput.WriteLine('ready'); $cat.StandardInput.Flush()
    if ($cat.StandardOutput.ReadLine() -ne 'ready') { throw 'cat did not start' }
    Connect-DEHost -Name installed
    $d = New-DEDomain -Name cat -ProcessId $cat.Id
    "pages $($d.PageCount)"
}
finally { $cat.Kill(); $cat.WaitForExit() }
Get-DEDomain | Enable-DESharing
$scan = Invoke-DEScan -UntilStable
"stable $($scan.Stable)"
$s = Get-DEHostStats
"identity $($s.GuestBytes -eq $s.MemoryUsedBytes + $s.SavedBytes) $($s.GuestBytes)"
Disconnect-DEHost -Confirm:$false
'@
        $run.ExitCode | Should -Be 0 -Because ($run.Output -join "`n")
        $run.Output | Should -Contain "base $(Join-Path $userModules "DifferenceEngine/$version")"
        [long](($run.Output | Where-Object { $_ -like 'pages *' }) -replace 'pages ') | Should -BeGreaterThan 0
        $run.Output | Should -Contain 'stable True'
        ($run.Output | Where-Object { $_ -like 'identity *' }) | Should -Match '^identity True [1-9]\d*$'
    }
}
