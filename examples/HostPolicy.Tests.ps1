#Requires -Modules DifferenceEngine

<#
.SYNOPSIS
    A Pester test of a host's DifferenceEngine policy: adapt the rules to your site and run it after
    every change, or nightly next to the report.

.DESCRIPTION
    Checks, on a connected host:
      - every domain of the tenant -Tenant is in a trust group of its own (no other domain shares it):
        for a tenant that trusts nobody, not even its own other VMs, with sharing's side channel;
      - no trust group holds domains of two tenants (a domain's tenant is the part of its name before
        the first '-': change Get-Tenant below if your names say it differently);
      - sharing is on for the domains that -SharingExpected names;
      - the host saves at least -MinimumSavingsPercent of guest memory;
      - no domain is out of memory.
    The host is an embedded one living in the same process, so run this test there: in the session
    (or script) that connected the host, with Invoke-Pester as in the examples.

.PARAMETER HostName
    The host to check; the current host by default.

.PARAMETER Tenant
    The tenant whose domains must each be alone in their trust group.

.PARAMETER SharingExpected
    Domain name patterns (wildcards) that must have sharing on.

.PARAMETER MinimumSavingsPercent
    The least share of guest memory the host must save.

.EXAMPLE
    $container = New-PesterContainer -Path ./HostPolicy.Tests.ps1 -Data @{ Tenant = 'bank'; MinimumSavingsPercent = 20 }
    Invoke-Pester -Container $container -Output Detailed

.EXAMPLE
    # In CI: fail the job when the policy drifts, with results for the build server.
    $config = New-PesterConfiguration
    $config.Run.Container = New-PesterContainer -Path ./HostPolicy.Tests.ps1 -Data @{ HostName = 'prod-7'; SharingExpected = 'web*', 'app*' }
    $config.Run.Exit = $true
    $config.TestResult.Enabled = $true
    Invoke-Pester -Configuration $config
#>
param(
    [string]$HostName,

    [string]$Tenant = 'secure',

    [string[]]$SharingExpected = @('*'),

    [ValidateRange(0, 100)]
    [double]$MinimumSavingsPercent = 10
)

BeforeDiscovery {
    $sharingRules = @($SharingExpected | ForEach-Object { @{ Pattern = $_ } })
}

BeforeAll {
    Set-StrictMode -Version Latest
    $target = if ($HostName) { Get-DEHost -Name $HostName -ErrorAction Stop } else { Get-DEHost -Current }
    if (-not $target) {
        throw 'No DifferenceEngine host is connected: connect one (Connect-DEHost) before running this test.'
    }
    $policies = @(Get-DEPolicy -DEHost $target)
    $stats = @(Get-DEPageStats -DEHost $target)

    # The tenant a domain belongs to, from its name: "bank-web1" belongs to "bank".
    function Get-Tenant([string]$DomainName) { ($DomainName -split '-', 2)[0] }
}

Describe "DifferenceEngine policy of host $(if ($HostName) { $HostName } else { '(current)' })" {
    It 'has domains' {
        $policies.Count | Should -BeGreaterThan 0 -Because 'an empty host checks nothing'
    }

    It "keeps each domain of tenant '$Tenant' alone in its trust group" {
        $tenantDomains = @($policies | Where-Object { (Get-Tenant $_.Domain) -eq $Tenant })
        foreach ($d in $tenantDomains) {
            $others = @($policies | Where-Object { $_.TrustGroup -eq $d.TrustGroup -and $_.Domain -ne $d.Domain })
            ($others | ForEach-Object Domain) -join ', ' |
                Should -BeNullOrEmpty -Because "$($d.Domain) may share pages with nobody (trust group '$($d.TrustGroup)')"
        }
    }

    It 'never puts two tenants in one trust group' {
        foreach ($group in $policies | Group-Object TrustGroup) {
            $tenants = @($group.Group | ForEach-Object { Get-Tenant $_.Domain } | Sort-Object -Unique)
            $tenants.Count | Should -Be 1 -Because "trust group '$($group.Name)' would let $($tenants -join ' and ') read each other's memory through sharing's timing side channel"
        }
    }

    It 'has sharing on for <Pattern>' -ForEach $sharingRules {
        $matching = @($policies | Where-Object Domain -Like $Pattern)
        foreach ($d in $matching) {
            $d.SharingEnabled | Should -BeTrue -Because "$($d.Domain) matches '$Pattern'"
        }
    }

    It "saves at least $MinimumSavingsPercent% of guest memory" {
        (Get-DEHostStats -DEHost $target).SavingsPercent | Should -BeGreaterOrEqual $MinimumSavingsPercent
    }

    It 'has no domain out of memory' {
        ($stats | Where-Object Status -EQ 'OutOfMemory' | ForEach-Object Domain) -join ', ' | Should -BeNullOrEmpty
    }
}
