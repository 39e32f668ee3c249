//! `selinux`: runtime mode (selinuxfs / getenforce) and configured policy.

use serde::{Deserialize, Serialize};

use crate::util::{kv_lines, non_empty};
use crate::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Enforcing,
    Permissive,
    /// SELinux userland/config present but not enabled at runtime.
    Disabled,
    /// No trace of SELinux on the host.
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selinux {
    pub mode: Mode,
    /// `SELINUXTYPE` of `/etc/selinux/config` (e.g. `targeted`).
    pub policy: Option<String>,
}

/// The `selinux` section: `enforce=`, `getenforce=`, `config=present`,
/// `SELINUX=`, `SELINUXTYPE=` lines. An empty section means SELinux is absent.
pub fn parse(text: &str) -> Result<Selinux, ParseError> {
    let (mut enforce, mut getenforce, mut config, mut policy) = (None, None, false, None);
    for (i, kv) in kv_lines(text).enumerate() {
        let (k, v) = kv?;
        match k {
            "enforce" => enforce = Some(v),
            "getenforce" => getenforce = Some(v),
            "config" => config = true,
            "SELINUX" => config = true,
            "SELINUXTYPE" => policy = non_empty(v.trim_matches('"')),
            _ => {
                return Err(ParseError::Line {
                    line: i + 1,
                    reason: format!("unknown key {k:?}"),
                })
            }
        }
    }
    let mode = match (enforce, getenforce.map(str::to_ascii_lowercase).as_deref()) {
        (Some("1"), _) => Mode::Enforcing,
        (Some("0"), _) => Mode::Permissive,
        (Some(other), _) => {
            return Err(ParseError::Invalid(format!(
                "unexpected enforce value {other:?}"
            )))
        }
        (None, Some("enforcing")) => Mode::Enforcing,
        (None, Some("permissive")) => Mode::Permissive,
        (None, Some("disabled")) => Mode::Disabled,
        (None, Some(other)) => {
            return Err(ParseError::Invalid(format!(
                "unexpected getenforce output {other:?}"
            )))
        }
        (None, None) if config => Mode::Disabled,
        (None, None) => Mode::Absent,
    };
    Ok(Selinux {
        mode,
        policy: policy.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{capture, garbage};

    #[test]
    fn captures() {
        let cases = [(include_str!("testdata/debian-12.txt"), Mode::Absent, None)];
        for (text, mode, policy) in cases {
            let s = parse(capture(text)).unwrap();
            assert_eq!(s.mode, mode);
            assert_eq!(s.policy.as_deref(), policy);
        }
    }

    /// Synthetic inputs in the section's format (no public capture of this
    /// section exists; the values are those the RHEL/CentOS tools print).
    #[test]
    fn modes() {
        let s = parse("enforce=1\ngetenforce=Enforcing\nconfig=present\nSELINUX=enforcing\nSELINUXTYPE=targeted\n").unwrap();
        assert_eq!(
            (s.mode, s.policy.as_deref()),
            (Mode::Enforcing, Some("targeted"))
        );
        assert_eq!(
            parse("enforce=0\ngetenforce=Permissive\n").unwrap().mode,
            Mode::Permissive
        );
        assert_eq!(
            parse("getenforce=Disabled\nconfig=present\nSELINUX=disabled\nSELINUXTYPE=targeted\n")
                .unwrap()
                .mode,
            Mode::Disabled
        );
        assert_eq!(
            parse("config=present\nSELINUX=enforcing\n").unwrap().mode,
            Mode::Disabled
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for g in garbage() {
            let _ = parse(&g);
        }
        assert!(parse("garbage").is_err());
        assert!(parse("enforce=7").is_err());
    }
}
