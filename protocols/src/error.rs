use std::fmt;
use std::path::PathBuf;

/// A failed call: which host, which command (when one was running), and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("host {host}: {kind}{}", CommandSuffix(command.as_deref()))]
pub struct Error {
    /// The host's id.
    pub host: String,
    /// The command being run, when the failure happened while running it.
    pub command: Option<String>,
    /// What went wrong.
    #[source]
    pub kind: ErrorKind,
}

struct CommandSuffix<'a>(Option<&'a str>);

impl fmt::Display for CommandSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(command) => write!(f, " (command `{command}`)"),
            None => Ok(()),
        }
    }
}

/// The kinds of failure, each mapping to one report status.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The address did not resolve, or no TCP connection could be made in time.
    #[error("unreachable: {address}: {reason}")]
    Unreachable {
        /// `address:port` as configured.
        address: String,
        /// The operating system's reason, e.g. "Connection refused (os error 111)".
        reason: String,
    },
    /// The host refused the credentials.
    #[error("authentication failed for user {username:?} ({method})")]
    AuthFailed {
        /// The login name.
        username: String,
        /// `password` or `publickey`.
        method: &'static str,
    },
    /// The call did not finish within its limit.
    #[error("timed out after {seconds:.1} s during {stage}")]
    Timeout {
        /// What was happening: connect, handshake, authentication, command.
        stage: &'static str,
        /// The limit that was exceeded.
        seconds: f64,
    },
    /// A credential file on the agent's machine could not be used.
    #[error("cannot use private key file {}: {reason}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The command printed more than the output cap.
    #[error("{stream} exceeded {limit} bytes")]
    OutputTooLarge {
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The cap.
        limit: usize,
    },
    /// An SSH protocol or transport failure after connecting.
    #[error("ssh {stage} failed: {message}")]
    Ssh {
        /// What was happening.
        stage: &'static str,
        /// libssh2's message.
        message: String,
    },
    /// Starting or talking to a local process failed.
    #[error("local exec failed: {0}")]
    Local(#[source] std::io::Error),
}

impl Error {
    pub(crate) fn new(host: &str, kind: ErrorKind) -> Error {
        Error {
            host: host.to_owned(),
            command: None,
            kind,
        }
    }

    pub(crate) fn with_command(host: &str, command: &str, kind: ErrorKind) -> Error {
        Error {
            host: host.to_owned(),
            command: Some(command.to_owned()),
            kind,
        }
    }
}
