# What every exported cmdlet owes its users: help with a real synopsis, a description, every parameter described
# and at least two examples; -WhatIf and -Confirm on every cmdlet that changes something; tab completion of names.
# Run through Invoke-PesterSuite.ps1, which sets $env:DE_MODULE_PATH to the built module folder.

BeforeDiscovery {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    $commands = @(Get-Command -Module DifferenceEngine -CommandType Cmdlet | Sort-Object Name | ForEach-Object { @{ Name = $_.Name; Verb = $_.Verb } })
    $changing = @($commands | Where-Object { $_.Verb -notin 'Get', 'Read', 'Measure' })
    $reading = @($commands | Where-Object { $_.Verb -in 'Get', 'Read', 'Measure' })
}

BeforeAll {
    Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
    # Common parameters need no entry of their own; -WhatIf and -Confirm have the standard one.
    $commonParameters = [System.Management.Automation.PSCmdlet]::CommonParameters + [System.Management.Automation.PSCmdlet]::OptionalCommonParameters
    # A parameter hidden from the syntax and from completion in every parameter set (DontShow).
    function Test-Hidden([System.Management.Automation.ParameterMetadata] $Parameter) {
        $sets = @($Parameter.Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] })
        $sets.Count -gt 0 -and @($sets | Where-Object { -not $_.DontShow }).Count -eq 0
    }
}

Describe 'Help for <Name>' -ForEach $commands {
    BeforeAll {
        $help = Get-Help -Name $Name -Full
        $command = Get-Command -Name $Name
    }

    It 'comes from the module''s help file' {
        $help.ModuleName | Should -Be 'DifferenceEngine'
        $help.PSObject.TypeNames | Should -Contain 'MamlCommandHelpInfo'
    }

    It 'has a synopsis of its own, not the generated syntax line' {
        $synopsis = "$($help.Synopsis)".Trim()
        $synopsis | Should -Not -BeNullOrEmpty
        $synopsis | Should -Not -BeLike "$Name*"
        $synopsis | Should -Not -Match '<CommonParameters>|\[-\w+'
        $synopsis.Length | Should -BeGreaterThan 30
    }

    It 'has a description' {
        $text = ($help.description | ForEach-Object Text) -join ' '
        $text.Trim().Length | Should -BeGreaterThan 100
    }

    It 'has at least two examples, each with code and remarks' {
        $examples = @($help.examples.example)
        $examples.Count | Should -BeGreaterOrEqual 2
        foreach ($example in $examples) {
            $example.code | Should -Not -BeNullOrEmpty
            $example.code | Should -Match $Name -Because 'an example shows the cmdlet it documents'
            (($example.remarks | ForEach-Object Text) -join ' ').Trim() | Should -Not -BeNullOrEmpty
        }
    }

    It 'describes every parameter it shows' {
        # Hidden parameters (DontShow: not in the syntax, not completed) are left out; the next test names them.
        $shown = $command.Parameters.Values | Where-Object { $_.Name -notin $commonParameters -and -not (Test-Hidden $_) }
        $undescribed = foreach ($parameter in $shown.Name) {
            $entry = Get-Help -Name $Name -Parameter $parameter -ErrorAction SilentlyContinue
            $text = (@($entry.description) | ForEach-Object Text) -join ' '
            if ([string]::IsNullOrWhiteSpace($text)) { $parameter }
        }
        $undescribed | Should -BeNullOrEmpty
    }

    It 'hides only InputHost, the Host property of piped objects, which about_DifferenceEngine explains' {
        @($command.Parameters.Values | Where-Object { Test-Hidden $_ }).Name | Where-Object { $_ -ne 'InputHost' } | Should -BeNullOrEmpty
        if ($command.Parameters.ContainsKey('InputHost')) {
            Test-Hidden $command.Parameters.InputHost | Should -BeTrue
            $command.Parameters.InputHost.Aliases | Should -Be @('Host')
        }
        Get-Help about_DifferenceEngine | Out-String | Should -Match 'PIPED OBJECTS AND THEIR HOST'
    }

    It 'describes no parameter the cmdlet does not have' {
        $documented = @($help.parameters.parameter.name)
        $documented | Where-Object { $_ -notin $command.Parameters.Keys } | Should -BeNullOrEmpty
    }

    It 'shows one syntax per parameter set' {
        @($help.syntax.syntaxItem).Count | Should -Be $command.ParameterSets.Count
    }

    It 'names its inputs and outputs' {
        @($help.inputTypes.inputType).Count | Should -BeGreaterThan 0
        @($help.returnValues.returnValue).Count | Should -BeGreaterThan 0
    }
}

Describe 'Get-Help' {
    It 'shows the examples of Enable-DESharing' {
        $text = Get-Help Enable-DESharing -Examples | Out-String -Width 120
        $text | Should -Match 'Example 1'
        $text | Should -Match 'Example 2'
        $text | Should -Match 'Enable-DESharing -Domain'
    }

    It 'shows the full help of Enable-DESharing with its parameters' {
        $text = Get-Help Enable-DESharing -Full | Out-String -Width 120
        $text | Should -Match '-Domain <DomainSelector\[\]>'
        $text | Should -Match 'Accept pipeline input\?\s+True \(ByPropertyName, ByValue\)'
        $text | Should -Match 'RELATED LINKS'
    }

    It 'lists the codecs in the syntax of Set-DEPolicy' {
        Get-Help Set-DEPolicy | Out-String -Width 200 | Should -Match '-CompressionAlgorithm \{LZ4 \| WKdm \| Zstd\}'
    }

    It 'has about_DifferenceEngine, with paging, the engine and the side channel' {
        $text = Get-Help about_DifferenceEngine | Out-String
        foreach ($section in 'PAGE STATES', 'PAGING AND OVERCOMMIT', 'WATERMARKS', 'THE SWAP FILE', 'THE BACKGROUND ENGINE',
            'REPORTS', 'TRUST GROUPS AND THE SIDE CHANNEL') {
            $text | Should -Match $section
        }
        $text | Should -Match 'Swapped\s+paged out'
    }
}

Describe '<Name> honours -WhatIf and -Confirm' -ForEach $changing {
    It 'supports ShouldProcess' {
        $parameters = (Get-Command -Name $Name).Parameters
        $parameters.ContainsKey('WhatIf') | Should -BeTrue
        $parameters.ContainsKey('Confirm') | Should -BeTrue
    }
}

Describe 'Cmdlets that destroy ask first (ConfirmImpact High, as Remove-VM does)' {
    BeforeDiscovery {
        $destroying = @(
            @{ Name = 'Remove-DEDomain'; Impact = 'High' }
            @{ Name = 'Disconnect-DEHost'; Impact = 'High' }
        )
    }

    It '<Name> declares ConfirmImpact <Impact>' -ForEach $destroying {
        $type = (Get-Command -Name $Name).ImplementingType
        $attribute = $type.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0]
        $attribute.ConfirmImpact | Should -Be $Impact
    }

    It 'every other cmdlet that changes something asks only when told to (ConfirmImpact below High)' {
        $others = Get-Command -Module DifferenceEngine -CommandType Cmdlet |
            Where-Object { $_.Verb -notin 'Get', 'Read', 'Measure' -and $_.Name -notin 'Remove-DEDomain', 'Disconnect-DEHost' }
        foreach ($command in $others) {
            $attribute = $command.ImplementingType.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0]
            $attribute.ConfirmImpact | Should -BeLessThan ([System.Management.Automation.ConfirmImpact]::High) -Because $command.Name
        }
    }

    It '<Name> asks under the default $ConfirmPreference, and without an answer changes nothing' -ForEach @(
        @{ Name = 'Remove-DEDomain'; Call = { param($h) Remove-DEDomain -DEHost $h -Name victim } }
        @{ Name = 'Disconnect-DEHost'; Call = { param($h) Disconnect-DEHost -DEHost $h } }
    ) {
        # A runspace whose host cannot prompt: a cmdlet that asks fails there instead of acting.
        $ps = [powershell]::Create()
        try {
            $null = $ps.AddCommand('Import-Module').AddParameter('Name', $env:DE_MODULE_PATH).AddStatement()
            $null = $ps.AddScript('$h = Connect-DEHost -Name "asks-$([guid]::NewGuid().ToString(''n''))" -PassThru; ' +
                '$null = New-DEDomain -DEHost $h -Name victim -MemorySize 1MB; $h').AddStatement()
            $deHost = $ps.Invoke()[0]
            $ps.Commands.Clear()
            $ps.Streams.Error.Clear()
            $ConfirmPreference | Should -Be 'High'
            $null = $ps.AddScript($Call.ToString()).AddArgument($deHost)
            $failure = try { $null = $ps.Invoke(); @($ps.Streams.Error)[0] } catch { $_ }
            $failure.Exception | Should -BeOfType ([System.Management.Automation.Host.HostException])
            $failure.Exception.Message | Should -BeLike '*prompts the user*request confirmation*'
            # Nothing happened: the domain is there and the host connected.
            $ps.Commands.Clear()
            $null = $ps.AddScript('param($h) (Get-DEDomain -DEHost $h -Name victim).Name; $h.IsConnected').AddArgument($deHost)
            $state = $ps.Invoke()
            $state[0] | Should -Be 'victim'
            $state[1] | Should -BeTrue
            $ps.Commands.Clear()
            $null = $ps.AddScript('param($h) Disconnect-DEHost -DEHost $h -Confirm:$false').AddArgument($deHost)
            $null = $ps.Invoke()
        }
        finally {
            $ps.Dispose()
        }
    }
}

Describe '<Name> changes nothing, so asks nothing' -ForEach $reading {
    It 'has no -WhatIf' {
        (Get-Command -Name $Name).Parameters.ContainsKey('WhatIf') | Should -BeFalse
    }
}

Describe 'Every -Domain takes several domains' {
    BeforeDiscovery {
        $withDomain = @(Get-Command -Module DifferenceEngine -CommandType Cmdlet |
                Where-Object { $_.Parameters.ContainsKey('Domain') } | Sort-Object Name | ForEach-Object { @{ Name = $_.Name } })
    }

    It '<Name> -Domain is an array of domain selectors' -ForEach $withDomain {
        (Get-Command -Name $Name).Parameters['Domain'].ParameterType | Should -Be ([DifferenceEngine.Commands.DomainSelector[]])
    }

    It 'Get-DEPage, Read-DEGuestPage and Write-DEGuestPage take two names' {
        $h = Connect-DEHost -Name "several-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        try {
            $null = New-DEDomain -DEHost $h -Name one -MemorySize 8KB
            $null = New-DEDomain -DEHost $h -Name two -MemorySize 8KB
            Write-DEGuestPage -DEHost $h -Domain one, two -Gfn 1 -Offset 0 -Data ([byte[]](7, 8, 9))
            $pages = @(Get-DEPage -DEHost $h -Domain one, two)
            $pages.Count | Should -Be 4
            ($pages | Group-Object Domain).Name | Should -Be @('one', 'two')
            $read = @(Read-DEGuestPage -DEHost $h -Domain one, two -Gfn 1)
            $read.Count | Should -Be 2
            foreach ($page in $read) { $page.Bytes[0..2] | Should -Be @(7, 8, 9) }
        }
        finally {
            $h | Disconnect-DEHost -Confirm:$false
        }
    }
}

Describe 'Tab completion' {
    BeforeAll {
        $deHost = Connect-DEHost -Name "pester-conventions-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        $null = New-DEDomain -Name 'tab-one' -MemorySize 64KB
        $null = New-DEDomain -Name 'tab-two' -MemorySize 64KB

        function Get-Completion([string]$Line) {
            (TabExpansion2 -inputScript $Line -cursorColumn $Line.Length).CompletionMatches.CompletionText
        }
    }

    AfterAll {
        $deHost | Disconnect-DEHost -Confirm:$false
    }

    It 'offers domain names to -Domain of <_>' -ForEach @(
        'Enable-DESharing', 'Disable-DEPatching', 'Enable-DECompression', 'Set-DEPolicy', 'Get-DEPolicy',
        'Get-DEPageStats', 'Get-DEPage', 'Invoke-DEScan', 'Invoke-DEWorkload', 'Read-DEGuestPage'
    ) {
        Get-Completion "$_ -Domain tab-" | Should -Be @('tab-one', 'tab-two')
    }

    It 'offers domain names to -Name of Get-DEDomain and Remove-DEDomain' {
        Get-Completion 'Get-DEDomain -Name tab-t' | Should -Be 'tab-two'
        Get-Completion 'Remove-DEDomain -Name tab-o' | Should -Be 'tab-one'
    }

    # The codec parameters are of the enum type CompressionAlgorithm (nullable where "not given" matters):
    # PowerShell completes enum values by itself, so no completer of ours is needed. This test keeps it so.
    It 'offers the codec names to <_>' -ForEach @(
        'Enable-DECompression -Domain x -Algorithm '
        'Set-DEPolicy -Domain x -CompressionAlgorithm '
        'New-DEDomain -Name x -MemorySize 1MB -CompressionAlgorithm '
    ) {
        Get-Completion $_ | Should -Be @('LZ4', 'WKdm', 'Zstd')
    }

    It 'offers the codec names that start with what is typed' {
        Get-Completion 'Set-DEPolicy -Domain x -CompressionAlgorithm W' | Should -Be 'WKdm'
    }

    It 'offers the page states and categories to Get-DEPage' {
        Get-Completion 'Get-DEPage -Domain x -State Sw' | Should -Be 'Swapped'
        Get-Completion 'Get-DEPage -Domain x -Category C' | Should -Be @('C1', 'C2', 'C3', 'C4')
    }
}

Describe 'Enums are names in JSON' {
    BeforeAll {
        $deHost = Connect-DEHost -Name "pester-json-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        $null = New-DEDomain -Name json1 -MemorySize 16KB
    }

    AfterAll {
        $deHost | Disconnect-DEHost -Confirm:$false
    }

    It 'writes every public enum of the module by name in ConvertTo-Json' {
        $enums = @([DifferenceEngine.Hosting.DEHost].Assembly, [DifferenceEngine.Commands.DECmdlet].Assembly |
            ForEach-Object { $_.GetExportedTypes() } | Where-Object IsEnum)
        $enums.Count | Should -BeGreaterThan 8
        foreach ($type in $enums) {
            $value = [Enum]::GetValues($type)[-1]
            ConvertTo-Json -InputObject $value -Compress | Should -Be "`"$value`"" -Because "$($type.FullName) is written by name"
        }
    }

    It 'writes the states of pages, of faults and of the engine by name' {
        $written = Write-DEGuestPage -Domain json1 -Gfn 1 -Data ([byte[]](7)) -PassThru -Confirm:$false | ConvertTo-Json -Compress
        $written | Should -Match '"Fault":"[A-Za-z]+"'
        Get-DEPage -Domain json1 -Gfn 1 | ConvertTo-Json -Compress | Should -Match '"State":"Private",.*"Category":"[A-Za-z][A-Za-z0-9]*"'
        Get-DEEngine | ConvertTo-Json -Compress | Should -Match '"State":"Stopped"'
    }
}

Describe 'Table headers are property names' {
    BeforeDiscovery {
        Import-Module $env:DE_MODULE_PATH -ErrorAction Stop
        # Every column of every table view of the module, with the type it shows and what fills it.
        $columns = foreach ($data in Get-FormatData -TypeName 'DifferenceEngine.*' -PowerShellVersion $PSVersionTable.PSVersion) {
            foreach ($view in $data.FormatViewDefinition | Where-Object { $_.Control -is [System.Management.Automation.TableControl] }) {
                $headers = $view.Control.Headers
                $items = $view.Control.Rows[0].Columns
                for ($i = 0; $i -lt $headers.Count; $i++) {
                    @{ Type = $data.TypeNames[0]; View = $view.Name; Label = $headers[$i].Label
                       Kind = "$($items[$i].DisplayEntry.ValueType)"; Value = $items[$i].DisplayEntry.Value }
                }
            }
        }
    }

    It 'finds the table views' -ForEach @(@{ Found = @($columns).Count }) {
        # The views of domains, page stats, pages, scans, hosts and policies at least.
        $Found | Should -BeGreaterThan 60
    }

    It '<View>: <Label> is a property of <Type>, and the column shows it' -ForEach $columns {
        $type = $Type -as [type]
        $type | Should -Not -BeNullOrEmpty -Because "$Type is loaded with the module"
        $names = @($type.GetProperties().Name) + @((Get-TypeData -TypeName $Type).Members.Keys) +
            @($type.GetInterfaces() | ForEach-Object { (Get-TypeData -TypeName $_.FullName).Members.Keys })
        $names | Should -Contain $Label -Because 'Sort-Object, Where-Object and Select-Object take the name the header shows'
        if ($Kind -eq 'Property') { $Value | Should -BeExactly $Label }
        else { $Value | Should -Match ('\$_\.' + [regex]::Escape($Label) + '\b') -Because 'the column shows the property it is named after' }
    }

    It 'shows Get-DEPolicy with the names Set-DEPolicy and Import-Csv use' {
        $deHost = Connect-DEHost -Name "pester-hdr-$([guid]::NewGuid().ToString('n').Substring(0, 8))" -PassThru
        try {
            $null = New-DEDomain -Name hdr1 -MemorySize 16KB
            $table = Get-DEPolicy -Domain hdr1 | Format-Table | Out-String -Width 200
            $table | Should -Match 'PatchThreshold\s+CompressionThreshold\s+C4Sweeps'
            $table | Should -Not -Match 'PatchMax|Codec'
        }
        finally {
            $deHost | Disconnect-DEHost -Confirm:$false
        }
    }
}
