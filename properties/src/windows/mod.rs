//! Windows: the one PowerShell script sent to a host and the pure parser of
//! what it prints.
//!
//! [`script`] returns `collect.ps1` without comments and indentation (about
//! 2,100 characters, so `powershell -EncodedCommand` stays far below the
//! 8,191-character command line). It only reads: `Get-CimInstance` (falling
//! back to `Get-WmiObject`), `Get-ItemProperty` on HKLM, `Get-Service`,
//! `Get-Process`. It prints one compressed JSON object whose keys are the
//! sections below, plus `v` (format version), `pa` (`PROCESSOR_ARCHITECTURE`)
//! and `errors` (section → message) for the sections that threw; every
//! non-ASCII character is written as a `\uXXXX` escape, so the console code
//! page cannot garble names.
//!
//! | section | source | property |
//! |---|---|---|
//! | `os` | `Win32_OperatingSystem` (Caption, Version, BuildNumber, OSArchitecture, InstallDate, LastBootUpTime, LocalDateTime, CSName) | `os` |
//! | `cs` | `Win32_ComputerSystem` (names, Domain, Workgroup, PartOfDomain, DomainRole, Manufacturer, Model, TotalPhysicalMemory) | `os`, `hardware` |
//! | `cv` | `HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion` (EditionID, DisplayVersion, ReleaseId, CurrentBuild, UBR, InstallationType) | `os` |
//! | `bios` | `Win32_BIOS` (Manufacturer, SMBIOSBIOSVersion, SerialNumber, ReleaseDate) | `hardware` |
//! | `csp` | `Win32_ComputerSystemProduct` (UUID, IdentifyingNumber) | `hardware` |
//! | `cpu` | `Win32_Processor`, one per socket (Name, NumberOfCores, NumberOfLogicalProcessors) | `hardware` |
//! | `page` | `Win32_PageFileUsage` AllocatedBaseSize (MB), else `Win32_PageFileSetting` MaximumSize | `hardware` |
//! | `packages` | `Uninstall\*` of `HKLM:\SOFTWARE` (`x64`) and `HKLM:\SOFTWARE\WOW6432Node` (`x86`) with a DisplayName | `packages` |
//! | `hotfixes` | `Win32_QuickFixEngineering` (HotFixID, Description, InstalledOn) | `hotfixes` |
//! | `services` | `Get-Service` (Name, DisplayName, Status, StartType) | `services` |
//! | `processes` | `Get-Process` (Name, Id, Path) | `processes` |
//!
//! [`collect`] is pure: it reads the JSON leniently (see `json.rs` for the
//! shapes PowerShell 5.1 and 7 produce), builds each property on its own, and
//! turns the `errors` map into [`PropertyError`]s. A section that failed next
//! to a usable one (e.g. `cv` next to `os`) keeps the property and adds an
//! error naming the section.
//!
//! Packages follow Programs and Features: entries with `SystemComponent = 1`,
//! a `ParentKeyName` (updates of another product) or an update `ReleaseType`
//! are left out. Services map onto the common shape: `load` is `loaded`,
//! `active` is `active`/`inactive`/`activating`/`deactivating`, `sub` is the
//! Windows state (`running`, `stopped`, `paused`, `start_pending`, …),
//! `enabled` is `enabled`/`manual`/`disabled`, and `start_mode` keeps the
//! exact start mode.

mod json;
pub mod parse;
pub mod probe;

use std::sync::OnceLock;

use serde_json::Value;

use crate::util::excerpt;
use crate::{Collected, ErrorKind, ParseError, Properties, PropertyError};

const SOURCE: &str = include_str!("collect.ps1");

/// The collection script, minimised: comment lines, indentation and blank
/// lines removed. Run it with `powershell.exe -NoProfile -NonInteractive
/// -EncodedCommand <base64 of UTF-16LE>` (or on stdin).
pub fn script() -> &'static str {
    static MIN: OnceLock<String> = OnceLock::new();
    MIN.get_or_init(|| minimise(SOURCE))
}

fn minimise(source: &str) -> String {
    source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which properties a section feeds.
fn properties_of(section: &str) -> &'static [&'static str] {
    match section {
        "os" | "cv" => &["os"],
        "cs" => &["os", "hardware"],
        "bios" | "csp" | "cpu" | "page" => &["hardware"],
        "packages" => &["packages"],
        "hotfixes" => &["hotfixes"],
        "services" => &["services"],
        "processes" => &["processes"],
        _ => &[],
    }
}

/// Classify a PowerShell / WMI error message.
pub fn classify(message: &str) -> ErrorKind {
    let m = message.to_ascii_lowercase();
    const DENIED: [&str; 7] = [
        "access is denied",
        "access denied",
        "0x80070005",
        "unauthorizedaccess",
        "requested registry access is not allowed",
        "permissiondenied",
        "privilege",
    ];
    const NOT_FOUND: [&str; 6] = [
        "invalid class",
        "invalid namespace",
        "is not recognized as the name of a cmdlet",
        "cannot find path",
        "not found",
        "does not exist",
    ];
    const UNAVAILABLE: [&str; 7] = [
        "rpc server is unavailable",
        "0x800706ba",
        "provider load failure",
        "service cannot be started",
        "winmgmt",
        "quota violation",
        "not available",
    ];
    if DENIED.iter().any(|p| m.contains(p)) {
        ErrorKind::PermissionDenied
    } else if NOT_FOUND.iter().any(|p| m.contains(p)) {
        ErrorKind::NotFound
    } else if UNAVAILABLE.iter().any(|p| m.contains(p)) {
        ErrorKind::Unavailable
    } else {
        ErrorKind::CommandFailed
    }
}

/// Readable text of PowerShell's CLIXML error stream (`#< CLIXML` and
/// `<S S="Error">…</S>` records with `_x000D__x000A_` escapes); other text is
/// returned as is.
pub fn stderr_text(stderr: &str) -> String {
    let Some(body) = stderr.trim_start().strip_prefix("#< CLIXML") else {
        return stderr.to_owned();
    };
    let mut out = String::new();
    let mut rest = body;
    while let Some(i) = rest.find("<S S=\"Error\">") {
        rest = &rest[i + 13..];
        let end = rest.find("</S>").unwrap_or(rest.len());
        out.push_str(&unescape_clixml(&rest[..end]));
        rest = &rest[end..];
    }
    out
}

fn unescape_clixml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("_x") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let code = tail
            .get(2..6)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()) && tail.get(6..7) == Some("_"))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32);
        match code {
            Some(c) => {
                out.push(c);
                rest = &tail[7..];
            }
            None => {
                out.push_str("_x");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Bytes → text: UTF-8 (BOM dropped), or UTF-16LE when it looks like it.
fn decode(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xff, 0xfe]) {
        return utf16le(rest);
    }
    let bytes = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(bytes);
    let odd_zeros = bytes.iter().skip(1).step_by(2).filter(|&&b| b == 0).count();
    if bytes.len() >= 4 && odd_zeros * 2 > bytes.len() / 2 {
        return utf16le(bytes);
    }
    String::from_utf8_lossy(bytes).into_owned()
}

fn utf16le(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// The JSON document in stdout: the whole text, else the last line that is one.
fn document(stdout: &str) -> Option<serde_json::Map<String, Value>> {
    let whole = stdout.trim();
    if let Ok(Value::Object(o)) = serde_json::from_str(whole) {
        return Some(o);
    }
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .find_map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(o)) => Some(o),
            _ => None,
        })
}

fn err(property: &str, kind: ErrorKind, message: String) -> PropertyError {
    PropertyError {
        property: property.to_owned(),
        kind,
        message,
    }
}

/// The decoded output and its `errors` map.
struct Output {
    doc: serde_json::Map<String, Value>,
    failed: Vec<(String, String)>,
}

impl Output {
    /// A section's value, unless it failed or is absent.
    fn get(&self, section: &str) -> Option<&Value> {
        if self.failed(section).is_some() {
            return None;
        }
        self.doc.get(section)
    }

    fn failed(&self, section: &str) -> Option<&str> {
        self.failed
            .iter()
            .find(|(s, _)| s == section)
            .map(|(_, m)| m.as_str())
    }

    /// Why `section` is unusable for `property`: its error, or "absent".
    fn section_error(&self, property: &str, section: &str) -> PropertyError {
        match self.failed(section) {
            Some(m) => err(
                property,
                classify(m),
                format!("section {section} failed: {}", excerpt(m)),
            ),
            None => err(
                property,
                ErrorKind::Missing,
                format!("section {section} is absent from the output"),
            ),
        }
    }
}

fn parse_err(property: &str, section: &str, e: &ParseError) -> PropertyError {
    err(
        property,
        ErrorKind::ParseError,
        format!("section {section}: {e}"),
    )
}

/// Parse the output of [`script`]. Every property that can be built is built;
/// each failure is reported in `errors` with the property's field name
/// (`"*"` when the output as a whole is unusable).
pub fn collect(stdout: &[u8], stderr: &[u8], exit_code: Option<i32>) -> Collected {
    let out_text = decode(stdout);
    let Some(doc) = document(&out_text) else {
        return unusable(&out_text, &stderr_text(&decode(stderr)), exit_code);
    };
    let mut failed = Vec::new();
    if let Some(Value::Object(map)) = doc.get("errors") {
        for (section, message) in map {
            let message = match message {
                Value::String(s) => s.clone(),
                Value::Null => "unknown error".to_owned(),
                other => other.to_string(),
            };
            failed.push((section.clone(), message));
        }
    }
    let out = Output { doc, failed };
    let mut p = Properties::default();
    let mut errors = Vec::new();

    // Sections that failed but feed no known property.
    for (section, message) in &out.failed {
        if properties_of(section).is_empty() {
            errors.push(err(
                "*",
                classify(message),
                format!("section {section} failed: {}", excerpt(message)),
            ));
        }
    }

    let pa = out.doc.get("pa").and_then(Value::as_str);

    // os
    match out.get("os") {
        Some(v) => match parse::os(v, out.get("cs"), out.get("cv"), pa) {
            Ok(os) => {
                for s in ["cs", "cv"] {
                    if out.failed(s).is_some() {
                        errors.push(out.section_error("os", s));
                    }
                }
                p.os = Some(os);
            }
            Err(e) => errors.push(parse_err("os", "os", &e)),
        },
        None => errors.push(out.section_error("os", "os")),
    }
    let os_is_32bit = p.os.as_ref().and_then(|o| o.arch.as_deref()) == Some("x86");

    // hardware
    const HW: [&str; 5] = ["cs", "bios", "csp", "cpu", "page"];
    let inputs = parse::HardwareInputs {
        cs: out.get("cs"),
        bios: out.get("bios"),
        csp: out.get("csp"),
        cpu: out.get("cpu"),
        page: out.get("page"),
    };
    match parse::hardware(inputs) {
        Ok(hw) => {
            errors.extend(
                HW.iter()
                    .filter(|s| out.failed(s).is_some())
                    .map(|s| out.section_error("hardware", s)),
            );
            p.hardware = Some(hw);
        }
        Err(ParseError::Empty) => {
            errors.extend(
                HW.iter()
                    .map(|s| out.section_error("hardware", s))
                    .filter(|e| e.kind != ErrorKind::Missing),
            );
            if !errors.iter().any(|e| e.property == "hardware") {
                errors.push(err(
                    "hardware",
                    ErrorKind::Missing,
                    "sections cs, bios, csp, cpu and page are absent from the output".into(),
                ));
            }
        }
        Err(e) => errors.push(parse_err("hardware", "cs/bios/csp/cpu/page", &e)),
    }

    // packages, hotfixes, services, processes: one section each.
    match out.get("packages") {
        Some(v) => match parse::packages(v, os_is_32bit) {
            Ok(list) => p.packages = Some(list),
            Err(e) => errors.push(parse_err("packages", "packages", &e)),
        },
        None => errors.push(out.section_error("packages", "packages")),
    }
    match out.get("hotfixes") {
        Some(v) => match parse::hotfixes(v) {
            Ok(list) => p.hotfixes = Some(list),
            Err(e) => errors.push(parse_err("hotfixes", "hotfixes", &e)),
        },
        None => errors.push(out.section_error("hotfixes", "hotfixes")),
    }
    match out.get("services") {
        Some(v) => match parse::services(v) {
            Ok(list) => p.services = Some(list),
            Err(e) => errors.push(parse_err("services", "services", &e)),
        },
        None => errors.push(out.section_error("services", "services")),
    }
    match out.get("processes") {
        Some(v) => match parse::processes(v) {
            Ok(list) => p.processes = Some(list),
            Err(e) => errors.push(parse_err("processes", "processes", &e)),
        },
        None => errors.push(out.section_error("processes", "processes")),
    }

    Collected {
        properties: p,
        errors,
    }
}

/// No JSON document: one error for the whole output.
fn unusable(stdout: &str, stderr: &str, exit_code: Option<i32>) -> Collected {
    let code = match exit_code {
        Some(c) => format!("exit code {c}"),
        None => "no exit code".to_owned(),
    };
    let (kind, message) = if !stderr.trim().is_empty() {
        (
            classify(stderr),
            format!("the script printed no JSON ({code}): {}", excerpt(stderr)),
        )
    } else if stdout.trim().is_empty() {
        (
            ErrorKind::Missing,
            format!("the script printed nothing ({code})"),
        )
    } else {
        (
            ErrorKind::ParseError,
            format!(
                "the script's output is not a JSON object ({code}): {}",
                excerpt(stdout)
            ),
        )
    };
    Collected {
        properties: Properties::default(),
        errors: vec![err("*", kind, message)],
    }
}

#[cfg(test)]
mod tests;
