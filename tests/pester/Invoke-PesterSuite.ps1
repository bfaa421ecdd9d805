<#
.SYNOPSIS
    Runs the Pester suite against a built DifferenceEngine module.

.DESCRIPTION
    Imports the Pester version pinned in Directory.Packages.props from the NuGet global packages
    folder (restoring tests/pester/PesterRestore.csproj first if it is not there), points
    $env:DE_MODULE_PATH at the module so test files can `Import-Module $env:DE_MODULE_PATH`,
    runs the tests and writes NUnit XML results.

    Run it in its own pwsh process (build.ps1 does): the binary module then loads there and
    leaves the calling session free to rebuild out/.

    The exit code is the number of failed tests plus failed BeforeAll/AfterAll blocks plus
    failed test files (as Pester's own Run.Exit counts them), at most 255; 0 when all pass.

.PARAMETER ModulePath
    The built module folder (out/DifferenceEngine) or its manifest. $env:DE_MODULE_PATH is set
    to the folder.

.PARAMETER ResultPath
    Where to write the NUnit XML results.

.PARAMETER Path
    Test files or folders to run; by default every *.Tests.ps1 under tests/pester.

.EXAMPLE
    dotnet pwsh -NoProfile -File tests/pester/Invoke-PesterSuite.ps1 -ModulePath out/DifferenceEngine -ResultPath out/test-results/pester.xml
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)]
    [string]$ModulePath,

    [Parameter(Mandatory)]
    [string]$ResultPath,

    [string[]]$Path = @($PSScriptRoot)
)

# Stop on errors while setting up; the tests themselves run with the default preference.
$ErrorActionPreference = 'Stop'

$repoRoot = (Resolve-Path -LiteralPath (Join-Path $PSScriptRoot '../..')).ProviderPath
$restoreProject = Join-Path $PSScriptRoot 'PesterRestore.csproj'

function Get-PesterVersion {
    $propsPath = Join-Path $repoRoot 'Directory.Packages.props'
    $props = [xml](Get-Content -LiteralPath $propsPath -Raw)
    $node = $props.SelectSingleNode("/Project/ItemGroup/PackageVersion[@Include='Pester']")
    if ($null -eq $node) {
        throw "No <PackageVersion Include=""Pester""> in $propsPath."
    }
    return $node.GetAttribute('Version')
}

function Get-GlobalPackagesFolder {
    # Honours NUGET_PACKAGES and NuGet.config, which a hard-coded ~/.nuget/packages would not.
    $lines = & dotnet nuget locals global-packages --list
    if ($LASTEXITCODE -ne 0) {
        throw "dotnet nuget locals global-packages --list exited with $LASTEXITCODE."
    }
    foreach ($line in $lines) {
        if ($line -match '^\s*global-packages:\s*(.+?)\s*$') {
            return $Matches[1]
        }
    }
    throw "Could not read the global packages folder from: $lines"
}

$pesterVersion = Get-PesterVersion
$pesterManifest = Join-Path (Get-GlobalPackagesFolder) "pester/$pesterVersion/tools/Pester.psd1"
if (-not (Test-Path -LiteralPath $pesterManifest)) {
    Write-Host "Pester $pesterVersion not in the package cache; restoring $restoreProject"
    & dotnet restore $restoreProject --nologo | Out-Host
    if ($LASTEXITCODE -ne 0) {
        throw "dotnet restore $restoreProject exited with $LASTEXITCODE."
    }
    if (-not (Test-Path -LiteralPath $pesterManifest)) {
        throw "Restoring $restoreProject did not produce $pesterManifest."
    }
}
Import-Module -Name $pesterManifest -Force

$module = (Resolve-Path -LiteralPath $ModulePath).ProviderPath
$moduleFolder = if (Test-Path -LiteralPath $module -PathType Leaf) { Split-Path -Parent $module } else { $module }
$env:DE_MODULE_PATH = $moduleFolder
# Also importable by name, e.g. from #Requires -Modules DifferenceEngine.
$env:PSModulePath = (Split-Path -Parent $moduleFolder) + [IO.Path]::PathSeparator + $env:PSModulePath

$resultFile = [IO.Path]::GetFullPath($ResultPath, (Get-Location).ProviderPath)
$null = New-Item -ItemType Directory -Path (Split-Path -Parent $resultFile) -Force

$configuration = [PesterConfiguration]::Default
$configuration.Run.Path = $Path
$configuration.Run.PassThru = $true
$configuration.Run.Exit = $false
$configuration.Output.Verbosity = 'Detailed'
if ([Console]::IsOutputRedirected) {
    # Logs (CI) get plain text, not colour escapes.
    $PSStyle.OutputRendering = 'PlainText'
    $configuration.Output.RenderMode = 'Plaintext'
}
$configuration.TestResult.Enabled = $true
$configuration.TestResult.OutputFormat = 'NUnitXml'
$configuration.TestResult.OutputPath = $resultFile

Write-Host "Pester $pesterVersion, module $moduleFolder"
$ErrorActionPreference = 'Continue'
$result = Invoke-Pester -Configuration $configuration
if ($null -eq $result) {
    Write-Error 'Invoke-Pester returned no result.' -ErrorAction Continue
    exit 1
}

$failed = $result.FailedCount + $result.FailedBlocksCount + $result.FailedContainersCount
exit [Math]::Min($failed, 255)
