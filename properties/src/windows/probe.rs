//! The doctor's probe of a Windows host: who the agent is logged in as, the PowerShell version,
//! and whether the three kinds of reads the catalogue needs (CIM/WMI, the HKLM registry,
//! the service list) are allowed. Read-only, one small PowerShell script; pure parser.

use serde::Deserialize;

use crate::ParseError;

/// The probe script (PowerShell, prints one JSON object).
pub const PROBE_SCRIPT: &str = include_str!("probe.ps1");

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsProbe {
    /// The account the agent is logged in as (`DOMAIN\user`).
    pub user: String,
    /// Whether that account is a local administrator (elevated token).
    pub admin: bool,
    /// `$PSVersionTable.PSVersion`.
    pub powershell: String,
    /// Each read the catalogue needs, with the error when it was refused.
    pub reads: Vec<(&'static str, Option<String>)>,
}

#[derive(Deserialize)]
struct Raw {
    user: Option<String>,
    admin: Option<bool>,
    powershell: Option<String>,
    cim: Option<String>,
    registry: Option<String>,
    services: Option<String>,
}

/// Parses the probe's standard output.
pub fn parse(stdout: &str) -> Result<WindowsProbe, ParseError> {
    let text = stdout.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let start = text
        .find('{')
        .ok_or_else(|| ParseError::Invalid("no JSON object in the probe output".into()))?;
    let raw: Raw = serde_json::from_str(&text[start..])
        .map_err(|e| ParseError::Invalid(format!("probe output is not the expected JSON: {e}")))?;
    Ok(WindowsProbe {
        user: raw
            .user
            .ok_or_else(|| ParseError::Invalid("probe output has no user".into()))?,
        admin: raw.admin.unwrap_or(false),
        powershell: raw.powershell.unwrap_or_default(),
        reads: vec![
            ("cim", raw.cim),
            ("registry", raw.registry),
            ("services", raw.services),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_full_probe_and_a_refused_one() {
        let ok = parse(r#"{"user":"CORP\\svc-luumen","admin":true,"powershell":"5.1.17763.5328","cim":null,"registry":null,"services":null}"#)
            .expect("probe");
        assert_eq!(ok.user, "CORP\\svc-luumen");
        assert!(ok.admin);
        assert_eq!(ok.powershell, "5.1.17763.5328");
        assert!(ok.reads.iter().all(|(_, e)| e.is_none()));
        let refused = parse("\u{feff}{\"user\":\"WIN-01\\\\audit\",\"admin\":false,\"powershell\":\"7.4.1\",\"cim\":\"Access denied \",\"registry\":null,\"services\":null}\r\n")
            .expect("probe");
        assert!(!refused.admin);
        assert_eq!(refused.reads[0], ("cim", Some("Access denied ".to_owned())));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [
            "",
            "   ",
            "hello",
            "{",
            "{\"admin\":true}",
            "[1,2]",
            "{\"user\":5}",
        ] {
            assert!(parse(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn the_probe_only_reads() {
        for verb in [
            "Set-", "Remove-", "New-Item", "Out-File", "Start-", "Stop-", "Invoke-",
        ] {
            assert!(!PROBE_SCRIPT.contains(verb), "{verb}");
        }
    }
}
