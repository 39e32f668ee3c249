//! The remote configuration (`GET {base_url}/config`) and the inventory file, which share one
//! format:
//!
//! ```yaml
//! schedule: { interval_seconds: 3600 }
//! default_credentials: { username: svc-luumen, private_key_file: /etc/luumen/id_ed25519 }
//! hosts:
//!   - { id: web-1, address: 10.0.0.5, port: 22, protocol: ssh, groups: [web] }
//!   - { id: patch-server, protocol: local }
//! ```

use std::collections::HashSet;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The host list, default credentials and schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// When `run` collects.
    #[serde(default)]
    pub schedule: Schedule,
    /// Credentials for every host that has none of its own.
    #[serde(default)]
    pub default_credentials: Option<Credentials>,
    /// The managed hosts.
    pub hosts: Vec<HostEntry>,
}

/// The collection schedule.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Seconds between the starts of two collection cycles.
    pub interval_seconds: u64,
    /// Hosts start spread over this many seconds after a cycle begins; default a tenth of the
    /// interval, at most 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splay_seconds: Option<u64>,
}

impl Schedule {
    /// The splay window: `splay_seconds`, else min(interval / 10, 300 s), never more than the
    /// interval.
    pub fn splay(&self) -> std::time::Duration {
        let default = (self.interval_seconds / 10).min(300);
        std::time::Duration::from_secs(
            self.splay_seconds
                .unwrap_or(default)
                .min(self.interval_seconds),
        )
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            interval_seconds: 3600,
            splay_seconds: None,
        }
    }
}

/// The longest schedule interval the agent accepts: one year (timers overflow far beyond).
pub const MAX_INTERVAL_SECONDS: u64 = 366 * 24 * 3600;

/// How the agent reaches a host.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OpenSSH-compatible server, Linux collection plan.
    Ssh,
    /// WS-Management (Windows): HTTP 5985 / HTTPS 5986, see [`WinrmSettings`].
    Winrm,
    /// The agent's own machine, without a network connection.
    Local,
}

impl Protocol {
    /// The name used in configs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ssh => "ssh",
            Protocol::Winrm => "winrm",
            Protocol::Local => "local",
        }
    }

    fn default_port(self) -> Option<u16> {
        match self {
            Protocol::Ssh => Some(22),
            Protocol::Winrm => Some(5985),
            Protocol::Local => None,
        }
    }
}

/// One managed host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// Unique, stable name of the host in reports.
    pub id: String,
    /// DNS name or IP address (not used by `local`).
    #[serde(default)]
    pub address: Option<String>,
    /// TCP port; defaults to 22 for ssh.
    #[serde(default)]
    pub port: Option<u16>,
    /// How to reach it.
    pub protocol: Protocol,
    /// Free-form group names (used by the API for compliance checks).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Credentials for this host; `default_credentials` when absent.
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// Overrides config.yaml's `host_key_policy` for this host.
    #[serde(default)]
    pub host_key_policy: Option<crate::config::HostKeyPolicy>,
    /// WinRM settings (protocol `winrm` only); defaults when absent.
    #[serde(default)]
    pub winrm: Option<WinrmSettings>,
}

/// How the agent talks WS-Management to a Windows host.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct WinrmSettings {
    /// `http` (port 5985; NTLM messages are encrypted) or `https` (port 5986). Default `http`,
    /// the listener Windows enables out of the box.
    #[serde(default)]
    pub transport: WinrmTransport,
    /// `ntlm` (default), `basic` (local accounts; HTTPS, or HTTP with `allow_http_basic`) or
    /// `kerberos` (not supported by this build).
    #[serde(default)]
    pub auth: WinrmAuthMethod,
    /// HTTPS: a PEM file of trusted CA certificates instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// HTTPS: the SHA-256 fingerprint of the host's certificate (64 hex digits, `:` between
    /// pairs allowed); only that certificate is then accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// Allow Basic authentication over plain HTTP (the password crosses the network in clear).
    #[serde(default)]
    pub allow_http_basic: bool,
}

/// WinRM's HTTP transport.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum WinrmTransport {
    /// Plain HTTP, port 5985.
    #[default]
    Http,
    /// HTTPS, port 5986.
    Https,
}

/// WinRM authentication.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum WinrmAuthMethod {
    /// NTLMv2.
    #[default]
    Ntlm,
    /// HTTP Basic.
    Basic,
    /// Kerberos (accepted in the host list; this build reports such hosts as unsupported).
    Kerberos,
}

impl WinrmSettings {
    /// Whether a certificate fingerprint is 64 hex digits (optionally `:`-separated pairs,
    /// optionally prefixed `sha256:`).
    pub fn valid_fingerprint(text: &str) -> bool {
        let trimmed = text.trim();
        let body = trimmed
            .strip_prefix("sha256:")
            .or_else(|| trimmed.strip_prefix("SHA256:"))
            .unwrap_or(trimmed);
        let hex: Vec<char> = body.chars().filter(|c| *c != ':').collect();
        hex.len() == 64 && hex.iter().all(char::is_ascii_hexdigit)
    }

    fn check(&self) -> Result<(), String> {
        if self.transport == WinrmTransport::Http {
            if self.auth == WinrmAuthMethod::Basic && !self.allow_http_basic {
                return Err("auth basic over transport http sends the password in clear: use https, ntlm, or set allow_http_basic".to_owned());
            }
            if self.ca_file.is_some() || self.cert_sha256.is_some() {
                return Err("ca_file and cert_sha256 apply to transport https only".to_owned());
            }
        }
        if let Some(pin) = &self.cert_sha256 {
            if !WinrmSettings::valid_fingerprint(pin) {
                return Err(format!("cert_sha256 {pin:?} is not 64 hex digits"));
            }
        }
        Ok(())
    }
}

impl HostEntry {
    /// The port to connect to, with the protocol's default (WinRM: 5985 for http, 5986 for
    /// https).
    pub fn port_or_default(&self) -> Option<u16> {
        let https = self
            .winrm
            .as_ref()
            .is_some_and(|w| w.transport == WinrmTransport::Https);
        match (self.port, self.protocol) {
            (Some(port), _) => Some(port),
            (None, Protocol::Winrm) if https => Some(5986),
            (None, protocol) => protocol.default_port(),
        }
    }

    /// The address shown in reports: the configured address, or `localhost` for `local`.
    pub fn display_address(&self) -> String {
        match (&self.address, self.protocol) {
            (Some(address), _) => address.clone(),
            (None, Protocol::Local) => "localhost".to_owned(),
            (None, _) => String::new(),
        }
    }
}

/// How to log in to a host. Secrets print as `[REDACTED]` and are zeroized on drop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Login name.
    pub username: String,
    /// Password (password authentication).
    #[serde(default)]
    pub password: Option<SecretString>,
    /// Path of a private key on the agent's machine (public-key authentication).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// A private key as PEM/OpenSSH text (how the API serves stored keys).
    #[serde(default)]
    pub private_key: Option<SecretString>,
    /// Passphrase of the private key.
    #[serde(default)]
    pub passphrase: Option<SecretString>,
    /// Use `sudo -n` for the privileged reads (dmidecode, getenforce, tuned-adm, root's crontab).
    #[serde(default = "default_sudo")]
    pub sudo: bool,
}

fn default_sudo() -> bool {
    true
}

/// A host list that cannot be used, naming the host at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InventoryError {
    /// Two hosts share an id.
    #[error("host id {0:?} appears more than once")]
    DuplicateId(String),
    /// An empty host id.
    #[error("host #{0} has an empty id")]
    EmptyId(usize),
    /// A network host without an address.
    #[error("host {0:?}: protocol {1} needs an address")]
    MissingAddress(String, &'static str),
    /// A network host with neither its own nor default credentials.
    #[error("host {0:?}: no credentials and no default_credentials")]
    MissingCredentials(String),
    /// Credentials that offer no way to authenticate.
    #[error("host {0:?}: credentials for {1:?} have no password, private_key_file or private_key")]
    NoSecret(String, String),
    /// WinRM settings that cannot be used, or set on a host that is not `winrm`.
    #[error("host {0:?}: winrm: {1}")]
    Winrm(String, String),
    /// A zero or absurdly long interval.
    #[error("schedule.interval_seconds must be between 1 and {MAX_INTERVAL_SECONDS} (one year)")]
    Interval,
}

impl Inventory {
    /// Checks what the types alone cannot; the error names the host at fault.
    pub fn validate(&self) -> Result<(), InventoryError> {
        if !(1..=MAX_INTERVAL_SECONDS).contains(&self.schedule.interval_seconds) {
            return Err(InventoryError::Interval);
        }
        let mut seen = HashSet::new();
        for (index, host) in self.hosts.iter().enumerate() {
            if host.id.trim().is_empty() {
                return Err(InventoryError::EmptyId(index + 1));
            }
            if !seen.insert(host.id.as_str()) {
                return Err(InventoryError::DuplicateId(host.id.clone()));
            }
            if host.winrm.is_some() && host.protocol != Protocol::Winrm {
                return Err(InventoryError::Winrm(
                    host.id.clone(),
                    format!("settings given for a {} host", host.protocol.as_str()),
                ));
            }
            if let Some(settings) = &host.winrm {
                settings
                    .check()
                    .map_err(|reason| InventoryError::Winrm(host.id.clone(), reason))?;
            }
            if host.protocol == Protocol::Local {
                continue;
            }
            if host.address.as_deref().is_none_or(|a| a.trim().is_empty()) {
                return Err(InventoryError::MissingAddress(
                    host.id.clone(),
                    host.protocol.as_str(),
                ));
            }
            let Some(credentials) = self.credentials_for(host) else {
                return Err(InventoryError::MissingCredentials(host.id.clone()));
            };
            if credentials.password.is_none()
                && credentials.private_key_file.is_none()
                && credentials.private_key.is_none()
            {
                return Err(InventoryError::NoSecret(
                    host.id.clone(),
                    credentials.username.clone(),
                ));
            }
            if host.protocol == Protocol::Winrm && credentials.password.is_none() {
                return Err(InventoryError::Winrm(
                    host.id.clone(),
                    format!(
                        "credentials for {:?} have no password",
                        credentials.username
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The credentials a host uses: its own, else the defaults.
    pub fn credentials_for<'a>(&'a self, host: &'a HostEntry) -> Option<&'a Credentials> {
        host.credentials
            .as_ref()
            .or(self.default_credentials.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expected: Result<(), InventoryError>) {
        let inventory: Inventory = serde_json::from_str(json).expect("test inventory parses");
        assert_eq!(inventory.validate(), expected, "{json}");
    }

    #[test]
    fn validation_names_the_host_at_fault() {
        check(r#"{"hosts":[{"id":"a","protocol":"local"}]}"#, Ok(()));
        check(
            r#"{"hosts":[{"id":"a","protocol":"local"},{"id":"a","protocol":"local"}]}"#,
            Err(InventoryError::DuplicateId("a".into())),
        );
        check(
            r#"{"hosts":[{"id":"web","protocol":"ssh"}]}"#,
            Err(InventoryError::MissingAddress("web".into(), "ssh")),
        );
        check(
            r#"{"hosts":[{"id":"web","address":"h","protocol":"ssh"}]}"#,
            Err(InventoryError::MissingCredentials("web".into())),
        );
        check(
            r#"{"default_credentials":{"username":"u"},"hosts":[{"id":"web","address":"h","protocol":"ssh"}]}"#,
            Err(InventoryError::NoSecret("web".into(), "u".into())),
        );
        check(
            r#"{"default_credentials":{"username":"u","password":"p"},"hosts":[{"id":"web","address":"h","protocol":"ssh"}]}"#,
            Ok(()),
        );
    }

    #[test]
    fn intervals_are_bounded() {
        check(
            r#"{"schedule":{"interval_seconds":0},"hosts":[]}"#,
            Err(InventoryError::Interval),
        );
        check(
            r#"{"schedule":{"interval_seconds":2305843009213693951},"hosts":[]}"#,
            Err(InventoryError::Interval),
        );
        check(
            r#"{"schedule":{"interval_seconds":31622400},"hosts":[]}"#,
            Ok(()),
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = serde_json::from_str::<Inventory>(
            r#"{"hosts":[{"id":"a","protocol":"local","adress":"x"}]}"#,
        )
        .expect_err("unknown key must be refused");
        assert!(error.to_string().contains("adress"), "{error}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let inventory: Inventory = serde_json::from_str(
            r#"{"default_credentials":{"username":"u","password":"hunter2-marker"},"hosts":[]}"#,
        )
        .expect("parses");
        let debug = format!("{inventory:?}");
        assert!(!debug.contains("hunter2-marker"), "{debug}");
    }

    #[test]
    fn ports_default_by_protocol() {
        let inventory: Inventory = serde_json::from_str(
            r#"{"hosts":[{"id":"a","address":"h","protocol":"ssh"},{"id":"b","address":"h","port":2222,"protocol":"ssh"}]}"#,
        )
        .expect("parses");
        assert_eq!(inventory.hosts[0].port_or_default(), Some(22));
        assert_eq!(inventory.hosts[1].port_or_default(), Some(2222));
        let inventory: Inventory = serde_json::from_str(
            r#"{"hosts":[{"id":"a","address":"h","protocol":"winrm"},{"id":"b","address":"h","protocol":"winrm","winrm":{"transport":"https"}},{"id":"c","address":"h","port":443,"protocol":"winrm","winrm":{"transport":"https"}}]}"#,
        )
        .expect("parses");
        let ports: Vec<_> = inventory
            .hosts
            .iter()
            .map(HostEntry::port_or_default)
            .collect();
        assert_eq!(ports, [Some(5985), Some(5986), Some(443)]);
    }

    #[test]
    fn winrm_settings_are_checked() {
        let host = |winrm: &str| {
            format!(
                r#"{{"default_credentials":{{"username":"u","password":"p"}},"hosts":[{{"id":"w","address":"h","protocol":"winrm","winrm":{winrm}}}]}}"#
            )
        };
        let refused = |winrm: &str, needle: &str| {
            let inventory: Inventory = serde_json::from_str(&host(winrm)).expect("parses");
            match inventory.validate() {
                Err(InventoryError::Winrm(id, reason)) => {
                    assert_eq!(id, "w");
                    assert!(reason.contains(needle), "{reason}");
                }
                other => panic!("{winrm}: expected a winrm error, got {other:?}"),
            }
        };
        refused(r#"{"auth":"basic"}"#, "allow_http_basic");
        refused(r#"{"ca_file":"/ca.pem"}"#, "https only");
        refused(r#"{"transport":"https","cert_sha256":"abc"}"#, "64 hex");
        let pin = vec!["AB"; 32].join(":");
        for ok in [
            "{}".to_owned(),
            r#"{"auth":"basic","allow_http_basic":true}"#.to_owned(),
            format!(
                r#"{{"transport":"https","auth":"basic","cert_sha256":"{pin}","ca_file":"/ca.pem"}}"#
            ),
            r#"{"transport":"https","auth":"kerberos"}"#.to_owned(),
        ] {
            let inventory: Inventory = serde_json::from_str(&host(&ok)).expect("parses");
            assert_eq!(inventory.validate(), Ok(()), "{ok}");
        }
        assert!(serde_json::from_str::<Inventory>(&host(r#"{"transprt":"https"}"#)).is_err());
        check(
            r#"{"hosts":[{"id":"l","protocol":"local","winrm":{}}]}"#,
            Err(InventoryError::Winrm(
                "l".into(),
                "settings given for a local host".into(),
            )),
        );
        check(
            r#"{"default_credentials":{"username":"u","private_key_file":"/k"},"hosts":[{"id":"w","address":"h","protocol":"winrm"}]}"#,
            Err(InventoryError::Winrm(
                "w".into(),
                "credentials for \"u\" have no password".into(),
            )),
        );
    }
}
