//! SSH transport through `ssh2` (libssh2): one TCP connection, one session, one exec.
//!
//! Blocking. Each call enforces its own deadline: every blocking libssh2 call gets the time left.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use ssh2::Session;

use crate::hostkey::{self, HostKeyCheck};
use crate::{Deadline, Error, ErrorKind, Exec, ExecOutput, Limits};

mod userkey;

/// libssh2's error codes that the mapping below distinguishes.
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
const LIBSSH2_ERROR_FILE: i32 = -16;
const LIBSSH2_ERROR_AUTHENTICATION_FAILED: i32 = -18;
const LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED: i32 = -19;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// DNS name or IP address.
    pub address: String,
    /// TCP port.
    pub port: u16,
    /// Login name.
    pub username: String,
    /// How to prove it.
    pub auth: SshAuth,
    /// How the host's key is verified before authenticating.
    pub host_key: HostKeyCheck,
}

/// An authentication method. Secrets print as `[REDACTED]`.
#[derive(Debug, Clone)]
pub enum SshAuth {
    /// Password (`password`, or `keyboard-interactive` when the server only offers that).
    Password(SecretString),
    /// A private key file on the agent's machine, optionally encrypted.
    PrivateKey {
        /// The key file (OpenSSH or PEM format).
        path: PathBuf,
        /// The key's passphrase.
        passphrase: Option<SecretString>,
    },
    /// A private key held in memory (PEM/OpenSSH text), optionally encrypted.
    PrivateKeyText {
        /// The key text.
        key: SecretString,
        /// The key's passphrase.
        passphrase: Option<SecretString>,
    },
}

impl SshAuth {
    fn method(&self) -> &'static str {
        match self {
            SshAuth::Password(_) => "password",
            SshAuth::PrivateKey { .. } | SshAuth::PrivateKeyText { .. } => "publickey",
        }
    }
}

/// Connects, authenticates, runs `exec.command` with `exec.stdin` on its standard input and
/// returns both output streams and the exit status.
pub fn run(target: &SshTarget, exec: &Exec<'_>, limits: &Limits) -> Result<ExecOutput, Error> {
    let deadline = Deadline::after(limits.total);
    let host = exec.host;
    let fail = |kind| Error::new(host, kind);
    let seconds = limits.total.as_secs_f64();

    if let SshAuth::PrivateKey { path, .. } = &target.auth {
        check_key_file(path).map_err(fail)?;
    }

    let tcp = connect(target, limits.connect, deadline).map_err(fail)?;
    let mut session = Session::new().map_err(|e| fail(ssh_kind("session", &e, seconds)))?;
    session.set_tcp_stream(tcp);
    session
        .method_pref(
            ssh2::MethodType::HostKey,
            hostkey::host_key_preference(target.host_key.allow_ssh_rsa_sha1),
        )
        .map_err(|e| fail(ssh_kind("handshake", &e, seconds)))?;
    prefer_aes_gcm(&session).map_err(|e| fail(ssh_kind("handshake", &e, seconds)))?;
    set_timeout(&session, deadline, "handshake", seconds).map_err(fail)?;
    session
        .handshake()
        .map_err(|e| fail(ssh_kind("handshake", &e, seconds)))?;
    // Before any credential leaves the agent.
    hostkey::verify(&session, &target.address, target.port, &target.host_key).map_err(fail)?;

    set_timeout(&session, deadline, "authentication", seconds).map_err(fail)?;
    authenticate(&session, target, seconds).map_err(fail)?;

    set_timeout(&session, deadline, "command", seconds).map_err(fail)?;
    let fail_cmd = |kind| Error::with_command(host, exec.command, kind);
    let output = run_command(&session, exec, limits, seconds).map_err(fail_cmd)?;
    // Best effort: the output is complete; a failed goodbye changes nothing.
    let _ = session.disconnect(None, "collection done", None);
    Ok(output)
}

/// Ciphers tried first, in order: AES-GCM runs on the CPU's AES instructions through OpenSSL,
/// while libssh2's chacha20-poly1305 is its own portable C code (4.4 % + 1.7 % of the agent's
/// CPU in the bench's profile). Every other cipher libssh2 supports follows, in its own order.
const PREFERRED_CIPHERS: [&str; 4] = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
];

/// The cipher preference for both directions, computed once from what libssh2 supports.
fn prefer_aes_gcm(session: &Session) -> Result<(), ssh2::Error> {
    static PREFERENCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let preference = match PREFERENCE.get() {
        Some(preference) => preference,
        None => {
            let supported = session.supported_algs(ssh2::MethodType::CryptCs)?;
            let mut order: Vec<&str> = PREFERRED_CIPHERS
                .iter()
                .copied()
                .filter(|c| supported.contains(c))
                .collect();
            let rest: Vec<&str> = supported
                .iter()
                .copied()
                .filter(|c| !PREFERRED_CIPHERS.contains(c))
                .collect();
            order.extend(rest);
            PREFERENCE.get_or_init(|| order.join(","))
        }
    };
    if preference.is_empty() {
        return Ok(());
    }
    session.method_pref(ssh2::MethodType::CryptCs, preference)?;
    session.method_pref(ssh2::MethodType::CryptSc, preference)
}

fn check_key_file(path: &Path) -> Result<(), ErrorKind> {
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(path).map_err(|e| ErrorKind::KeyFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if let Ok(metadata) = file.metadata() {
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                message = "Private key file is readable by group or others; restrict it with chmod 600.",
                path = %path.display(),
                mode = format!("{:04o}", mode & 0o7777),
            );
        }
    }
    Ok(())
}

fn connect(
    target: &SshTarget,
    limit: Duration,
    deadline: Deadline,
) -> Result<TcpStream, ErrorKind> {
    let label = format!("{}:{}", target.address, target.port);
    let unreachable = |reason: String| ErrorKind::Unreachable {
        address: label.clone(),
        reason,
    };
    let addresses: Vec<SocketAddr> = (target.address.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve: {e}")))?
        .collect();
    let mut last_error = "name resolved to no address".to_owned();
    for address in addresses {
        let Some(left) = deadline.remaining() else {
            return Err(ErrorKind::Timeout {
                stage: "connect",
                seconds: limit.as_secs_f64(),
            });
        };
        match TcpStream::connect_timeout(&address, limit.min(left)) {
            Ok(stream) => {
                // Small request/response exchanges: do not wait for Nagle.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last_error = format!("no answer within {:.1} s", limit.as_secs_f64());
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(unreachable(last_error))
}

fn set_timeout(
    session: &Session,
    deadline: Deadline,
    stage: &'static str,
    seconds: f64,
) -> Result<(), ErrorKind> {
    let left = deadline
        .remaining()
        .ok_or(ErrorKind::Timeout { stage, seconds })?;
    // libssh2 takes milliseconds as u32; 0 would mean "no limit", so at least 1.
    let millis = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
    session.set_timeout(millis);
    Ok(())
}

fn ssh_kind(stage: &'static str, error: &ssh2::Error, seconds: f64) -> ErrorKind {
    match error.code() {
        ssh2::ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) => ErrorKind::Timeout { stage, seconds },
        _ => ErrorKind::Ssh {
            stage,
            message: error.message().to_owned(),
        },
    }
}

fn authenticate(session: &Session, target: &SshTarget, seconds: f64) -> Result<(), ErrorKind> {
    let username = target.username.as_str();
    let refused = || ErrorKind::AuthFailed {
        username: username.to_owned(),
        method: target.auth.method(),
    };
    let map = |e: ssh2::Error| match e.code() {
        ssh2::ErrorCode::Session(
            LIBSSH2_ERROR_AUTHENTICATION_FAILED | LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED,
        ) => refused(),
        ssh2::ErrorCode::Session(LIBSSH2_ERROR_FILE) => match &target.auth {
            SshAuth::PrivateKey { path, passphrase } => ErrorKind::KeyFile {
                path: path.clone(),
                reason: if passphrase.is_some() {
                    "unreadable key or wrong passphrase".to_owned()
                } else {
                    "unreadable key (encrypted keys need a passphrase)".to_owned()
                },
            },
            SshAuth::PrivateKeyText { .. } => ErrorKind::Ssh {
                stage: "authentication",
                message: "cannot use the private key text (invalid key or wrong passphrase)"
                    .to_owned(),
            },
            SshAuth::Password(_) => ssh_kind("authentication", &e, seconds),
        },
        _ => ssh_kind("authentication", &e, seconds),
    };
    match &target.auth {
        SshAuth::PrivateKey { path, passphrase } => {
            let key = userkey::from_file(path, passphrase.as_ref()).map_err(|reason| {
                ErrorKind::KeyFile {
                    path: path.clone(),
                    reason,
                }
            })?;
            use_key(session, username, &key, passphrase.as_ref()).map_err(map)?;
        }
        SshAuth::PrivateKeyText { key, passphrase } => {
            let key = userkey::from_text(key, passphrase.as_ref());
            use_key(session, username, &key, passphrase.as_ref()).map_err(map)?;
        }
        SshAuth::Password(password) => {
            let methods = session.auth_methods(username).map_err(map)?;
            let offers = |m: &str| methods.split(',').any(|offered| offered == m);
            if !offers("password") && offers("keyboard-interactive") {
                let mut prompt = AnswerWithPassword(password);
                session
                    .userauth_keyboard_interactive(username, &mut prompt)
                    .map_err(map)?;
            } else {
                session
                    .userauth_password(username, password.expose_secret())
                    .map_err(map)?;
            }
        }
    }
    if session.authenticated() {
        Ok(())
    } else {
        Err(refused())
    }
}

/// Authenticates with a decoded key: signed in Rust when possible, else by libssh2 from the
/// cached key text.
fn use_key(
    session: &Session,
    username: &str,
    key: &userkey::UserKey,
    passphrase: Option<&SecretString>,
) -> Result<(), ssh2::Error> {
    match &key.form {
        userkey::KeyForm::Signer {
            public_blob,
            private,
        } => userkey::authenticate(session, username, public_blob, private),
        userkey::KeyForm::Libssh2 {
            text,
            public_openssh,
            decrypted,
        } => session.userauth_pubkey_memory(
            username,
            public_openssh.as_deref(),
            text.expose_secret(),
            if *decrypted {
                None
            } else {
                passphrase.map(|p| p.expose_secret())
            },
        ),
        // Reported as libssh2 reports an unreadable key or a wrong passphrase.
        userkey::KeyForm::Rejected => Err(ssh2::Error::new(
            ssh2::ErrorCode::Session(LIBSSH2_ERROR_FILE),
            "the passphrase does not open the private key",
        )),
    }
}

/// Answers every keyboard-interactive prompt with the password (PAM's "Password:" prompt).
struct AnswerWithPassword<'a>(&'a SecretString);

impl ssh2::KeyboardInteractivePrompt for AnswerWithPassword<'_> {
    fn prompt<'p>(
        &mut self,
        _username: &str,
        _instructions: &str,
        prompts: &[ssh2::Prompt<'p>],
    ) -> Vec<String> {
        prompts
            .iter()
            .map(|_| self.0.expose_secret().to_owned())
            .collect()
    }
}

fn run_command(
    session: &Session,
    exec: &Exec<'_>,
    limits: &Limits,
    seconds: f64,
) -> Result<ExecOutput, ErrorKind> {
    let stage = "command";
    let ssh = |e: ssh2::Error| ssh_kind(stage, &e, seconds);
    let io = |e: io::Error| {
        if e.kind() == io::ErrorKind::TimedOut {
            ErrorKind::Timeout { stage, seconds }
        } else {
            ErrorKind::Ssh {
                stage,
                message: e.to_string(),
            }
        }
    };
    let mut channel = session.channel_session().map_err(ssh)?;
    channel.exec(exec.command).map_err(ssh)?;
    channel.write_all(exec.stdin).map_err(io)?;
    channel.send_eof().map_err(ssh)?;

    // libssh2 queues extended data (stderr) while stdout is read, so reading the streams one
    // after the other cannot deadlock.
    let stdout =
        read_capped(&mut channel, limits.max_output_bytes, "stdout").map_err(|e| e.or_io(io))?;
    let stderr = read_capped(&mut channel.stderr(), limits.max_output_bytes, "stderr")
        .map_err(|e| e.or_io(io))?;
    channel.wait_close().map_err(ssh)?;
    let exit_status = channel.exit_status().ok();
    Ok(ExecOutput {
        stdout,
        stderr,
        exit_status,
    })
}

pub(crate) enum ReadError {
    Io(io::Error),
    TooLarge(ErrorKind),
}

impl ReadError {
    fn or_io(self, io: impl Fn(io::Error) -> ErrorKind) -> ErrorKind {
        match self {
            ReadError::Io(e) => io(e),
            ReadError::TooLarge(kind) => kind,
        }
    }
}

/// Reads to end-of-file, refusing more than `limit` bytes.
pub(crate) fn read_capped(
    reader: &mut impl Read,
    limit: usize,
    stream: &'static str,
) -> Result<Vec<u8>, ReadError> {
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut taken = reader.take(limit as u64 + 1);
    taken.read_to_end(&mut buffer).map_err(ReadError::Io)?;
    if buffer.len() > limit {
        return Err(ReadError::TooLarge(ErrorKind::OutputTooLarge {
            stream,
            limit,
        }));
    }
    // The output waits for the parsers: keep only its bytes, not the doubling slack (82 KB of
    // stdout sat in 128 KiB, 2 KB of stderr in 64 KiB).
    buffer.shrink_to_fit();
    Ok(buffer)
}
