//! Section objects (already decoded JSON) → typed properties. Pure.

use serde_json::Value;

use super::json::{
    boolean, day, dmi_day, field, instant, object, objects, text, timestamp, uint, Object,
};
use crate::hardware::{dmi_value, Hardware};
use crate::hotfixes::Hotfix;
use crate::os::Os;
use crate::packages::{Manager, Package};
use crate::processes::Process;
use crate::services::Service;
use crate::ParseError;

/// `Win32_ComputerSystem.DomainRole` → name.
pub fn domain_role(role: u64) -> Option<&'static str> {
    Some(match role {
        0 => "standalone_workstation",
        1 => "member_workstation",
        2 => "standalone_server",
        3 => "member_server",
        4 => "backup_domain_controller",
        5 => "primary_domain_controller",
        _ => return None,
    })
}

/// `PROCESSOR_ARCHITECTURE` (or `OSArchitecture`) → `uname -m` style.
pub fn arch(processor_architecture: Option<&str>, os_architecture: Option<&str>) -> Option<String> {
    if let Some(pa) = processor_architecture {
        let a = match pa.to_ascii_uppercase().as_str() {
            "AMD64" | "X64" => "x86_64",
            "ARM64" => "aarch64",
            "X86" => "x86",
            "ARM" => "arm",
            "IA64" => "ia64",
            _ => "",
        };
        if !a.is_empty() {
            return Some(a.to_owned());
        }
    }
    // OSArchitecture is localised ("64-bit", "64 bits", "ARM 64-bit Processor").
    let oa = os_architecture?.to_ascii_lowercase();
    Some(
        if oa.contains("arm") && oa.contains("64") {
            "aarch64"
        } else if oa.contains("64") {
            "x86_64"
        } else if oa.contains("32") {
            "x86"
        } else {
            return None;
        }
        .to_owned(),
    )
}

/// `os` from `Win32_OperatingSystem` (required), `Win32_ComputerSystem` and
/// the `CurrentVersion` registry key (optional).
pub fn os(
    os_section: &Value,
    cs: Option<&Value>,
    cv: Option<&Value>,
    processor_architecture: Option<&str>,
) -> Result<Os, ParseError> {
    let o = object(os_section)?;
    let caption = text(o, "Caption");
    let version = text(o, "Version");
    if caption.is_none() && version.is_none() {
        return Err(ParseError::Invalid(
            "Win32_OperatingSystem has no Caption or Version".into(),
        ));
    }
    let cs = cs.and_then(|v| object(v).ok());
    let cv = cv.and_then(|v| object(v).ok());
    let reg = |k: &str| cv.and_then(|c| text(c, k));
    let ubr = cv
        .and_then(|c| uint(c, "UBR"))
        .and_then(|u| u32::try_from(u).ok());
    let display_version = reg("DisplayVersion").or_else(|| reg("ReleaseId"));
    let build_number = text(o, "BuildNumber").or_else(|| reg("CurrentBuild"));
    let pretty_name = caption.as_ref().map(|c| match &display_version {
        Some(d) => format!("{c} {d}"),
        None => c.clone(),
    });
    let kernel_release = match (&version, ubr) {
        (Some(v), Some(u)) => Some(format!("{v}.{u}")),
        (v, _) => v.clone(),
    };
    let boot = timestamp(o, "LastBootUpTime");
    let now = timestamp(o, "LocalDateTime");
    let uptime_seconds = match (boot, now) {
        (Some(b), Some(n)) if n >= b => Some((n - b) as u64),
        _ => None,
    };
    let hostname = cs
        .and_then(|c| text(c, "DNSHostName").or_else(|| text(c, "Name")))
        .or_else(|| text(o, "CSName"));
    let role = cs.and_then(|c| uint(c, "DomainRole"));
    let joined = cs
        .and_then(|c| boolean(c, "PartOfDomain"))
        .or_else(|| role.map(|r| !matches!(r, 0 | 2)));
    let (domain, workgroup) = match (cs, joined) {
        (Some(c), Some(true)) => (text(c, "Domain"), None),
        (Some(c), Some(false)) => (None, text(c, "Workgroup").or_else(|| text(c, "Domain"))),
        _ => (None, None),
    };
    Ok(Os {
        family: "windows".into(),
        name: caption,
        id: Some("windows".into()),
        id_like: Vec::new(),
        version_id: version,
        pretty_name,
        kernel_release,
        arch: arch(processor_architecture, text(o, "OSArchitecture").as_deref()),
        hostname,
        uptime_seconds,
        boot_time: instant(o, "LastBootUpTime"),
        build_number,
        ubr,
        edition: reg("EditionID"),
        display_version,
        installation_type: reg("InstallationType"),
        install_date: instant(o, "InstallDate"),
        domain,
        workgroup,
        domain_role: role.and_then(domain_role).map(str::to_owned),
    })
}

/// The hardware sections; `None` = that section is not usable.
#[derive(Debug, Clone, Copy, Default)]
pub struct HardwareInputs<'a> {
    pub cs: Option<&'a Value>,
    pub bios: Option<&'a Value>,
    pub csp: Option<&'a Value>,
    pub cpu: Option<&'a Value>,
    pub page: Option<&'a Value>,
}

/// Hypervisor from the system manufacturer/model, named like
/// `systemd-detect-virt` does; `None` when it looks like bare metal.
pub fn virtualization(vendor: Option<&str>, model: Option<&str>) -> Option<String> {
    let v = vendor.unwrap_or("").to_ascii_lowercase();
    let m = model.unwrap_or("").to_ascii_lowercase();
    let name = if m.contains("vmware") || v.contains("vmware") {
        "vmware"
    } else if v.contains("microsoft") && m.contains("virtual machine") {
        "microsoft"
    } else if m.contains("virtualbox") || v.contains("innotek") {
        "oracle"
    } else if v.contains("xen") || m.contains("hvm domu") {
        "xen"
    } else if v.contains("amazon") {
        "amazon"
    } else if v.contains("google") {
        "google"
    } else if m.contains("kvm") || v.contains("qemu") || m.starts_with("standard pc (") {
        "kvm"
    } else {
        return None;
    };
    Some(name.to_owned())
}

fn uuid(o: &Object) -> Option<String> {
    let u = text(o, "UUID")?.to_ascii_lowercase();
    // Unset in firmware.
    if u.bytes().all(|b| b == b'f' || b == b'-') || u.bytes().all(|b| b == b'0' || b == b'-') {
        return None;
    }
    Some(u)
}

/// `hardware` from whatever hardware sections are usable. Errors when none is
/// or when none of them says anything.
pub fn hardware(i: HardwareInputs<'_>) -> Result<Hardware, ParseError> {
    let mut hw = Hardware::default();
    let mut any = false;
    let mut first_err = None;
    let mut one = |v: Option<&Value>| -> Option<Object> {
        match object(v?) {
            Ok(o) => Some(o.clone()),
            Err(e) => {
                first_err.get_or_insert(e);
                None
            }
        }
    };
    let cs = one(i.cs);
    let bios = one(i.bios);
    let csp = one(i.csp);
    let dmi = |o: &Option<Object>, k: &str| {
        o.as_ref()
            .and_then(|o| text(o, k))
            .and_then(|v| dmi_value(&v))
    };
    if let Some(c) = &cs {
        any = true;
        hw.vendor = dmi(&cs, "Manufacturer");
        hw.model = dmi(&cs, "Model");
        hw.memory_bytes = uint(c, "TotalPhysicalMemory");
    }
    if let Some(b) = &bios {
        any = true;
        hw.serial = dmi(&bios, "SerialNumber");
        hw.bios_vendor = dmi(&bios, "Manufacturer");
        hw.bios_version = dmi(&bios, "SMBIOSBIOSVersion");
        hw.bios_date = dmi_day(b, "ReleaseDate");
    }
    if let Some(p) = &csp {
        any = true;
        hw.uuid = uuid(p);
        hw.serial = hw.serial.take().or_else(|| dmi(&csp, "IdentifyingNumber"));
        hw.vendor = hw.vendor.take().or_else(|| dmi(&csp, "Vendor"));
        hw.model = hw.model.take().or_else(|| dmi(&csp, "Name"));
    }
    hw.virtualization = virtualization(hw.vendor.as_deref(), hw.model.as_deref());
    if let Some(v) = i.cpu {
        match objects(v) {
            Ok(sockets) if !sockets.is_empty() => {
                any = true;
                hw.cpu_model = sockets.iter().find_map(|s| text(s, "Name"));
                hw.cpu_sockets = u32::try_from(sockets.len()).ok();
                let sum = |k: &str| -> Option<u32> {
                    let vals: Vec<u64> = sockets.iter().filter_map(|s| uint(s, k)).collect();
                    (!vals.is_empty())
                        .then(|| vals.iter().sum::<u64>())
                        .and_then(|s| u32::try_from(s).ok())
                };
                hw.cpu_cores = sum("NumberOfCores");
                hw.cpu_threads = sum("NumberOfLogicalProcessors");
            }
            Ok(_) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(v) = i.page {
        match objects(v) {
            Ok(files) => {
                any = true;
                // MB; no page file at all → 0.
                let mb: u64 = files
                    .iter()
                    .filter_map(|f| uint(f, "AllocatedBaseSize").or_else(|| uint(f, "MaximumSize")))
                    .sum();
                hw.swap_bytes = mb.checked_mul(1024 * 1024);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if any {
        Ok(hw)
    } else {
        Err(first_err.unwrap_or(ParseError::Empty))
    }
}

/// Entries that Programs and Features hides: system components and updates
/// of another product.
fn hidden(o: &Object) -> bool {
    uint(o, "SystemComponent") == Some(1)
        || text(o, "ParentKeyName").is_some()
        || text(o, "ReleaseType").is_some_and(|t| {
            matches!(
                t.to_ascii_lowercase().as_str(),
                "update" | "security update" | "hotfix" | "service pack" | "servicepack"
            )
        })
}

/// `packages` from the Uninstall keys. `native_arch` is the label of the
/// 64-bit hive on this OS (`x86` on 32-bit Windows, which has no WOW6432Node).
pub fn packages(v: &Value, os_is_32bit: bool) -> Result<Vec<Package>, ParseError> {
    let mut out = Vec::new();
    for o in objects(v)? {
        let Some(name) = text(o, "DisplayName") else {
            continue;
        };
        if hidden(o) {
            continue;
        }
        let arch = text(o, "Arch").map(|a| if os_is_32bit { "x86".to_owned() } else { a });
        out.push(Package {
            name,
            epoch: None,
            version: text(o, "DisplayVersion").unwrap_or_default(),
            release: None,
            arch,
            source: None,
            manager: Manager::Registry,
            publisher: text(o, "Publisher"),
            install_date: day(o, "InstallDate"),
        });
    }
    Ok(out)
}

/// `hotfixes` from `Win32_QuickFixEngineering`.
pub fn hotfixes(v: &Value) -> Result<Vec<Hotfix>, ParseError> {
    Ok(objects(v)?
        .into_iter()
        .filter_map(|o| {
            let id = text(o, "HotFixID")?;
            Some(Hotfix {
                description: text(o, "Description"),
                installed_on: day(o, "InstalledOn"),
                id,
            })
        })
        .collect())
}

/// `ServiceControllerStatus` (number or name) → (systemd-like active state, state name).
fn service_state(v: Option<&Value>) -> (&'static str, String) {
    let name = match v {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(1) => "stopped",
            Some(2) => "start_pending",
            Some(3) => "stop_pending",
            Some(4) => "running",
            Some(5) => "continue_pending",
            Some(6) => "pause_pending",
            Some(7) => "paused",
            _ => "unknown",
        }
        .to_owned(),
        Some(Value::String(s)) => {
            // "Running", "StartPending", "Start Pending" (Win32_Service) → snake_case.
            let mut out = String::new();
            for (i, c) in s.trim().chars().enumerate() {
                if c == ' ' {
                    out.push('_');
                } else if c.is_ascii_uppercase() && i > 0 && !out.ends_with('_') {
                    out.push('_');
                    out.push(c.to_ascii_lowercase());
                } else {
                    out.push(c.to_ascii_lowercase());
                }
            }
            if out.is_empty() {
                "unknown".to_owned()
            } else {
                out
            }
        }
        _ => "unknown".to_owned(),
    };
    let active = match name.as_str() {
        "running" | "paused" => "active",
        "stopped" => "inactive",
        "start_pending" | "continue_pending" => "activating",
        "stop_pending" | "pause_pending" => "deactivating",
        _ => "unknown",
    };
    (active, name)
}

/// `ServiceStartMode` (number or name) → start mode name.
fn start_mode(v: Option<&Value>) -> Option<&'static str> {
    Some(match v? {
        Value::Number(n) => match n.as_u64()? {
            0 => "boot",
            1 => "system",
            2 => "automatic",
            3 => "manual",
            4 => "disabled",
            _ => return None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "boot" => "boot",
            "system" => "system",
            "auto" | "automatic" => "automatic",
            "manual" => "manual",
            "disabled" => "disabled",
            _ => return None,
        },
        _ => return None,
    })
}

/// `services` from `Get-Service` (or `Win32_Service`-shaped objects).
pub fn services(v: &Value) -> Result<Vec<Service>, ParseError> {
    Ok(objects(v)?
        .into_iter()
        .filter_map(|o| {
            let name = text(o, "Name")?;
            let (active, sub) = service_state(field(o, "Status").or_else(|| field(o, "State")));
            let mode = start_mode(field(o, "StartType").or_else(|| field(o, "StartMode")));
            Some(Service {
                name,
                load: "loaded".into(),
                active: active.into(),
                sub,
                enabled: mode.map(|m| {
                    match m {
                        "manual" => "manual",
                        "disabled" => "disabled",
                        _ => "enabled",
                    }
                    .to_owned()
                }),
                display_name: text(o, "DisplayName"),
                start_mode: mode.map(str::to_owned),
            })
        })
        .collect())
}

/// `processes` from `Get-Process`.
pub fn processes(v: &Value) -> Result<Vec<Process>, ParseError> {
    Ok(objects(v)?
        .into_iter()
        .filter_map(|o| {
            Some(Process {
                name: text(o, "Name")?,
                pid: u32::try_from(uint(o, "Id")?).ok()?,
                path: text(o, "Path"),
            })
        })
        .collect())
}
