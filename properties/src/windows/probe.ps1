# luumen-agent doctor: what a collection of this Windows host needs. Read-only.
$ErrorActionPreference = 'Stop'
$id = [Security.Principal.WindowsIdentity]::GetCurrent()
$principal = New-Object Security.Principal.WindowsPrincipal($id)
$r = [ordered]@{
  user = $id.Name
  admin = $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
  powershell = $PSVersionTable.PSVersion.ToString()
  cim = $null
  registry = $null
  services = $null
}
try { $null = Get-CimInstance Win32_OperatingSystem } catch {
  try { $null = Get-WmiObject Win32_OperatingSystem } catch { $r.cim = $_.Exception.Message }
}
try { $null = Get-ItemProperty 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\*' } catch { $r.registry = $_.Exception.Message }
try { $null = Get-Service } catch { $r.services = $_.Exception.Message }
New-Object PSObject -Property $r | ConvertTo-Json -Compress
