//! A WinRM (WS-Management / WinRS shell) endpoint on loopback that behaves like Windows.
//!
//! No Windows host runs here, so the tests talk to `tests/winrm/server.py`, started per test from
//! the virtualenv `tests/setup/install-winrm-venv.sh` creates (pyspnego for server-side NTLM and
//! message encryption, cryptography for the certificates, pywinrm as an independent client).
//! Its responses have the shape of real Windows answers (checked against
//! `../shared/fixtures/winrm-recordings` by `tests/tests/winrm_server.rs`).
//!
//! # API
//!
//! ```no_run
//! use luumen_integration::winrm::{Reply, Rule, Scenario, WinrmAuth, WinrmOptions, WinrmServer};
//!
//! let server = WinrmServer::start(WinrmOptions {
//!     auth: WinrmAuth::Ntlm,            // or WinrmAuth::Basic
//!     tls: false,                       // true: HTTPS with a fresh test CA + server certificate
//!     scenario: Scenario::reply(Reply::stdout("{\"os\":1}").timeouts(2).chunks(512, 2))
//!         .rule(Rule::when("Get-Service", Reply::stderr("#< CLIXML\r\n<Objs/>").exit_code(1))),
//!     ..WinrmOptions::default()         // user luumen-win, password WINRM_PASSWORD, 127.0.0.1
//! });
//! let url = server.url();               // http://127.0.0.1:PORT/wsman
//! let port = server.port();
//! let (ca, pin) = (server.ca_file(), server.cert_sha256()); // Some(..) with tls: true
//! // ... run the agent / client ...
//! let log = server.requests();          // every HTTP request, parsed (WinrmRequest)
//! assert_eq!(server.shells_created(), 1);
//! server.set_scenario(&Scenario::default()); // re-read by the server at every Command
//! // Dropping `server` kills the process by PID and removes its directory.
//! ```
//!
//! * Ports: the server binds port 0 itself and reports the port it got in `ready.json`, so
//!   there is no free-port race. It binds only loopback addresses (`bind`, default 127.0.0.1).
//! * Auth: [`WinrmAuth::Basic`] (a wrong password → 401 with `WWW-Authenticate: Basic
//!   realm="WSMAN"`), [`WinrmAuth::Ntlm`] (`Negotiate` with raw NTLMSSP tokens, bound to the TCP
//!   connection like HTTP.sys; bodies sealed as `multipart/encrypted`
//!   `application/HTTP-SPNEGO-session-encrypted`; a wrong password → 401).
//! * `allow_unencrypted: false` (the Windows default) refuses Basic over plain HTTP (401), a
//!   plaintext body sent with the NTLM authenticate message (401) and a plaintext body on an
//!   NTLM-authenticated HTTP connection (500). HTTPS accepts plaintext bodies.
//! * The scenario (see [`Scenario`], [`Reply`]; format in `tests/winrm/README.md`) chooses the
//!   canned output from the decoded script: `-EncodedCommand` (UTF-16LE base64), stdin sent with
//!   `Send` for `-Command -`, or else the command line itself.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Default user name of the test server.
pub const WINRM_USER: &str = "luumen-win";
/// Default password of the test server (a test credential, not a secret).
pub const WINRM_PASSWORD: &str = "Luumen-Winrm-Test-1!";

/// How long [`WinrmServer::start`] waits for the server to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Authentication the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WinrmAuth {
    /// HTTP Basic (`WWW-Authenticate: Basic realm="WSMAN"`).
    Basic,
    /// NTLM through `Negotiate`, with WinRM message encryption on plain HTTP.
    Ntlm,
}

/// What [`WinrmServer::start`] starts.
#[derive(Debug, Clone)]
pub struct WinrmOptions {
    /// Accepted authentication.
    pub auth: WinrmAuth,
    /// HTTPS with a test CA and a server certificate for 127.0.0.1 / localhost / `bind`.
    pub tls: bool,
    /// The one account (case-insensitive user name, no domain).
    pub username: String,
    /// Its password.
    pub password: String,
    /// Windows' `AllowUnencrypted` service setting (default false, like Windows).
    pub allow_unencrypted: bool,
    /// Loopback address to listen on.
    pub bind: Ipv4Addr,
    /// The canned answers.
    pub scenario: Scenario,
}

impl Default for WinrmOptions {
    fn default() -> Self {
        WinrmOptions {
            auth: WinrmAuth::Basic,
            tls: false,
            username: WINRM_USER.to_string(),
            password: WINRM_PASSWORD.to_string(),
            allow_unencrypted: false,
            bind: Ipv4Addr::LOCALHOST,
            scenario: Scenario::default(),
        }
    }
}

/// The canned output of one command (one entry of the scenario file).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Standard output (sent as UTF-8 bytes).
    pub stdout: String,
    /// Standard error (e.g. PowerShell's `#< CLIXML` text).
    pub stderr: String,
    /// `rsp:ExitCode` of the final `CommandState Done`.
    pub exit_code: i32,
    /// Receives answered with the `w:TimedOut` fault (2150858793, HTTP 500) before any output.
    pub timeouts: u32,
    /// How long each of those Receives waits before faulting (capped by the client's
    /// `OperationTimeout`), in ms.
    pub timeout_wait_ms: u64,
    /// Bytes per base64 `rsp:Stream` element.
    pub chunk_size: usize,
    /// `rsp:Stream` elements per Receive response (output spread over several Receives).
    pub chunks_per_receive: usize,
    /// Delay before the first Receive that carries output, in ms.
    pub delay_ms: u64,
    /// Never answer the Receive (until the server stops).
    pub hang: bool,
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            stdout: String::new(),
            stderr: String::new(),
            exit_code: 0,
            timeouts: 0,
            timeout_wait_ms: 50,
            chunk_size: 1024,
            chunks_per_receive: 4,
            delay_ms: 0,
            hang: false,
        }
    }
}

impl Reply {
    /// A reply with this stdout and exit code 0.
    pub fn stdout(text: impl Into<String>) -> Reply {
        Reply {
            stdout: text.into(),
            ..Reply::default()
        }
    }

    /// A reply with this stderr and exit code 0.
    pub fn stderr(text: impl Into<String>) -> Reply {
        Reply {
            stderr: text.into(),
            ..Reply::default()
        }
    }

    /// A Receive that never answers.
    pub fn hang() -> Reply {
        Reply {
            hang: true,
            ..Reply::default()
        }
    }

    /// Sets stderr.
    pub fn with_stderr(mut self, text: impl Into<String>) -> Reply {
        self.stderr = text.into();
        self
    }

    /// Sets the exit code.
    pub fn exit_code(mut self, code: i32) -> Reply {
        self.exit_code = code;
        self
    }

    /// `n` TimedOut faults before the output.
    pub fn timeouts(mut self, n: u32) -> Reply {
        self.timeouts = n;
        self
    }

    /// Chunk size in bytes and chunks per Receive response.
    pub fn chunks(mut self, size: usize, per_receive: usize) -> Reply {
        self.chunk_size = size.max(1);
        self.chunks_per_receive = per_receive.max(1);
        self
    }

    /// Delay before the output, in ms.
    pub fn delay_ms(mut self, ms: u64) -> Reply {
        self.delay_ms = ms;
        self
    }

    /// The scenario-file JSON of this reply.
    pub fn to_json(&self) -> Value {
        json!({
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exit_code": self.exit_code,
            "timeouts": self.timeouts,
            "timeout_wait_ms": self.timeout_wait_ms,
            "chunk_size": self.chunk_size,
            "chunks_per_receive": self.chunks_per_receive,
            "delay_ms": self.delay_ms,
            "hang": self.hang,
        })
    }
}

/// "When the script contains all of these, answer that."
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Substrings that must all occur in the decoded script.
    pub contains: Vec<String>,
    /// The answer.
    pub reply: Reply,
}

impl Rule {
    /// A rule matching scripts that contain `needle`.
    pub fn when(needle: impl Into<String>, reply: Reply) -> Rule {
        Rule {
            contains: vec![needle.into()],
            reply,
        }
    }
}

/// The scenario file: rules tried in order, then the default reply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scenario {
    /// The reply when no rule matches.
    pub default: Reply,
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
    /// Accept connections and read requests but never answer any (a tarpit).
    pub tarpit: bool,
    /// Add the `p:ActivityId` header newer Windows builds send.
    pub activity_id: bool,
}

impl Scenario {
    /// Every command answers `reply`.
    pub fn reply(reply: Reply) -> Scenario {
        Scenario {
            default: reply,
            ..Scenario::default()
        }
    }

    /// Every request is read and never answered.
    pub fn tarpit() -> Scenario {
        Scenario {
            tarpit: true,
            ..Scenario::default()
        }
    }

    /// Adds a rule after the existing ones.
    pub fn rule(mut self, rule: Rule) -> Scenario {
        self.rules.push(rule);
        self
    }

    /// The scenario-file JSON.
    pub fn to_json(&self) -> Value {
        let rules: Vec<Value> = self
            .rules
            .iter()
            .map(|rule| {
                let mut value = rule.reply.to_json();
                value["contains"] = json!(rule.contains);
                value
            })
            .collect();
        json!({
            "default": self.default.to_json(),
            "rules": rules,
            "tarpit": self.tarpit,
            "activity_id": self.activity_id,
        })
    }
}

/// One logged HTTP request (a line of the server's `requests.jsonl`).
#[derive(Debug, Clone, PartialEq)]
pub struct WinrmRequest {
    /// Order of arrival (1-based).
    pub seq: u64,
    /// Server-side connection number (NTLM is bound to it).
    pub conn: u64,
    /// `Create`, `Command`, `Receive`, `Send`, `Signal`, `Delete`, or `None` for requests that
    /// carried no SOAP body (authentication legs, refused requests).
    pub action: Option<String>,
    /// HTTP status answered (`None`: never answered).
    pub status: Option<u16>,
    /// `basic` or `ntlm`.
    pub auth: Option<String>,
    /// Authenticated (or claimed, for Basic) user.
    pub user: Option<String>,
    /// The body was NTLM-sealed (`multipart/encrypted`).
    pub encrypted: bool,
    /// Shell id (selector, or the new shell of a Create).
    pub shell_id: Option<String>,
    /// Command id.
    pub command_id: Option<String>,
    /// The command line as sent (`Command`).
    pub command_line: Option<String>,
    /// The decoded script (`Command` with `-EncodedCommand`, or the `Send` ending stdin).
    pub script: Option<String>,
    /// `encoded`, `stdin`, `command_line` or `encoded-invalid`.
    pub script_source: Option<String>,
    /// `WSManFault` code of a fault answer.
    pub fault_code: Option<u64>,
    /// The whole log line.
    pub raw: Value,
}

impl WinrmRequest {
    fn from_json(raw: Value) -> WinrmRequest {
        let text = |key: &str| raw.get(key).and_then(Value::as_str).map(str::to_string);
        WinrmRequest {
            seq: raw.get("seq").and_then(Value::as_u64).unwrap_or(0),
            conn: raw.get("conn").and_then(Value::as_u64).unwrap_or(0),
            action: text("action"),
            status: raw
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok()),
            auth: text("auth"),
            user: text("user"),
            encrypted: raw
                .get("encrypted")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            shell_id: text("shell_id"),
            command_id: text("command_id"),
            command_line: text("command_line"),
            script: text("script"),
            script_source: text("script_source"),
            fault_code: raw.get("fault_code").and_then(Value::as_u64),
            raw,
        }
    }

    /// True for a SOAP `action` answered with HTTP `status`.
    pub fn is(&self, action: &str, status: u16) -> bool {
        self.action.as_deref() == Some(action) && self.status == Some(status)
    }
}

/// The venv python that runs the server: `LUUMEN_WINRM_PYTHON`, else what
/// `tests/setup/install-winrm-venv.sh` installs and prints (run once per process).
pub fn winrm_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Ok(path) = std::env::var("LUUMEN_WINRM_PYTHON") {
                return PathBuf::from(path);
            }
            let script = crate::agent::workspace_dir().join("tests/setup/install-winrm-venv.sh");
            let out = Command::new("bash")
                .arg(&script)
                .output()
                .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "install-winrm-venv.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            PathBuf::from(
                stdout
                    .lines()
                    .last()
                    .expect("install-winrm-venv.sh printed no python path")
                    .trim(),
            )
        })
        .clone()
}

/// `tests/winrm/<name>` (the server and the python check scripts).
pub fn winrm_script(name: &str) -> PathBuf {
    crate::agent::workspace_dir().join("tests/winrm").join(name)
}

/// A running test server; dropping it kills the process by PID and removes its directory.
pub struct WinrmServer {
    child: Child,
    dir: PathBuf,
    options: WinrmOptions,
    port: u16,
    url: String,
    cert_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    cert_sha256: Option<String>,
}

impl WinrmServer {
    /// Starts the server and waits until it listens.
    ///
    /// # Panics
    /// If the venv cannot be set up or the server does not come up within 60 s (the panic
    /// carries the server's stderr).
    pub fn start(options: WinrmOptions) -> WinrmServer {
        assert!(
            options.bind.is_loopback(),
            "WinrmServer binds loopback addresses only"
        );
        let python = winrm_python();
        let dir = make_dir().unwrap_or_else(|e| panic!("WinrmServer: temp dir: {e}"));
        let password_file = dir.join("password");
        write_private(&password_file, options.password.as_bytes())
            .unwrap_or_else(|e| panic!("WinrmServer: write password file: {e}"));
        let scenario = dir.join("scenario.json");
        write_json(&scenario, &options.scenario.to_json());
        let log = fs::File::create(dir.join("server.log"))
            .unwrap_or_else(|e| panic!("WinrmServer: create server.log: {e}"));
        let mut command = Command::new(&python);
        command
            .arg(winrm_script("server.py"))
            .arg("--state-dir")
            .arg(&dir)
            .arg("--bind")
            .arg(options.bind.to_string())
            .arg("--auth")
            .arg(match options.auth {
                WinrmAuth::Basic => "basic",
                WinrmAuth::Ntlm => "ntlm",
            })
            .arg("--username")
            .arg(&options.username)
            .arg("--password-file")
            .arg(&password_file)
            .arg("--scenario")
            .arg(&scenario)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if options.tls {
            command.arg("--tls");
        }
        if options.allow_unencrypted {
            command.arg("--allow-unencrypted");
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("WinrmServer: start {}: {e}", python.display()));
        let mut server = WinrmServer {
            child,
            dir,
            options,
            port: 0,
            url: String::new(),
            cert_file: None,
            ca_file: None,
            cert_sha256: None,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let ready_path = self.dir.join("ready.json");
        let started = Instant::now();
        let ready: Value = loop {
            if let Ok(text) = fs::read_to_string(&ready_path) {
                if let Ok(value) = serde_json::from_str(&text) {
                    break value;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "WinrmServer exited ({status}) before it was ready: {}",
                    self.server_log()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "WinrmServer not ready after {START_TIMEOUT:?}: {}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(25));
        };
        let text = |key: &str| ready.get(key).and_then(Value::as_str).map(str::to_string);
        self.port = ready
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .expect("ready.json: port");
        self.url = text("url").expect("ready.json: url");
        self.cert_file = text("cert_file").map(PathBuf::from);
        self.ca_file = text("ca_file").map(PathBuf::from);
        self.cert_sha256 = text("cert_sha256");
        while TcpStream::connect((self.options.bind, self.port)).is_err() {
            assert!(
                started.elapsed() < START_TIMEOUT,
                "WinrmServer does not accept connections"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address it listens on.
    pub fn bind(&self) -> Ipv4Addr {
        self.options.bind
    }

    /// `http(s)://ADDR:PORT/wsman`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The options it was started with.
    pub fn options(&self) -> &WinrmOptions {
        &self.options
    }

    /// PEM of the test CA that signed the server certificate (`tls: true` only).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// PEM of the server certificate (`tls: true` only).
    pub fn cert_file(&self) -> Option<&Path> {
        self.cert_file.as_deref()
    }

    /// SHA-256 of the server certificate's DER, lowercase hex without separators
    /// (`tls: true` only).
    pub fn cert_sha256(&self) -> Option<&str> {
        self.cert_sha256.as_deref()
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's directory (scenario, log, certificates).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The scenario file the server re-reads at every Command.
    pub fn scenario_path(&self) -> PathBuf {
        self.dir.join("scenario.json")
    }

    /// Replaces the scenario (takes effect at the next Command).
    pub fn set_scenario(&self, scenario: &Scenario) {
        self.set_scenario_json(&scenario.to_json());
    }

    /// Replaces the scenario with raw JSON (for `receives` lists etc., see the README).
    pub fn set_scenario_json(&self, scenario: &Value) {
        let tmp = self.dir.join("scenario.json.tmp");
        write_json(&tmp, scenario);
        fs::rename(&tmp, self.scenario_path())
            .unwrap_or_else(|e| panic!("WinrmServer: replace scenario: {e}"));
    }

    /// Every request logged so far, in order.
    pub fn requests(&self) -> Vec<WinrmRequest> {
        let text = fs::read_to_string(self.dir.join("requests.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .map(WinrmRequest::from_json)
            .collect()
    }

    /// Shells successfully created so far.
    pub fn shells_created(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.is("Create", 200))
            .count()
    }

    /// The decoded scripts of every command so far.
    pub fn scripts(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter_map(|r| r.script)
            .collect()
    }

    /// The server's stderr so far (for assertion messages).
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for WinrmServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn make_dir() -> io::Result<PathBuf> {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "luumen-winrm-{}-{n}-{nanos:09}",
        std::process::id()
    ));
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    fs::write(path, data)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

fn write_json(path: &Path, value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("scenario JSON");
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
