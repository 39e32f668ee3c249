//! The WinRM test server (`tests/winrm/server.py`, harness `luumen_integration::winrm`) checked
//! against real Windows recordings and an independent client (pywinrm from the test venv).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use luumen_integration::winrm::{
    winrm_python, winrm_script, Reply, Rule, Scenario, WinrmAuth, WinrmOptions, WinrmServer,
};
use serde_json::Value;

/// Windows' `w:TimedOut` (OperationTimeout) fault code.
const TIMED_OUT: u64 = 2_150_858_793;

/// Arguments of one pywinrm run.
struct Pywinrm<'a> {
    url: &'a str,
    auth: &'a str,
    password: &'a str,
    ca_file: Option<PathBuf>,
    extra: Vec<&'a str>,
    script: &'a str,
}

impl<'a> Pywinrm<'a> {
    /// `script` against `server` with its own URL and password, no CA file, no extra flags.
    fn to(server: &'a WinrmServer, auth: &'a str, script: &'a str) -> Pywinrm<'a> {
        Pywinrm {
            url: server.url(),
            auth,
            password: &server.options().password,
            ca_file: None,
            extra: Vec::new(),
            script,
        }
    }
}

/// Runs `tests/winrm/pywinrm_check.py`; returns its JSON line.
fn pywinrm(server: &WinrmServer, run: Pywinrm<'_>) -> Value {
    let mut command = Command::new(winrm_python());
    command
        .arg(winrm_script("pywinrm_check.py"))
        .args(["--url", run.url, "--auth", run.auth])
        .args(["--username", &server.options().username])
        .env("WINRM_PASSWORD", run.password);
    if let Some(ca) = &run.ca_file {
        command.arg("--ca-file").arg(ca);
    }
    let out = command
        .args(&run.extra)
        .arg("--")
        .arg(run.script)
        .output()
        .expect("run pywinrm_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "pywinrm_check.py printed no JSON ({e}): stdout {stdout:?} stderr {:?}\nserver log: {}",
            String::from_utf8_lossy(&out.stderr),
            server.server_log()
        )
    })
}

fn ok_run(result: &Value) -> (&str, &str, i64) {
    assert!(result.get("error").is_none(), "pywinrm failed: {result}");
    (
        result["stdout"].as_str().expect("stdout"),
        result["stderr"].as_str().expect("stderr"),
        result["status_code"].as_i64().expect("status_code"),
    )
}

#[test]
fn responses_have_the_shape_of_the_windows_recordings() {
    let server = WinrmServer::start(WinrmOptions {
        allow_unencrypted: true,
        ..WinrmOptions::default()
    });
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("winrm/recordings");
    let mut recordings: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    recordings.sort();
    assert_eq!(recordings.len(), 5, "recordings in {}", dir.display());
    let out = Command::new(winrm_python())
        .arg(winrm_script("replay_check.py"))
        .args([
            "--url",
            server.url(),
            "--username",
            &server.options().username,
        ])
        .arg("--scenario")
        .arg(server.scenario_path())
        .args(&recordings)
        .env("WINRM_PASSWORD", &server.options().password)
        .output()
        .expect("run replay_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "replay_check.py: {e}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["mismatches"], 0, "shape differences: {report:#}");
    assert_eq!(report["messages"], 33, "{report:#}");
    assert!(out.status.success(), "{report:#}");
    let unknown = &report["unknown_shell"];
    assert_eq!(unknown["status"], 500, "{unknown}");
    assert_eq!(unknown["code"], 2_150_858_843u64, "{unknown}");
    assert_eq!(unknown["subcode"], "w:InvalidSelectors", "{unknown}");
    // Every recorded Create was answered with the ShellId selector and rsp:ShellId (checked by
    // the script); the two TimedOut Receives of the timeout recording were faults here too.
    let faults = server
        .requests()
        .iter()
        .filter(|r| r.fault_code == Some(TIMED_OUT))
        .count();
    assert_eq!(faults, 2);
}

#[test]
fn pywinrm_basic_over_https_gets_chunked_output_after_timeouts() {
    let text = "hello from Windows, ünïcode ✓\r\nsecond line\r\n";
    let server = WinrmServer::start(WinrmOptions {
        tls: true,
        scenario: Scenario::reply(Reply::stdout(text).timeouts(2).chunks(7, 3)),
        ..WinrmOptions::default()
    });
    assert!(server.url().starts_with("https://127.0.0.1:"));
    let ca = server.ca_file().expect("ca file").to_path_buf();
    let script = "Get-CimInstance Win32_OperatingSystem | ConvertTo-Json";
    let started = Instant::now();
    let result = pywinrm(
        &server,
        Pywinrm {
            ca_file: Some(ca.clone()),
            ..Pywinrm::to(&server, "basic", script)
        },
    );
    let (stdout, stderr, code) = ok_run(&result);
    assert_eq!(stdout, text);
    assert_eq!(stderr, "");
    assert_eq!(code, 0);
    eprintln!("pywinrm basic/https run: {:?}", started.elapsed());

    let requests = server.requests();
    let count =
        |action: &str, status: u16| requests.iter().filter(|r| r.is(action, status)).count();
    assert_eq!(count("Create", 200), 1, "one shell");
    assert_eq!(count("Command", 200), 1);
    let command = requests
        .iter()
        .find(|r| r.is("Command", 200))
        .expect("Command");
    assert_eq!(command.script_source.as_deref(), Some("encoded"));
    assert_eq!(
        command.script.as_deref(),
        Some(script),
        "decoded -EncodedCommand"
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.fault_code == Some(TIMED_OUT))
            .count(),
        2
    );
    // 47 bytes in 7-byte chunks = 7 streams, 3 per Receive = 3 Receives with output.
    assert_eq!(count("Receive", 200), 3, "{requests:#?}");
    assert_eq!(count("Delete", 200), 1);

    // The pin is the SHA-256 of the served certificate.
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(server.cert_file().expect("cert file"))
        .output()
        .expect("openssl x509");
    assert!(der.status.success());
    let sha = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().expect("stdin").write_all(&der.stdout)?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    let hex = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(
        Some(hex.split_whitespace().next().unwrap_or("")),
        server.cert_sha256()
    );

    // Without the test CA the certificate is not trusted; a wrong password is a 401.
    let untrusted = pywinrm(&server, Pywinrm::to(&server, "basic", script));
    assert!(
        untrusted["message"]
            .as_str()
            .unwrap_or("")
            .contains("CERTIFICATE_VERIFY_FAILED"),
        "{untrusted}"
    );
    let wrong = pywinrm(
        &server,
        Pywinrm {
            password: "not-the-password",
            ca_file: Some(ca),
            ..Pywinrm::to(&server, "basic", script)
        },
    );
    assert_eq!(wrong["error"], "InvalidCredentialsError", "{wrong}");
    assert_eq!(server.shells_created(), 1);
}

/// A TCP proxy recording both directions, to look at what crosses the wire.
struct Tap {
    port: u16,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Tap {
    fn start(upstream_port: u16) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind tap");
        let port = listener.local_addr().expect("tap addr").port();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = bytes.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    let sink = sink.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            sink.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .extend_from_slice(&buf[..n]);
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Tap { port, bytes }
    }

    fn seen(&self) -> Vec<u8> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn pywinrm_ntlm_over_http_seals_every_message() {
    let secret_output = "{\"Caption\":\"Microsoft Windows Server 2022 Standard\"}";
    let clixml = "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><S S=\"Error\">Access is denied._x000D__x000A_</S></Objs>";
    let server = WinrmServer::start(WinrmOptions {
        auth: WinrmAuth::Ntlm,
        scenario: Scenario::reply(Reply::stdout(secret_output).timeouts(1).chunks(16, 2)).rule(
            Rule::when("Get-Service", Reply::stderr(clixml).exit_code(1)),
        ),
        ..WinrmOptions::default()
    });
    let tap = Tap::start(server.port());
    let url = format!("http://127.0.0.1:{}/wsman", tap.port);
    let script = "$os = Get-CimInstance Win32_OperatingSystem; $os | ConvertTo-Json";
    let result = pywinrm(
        &server,
        Pywinrm {
            url: &url,
            ..Pywinrm::to(&server, "ntlm", script)
        },
    );
    let (stdout, _, code) = ok_run(&result);
    assert_eq!(stdout, secret_output);
    assert_eq!(code, 0);

    let requests = server.requests();
    let soap: Vec<_> = requests.iter().filter(|r| r.action.is_some()).collect();
    assert!(soap.len() >= 6, "{requests:#?}");
    for request in &soap {
        assert!(request.encrypted, "sent in clear: {request:?}");
        assert_eq!(
            request.user.as_deref(),
            Some(server.options().username.as_str())
        );
    }
    assert_eq!(server.scripts(), vec![script.to_string()]);
    // On the wire: NTLM handshake, then only sealed bodies; neither the script's text nor the
    // output is readable, and no Basic header was ever sent.
    let wire = tap.seen();
    assert!(contains(
        &wire,
        "multipart/encrypted;protocol=\"application/HTTP-SPNEGO-session-encrypted\""
    ));
    assert!(contains(&wire, "Authorization: Negotiate TlRMTVNTUA"));
    assert!(
        !contains(&wire, "Caption"),
        "output crossed the wire in clear"
    );
    assert!(
        !contains(&wire, "CommandLine"),
        "SOAP crossed the wire in clear"
    );
    assert!(!contains(&wire, "Basic "));

    // A rule: stderr CLIXML and exit code 1.
    let failed = pywinrm(
        &server,
        Pywinrm::to(&server, "ntlm", "Get-Service | ConvertTo-Json"),
    );
    let (stdout, stderr, code) = ok_run(&failed);
    assert_eq!((stdout, code), ("", 1));
    // pywinrm's run_ps decodes the CLIXML error stream into its text.
    assert!(stderr.contains("Access is denied."), "{stderr}");
    assert!(!stderr.contains("CLIXML"), "{stderr}");

    // Wrong password: the NTLM authenticate message is refused with 401.
    let before = server.shells_created();
    let wrong = pywinrm(
        &server,
        Pywinrm {
            password: "wrong",
            ..Pywinrm::to(&server, "ntlm", script)
        },
    );
    assert_eq!(wrong["error"], "InvalidCredentialsError", "{wrong}");
    // Unencrypted NTLM over HTTP (AllowUnencrypted=false): refused, no shell created.
    let clear = pywinrm(
        &server,
        Pywinrm {
            extra: vec!["--encryption", "never"],
            ..Pywinrm::to(&server, "ntlm", script)
        },
    );
    assert!(clear.get("error").is_some(), "plaintext accepted: {clear}");
    assert_eq!(server.shells_created(), before);
    assert!(server.requests().iter().any(
        |r| r.status == Some(401) && r.raw["note"].as_str().unwrap_or("").contains("plaintext")
    ));
}

#[test]
fn script_on_stdin_and_the_command_line_limit() {
    let server = WinrmServer::start(WinrmOptions {
        allow_unencrypted: true,
        scenario: Scenario::reply(Reply::stdout("default\r\n")).rule(Rule::when(
            "Get-HotFix",
            Reply::stdout("[{\"HotFixID\":\"KB5034439\"}]"),
        )),
        ..WinrmOptions::default()
    });
    let script = "Get-HotFix | Select-Object HotFixID | ConvertTo-Json";
    let result = pywinrm(
        &server,
        Pywinrm {
            extra: vec!["--stdin"],
            ..Pywinrm::to(&server, "basic", script)
        },
    );
    let (stdout, _, code) = ok_run(&result);
    assert_eq!((stdout, code), ("[{\"HotFixID\":\"KB5034439\"}]", 0));
    let requests = server.requests();
    let command = requests
        .iter()
        .find(|r| r.is("Command", 200))
        .expect("Command");
    assert_eq!(command.script_source.as_deref(), Some("stdin"));
    let send = requests.iter().find(|r| r.is("Send", 200)).expect("Send");
    assert_eq!(send.script.as_deref(), Some(script));

    // The same script behind an encoded bootstrap that reads `$input`: the rules see the script.
    let result = pywinrm(
        &server,
        Pywinrm {
            extra: vec!["--stdin-bootstrap"],
            ..Pywinrm::to(&server, "basic", script)
        },
    );
    let (stdout, _, code) = ok_run(&result);
    assert_eq!((stdout, code), ("[{\"HotFixID\":\"KB5034439\"}]", 0));
    let requests = server.requests();
    let sends: Vec<_> = requests.iter().filter(|r| r.is("Send", 200)).collect();
    assert_eq!(sends.len(), 2);
    assert!(sends[1].raw["bootstrap"]
        .as_str()
        .is_some_and(|b| b.contains("$input")));
    assert_eq!(sends[1].script.as_deref(), Some(script));

    // cmd.exe refuses command lines over 8191 characters, as Windows does.
    let long = format!("Write-Output '{}'", "x".repeat(4000));
    let result = pywinrm(&server, Pywinrm::to(&server, "basic", &long));
    let (_, stderr, code) = ok_run(&result);
    assert_eq!((stderr, code), ("The command line is too long.\r\n", 1));
}

#[test]
fn tarpit_reads_requests_and_never_answers() {
    let server = WinrmServer::start(WinrmOptions {
        allow_unencrypted: true,
        scenario: Scenario::tarpit(),
        ..WinrmOptions::default()
    });
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    stream
        .write_all(b"POST /wsman HTTP/1.1\r\nHost: x\r\nContent-Type: application/soap+xml;charset=UTF-8\r\nContent-Length: 0\r\n\r\n")
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_millis(800)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let err = stream.read(&mut buf).expect_err("the tarpit answered");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    let logged = server.requests();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].status, None);
}
