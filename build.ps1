<#
.SYNOPSIS
    Builds, tests, demonstrates and packages the DifferenceEngine module.

.DESCRIPTION
    The one entry point for the repository. Tasks run in the order given and the script stops on
    the first error, except that the Test task always runs both test runners and then reports.

      Build    Publish cmdlets/ (and engine/ through it) and lay out the importable module in
               out/DifferenceEngine: the manifest stamped with <VersionPrefix> from
               Directory.Build.props, our dlls and their runtime dependencies (minus the ones
               PowerShell itself ships), module/*.ps1xml, and about_ help from
               module/ and module/en-US into out/DifferenceEngine/en-US. native/ is built with
               make first (needs gcc, make, libxen-dev): libdeqemu.so and the Xen shim libdexen.so go into the
               module under runtimes/linux-<arch>/native; the fake Xen and the shim's C tests
               stay in out/native/fake for the Test task. Without those packages native/ is
               skipped with one line: only Xen hosts need the shim.
      Test     Build, Package and Guests, then the xunit tests (tests/DifferenceEngine.Tests) and the Pester suite
               (tests/pester, run in a child pwsh against out/DifferenceEngine). Results go to
               out/test-results (xunit.trx, pester.xml). The last line printed is exactly
               "<N> passed, <N> failed, <N> skipped"; the exit code is 1 if anything failed or a runner did
               not run.
      Demo     Build, then run examples/Demo.ps1 in a child pwsh with the built module.
      Bench    Every BenchmarkDotNet micro-benchmark in bench/ (Table 2's operations on pages from real
               memory, [MemoryDiagnoser]); BenchmarkDotNet's reports and table2.md (our numbers next to
               the paper's and the one-tenth targets) are copied to out/bench.
      Compare  The whole-run comparison on real memory (bench/, "compare"): snapshots of live programs
               (or the raw images given with -Path) loaded into fresh hosts, sharing alone, sharing and
               patching, then every mechanism with each codec, each until stable; Linux KSM, zram and
               KSM then zram side by side where the machine allows (root). Writes out/compare/compare.csv
               and compare.md. With -Guests: live QEMU guests instead (three test guests of different
               workloads from one image, run with no engine, with the engine as their pager, and with KSM
               plus zram fed by proactive reclaim): host memory, the guests' pace and the fault round
               trip in out/compare/guests.md (needs root, QEMU and the Guests task, which it runs);
               then the whole-run comparison above on the guests' RAM images (out/compare/guest-images).
      Clean    Remove out/ and the bin/ and obj/ folders of every project.
      Guests   The QEMU test guests in out/guests (Debian's cloud kernel from apt-get download, an initramfs
               whose /init is tests/guest/deworkload.c); the Test task makes them too.
      Package  Build, then publish out/DifferenceEngine with Publish-PSResource to the local file
               repository out/repository (DifferenceEngine.<version>.nupkg), which Install-PSResource
               installs from once registered (Register-PSResourceRepository -Uri out/repository).

    Child processes (Pester, the demo) run under the same pwsh that runs this script, so the
    pinned tool from .config/dotnet-tools.json is used throughout.

    What NuGet cannot bring (a C compiler and Xen's headers for native/, gdb, python3, chromium and
    xdelta3 for tests) is listed once, in apt-packages.txt. Before its first task the script
    installs the missing ones with apt-get when it runs as root where apt-get exists; otherwise
    (or with -NoInstall) it says in one line what is missing, and goes on: the module and the Demo
    need none of them, and a test that needs a missing one is reported as skipped.

.PARAMETER Task
    One or more tasks to run, in order. Build runs at most once per invocation. pwsh -File hands
    "Clean,Build" over as one string, which is not a task: give several tasks through -Command.

.PARAMETER Configuration
    The dotnet build configuration.

.PARAMETER Path
    Compare: raw images to load instead of snapshots of live programs.

.PARAMETER Guests
    Compare: measure live QEMU test guests (see Compare) instead of memory images.

.PARAMETER Quick
    A smoke run for CI: Bench with BenchmarkDotNet's Dry job, Compare on two small inputs and one codec.

.PARAMETER NoInstall
    Never run apt-get: only say which packages of apt-packages.txt are missing.

.EXAMPLE
    dotnet tool restore; dotnet pwsh -NoProfile -File ./build.ps1 -Task Test

.EXAMPLE
    dotnet pwsh -NoProfile -Command './build.ps1 -Task Clean, Build -Configuration Debug'

.EXAMPLE
    dotnet pwsh -NoProfile -File ./build.ps1 -Task Compare -Path ./vm1.img, ./vm2.img
#>
[CmdletBinding()]
param(
    [ValidateSet('Build', 'Test', 'Demo', 'Clean', 'Bench', 'Compare', 'Package', 'Guests')]
    [string[]]$Task = 'Build',

    [string]$Configuration = 'Release',

    [string[]]$Path = @(),

    [switch]$Quick,

    [switch]$Guests,

    [switch]$NoInstall
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
if ([Console]::IsOutputRedirected) {
    # Logs (CI) get plain text, not colour escapes.
    $PSStyle.OutputRendering = 'PlainText'
}

$RepoRoot = $PSScriptRoot
$OutDir = Join-Path $RepoRoot 'out'
$ModuleName = 'DifferenceEngine'
$ModuleOut = Join-Path $OutDir $ModuleName
$PublishDir = Join-Path $OutDir 'publish'
$TestResultsDir = Join-Path $OutDir 'test-results'
$CmdletsProject = Join-Path $RepoRoot 'cmdlets/DifferenceEngine.Commands.csproj'
$XunitProject = Join-Path $RepoRoot 'tests/DifferenceEngine.Tests/DifferenceEngine.Tests.csproj'
$PesterRestoreProject = Join-Path $RepoRoot 'tests/pester/PesterRestore.csproj'
$PesterRunner = Join-Path $RepoRoot 'tests/pester/Invoke-PesterSuite.ps1'
# Hang guards of the Test task, so a test that never returns fails the run with its name instead of holding CI:
# no xunit test may run longer than this (VSTest's blame collector then ends the test host and names the test)...
$XunitHangTimeout = '10m'
# ...and the whole Pester suite (about 5 minutes here) is ended after this many minutes.
$PesterTimeoutMinutes = 20
$ModuleSource = Join-Path $RepoRoot 'module'
$DemoScript = Join-Path $RepoRoot 'examples/Demo.ps1'
$BenchDir = Join-Path $RepoRoot 'bench'
$NativeSource = Join-Path $RepoRoot 'native'
$NativeTestSource = Join-Path $RepoRoot 'tests/native'
$NativeOut = Join-Path $OutDir 'native'
$NativeFakeOut = Join-Path $NativeOut 'fake'
$XenHeader = '/usr/include/xenctrl.h'
$SystemPackageList = Join-Path $RepoRoot 'apt-packages.txt'

# The manifest loads these at import; a missing one makes Import-Module fail, so Build checks first.
$RequiredModuleFiles = @('DifferenceEngine.format.ps1xml', 'DifferenceEngine.types.ps1xml')

$script:Built = $false
# The packages of apt-packages.txt already checked in this run: each is checked, and reported missing, once.
$script:PackagesChecked = [System.Collections.Generic.HashSet[string]]::new()

function Test-CCompiler {
    <#
    .SYNOPSIS
        Whether the C compiler can build and link a program (-Static: a static one), that is whether the C library's
        headers and crt files (libc6-dev; libc.a for -Static) are there: gcc only recommends libc6-dev, so a machine can
        have cc and make and still build nothing.
    #>
    param([string]$Compiler = 'cc', [switch]$Static)
    $probe = Join-Path ([IO.Path]::GetTempPath()) "de-cc-probe-$PID"
    $null = New-Item -ItemType Directory -Path $probe -Force
    try {
        $source = Join-Path $probe 'probe.c'
        Set-Content -LiteralPath $source -Value "#include <stdio.h>`nint main(void) { return puts(`"`") < 0; }"
        $arguments = @(if ($Static) { '-static' }) + @('-o', (Join-Path $probe 'probe'), $source)
        & $Compiler @arguments *> $null
        return $LASTEXITCODE -eq 0
    }
    catch {
        return $false
    }
    finally {
        Remove-Item -LiteralPath $probe -Recurse -Force -ErrorAction Ignore
    }
}

function Invoke-Native {
    <#
    .SYNOPSIS
        Runs a native command given as a script block; throws if it exits non-zero.
    .DESCRIPTION
        A script block, not an argument list, so that arguments such as -p:Name=Value and --
        reach the tool exactly as written. Output goes to the host, never to the pipeline.
        With -ReturnExitCode the exit code is returned instead of thrown, for callers that must
        carry on after a failure (the test runners) and decide later.
    #>
    param(
        [Parameter(Mandatory, Position = 0)]
        [scriptblock]$Command,

        [switch]$ReturnExitCode
    )

    $global:LASTEXITCODE = 0
    & $Command | Out-Host
    $exitCode = $global:LASTEXITCODE
    if ($ReturnExitCode) {
        return $exitCode
    }
    if ($exitCode -ne 0) {
        # Name the command with its variables filled in, as it ran.
        $text = $Command.ToString().Trim()
        try { $text = $ExecutionContext.InvokeCommand.ExpandString($text) } catch { }
        throw "Command failed with exit code ${exitCode}: $text"
    }
}

function Write-Step([string]$Message) {
    Write-Host "==> $Message" -ForegroundColor Cyan
}

function Get-ModuleVersion {
    # One version for the whole repository, kept in Directory.Build.props.
    $propsPath = Join-Path $RepoRoot 'Directory.Build.props'
    $props = [xml](Get-Content -LiteralPath $propsPath -Raw)
    $node = $props.SelectSingleNode('/Project/PropertyGroup/VersionPrefix')
    if ($null -eq $node -or [string]::IsNullOrWhiteSpace($node.InnerText)) {
        throw "No <VersionPrefix> in $propsPath."
    }
    $text = $node.InnerText.Trim()
    $version = $null
    if (-not [version]::TryParse($text, [ref]$version)) {
        throw "<VersionPrefix> '$text' in $propsPath is not a module version (major.minor.build)."
    }
    return $text
}

function Get-PwshCommand {
    # The pwsh running this script: dotnet plus pwsh.dll when it is the dotnet tool.
    $exe = [Environment]::ProcessPath
    if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet') {
        return @($exe, (Join-Path $PSHOME 'pwsh.dll'))
    }
    return @($exe)
}

function Invoke-ChildPwsh {
    <#
    .SYNOPSIS
        Runs a script in a fresh pwsh that can import the built module; returns its exit code.
    .DESCRIPTION
        A child process, so the binary module's dll is loaded there and never locks out/ for this
        script. $env:DE_MODULE_PATH names the module folder; PSModulePath also finds it by name.
    #>
    param(
        [Parameter(Mandatory)][string]$ScriptPath,
        [string[]]$ArgumentList = @(),
        # Ends the child (and its children) and throws when it runs longer; 0 waits as long as it takes.
        [double]$TimeoutMinutes = 0
    )

    $pwsh = @(Get-PwshCommand)
    $exe = $pwsh[0]
    $prefix = @($pwsh | Select-Object -Skip 1)
    $savedModulePath = $env:DE_MODULE_PATH
    $savedPSModulePath = $env:PSModulePath
    try {
        $env:DE_MODULE_PATH = $ModuleOut
        $env:PSModulePath = $OutDir + [IO.Path]::PathSeparator + $env:PSModulePath
        if ($TimeoutMinutes -le 0) {
            return Invoke-Native -ReturnExitCode { & $exe @prefix -NoProfile -NonInteractive -File $ScriptPath @ArgumentList }
        }
        # Started directly, its output going straight to ours, so that it can be ended with its children.
        $start = [Diagnostics.ProcessStartInfo]::new($exe)
        foreach ($argument in @($prefix) + @('-NoProfile', '-NonInteractive', '-File', $ScriptPath) + @($ArgumentList)) {
            $start.ArgumentList.Add([string]$argument)
        }
        $start.UseShellExecute = $false
        $process = [Diagnostics.Process]::Start($start)
        try {
            if (-not $process.WaitForExit([int][TimeSpan]::FromMinutes($TimeoutMinutes).TotalMilliseconds)) {
                $process.Kill($true)
                $process.WaitForExit()
                throw "$ScriptPath did not finish in $TimeoutMinutes minutes and was ended with its child processes; the test it was running is the last one named in the log above."
            }
            $process.WaitForExit()
            return $process.ExitCode
        }
        finally {
            $process.Dispose()
        }
    }
    finally {
        $env:DE_MODULE_PATH = $savedModulePath
        $env:PSModulePath = $savedPSModulePath
    }
}

function Get-SystemPackage {
    <#
    .SYNOPSIS
        The packages of apt-packages.txt: Name, Task (Build or Test) and Purpose, in file order.
    #>
    $lineNumber = 0
    foreach ($line in Get-Content -LiteralPath $SystemPackageList) {
        $lineNumber++
        $text, $purpose = $line -split '#', 2
        $fields = @($text.Trim() -split '\s+' | Where-Object { $_ })
        if ($fields.Count -eq 0) {
            continue
        }
        if ($fields.Count -ne 2 -or $fields[1] -notin 'Build', 'Test') {
            throw "${SystemPackageList}:${lineNumber}: expected '<package> Build|Test  # purpose', found '$line'."
        }
        [pscustomobject]@{ Name = $fields[0]; Task = $fields[1]; Purpose = "$purpose".Trim() }
    }
}

function Install-SystemPackage {
    <#
    .SYNOPSIS
        Installs the missing packages of apt-packages.txt that -Scope needs, with apt-get, when it can.
    .DESCRIPTION
        Scope Build: the packages the build uses (native/); Test: every package. Runs apt-get update, then one
        apt-get install, as root where apt-get exists and -NoInstall was not given. Anything it cannot install is
        said in one line and the build goes on: nothing here is needed by the module or the Demo, a missing C
        toolchain or libxen-dev skips native/ (Build-Native says so), and tests that need a missing package skip.
    #>
    param(
        [ValidateSet('Build', 'Test')]
        [string]$Scope
    )

    $wanted = @(Get-SystemPackage | Where-Object { ($Scope -eq 'Test' -or $_.Task -eq 'Build') -and
            $script:PackagesChecked.Add($_.Name) })
    if ($wanted.Count -eq 0) {
        return
    }
    if (-not (Get-Command dpkg-query -CommandType Application -ErrorAction Ignore)) {
        Write-Host ("System packages: no dpkg-query (not a Debian machine), so $($wanted.Name -join ', ') " +
            'were not checked; install them by hand for native/ and every test (apt-packages.txt says what each is for).')
        return
    }
    $missing = @(
        foreach ($package in $wanted) {
            $status = & dpkg-query -W -f '${Status}' $package.Name 2>$null
            if ("$status" -notmatch 'install ok installed') { $package.Name }
        }
    )
    $global:LASTEXITCODE = 0
    if ($missing.Count -eq 0) {
        return
    }
    $why = if ($NoInstall) { '-NoInstall was given' }
    elseif (-not [Environment]::IsPrivilegedProcess) { 'not running as root' }
    elseif (-not (Get-Command apt-get -CommandType Application -ErrorAction Ignore)) { 'no apt-get' }
    if ($why) {
        Write-Host ("System packages missing: $($missing -join ', ') ($why, so not installed: as root, " +
            "'apt-get install $($missing -join ' ')'). What needs them is skipped; apt-packages.txt says what each is for.")
        return
    }

    Write-Step "System packages: apt-get install $($missing -join ' ')"
    $savedFrontend = $env:DEBIAN_FRONTEND
    $env:DEBIAN_FRONTEND = 'noninteractive'
    try {
        Invoke-Native { apt-get update }
        Invoke-Native { apt-get install -y --no-install-recommends @missing }
    }
    catch {
        # The packages are optional for the build: say what failed and go on without them.
        Write-Host "System packages: apt-get failed ($_); what needs $($missing -join ', ') is skipped." -ForegroundColor Yellow
    }
    finally {
        $env:DEBIAN_FRONTEND = $savedFrontend
    }
}

function Build-Native {
    <#
    .SYNOPSIS
        Builds native/ with make: libdeqemu.so (the library QEMU runs with), libdeguard.so (the engine's read guard of
        its mappings of a QEMU guest's RAM) and libdexen.so (the Xen shim, against Xen 4.17's libraries), and the test
        build in out/native/fake.
    .DESCRIPTION
        out/native/libdeqemu.so, libdeguard.so and libdexen.so are what the module ships; they are copied to <Destination>, the
        publish folder's runtimes/linux-<arch>/native, which the module layout carries over. out/native/fake holds the
        fake Xen (libfakexen.so), the same shim source linked against it, and the C tests; xunit runs those (never
        shipped). libdeqemu.so and libdeguard.so need a C compiler and make; the Xen shim also libxen-dev's headers
        (apt-packages.txt).
        What cannot be built is said in one line and left out: the module works without either except on QEMU and
        Xen hosts, and their tests skip.
    #>
    param(
        [Parameter(Mandatory)][string]$Destination
    )

    $tools = @(
        foreach ($tool in 'cc', 'make') {
            if (-not (Get-Command $tool -CommandType Application -ErrorAction Ignore)) { $tool }
        }
    )
    if ($tools.Count -eq 0 -and -not (Test-CCompiler)) { $tools = @("the C library's headers (libc6-dev)") }
    if ($tools.Count -gt 0) {
        # What an older run built would be stale: the tests must not find it.
        if (Test-Path -LiteralPath $NativeOut) {
            Remove-Item -LiteralPath $NativeOut -Recurse -Force
        }
        Write-Host ("Native: skipped native/ (libdeqemu.so for QEMU hosts, libdexen.so for Xen hosts; the module " +
            "works without them elsewhere, and their tests skip): missing $($tools -join ', '). To build it: " +
            'apt-get install gcc libc6-dev make libxen-dev, or run this script as root.') -ForegroundColor Yellow
        return
    }
    $null = New-Item -ItemType Directory -Path $Destination -Force
    if (-not (Test-Path -LiteralPath $XenHeader)) {
        Remove-Item -LiteralPath (Join-Path $NativeOut 'libdexen.so'), $NativeFakeOut -Recurse -Force -ErrorAction Ignore
        Write-Step 'Native: native/ (libdeqemu.so, libdeguard.so)'
        Invoke-Native { make -C $NativeSource "O=$NativeOut" libdeqemu }
        Copy-Item -LiteralPath (Join-Path $NativeOut 'libdeqemu.so'), (Join-Path $NativeOut 'libdeguard.so') -Destination $Destination
        Write-Host ("Native: skipped the Xen shim (only Xen hosts need it, and the Xen tests skip): missing Xen's " +
            "headers ($XenHeader). To build it: apt-get install libxen-dev, or run this script as root.") -ForegroundColor Yellow
        return
    }
    Write-Step 'Native: native/ (libdeqemu.so, libdeguard.so, libdexen.so) and tests/native/ (fake Xen, C tests)'
    Invoke-Native { make -C $NativeSource "O=$NativeOut" }
    Invoke-Native { make -C $NativeTestSource "O=$NativeFakeOut" }
    Copy-Item -LiteralPath (Join-Path $NativeOut 'libdeqemu.so'), (Join-Path $NativeOut 'libdeguard.so'), (Join-Path $NativeOut 'libdexen.so') -Destination $Destination
}

function Write-NewcArchive {
    <#
    .SYNOPSIS
        Writes a gzip-compressed cpio archive in the "newc" format the kernel unpacks as its initramfs.
    .DESCRIPTION
        Entries are hashtables: Path (no leading /), Type (Dir, File, Char, Link), Mode (permission bits), and Source
        (a file, for File), Target (for Link), Major and Minor (for Char). Written here rather than with cpio(1), so the
        device nodes /dev/console and /dev/null go in without mknod, and nothing but PowerShell is needed.
    #>
    param([string]$Path, [hashtable[]]$Entries)
    $stream = [IO.File]::Create($Path)
    $gzip = [IO.Compression.GZipStream]::new($stream, [IO.Compression.CompressionLevel]::Optimal)
    try {
        $inode = 1
        $pad = { param([long]$n) $zeros = [byte[]]::new((4 - $n % 4) % 4); $gzip.Write($zeros, 0, $zeros.Length) }
        foreach ($e in @($Entries) + @(@{ Path = 'TRAILER!!!'; Type = 'End'; Mode = 0 })) {
            [byte[]]$data = switch ($e.Type) {
                'File' { [IO.File]::ReadAllBytes($e.Source) }
                'Link' { [Text.Encoding]::ASCII.GetBytes($e.Target) }
                default { , [byte[]]@() }
            }
            $typeBits = switch ($e.Type) { 'Dir' { 0x4000 } 'File' { 0x8000 } 'Char' { 0x2000 } 'Link' { 0xA000 } default { 0 } }
            $name = [Text.Encoding]::ASCII.GetBytes($e.Path + [char]0)
            $ino = if ($e.Type -eq 'End') { 0 } else { $inode }
            $inode++
            $fields = @($ino, ($typeBits -bor $e.Mode), 0, 0,
                $(if ($e.Type -eq 'Dir') { 2 } else { 1 }), 0, $data.Length, 0, 0, [int]$e['Major'], [int]$e['Minor'], $name.Length, 0)
            $header = [Text.Encoding]::ASCII.GetBytes('070701' + (($fields | ForEach-Object { '{0:x8}' -f $_ }) -join ''))
            $gzip.Write($header, 0, $header.Length)
            $gzip.Write($name, 0, $name.Length)
            & $pad ($header.Length + $name.Length)
            $gzip.Write($data, 0, $data.Length)
            & $pad $data.Length
        }
    }
    finally {
        $gzip.Dispose()
        $stream.Dispose()
    }
}

function Build-Guests {
    <#
    .SYNOPSIS
        Makes the test guests in out/guests: a Debian cloud kernel (vmlinuz) and an initramfs whose /init is the
        workload of tests/guest/deworkload.c, built static, with busybox beside it. Returns the folder, or $null
        (having said why in one line) when something it needs is missing.
    .DESCRIPTION
        The kernel comes from `apt-get download` of the package linux-image-cloud-amd64 depends on, unpacked with
        dpkg-deb; it is kept in out/guests and fetched again only when that package's version changes. Nothing
        prebuilt is in the repository.
    #>
    $guests = Join-Path $OutDir 'guests'
    $missing = @('apt-get', 'apt-cache', 'dpkg-deb', 'gcc', 'busybox', 'qemu-system-x86_64' |
            Where-Object { -not (Get-Command $_ -CommandType Application -ErrorAction Ignore) })
    if ([Runtime.InteropServices.RuntimeInformation]::ProcessArchitecture -ne 'X64') { $missing += 'an x86_64 machine' }
    if ($missing -notcontains 'gcc' -and -not (Test-CCompiler -Compiler gcc -Static)) { $missing += "the static C library (libc6-dev)" }
    if ($missing.Count -gt 0) {
        Write-Host "Guests: skipped, missing $($missing -join ', ') (apt-packages.txt: busybox-static, qemu-system-x86); the QEMU guest tests skip."
        return $null
    }
    Write-Step "Guests: $guests"
    $null = New-Item -ItemType Directory -Path $guests -Force

    # The kernel: the versioned package the meta-package points to.
    $package = (& apt-cache depends linux-image-cloud-amd64 2>$null | Select-String -Pattern 'Depends:\s*(linux-image-\S+)' |
            Select-Object -First 1).Matches.Groups[1].Value
    $kernel = Join-Path $guests 'vmlinuz'
    $stamp = Join-Path $guests 'vmlinuz.package'
    if (-not $package) {
        Write-Host 'Guests: skipped, apt-cache knows no linux-image-cloud-amd64 (no Debian package lists: apt-get update).'
        return $null
    }
    if (-not (Test-Path -LiteralPath $kernel) -or -not (Test-Path -LiteralPath $stamp) -or (Get-Content -LiteralPath $stamp) -ne $package) {
        $work = Join-Path $guests 'download'
        if (Test-Path -LiteralPath $work) { Remove-Item -LiteralPath $work -Recurse -Force }
        $null = New-Item -ItemType Directory -Path $work
        Push-Location -LiteralPath $work
        try {
            Invoke-Native { apt-get download $package 2>&1 | Where-Object { "$_" -notmatch 'unsandboxed' } }
        }
        catch {
            Write-Host "Guests: skipped, apt-get download $package failed ($_)."
            return $null
        }
        finally {
            Pop-Location
        }
        $deb = Get-ChildItem -LiteralPath $work -Filter '*.deb' | Select-Object -First 1
        # Only the kernel image, not the 100 MiB of modules (the cloud kernel has what the guests need built in).
        $root = Join-Path $work 'root'
        $null = New-Item -ItemType Directory -Path $root
        Invoke-Native { bash -o pipefail -c "dpkg-deb --fsys-tarfile '$($deb.FullName)' | tar -x -C '$root' --wildcards './boot/vmlinuz-*'" }
        $vmlinuz = Get-ChildItem -LiteralPath (Join-Path $root 'boot') -Filter 'vmlinuz-*' | Select-Object -First 1
        Copy-Item -LiteralPath $vmlinuz.FullName -Destination $kernel -Force
        Set-Content -LiteralPath $stamp -Value $package
        Remove-Item -LiteralPath $work -Recurse -Force
        Write-Host "  vmlinuz from $package"
    }

    # The workload, static (the initramfs has no libc), and the initramfs around it.
    $workload = Join-Path $guests 'deworkload'
    Invoke-Native { gcc -static -O2 -Wall -Wextra -Werror -o $workload (Join-Path $RepoRoot 'tests/guest/deworkload.c') }
    $busybox = (Get-Command busybox -CommandType Application | Select-Object -First 1).Source
    Write-NewcArchive -Path (Join-Path $guests 'initramfs.cpio.gz') -Entries @(
        @{ Path = 'dev'; Type = 'Dir'; Mode = 0x1ED }
        @{ Path = 'dev/console'; Type = 'Char'; Mode = 0x180; Major = 5; Minor = 1 }
        @{ Path = 'dev/null'; Type = 'Char'; Mode = 0x1B6; Major = 1; Minor = 3 }
        @{ Path = 'proc'; Type = 'Dir'; Mode = 0x1ED }
        @{ Path = 'sys'; Type = 'Dir'; Mode = 0x1ED }
        @{ Path = 'bin'; Type = 'Dir'; Mode = 0x1ED }
        @{ Path = 'bin/busybox'; Type = 'File'; Mode = 0x1ED; Source = $busybox }
        @{ Path = 'bin/sh'; Type = 'Link'; Mode = 0x1FF; Target = 'busybox' }
        @{ Path = 'init'; Type = 'File'; Mode = 0x1ED; Source = $workload }
    )
    Write-Host "  initramfs.cpio.gz: /init is tests/guest/deworkload.c, /bin/sh is busybox (rdinit=/bin/sh for a shell)"
    return $guests
}

function Invoke-BuildTask {
    if ($script:Built) {
        return
    }
    Install-SystemPackage -Scope Build
    Write-Step "Build ($Configuration)"

    $missing = @($RequiredModuleFiles | Where-Object { -not (Test-Path -LiteralPath (Join-Path $ModuleSource $_)) })
    if ($missing.Count -gt 0) {
        throw ("Build: missing module/$($missing -join ', module/'). DifferenceEngine.psd1 loads these " +
            '(FormatsToProcess/TypesToProcess), and Import-Module fails without them.')
    }

    $version = Get-ModuleVersion

    if (Test-Path -LiteralPath $PublishDir) {
        Remove-Item -LiteralPath $PublishDir -Recurse -Force
    }
    # Publishing the cmdlets builds the engine through the project reference and gathers every
    # runtime dependency into one folder.
    Invoke-Native { dotnet publish $CmdletsProject -c $Configuration -o $PublishDir --nologo }

    # The shim goes where .NET keeps a package's native assets, so the layout below carries it into the module.
    $arch = [Runtime.InteropServices.RuntimeInformation]::ProcessArchitecture.ToString().ToLowerInvariant()
    Build-Native -Destination (Join-Path $PublishDir "runtimes/linux-$arch/native")

    Write-Step "Lay out $ModuleOut"
    if (Test-Path -LiteralPath $ModuleOut) {
        Remove-Item -LiteralPath $ModuleOut -Recurse -Force
    }
    $null = New-Item -ItemType Directory -Path $ModuleOut

    # PowerShell resolves the assemblies it ships (System.Management.Automation, Newtonsoft.Json,
    # ...) from its own folder before a module's, so copies of those would never be loaded.
    $shipped = @{}
    foreach ($dll in Get-ChildItem -LiteralPath $PSHOME -Filter '*.dll' -File) {
        $shipped[$dll.Name] = $dll.FullName
    }
    $skipped = [Collections.Generic.List[string]]::new()
    foreach ($dll in Get-ChildItem -LiteralPath $PublishDir -Filter '*.dll' -File) {
        $isOurs = $dll.Name -like "$ModuleName.*"
        if (-not $isOurs -and $shipped.ContainsKey($dll.Name)) {
            $ours = [Reflection.AssemblyName]::GetAssemblyName($dll.FullName).Version
            $theirs = [Reflection.AssemblyName]::GetAssemblyName($shipped[$dll.Name]).Version
            if ($ours -gt $theirs) {
                Write-Warning ("$($dll.Name) $ours is newer than the $theirs that PowerShell loads; " +
                    'code needing the newer version will fail at run time.')
            }
            $skipped.Add($dll.Name)
            continue
        }
        Copy-Item -LiteralPath $dll.FullName -Destination $ModuleOut
    }
    # Our symbols are embedded in the dlls (DebugType embedded): no .pdb goes into the module.
    # Native assets of dependencies, if any package brings them.
    $runtimes = Join-Path $PublishDir 'runtimes'
    if (Test-Path -LiteralPath $runtimes) {
        Copy-Item -LiteralPath $runtimes -Destination $ModuleOut -Recurse
    }

    # The license, and the docs that help and errors name (docs/NAME.md, in the module folder as in the repository).
    Copy-Item -LiteralPath (Join-Path $RepoRoot 'LICENSE') -Destination $ModuleOut
    $docsOut = Join-Path $ModuleOut 'docs'
    $null = New-Item -ItemType Directory -Path $docsOut
    Get-ChildItem -LiteralPath (Join-Path $RepoRoot 'docs') -Filter '*.md' -File | Copy-Item -Destination $docsOut

    # Types, formats and help.
    Get-ChildItem -LiteralPath $ModuleSource -Filter '*.ps1xml' -File | Copy-Item -Destination $ModuleOut
    $helpFiles = @(
        Get-ChildItem -LiteralPath $ModuleSource -Filter 'about_*.help.txt' -File
        $cultureSource = Join-Path $ModuleSource 'en-US'
        if (Test-Path -LiteralPath $cultureSource) {
            Get-ChildItem -LiteralPath $cultureSource -File | Where-Object Extension -In '.txt', '.xml'
        }
    )
    if ($helpFiles.Count -gt 0) {
        $cultureOut = Join-Path $ModuleOut 'en-US'
        $null = New-Item -ItemType Directory -Path $cultureOut -Force
        $helpFiles | Copy-Item -Destination $cultureOut
    }

    # The manifest, with the repository's version stamped in.
    $manifestSource = Join-Path $RepoRoot "$ModuleName.psd1"
    $manifestText = Get-Content -LiteralPath $manifestSource -Raw
    $versionPattern = "(?m)^(\s*ModuleVersion\s*=\s*)'[^']*'"
    if ([regex]::Matches($manifestText, $versionPattern).Count -ne 1) {
        throw "Build: expected exactly one ModuleVersion = '...' line in $manifestSource."
    }
    $manifestText = [regex]::Replace($manifestText, $versionPattern, "`${1}'$version'")
    $manifestOut = Join-Path $ModuleOut "$ModuleName.psd1"
    [IO.File]::WriteAllText($manifestOut, $manifestText, [Text.UTF8Encoding]::new($false))

    # Every file the manifest names must be there, or Import-Module fails far from the cause.
    $manifest = Import-PowerShellDataFile -LiteralPath $manifestOut
    $named = @($manifest.RootModule) + @($manifest.FormatsToProcess) + @($manifest.TypesToProcess)
    foreach ($file in $named) {
        if (-not (Test-Path -LiteralPath (Join-Path $ModuleOut $file))) {
            throw "Build: $manifestOut names $file, which is not in $ModuleOut."
        }
    }

    Write-Host "Module $ModuleName $version in ${ModuleOut}:"
    Get-ChildItem -LiteralPath $ModuleOut -Recurse -File |
        ForEach-Object { Write-Host ('  ' + [IO.Path]::GetRelativePath($ModuleOut, $_.FullName)) }
    if ($skipped.Count -gt 0) {
        Write-Host "  (provided by PowerShell, not copied: $($skipped -join ', '))"
    }
    $script:Built = $true
}

function Get-TrxCounts([string]$Path) {
    # VSTest's ResultSummary/Counters: error, timeout and aborted are failures too.
    $xml = [xml](Get-Content -LiteralPath $Path -Raw)
    $counters = $xml.SelectSingleNode("//*[local-name()='ResultSummary']/*[local-name()='Counters']")
    if ($null -eq $counters) {
        throw "No ResultSummary/Counters in $Path."
    }
    $count = { param($name) $text = $counters.GetAttribute($name); if ($text) { [int]$text } else { 0 } }
    $total = & $count 'total'
    $passed = & $count 'passed'
    $failed = (& $count 'failed') + (& $count 'error') + (& $count 'timeout') + (& $count 'aborted')
    # The names of the failed tests and the first line of each message, for the summary at the end of the log.
    $failedNames = foreach ($result in $xml.SelectNodes("//*[local-name()='UnitTestResult']")) {
        if ($result.GetAttribute('outcome') -in 'Failed', 'Error', 'Timeout', 'Aborted') {
            $message = $result.SelectSingleNode(".//*[local-name()='ErrorInfo']/*[local-name()='Message']")
            Format-FailedTest $result.GetAttribute('testName') $(if ($message) { $message.InnerText })
        }
    }
    return [pscustomobject]@{
        Total   = $total
        Passed  = $passed
        Failed  = $failed
        Skipped = $total - $passed - $failed
        FailedNames = @($failedNames)
    }
}

function Get-XunitAbort([string]$ResultsDir, [string]$TrxPath) {
    # What ended an xunit run early: the trx's run errors, and each test the blame collector's sequence files show
    # started and not completed (the one that hung or was running when the test host died). Nothing for a whole run.
    $reasons = @()
    if (Test-Path -LiteralPath $TrxPath) {
        $xml = [xml](Get-Content -LiteralPath $TrxPath -Raw)
        foreach ($info in $xml.SelectNodes("//*[local-name()='RunInfo'][@outcome='Error']")) {
            $reasons += $info.InnerText.Trim()
        }
    }
    $unfinished = foreach ($file in Get-ChildItem -LiteralPath $ResultsDir -Recurse -File -Filter 'Sequence_*.xml') {
        $sequence = [xml](Get-Content -LiteralPath $file.FullName -Raw)
        foreach ($test in $sequence.SelectNodes("//Test[@Completed='False']")) {
            $test.GetAttribute('DisplayName')
        }
    }
    # The collector writes each sequence file twice (its own folder and the attachments').
    $unfinished = @($unfinished | Select-Object -Unique)
    if ($reasons.Count -eq 0 -and $unfinished.Count -eq 0) {
        return
    }
    $text = if ($reasons.Count -gt 0) { $reasons -join '; ' } else { 'the run was aborted' }
    foreach ($name in $unfinished) {
        $text += "; not finished: $name"
    }
    return $text
}

function Format-FailedTest([string]$Name, [string]$Message) {
    $first = if ($Message) { ($Message.Trim() -split '\r?\n', 2)[0] } else { '' }
    if ($first.Length -gt 200) { $first = $first.Substring(0, 200) + '...' }
    if ($first) { "$Name`n      $first" } else { $Name }
}

function Get-PesterCounts([string]$Path) {
    # Counts test cases, which reads NUnit 2.5 (Pester's NUnitXml), NUnit 3 and JUnit alike.
    $xml = [xml](Get-Content -LiteralPath $Path -Raw)
    $passed = 0
    $failed = 0
    $skipped = 0
    $failedNames = [Collections.Generic.List[string]]::new()
    $nunitCases = $xml.SelectNodes("//*[local-name()='test-case']")
    if ($nunitCases.Count -gt 0) {
        foreach ($case in $nunitCases) {
            switch ($case.GetAttribute('result')) {
                { $_ -in 'Success', 'Passed' } { $passed++; break }
                { $_ -in 'Failure', 'Failed', 'Error' } {
                    $failed++
                    $message = $case.SelectSingleNode("*[local-name()='failure']/*[local-name()='message']")
                    $failedNames.Add((Format-FailedTest $case.GetAttribute('name') $(if ($message) { $message.InnerText })))
                    break
                }
                default { $skipped++ }
            }
        }
    }
    else {
        foreach ($case in $xml.SelectNodes("//*[local-name()='testcase']")) {
            $failure = $case.SelectSingleNode("*[local-name()='failure' or local-name()='error']")
            if ($failure) {
                $failed++
                $failedNames.Add((Format-FailedTest $case.GetAttribute('name') $failure.GetAttribute('message')))
            }
            elseif ($case.SelectSingleNode("*[local-name()='skipped']")) { $skipped++ }
            else { $passed++ }
        }
    }
    return [pscustomobject]@{
        Total   = $passed + $failed + $skipped
        Passed  = $passed
        Failed  = $failed
        Skipped = $skipped
        FailedNames = @($failedNames)
    }
}

function Invoke-TestTask {
    # Both runners always get their chance. Failures that no test case shows (a runner that did
    # not run, a test file that did not load) are collected as problems and counted at the end.
    $problems = [Collections.Generic.List[pscustomobject]]::new()
    $addProblem = { param([string]$Message, [int]$Failures = 1)
        $problems.Add([pscustomobject]@{ Message = $Message; Failures = $Failures }) }
    $xunit = $null
    $pester = $null

    if (Test-Path -LiteralPath $TestResultsDir) {
        Remove-Item -LiteralPath $TestResultsDir -Recurse -Force
    }
    $null = New-Item -ItemType Directory -Path $TestResultsDir -Force
    $trxPath = Join-Path $TestResultsDir 'xunit.trx'
    $pesterPath = Join-Path $TestResultsDir 'pester.xml'

    $buildError = $null
    try {
        Install-SystemPackage -Scope Test
        Invoke-BuildTask
    }
    catch {
        $buildError = $_
        Write-Host "Build failed: $buildError" -ForegroundColor Red
        & $addProblem "build failed, so no tests ran: $buildError"
    }

    if ($null -eq $buildError) {
        # The package too: a Pester test installs the module from out/repository as a user would.
        try {
            Invoke-PackageTask
        }
        catch {
            & $addProblem "package failed: $_"
        }
        # The QEMU test guests (skipped in one line when a package is missing; their tests then skip).
        try {
            $null = Build-Guests
        }
        catch {
            & $addProblem "guests failed: $_"
        }
        Write-Step 'xunit: tests/DifferenceEngine.Tests'
        $xunitExit = Invoke-Native -ReturnExitCode {
            dotnet test $XunitProject -c $Configuration --nologo --logger 'trx;LogFileName=xunit.trx' --results-directory $TestResultsDir --blame-hang-timeout $XunitHangTimeout --blame-hang-dump-type none
        }
        # A run the blame collector ended (a test ran past $XunitHangTimeout) or whose test host died: named, and a failure.
        $xunitAborts = @(Get-XunitAbort $TestResultsDir $trxPath)
        foreach ($abort in $xunitAborts) {
            & $addProblem "xunit: $abort"
        }
        if (Test-Path -LiteralPath $trxPath) {
            try {
                $xunit = Get-TrxCounts $trxPath
                if ($xunitExit -ne 0 -and $xunit.Failed -eq 0 -and $xunitAborts.Count -eq 0) {
                    & $addProblem "xunit: dotnet test exited with $xunitExit but reported no failed test"
                }
            }
            catch {
                & $addProblem "xunit's results could not be read (dotnet test exited with $xunitExit): $_"
            }
        }
        else {
            & $addProblem "xunit did not run: dotnet test exited with $xunitExit and wrote no $trxPath"
        }

        Write-Step 'Pester: tests/pester'
        $pesterExit = 1
        $pesterError = $null
        try {
            # Fetches the pinned Pester into the NuGet package cache.
            Invoke-Native { dotnet restore $PesterRestoreProject --nologo }
            $pesterExit = Invoke-ChildPwsh -ScriptPath $PesterRunner -TimeoutMinutes $PesterTimeoutMinutes -ArgumentList @(
                '-ModulePath', $ModuleOut, '-ResultPath', $pesterPath)
        }
        catch {
            $pesterError = $_
            Write-Host "Pester could not start or did not finish: $_" -ForegroundColor Red
        }
        # Ended or failed to start: said as such, whatever results it wrote (it may hang after writing them, at exit).
        if ($null -ne $pesterError) {
            & $addProblem "Pester did not run or finish: $pesterError"
        }
        if (Test-Path -LiteralPath $pesterPath) {
            try {
                $pester = Get-PesterCounts $pesterPath
                # The runner's exit code, like Pester's own, also counts test files that failed to
                # load and failed BeforeAll/AfterAll blocks, which the NUnit file has no test case for.
                if ($null -eq $pesterError -and $pesterExit -gt $pester.Failed) {
                    $extra = $pesterExit - $pester.Failed
                    & $addProblem "Pester: $extra failed test file(s) or BeforeAll/AfterAll block(s); see the log above" $extra
                }
            }
            catch {
                & $addProblem "Pester's results could not be read (the runner exited with $pesterExit): $_"
            }
        }
        elseif ($null -eq $pesterError) {
            & $addProblem "Pester did not run: the runner exited with $pesterExit and wrote no $pesterPath"
        }
    }

    $passed = 0
    $failed = 0
    $skipped = 0
    Write-Host ''
    Write-Host 'Test summary'
    foreach ($runner in @(@('xunit', $xunit), @('Pester', $pester))) {
        $name, $counts = $runner
        if ($null -eq $counts) {
            Write-Host ('  {0,-7} did not run' -f $name)
            continue
        }
        Write-Host ('  {0,-7} {1} passed, {2} failed, {3} skipped' -f $name, $counts.Passed, $counts.Failed, $counts.Skipped)
        # Named here, at the end of the log, because a CI log may be cut to its last lines.
        foreach ($failedName in $counts.FailedNames) {
            Write-Host "    failed: $failedName" -ForegroundColor Red
        }
        $passed += $counts.Passed
        $failed += $counts.Failed
        $skipped += $counts.Skipped
    }
    # Counted in the total, so the summary line never reads as clean when the run was not.
    foreach ($problem in $problems) {
        Write-Host "  problem: $($problem.Message)" -ForegroundColor Red
        $failed += $problem.Failures
    }
    Write-Host "  results: $TestResultsDir"
    Write-Host "$passed passed, $failed failed, $skipped skipped"
    if ($failed -gt 0) {
        $script:ExitCode = 1
    }
}

function Invoke-DemoTask {
    Invoke-BuildTask
    if (-not (Test-Path -LiteralPath $DemoScript)) {
        throw "Demo: $DemoScript does not exist yet; the Demo task runs that script against out/$ModuleName."
    }
    Write-Step "Demo: examples/Demo.ps1"
    $exitCode = Invoke-ChildPwsh -ScriptPath $DemoScript
    if ($exitCode -ne 0) {
        throw "Demo: examples/Demo.ps1 exited with $exitCode."
    }
}

function Get-BenchProject([string]$TaskName) {
    $projects = @(Get-ChildItem -LiteralPath $BenchDir -Filter '*.csproj' -File -Recurse -ErrorAction Ignore)
    if ($projects.Count -eq 0) {
        throw "${TaskName}: not built yet (issue 6): bench/ has no project."
    }
    if ($projects.Count -gt 1) {
        throw "${TaskName}: bench/ has $($projects.Count) projects; build.ps1 does not know which to run yet (issue 6)."
    }
    return $projects[0].FullName
}

function Invoke-BenchTask {
    $project = Get-BenchProject 'Bench'
    $benchOut = Join-Path $OutDir 'bench'
    $artifacts = Join-Path $benchOut 'artifacts'
    Write-Step "Bench: $project$(if ($Quick) { ' (quick: --job Dry)' })"
    if (Test-Path -LiteralPath $artifacts) {
        Remove-Item -LiteralPath $artifacts -Recurse -Force
    }
    # BenchmarkDotNet needs Release; --filter * runs every benchmark without the interactive menu. The project's
    # own job (1 launch, 5 warm-ups, 10 iterations) applies unless a --job is given.
    # '*' stays literal in the command: pwsh on Unix expands an unquoted or splatted * into file names.
    $job = @(if ($Quick) { '--job', 'Dry' })
    Invoke-Native { dotnet run --project $project -c Release -- --filter '*' --artifacts $artifacts @job }

    $results = Join-Path $artifacts 'results'
    $reports = @(Get-ChildItem -LiteralPath $results -Filter '*.md' -File -ErrorAction Ignore)
    if ($reports.Count -eq 0) {
        throw "Bench: BenchmarkDotNet wrote no Markdown report to $results."
    }
    $reports | Copy-Item -Destination $benchOut
    Write-Host "Reports in ${benchOut}:"
    $reports | ForEach-Object { Write-Host "  $($_.Name)" }
}

function Invoke-CompareTask {
    Install-SystemPackage -Scope Test
    $project = Get-BenchProject 'Compare'
    $compareOut = Join-Path $OutDir 'compare'
    Write-Step "Compare: $project$(if ($Quick) { ' (quick)' })"
    # The PowerShell inputs are more of the pwsh running this script: its pwsh.dll when it is the dotnet tool.
    $pwsh = @(Get-PwshCommand)
    $pwshPath = $pwsh[-1]
    if ($Guests) {
        Invoke-BuildTask # libdeqemu.so in the module
        $guestsDir = Build-Guests
        $library = Join-Path $ModuleOut 'runtimes/linux-x64/native/libdeqemu.so'
        if (-not $guestsDir -or -not (Test-Path -LiteralPath $library)) {
            throw "Compare -Guests needs the test guests and libdeqemu.so (run the Build task as root on Debian with the packages of apt-packages.txt)."
        }
        $guestArgs = @('compare', '--guests', $guestsDir, '--deqemu', $library, '--out', $compareOut)
        $images = Join-Path $compareOut 'guest-images'
        if ($Quick) { $guestArgs += '--quick' } else { $guestArgs += @('--images', $images) }
        Invoke-Native { dotnet run --project $project -c Release -- @guestArgs }
        if (-not $Quick) {
            # The same guests' RAM as inputs of the whole-run comparison: real VM memory, not only processes.
            $imageFiles = @(Get-ChildItem -LiteralPath $images -Filter '*.img' | ForEach-Object FullName)
            Invoke-Native { dotnet run --project $project -c Release -- compare --out $compareOut --pwsh $pwshPath --path @imageFiles }
        }
        return
    }
    $compareArgs = @('compare', '--out', $compareOut, '--pwsh', $pwshPath)
    if ($Quick) {
        $compareArgs += '--quick'
    }
    if ($Path.Count -gt 0) {
        $resolved = @($Path | ForEach-Object { (Resolve-Path -LiteralPath $_).ProviderPath })
        $compareArgs += @('--path') + $resolved
    }
    Invoke-Native { dotnet run --project $project -c Release -- @compareArgs }
}

function Invoke-CleanTask {
    Write-Step 'Clean'
    if (Test-Path -LiteralPath $OutDir) {
        Remove-Item -LiteralPath $OutDir -Recurse -Force
    }
    # Only the bin/ and obj/ next to a project: nothing else in the tree is build output.
    $projects = Get-ChildItem -LiteralPath $RepoRoot -Filter '*.csproj' -File -Recurse |
        Where-Object { -not $_.FullName.StartsWith($OutDir, [StringComparison]::Ordinal) }
    foreach ($project in $projects) {
        foreach ($name in 'bin', 'obj') {
            $dir = Join-Path $project.DirectoryName $name
            if (Test-Path -LiteralPath $dir) {
                Remove-Item -LiteralPath $dir -Recurse -Force
                Write-Host "  removed $([IO.Path]::GetRelativePath($RepoRoot, $dir))"
            }
        }
    }
}

function Invoke-PackageTask {
    Invoke-BuildTask
    $version = Get-ModuleVersion
    $repository = Join-Path $OutDir 'repository'
    Write-Step "Package: publish $ModuleName $version to the local repository $repository"
    $null = New-Item -ItemType Directory -Path $repository -Force
    $nupkg = Join-Path $repository "$ModuleName.$version.nupkg"
    if (Test-Path -LiteralPath $nupkg) {
        Remove-Item -LiteralPath $nupkg -Force
    }
    # Publish-PSResource publishes to a registered repository. The registration is made in a child pwsh whose home
    # (and XDG_DATA_HOME) is a scratch folder, so the user's own list of repositories is never changed.
    $settings = Join-Path ([IO.Path]::GetTempPath()) "de-package-$([guid]::NewGuid().ToString('n'))"
    $null = New-Item -ItemType Directory -Path $settings
    $script = @'
param([string]$Repository, [string]$Module)
$ErrorActionPreference = 'Stop'
Register-PSResourceRepository -Name DifferenceEngineLocal -Uri $Repository -Trusted
Publish-PSResource -Path $Module -Repository DifferenceEngineLocal
'@
    $scriptPath = Join-Path $settings 'publish.ps1'
    Set-Content -LiteralPath $scriptPath -Value $script
    $savedData = $env:XDG_DATA_HOME
    $savedHome = $env:HOME
    try {
        $env:XDG_DATA_HOME = $settings
        $env:HOME = $settings
        $exitCode = Invoke-ChildPwsh -ScriptPath $scriptPath -ArgumentList @('-Repository', $repository, '-Module', $ModuleOut)
    }
    finally {
        $env:XDG_DATA_HOME = $savedData
        $env:HOME = $savedHome
        Remove-Item -LiteralPath $settings -Recurse -Force
    }
    if ($exitCode -ne 0 -or -not (Test-Path -LiteralPath $nupkg)) {
        throw "Package: Publish-PSResource did not write $nupkg (exit code $exitCode)."
    }
    Write-Host "  $nupkg"
    Write-Host "  Install it with: Register-PSResourceRepository -Name DifferenceEngineLocal -Uri $repository -Trusted;"
    Write-Host "                   Install-PSResource -Name $ModuleName -Repository DifferenceEngineLocal"
}

$script:ExitCode = 0
Push-Location -LiteralPath $RepoRoot
try {
    foreach ($name in $Task) {
        switch ($name) {
            'Build' { Invoke-BuildTask }
            'Test' { Invoke-TestTask }
            'Demo' { Invoke-DemoTask }
            'Clean' { Invoke-CleanTask; $script:Built = $false }
            'Bench' { Invoke-BenchTask }
            'Compare' { Invoke-CompareTask }
            'Package' { Invoke-PackageTask }
            'Guests' { Install-SystemPackage -Scope Test; $null = Build-Guests }
        }
    }
}
finally {
    Pop-Location
}
exit $script:ExitCode
