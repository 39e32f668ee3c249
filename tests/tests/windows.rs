//! Windows hosts with the real `luumen-agent` binary against the WinRM test server (which
//! behaves like Windows; see tests/src/winrm.rs), beside Linux hosts on a real sshd.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use luumen_integration::winrm::{
    Reply, Scenario, WinrmAuth, WinrmOptions, WinrmServer, WINRM_PASSWORD, WINRM_USER,
};
use luumen_integration::{
    agent::workspace_dir, closed_port, ensure_test_users, require_root, SshdConfig, SshdHarness,
};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(180);

/// A recorded-shape output of the Windows catalogue script (test data of the properties crate),
/// without its `#!source:` header lines: exactly what stdout carries.
fn canned_output(name: &str) -> String {
    let path = workspace_dir()
        .join("properties/testdata/windows")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("windows test output");
    text.lines()
        .filter(|l| !l.starts_with("#!source:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `luumen-agent once` over `hosts` (with `dir/config.yaml` when there is one), results as
/// NDJSON values.
fn once(dir: &Path, hosts: Value) -> (Option<i32>, String, Vec<Value>) {
    let inventory = dir.join("inventory.json");
    std::fs::write(&inventory, json!({ "hosts": hosts }).to_string()).expect("inventory");
    let output = dir.join("out.ndjson");
    let mut command = std::process::Command::new(luumen_integration::agent_bin());
    command
        .args(["once", "--inventory", inventory.to_str().expect("utf-8")])
        .args(["--output", output.to_str().expect("utf-8")])
        .args(["--state-dir", dir.join("state").to_str().expect("utf-8")]);
    let config = dir.join("config.yaml");
    if config.exists() {
        command.args(["--config", config.to_str().expect("utf-8")]);
    }
    let out = luumen_integration::run_command(command, TIMEOUT);
    let results = std::fs::read_to_string(&output)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        results,
    )
}

/// `dir/config.yaml` reporting to a fresh receiver (returned: it stops when dropped), plus
/// `extra` settings.
fn write_config(dir: &Path, extra: &str) -> luumen_integration::Receiver {
    let receiver = luumen_integration::Receiver::start(200);
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "api: {{ base_url: '{}', api_key: k }}\n{extra}",
            receiver.base_url()
        ),
    )
    .expect("config");
    receiver
}

fn by_id<'a>(results: &'a [Value], id: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["host"]["id"] == id)
        .unwrap_or_else(|| panic!("no result for {id}: {results:#?}"))
}

fn windows_host(id: &str, server: &WinrmServer, winrm: Value, password: &str) -> Value {
    json!({
        "id": id, "address": "127.0.0.1", "port": server.port(), "protocol": "winrm",
        "credentials": {"username": WINRM_USER, "password": password},
        "winrm": winrm,
    })
}

#[test]
fn a_mixed_fleet_of_linux_and_windows_hosts_is_collected_in_one_run() {
    require_root();
    ensure_test_users();
    let sshd = SshdHarness::start(SshdConfig::with_addresses(1)).expect("sshd");
    let user = sshd.sudo_user();
    // Basic over HTTPS, the certificate pinned; the output arrives after two Receive timeouts,
    // in several chunks.
    let https = WinrmServer::start(WinrmOptions {
        auth: WinrmAuth::Basic,
        tls: true,
        scenario: Scenario::reply(
            Reply::stdout(canned_output("server-2022-datacenter.json"))
                .timeouts(2)
                .chunks(4096, 2),
        ),
        ..WinrmOptions::default()
    });
    // NTLM over plain HTTP, message encryption required (the Windows default).
    let ntlm = WinrmServer::start(WinrmOptions {
        auth: WinrmAuth::Ntlm,
        tls: false,
        scenario: Scenario::reply(Reply::stdout(canned_output("windows-11-pro-22h2.json"))),
        ..WinrmOptions::default()
    });
    let pin = https.cert_sha256().expect("pin").to_owned();
    let hosts = json!([
        {"id": "linux", "address": sshd.addresses()[0].to_string(), "port": sshd.port(),
         "protocol": "ssh",
         "credentials": {"username": user.name, "private_key_file": user.private_key}},
        windows_host("win-https", &https,
            json!({"transport": "https", "auth": "basic", "cert_sha256": pin}), WINRM_PASSWORD),
        windows_host("win-ntlm", &ntlm, json!({"transport": "http", "auth": "ntlm"}), WINRM_PASSWORD),
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stderr, results) = once(dir.path(), hosts);
    assert_eq!(code, Some(0), "{stderr}\n{results:#?}");

    let linux = by_id(&results, "linux");
    assert_eq!(linux["properties"]["os"]["family"], "linux", "{linux:#}");
    for (id, server, caption) in [
        ("win-https", &https, "Server 2022"),
        ("win-ntlm", &ntlm, "Windows 11"),
    ] {
        let host = by_id(&results, id);
        assert_eq!(host["status"], "ok", "{host:#}");
        let properties = &host["properties"];
        assert_eq!(properties["os"]["family"], "windows", "{host:#}");
        assert!(
            properties["os"]["name"]
                .as_str()
                .unwrap_or("")
                .contains(caption),
            "{:#}",
            properties["os"]
        );
        let packages = properties["packages"].as_array().expect("packages");
        assert!(!packages.is_empty());
        assert!(packages.iter().all(|p| p["manager"] == "registry"));
        assert!(properties["services"]
            .as_array()
            .is_some_and(|s| !s.is_empty()));
        assert!(properties["hardware"]["memory_bytes"].as_u64().unwrap_or(0) > 0);
        // One shell, one script: the agent's own catalogue, sent as it is.
        assert_eq!(server.shells_created(), 1, "{id}");
        let scripts = server.scripts();
        assert_eq!(scripts.len(), 1, "{id}: {scripts:?}");
        assert!(
            scripts[0].contains("ConvertTo-Json"),
            "{id}: {}",
            scripts[0]
        );
    }
    // Every NTLM request after the handshake was sealed.
    let requests = ntlm.requests();
    assert!(requests.iter().any(|r| r.encrypted));
    assert!(
        requests
            .iter()
            .filter(|r| r.status == Some(200) && r.action.is_some())
            .all(|r| r.encrypted),
        "{requests:#?}"
    );
    assert!(!stderr.contains(WINRM_PASSWORD), "no password in the logs");
}

#[test]
fn windows_failures_map_to_the_same_statuses_as_ssh() {
    let good = WinrmServer::start(WinrmOptions {
        auth: WinrmAuth::Ntlm,
        scenario: Scenario::reply(Reply::stdout(canned_output("server-2022-datacenter.json"))),
        ..WinrmOptions::default()
    });
    let clixml = "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><S S=\"Error\">Get-CimInstance : Access denied _x000D__x000A_</S><S S=\"Error\">At line:1 char:1_x000D__x000A_</S></Objs>";
    let failing = WinrmServer::start(WinrmOptions {
        auth: WinrmAuth::Basic,
        tls: true,
        scenario: Scenario::reply(Reply::stderr(clixml).exit_code(1)),
        ..WinrmOptions::default()
    });
    let tarpit = WinrmServer::start(WinrmOptions {
        auth: WinrmAuth::Basic,
        tls: true,
        scenario: Scenario::tarpit(),
        ..WinrmOptions::default()
    });
    let closed = closed_port(Ipv4Addr::LOCALHOST);
    let https = |server: &WinrmServer| json!({"transport": "https", "auth": "basic", "cert_sha256": server.cert_sha256().expect("pin")});
    let hosts = json!([
        windows_host("wrong-password", &good, json!({"auth": "ntlm"}), "not the password"),
        {"id": "closed", "address": "127.0.0.1", "port": closed, "protocol": "winrm",
         "credentials": {"username": WINRM_USER, "password": WINRM_PASSWORD}},
        windows_host("clixml", &failing, https(&failing), WINRM_PASSWORD),
        windows_host("tarpit", &tarpit, https(&tarpit), WINRM_PASSWORD),
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    let _receiver = write_config(
        dir.path(),
        "timeouts: { connect_seconds: 2, host_seconds: 4 }\n",
    );
    let started = std::time::Instant::now();
    let (code, stderr, results) = once(dir.path(), hosts);
    let wall = started.elapsed();
    assert_eq!(code, Some(1), "{stderr}");
    let status = |id: &str| {
        by_id(&results, id)["status"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(status("wrong-password"), "auth_failed");
    assert_eq!(status("closed"), "unreachable");
    assert_eq!(status("tarpit"), "timeout");
    let tarpit_ms = by_id(&results, "tarpit")["duration_ms"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        (3_900..6_000).contains(&tarpit_ms),
        "the tarpit costs its 4 s limit: {tarpit_ms} ms"
    );
    assert!(wall < Duration::from_secs(20), "{wall:?}");
    let clixml_result = by_id(&results, "clixml");
    assert_eq!(clixml_result["status"], "error", "{clixml_result:#}");
    let message = clixml_result["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("Access denied")
            && !message.contains("_x000D_")
            && !message.contains("<Objs"),
        "CLIXML decoded into readable text: {message}"
    );
    assert_eq!(good.shells_created(), 0, "no shell with a wrong password");
    assert!(!stderr.contains(WINRM_PASSWORD) && !stderr.contains("not the password"));
}

/// The failure rate of NTLM collections through the agent's own arrangement (its protocol pool
/// threads, each with its own current-thread runtime): 200 Windows hosts in one cycle, all on
/// the NTLM test server with message encryption required.
#[test]
fn two_hundred_ntlm_collections_in_one_cycle_all_succeed() {
    let server = WinrmServer::start(WinrmOptions {
        auth: WinrmAuth::Ntlm,
        scenario: Scenario::reply(Reply::stdout(canned_output("server-2022-datacenter.json"))),
        ..WinrmOptions::default()
    });
    let hosts: Vec<Value> = (0..200)
        .map(|n| {
            windows_host(
                &format!("win-{n:03}"),
                &server,
                json!({"auth": "ntlm"}),
                WINRM_PASSWORD,
            )
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let _receiver = write_config(dir.path(), "max_concurrency: 8\n");
    let started = std::time::Instant::now();
    let (code, stderr, results) = once(dir.path(), Value::Array(hosts));
    let wall = started.elapsed();
    let failed: Vec<&Value> = results.iter().filter(|r| r["status"] != "ok").collect();
    eprintln!(
        "agent NTLM collections: {} hosts, {} failed ({:.2} %), cycle {:.1} s with max_concurrency 8",
        results.len(),
        failed.len(),
        100.0 * failed.len() as f64 / results.len().max(1) as f64,
        wall.as_secs_f64()
    );
    assert_eq!(results.len(), 200);
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(server.shells_created(), 200);
    assert!(server
        .requests()
        .iter()
        .filter(|r| r.status == Some(200) && r.action.is_some())
        .all(|r| r.encrypted));
}

/// `doctor` on Windows hosts: TCP, TLS, authentication and each read the catalogue needs, with
/// a remedy for what fails.
#[test]
fn doctor_checks_windows_hosts_and_names_remedies() {
    let probe = |cim: Value| {
        json!({"user": "WIN-TEST\\luumen-win", "admin": false, "powershell": "5.1.17763.5328",
               "cim": cim, "registry": null, "services": null})
        .to_string()
    };
    let good = WinrmServer::start(WinrmOptions {
        auth: WinrmAuth::Ntlm,
        scenario: Scenario::reply(Reply::stdout(probe(Value::Null))),
        ..WinrmOptions::default()
    });
    let denied = WinrmServer::start(WinrmOptions {
        auth: WinrmAuth::Basic,
        tls: true,
        scenario: Scenario::reply(Reply::stdout(probe(json!("Access denied ")))),
        ..WinrmOptions::default()
    });
    let other = WinrmServer::start(WinrmOptions {
        auth: WinrmAuth::Basic,
        tls: true,
        ..WinrmOptions::default()
    });
    let closed = closed_port(Ipv4Addr::LOCALHOST);
    let https = |pin: &str| json!({"transport": "https", "auth": "basic", "cert_sha256": pin});
    let hosts = json!({"hosts": [
        windows_host("good", &good, json!({"auth": "ntlm"}), WINRM_PASSWORD),
        windows_host("cim-denied", &denied, https(denied.cert_sha256().expect("pin")), WINRM_PASSWORD),
        windows_host("wrong-password", &good, json!({"auth": "ntlm"}), "not it"),
        // Pinned to another server's certificate: refused before any credential is sent.
        windows_host("wrong-pin", &denied, https(other.cert_sha256().expect("pin")), WINRM_PASSWORD),
        {"id": "closed", "address": "127.0.0.1", "port": closed, "protocol": "winrm",
         "credentials": {"username": WINRM_USER, "password": WINRM_PASSWORD}},
    ]});
    let dir = tempfile::tempdir().expect("temp dir");
    let inventory = dir.path().join("inventory.json");
    std::fs::write(&inventory, hosts.to_string()).expect("inventory");
    let mut command = std::process::Command::new(luumen_integration::agent_bin());
    command
        .args(["doctor", "--format", "json"])
        .args(["--inventory", inventory.to_str().expect("utf-8")])
        .args([
            "--state-dir",
            dir.path().join("state").to_str().expect("utf-8"),
        ]);
    let out = luumen_integration::run_command(command, TIMEOUT);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON checks");
    let find = |host: &str, check: &str| -> &Value {
        checks
            .iter()
            .find(|c| c["host"] == host && c["check"] == check)
            .unwrap_or_else(|| panic!("no check {host}/{check}: {checks:#?}"))
    };
    for check in [
        "tcp",
        "authentication",
        "powershell",
        "read cim",
        "read registry",
        "read services",
    ] {
        assert_eq!(find("good", check)["ok"], true, "good/{check}: {checks:#?}");
    }
    assert!(find("good", "authentication")["detail"]
        .as_str()
        .unwrap_or("")
        .contains("WIN-TEST\\luumen-win"));
    assert_eq!(find("cim-denied", "tls")["ok"], true);
    let cim = find("cim-denied", "read cim");
    assert_eq!(cim["ok"], false);
    assert!(
        cim["remedy"].as_str().unwrap_or("").contains("root\\cimv2"),
        "{cim}"
    );
    assert_eq!(find("wrong-password", "tcp")["ok"], true);
    assert_eq!(find("wrong-password", "authentication")["ok"], false);
    let pin = find("wrong-pin", "tls");
    assert_eq!(pin["ok"], false, "{pin}");
    assert!(pin["remedy"].as_str().unwrap_or("").contains("cert_sha256"));
    assert_eq!(find("closed", "tcp")["ok"], false);
    // The wrong-pin host never got a request through: only the cim-denied host's shell exists
    // behind that certificate.
    assert_eq!(denied.shells_created(), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(WINRM_PASSWORD));
}

/// An HTTPS host whose TLS handshake fails for another reason than its certificate (plain HTTP
/// on the port) or never completes (a port that accepts and stays silent): `tcp` passes, `tls`
/// fails, and nothing says "certificate accepted" or blames TCP.
#[test]
fn doctor_reports_a_failed_or_hung_tls_handshake_as_a_tls_failure() {
    let plain = WinrmServer::start(WinrmOptions {
        auth: WinrmAuth::Basic,
        tls: false,
        ..WinrmOptions::default()
    });
    let silent = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        // Holds every connection open without a byte (the test process ends it).
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    let https = json!({"transport": "https", "auth": "basic"});
    let hosts = json!({"hosts": [
        windows_host("plain-http", &plain, https.clone(), WINRM_PASSWORD),
        {"id": "silent", "address": "127.0.0.1", "port": silent_port, "protocol": "winrm",
         "credentials": {"username": WINRM_USER, "password": WINRM_PASSWORD}, "winrm": https},
    ]});
    let dir = tempfile::tempdir().expect("temp dir");
    let inventory = dir.path().join("inventory.json");
    std::fs::write(&inventory, hosts.to_string()).expect("inventory");
    let _receiver = write_config(
        dir.path(),
        &format!(
            "timeouts: {{ connect_seconds: 2, host_seconds: 3 }}\nstate_dir: '{}'\n",
            dir.path().display()
        ),
    );
    let config = dir.path().join("config.yaml");
    let mut command = std::process::Command::new(luumen_integration::agent_bin());
    command
        .args(["doctor", "--format", "json", "--config"])
        .arg(&config)
        .arg("--inventory")
        .arg(&inventory);
    let out = luumen_integration::run_command(command, TIMEOUT);
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON checks");
    let find = |host: &str, check: &str| -> &Value {
        checks
            .iter()
            .find(|c| c["host"] == host && c["check"] == check)
            .unwrap_or_else(|| panic!("no check {host}/{check}: {checks:#?}"))
    };
    for host in ["plain-http", "silent"] {
        assert_eq!(find(host, "tcp")["ok"], true, "{host}: {checks:#?}");
        let tls = find(host, "tls");
        assert_eq!(tls["ok"], false, "{host}: {tls}");
        assert!(
            tls["remedy"].as_str().unwrap_or("").contains("5986"),
            "{tls}"
        );
    }
    assert!(
        find("plain-http", "tls")["detail"]
            .as_str()
            .unwrap_or("")
            .contains("tls handshake"),
        "{checks:#?}"
    );
    assert!(
        find("silent", "tls")["detail"]
            .as_str()
            .unwrap_or("")
            .contains("timed out after 3.0 s during tls handshake"),
        "{checks:#?}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("certificate accepted"),
        "{checks:#?}"
    );
    assert_eq!(plain.shells_created(), 0);
}
