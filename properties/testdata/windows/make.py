#!/usr/bin/env python3
"""Writes the Windows test outputs (*.json) in the exact shape collect.ps1
prints: one compressed JSON line, non-ASCII as lowercase \\uXXXX escapes, and
Windows PowerShell 5.1's escapes of ' < > & as \\u0027 \\u003c \\u003e \\u0026.

No Windows host is available here: the values come from the public outputs
named in each file's #!source: lines; the shapes (single object vs array,
null, numbers as strings, enum numbers, DMTF and /Date()/ dates, the 5.1
{"value": [...], "Count": n} wrapper) are those PowerShell produces.
Run: python3 make.py  (from this directory)."""
import json

def ps51(doc):
    s = json.dumps(doc, separators=(",", ":"), ensure_ascii=True)
    for c, e in (("'", "\\u0027"), ("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        s = s.replace(c, e)
    return s

def svc(name, display, status, start):
    return {"Name": name, "DisplayName": display, "Status": status, "StartType": start}

def pkg(name, version, publisher, date, arch, sc=None, parent=None, rtype=None):
    return {"DisplayName": name, "DisplayVersion": version, "Publisher": publisher,
            "InstallDate": date, "SystemComponent": sc, "ParentKeyName": parent,
            "ReleaseType": rtype, "Arch": arch}

def proc(name, pid, path):
    return {"Name": name, "Id": pid, "Path": path}

SYS32 = "C:\\Windows\\system32\\"
# Status: 1 Stopped, 4 Running; StartType: 0 Boot, 1 System, 2 Automatic, 3 Manual, 4 Disabled.
SERVER_SERVICES = [
    svc("AJRouter", "AllJoyn Router Service", 1, 4),
    svc("ALG", "Application Layer Gateway Service", 1, 3),
    svc("AppIDSvc", "Application Identity", 1, 3),
    svc("Appinfo", "Application Information", 4, 3),
    svc("AppMgmt", "Application Management", 1, 3),
    svc("AppReadiness", "App Readiness", 1, 3),
    svc("AudioEndpointBuilder", "Windows Audio Endpoint Builder", 1, 3),
    svc("Audiosrv", "Windows Audio", 1, 3),
    svc("BFE", "Base Filtering Engine", 4, 2),
    svc("BITS", "Background Intelligent Transfer Service", 1, 3),
    svc("BrokerInfrastructure", "Background Tasks Infrastructure Service", 4, 2),
    svc("CertPropSvc", "Certificate Propagation", 4, 3),
    svc("CryptSvc", "Cryptographic Services", 4, 2),
    svc("DcomLaunch", "DCOM Server Process Launcher", 4, 2),
    svc("Dhcp", "DHCP Client", 4, 2),
    svc("Dnscache", "DNS Client", 4, 2),
    svc("DPS", "Diagnostic Policy Service", 4, 2),
    svc("EventLog", "Windows Event Log", 4, 2),
    svc("EventSystem", "COM+ Event System", 4, 2),
    svc("gpsvc", "Group Policy Client", 4, 2),
    svc("iphlpsvc", "IP Helper", 4, 2),
    svc("LanmanServer", "Server", 4, 2),
    svc("LanmanWorkstation", "Workstation", 4, 2),
    svc("lmhosts", "TCP/IP NetBIOS Helper", 4, 3),
    svc("MpsSvc", "Windows Defender Firewall", 4, 2),
    svc("MSDTC", "Distributed Transaction Coordinator", 4, 2),
    svc("msiserver", "Windows Installer", 1, 3),
    svc("Netlogon", "Netlogon", 4, 2),
    svc("Netman", "Network Connections", 1, 3),
    svc("NlaSvc", "Network Location Awareness", 4, 2),
    svc("nsi", "Network Store Interface Service", 4, 2),
    svc("PlugPlay", "Plug and Play", 4, 3),
    svc("Power", "Power", 4, 2),
    svc("ProfSvc", "User Profile Service", 4, 2),
    svc("RemoteRegistry", "Remote Registry", 1, 2),
    svc("RpcEptMapper", "RPC Endpoint Mapper", 4, 2),
    svc("RpcSs", "Remote Procedure Call (RPC)", 4, 2),
    svc("SamSs", "Security Accounts Manager", 4, 2),
    svc("Schedule", "Task Scheduler", 4, 2),
    svc("SENS", "System Event Notification Service", 4, 2),
    svc("Spooler", "Print Spooler", 4, 2),
    svc("TermService", "Remote Desktop Services", 4, 3),
    svc("Themes", "Themes", 4, 2),
    svc("TrustedInstaller", "Windows Modules Installer", 1, 3),
    svc("VMTools", "VMware Tools", 4, 2),
    svc("VeeamVssSupport", "Veeam Backup VSS Integration", 1, 3),
    svc("W32Time", "Windows Time", 4, 3),
    svc("WinDefend", "Microsoft Defender Antivirus Service", 4, 2),
    svc("Winmgmt", "Windows Management Instrumentation", 4, 2),
    svc("WinRM", "Windows Remote Management (WS-Management)", 4, 2),
    svc("wuauserv", "Windows Update", 1, 3),
]

SERVER_PROCESSES = [
    proc("Idle", 0, None), proc("System", 4, None), proc("Registry", 92, None),
    proc("smss", 316, None), proc("csrss", 424, None), proc("wininit", 500, None),
    proc("services", 636, None), proc("lsass", 652, SYS32 + "lsass.exe"),
    proc("svchost", 772, SYS32 + "svchost.exe"), proc("svchost", 824, SYS32 + "svchost.exe"),
    proc("svchost", 1012, SYS32 + "svchost.exe"), proc("spoolsv", 2116, SYS32 + "spoolsv.exe"),
    proc("vmtoolsd", 2412, "C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe"),
    proc("MsMpEng", 2440, None), proc("WmiPrvSE", 3172, SYS32 + "wbem\\WmiPrvSE.exe"),
    proc("msdtc", 3404, SYS32 + "msdtc.exe"), proc("wsmprovhost", 5020, SYS32 + "wsmprovhost.exe"),
    proc("powershell", 5188, SYS32 + "WindowsPowerShell\\v1.0\\powershell.exe"),
    proc("conhost", 5196, SYS32 + "conhost.exe"),
]

def server_2022():
    return {
        "v": 1, "pa": "AMD64",
        "os": {"Caption": "Microsoft Windows Server 2022 Datacenter", "Version": "10.0.20348",
               "BuildNumber": "20348", "OSArchitecture": "64-bit",
               "InstallDate": "2023-06-01T09:12:44Z", "LastBootUpTime": "2024-01-10T03:02:11Z",
               "LocalDateTime": "2024-01-22T14:40:05Z", "CSName": "SRV-APP01"},
        "cs": {"Name": "SRV-APP01", "DNSHostName": "srv-app01", "Domain": "corp.example.com",
               "Workgroup": None, "PartOfDomain": True, "DomainRole": 3,
               "Manufacturer": "VMware, Inc.", "Model": "VMware7,1", "TotalPhysicalMemory": 17179332608},
        "cv": {"ProductName": "Windows Server 2022 Datacenter", "EditionID": "ServerDatacenter",
               "DisplayVersion": "21H2", "ReleaseId": "2009", "CurrentBuild": "20348", "UBR": 2227,
               "InstallationType": "Server"},
        "bios": {"Manufacturer": "VMware, Inc.", "SMBIOSBIOSVersion": "VMW71.00V.21100432.B64.2301110304",
                 "SerialNumber": "VMware-42 1a 6b 3c 0d 7e 9f 21-8a 44 5b 6c 7d 8e 9f 10",
                 "ReleaseDate": "2023-01-11T00:00:00Z"},
        "csp": {"Vendor": "VMware, Inc.", "Name": "VMware7,1",
                "IdentifyingNumber": "VMware-42 1a 6b 3c 0d 7e 9f 21-8a 44 5b 6c 7d 8e 9f 10",
                "UUID": "3C6B1A42-7E0D-219F-8A44-5B6C7D8E9F10"},
        "cpu": [{"Name": "Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz", "NumberOfCores": 2, "NumberOfLogicalProcessors": 2},
                {"Name": "Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz", "NumberOfCores": 2, "NumberOfLogicalProcessors": 2}],
        "page": {"Name": "C:\\pagefile.sys", "AllocatedBaseSize": 2432},
        "packages": [
            pkg("7-Zip 19.00 (x64)", "19.00", "Igor Pavlov", None, "x64"),
            pkg("VMware Tools", "12.1.5.20735119", "VMware, Inc.", "20230601", "x64"),
            pkg("Veeam Backup VSS Integration", "12.0.0.1420", "Veeam Software Group GmbH", "20230915", "x64"),
            pkg("Microsoft ODBC Driver 17 for SQL Server", "17.10.5.1", "Microsoft Corporation", "20231012", "x64"),
            pkg("Microsoft System CLR Types for SQL Server 2019", "15.0.2000.5", "Microsoft Corporation", "20231012", "x64"),
            pkg("Microsoft Visual C++ 2022 X64 Additional Runtime - 14.36.32532", "14.36.32532", "Microsoft Corporation", "20231012", "x64", sc=1),
            pkg("Microsoft Visual C++ 2022 X64 Minimum Runtime - 14.36.32532", "14.36.32532", "Microsoft Corporation", "20231012", "x64", sc=1),
            pkg("Veeam Agent for Microsoft Windows", "6.0.0.960", "Veeam Software Group GmbH", "20230915", "x64"),
            pkg("Git", "2.43.0", "The Git Development Community", "20240105", "x64"),
            pkg("Microsoft Visual C++ 2015-2022 Redistributable (x64) - 14.36.32532", "14.36.32532.0", "Microsoft Corporation", None, "x86"),
            pkg("Microsoft Visual C++ 2015-2022 Redistributable (x86) - 14.36.32532", "14.36.32532.0", "Microsoft Corporation", None, "x86"),
            pkg("DiskMax 6.21", "6.21", "KoshyJohn.com", "20230620", "x86"),
            pkg("Security Update for Microsoft Visual C++ 2010 x64 (KB2565063)", "1", "Microsoft Corporation", None, "x86", parent="{1D8E6291-B0D5-35EC-8441-6616F567A0F7}", rtype="Security Update"),
        ],
        "hotfixes": [
            {"HotFixID": "KB5032198", "Description": "Update", "InstalledOn": "11/14/2023"},
            {"HotFixID": "KB5012170", "Description": "Security Update", "InstalledOn": "8/10/2022"},
            {"HotFixID": "KB5034129", "Description": "Security Update", "InstalledOn": "1/10/2024"},
            {"HotFixID": "KB5034439", "Description": "Security Update", "InstalledOn": "1/10/2024"},
        ],
        "services": SERVER_SERVICES,
        "processes": SERVER_PROCESSES,
        "errors": {},
    }

def windows_11():
    return {
        "v": 1, "pa": "AMD64",
        "os": {"Caption": "Microsoft Windows 11 Pro", "Version": "10.0.22621", "BuildNumber": "22621",
               "OSArchitecture": "64-bit", "InstallDate": "2023-03-18T16:22:41Z",
               "LastBootUpTime": "2024-02-02T07:58:09Z", "LocalDateTime": "2024-02-02T12:03:47Z",
               "CSName": "HPFIREFLY16P"},
        "cs": {"Name": "HPFIREFLY16P", "DNSHostName": "HPFIREFLY16P", "Domain": "WORKGROUP",
               "Workgroup": "WORKGROUP", "PartOfDomain": False, "DomainRole": 0,
               "Manufacturer": "HP", "Model": "HP ZBook Firefly 16 inch G10 Mobile Workstation PC",
               "TotalPhysicalMemory": 68413493248},
        "cv": {"ProductName": "Windows 10 Pro", "EditionID": "Professional", "DisplayVersion": "22H2",
               "ReleaseId": "2009", "CurrentBuild": "22621", "UBR": 3007, "InstallationType": "Client"},
        "bios": {"Manufacturer": "HP", "SMBIOSBIOSVersion": "V90 Ver. 01.04.00", "SerialNumber": "5CG3281XYZ",
                 "ReleaseDate": "2023-08-09T00:00:00Z"},
        "csp": {"Vendor": "HP", "Name": "HP ZBook Firefly 16 inch G10 Mobile Workstation PC",
                "IdentifyingNumber": "5CG3281XYZ", "UUID": "8A1F3C2E-55B1-4D7A-9E0C-2B3F4A5C6D7E"},
        "cpu": {"Name": "13th Gen Intel(R) Core(TM) i7-1365U", "NumberOfCores": 10, "NumberOfLogicalProcessors": 12},
        "page": {"Name": "C:\\pagefile.sys", "AllocatedBaseSize": 4864},
        "packages": [
            pkg("Microsoft Visual C++ 2015-2022 Redistributable (x64) - 14.36.32532", "14.36.32532.0", "Microsoft Corporation", None, "x86"),
            pkg("Microsoft Edge", "121.0.2277.98", "Microsoft Corporation", "20240201", "x86"),
            pkg("Mozilla Firefox (x64 de)", "122.0", "Mozilla", None, "x64"),
            pkg("Büro Plus NexT", "5.2.1", "Büro Plus GmbH", "20230712", "x86"),
            pkg("微信", "3.9.8.25", "腾讯科技(深圳)有限公司", "20231130", "x86"),
            pkg("HP Wolf Security", "4.5.14.1075", "HP Inc.", "20230318", "x64"),
            pkg("Zoom Workplace", "5.17.5 (31030)", "Zoom Video Communications, Inc.", "20240115", "x64"),
            pkg("Microsoft 365 Apps for business - de-de", "16.0.17126.20132", "Microsoft Corporation", None, "x64"),
            pkg("Intel(R) Chipset Device Software", "10.1.19444.8378", "Intel(R) Corporation", "20230318", "x86", sc=1),
        ],
        "hotfixes": [
            {"HotFixID": "KB5034467", "Description": "Update", "InstalledOn": "1/24/2024"},
            {"HotFixID": "KB5027397", "Description": "Update", "InstalledOn": "6/13/2023"},
            {"HotFixID": "KB5034765", "Description": "Security Update", "InstalledOn": "2/1/2024"},
        ],
        "services": [
            svc("AarSvc_4d2e1", "Agent Activation Runtime_4d2e1", 1, 3),
            svc("Appinfo", "Application Information", 4, 3),
            svc("AudioEndpointBuilder", "Windows Audio Endpoint Builder", 4, 2),
            svc("Audiosrv", "Windows Audio", 4, 2),
            svc("BFE", "Base Filtering Engine", 4, 2),
            svc("BITS", "Background Intelligent Transfer Service", 4, 3),
            svc("Dnscache", "DNS Client", 4, 2),
            svc("edgeupdate", "Microsoft Edge Update Service (edgeupdate)", 1, 2),
            svc("HPAppHelperCap", "HP App Helper HSA Service", 4, 2),
            svc("Spooler", "Druckwarteschlange", 4, 2),
            svc("WinDefend", "Microsoft Defender Antivirus Service", 4, 2),
            svc("WinRM", "Windows-Remoteverwaltung (WS-Verwaltung)", 4, 3),
            svc("wuauserv", "Windows Update", 4, 3),
            svc("XblGameSave", "Xbox Live-Spiele speichern", 1, 3),
        ],
        "processes": [
            proc("Idle", 0, None), proc("System", 4, None), proc("Registry", 164, None),
            proc("explorer", 6220, "C:\\Windows\\Explorer.EXE"),
            proc("firefox", 10312, "C:\\Program Files\\Mozilla Firefox\\firefox.exe"),
            proc("WeChat", 11840, "C:\\Program Files (x86)\\Tencent\\WeChat\\WeChat.exe"),
            proc("svchost", 1288, SYS32 + "svchost.exe"),
            proc("wsmprovhost", 12996, SYS32 + "wsmprovhost.exe"),
            proc("powershell", 13020, SYS32 + "WindowsPowerShell\\v1.0\\powershell.exe"),
        ],
        "errors": {},
    }

def single_nulls():
    # Server 2012 R2 Core, Get-WmiObject fallback: DMTF dates, numbers as strings,
    # one of everything, nothing at all where a list was expected.
    return {
        "v": 1, "pa": None,
        "os": {"Caption": "Microsoft Windows Server 2012 R2 Standard ", "Version": "6.3.9600",
               "BuildNumber": "9600", "OSArchitecture": "64-bit",
               "InstallDate": "20190408113012.000000+120", "LastBootUpTime": "20240105021501.500000+060",
               "LocalDateTime": "20240106021501.500000+060", "CSName": "LEGACY-DB"},
        "cs": {"Name": "LEGACY-DB", "DNSHostName": None, "Domain": "WORKGROUP", "Workgroup": "WORKGROUP",
               "PartOfDomain": False, "DomainRole": "2", "Manufacturer": "Microsoft Corporation",
               "Model": "Virtual Machine", "TotalPhysicalMemory": "8589463552"},
        "cv": {"ProductName": "Windows Server 2012 R2 Standard", "EditionID": "ServerStandard",
               "DisplayVersion": None, "ReleaseId": None, "CurrentBuild": "9600", "UBR": None,
               "InstallationType": "Server Core"},
        "bios": {"Manufacturer": "American Megatrends Inc.", "SMBIOSBIOSVersion": "090008 ",
                 "SerialNumber": "0", "ReleaseDate": "20121207000000.000000+000"},
        "csp": {"Vendor": "Microsoft Corporation", "Name": "Virtual Machine", "IdentifyingNumber": "",
                "UUID": "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"},
        "cpu": {"Name": "Intel(R) Xeon(R) CPU E5-2673 v4 @ 2.30GHz", "NumberOfCores": "2", "NumberOfLogicalProcessors": "4"},
        "page": None,
        "packages": None,
        "hotfixes": {"HotFixID": "KB2919355", "Description": "Update", "InstalledOn": "/Date(1396742400000)/"},
        "services": {"Name": "MSSQLSERVER", "DisplayName": "SQL Server (MSSQLSERVER)", "Status": "Running", "StartType": "Automatic"},
        "processes": {"value": [proc("Idle", 0, None), proc("sqlservr", "1844", "C:\\Program Files\\Microsoft SQL Server\\MSSQL12.MSSQLSERVER\\MSSQL\\Binn\\sqlservr.exe")], "Count": 2},
        "errors": {},
    }

def partial():
    # Windows 10 22H2 member workstation, collected by a non-administrator
    # whose WMI/SCM rights are incomplete.
    doc = windows_11()
    doc["os"].update({"Caption": "Microsoft Windows 10 Enterprise", "Version": "10.0.19045", "BuildNumber": "19045", "CSName": "PC-LAGER-07"})
    del doc["cs"], doc["bios"], doc["services"], doc["hotfixes"]
    doc["cv"].update({"EditionID": "Enterprise", "CurrentBuild": "19045", "UBR": 3930})
    doc["errors"] = {
        "cs": "Access denied ",
        "bios": "Access is denied. (Exception from HRESULT: 0x80070005 (E_ACCESSDENIED))",
        "hotfixes": "Provider load failure ",
        "services": "Cannot open Service Control Manager on computer '.'. This operation might require other privileges.",
    }
    return doc

SOURCES = {
    "server-2022-datacenter.json": [
        "Output shape of collect.ps1 (Windows PowerShell 5.1 escapes), assembled by testdata/windows/make.py.",
        "Installed software: AsBuiltReport/AsBuiltReport.Microsoft.Windows issue #25 (Uninstall keys of a lab server: 7-Zip 19.00 (x64), VMware Tools, Veeam, ODBC 17, VC++ 2022 X64 runtimes 14.36.32532, Git, DiskMax 6.21).",
        "Update entry without DisplayName->ParentKeyName: HeroicGamesLauncher issue #1775 (WOW6432Node {F0C3E5D1-...}.KB2565063 keys).",
        "Service names/display names/default start types: ss64.com/nt/syntax-services.html list and a public `sc query` transcript (AppIDSvc, Appinfo, AudioEndpointBuilder, Audiosrv, BFE).",
        "Build 20348 / UBR, VMware DMI strings: typical Server 2022 on vSphere 7; hostnames, serials and UUID are made up.",
    ],
    "windows-11-pro-22h2.json": [
        "Output shape of collect.ps1 (Windows PowerShell 5.1 escapes), assembled by testdata/windows/make.py.",
        "Win32_OperatingSystem values: OSDeploy/OSDCloudScripts WMI/Classes/Win32_OperatingSystem.ps1 (HPFIREFLY16P, Microsoft Windows 11 Pro, BuildNumber 22621, 64-bit; registry ProductName still says Windows 10 Pro on 11).",
        "Non-ASCII entries (German display names, Büro, 微信 / 腾讯科技(深圳)有限公司) as they appear in Uninstall keys of localised installs; VC++ name format from the VcRedist module's published list.",
    ],
    "server-2012r2-single-objects.json": [
        "Output shape of collect.ps1 through the Get-WmiObject fallback on Windows PowerShell 5.1 (DMTF dates, numbers and enums as strings, one object instead of an array, null for no page file / no packages, the {value,Count} array wrapper), assembled by testdata/windows/make.py.",
        "Hyper-V guest DMI strings (Microsoft Corporation / Virtual Machine / American Megatrends 090008, serial 0, unset UUID) and KB2919355 (the 2012 R2 April 2014 update) are public, well-known values.",
    ],
    "windows-10-partial-errors.json": [
        "collect.ps1 output where sections threw, assembled by testdata/windows/make.py.",
        "Error texts are the messages Get-CimInstance ('Access denied ', 'Provider load failure '), Get-WmiObject (E_ACCESSDENIED) and Get-Service (Service Control Manager) print for a non-administrator.",
    ],
}

if __name__ == "__main__":
    for name, build in (("server-2022-datacenter.json", server_2022), ("windows-11-pro-22h2.json", windows_11),
                        ("server-2012r2-single-objects.json", single_nulls), ("windows-10-partial-errors.json", partial)):
        with open(name, "w") as f:
            for line in SOURCES[name]:
                f.write("#!source: " + line + "\n")
            f.write(ps51(build()) + "\n")
