//! `tuned`: the active tuned profile and whether the daemon runs.

use serde::{Deserialize, Serialize};

use crate::util::{kv_lines, non_empty};
use crate::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Active,
    /// Installed, but no active profile or the daemon is not running.
    Off,
    /// tuned is not installed.
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuned {
    pub state: State,
    pub profile: Option<String>,
}

/// The `tuned` section: `tuned_adm=present`, `etc_tuned=present`,
/// `active_profile=NAME`, `tuned_adm_active=<line of tuned-adm active>`,
/// `service=<systemctl is-active tuned>`. Empty = tuned absent.
pub fn parse(text: &str) -> Result<Tuned, ParseError> {
    let (mut installed, mut profile, mut service, mut no_profile) = (false, None, None, false);
    for (i, kv) in kv_lines(text).enumerate() {
        let (k, v) = kv?;
        match k {
            "tuned_adm" | "etc_tuned" => installed = true,
            "active_profile" => profile = non_empty(v),
            "tuned_adm_active" => {
                installed = true;
                if let Some(p) = v.strip_prefix("Current active profile:") {
                    profile = profile.or(non_empty(p));
                } else if v.starts_with("No current active profile") {
                    no_profile = true;
                }
            }
            "service" => service = Some(v),
            _ => {
                return Err(ParseError::Line {
                    line: i + 1,
                    reason: format!("unknown key {k:?}"),
                })
            }
        }
    }
    if !installed && profile.is_none() {
        return Ok(Tuned {
            state: State::Absent,
            profile: None,
        });
    }
    let running = match service {
        Some("active") | None => true,
        Some(_) => false,
    };
    let state = if profile.is_some() && running && !no_profile {
        State::Active
    } else {
        State::Off
    };
    Ok(Tuned {
        state,
        profile: profile.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{capture, garbage};

    #[test]
    fn captures() {
        let cases = [
            (include_str!("testdata/debian-12.txt"), State::Absent, None),
            (
                include_str!("testdata/rhel-6.txt"),
                State::Active,
                Some("throughput-performance"),
            ),
        ];
        for (text, state, profile) in cases {
            let t = parse(capture(text)).unwrap();
            assert_eq!((t.state, t.profile.as_deref()), (state, profile));
        }
    }

    #[test]
    fn states() {
        let t = parse(
            "tuned_adm=present\netc_tuned=present\nactive_profile=virtual-guest\nservice=active\n",
        )
        .unwrap();
        assert_eq!(
            (t.state, t.profile.as_deref()),
            (State::Active, Some("virtual-guest"))
        );
        let t = parse(
            "tuned_adm=present\netc_tuned=present\nactive_profile=balanced\nservice=inactive\n",
        )
        .unwrap();
        assert_eq!(
            (t.state, t.profile.as_deref()),
            (State::Off, Some("balanced"))
        );
        let t = parse("tuned_adm=present\ntuned_adm_active=No current active profile.\n").unwrap();
        assert_eq!((t.state, t.profile), (State::Off, None));
        let t = parse(
            "tuned_adm=present\ntuned_adm_active=Current active profile: throughput-performance\n",
        )
        .unwrap();
        assert_eq!(
            (t.state, t.profile.as_deref()),
            (State::Active, Some("throughput-performance"))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for g in garbage() {
            let _ = parse(&g);
        }
        assert!(parse("garbage").is_err());
    }
}
