//! Transports of luumen-agent: connect to a host, run one command with a script on its standard
//! input, and return what it printed. No actors, no parsing, no retries: a call is one attempt.
//!
//! - [`ssh`] — OpenSSH-compatible servers through `ssh2` (libssh2). Blocking: callers run it on a
//!   bounded worker pool.
//! - [`local`] — the agent's own machine, through `/bin/sh -c`, with the same semantics as an SSH
//!   exec (the command line is run by a shell, the script arrives on standard input).
//!
//! ```no_run
//! use std::time::Duration;
//! use luumen_protocols::{local, Exec, Limits};
//!
//! let exec = Exec { host: "patch-server", command: "/bin/sh -s", stdin: b"uname -s\n" };
//! let output = local::run(&exec, &Limits::new(Duration::from_secs(5), Duration::from_secs(60)))?;
//! assert_eq!(output.stdout, b"Linux\n");
//! # Ok::<(), luumen_protocols::Error>(())
//! ```

mod error;
pub mod hostkey;
pub mod local;
pub mod ssh;
pub mod winrm;

use std::time::{Duration, Instant};

pub use error::{Error, ErrorKind};

/// One command to run on one host.
#[derive(Debug, Clone, Copy)]
pub struct Exec<'a> {
    /// The host's id, for errors and logs.
    pub host: &'a str,
    /// The command line, run by the login shell on the far side. A fixed string: never built
    /// from host-list fields.
    pub command: &'a str,
    /// Bytes written to the command's standard input, followed by end-of-file.
    pub stdin: &'a [u8],
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Standard output, as bytes.
    pub stdout: Vec<u8>,
    /// Standard error, as bytes.
    pub stderr: Vec<u8>,
    /// Exit status; `None` when the far side did not send one (e.g. killed by a signal).
    pub exit_status: Option<i32>,
}

/// Time and size limits for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TCP connect limit.
    pub connect: Duration,
    /// Limit for the whole call: connect, handshake, authentication, command.
    pub total: Duration,
    /// Most bytes accepted on each of stdout and stderr; a host printing more is cut off with an
    /// error rather than exhausting the agent's memory.
    pub max_output_bytes: usize,
}

impl Limits {
    /// Limits with the default output cap (64 MiB per stream).
    pub fn new(connect: Duration, total: Duration) -> Limits {
        Limits {
            connect,
            total,
            max_output_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A point in time after which a call gives up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Instant);

impl Deadline {
    pub(crate) fn after(duration: Duration) -> Deadline {
        Deadline(Instant::now() + duration)
    }

    /// Time left, or `None` when the deadline has passed.
    pub(crate) fn remaining(self) -> Option<Duration> {
        self.0
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }
}
