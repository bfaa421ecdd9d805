# The module as build.ps1 lays it out in out/DifferenceEngine: manifest, files, exports.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the module folder.

Describe 'The built DifferenceEngine module' {
    BeforeAll {
        $moduleFolder = $env:DE_MODULE_PATH
        $manifestPath = Join-Path $moduleFolder 'DifferenceEngine.psd1'
        $manifest = Import-PowerShellDataFile -LiteralPath $manifestPath
        $expectedCmdlets = @(
            'Connect-DEHost', 'Disconnect-DEHost', 'Get-DEHost'
            'New-DEDomain', 'Get-DEDomain', 'Remove-DEDomain'
            'Read-DEGuestPage', 'Write-DEGuestPage'
            'Invoke-DEWorkload', 'Invoke-DEScan'
            'Enable-DESharing', 'Disable-DESharing'
            'Enable-DEPatching', 'Disable-DEPatching'
            'Enable-DECompression', 'Disable-DECompression'
            'Get-DEPolicy', 'Set-DEPolicy'
            'Get-DEPageStats', 'Get-DEHostStats', 'Get-DEPage'
            'Export-DEReport'
            'Start-DEEngine', 'Stop-DEEngine', 'Get-DEEngine'
        ) | Sort-Object
    }

    It 'has a manifest that Test-ModuleManifest accepts' {
        { Test-ModuleManifest -Path $manifestPath -ErrorAction Stop } | Should -Not -Throw
    }

    It 'lists exactly the expected cmdlets' {
        @($manifest.CmdletsToExport) | Sort-Object | Should -Be $expectedCmdlets
    }

    It 'uses no wildcard in <_>' -ForEach 'CmdletsToExport', 'FunctionsToExport', 'VariablesToExport', 'AliasesToExport' {
        $manifest.ContainsKey($_) | Should -BeTrue -Because 'an absent export list means export everything'
        @($manifest[$_]) | Where-Object { $_ -match '[*?\[]' } | Should -BeNullOrEmpty
    }

    It 'exports no <_>' -ForEach 'FunctionsToExport', 'VariablesToExport', 'AliasesToExport' {
        @($manifest[$_]) | Should -BeNullOrEmpty
    }

    It 'is for PowerShell 7.6 on the Core edition' {
        $manifest.CompatiblePSEditions | Should -Be @('Core')
        [version]$manifest.PowerShellVersion | Should -Be ([version]'7.6')
    }

    It 'carries the version in Directory.Build.props' {
        $props = [xml](Get-Content -LiteralPath (Join-Path $PSScriptRoot '../../Directory.Build.props') -Raw)
        $manifest.ModuleVersion | Should -Be $props.SelectSingleNode('/Project/PropertyGroup/VersionPrefix').InnerText.Trim()
    }

    It 'holds <_>' -ForEach @(
        'DifferenceEngine.Commands.dll'
        'DifferenceEngine.Engine.dll'
        'System.IO.Hashing.dll'
        'K4os.Compression.LZ4.dll'
        'ZstdSharp.dll'
        'DifferenceEngine.format.ps1xml'
        'DifferenceEngine.types.ps1xml'
    ) {
        Join-Path $moduleFolder $_ | Should -Exist
    }

    It 'leaves System.Management.Automation.dll to PowerShell' {
        Join-Path $moduleFolder 'System.Management.Automation.dll' | Should -Not -Exist
    }

    Context 'once imported' {
        BeforeAll {
            Import-Module $moduleFolder -Force -ErrorAction Stop
        }

        AfterAll {
            Remove-Module DifferenceEngine -ErrorAction Ignore
        }

        It 'exports exactly the expected cmdlets' {
            (Get-Command -Module DifferenceEngine -CommandType Cmdlet).Name | Sort-Object | Should -Be $expectedCmdlets
        }

        It 'exports nothing but cmdlets' {
            Get-Command -Module DifferenceEngine | Where-Object CommandType -NE 'Cmdlet' | Should -BeNullOrEmpty
        }
    }
}
