//! What the actors need to know about one host, built from the inventory.

use std::time::Duration;

use luumen_protocols::ssh::{SshAuth, SshTarget};
use luumen_protocols::Limits;
use luumen_schemas::config::Timeouts;
use luumen_schemas::inventory::{Credentials, HostEntry, Inventory, Protocol};
use luumen_schemas::report::HostRef;

/// One managed host, ready to collect.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// The host as reports name it.
    pub host: HostRef,
    /// How to reach it.
    pub target: Target,
    /// Use `sudo -n` for the privileged reads.
    pub use_sudo: bool,
    /// Time and size limits.
    pub limits: Limits,
}

/// How a host is reached.
#[derive(Debug, Clone)]
pub enum Target {
    /// Over SSH.
    Ssh(SshTarget),
    /// The agent's own machine.
    Local,
    /// A host this build cannot collect; the reason is reported as its error.
    Unsupported(String),
}

impl HostSpec {
    /// Builds the specs of every host of a validated inventory.
    pub fn from_inventory(inventory: &Inventory, timeouts: &Timeouts) -> Vec<HostSpec> {
        let limits = Limits::new(
            Duration::from_secs(timeouts.connect_seconds),
            Duration::from_secs(timeouts.host_seconds),
        );
        inventory
            .hosts
            .iter()
            .map(|entry| {
                let credentials = inventory.credentials_for(entry);
                HostSpec::new(entry, credentials, limits)
            })
            .collect()
    }

    fn new(entry: &HostEntry, credentials: Option<&Credentials>, limits: Limits) -> HostSpec {
        let host = HostRef {
            id: entry.id.clone(),
            address: entry.display_address(),
            protocol: entry.protocol,
        };
        let use_sudo = credentials.is_none_or(|c| c.sudo);
        let target = match entry.protocol {
            Protocol::Local => Target::Local,
            Protocol::Winrm => Target::Unsupported(
                "protocol winrm is not supported by this build of luumen-agent".to_owned(),
            ),
            Protocol::Ssh => match ssh_target(entry, credentials) {
                Ok(target) => Target::Ssh(target),
                Err(reason) => Target::Unsupported(reason),
            },
        };
        HostSpec {
            host,
            target,
            use_sudo,
            limits,
        }
    }
}

fn ssh_target(entry: &HostEntry, credentials: Option<&Credentials>) -> Result<SshTarget, String> {
    let address = entry
        .address
        .clone()
        .ok_or_else(|| format!("host {:?} has no address", entry.id))?;
    let credentials =
        credentials.ok_or_else(|| format!("host {:?} has no credentials", entry.id))?;
    let passphrase = credentials.passphrase.clone();
    let auth = if let Some(path) = &credentials.private_key_file {
        SshAuth::PrivateKey {
            path: path.clone(),
            passphrase,
        }
    } else if let Some(key) = &credentials.private_key {
        SshAuth::PrivateKeyText {
            key: key.clone(),
            passphrase,
        }
    } else if let Some(password) = &credentials.password {
        SshAuth::Password(password.clone())
    } else {
        return Err(format!(
            "credentials of host {:?} have no password, private_key_file or private_key",
            entry.id
        ));
    };
    Ok(SshTarget {
        address,
        port: entry.port_or_default().unwrap_or(22),
        username: credentials.username.clone(),
        auth,
    })
}
