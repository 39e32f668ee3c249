//! Integration-test harness for `luumen-agent`.
//!
//! This crate is test-only support code. It provides:
//!
//! * [`sshd`]: real OpenSSH `sshd` processes on private loopback addresses,
//!   with the system test users (see [`users`]) and per-harness client keys;
//! * [`users`]: the idempotent creation of the test users, sudo rules and root
//!   crontab (via `tests/setup/test-users.sh`);
//! * [`http`]: a recording HTTP receiver standing in for the inventory backend;
//! * [`agent`]: locating and running the `luumen-agent` binary with a timeout;
//! * [`net`]: distinct loopback addresses and closed ports for tests.
//!
//! Everything that touches the system (users, sudoers, sshd) requires root;
//! [`require_root`] panics with a clear message otherwise.

#![warn(missing_docs)]

pub mod agent;
pub mod api_server;
pub mod http;
pub mod net;
pub mod openbao;
pub mod sshd;
pub mod users;
pub mod winrm;

pub use agent::{agent_bin, run_agent, run_command};
pub use http::{Receiver, RecordedRequest};
pub use net::{closed_port, free_loopback_addresses};
pub use sshd::{SshdConfig, SshdHarness};
pub use users::{ensure_test_users, TestUser};

/// Returns `true` if the current process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Panics with a clear message unless the current process runs as root.
///
/// The harness creates system users, writes `/etc/sudoers.d/luumen-test` and
/// starts `sshd`, all of which need root.
pub fn require_root() {
    if !is_root() {
        panic!(
            "luumen-integration: these tests must run as root (they create system users, \
             a sudoers drop-in and start sshd); run e.g. `sudo -E cargo test`"
        );
    }
}
