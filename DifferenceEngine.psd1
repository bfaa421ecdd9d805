@{
    # The binary module; the engine it drives (DifferenceEngine.Engine.dll) sits beside it.
    RootModule           = 'DifferenceEngine.Commands.dll'

    # Kept equal to <VersionPrefix> in Directory.Build.props: build.ps1 stamps it into out/.
    ModuleVersion        = '0.1.0'

    GUID                 = 'b2d1296d-9bf6-4b24-adfb-4c11d55ceb97'
    Author               = 'The DifferenceEngine authors'
    Copyright            = '(c) 2026 The DifferenceEngine authors. MIT License (LICENSE in the module folder).'
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
        'Start-DEGuest'
        'New-DEFleetKey'
        'Get-DEFingerprint'
        'Measure-DEColocation'
        'Get-DEPlacement'
    )
    FunctionsToExport    = @()
    VariablesToExport    = @()
    AliasesToExport      = @()

    PrivateData          = @{
        PSData = @{
            Tags = @('Xen', 'Memory', 'Deduplication', 'Compression', 'Virtualization', 'PSEdition_Core', 'Linux')
            # The project has no public home yet: no ProjectUri, LicenseUri, IconUri or HelpInfoUri rather than empty
            # or made-up ones. The license and the docs are in the module folder (LICENSE, docs/).
            ReleaseNotes = @'
0.1.0
- The embedded host: guest memory from raw images, ELF cores and live processes; whole-page sharing,
  zero and one-word pages, sub-page patching, compression (LZ4, Zstd, WKdm) steered by page aging,
  paging to a swap file under a memory limit; a background engine; reports in HTML, JSON and CSV with
  figures that add up to the byte (docs/REPORT-SCHEMA.md).
- Page groups: long-cold compressed pages compressed again together (Zstd by default), a fault decoding only as far
  as its page.
- Xen (dom0): the same cmdlets over Xen's memory sharing and paging, where Xen is built with them.
- Live QEMU/KVM guests (Start-DEGuest, New-DEDomain -QemuSocket): the engine as their pager through libdeqemu.so and
  userfaultfd, every mechanism, with a crash journal (docs/QEMU.md). Not yet: writes into a guest from the engine.
- The fleet: fingerprints, co-location predictions and placement over PowerShell remoting (docs/FLEET.md).
'@
        }
    }
}
