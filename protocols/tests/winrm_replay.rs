//! The WinRM transport against recorded exchanges with real Windows hosts
//! (`tests/winrm/recordings/`, copied from `../shared/fixtures/winrm-recordings/`, pypsrp's test data): a loopback HTTP server
//! answers each request with the next recorded response, checking that the request's
//! `wsa:Action` is the recorded one, so the client must make the same calls in the same order
//! (Create, Command, Receive… including two `w:TimedOut` faults, Signal, Delete).

mod winrm_support;

use std::time::{Duration, Instant};

use luumen_protocols::winrm::{self, Scheme, WinrmAuth};
use luumen_protocols::{Error, ErrorKind, Exec, ExecOutput, Limits};
use winrm_support::{
    basic_target, recording, synthetic_receive, tarpit, Message, ReplayServer, FIXTURES,
};

fn limits() -> Limits {
    Limits::new(Duration::from_secs(2), Duration::from_secs(20))
}

fn run(server: &ReplayServer, script: &str) -> Result<ExecOutput, Error> {
    let target = basic_target(server.port, "vagrant", "vagrant");
    let exec = Exec {
        host: "win-1",
        command: "powershell",
        stdin: script.as_bytes(),
    };
    winrm::run(&target, &exec, &limits())
}

fn check(file: &str, stdout: &[u8], stderr: &[u8], exit: i32) {
    let server = ReplayServer::start(recording(file), "vagrant", "vagrant");
    let output = run(&server, "Write-Output hi").expect("replay succeeds");
    assert_eq!(
        (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            output.exit_status
        ),
        (
            String::from_utf8_lossy(stdout),
            String::from_utf8_lossy(stderr),
            Some(exit)
        ),
        "{file}"
    );
    server.finish();
}

#[test]
fn recordings_replay_to_the_right_output() {
    assert!(
        std::path::Path::new(FIXTURES).is_dir(),
        "recordings missing at {FIXTURES}"
    );
    check("test_winrs_standard.yml", b"hi\r\n", b"", 0);
    check("test_winrs_stderr_rc.yml", b"out \r\n", b"err \r\n", 1);
    check("test_winrs_unicode.yml", "こんにちは\n".as_bytes(), b"", 0);
}

#[test]
fn receive_timeouts_are_polled_through() {
    // Receive answers "hi\n" (still running), then the TimedOut fault twice (HTTP 500,
    // WSManFault 2150858793), then the rest with the exit code.
    let server = ReplayServer::start(
        recording("test_winrs_operation_timeout.yml"),
        "vagrant",
        "vagrant",
    );
    let output = run(
        &server,
        "Write-Host hi; Start-Sleep 30; Write-Host hi again",
    )
    .expect("ok");
    assert_eq!(output.stdout, b"hi\nhi again\n");
    assert_eq!(output.exit_status, Some(0));
    let actions = server.finish();
    assert_eq!(
        actions.iter().filter(|a| a.ends_with("/Receive")).count(),
        4
    );
}

#[test]
fn two_runs_each_open_and_delete_their_shell() {
    let server = ReplayServer::start(
        recording("test_client_execute_cmd.yml"),
        "vagrant",
        "vagrant",
    );
    let first = run(&server, "cmd /c dir").expect("first run");
    assert!(String::from_utf8_lossy(&first.stdout).contains("13 Dir(s)  28,319,084,544 bytes free"));
    let second = run(&server, "cmd /c echo abc").expect("second run");
    assert_eq!(second.stdout, b"abc\r\n");
    let actions = server.finish();
    assert_eq!(
        actions.iter().filter(|a| a.ends_with("/Delete")).count(),
        2,
        "{actions:?}"
    );
}

#[test]
fn short_scripts_are_encoded_long_ones_sent_on_stdin() {
    let short = "Get-CimInstance Win32_OperatingSystem | ConvertTo-Json";
    let server = ReplayServer::start(recording("test_winrs_standard.yml"), "vagrant", "vagrant");
    run(&server, short).expect("short script");
    assert_eq!(
        server.commands(),
        vec![winrm::powershell_invocation(short).command_line()]
    );
    assert!(server.stdin().is_empty());
    server.finish();

    // 200 KiB: more than the command line holds, and more than one Send.
    let long: String = (0..5_000)
        .map(|i| format!("$v{i} = 'Ünïcödé {i}' # padding padding\n"))
        .collect();
    assert!(long.len() > 150 * 1024);
    let server = ReplayServer::start(recording("test_winrs_standard.yml"), "vagrant", "vagrant");
    let output = run(&server, &long).expect("long script");
    assert_eq!(output.stdout, b"hi\r\n");
    assert_eq!(
        server.stdin(),
        long.as_bytes(),
        "the script arrives whole on stdin"
    );
    let commands = server.commands();
    assert_eq!(
        commands,
        vec![format!(
            "powershell.exe -NoProfile -NonInteractive -EncodedCommand {}",
            winrm::encode_command(winrm::STDIN_BOOTSTRAP)
        )]
    );
    let actions = server.finish();
    let sends = actions.iter().filter(|a| a.ends_with("/Send")).count();
    assert!(sends >= 3, "{sends} Send requests");
}

#[test]
fn clixml_split_across_receive_responses_is_decoded() {
    let clixml = concat!(
        "#< CLIXML\r\n",
        r#"<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">"#,
        r#"<S S="Error">Get-Item : Cannot find path 'C:\missing' because it does not exist._x000D__x000A_</S>"#,
        r#"<S S="Error">+ CategoryInfo : ObjectNotFound_x000D__x000A_</S></Objs>"#
    )
    .as_bytes();
    // As Windows sends it: the header alone, then the objects cut mid-escape across two
    // Receive responses.
    let cut = clixml.len() - 40;
    let mut messages = recording("test_winrs_standard.yml");
    let receive_at = messages
        .iter()
        .position(|m| m.action.ends_with("/Receive"))
        .expect("a Receive");
    messages.splice(
        receive_at..=receive_at,
        [
            synthetic_receive(
                &[("stderr", &clixml[..11]), ("stderr", &clixml[11..cut])],
                None,
            ),
            synthetic_receive(
                &[("stderr", &clixml[cut..]), ("stdout", b"partial\r\n")],
                Some(1),
            ),
        ],
    );
    let server = ReplayServer::start(messages, "vagrant", "vagrant");
    let output = run(&server, "Get-Item C:\\missing").expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "Get-Item : Cannot find path 'C:\\missing' because it does not exist.\r\n+ CategoryInfo : ObjectNotFound\r\n"
    );
    assert_eq!(output.stdout, b"partial\r\n");
    assert_eq!(output.exit_status, Some(1));
    server.finish();
}

#[test]
fn a_fault_is_an_error_with_its_code_and_message() {
    // Command answered with an InvalidSelectors fault, as Windows does for an unknown shell.
    let mut messages = recording("test_winrs_standard.yml");
    messages[1].status = 500;
    messages[1].response = winrm_support::fault("w:InvalidSelectors", "2150858843", "The WS-Management service cannot process the request because the request contained invalid selectors for the resource.");
    messages.truncate(2);
    messages.push(recording("test_winrs_standard.yml").remove(4)); // Delete
    let server = ReplayServer::start(messages, "vagrant", "vagrant");
    let error = run(&server, "x").expect_err("fault");
    match &error.kind {
        ErrorKind::WsManFault { code, message } => {
            assert_eq!(code, "w:InvalidSelectors");
            assert!(message.contains("invalid selectors"), "{message}");
        }
        other => panic!("expected a fault, got {other:?}"),
    }
    assert_eq!(error.host, "win-1");
    assert_eq!(error.command.as_deref(), Some("powershell"));
    server.finish();
}

#[test]
fn wrong_password_is_auth_failed_and_never_printed() {
    let server = ReplayServer::start(recording("test_winrs_standard.yml"), "vagrant", "vagrant");
    let target = basic_target(server.port, "vagrant", "S3cret-wrong");
    let exec = Exec {
        host: "win-1",
        command: "powershell",
        stdin: b"hi",
    };
    let error = winrm::run(&target, &exec, &limits()).expect_err("refused");
    assert!(
        matches!(&error.kind, ErrorKind::AuthFailed { username, method: "basic" } if username == "vagrant"),
        "{error:?}"
    );
    let shown = format!("{error} {error:?} {target:?}");
    assert!(!shown.contains("S3cret-wrong"), "{shown}");
}

#[test]
fn closed_port_is_unreachable_at_once() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let target = basic_target(port, "vagrant", "vagrant");
    let exec = Exec {
        host: "win-1",
        command: "powershell",
        stdin: b"hi",
    };
    let started = Instant::now();
    let error = winrm::run(&target, &exec, &limits()).expect_err("closed");
    assert!(
        matches!(&error.kind, ErrorKind::Unreachable { address, reason } if address == &format!("127.0.0.1:{port}") && reason.contains("refused")),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_server_that_never_answers_costs_the_limit() {
    let (port, _tarpit) = tarpit();
    let mut target = basic_target(port, "vagrant", "vagrant");
    target.scheme = Scheme::Https;
    target.auth = WinrmAuth::Ntlm;
    for scheme in [Scheme::Http, Scheme::Https] {
        target.scheme = scheme;
        let exec = Exec {
            host: "win-1",
            command: "powershell",
            stdin: b"hi",
        };
        let limits = Limits::new(Duration::from_secs(1), Duration::from_millis(1_500));
        let started = Instant::now();
        let error = winrm::run(&target, &exec, &limits).expect_err("tarpit");
        let elapsed = started.elapsed();
        assert!(
            matches!(error.kind, ErrorKind::Timeout { .. }),
            "{scheme:?}: {error:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(1_400) && elapsed < Duration::from_millis(2_500),
            "{scheme:?}: {elapsed:?}"
        );
    }
}

#[test]
fn basic_over_http_needs_explicit_permission() {
    let mut target = basic_target(1, "vagrant", "vagrant");
    target.allow_http_basic = false;
    let exec = Exec {
        host: "win-1",
        command: "powershell",
        stdin: b"hi",
    };
    let error = winrm::run(&target, &exec, &limits()).expect_err("refused locally");
    assert!(
        matches!(error.kind, ErrorKind::Settings { .. }),
        "{error:?}"
    );
}

#[test]
fn the_recordings_are_what_the_support_code_expects() {
    let messages = recording("test_winrs_operation_timeout.yml");
    let faults: Vec<&Message> = messages.iter().filter(|m| m.status == 500).collect();
    assert_eq!(faults.len(), 2);
    assert!(faults.iter().all(|m| m.response.contains("2150858793")));
}

#[test]
fn https_trusts_a_pin_or_a_ca_file_and_refuses_anything_else() {
    // Each case: a replay server behind its own TLS front (a fresh self-signed certificate for
    // localhost / 127.0.0.1).
    let https = || {
        let server =
            ReplayServer::start(recording("test_winrs_standard.yml"), "vagrant", "vagrant");
        let (port, pem, digest) = winrm_support::tls_front(server.port);
        let mut target = basic_target(port, "vagrant", "vagrant");
        target.scheme = Scheme::Https;
        target.allow_http_basic = false;
        (server, target, pem, digest)
    };
    let exec = Exec {
        host: "win-1",
        command: "powershell",
        stdin: b"hi",
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = |server: ReplayServer, target: &winrm::WinrmTarget, needle: &str| {
        let error = winrm::run(target, &exec, &limits()).expect_err("refused");
        match &error.kind {
            ErrorKind::Certificate { reason } => assert!(reason.contains(needle), "{reason}"),
            other => panic!("expected a certificate error, got {other:?}"),
        }
        assert!(server.stop().is_empty(), "no request may reach the server");
    };

    // The right pin: the recording replays over TLS.
    let (server, mut target, pem, digest) = https();
    target.tls.cert_sha256 = Some(digest);
    let output = winrm::run(&target, &exec, &limits()).expect("pinned https");
    assert_eq!(output.stdout, b"hi\r\n");
    server.finish();

    // That pin against another server's certificate.
    let (server, mut other, _, _) = https();
    other.tls.cert_sha256 = Some(digest);
    refused(server, &other, "pinned");

    // The first certificate as a CA file, against another server.
    let ca = dir.path().join("first.pem");
    std::fs::write(&ca, &pem).expect("write ca");
    let (server, mut other, _, _) = https();
    other.tls.ca_file = Some(ca);
    refused(server, &other, "");

    // System roots do not know a self-signed certificate.
    let (server, target, _, _) = https();
    refused(server, &target, "");

    // A server's own certificate as the CA file: accepted.
    let (server, mut target, own, _) = https();
    let own_ca = dir.path().join("own.pem");
    std::fs::write(&own_ca, &own).expect("write ca");
    target.tls.ca_file = Some(own_ca);
    let output = winrm::run(&target, &exec, &limits()).expect("CA-file https");
    assert_eq!(output.exit_status, Some(0));
    server.finish();
}
