//! The protocol actor: runs the blocking transports on a bounded pool of threads.
//!
//! Started as a [`SyncArbiter`](actix::SyncArbiter) with `max_concurrency` threads, so the pool
//! size is the global limit on simultaneous connections; further requests wait in its mailbox.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::{Actor, Handler, Message, SyncContext};
use luumen_protocols::{local, ssh, winrm, Exec, ExecOutput, Limits};

use crate::spec::Target;

/// Run one command with a script on its standard input on one host.
///
/// For SSH and local hosts `command` is the command line and `stdin` the script fed to it. For
/// WinRM hosts `stdin` is the PowerShell script's source text (UTF-8), which the transport runs
/// with `powershell.exe` (encoded on the command line, or on standard input when long), and
/// `command` only names the run in errors.
#[derive(Debug, Message)]
#[rtype(result = "Result<ExecOutput, ExecFailure>")]
pub struct Execute {
    /// The host's id, for errors and logs.
    pub host_id: String,
    /// How to reach the host.
    pub target: Target,
    /// The fixed command line (WinRM: a label for errors, e.g. `powershell`).
    pub command: &'static str,
    /// The script fed to the command (WinRM: the PowerShell source, UTF-8).
    pub stdin: Vec<u8>,
    /// Time and size limits.
    pub limits: Limits,
}

/// Why an [`Execute`] produced no output.
#[derive(Debug, thiserror::Error)]
pub enum ExecFailure {
    /// The transport failed (unreachable, refused credentials, timeout, …).
    #[error(transparent)]
    Transport(#[from] luumen_protocols::Error),
    /// The host cannot be collected by this build.
    #[error("host {host}: {reason}")]
    Unsupported {
        /// The host's id.
        host: String,
        /// Why.
        reason: String,
    },
    /// The transport code panicked; caught so that only this host is affected.
    #[error("host {host}: internal error in the {protocol} transport: {message}")]
    Panicked {
        /// The host's id.
        host: String,
        /// `ssh`, `winrm` or `local`.
        protocol: &'static str,
        /// The panic message.
        message: String,
    },
}

/// Runs transports; one instance per pool thread.
#[derive(Debug, Default)]
pub struct ProtocolActor;

/// Protocol pool threads running in this process (one [`ProtocolActor`] each), so that the
/// host actors can bound the results in flight to the pool's size plus a margin without being
/// told the pool size.
static POOL_THREADS: AtomicUsize = AtomicUsize::new(0);

/// How many protocol pool threads are running in this process.
pub(crate) fn pool_threads() -> usize {
    POOL_THREADS.load(Ordering::Relaxed)
}

impl Actor for ProtocolActor {
    type Context = SyncContext<Self>;

    fn started(&mut self, _ctx: &mut SyncContext<Self>) {
        POOL_THREADS.fetch_add(1, Ordering::Relaxed);
    }

    fn stopped(&mut self, _ctx: &mut SyncContext<Self>) {
        POOL_THREADS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Handler<Execute> for ProtocolActor {
    type Result = Result<ExecOutput, ExecFailure>;

    fn handle(&mut self, msg: Execute, _ctx: &mut SyncContext<Self>) -> Self::Result {
        let exec = Exec {
            host: &msg.host_id,
            command: msg.command,
            stdin: &msg.stdin,
        };
        let (protocol, outcome) = match &msg.target {
            Target::Ssh(target) => (
                "ssh",
                catch_unwind(AssertUnwindSafe(|| ssh::run(target, &exec, &msg.limits))),
            ),
            Target::Winrm(target) => (
                "winrm",
                catch_unwind(AssertUnwindSafe(|| winrm::run(target, &exec, &msg.limits))),
            ),
            Target::Local => (
                "local",
                catch_unwind(AssertUnwindSafe(|| local::run(&exec, &msg.limits))),
            ),
            Target::Unsupported(reason) => {
                return Err(ExecFailure::Unsupported {
                    host: msg.host_id,
                    reason: reason.clone(),
                })
            }
        };
        match outcome {
            Ok(result) => result.map_err(ExecFailure::Transport),
            Err(payload) => Err(ExecFailure::Panicked {
                host: msg.host_id,
                protocol,
                message: crate::panic_message(payload.as_ref()),
            }),
        }
    }
}
