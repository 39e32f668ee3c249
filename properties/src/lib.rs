//! # luumen-properties
//!
//! The property catalogue of luumen-agent: *what* to run on a host and *how* to
//! read it back. No I/O happens here: the transports (SSH, WinRM) live elsewhere.
//!
//! ## Flow
//!
//! 1. [`plan::Plan::linux`] builds one composite, read-only POSIX `sh` script
//!    (`src/plan/linux.sh`) framed by a per-run marker. The caller execs the fixed
//!    command [`plan::Plan::command`] (`/bin/sh -s`) and writes
//!    [`plan::Plan::script`] to its stdin.
//! 2. [`plan::Plan::split`] cuts the raw stdout/stderr into named
//!    [`plan::Section`]s (never fails; truncated sections have `exit_code: None`).
//! 3. [`linux::collect`] turns the sections into typed [`Properties`] plus a list
//!    of [`PropertyError`]s. Each property is parsed independently by a pure
//!    parser in its own module (`os`, `hardware`, `packages`, `selinux`, `tuned`,
//!    `cron`, `services`); one broken section never hides the others.
//!
//! ## Sections of the Linux script
//!
//! | section | command(s) | sudo |
//! |---|---|---|
//! | `os_release` | `cat /etc/os-release` (fallback `/usr/lib/os-release`) | no |
//! | `os_legacy` | `/etc/*-release`, `/etc/*_version`, `/etc/alpine-release` with `==> FILE <==` headers | no |
//! | `uname` | `uname -n`, `uname -r`, `uname -m` | no |
//! | `uptime` | `cat /proc/uptime`, `grep '^btime ' /proc/stat` | no |
//! | `dmi` | `/sys/devices/virtual/dmi/id/*` as `key=value` (`key!unreadable` for 0400 files) | no |
//! | `dmidecode` | `dmidecode -t bios -t system`, only when serial/uuid exist but are unreadable | yes |
//! | `cpuinfo` | `/proc/cpuinfo` filtered to topology/model lines | no |
//! | `meminfo` | `MemTotal`/`SwapTotal` of `/proc/meminfo` | no |
//! | `virt` | `systemd-detect-virt` | no |
//! | `packages_dpkg` | `/var/lib/dpkg/status` filtered with `grep -E '^(Package\|Status\|Version\|Architecture\|Source):\|^$'` | no |
//! | `packages_rpm` | `rpm -qa --queryformat '%{NAME} %{EPOCH} %{VERSION} %{RELEASE} %{ARCH} %{SOURCERPM}\n'` | no |
//! | `packages_apk` | `/lib/apk/db/installed` filtered with `grep -E '^(P\|V\|A\|o):\|^$'` | no |
//! | `selinux` | `/sys/fs/selinux/enforce`, `getenforce`, `SELINUX*=` of `/etc/selinux/config` | `getenforce` only if needed |
//! | `tuned` | `/etc/tuned/active_profile` (else `tuned-adm active`), `systemctl is-active tuned` | `tuned-adm` only |
//! | `cron_root` | `cat` of root's crontab (`/var/spool/cron/{tabs/,crontabs/,}root`) | yes |
//! | `cron_system` | `/etc/crontab`, `/etc/cron.d/*` with `==> FILE <==` headers | no |
//! | `services_units` | `systemctl list-units --type=service --all --no-legend --no-pager --plain` | no |
//! | `services_unit_files` | `systemctl list-unit-files --type=service --no-legend --no-pager` | no |
//!
//! Package sections are emitted only for the package managers present.
//!
//! ## Windows
//!
//! [`windows::script`] is one read-only PowerShell script (`src/windows/collect.ps1`,
//! minimised to about 2,100 characters so `-EncodedCommand` fits the command line) that
//! prints one JSON document; [`windows::collect`] parses it into the same [`Properties`]
//! (`os.family = "windows"`), plus `hotfixes` and `processes`. Each section runs in its
//! own `try`/`catch`; a failed one is listed in the document's `errors` map and becomes a
//! [`PropertyError`] of the properties it feeds.
//!
//! | section | source | property |
//! |---|---|---|
//! | `os` | `Win32_OperatingSystem` | `os` |
//! | `cs` | `Win32_ComputerSystem` (domain, workgroup, role, model, memory) | `os`, `hardware` |
//! | `cv` | `HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion` (UBR, EditionID, DisplayVersion) | `os` |
//! | `bios`, `csp`, `cpu`, `page` | `Win32_BIOS`, `Win32_ComputerSystemProduct`, `Win32_Processor`, `Win32_PageFileUsage` (else `Win32_PageFileSetting`) | `hardware` |
//! | `packages` | `Uninstall\*` keys of HKLM (`x64`) and HKLM `WOW6432Node` (`x86`); manager `registry` | `packages` |
//! | `hotfixes` | `Win32_QuickFixEngineering` | `hotfixes` |
//! | `services` | `Get-Service` | `services` |
//! | `processes` | `Get-Process` | `processes` |

pub mod cron;
pub mod hardware;
pub mod hotfixes;
pub mod linux;
pub mod os;
pub mod packages;
pub mod plan;
pub mod privileges;
pub mod processes;
pub mod selinux;
pub mod services;
pub mod tuned;
mod util;
pub mod windows;

use serde::{Deserialize, Serialize};

/// What went wrong with one property on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyError {
    /// The property's field name in [`Properties`] (e.g. `"services"`).
    pub property: String,
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not allowed to read it (no root, sudo refused or not configured).
    PermissionDenied,
    /// A required tool or file is missing on the host.
    NotFound,
    /// The facility exists but is not usable (e.g. systemd is not PID 1).
    Unavailable,
    /// The command ran and failed for another reason.
    CommandFailed,
    /// The output could not be understood.
    ParseError,
    /// The section is absent or truncated (END marker never came).
    Missing,
}

/// A typed parser failure (parsers are pure: `&str` in, value or this out).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty input")]
    Empty,
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// All properties of one host. `None` = not collected (see the errors).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<os::Os>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<hardware::Hardware>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<packages::Package>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selinux: Option<selinux::Selinux>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned: Option<tuned::Tuned>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<Vec<cron::CronEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<services::Service>>,
    /// Windows only: installed updates (`Win32_QuickFixEngineering`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotfixes: Option<Vec<hotfixes::Hotfix>>,
    /// Windows only: running processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<processes::Process>>,
}

/// The result of [`linux::collect`] and [`windows::collect`]: what could be read, and what could not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    pub properties: Properties,
    pub errors: Vec<PropertyError>,
}

#[cfg(test)]
pub(crate) mod testutil {
    /// Test captures start with `#!source:` header lines; the parser must see
    /// the verbatim capture that follows them.
    pub fn capture(text: &str) -> &str {
        let mut rest = text;
        while rest.starts_with("#!source:") {
            match rest.find('\n') {
                Some(i) => rest = &rest[i + 1..],
                None => return "",
            }
        }
        rest
    }

    /// Inputs every parser must survive without panicking.
    pub fn garbage() -> Vec<String> {
        let mut v: Vec<String> = vec![
            String::new(),
            "\n".into(),
            "   \n\t\n".into(),
            "garbage".into(),
            "\u{0}\u{1}\u{fffd}".into(),
            "=".into(),
            ":".into(),
            "==> <==".into(),
            "==> /etc/crontab <==\n* * *".into(),
            "Package:\nStatus:\nVersion: :-\n".into(),
            "P:\nV:-r\n\n".into(),
            "a b c d e f g h".into(),
            "processor\t: x\nphysical id\t: y\ncore id : z\n".into(),
            "MemTotal: 99999999999999999999999 kB\n".into(),
            "@@LUUMEN-000000000000000000000000deadbeef@@ END x 000\n".into(),
            "x".repeat(10_000),
        ];
        v.push("\u{e9}:\u{e9}=\u{e9}".into());
        v
    }
}
