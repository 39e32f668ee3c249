//! System test users, sudo rules and the root crontab.
//!
//! The system side is done by `tests/setup/test-users.sh` (idempotent, also
//! usable from `make`); [`ensure_test_users`] runs it once per process.
//!
//! | user            | auth     | sudo (NOPASSWD, collector commands only) |
//! |-----------------|----------|------------------------------------------|
//! | `luumen-key`    | key      | yes                                      |
//! | `luumen-sudo`   | key      | yes                                      |
//! | `luumen-pass`   | password | yes                                      |
//! | `luumen-nosudo` | key      | no                                       |
//!
//! The sudo rules (`/etc/sudoers.d/luumen-test`) allow exactly
//! `/usr/sbin/dmidecode`, `/usr/sbin/getenforce`, `/usr/sbin/tuned-adm` (any
//! arguments) and `cat` of the three possible root crontab paths.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Key-auth user with sudo rights.
pub const KEY_USER: &str = "luumen-key";
/// Second key-auth user with sudo rights (a distinct system user).
pub const SUDO_USER: &str = "luumen-sudo";
/// Password-auth user with sudo rights (no authorized key is installed for it).
pub const PASS_USER: &str = "luumen-pass";
/// Key-auth user without any sudo rights.
pub const NOSUDO_USER: &str = "luumen-nosudo";
/// All test users, in a stable order.
pub const ALL_USERS: [&str; 4] = [KEY_USER, SUDO_USER, PASS_USER, NOSUDO_USER];

/// Default password of [`PASS_USER`]; overridable with `LUUMEN_TEST_PASSWORD`
/// (read by both the setup script and [`pass_user_password`]).
pub const DEFAULT_PASSWORD: &str = "Luumen-test-pass-1";

/// Path of the sudoers drop-in written by the setup script.
pub const SUDOERS_FILE: &str = "/etc/sudoers.d/luumen-test";

/// Path of root's crontab (Debian layout); created by the setup script with two
/// entries marked `# luumen-test` if it did not exist.
pub const ROOT_CRONTAB: &str = "/var/spool/cron/crontabs/root";

/// Marker comment on every crontab line the setup script writes.
pub const CRONTAB_MARKER: &str = "# luumen-test";

/// A system user the tests can log in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestUser {
    /// Login name, e.g. `luumen-key`.
    pub name: String,
    /// Password for password authentication; `None` for key-only users
    /// (their shadow hash is `*`, so no password matches).
    pub password: Option<String>,
    /// Unencrypted ed25519 private key of the harness (OpenSSH format). It is
    /// authorized for this user only if [`TestUser::key_authorized`] is true.
    pub private_key: PathBuf,
    /// Whether the harness' keys (plain and encrypted) are in this user's
    /// authorized keys.
    pub key_authorized: bool,
    /// Whether the user may run the collector commands with `sudo -n`.
    pub sudo: bool,
}

impl TestUser {
    /// Builds the [`TestUser`] for one of the [`ALL_USERS`] names, with the
    /// given harness private key.
    ///
    /// # Panics
    /// If `name` is not one of [`ALL_USERS`].
    pub fn for_name(name: &str, private_key: &Path) -> TestUser {
        let (password, key_authorized, sudo) = match name {
            KEY_USER | SUDO_USER => (None, true, true),
            PASS_USER => (Some(pass_user_password()), false, true),
            NOSUDO_USER => (None, true, false),
            other => panic!("TestUser::for_name: unknown test user {other:?}"),
        };
        TestUser {
            name: name.to_string(),
            password,
            private_key: private_key.to_path_buf(),
            key_authorized,
            sudo,
        }
    }
}

/// The password of [`PASS_USER`]: `LUUMEN_TEST_PASSWORD` or
/// [`DEFAULT_PASSWORD`].
pub fn pass_user_password() -> String {
    std::env::var("LUUMEN_TEST_PASSWORD").unwrap_or_else(|_| DEFAULT_PASSWORD.to_string())
}

/// Path of the setup script (`tests/setup/test-users.sh`).
pub fn setup_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("setup")
        .join("test-users.sh")
}

/// Runs `tests/setup/test-users.sh` once per process (later calls return the
/// first result immediately).
///
/// # Panics
/// If not root, or if the script fails (the message contains its output).
pub fn ensure_test_users() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    crate::require_root();
    let result = DONE.get_or_init(|| {
        let script = setup_script();
        let output = Command::new("/bin/sh")
            .arg(&script)
            .env("LUUMEN_TEST_PASSWORD", pass_user_password())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}):\nstdout:\n{}\nstderr:\n{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(message) = result {
        panic!("luumen-integration: setting up the test users failed: {message}");
    }
}
