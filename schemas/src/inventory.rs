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
    /// WS-Management (Windows). Not collected by this release.
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
}

impl HostEntry {
    /// The port to connect to, with the protocol's default.
    pub fn port_or_default(&self) -> Option<u16> {
        self.port.or(self.protocol.default_port())
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
    }
}
