//! WinRM transport through `winrm-rs` 1.1.2: one shell, one PowerShell run, the shell deleted.
//!
//! Blocking from the caller's view: each calling thread owns a current-thread tokio runtime
//! (created on first use, reused) on which the async client runs. winrm-rs 2.0.1 was seen to
//! lose about 1 NTLM call in 6 to a connection-pool race on a multi-thread runtime and none on a
//! current-thread one; 1.1.2 is the last release that builds on rustc 1.95. It is vendored
//! (`vendor/winrm-rs`, see its `LUUMEN-PATCHES.md`) with NTLM message encryption fixed: the
//! handshake ends with an empty body and every SOAP message is sealed, the first included, as
//! a default Windows host (`AllowUnencrypted = false`) requires; Windows' framing (no CRLF
//! before the closing boundary) unseals; sealed faults (`w:TimedOut`) unseal.
//!
//! The script travels as `powershell.exe -NoProfile -NonInteractive -EncodedCommand <UTF-16LE
//! base64>` when that command line stays under [`MAX_COMMAND_LINE`] characters; longer scripts
//! go through standard input (WS-Man `Send`) to a fixed encoded bootstrap that reads and runs
//! them (see [`powershell_invocation`]).
//!
//! What this module adds around winrm-rs (which lacks it):
//! - TLS trust (system roots, a CA file, a pinned SHA-256) and precise connect errors: the
//!   connector (`winrm/connector.rs`) is the client's proxy and makes every connection itself.
//! - Receive long-polling: the `w:TimedOut` fault (WSManFault 2150858793) means "poll again";
//!   winrm-rs's own loops treat it as an error.
//! - One deadline for the whole call, per-stream output caps, and CLIXML stderr decoded into
//!   text once the command ended ([`decode_clixml`]), whatever the Receive responses split.

mod clixml;
mod connector;
mod tls;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;

use base64::Engine;
use secrecy::SecretString;
use winrm_rs::{
    AuthMethod, EncryptionMode, SoapError, WinrmClient, WinrmConfig, WinrmCredentials, WinrmError,
};

pub use clixml::{decode_clixml, is_clixml};
pub use tls::parse_sha256_pin;

use crate::{Error, ErrorKind, Exec, ExecOutput, Limits};
use connector::{Connector, Upstream};

/// Longest `powershell.exe …` command line sent as is; Windows caps command lines near 8,191
/// characters.
pub const MAX_COMMAND_LINE: usize = 8_000;

/// The program run in the shell.
pub const POWERSHELL: &str = "powershell.exe";

/// The stdin bootstrap: reads the whole script from standard input and runs it as one script
/// block (what Ansible's WinRM plugin does). `-Command -` would instead run standard input line
/// by line, where a multi-line block needs a blank line after it.
pub const STDIN_BOOTSTRAP: &str =
    "$script = $input | Out-String; & ([scriptblock]::Create($script))";

/// Most script bytes per WS-Man `Send` (base64 makes an envelope ~120 KiB, under Windows'
/// default 500 KiB `MaxEnvelopeSizekb` and winrm-rs's 150 KiB default).
const SEND_CHUNK: usize = 64 * 1024;

/// Longest WS-Man `OperationTimeout` asked for: a Receive long-polls this long at most before
/// the `w:TimedOut` fault, then we poll again.
const MAX_OPERATION_TIMEOUT_SECS: u64 = 20;

/// HTTP or HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP (port 5985): NTLM with message encryption, or Basic when explicitly allowed.
    Http,
    /// HTTPS (port 5986).
    Https,
}

/// How to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WinrmAuth {
    /// HTTP Basic (local accounts). Over HTTP only with `allow_http_basic`.
    Basic,
    /// NTLMv2; over HTTP every message after the handshake is sealed (encrypted).
    Ntlm,
}

impl WinrmAuth {
    fn name(self) -> &'static str {
        match self {
            WinrmAuth::Basic => "basic",
            WinrmAuth::Ntlm => "ntlm",
        }
    }
}

/// How an HTTPS server's certificate is trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsTrust {
    /// PEM file of trusted CA certificates; the system roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the server's certificate (DER). When set, only that certificate is accepted
    /// (its chain is not checked unless `ca_file` is set too).
    pub cert_sha256: Option<[u8; 32]>,
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct WinrmTarget {
    /// DNS name or IP address.
    pub address: String,
    /// TCP port (5985 for HTTP, 5986 for HTTPS by convention).
    pub port: u16,
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// Basic or NTLM.
    pub auth: WinrmAuth,
    /// Login name: `user`, `DOMAIN\user` or `user@domain`.
    pub username: String,
    /// The password. Prints as `[REDACTED]`.
    pub password: SecretString,
    /// Certificate trust (HTTPS only).
    pub tls: TlsTrust,
    /// Allow Basic over plain HTTP (the password crosses the network in clear).
    pub allow_http_basic: bool,
}

/// How a script is handed to `powershell.exe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerShellInvocation {
    /// Arguments after `powershell.exe`.
    pub arguments: Vec<String>,
    /// Bytes to send on standard input (UTF-8 script), when the script does not fit the command
    /// line.
    pub stdin: Option<Vec<u8>>,
}

impl PowerShellInvocation {
    /// The command line as Windows sees it.
    pub fn command_line(&self) -> String {
        std::iter::once(POWERSHELL)
            .chain(self.arguments.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `-EncodedCommand` text: the script as UTF-16LE, base64.
pub fn encode_command(script: &str) -> String {
    let utf16: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    base64::engine::general_purpose::STANDARD.encode(utf16)
}

/// The command line for a script: encoded on the command line when it stays under
/// [`MAX_COMMAND_LINE`] characters, else [`STDIN_BOOTSTRAP`] encoded and the script on stdin.
pub fn powershell_invocation(script: &str) -> PowerShellInvocation {
    let arguments = |encoded: String| {
        vec![
            "-NoProfile".to_owned(),
            "-NonInteractive".to_owned(),
            "-EncodedCommand".to_owned(),
            encoded,
        ]
    };
    let direct = PowerShellInvocation {
        arguments: arguments(encode_command(script)),
        stdin: None,
    };
    if direct.command_line().len() < MAX_COMMAND_LINE {
        return direct;
    }
    PowerShellInvocation {
        arguments: arguments(encode_command(STDIN_BOOTSTRAP)),
        stdin: Some(script.as_bytes().to_vec()),
    }
}

thread_local! {
    /// The calling thread's runtime, kept between calls.
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Opens one shell on the host, runs `exec.stdin` (PowerShell source, UTF-8) in it, collects
/// stdout, stderr (CLIXML decoded) and the exit code, and deletes the shell. `exec.command` only
/// names the run in errors. Blocking; must not be called from inside an async runtime.
pub fn run(target: &WinrmTarget, exec: &Exec<'_>, limits: &Limits) -> Result<ExecOutput, Error> {
    let host = exec.host;
    let fail = |kind| Error::with_command(host, exec.command, kind);
    let script = std::str::from_utf8(exec.stdin).map_err(|e| {
        fail(ErrorKind::Settings {
            reason: format!("the PowerShell script is not UTF-8: {e}"),
        })
    })?;
    if target.scheme == Scheme::Http && target.auth == WinrmAuth::Basic && !target.allow_http_basic
    {
        return Err(fail(ErrorKind::Settings {
            reason: "Basic authentication over HTTP sends the password in clear; use https, ntlm, or set allow_http_basic".to_owned(),
        }));
    }
    let tls = match target.scheme {
        Scheme::Https => Some(tls::client_config(&target.tls).map_err(fail)?),
        Scheme::Http => None,
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(fail(ErrorKind::WinRm {
            stage: "setup",
            message: "winrm::run is blocking and was called from inside an async runtime"
                .to_owned(),
        }));
    }
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    fail(ErrorKind::WinRm {
                        stage: "setup",
                        message: format!("cannot start the async runtime: {e}"),
                    })
                })?;
            *slot = Some(runtime);
        }
        let Some(runtime) = slot.as_ref() else {
            unreachable!("the runtime was just set")
        };
        runtime
            .block_on(run_async(target, script, limits, tls))
            .map_err(fail)
    })
}

/// The stage a call is in, for timeout and error messages.
struct Progress(Cell<&'static str>);

async fn run_async(
    target: &WinrmTarget,
    script: &str,
    limits: &Limits,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<ExecOutput, ErrorKind> {
    let connector = Connector::start(Upstream {
        address: target.address.clone(),
        port: target.port,
        connect_limit: limits.connect.min(limits.total),
        tls,
    })
    .await
    .map_err(|e| ErrorKind::WinRm {
        stage: "setup",
        message: format!("cannot listen on 127.0.0.1: {e}"),
    })?;
    #[cfg(test)]
    tests::LAST_CONNECTOR.with(|last| last.set(Some(connector.local)));
    let mut connector = connector;
    let progress = Progress(Cell::new("create shell"));
    let outcome = tokio::time::timeout(
        limits.total,
        session(target, script, limits, &connector, &progress),
    )
    .await;
    // The listener and every connection end before the call returns (the client, dropped with
    // the session, no longer holds them either).
    connector.stop().await;
    match outcome {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(error)) => Err(connector
            .take_failure()
            .unwrap_or_else(|| map_error(error, target, progress.0.get()))),
        Err(_elapsed) => Err(connector.take_failure().unwrap_or(ErrorKind::Timeout {
            stage: if connector.connected() {
                progress.0.get()
            } else if connector.tcp_connected() {
                "tls handshake"
            } else {
                "connect"
            },
            seconds: limits.total.as_secs_f64(),
        })),
    }
}

/// `DOMAIN\user` → (`user`, `DOMAIN`); anything else is the user name as is.
fn split_domain(username: &str) -> (String, String) {
    match username.split_once('\\') {
        Some((domain, user)) => (user.to_owned(), domain.to_owned()),
        None => (username.to_owned(), String::new()),
    }
}

async fn session(
    target: &WinrmTarget,
    script: &str,
    limits: &Limits,
    connector: &Connector,
    progress: &Progress,
) -> Result<ExecOutput, WinrmError> {
    let (username, domain) = split_domain(&target.username);
    let config = WinrmConfig {
        port: target.port,
        // The connector does the TLS; the client speaks HTTP to it.
        use_tls: false,
        connect_timeout_secs: limits.connect.as_secs().max(1),
        operation_timeout_secs: limits.total.as_secs().clamp(1, MAX_OPERATION_TIMEOUT_SECS),
        auth_method: match target.auth {
            WinrmAuth::Basic => AuthMethod::Basic,
            WinrmAuth::Ntlm => AuthMethod::Ntlm,
        },
        encryption: match target.scheme {
            Scheme::Http => EncryptionMode::Auto,
            Scheme::Https => EncryptionMode::Never,
        },
        // The connector's URL with its per-call token: reqwest sends it as Proxy-Authorization.
        proxy: Some(connector.proxy_url().to_owned()),
        // For HTTPS the connector does the TLS: Basic is not in clear on the network, so
        // winrm-rs's "Basic auth over HTTP" warning (vendored patch) stays quiet.
        tls_by_proxy: target.scheme == Scheme::Https,
        max_output_bytes: None,
        ..WinrmConfig::default()
    };
    let credentials = WinrmCredentials {
        username,
        password: target.password.clone(),
        domain,
    };
    let client = WinrmClient::new(config, credentials)?;
    let host = target.address.as_str();

    progress.0.set("create shell");
    let shell = client.open_shell(host).await?;
    let result = command(&client, host, &shell, script, limits, progress).await;
    progress.0.set("delete shell");
    // The output is complete either way; a failed Delete only leaves the shell to the host's
    // idle timeout.
    if let Err(error) = shell.close().await {
        tracing::debug!(message = "Deleting the WinRM shell failed.", host = %host, %error);
    }
    result
}

async fn command(
    client: &WinrmClient,
    host: &str,
    shell: &winrm_rs::Shell<'_>,
    script: &str,
    limits: &Limits,
    progress: &Progress,
) -> Result<ExecOutput, WinrmError> {
    let invocation = powershell_invocation(script);
    let arguments: Vec<&str> = invocation.arguments.iter().map(String::as_str).collect();
    progress.0.set("command");
    let command_id = shell.start_command(POWERSHELL, &arguments).await?;
    if let Some(stdin) = &invocation.stdin {
        progress.0.set("input");
        let chunks: Vec<&[u8]> = stdin.chunks(SEND_CHUNK).collect();
        let last = chunks.len().saturating_sub(1);
        for (index, chunk) in chunks.iter().enumerate() {
            shell.send_input(&command_id, chunk, index == last).await?;
        }
    }
    progress.0.set("output");
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut exit_status = None;
    loop {
        let output = match shell.receive_next(&command_id).await {
            Ok(output) => output,
            Err(WinrmError::Soap(SoapError::Fault { code, .. })) if code.ends_with("TimedOut") => {
                // Long-poll ended with nothing new: ask again.
                continue;
            }
            Err(error) => return Err(error),
        };
        append_capped(
            &mut stdout,
            &output.stdout,
            limits.max_output_bytes,
            "stdout",
        )?;
        append_capped(
            &mut stderr,
            &output.stderr,
            limits.max_output_bytes,
            "stderr",
        )?;
        exit_status = output.exit_code.or(exit_status);
        if output.done {
            break;
        }
    }
    progress.0.set("signal");
    // Windows keeps a finished command until it is signalled or the shell deleted.
    if let Err(error) = client
        .signal_terminate(host, shell.shell_id(), &command_id)
        .await
    {
        tracing::debug!(message = "Signalling the finished WinRM command failed.", %error);
    }
    let stderr = if is_clixml(&stderr) {
        decode_clixml(&stderr).into_bytes()
    } else {
        stderr
    };
    Ok(ExecOutput {
        stdout,
        stderr,
        exit_status,
    })
}

/// Marker error for the output cap, carried through `WinrmError::Transfer`.
const TOO_LARGE: &str = "luumen: output cap";

fn append_capped(
    buffer: &mut Vec<u8>,
    data: &[u8],
    limit: usize,
    stream: &'static str,
) -> Result<(), WinrmError> {
    if buffer.len() + data.len() > limit {
        return Err(WinrmError::Transfer(format!(
            "{TOO_LARGE} {stream} {limit}"
        )));
    }
    buffer.extend_from_slice(data);
    Ok(())
}

/// Maps winrm-rs's errors to ours; `stage` is what was happening.
fn map_error(error: WinrmError, target: &WinrmTarget, stage: &'static str) -> ErrorKind {
    match error {
        WinrmError::Transfer(message) if message.starts_with(TOO_LARGE) => {
            let stream = if message.contains("stdout") {
                "stdout"
            } else {
                "stderr"
            };
            let limit = message
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            ErrorKind::OutputTooLarge { stream, limit }
        }
        WinrmError::AuthFailed(message) if refused_credentials(&message) => ErrorKind::AuthFailed {
            username: target.username.clone(),
            method: target.auth.name(),
        },
        WinrmError::AuthFailed(message) => ErrorKind::WinRm {
            stage,
            message: shorten(&message),
        },
        WinrmError::Soap(SoapError::Fault { code, reason }) => ErrorKind::WsManFault {
            code,
            message: reason.trim().to_owned(),
        },
        WinrmError::Soap(other) => ErrorKind::WinRm {
            stage,
            message: other.to_string(),
        },
        WinrmError::Http(error) if error.is_timeout() => ErrorKind::Timeout {
            stage,
            seconds: (MAX_OPERATION_TIMEOUT_SECS + 10) as f64,
        },
        WinrmError::Http(error) => ErrorKind::WinRm {
            stage,
            message: error_chain(&error),
        },
        WinrmError::Timeout(seconds) => ErrorKind::Timeout {
            stage,
            seconds: seconds as f64,
        },
        other => ErrorKind::WinRm {
            stage,
            message: other.to_string(),
        },
    }
}

/// winrm-rs reports every unexpected HTTP status as `AuthFailed`; only a 401 (Basic) or a
/// rejected NTLM authenticate message are refused credentials (a 401 to a sealed request on an
/// authenticated connection is not: the vendored winrm-rs words it differently).
fn refused_credentials(message: &str) -> bool {
    message.starts_with("HTTP 401") || message.starts_with("NTLM authentication rejected")
}

fn shorten(message: &str) -> String {
    const MAX: usize = 500;
    match message.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message.to_owned(),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Read;
    use std::time::{Duration, Instant};

    thread_local! {
        /// The listening address of this thread's last connector.
        pub(super) static LAST_CONNECTOR: Cell<Option<std::net::SocketAddr>> = const { Cell::new(None) };
    }

    #[test]
    fn the_connector_and_its_connections_are_gone_when_run_returns() {
        // A host that takes the connection and the request, and never answers.
        let host = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = host.local_addr().expect("addr").port();
        let held = std::thread::spawn(move || {
            let (mut stream, _) = host.accept().expect("accept");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut received = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => return Ok((received, Instant::now())),
                    Ok(n) => received.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(e),
                }
            }
        });
        let target = WinrmTarget {
            address: "127.0.0.1".to_owned(),
            port,
            scheme: Scheme::Http,
            auth: WinrmAuth::Basic,
            username: "user".to_owned(),
            password: SecretString::from("password".to_owned()),
            tls: TlsTrust::default(),
            allow_http_basic: true,
        };
        let exec = Exec {
            host: "win-1",
            command: "powershell",
            stdin: b"hi",
        };
        let limits = Limits::new(Duration::from_secs(1), Duration::from_secs(1));
        let error = run(&target, &exec, &limits).expect_err("the host never answers");
        let returned = Instant::now();
        assert!(
            matches!(
                error.kind,
                ErrorKind::Timeout {
                    stage: "create shell",
                    ..
                }
            ),
            "{error:?}"
        );
        let listener = LAST_CONNECTOR
            .with(Cell::get)
            .expect("the call recorded its connector");
        // The listener is closed: nothing accepts on its port any more.
        let refused = std::net::TcpStream::connect_timeout(&listener, Duration::from_secs(1));
        assert!(refused.is_err(), "the connector still accepts: {refused:?}");
        // The upstream connection was closed when the call ended, not at the thread's next call.
        let (received, closed) = held.join().expect("host thread").expect("EOF within 5 s");
        assert!(closed.duration_since(returned) < Duration::from_secs(1));
        let head = String::from_utf8_lossy(&received);
        assert!(head.starts_with("POST http://127.0.0.1:"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("proxy-authorization"),
            "the token went to the host: {head}"
        );
    }

    /// Collects every event's text (message and fields) logged on this thread.
    #[derive(Default, Clone)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            struct Text<'a>(&'a mut String);
            impl tracing::field::Visit for Text<'_> {
                fn record_debug(&mut self, _: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{value:?} "));
                }
            }
            let mut text = format!("{} ", event.metadata().target());
            event.record(&mut Text(&mut text));
            if let Ok(mut events) = self.0.lock() {
                events.push(text);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn basic_over_https_logs_no_cleartext_warning() {
        // Nothing listens: the client is built (where winrm-rs warns), then the connect fails.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let warnings = |scheme: Scheme| {
            let capture = Capture::default();
            let target = WinrmTarget {
                address: "127.0.0.1".to_owned(),
                port,
                scheme,
                auth: WinrmAuth::Basic,
                username: "user".to_owned(),
                password: SecretString::from("password".to_owned()),
                tls: TlsTrust::default(),
                allow_http_basic: true,
            };
            let exec = Exec {
                host: "win-1",
                command: "powershell",
                stdin: b"hi",
            };
            let limits = Limits::new(Duration::from_secs(1), Duration::from_secs(2));
            let error = tracing::subscriber::with_default(capture.clone(), || {
                run(&target, &exec, &limits).expect_err("nothing listens")
            });
            assert!(
                matches!(error.kind, ErrorKind::Unreachable { .. }),
                "{error:?}"
            );
            let events = capture.0.lock().expect("events").clone();
            events
                .into_iter()
                .filter(|e| e.contains("cleartext"))
                .collect::<Vec<_>>()
        };
        // Over plain HTTP (allowed here) the warning is right, and the capture sees it.
        assert_eq!(warnings(Scheme::Http).len(), 1);
        assert_eq!(warnings(Scheme::Https), Vec::<String>::new());
    }

    #[test]
    fn short_scripts_go_on_the_command_line_long_ones_on_stdin() {
        let short = powershell_invocation("Get-Date | ConvertTo-Json");
        assert_eq!(short.stdin, None);
        assert_eq!(
            short.command_line(),
            format!(
                "powershell.exe -NoProfile -NonInteractive -EncodedCommand {}",
                encode_command("Get-Date | ConvertTo-Json")
            )
        );
        // Base64 of UTF-16LE is 8/3 characters per script character: ~2,970 characters is the
        // most that fits under 8,000.
        let fits = "a".repeat(2_960);
        assert!(powershell_invocation(&fits).stdin.is_none());
        let long = "é".repeat(3_100);
        let invocation = powershell_invocation(&long);
        assert_eq!(invocation.stdin.as_deref(), Some(long.as_bytes()));
        assert_eq!(invocation.arguments[3], encode_command(STDIN_BOOTSTRAP));
        assert!(invocation.command_line().len() < MAX_COMMAND_LINE);
    }

    #[test]
    fn encoded_command_is_utf16le_base64() {
        // What `[Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes('dir é'))` prints.
        assert_eq!(encode_command("dir é"), "ZABpAHIAIADpAA==");
    }

    #[test]
    fn domain_user_names_split_and_others_do_not() {
        assert_eq!(split_domain("CORP\\svc"), ("svc".into(), "CORP".into()));
        assert_eq!(
            split_domain("svc@corp.example"),
            ("svc@corp.example".into(), String::new())
        );
        assert_eq!(split_domain("svc"), ("svc".into(), String::new()));
    }
}
