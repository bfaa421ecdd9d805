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
            'Start-DEGuest'
            'New-DEFleetKey', 'Get-DEFingerprint', 'Measure-DEColocation', 'Get-DEPlacement'
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

    It 'ships its license, the MIT license, and no .pdb file (symbols are embedded in the dlls)' {
        Join-Path $moduleFolder 'LICENSE' | Should -Exist
        Get-Content -LiteralPath (Join-Path $moduleFolder 'LICENSE') -TotalCount 1 | Should -Be 'MIT License'
        @(Get-ChildItem -LiteralPath $moduleFolder -Recurse -File -Filter '*.pdb') | Should -BeNullOrEmpty
    }

    It 'ships every docs/NAME.md that its help, its about page and its messages name' {
        # Help files as text; the dlls' string literals (UTF-16 in the metadata) for messages and error texts.
        $texts = @(Get-ChildItem -LiteralPath (Join-Path $moduleFolder 'en-US') -File | ForEach-Object { Get-Content -LiteralPath $_.FullName -Raw })
        foreach ($dll in Get-ChildItem -LiteralPath $moduleFolder -Filter 'DifferenceEngine.*.dll') {
            $bytes = [IO.File]::ReadAllBytes($dll.FullName)
            $texts += [Text.Encoding]::Unicode.GetString($bytes)
            $texts += [Text.Encoding]::Unicode.GetString($bytes, 1, $bytes.Length - 1)
        }
        $named = @($texts | ForEach-Object { [regex]::Matches($_, 'docs/([A-Z][A-Z0-9-]*\.md)') } | ForEach-Object { $_.Groups[1].Value } | Sort-Object -Unique)
        $named | Should -Contain 'REPORT-SCHEMA.md' -Because 'Export-DEReport''s help names it'
        $named | Should -Contain 'XEN.md'
        foreach ($doc in $named) { Join-Path $moduleFolder "docs/$doc" | Should -Exist -Because "help or a message names docs/$doc" }
    }

    It 'has release notes, and no link that is empty or leads nowhere' {
        $data = $manifest.PrivateData.PSData
        "$($data.ReleaseNotes)".Trim() | Should -Match '^\d+\.\d+\.\d+\r?\n'
        foreach ($key in 'ProjectUri', 'LicenseUri', 'IconUri') {
            $data.Keys | Should -Not -Contain $key -Because 'the project has no public home yet: no link rather than an empty or invented one'
        }
        $manifest.Keys | Should -Not -Contain 'HelpInfoURI'
        Import-Module $moduleFolder -Force
        $withUri = @(Get-Command -Module DifferenceEngine | Where-Object { $_.HelpUri })
        $withUri.Name | Should -BeNullOrEmpty -Because 'Get-Help -Online would open a page that does not exist'
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
