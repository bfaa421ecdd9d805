@{
    # The binary module; the engine it drives (DifferenceEngine.Engine.dll) sits beside it.
    RootModule           = 'DifferenceEngine.Commands.dll'

    # Kept equal to <VersionPrefix> in Directory.Build.props: build.ps1 stamps it into out/.
    ModuleVersion        = '0.1.0'

    GUID                 = 'b2d1296d-9bf6-4b24-adfb-4c11d55ceb97'
    Author               = 'DifferenceEngine developers'
    Copyright            = '(c) DifferenceEngine developers.'
    Description          = 'Memory sharing, patching and compression for virtual machines after the Difference Engine paper: an embedded host for scripts and tests, the domains of a Xen hypervisor from dom0, and the same cmdlets for both.'

    CompatiblePSEditions = @('Core')
    PowerShellVersion    = '7.6'

    FormatsToProcess     = @('DifferenceEngine.format.ps1xml')
    TypesToProcess       = @('DifferenceEngine.types.ps1xml')

    # Listed by name, never by wildcard: PowerShell can then answer Get-Command without loading the dll.
    CmdletsToExport      = @(
        'Connect-DEHost'
        'Disconnect-DEHost'
        'Get-DEHost'
        'New-DEDomain'
        'Get-DEDomain'
        'Remove-DEDomain'
        'Read-DEGuestPage'
        'Write-DEGuestPage'
        'Invoke-DEWorkload'
        'Invoke-DEScan'
        'Enable-DESharing'
        'Disable-DESharing'
        'Enable-DEPatching'
        'Disable-DEPatching'
        'Enable-DECompression'
        'Disable-DECompression'
        'Get-DEPolicy'
        'Set-DEPolicy'
        'Get-DEPageStats'
        'Get-DEHostStats'
        'Get-DEPage'
        'Export-DEReport'
        'Start-DEEngine'
        'Stop-DEEngine'
        'Get-DEEngine'
    )
    FunctionsToExport    = @()
    VariablesToExport    = @()
    AliasesToExport      = @()

    PrivateData          = @{
        PSData = @{
            Tags = @('Xen', 'Memory', 'Deduplication', 'Compression', 'Virtualization', 'PSEdition_Core', 'Linux')
        }
    }
}
