//! NTLM with message encryption over plain HTTP, through `luumen_protocols::winrm::run`, against
//! the WinRM test server set up like a default Windows host (`AllowUnencrypted = false`, answers
//! framed without a CRLF before the closing boundary). Also Basic over HTTPS through the same
//! entry point.

use std::time::{Duration, Instant};

use luumen_integration::winrm::{
    Reply, Rule, Scenario, WinrmAuth as ServerAuth, WinrmOptions, WinrmRequest, WinrmServer,
    WINRM_PASSWORD, WINRM_USER,
};
use luumen_protocols::winrm::{self, Scheme, TlsTrust, WinrmAuth, WinrmTarget};
use luumen_protocols::{Error, ErrorKind, Exec, ExecOutput, Limits};
use secrecy::SecretString;

/// Windows' `w:TimedOut` (OperationTimeout) fault code.
const TIMED_OUT: u64 = 2_150_858_793;

/// The inventory-like script sent (the server matches its rule on it).
const SCRIPT: &str = "$os = Get-CimInstance Win32_OperatingSystem\n\
                      @{ os = $os.Caption; é = 'ü' } | ConvertTo-Json -Compress\n";

const STDOUT: &str = "{\"os\":\"Microsoft Windows Server 2022 Standard\",\"é\":\"ü\"}\r\n";

/// PowerShell's CLIXML stderr (as powershell.exe sends it over WinRM).
const CLIXML: &str = concat!(
    "#< CLIXML\r\n",
    r#"<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">"#,
    r#"<S S="Error">Get-Item : Cannot find path 'C:\missing' because it does not exist._x000D__x000A_</S>"#,
    r#"</Objs>"#,
);

/// NTLM over HTTP as a default Windows host expects it.
fn server_ntlm(scenario: Scenario) -> WinrmServer {
    WinrmServer::start(WinrmOptions {
        auth: ServerAuth::Ntlm,
        tls: false,
        allow_unencrypted: false,
        scenario,
        ..WinrmOptions::default()
    })
}

fn ntlm_target(server: &WinrmServer, password: &str) -> WinrmTarget {
    WinrmTarget {
        address: server.bind().to_string(),
        port: server.port(),
        scheme: Scheme::Http,
        auth: WinrmAuth::Ntlm,
        username: WINRM_USER.to_owned(),
        password: SecretString::from(password.to_owned()),
        tls: TlsTrust::default(),
        allow_http_basic: false,
    }
}

fn run(target: &WinrmTarget) -> Result<ExecOutput, Error> {
    let exec = Exec {
        host: "win-test",
        command: "inventory.ps1",
        stdin: SCRIPT.as_bytes(),
    };
    winrm::run(
        target,
        &exec,
        &Limits::new(Duration::from_secs(5), Duration::from_secs(30)),
    )
}

fn note(request: &WinrmRequest) -> &str {
    request.raw["note"].as_str().unwrap_or("")
}

/// Every request either is an NTLM handshake leg without a SOAP body (the challenge, or the
/// authenticate message with an empty body) or carries a sealed SOAP body that was answered;
/// no request was refused for being unencrypted, and no body crossed in plaintext.
fn assert_all_sealed(server: &WinrmServer) {
    let requests = server.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        match &r.action {
            Some(action) => assert!(
                r.encrypted && matches!(r.status, Some(200 | 500)),
                "{action} not sealed or refused: {}",
                r.raw
            ),
            None => assert!(
                (r.status == Some(401) && note(r) == "NTLM challenge")
                    || (r.status == Some(200) && note(r) == "NTLM authenticated, empty body"),
                "unexpected request: {}",
                r.raw
            ),
        }
    }
}

#[test]
fn ntlm_over_http_seals_every_request_and_polls_through_timeouts() {
    let server = server_ntlm(
        Scenario::reply(Reply::stdout("unexpected script")).rule(Rule::when(
            "Get-CimInstance Win32_OperatingSystem",
            Reply::stdout(STDOUT)
                .with_stderr(CLIXML)
                .exit_code(3)
                .timeouts(2)
                .chunks(7, 2),
        )),
    );
    let target = ntlm_target(&server, WINRM_PASSWORD);

    let output = run(&target).unwrap_or_else(|e| {
        panic!(
            "NTLM run failed: {e} ({:?})\nserver log: {}",
            e.kind,
            server.server_log()
        )
    });
    assert_eq!(String::from_utf8_lossy(&output.stdout), STDOUT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Cannot find path 'C:\\missing' because it does not exist."),
        "{stderr}"
    );
    assert!(!stderr.contains("<Objs"), "CLIXML not decoded: {stderr}");
    assert_eq!(output.exit_status, Some(3));

    assert_all_sealed(&server);
    let requests = server.requests();
    // One handshake; every SOAP request on the connection it authenticated.
    let handshakes: Vec<&WinrmRequest> = requests
        .iter()
        .filter(|r| note(r) == "NTLM authenticated, empty body")
        .collect();
    assert_eq!(handshakes.len(), 1, "{requests:#?}");
    let conn = handshakes[0].conn;
    for action in ["Create", "Command", "Receive", "Signal", "Delete"] {
        assert!(
            requests.iter().any(|r| r.is(action, 200)),
            "no sealed {action} answered 200"
        );
    }
    assert!(requests
        .iter()
        .filter(|r| r.action.is_some())
        .all(|r| r.conn == conn));
    let timeouts = requests
        .iter()
        .filter(|r| r.action.as_deref() == Some("Receive") && r.fault_code == Some(TIMED_OUT))
        .count();
    assert_eq!(timeouts, 2, "TimedOut faults answered");
    assert_eq!(server.scripts(), vec![SCRIPT.to_owned()]);
    assert_eq!(server.shells_created(), 1);
}

#[test]
fn ntlm_wrong_password_is_auth_failed() {
    let server = server_ntlm(Scenario::reply(Reply::stdout("never")));
    let target = ntlm_target(&server, "not-the-password");
    let error = run(&target).expect_err("wrong password");
    assert!(
        matches!(&error.kind, ErrorKind::AuthFailed { username, method: "ntlm" } if username == WINRM_USER),
        "{error} ({:?})",
        error.kind
    );
    assert!(!error.to_string().contains("not-the-password"));
    assert_eq!(server.shells_created(), 0);
    // Nothing but handshake legs reached the server: no SOAP body was sent.
    assert!(server.requests().iter().all(|r| r.action.is_none()));
}

/// `runs` NTLM collections against `server` on the calling thread; the failures' messages.
fn collect_many(server: &WinrmServer, runs: usize) -> Vec<String> {
    let target = ntlm_target(server, WINRM_PASSWORD);
    let mut failures = Vec::new();
    for _ in 0..runs {
        match run(&target) {
            Ok(output)
                if output.stdout == STDOUT.as_bytes()
                    && output.exit_status == Some(0)
                    && output.stderr.is_empty() => {}
            Ok(output) => failures.push(format!("wrong output: {output:?}")),
            Err(e) => failures.push(format!("{e} ({:?})", e.kind)),
        }
    }
    failures
}

fn loop_server() -> WinrmServer {
    server_ntlm(Scenario::reply(Reply::stdout(STDOUT).timeouts(1)))
}

fn report(label: &str, runs: usize, failures: &[String], elapsed: Duration, server: &WinrmServer) {
    eprintln!(
        "winrm NTLM/HTTP sealed, {label}: {runs} runs, {} failures ({:.2} %), {:.1} ms per run \
         ({:.1} s in all)",
        failures.len(),
        100.0 * failures.len() as f64 / runs as f64,
        elapsed.as_secs_f64() * 1000.0 / runs as f64,
        elapsed.as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{label}: {} of {runs} runs failed; first: {:?}\nserver log: {}",
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>(),
        server.server_log()
    );
    assert_all_sealed(server);
    assert_eq!(server.shells_created(), runs);
    let handshakes = server
        .requests()
        .iter()
        .filter(|r| note(r) == "NTLM authenticated, empty body")
        .count();
    assert_eq!(handshakes, runs, "one NTLM handshake per run");
}

#[test]
fn two_hundred_ntlm_runs_on_one_thread_do_not_fail() {
    const RUNS: usize = 200;
    let server = loop_server();
    let started = Instant::now();
    // winrm::run keeps one current-thread runtime per calling thread: all runs share it.
    let failures = collect_many(&server, RUNS);
    report("one thread", RUNS, &failures, started.elapsed(), &server);
}

#[test]
fn two_hundred_ntlm_runs_over_four_threads_do_not_fail() {
    const THREADS: usize = 4;
    const RUNS_PER_THREAD: usize = 50;
    let server = loop_server();
    let started = Instant::now();
    // As the agent's protocol pool does: several threads, each with its own runtime, at once.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| scope.spawn(|| collect_many(&server, RUNS_PER_THREAD)))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("worker thread panicked"))
            .collect()
    });
    report(
        "4 threads",
        THREADS * RUNS_PER_THREAD,
        &failures,
        started.elapsed(),
        &server,
    );
}

#[test]
fn basic_over_https_still_works() {
    let server = WinrmServer::start(WinrmOptions {
        auth: ServerAuth::Basic,
        tls: true,
        allow_unencrypted: false,
        scenario: Scenario::reply(Reply::stdout(STDOUT).timeouts(1)),
        ..WinrmOptions::default()
    });
    let target = WinrmTarget {
        address: server.bind().to_string(),
        port: server.port(),
        scheme: Scheme::Https,
        auth: WinrmAuth::Basic,
        username: WINRM_USER.to_owned(),
        password: SecretString::from(WINRM_PASSWORD.to_owned()),
        tls: TlsTrust {
            ca_file: server.ca_file().map(|p| p.to_path_buf()),
            cert_sha256: None,
        },
        allow_http_basic: false,
    };
    let output = run(&target).unwrap_or_else(|e| {
        panic!(
            "Basic/HTTPS run failed: {e} ({:?})\nserver log: {}",
            e.kind,
            server.server_log()
        )
    });
    assert_eq!(String::from_utf8_lossy(&output.stdout), STDOUT);
    assert_eq!(output.exit_status, Some(0));
    let requests = server.requests();
    assert!(requests
        .iter()
        .filter(|r| r.action.is_some())
        .all(|r| r.auth.as_deref() == Some("basic") && !r.encrypted && r.status.is_some()));
    assert_eq!(server.shells_created(), 1);
}
