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
        /// `password` or `publickey` (SSH); `basic` or `ntlm` (WinRM).
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
    /// The host presented a key different from the one known for it. No credential was sent.
    #[error("host key mismatch: presented {presented}, expected {expected} (known in {}); no credentials were sent — remove the old entry if the change is legitimate", file.display())]
    HostKeyMismatch {
        /// Fingerprint of the key the host presented.
        presented: String,
        /// Fingerprint of the key on record.
        expected: String,
        /// The known_hosts file holding the key on record.
        file: PathBuf,
    },
    /// `strict` policy and the host's key is in no configured known_hosts file.
    #[error("host key {presented} is not in the known_hosts files {files:?} (host_key_policy strict); no credentials were sent")]
    HostKeyUnknown {
        /// Fingerprint of the key the host presented.
        presented: String,
        /// The files consulted.
        files: Vec<PathBuf>,
    },
    /// The known_hosts or pin file could not be read or written.
    #[error("cannot use known_hosts file {}: {reason}", path.display())]
    HostKeyStore {
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
    /// The host's TLS certificate was refused (untrusted chain, wrong name, or not the pinned
    /// certificate). No credential was sent.
    #[error("TLS certificate refused: {reason}; no credentials were sent")]
    Certificate {
        /// rustls's reason, or the pin mismatch with both fingerprints.
        reason: String,
    },
    /// The WS-Management service answered with a SOAP fault.
    #[error("WS-Management fault {code}: {message}")]
    WsManFault {
        /// The fault's subcode, e.g. `w:InvalidSelectors` (its most specific code).
        code: String,
        /// The fault's reason text.
        message: String,
    },
    /// A WinRM HTTP or protocol failure after connecting (other than a fault or refused
    /// credentials).
    #[error("winrm {stage} failed: {message}")]
    WinRm {
        /// What was happening: `tls handshake`, `create shell`, `command`, `input`, `output`.
        stage: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The host's settings cannot be used as given (e.g. Basic over HTTP not allowed, an
    /// unreadable CA file). Nothing was sent.
    #[error("invalid winrm settings: {reason}")]
    Settings {
        /// Why.
        reason: String,
    },
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
