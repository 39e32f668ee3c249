//! Build [`Properties`] from the sections of the Linux plan.

use crate::plan::{Section, Sections};
use crate::util::excerpt;
use crate::{cron, hardware, os, packages, selinux, services, tuned};
use crate::{Collected, ErrorKind, ParseError, Properties, PropertyError};

fn err(property: &str, kind: ErrorKind, message: String) -> PropertyError {
    PropertyError {
        property: property.to_owned(),
        kind,
        message,
    }
}

fn parse_err(property: &str, section: &str, e: &ParseError) -> PropertyError {
    err(
        property,
        ErrorKind::ParseError,
        format!("section {section}: {e}"),
    )
}

/// Classify a failed section from its exit code and stderr.
pub fn classify(stderr: &str, rc: i32) -> ErrorKind {
    const DENIED: [&str; 7] = [
        "a password is required",
        "is not allowed to execute",
        "not in the sudoers file",
        "Permission denied",
        "a terminal is required",
        "may not run sudo",
        "Operation not permitted",
    ];
    const UNAVAILABLE: [&str; 3] = [
        "System has not been booted with systemd",
        "Failed to connect to bus",
        "Host is down",
    ];
    if DENIED.iter().any(|p| stderr.contains(p)) {
        ErrorKind::PermissionDenied
    } else if UNAVAILABLE.iter().any(|p| stderr.contains(p)) {
        ErrorKind::Unavailable
    } else if rc == 127
        || stderr.contains("not found")
        || stderr.contains("No such file or directory")
    {
        ErrorKind::NotFound
    } else {
        ErrorKind::CommandFailed
    }
}

/// The section's stdout when it completed with rc 0; otherwise the error.
fn ok_section<'a>(
    sections: &'a Sections,
    property: &str,
    name: &str,
) -> Result<&'a Section, PropertyError> {
    let Some(s) = sections.get(name) else {
        return Err(err(
            property,
            ErrorKind::Missing,
            format!("section {name} is absent"),
        ));
    };
    match s.exit_code {
        None => Err(err(
            property,
            ErrorKind::Missing,
            format!("section {name} is truncated (no END marker)"),
        )),
        Some(0) => Ok(s),
        Some(rc) => Err(err(
            property,
            classify(&s.stderr, rc),
            format!("section {name} exited with {rc}: {}", excerpt(&s.stderr)),
        )),
    }
}

fn stdout_of<'a>(sections: &'a Sections, name: &str) -> Option<&'a str> {
    sections
        .get(name)
        .filter(|s| s.exit_code == Some(0))
        .map(|s| s.stdout.as_str())
}

/// Every property that can be built is built; each failure is reported once
/// in `errors` with the property's field name.
pub fn collect(sections: &Sections) -> Collected {
    let mut errors = Vec::new();
    let mut p = Properties::default();

    // os
    let os_inputs = os::Inputs {
        os_release: stdout_of(sections, "os_release"),
        legacy: stdout_of(sections, "os_legacy"),
        uname: stdout_of(sections, "uname"),
        uptime: stdout_of(sections, "uptime"),
    };
    match os::parse(os_inputs) {
        Ok(v) => p.os = Some(v),
        Err(e) => errors.push(match ok_section(sections, "os", "os_release") {
            Err(section_err) => section_err,
            Ok(_) => parse_err("os", "os_release", &e),
        }),
    }

    // hardware
    let hw_inputs = hardware::Inputs {
        dmi: stdout_of(sections, "dmi"),
        dmidecode: stdout_of(sections, "dmidecode"),
        cpuinfo: stdout_of(sections, "cpuinfo"),
        meminfo: stdout_of(sections, "meminfo"),
        virt: sections
            .get("virt")
            .filter(|s| s.exit_code.is_some() && !s.stdout.trim().is_empty())
            .map(|s| s.stdout.as_str()),
    };
    match hardware::parse(hw_inputs) {
        Ok(v) => {
            // Serial/UUID withheld: say why, but keep the rest.
            if let Some(d) = sections.get("dmidecode") {
                if d.exit_code != Some(0) {
                    if let Err(e) = ok_section(sections, "hardware", "dmidecode") {
                        errors.push(e);
                    }
                }
            }
            p.hardware = Some(v);
        }
        Err(e) => errors.push(match ok_section(sections, "hardware", "cpuinfo") {
            Err(section_err) => section_err,
            Ok(_) => parse_err("hardware", "cpuinfo/meminfo", &e),
        }),
    }

    // packages
    collect_packages(sections, &mut p, &mut errors);

    // selinux
    match ok_section(sections, "selinux", "selinux") {
        Ok(s) => match selinux::parse(&s.stdout) {
            Ok(v) => p.selinux = Some(v),
            Err(e) => errors.push(parse_err("selinux", "selinux", &e)),
        },
        Err(e) => errors.push(e),
    }

    // tuned
    match ok_section(sections, "tuned", "tuned") {
        Ok(s) => match tuned::parse(&s.stdout) {
            Ok(v) => p.tuned = Some(v),
            Err(e) => errors.push(parse_err("tuned", "tuned", &e)),
        },
        Err(e) => errors.push(e),
    }

    collect_cron(sections, &mut p, &mut errors);
    collect_services(sections, &mut p, &mut errors);

    Collected {
        properties: p,
        errors,
    }
}

fn collect_packages(sections: &Sections, p: &mut Properties, errors: &mut Vec<PropertyError>) {
    type Parser = fn(&str) -> Result<Vec<packages::Package>, ParseError>;
    let managers: [(&str, Parser); 3] = [
        ("packages_dpkg", packages::parse_dpkg),
        ("packages_rpm", packages::parse_rpm),
        ("packages_apk", packages::parse_apk),
    ];
    let mut list: Option<Vec<packages::Package>> = None;
    let mut failed: Vec<PropertyError> = Vec::new();
    let mut present = 0usize;
    for (name, parser) in managers {
        if sections.get(name).is_none() {
            continue;
        }
        present += 1;
        match ok_section(sections, "packages", name) {
            Ok(s) => match parser(&s.stdout) {
                Ok(v) => list.get_or_insert_with(Vec::new).extend(v),
                // An empty database next to a working manager is not news.
                Err(ParseError::Empty) => {
                    failed.push(parse_err("packages", name, &ParseError::Empty))
                }
                Err(e) => failed.push(parse_err("packages", name, &e)),
            },
            Err(e) => failed.push(e),
        }
    }
    if present == 0 {
        errors.push(err(
            "packages",
            ErrorKind::Missing,
            "no package manager section (dpkg, rpm, apk)".into(),
        ));
        return;
    }
    match list {
        Some(l) => {
            // Report failures that are more than an empty secondary database.
            errors.extend(
                failed
                    .into_iter()
                    .filter(|e| !e.message.ends_with(": empty input")),
            );
            p.packages = Some(l);
        }
        None => errors.extend(failed),
    }
}

fn collect_cron(sections: &Sections, p: &mut Properties, errors: &mut Vec<PropertyError>) {
    let mut entries: Option<Vec<cron::CronEntry>> = None;
    // Root's crontab: "No such file" means root has none.
    match sections.get("cron_root") {
        None => errors.push(err(
            "cron",
            ErrorKind::Missing,
            "section cron_root is absent".into(),
        )),
        Some(s) => {
            let kind = match s.exit_code {
                None => Some(err(
                    "cron",
                    ErrorKind::Missing,
                    "section cron_root is truncated (no END marker)".into(),
                )),
                Some(0) => None,
                Some(rc) => {
                    let k = classify(&s.stderr, rc);
                    if k == ErrorKind::NotFound
                        && s.stderr.contains("No such file or directory")
                        && !s.stderr.contains("sudo:")
                    {
                        None // no crontab for root
                    } else {
                        Some(err(
                            "cron",
                            k,
                            format!("section cron_root exited with {rc}: {}", excerpt(&s.stderr)),
                        ))
                    }
                }
            };
            match kind {
                Some(e) => errors.push(e),
                None => match cron::parse(&s.stdout, cron::Kind::User, Some("root")) {
                    Ok(v) => entries.get_or_insert_with(Vec::new).extend(v),
                    Err(e) => errors.push(parse_err("cron", "cron_root", &e)),
                },
            }
        }
    }
    match ok_section(sections, "cron", "cron_system") {
        Ok(s) if s.stdout.trim().is_empty() => {
            entries.get_or_insert_with(Vec::new);
        }
        Ok(s) => match cron::parse(&s.stdout, cron::Kind::System, None) {
            Ok(v) => entries.get_or_insert_with(Vec::new).extend(v),
            Err(e) => errors.push(parse_err("cron", "cron_system", &e)),
        },
        Err(e) => errors.push(e),
    }
    p.cron = entries;
}

fn collect_services(sections: &Sections, p: &mut Properties, errors: &mut Vec<PropertyError>) {
    let units = match ok_section(sections, "services", "services_units") {
        Ok(s) => s,
        Err(mut e) => {
            if e.kind == ErrorKind::NotFound {
                e.message = format!(
                    "systemctl not found (no systemd; OpenRC/SysV hosts are not supported yet): {}",
                    e.message
                );
            }
            errors.push(e);
            return;
        }
    };
    let files =
        stdout_of(sections, "services_unit_files").and_then(|t| services::parse_unit_files(t).ok());
    match services::parse(&units.stdout, files.as_ref()) {
        Ok(v) => p.services = Some(v),
        Err(e) => errors.push(parse_err("services", "services_units", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{split_with_marker, Plan, PlanOptions};
    use crate::testutil::capture;

    const MARKER: &[u8] = b"@@LUUMEN-00000000000000000000000000001234@@";

    fn e2e() -> Collected {
        let out = capture(include_str!("../testdata/e2e/debian-12-root.stdout"));
        let err = capture(include_str!("../testdata/e2e/debian-12-root.stderr"));
        collect(&split_with_marker(MARKER, out.as_bytes(), err.as_bytes()))
    }

    #[test]
    fn end_to_end_debian_12_capture() {
        let c = e2e();
        let p = &c.properties;
        let os = p.os.as_ref().unwrap();
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.version_id.as_deref(), Some("12"));
        assert_eq!(os.arch.as_deref(), Some("x86_64"));
        assert!(os.boot_time.as_deref().is_some_and(|b| b.ends_with('Z')));
        let hw = p.hardware.as_ref().unwrap();
        assert_eq!(hw.cpu_threads, Some(2));
        assert_eq!(hw.vendor, None); // no DMI on firecracker
        assert!(hw.memory_bytes.is_some());
        assert!(p.packages.as_ref().unwrap().len() > 100);
        assert_eq!(p.selinux.as_ref().unwrap().mode, selinux::Mode::Absent);
        assert_eq!(p.tuned.as_ref().unwrap().state, tuned::State::Absent);
        assert!(p
            .cron
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.source == "/etc/crontab"));
        assert!(p.services.is_none());
        assert_eq!(c.errors.len(), 1, "{:?}", c.errors);
        assert_eq!(c.errors[0].property, "services");
        assert_eq!(c.errors[0].kind, ErrorKind::Unavailable);
        let json = serde_json::to_value(&c.properties).unwrap();
        let back: Properties = serde_json::from_value(json).unwrap();
        assert_eq!(&back, p);
    }

    #[test]
    fn empty_and_truncated_runs() {
        let c = collect(&Sections::default());
        assert_eq!(c.properties, Properties::default());
        let mut names: Vec<&str> = c.errors.iter().map(|e| e.property.as_str()).collect();
        names.dedup();
        assert_eq!(
            names,
            ["os", "hardware", "packages", "selinux", "tuned", "cron", "services"]
        );
        assert!(c.errors.iter().all(|e| e.kind == ErrorKind::Missing));

        // Cut the capture at every 997th byte: never panics.
        let out = capture(include_str!("../testdata/e2e/debian-12-root.stdout"));
        let err = capture(include_str!("../testdata/e2e/debian-12-root.stderr"));
        for cut in (0..out.len()).step_by(997) {
            let _ = collect(&split_with_marker(
                MARKER,
                &out.as_bytes()[..cut],
                err.as_bytes(),
            ));
        }
        // Truncated inside the package list: packages is missing, os is still there.
        let at = out.find("Package: zlib1g").unwrap_or(out.len() / 2);
        let c = collect(&split_with_marker(
            MARKER,
            &out.as_bytes()[..at],
            err.as_bytes(),
        ));
        assert!(c.properties.os.is_some());
        assert!(c.properties.packages.is_none());
        assert!(c
            .errors
            .iter()
            .any(|e| e.property == "packages" && e.kind == ErrorKind::Missing));
    }

    #[test]
    fn garbage_sections() {
        let p = Plan::linux(&PlanOptions { use_sudo: false }, 7);
        let m = p.marker();
        let names = [
            "os_release",
            "os_legacy",
            "uname",
            "uptime",
            "dmi",
            "dmidecode",
            "cpuinfo",
            "meminfo",
            "virt",
            "packages_dpkg",
            "packages_rpm",
            "packages_apk",
            "selinux",
            "tuned",
            "cron_root",
            "cron_system",
            "services_units",
            "services_unit_files",
        ];
        for g in crate::testutil::garbage() {
            let mut out = String::new();
            for n in names {
                out.push_str(&format!("{m} BEGIN {n}\n{g}\n@@LUUMEN-ffffffffffffffffffffffffffffffff@@ END {n} 000\n\n{m} END {n} 000\n"));
            }
            let c = collect(&p.split(out.as_bytes(), b""));
            // Whatever happened, every property is either present or explained.
            let pr = &c.properties;
            let present = [
                ("os", pr.os.is_some()),
                ("hardware", pr.hardware.is_some()),
                ("packages", pr.packages.is_some()),
                ("selinux", pr.selinux.is_some()),
                ("tuned", pr.tuned.is_some()),
                ("cron", pr.cron.is_some()),
                ("services", pr.services.is_some()),
            ];
            for (name, ok) in present {
                assert!(
                    ok || c.errors.iter().any(|e| e.property == name),
                    "{name} on {g:?}"
                );
            }
        }
    }

    #[test]
    fn sudo_refusal_and_missing_tools() {
        let p = Plan::linux(&PlanOptions { use_sudo: true }, 9);
        let m = p.marker();
        let frame =
            |n: &str, body: &str, rc: u8| format!("{m} BEGIN {n}\n{body}\n{m} END {n} {rc:03}\n");
        let out = [
            frame("cron_root", "==> /var/spool/cron/root <==\n", 1),
            frame("cron_system", "", 0),
            frame("services_units", "", 127),
        ]
        .concat();
        let err = [
            frame("cron_root", "sudo: a password is required\n", 1),
            frame("cron_system", "", 0),
            frame(
                "services_units",
                "luumen: systemctl not found (no systemd)\n",
                127,
            ),
        ]
        .concat();
        let c = collect(&p.split(out.as_bytes(), err.as_bytes()));
        let cron = c.errors.iter().find(|e| e.property == "cron").unwrap();
        assert_eq!(cron.kind, ErrorKind::PermissionDenied);
        assert_eq!(c.properties.cron, Some(Vec::new()));
        let svc = c.errors.iter().find(|e| e.property == "services").unwrap();
        assert_eq!(svc.kind, ErrorKind::NotFound);

        // No crontab for root is not an error.
        let out = frame("cron_root", "==> /var/spool/cron/crontabs/root <==\n", 1);
        let err = frame(
            "cron_root",
            "cat: /var/spool/cron/crontabs/root: No such file or directory\n",
            1,
        );
        let c = collect(&p.split(out.as_bytes(), err.as_bytes()));
        assert!(!c
            .errors
            .iter()
            .any(|e| e.property == "cron" && e.kind != ErrorKind::Missing));
    }

    #[test]
    fn classify_messages() {
        assert_eq!(
            classify("sudo: a password is required", 1),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            classify(
                "bob is not in the sudoers file.  This incident will be reported.",
                1
            ),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            classify(
                "Sorry, user bob is not allowed to execute '/usr/bin/cat x' as root",
                1
            ),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            classify("cat: /var/spool/cron/crontabs/root: Permission denied", 1),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            classify(
                "System has not been booted with systemd as init system (PID 1). Can't operate.",
                1
            ),
            ErrorKind::Unavailable
        );
        assert_eq!(classify("sh: 1: rpm: not found", 127), ErrorKind::NotFound);
        assert_eq!(classify("boom", 2), ErrorKind::CommandFailed);
    }
}
