# luumen-agent: Windows inventory. Read-only: Get-CimInstance (Get-WmiObject
# fallback), registry reads, Get-Service, Get-Process. Prints ONE JSON document:
# one key per section, and `errors` (section -> message) for the sections that
# failed. Each section runs in its own try/catch.
# Comment lines and indentation are stripped before sending (see script()).
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$r = [ordered]@{ v = 1; pa = $env:PROCESSOR_ARCHITECTURE }
$e = [ordered]@{}
# Run one section.
function S($n, $b) { try { $r[$n] = & $b } catch { $e[$n] = "$_" } }
# One WMI class, only the named properties.
function Q($c, $p) {
    try { $o = Get-CimInstance $c } catch { $o = Get-WmiObject $c }
    $o | Select-Object $p
}
# Dates as UTC ISO 8601 (DMTF strings from the WMI fallback pass through).
function D($d) { if ($d -is [datetime]) { $d.ToUniversalTime().ToString('s') + 'Z' } else { $d } }
S os {
    $o = Q Win32_OperatingSystem Caption, Version, BuildNumber, OSArchitecture, InstallDate, LastBootUpTime, LocalDateTime, CSName
    foreach ($k in 'InstallDate', 'LastBootUpTime', 'LocalDateTime') { $o.$k = D $o.$k }
    $o
}
S cs { Q Win32_ComputerSystem Name, DNSHostName, Domain, Workgroup, PartOfDomain, DomainRole, Manufacturer, Model, TotalPhysicalMemory }
S cv { Get-ItemProperty 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion' | Select-Object ProductName, EditionID, DisplayVersion, ReleaseId, CurrentBuild, UBR, InstallationType }
S bios {
    $o = Q Win32_BIOS Manufacturer, SMBIOSBIOSVersion, SerialNumber, ReleaseDate
    $o.ReleaseDate = D $o.ReleaseDate
    $o
}
S csp { Q Win32_ComputerSystemProduct Vendor, Name, IdentifyingNumber, UUID }
S cpu { Q Win32_Processor Name, NumberOfCores, NumberOfLogicalProcessors }
S page {
    $p = Q Win32_PageFileUsage Name, AllocatedBaseSize
    if (!$p) { $p = Q Win32_PageFileSetting Name, MaximumSize }
    $p
}
S packages {
    foreach ($h in @('x64', ''), @('x86', '\WOW6432Node')) {
        Get-ItemProperty "HKLM:\SOFTWARE$($h[1])\Microsoft\Windows\CurrentVersion\Uninstall\*" -EA 0 |
            Where-Object DisplayName |
            Select-Object DisplayName, DisplayVersion, Publisher, InstallDate, SystemComponent, ParentKeyName, ReleaseType, @{n = 'Arch'; e = { $h[0] } }
    }
}
S hotfixes { Q Win32_QuickFixEngineering HotFixID, Description, InstalledOn }
S services { Get-Service -EA 0 | Select-Object Name, DisplayName, Status, StartType }
S processes { Get-Process | Select-Object Name, Id, Path }
$r.errors = $e
# Non-ASCII as \uXXXX, so the console code page cannot garble it.
$j = $r | ConvertTo-Json -Compress -Depth 4
[regex]::Replace($j, '[^\x00-\x7f]', { '\u{0:x4}' -f [int][char]$args[0].Value })
