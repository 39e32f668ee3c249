//! Host key verification, done after the key exchange and **before** any credential is sent.
//!
//! Policies (as OpenSSH's `StrictHostKeyChecking`):
//! - [`HostKeyPolicy::AcceptNew`]: trust on first use. The first key seen for `host:port` is
//!   pinned in the agent's own known_hosts file; a different key later is refused until an
//!   operator removes the pin.
//! - [`HostKeyPolicy::Strict`]: the key must already be in one of the configured OpenSSH
//!   known_hosts files (hashed entries and `[host]:port` entries included).
//! - [`HostKeyPolicy::Off`]: no check (the caller logs a warning every cycle).
//!
//! Fingerprints are printed as OpenSSH prints them: `SHA256:` + unpadded base64.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};
use ssh2::{CheckResult, KnownHostFileKind, KnownHostKeyFormat, Session};

use crate::ErrorKind;

/// How host keys are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Trust on first use, pin, refuse changes.
    AcceptNew,
    /// Only keys already in the configured known_hosts files.
    Strict,
    /// No check.
    Off,
}

/// Where known keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyCheck {
    /// The policy for this host.
    pub policy: HostKeyPolicy,
    /// The agent's own known_hosts file, where `accept-new` pins keys.
    pub pin_file: PathBuf,
    /// OpenSSH known_hosts files consulted by `strict` (and by `accept-new` before pinning).
    pub known_hosts_files: Vec<PathBuf>,
    /// Also offer the legacy `ssh-rsa` (SHA-1) host key algorithm.
    pub allow_ssh_rsa_sha1: bool,
    /// `accept-new` pins an unknown key (collection) or only accepts it (`doctor`, which
    /// changes nothing).
    pub pin_new_keys: bool,
}

/// Host key algorithms offered, strongest first. `ssh-rsa` (SHA-1) is appended only on request.
pub(crate) fn host_key_preference(allow_ssh_rsa_sha1: bool) -> &'static str {
    if allow_ssh_rsa_sha1 {
        "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-512,rsa-sha2-256,ssh-rsa"
    } else {
        "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-512,rsa-sha2-256"
    }
}

/// Serializes read-check-pin-write of the pin file between the pool's threads.
static PIN_LOCK: Mutex<()> = Mutex::new(());

/// `SHA256:<base64>` of a key blob, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key_blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(Sha256::digest(key_blob))
    )
}

/// Checks the session's host key for `address:port` under `check.policy`.
pub(crate) fn verify(
    session: &Session,
    address: &str,
    port: u16,
    check: &HostKeyCheck,
) -> Result<(), ErrorKind> {
    if check.policy == HostKeyPolicy::Off {
        return Ok(());
    }
    let Some((blob, key_type)) = session.host_key() else {
        return Err(ErrorKind::Ssh {
            stage: "host key check",
            message: "the server presented no host key".to_owned(),
        });
    };
    let presented = fingerprint(blob);
    let store_error = |path: &Path, reason: String| ErrorKind::HostKeyStore {
        path: path.to_owned(),
        reason,
    };

    // Keys from the operator's known_hosts files count for both policies.
    let files: Vec<&PathBuf> = check
        .known_hosts_files
        .iter()
        .filter(|p| p.exists())
        .collect();
    if !files.is_empty() {
        let mut known = session
            .known_hosts()
            .map_err(|e| store_error(&check.pin_file, e.message().to_owned()))?;
        for path in &files {
            known
                .read_file(path, KnownHostFileKind::OpenSSH)
                .map_err(|e| store_error(path, e.message().to_owned()))?;
        }
        match known.check_port(address, port, blob) {
            CheckResult::Match => return Ok(()),
            CheckResult::Mismatch => {
                return Err(mismatch(&known, address, port, presented, files[0]));
            }
            CheckResult::NotFound | CheckResult::Failure => {}
        }
    }
    if check.policy == HostKeyPolicy::Strict {
        return Err(ErrorKind::HostKeyUnknown {
            presented,
            files: check.known_hosts_files.clone(),
        });
    }

    // accept-new: the agent's own pins.
    let _guard = PIN_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut pins = session
        .known_hosts()
        .map_err(|e| store_error(&check.pin_file, e.message().to_owned()))?;
    if check.pin_file.exists() {
        pins.read_file(&check.pin_file, KnownHostFileKind::OpenSSH)
            .map_err(|e| store_error(&check.pin_file, e.message().to_owned()))?;
    }
    match pins.check_port(address, port, blob) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(mismatch(&pins, address, port, presented, &check.pin_file)),
        CheckResult::NotFound | CheckResult::Failure if !check.pin_new_keys => Ok(()),
        CheckResult::NotFound | CheckResult::Failure => {
            if let Some(dir) = check.pin_file.parent() {
                std::fs::create_dir_all(dir).map_err(|e| store_error(dir, e.to_string()))?;
            }
            let name = host_name(address, port);
            pins.add(
                &name,
                blob,
                "pinned by luumen-agent",
                KnownHostKeyFormat::from(key_type),
            )
            .map_err(|e| store_error(&check.pin_file, e.message().to_owned()))?;
            pins.write_file(&check.pin_file, KnownHostFileKind::OpenSSH)
                .map_err(|e| store_error(&check.pin_file, e.message().to_owned()))?;
            tracing::info!(
                message = "Host key pinned (first use).",
                address,
                port,
                fingerprint = %presented,
                file = %check.pin_file.display(),
            );
            Ok(())
        }
    }
}

/// How known_hosts names a host: `host` on port 22, `[host]:port` otherwise.
fn host_name(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_owned()
    } else {
        format!("[{address}]:{port}")
    }
}

fn mismatch(
    known: &ssh2::KnownHosts,
    address: &str,
    port: u16,
    presented: String,
    file: &Path,
) -> ErrorKind {
    let name = host_name(address, port);
    let expected = known
        .hosts()
        .ok()
        .and_then(|hosts| {
            hosts
                .iter()
                .filter(|h| h.name() == Some(name.as_str()))
                .find_map(|h| STANDARD.decode(h.key()).ok())
        })
        .map(|blob| fingerprint(&blob))
        .unwrap_or_else(|| "(hashed entry)".to_owned());
    ErrorKind::HostKeyMismatch {
        presented,
        expected,
        file: file.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_match_ssh_keygen() {
        // `ssh-keygen -lf` of this public key prints this fingerprint (OpenSSH 9.2).
        let blob = STANDARD
            .decode("AAAAC3NzaC1lZDI1NTE5AAAAIIHyqKxsPnDddtDCs9kjMr/0wLUdVXRx5D0xNxYCvjvu")
            .expect("base64");
        assert_eq!(
            fingerprint(&blob),
            "SHA256:u6A8au/mBu45VlMVpgt4tpUNQxWlPGSmmwV7UHmLEYc"
        );
    }

    #[test]
    fn names_follow_openssh() {
        assert_eq!(host_name("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(host_name("10.0.0.1", 2222), "[10.0.0.1]:2222");
    }

    #[test]
    fn sha1_rsa_only_on_request() {
        assert!(!host_key_preference(false)
            .split(',')
            .any(|a| a == "ssh-rsa"));
        assert!(host_key_preference(true).split(',').any(|a| a == "ssh-rsa"));
    }
}
