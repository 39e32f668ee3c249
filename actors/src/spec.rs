//! What the actors need to know about one host, built from the inventory.

use std::time::Duration;

use std::path::PathBuf;

use luumen_protocols::hostkey::{HostKeyCheck, HostKeyPolicy};
use luumen_protocols::ssh::{SshAuth, SshTarget};
use luumen_protocols::winrm::{self, Scheme, TlsTrust, WinrmAuth, WinrmTarget};
use luumen_protocols::Limits;
use luumen_schemas::config::{HostKeyPolicy as ConfiguredPolicy, Timeouts};
use luumen_schemas::inventory::{
    Credentials, HostEntry, Inventory, Protocol, WinrmAuthMethod, WinrmTransport,
};
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
    /// The host's credentials when they reference Vault (`vault:path#field`): resolved anew
    /// every cycle, then dropped.
    pub vault_credentials: Option<Credentials>,
    /// A hash of everything that defines the host (entry, credentials, limits, host key
    /// settings): a reload restarts the host only when it changed. Kept in memory only.
    pub fingerprint: u64,
}

/// SSH settings shared by every host (from config.yaml).
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// The policy of hosts that set none.
    pub host_key_policy: ConfiguredPolicy,
    /// The agent's own known_hosts file with the pinned keys.
    pub pin_file: PathBuf,
    /// Operator-provided OpenSSH known_hosts files.
    pub known_hosts_files: Vec<PathBuf>,
    /// Offer `ssh-rsa` (SHA-1) host keys.
    pub allow_ssh_rsa_sha1: bool,
}

impl SshSettings {
    fn check_for(&self, entry: &HostEntry) -> HostKeyCheck {
        HostKeyCheck {
            policy: match entry.host_key_policy.unwrap_or(self.host_key_policy) {
                ConfiguredPolicy::AcceptNew => HostKeyPolicy::AcceptNew,
                ConfiguredPolicy::Strict => HostKeyPolicy::Strict,
                ConfiguredPolicy::Off => HostKeyPolicy::Off,
            },
            pin_file: self.pin_file.clone(),
            known_hosts_files: self.known_hosts_files.clone(),
            allow_ssh_rsa_sha1: self.allow_ssh_rsa_sha1,
            pin_new_keys: true,
        }
    }
}

/// How a host is reached.
#[derive(Debug, Clone)]
pub enum Target {
    /// Over SSH.
    Ssh(SshTarget),
    /// Over WinRM (WS-Management); the script is PowerShell.
    Winrm(WinrmTarget),
    /// The agent's own machine.
    Local,
    /// A host this build cannot collect; the reason is reported as its error.
    Unsupported(String),
}

impl HostSpec {
    /// Builds the specs of every host of a validated inventory.
    pub fn from_inventory(
        inventory: &Inventory,
        timeouts: &Timeouts,
        ssh: &SshSettings,
    ) -> Vec<HostSpec> {
        let limits = Limits::new(
            Duration::from_secs(timeouts.connect_seconds),
            Duration::from_secs(timeouts.host_seconds),
        );
        inventory
            .hosts
            .iter()
            .map(|entry| {
                let credentials = inventory.credentials_for(entry);
                HostSpec::new(entry, credentials, limits, ssh)
            })
            .collect()
    }

    fn new(
        entry: &HostEntry,
        credentials: Option<&Credentials>,
        limits: Limits,
        ssh: &SshSettings,
    ) -> HostSpec {
        let host = HostRef {
            id: entry.id.clone(),
            address: entry.display_address(),
            protocol: entry.protocol,
        };
        let use_sudo = credentials.is_none_or(|c| c.sudo);
        let vault_credentials = credentials
            .filter(|c| entry.protocol != Protocol::Local && crate::vault::uses_vault(c))
            .cloned();
        let target = match entry.protocol {
            Protocol::Local => Target::Local,
            Protocol::Winrm => match winrm_target(entry, credentials) {
                Ok(target) => Target::Winrm(target),
                Err(reason) => Target::Unsupported(reason),
            },
            Protocol::Ssh => match ssh_target(entry, credentials, ssh.check_for(entry)) {
                Ok(target) => Target::Ssh(target),
                Err(reason) => Target::Unsupported(reason),
            },
        };
        let fingerprint = fingerprint(entry, credentials, &limits, ssh);
        HostSpec {
            host,
            target,
            use_sudo,
            limits,
            vault_credentials,
            fingerprint,
        }
    }
}

fn ssh_target(
    entry: &HostEntry,
    credentials: Option<&Credentials>,
    host_key: HostKeyCheck,
) -> Result<SshTarget, String> {
    let address = entry
        .address
        .clone()
        .ok_or_else(|| format!("host {:?} has no address", entry.id))?;
    let credentials =
        credentials.ok_or_else(|| format!("host {:?} has no credentials", entry.id))?;
    let auth = ssh_auth(credentials)
        .map_err(|missing| format!("credentials of host {:?} {missing}", entry.id))?;
    Ok(SshTarget {
        address,
        port: entry.port_or_default().unwrap_or(22),
        username: credentials.username.clone(),
        auth,
        host_key,
    })
}

fn winrm_target(
    entry: &HostEntry,
    credentials: Option<&Credentials>,
) -> Result<WinrmTarget, String> {
    let address = entry
        .address
        .clone()
        .ok_or_else(|| format!("host {:?} has no address", entry.id))?;
    let credentials =
        credentials.ok_or_else(|| format!("host {:?} has no credentials", entry.id))?;
    let password = credentials.password.clone().ok_or_else(|| {
        format!(
            "credentials of host {:?} have no password (winrm needs one)",
            entry.id
        )
    })?;
    let settings = entry.winrm.clone().unwrap_or_default();
    let auth = match settings.auth {
        WinrmAuthMethod::Ntlm => WinrmAuth::Ntlm,
        WinrmAuthMethod::Basic => WinrmAuth::Basic,
        WinrmAuthMethod::Kerberos => {
            return Err(format!(
                "host {:?}: winrm auth kerberos is not supported by this build (use ntlm or basic)",
                entry.id
            ))
        }
    };
    let cert_sha256 = match &settings.cert_sha256 {
        Some(text) => Some(
            winrm::parse_sha256_pin(text)
                .map_err(|reason| format!("host {:?}: {reason}", entry.id))?,
        ),
        None => None,
    };
    Ok(WinrmTarget {
        address,
        port: entry.port_or_default().unwrap_or(5985),
        scheme: match settings.transport {
            WinrmTransport::Http => Scheme::Http,
            WinrmTransport::Https => Scheme::Https,
        },
        auth,
        username: credentials.username.clone(),
        password,
        tls: TlsTrust {
            ca_file: settings.ca_file.clone(),
            cert_sha256,
        },
        allow_http_basic: settings.allow_http_basic,
    })
}

/// The SSH authentication that credentials describe: a key file, else key text, else password.
pub fn ssh_auth(credentials: &Credentials) -> Result<SshAuth, &'static str> {
    let passphrase = credentials.passphrase.clone();
    if let Some(path) = &credentials.private_key_file {
        Ok(SshAuth::PrivateKey {
            path: path.clone(),
            passphrase,
        })
    } else if let Some(key) = &credentials.private_key {
        Ok(SshAuth::PrivateKeyText {
            key: key.clone(),
            passphrase,
        })
    } else if let Some(password) = &credentials.password {
        Ok(SshAuth::Password(password.clone()))
    } else {
        Err("have no password, private_key_file or private_key")
    }
}

/// Hashes what defines a host, secrets included (the hash never leaves the process).
fn fingerprint(
    entry: &HostEntry,
    credentials: Option<&Credentials>,
    limits: &Limits,
    ssh: &SshSettings,
) -> u64 {
    use secrecy::ExposeSecret;
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        &entry.id,
        &entry.address,
        entry.port,
        entry.protocol,
        &entry.groups,
        &entry.winrm,
    )
        .hash(&mut hasher);
    format!("{:?}", entry.host_key_policy.unwrap_or(ssh.host_key_policy)).hash(&mut hasher);
    (
        &ssh.pin_file,
        &ssh.known_hosts_files,
        ssh.allow_ssh_rsa_sha1,
    )
        .hash(&mut hasher);
    (limits.connect, limits.total, limits.max_output_bytes).hash(&mut hasher);
    if let Some(c) = credentials {
        let secret =
            |s: &Option<secrecy::SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
        (
            &c.username,
            secret(&c.password),
            &c.private_key_file,
            secret(&c.private_key),
        )
            .hash(&mut hasher);
        (secret(&c.passphrase), c.sudo).hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(json: &str) -> Vec<HostSpec> {
        let inventory: Inventory = serde_json::from_str(json).expect("inventory parses");
        inventory.validate().expect("inventory is valid");
        let ssh = SshSettings {
            host_key_policy: ConfiguredPolicy::AcceptNew,
            pin_file: PathBuf::from("/nonexistent/known_hosts"),
            known_hosts_files: Vec::new(),
            allow_ssh_rsa_sha1: false,
        };
        HostSpec::from_inventory(&inventory, &Timeouts::default(), &ssh)
    }

    #[test]
    fn winrm_hosts_get_a_winrm_target_with_their_settings() {
        let pin = "ab".repeat(32);
        let hosts = specs(&format!(
            r#"{{"default_credentials":{{"username":"CORP\\svc","password":"p"}},"hosts":[
                {{"id":"a","address":"win-a","protocol":"winrm"}},
                {{"id":"b","address":"win-b","protocol":"winrm","winrm":{{"transport":"https","auth":"basic","cert_sha256":"{pin}","ca_file":"/ca.pem"}}}},
                {{"id":"k","address":"win-k","protocol":"winrm","winrm":{{"auth":"kerberos"}}}}]}}"#
        ));
        let Target::Winrm(a) = &hosts[0].target else {
            panic!("a: {:?}", hosts[0].target)
        };
        assert_eq!(
            (a.port, a.scheme, a.auth, a.username.as_str()),
            (5985, Scheme::Http, WinrmAuth::Ntlm, "CORP\\svc")
        );
        let Target::Winrm(b) = &hosts[1].target else {
            panic!("b: {:?}", hosts[1].target)
        };
        assert_eq!(
            (b.port, b.scheme, b.auth),
            (5986, Scheme::Https, WinrmAuth::Basic)
        );
        assert_eq!(b.tls.cert_sha256, Some([0xab; 32]));
        assert_eq!(b.tls.ca_file, Some(PathBuf::from("/ca.pem")));
        assert!(
            matches!(&hosts[2].target, Target::Unsupported(reason) if reason.contains("kerberos")),
            "{:?}",
            hosts[2].target
        );
    }

    #[test]
    fn winrm_settings_are_part_of_the_fingerprint() {
        let host = |transport: &str| {
            specs(&format!(
                r#"{{"default_credentials":{{"username":"u","password":"p"}},"hosts":[{{"id":"a","address":"w","protocol":"winrm","winrm":{{"transport":"{transport}"}}}}]}}"#
            ))
            .remove(0)
            .fingerprint
        };
        assert_eq!(host("http"), host("http"));
        assert_ne!(host("http"), host("https"));
    }
}
