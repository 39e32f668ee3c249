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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};
use ssh2::{CheckResult, KnownHostFileKind, Session};

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
    let Some((blob, _key_type)) = session.host_key() else {
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
    let mut index = PIN_INDEX.lock().unwrap_or_else(|p| p.into_inner());
    let pins = PinIndex::current(index.take(), &check.pin_file)
        .map_err(|reason| store_error(&check.pin_file, reason))?;
    let pins = index.insert(pins);
    let found = if pins.plain {
        pins.check(address, port, blob)
    } else {
        // Hashed names, markers or patterns (an operator's edit): libssh2 reads the file.
        check_with_libssh2(session, &check.pin_file, address, port, blob)?
    };
    match found {
        PinCheck::Match => Ok(()),
        PinCheck::Mismatch(expected) => Err(ErrorKind::HostKeyMismatch {
            presented,
            expected,
            file: check.pin_file.clone(),
        }),
        PinCheck::NotFound if !check.pin_new_keys => Ok(()),
        PinCheck::NotFound => {
            if let Some(dir) = check.pin_file.parent() {
                std::fs::create_dir_all(dir).map_err(|e| store_error(dir, e.to_string()))?;
            }
            pins.append(&check.pin_file, &host_name(address, port), blob)
                .map_err(|e| store_error(&check.pin_file, e.to_string()))?;
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

/// What the pins say about a presented key.
enum PinCheck {
    Match,
    /// Another key is pinned for the host: its fingerprint (or a note for a hashed entry).
    Mismatch(String),
    NotFound,
}

/// The pin file in memory, so that a first cycle over n new hosts appends n lines instead of
/// reading and rewriting the whole file n times (O(n²); bench/results.md). Reloaded whenever the
/// file is not the version this process last read or wrote (an operator removed a pin).
static PIN_INDEX: Mutex<Option<PinIndex>> = Mutex::new(None);

/// Pins by host name (`host` or `[host]:port`), as read from the pin file.
#[derive(Debug, Default)]
struct PinIndex {
    path: PathBuf,
    /// (inode, size, mtime) of the file as last read or written; `None`: no file.
    version: Option<(u64, u64, i64, i64)>,
    keys: HashMap<String, Vec<Vec<u8>>>,
    /// Every line is a plain `names keytype base64 [comment]` entry (else libssh2 checks).
    plain: bool,
    /// The file ends with a newline (or is empty), so a line can be appended as is.
    ends_with_newline: bool,
}

fn file_version(path: &Path) -> std::io::Result<Option<(u64, u64, i64, i64)>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl PinIndex {
    /// `cached` if it still describes the file at `path`, else the file read afresh.
    fn current(cached: Option<PinIndex>, path: &Path) -> Result<PinIndex, String> {
        let version = file_version(path).map_err(|e| e.to_string())?;
        if let Some(index) = cached {
            if index.path == path && index.version == version {
                return Ok(index);
            }
        }
        let text = match version {
            None => String::new(),
            Some(_) => {
                let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        let mut index = PinIndex {
            path: path.to_owned(),
            version,
            keys: HashMap::new(),
            plain: true,
            ends_with_newline: text.is_empty() || text.ends_with('\n'),
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(names), Some(_key_type), Some(key)) =
                (fields.next(), fields.next(), fields.next())
            else {
                index.plain = false;
                continue;
            };
            let Ok(blob) = STANDARD.decode(key) else {
                index.plain = false;
                continue;
            };
            if names.starts_with('@') || names.starts_with('|') || names.contains(['*', '?', '!']) {
                index.plain = false;
                continue;
            }
            for name in names.split(',') {
                index
                    .keys
                    .entry(name.to_owned())
                    .or_default()
                    .push(blob.clone());
            }
        }
        Ok(index)
    }

    /// As libssh2's `check_port` (without a key type): `[host]:port`, then plain `host`; any
    /// pinned key equal to the presented one matches, else any pinned key is a mismatch.
    fn check(&self, address: &str, port: u16, blob: &[u8]) -> PinCheck {
        let names = [format!("[{address}]:{port}"), address.to_owned()];
        let pinned: Vec<&Vec<u8>> = names
            .iter()
            .filter_map(|n| self.keys.get(n))
            .flatten()
            .collect();
        if pinned.iter().any(|k| k.as_slice() == blob) {
            PinCheck::Match
        } else if let Some(first) = pinned.first() {
            PinCheck::Mismatch(fingerprint(first))
        } else {
            PinCheck::NotFound
        }
    }

    /// Appends one `name keytype base64 comment` line and syncs it; the index follows.
    fn append(&mut self, path: &Path, name: &str, blob: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let key_type = blob
            .get(..4)
            .and_then(|len| {
                let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
                std::str::from_utf8(blob.get(4..4 + len)?).ok()
            })
            .ok_or_else(|| std::io::Error::other("the host key blob names no key type"))?;
        let mut line = String::new();
        if !self.ends_with_newline {
            line.push('\n');
        }
        line.push_str(&format!(
            "{name} {key_type} {} pinned by luumen-agent\n",
            STANDARD.encode(blob)
        ));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        drop(file);
        self.ends_with_newline = true;
        self.keys
            .entry(name.to_owned())
            .or_default()
            .push(blob.to_vec());
        self.version = file_version(path)?;
        Ok(())
    }
}

/// The pin file checked by libssh2 (hashed entries, markers).
fn check_with_libssh2(
    session: &Session,
    pin_file: &Path,
    address: &str,
    port: u16,
    blob: &[u8],
) -> Result<PinCheck, ErrorKind> {
    let store_error = |reason: String| ErrorKind::HostKeyStore {
        path: pin_file.to_owned(),
        reason,
    };
    let mut pins = session
        .known_hosts()
        .map_err(|e| store_error(e.message().to_owned()))?;
    if pin_file.exists() {
        pins.read_file(pin_file, KnownHostFileKind::OpenSSH)
            .map_err(|e| store_error(e.message().to_owned()))?;
    }
    Ok(match pins.check_port(address, port, blob) {
        CheckResult::Match => PinCheck::Match,
        CheckResult::Mismatch => match mismatch(&pins, address, port, String::new(), pin_file) {
            ErrorKind::HostKeyMismatch { expected, .. } => PinCheck::Mismatch(expected),
            _ => PinCheck::Mismatch("(unknown)".to_owned()),
        },
        CheckResult::NotFound | CheckResult::Failure => PinCheck::NotFound,
    })
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

    fn blob(seed: u8) -> Vec<u8> {
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 32]);
        blob.extend(std::iter::repeat_n(seed, 32));
        blob
    }

    fn libssh2_check(path: &Path, address: &str, port: u16, key: &[u8]) -> CheckResult {
        let session = Session::new().expect("session");
        let mut known = session.known_hosts().expect("known hosts");
        known
            .read_file(path, KnownHostFileKind::OpenSSH)
            .expect("libssh2 reads the appended file");
        known.check_port(address, port, key)
    }

    fn same(a: &PinCheck, b: &CheckResult) -> bool {
        matches!(
            (a, b),
            (PinCheck::Match, CheckResult::Match)
                | (PinCheck::Mismatch(_), CheckResult::Mismatch)
                | (PinCheck::NotFound, CheckResult::NotFound)
        )
    }

    #[test]
    fn appended_pins_are_read_by_libssh2_and_checked_as_it_checks_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        let mut index = PinIndex::current(None, &path).expect("no file yet");
        assert!(index.plain && index.keys.is_empty());
        for (i, (address, port)) in [("10.0.0.1", 22), ("10.0.0.2", 2222), ("host.example", 22)]
            .into_iter()
            .enumerate()
        {
            index
                .append(&path, &host_name(address, port), &blob(i as u8))
                .expect("append");
        }
        let text = std::fs::read_to_string(&path).expect("pin file");
        assert_eq!(text.lines().count(), 3, "{text}");
        // Unchanged file: the index in memory is kept; a fresh read agrees with it.
        let index = PinIndex::current(Some(index), &path).expect("same version");
        let reread = PinIndex::current(None, &path).expect("read");
        assert_eq!(index.keys, reread.keys);
        for (address, port) in [
            ("10.0.0.1", 22),
            ("10.0.0.1", 2222),
            ("10.0.0.2", 2222),
            ("10.0.0.2", 22),
            ("host.example", 22),
            ("10.0.0.9", 22),
        ] {
            for seed in 0..4 {
                let key = blob(seed);
                let ours = index.check(address, port, &key);
                let theirs = libssh2_check(&path, address, port, &key);
                assert!(
                    same(&ours, &theirs),
                    "{address}:{port} key {seed}: libssh2 says {theirs:?}"
                );
            }
        }
    }

    #[test]
    fn an_operator_edit_is_seen_and_hashed_files_go_to_libssh2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        let mut index = PinIndex::current(None, &path).expect("no file");
        index.append(&path, "10.0.0.1", &blob(1)).expect("append");
        index.append(&path, "10.0.0.2", &blob(2)).expect("append");
        assert!(matches!(
            index.check("10.0.0.1", 22, &blob(9)),
            PinCheck::Mismatch(_)
        ));
        // The operator removes the first pin (and leaves no final newline).
        let text = std::fs::read_to_string(&path).expect("read");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("10.0.0.1 "))
            .collect();
        std::fs::write(&path, kept.join("\n")).expect("write");
        let mut index = PinIndex::current(Some(index), &path).expect("reloaded");
        assert!(matches!(
            index.check("10.0.0.1", 22, &blob(9)),
            PinCheck::NotFound
        ));
        assert!(!index.ends_with_newline);
        index.append(&path, "10.0.0.1", &blob(9)).expect("append");
        assert_eq!(
            std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count(),
            2
        );
        assert!(matches!(
            libssh2_check(&path, "10.0.0.1", 22, &blob(9)),
            CheckResult::Match
        ));

        std::fs::write(
            &path,
            "|1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIHyqKxsPnDddtDCs9kjMr/0wLUdVXRx5D0xNxYCvjvu\n",
        )
        .expect("write");
        assert!(!PinIndex::current(None, &path).expect("read").plain);
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
