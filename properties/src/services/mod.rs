//! `services`: systemd service units with their load/active/sub state and
//! unit-file (enablement) state.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::ParseError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub load: String,
    pub active: String,
    pub sub: String,
    /// Unit-file state (`enabled`, `disabled`, `static`, `masked`, …). Windows:
    /// `enabled` (automatic, boot, system), `manual` or `disabled`.
    pub enabled: Option<String>,
    /// Windows: the service's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Windows: the start mode: `boot`, `system`, `automatic`, `manual`, `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_mode: Option<String>,
}

/// `systemctl list-unit-files --type=service --no-legend --no-pager`:
/// unit name → state.
pub fn parse_unit_files(text: &str) -> Result<HashMap<&str, &str>, ParseError> {
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        // A summary line ("N unit files listed.") only appears without --no-legend.
        if !name.contains('.') {
            if line.contains("unit files listed") {
                continue;
            }
            return Err(ParseError::Line {
                line: i + 1,
                reason: "expected UNIT STATE".into(),
            });
        }
        let state = f.next().ok_or_else(|| ParseError::Line {
            line: i + 1,
            reason: "missing state".into(),
        })?;
        map.insert(name, state);
    }
    if map.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(map)
}

/// `systemctl list-units --type=service --all --no-legend --no-pager --plain`,
/// joined with the unit-file states when available.
pub fn parse(
    units: &str,
    unit_files: Option<&HashMap<&str, &str>>,
) -> Result<Vec<Service>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in units.lines().enumerate() {
        let mut f = line.split_whitespace().peekable();
        // Older systemd marks failed/not-found units with a bullet even in --plain.
        if matches!(f.peek(), Some(&"●") | Some(&"*")) {
            f.next();
        }
        let Some(name) = f.next() else { continue };
        let (Some(load), Some(active), Some(sub)) = (f.next(), f.next(), f.next()) else {
            return Err(ParseError::Line {
                line: i + 1,
                reason: "expected UNIT LOAD ACTIVE SUB".into(),
            });
        };
        if !name.contains('.') {
            return Err(ParseError::Line {
                line: i + 1,
                reason: format!("not a unit name: {name:?}"),
            });
        }
        let enabled = unit_files.and_then(|m| {
            m.get(name).copied().or_else(|| {
                // foo@bar.service → foo@.service
                let (prefix, _) = name.split_once('@')?;
                let (_, suffix) = name.rsplit_once('.')?;
                let template = format!("{prefix}@.{suffix}");
                m.get(template.as_str()).copied()
            })
        });
        out.push(Service {
            name: name.to_owned(),
            load: load.to_owned(),
            active: active.to_owned(),
            sub: sub.to_owned(),
            enabled: enabled.map(str::to_owned),
            display_name: None,
            start_mode: None,
        });
    }
    if out.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{capture, garbage};

    #[test]
    fn unit_files_debian_12() {
        let m =
            parse_unit_files(capture(include_str!("testdata/unit-files-debian-12.txt"))).unwrap();
        assert_eq!(m.get("cron.service"), Some(&"enabled"));
        assert_eq!(m.get("x11-common.service"), Some(&"masked"));
        assert_eq!(m.get("user@.service"), Some(&"static"));
    }

    /// A real RHEL 7 list-units table in systemctl's default format (header
    /// and legend lines removed): padded columns, cut descriptions, `●`.
    #[test]
    fn units_rhel_7_default_format() {
        let s = parse(
            capture(include_str!("testdata/units-rhel-7-default-format.txt")),
            None,
        )
        .unwrap();
        assert_eq!(s.len(), 50);
        let sk = s.iter().find(|x| x.name == "sidekiq.service").unwrap();
        assert_eq!(
            (sk.load.as_str(), sk.active.as_str(), sk.sub.as_str()),
            ("loaded", "failed", "failed")
        );
        let nm = s
            .iter()
            .find(|x| x.name == "NetworkManager-wait-online.service")
            .unwrap();
        assert_eq!((nm.active.as_str(), nm.sub.as_str()), ("active", "exited"));
        assert!(s.iter().any(|x| x.name == "lvm2-pvscan@8:2.service"));
        assert!(s
            .iter()
            .all(|x| x.name.ends_with(".service") && x.enabled.is_none()));
    }

    #[test]
    fn units_joined_with_unit_files() {
        let files =
            parse_unit_files("cron.service enabled enabled\ngetty@.service enabled enabled\n")
                .unwrap();
        let s = parse(
            "cron.service loaded active running Regular background program processing daemon\n\
             getty@tty1.service loaded active running Getty on tty1\n\
             ● nfs.service not-found inactive dead nfs.service\n",
            Some(&files),
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].enabled.as_deref(), Some("enabled"));
        assert_eq!(s[1].enabled.as_deref(), Some("enabled"));
        assert_eq!(
            (
                s[2].name.as_str(),
                s[2].load.as_str(),
                s[2].enabled.as_deref()
            ),
            ("nfs.service", "not-found", None)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for g in garbage() {
            let _ = parse_unit_files(&g);
            let _ = parse(&g, None);
        }
        assert!(parse("", None).is_err());
        assert!(parse("garbage\n", None).is_err());
        assert!(parse_unit_files("garbage\n").is_err());
    }
}
