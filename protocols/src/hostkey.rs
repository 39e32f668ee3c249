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
    if !check.pin_new_keys {
        // `doctor`: read only, nothing is written, so no lock on the file.
        let pins = PinIndex::current(index.take(), &check.pin_file)
            .map_err(|reason| store_error(&check.pin_file, reason))?;
        let pins = index.insert(pins);
        let found = if pins.plain {
            pins.check(address, port, blob)
        } else {
            check_with_libssh2(session, &check.pin_file, address, port, blob)?
        };
        return match found {
            PinCheck::Mismatch(expected) => Err(ErrorKind::HostKeyMismatch {
                presented,
                expected,
                file: check.pin_file.clone(),
            }),
            PinCheck::Match | PinCheck::NotFound => Ok(()),
        };
    }
    let found = check_and_pin(&mut index, &check.pin_file, address, port, blob, || {
        // Hashed names, markers or patterns (an operator's edit): libssh2 reads the file.
        check_with_libssh2(session, &check.pin_file, address, port, blob)
    })?;
    match found {
        PinCheck::Match => Ok(()),
        PinCheck::Mismatch(expected) => Err(ErrorKind::HostKeyMismatch {
            presented,
            expected,
            file: check.pin_file.clone(),
        }),
        PinCheck::NotFound => {
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

/// How often the pin file may change under us (an editor that ignores `flock`) before we give up.
const PIN_ATTEMPTS: usize = 8;

/// Checks `blob` against the pin file at `path` and pins it when the host has no key yet, all
/// under an exclusive `flock` of the file, so another agent process (`once`, `doctor`, a second
/// service) cannot pin another key for the same host in between. `cached` is brought up to date
/// from the locked file first; `non_plain` checks files the index cannot read (hashed entries).
/// Returns what the pins said: `NotFound` means the key has just been pinned.
fn check_and_pin(
    cached: &mut Option<PinIndex>,
    path: &Path,
    address: &str,
    port: u16,
    blob: &[u8],
    non_plain: impl Fn() -> Result<PinCheck, ErrorKind>,
) -> Result<PinCheck, ErrorKind> {
    let store_error = |path: &Path, reason: String| ErrorKind::HostKeyStore {
        path: path.to_owned(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| store_error(dir, e.to_string()))?;
    }
    for _ in 0..PIN_ATTEMPTS {
        // Opened again after a stale attempt: the file may have been replaced.
        let locked = LockedPinFile::open(path).map_err(|e| store_error(path, e.to_string()))?;
        let pins = PinIndex::current_locked(cached.take(), path, &locked)
            .map_err(|e| store_error(path, e.to_string()))?;
        let pins = cached.insert(pins);
        let found = if pins.plain {
            pins.check(address, port, blob)
        } else {
            non_plain()?
        };
        if !matches!(found, PinCheck::NotFound) {
            return Ok(found);
        }
        match pins
            .append(&locked, path, &host_name(address, port), blob)
            .map_err(|e| store_error(path, e.to_string()))?
        {
            Appended::Yes => return Ok(PinCheck::NotFound),
            // Edited since we read it: read it again and check again.
            Appended::Stale => {}
        }
    }
    Err(store_error(
        path,
        format!("the file changed {PIN_ATTEMPTS} times while a key was being pinned"),
    ))
}

/// The pin file, open for reading and appending, under an exclusive `flock` until dropped
/// (closing the descriptor releases the lock).
struct LockedPinFile {
    file: std::fs::File,
}

impl LockedPinFile {
    /// Opens (creating it if need be) and locks the file that is at `path` once the lock is held:
    /// a file renamed over `path` (`sed -i`, `ssh-keygen -R`) while we waited is opened again.
    fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::AsRawFd;
        for _ in 0..PIN_ATTEMPTS {
            let mut options = std::fs::OpenOptions::new();
            options.read(true).append(true);
            let (file, created) = match options.clone().create_new(true).open(path) {
                Ok(file) => (file, true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match options.open(path) {
                        Ok(file) => (file, false),
                        // Removed in between: create it.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            if created {
                // The new directory entry survives a power loss before the first pin's fsync.
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    sync_dir(dir)?;
                }
            }
            loop {
                // SAFETY: flock(2) on a descriptor `file` owns for the duration of the call.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                    break;
                }
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            let ours = file.metadata()?;
            match std::fs::metadata(path) {
                Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => {
                    return Ok(Self { file });
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(format!(
            "the file was replaced {PIN_ATTEMPTS} times while it was being locked"
        )))
    }

    /// The version of the locked file (fstat, not the path).
    fn version(&self) -> std::io::Result<FileVersion> {
        Ok(FileVersion::of(&self.file.metadata()?))
    }
}

/// fsyncs a directory, so that an entry created in it survives a power loss.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Whether [`PinIndex::append`] wrote the line.
#[derive(Debug, PartialEq, Eq)]
enum Appended {
    Yes,
    /// The file is no longer the version the index was read from, or was replaced: nothing
    /// written.
    Stale,
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
    /// The file as last read or written; `None`: no file.
    version: Option<FileVersion>,
    keys: HashMap<String, Vec<Vec<u8>>>,
    /// Every line is a plain `names keytype base64 [comment]` entry (else libssh2 checks).
    plain: bool,
    /// The file ends with a newline (or is empty), so a line can be appended as is.
    ends_with_newline: bool,
}

/// (dev, inode, size, mtime): a file replaced, truncated, appended to or rewritten differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl FileVersion {
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

fn file_version(path: &Path) -> std::io::Result<Option<FileVersion>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(FileVersion::of(&m))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl PinIndex {
    /// `cached` if it still describes the file at `path`, else the file read afresh (no lock:
    /// for `doctor`, which writes nothing).
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
        Ok(Self::parse(path, version, &text))
    }

    /// `cached` if it still describes the locked file, else the locked file read afresh.
    fn current_locked(
        cached: Option<PinIndex>,
        path: &Path,
        locked: &LockedPinFile,
    ) -> std::io::Result<PinIndex> {
        use std::io::{Read, Seek, SeekFrom};
        let version = locked.version()?;
        if let Some(index) = cached {
            if index.path == path && index.version == Some(version) {
                return Ok(index);
            }
        }
        let mut file = &locked.file;
        file.seek(SeekFrom::Start(0))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        // The version from before the read: if an editor that ignores the lock wrote meanwhile,
        // `append` sees a newer version and has the file read again.
        Ok(Self::parse(
            path,
            Some(version),
            &String::from_utf8_lossy(&bytes),
        ))
    }

    fn parse(path: &Path, version: Option<FileVersion>, text: &str) -> PinIndex {
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
        index
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

    /// Appends one `name keytype base64 comment` line to the locked file and syncs it; the
    /// index follows. Writes nothing if the file is no longer the version the index describes,
    /// or no longer the file at `path` (an operator's edit, `sed -i`, a process that ignores the
    /// lock): the caller locks and reads it again.
    fn append(
        &mut self,
        locked: &LockedPinFile,
        path: &Path,
        name: &str,
        blob: &[u8],
    ) -> std::io::Result<Appended> {
        use std::io::Write;
        let key_type = blob
            .get(..4)
            .and_then(|len| {
                let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
                std::str::from_utf8(blob.get(4..4 + len)?).ok()
            })
            .ok_or_else(|| std::io::Error::other("the host key blob names no key type"))?;
        let now = locked.version()?;
        let replaced = match file_version(path)? {
            Some(at_path) => (at_path.dev, at_path.ino) != (now.dev, now.ino),
            None => true,
        };
        if replaced || self.version != Some(now) {
            return Ok(Appended::Stale);
        }
        let mut line = String::new();
        if !self.ends_with_newline {
            line.push('\n');
        }
        line.push_str(&format!(
            "{name} {key_type} {} pinned by luumen-agent\n",
            STANDARD.encode(blob)
        ));
        let mut file = &locked.file;
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        self.ends_with_newline = true;
        self.keys
            .entry(name.to_owned())
            .or_default()
            .push(blob.to_vec());
        self.version = Some(locked.version()?);
        Ok(Appended::Yes)
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

    /// What `verify` does for a plain pin file under accept-new.
    fn pin(
        cached: &mut Option<PinIndex>,
        path: &Path,
        address: &str,
        port: u16,
        key: &[u8],
    ) -> PinCheck {
        check_and_pin(cached, path, address, port, key, || {
            panic!("a plain pin file is checked by the index")
        })
        .expect("pin")
    }

    fn pin_line(name: &str, key: &[u8]) -> String {
        format!("{name} ssh-ed25519 {} other\n", STANDARD.encode(key))
    }

    #[test]
    fn appended_pins_are_read_by_libssh2_and_checked_as_it_checks_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The directory does not exist yet: pinning creates it and the file.
        let path = dir.path().join("state").join("known_hosts");
        let mut cached = None;
        for (i, (address, port)) in [("10.0.0.1", 22), ("10.0.0.2", 2222), ("host.example", 22)]
            .into_iter()
            .enumerate()
        {
            let found = pin(&mut cached, &path, address, port, &blob(i as u8));
            assert!(matches!(found, PinCheck::NotFound), "{address}");
        }
        let text = std::fs::read_to_string(&path).expect("pin file");
        assert_eq!(text.lines().count(), 3, "{text}");
        // Unchanged file: the index in memory is kept; a fresh read agrees with it.
        let index = cached.expect("index");
        assert_eq!(index.version, file_version(&path).expect("stat"));
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
        let mut cached = None;
        assert!(matches!(
            pin(&mut cached, &path, "10.0.0.1", 22, &blob(1)),
            PinCheck::NotFound
        ));
        assert!(matches!(
            pin(&mut cached, &path, "10.0.0.2", 22, &blob(2)),
            PinCheck::NotFound
        ));
        assert!(matches!(
            pin(&mut cached, &path, "10.0.0.1", 22, &blob(9)),
            PinCheck::Mismatch(_)
        ));
        // The operator removes the first pin (and leaves no final newline).
        let text = std::fs::read_to_string(&path).expect("read");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("10.0.0.1 "))
            .collect();
        std::fs::write(&path, kept.join("\n")).expect("write");
        assert!(matches!(
            pin(&mut cached, &path, "10.0.0.1", 22, &blob(9)),
            PinCheck::NotFound
        ));
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
        let found = check_and_pin(&mut cached, &path, "10.0.0.1", 22, &blob(1), || {
            Ok(PinCheck::Mismatch("hashed".to_owned()))
        })
        .expect("libssh2 answers for a hashed file");
        assert!(matches!(found, PinCheck::Mismatch(ref f) if f == "hashed"));
    }

    #[test]
    fn an_edit_between_the_check_and_the_append_is_read_before_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        let mut cached = None;
        pin(&mut cached, &path, "10.0.0.1", 22, &blob(1));

        // Checked: 10.0.0.2 is unknown...
        let locked = LockedPinFile::open(&path).expect("lock");
        let mut index = PinIndex::current_locked(cached.take(), &path, &locked).expect("index");
        assert!(matches!(
            index.check("10.0.0.2", 22, &blob(2)),
            PinCheck::NotFound
        ));
        // ...then a writer that ignores the lock pins another key for it.
        {
            use std::io::Write;
            let mut other = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            other
                .write_all(pin_line("10.0.0.2", &blob(3)).as_bytes())
                .expect("write");
        }
        assert_eq!(
            index
                .append(&locked, &path, "10.0.0.2", &blob(2))
                .expect("append"),
            Appended::Stale
        );
        drop(locked);
        cached = Some(index);
        // Read again: the other key is pinned, ours is refused, nothing was added.
        assert!(matches!(
            pin(&mut cached, &path, "10.0.0.2", 22, &blob(2)),
            PinCheck::Mismatch(_)
        ));
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2, "{text}");

        // The operator removes 10.0.0.1's pin in place while another host is being pinned.
        let locked = LockedPinFile::open(&path).expect("lock");
        let mut index = PinIndex::current_locked(cached.take(), &path, &locked).expect("index");
        assert!(matches!(
            index.check("10.0.0.1", 22, &blob(9)),
            PinCheck::Mismatch(_)
        ));
        std::fs::write(&path, pin_line("10.0.0.2", &blob(3))).expect("write");
        assert_eq!(
            index
                .append(&locked, &path, "10.0.0.3", &blob(4))
                .expect("append"),
            Appended::Stale
        );
        drop(locked);
        cached = Some(index);
        assert!(matches!(
            pin(&mut cached, &path, "10.0.0.3", 22, &blob(4)),
            PinCheck::NotFound
        ));
        // The removed pin is gone from memory too.
        assert!(matches!(
            pin(&mut cached, &path, "10.0.0.1", 22, &blob(9)),
            PinCheck::NotFound
        ));
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 3, "{text}");

        // `sed -i` / `ssh-keygen -R` write a new file and rename it over the pins: our
        // descriptor still sees the old file unchanged, the path check catches it.
        let locked = LockedPinFile::open(&path).expect("lock");
        let mut index = PinIndex::current_locked(cached.take(), &path, &locked).expect("index");
        let tmp = dir.path().join("known_hosts.tmp");
        std::fs::write(&tmp, pin_line("10.0.0.2", &blob(3))).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        assert_eq!(
            index
                .append(&locked, &path, "10.0.0.4", &blob(5))
                .expect("append"),
            Appended::Stale
        );
        drop(locked);
        cached = Some(index);
        assert!(matches!(
            pin(&mut cached, &path, "10.0.0.3", 22, &blob(7)),
            PinCheck::NotFound
        ));
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(matches!(
            libssh2_check(&path, "10.0.0.3", 22, &blob(7)),
            CheckResult::Match
        ));
    }

    #[test]
    fn two_agents_pinning_the_same_hosts_pin_one_key_per_host() {
        // Two index instances stand for two agent processes (`once` beside the service): the
        // process-wide mutex does not serialize them, the file lock does.
        const HOSTS: usize = 200;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<Vec<bool>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2u8)
                .map(|agent| {
                    let (path, barrier) = (&path, &barrier);
                    scope.spawn(move || {
                        let mut cached = None;
                        barrier.wait();
                        (0..HOSTS)
                            .map(|host| {
                                let address = format!("10.1.{}.{}", host / 250, host % 250);
                                match pin(&mut cached, path, &address, 22, &blob(agent)) {
                                    PinCheck::NotFound => true,
                                    PinCheck::Mismatch(_) => false,
                                    PinCheck::Match => panic!("{address}: our own key?"),
                                }
                            })
                            .collect()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker"))
                .collect()
        });
        for (host, (first, second)) in results[0].iter().zip(&results[1]).enumerate() {
            assert!(
                first != second,
                "host {host}: pinned by {} agents",
                usize::from(*first) + usize::from(*second)
            );
        }
        let index = PinIndex::current(None, &path).expect("read");
        assert_eq!(index.keys.len(), HOSTS);
        assert!(index.keys.values().all(|keys| keys.len() == 1));
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
