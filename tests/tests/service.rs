//! Service life of `luumen-agent run`: SIGHUP reloads (added, removed, invalid), SIGTERM stops
//! cleanly, systemd notifications on a fake NOTIFY_SOCKET, and the unit `install-service` writes.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn signal(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, signal) };
}

fn results_for(output: &Path, id: &str) -> usize {
    std::fs::read_to_string(output)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["host"]["id"] == id)
        .count()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

fn write_inventory(path: &Path, ids: &[&str]) {
    let hosts: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "protocol": "local"}))
        .collect();
    let body = json!({"schedule": {"interval_seconds": 1}, "hosts": hosts});
    std::fs::write(path, body.to_string()).expect("write inventory");
}

#[test]
fn run_reloads_on_sighup_stops_on_sigterm_and_talks_to_systemd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind fake NOTIFY_SOCKET");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = messages.clone();
    let listener = std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(90) {
            if let Ok(n) = socket.recv(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                let stop = text.contains("STOPPING=1");
                seen.lock().expect("lock").push(text);
                if stop {
                    break;
                }
            }
        }
    });

    let inventory = dir.path().join("inventory.json");
    let output = dir.path().join("out.ndjson");
    write_inventory(&inventory, &["a"]);
    let mut child = Command::new(luumen_integration::agent_bin())
        .args(["run", "--inventory", inventory.to_str().expect("utf-8")])
        .args(["--output", output.to_str().expect("utf-8")])
        .args([
            "--state-dir",
            dir.path().join("state").to_str().expect("utf-8"),
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).expect("log file"))
        .spawn()
        .expect("agent starts");
    // A burst of SIGHUPs during start-up must not kill the process: from the moment the agent
    // has set SIGHUP's disposition (the first thing its main does; before that the process is
    // still in the dynamic loader, where no program can handle a signal).
    let status_path = format!("/proc/{}/status", child.id());
    let handles_sighup = || {
        std::fs::read_to_string(&status_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("SigIgn:") || l.starts_with("SigCgt:"))
            .any(|l| u64::from_str_radix(l[7..].trim(), 16).is_ok_and(|mask| mask & 1 == 1))
    };
    assert!(
        wait_until(Duration::from_secs(5), handles_sighup),
        "SIGHUP handled from the start"
    );
    for _ in 0..100 {
        signal(&child, libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(3));
    }
    let log_path = dir.path().join("agent.log");
    assert!(
        wait_until(Duration::from_secs(20), || results_for(&output, "a") >= 2),
        "collects on schedule: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    assert!(
        child.try_wait().expect("wait").is_none(),
        "still running after SIGHUPs"
    );

    // An invalid new config: logged, the old one stays in force.
    std::fs::write(&inventory, "hosts: [ {id: broken").expect("write");
    signal(&child, libc::SIGHUP);
    let before = results_for(&output, "a");
    assert!(
        wait_until(Duration::from_secs(10), || results_for(&output, "a")
            >= before + 2),
        "the old host list keeps running"
    );

    // Add b: collected from the next cycle on.
    write_inventory(&inventory, &["a", "b"]);
    signal(&child, libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || results_for(&output, "b") >= 2),
        "added host collected"
    );
    // Remove a: no result for it after the reload settles.
    write_inventory(&inventory, &["b"]);
    signal(&child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(1500));
    let a_after = results_for(&output, "a");
    let b_after = results_for(&output, "b");
    assert!(wait_until(Duration::from_secs(10), || results_for(
        &output, "b"
    ) >= b_after + 2));
    assert_eq!(
        results_for(&output, "a"),
        a_after,
        "removed host no longer collected"
    );

    let stop_started = Instant::now();
    signal(&child, libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(30), || child
            .try_wait()
            .expect("wait")
            .is_some()),
        "stops after SIGTERM"
    );
    let status = child.wait().expect("status");
    assert_eq!(status.code(), Some(0));
    assert!(stop_started.elapsed() < Duration::from_secs(30));
    listener.join().expect("listener");

    let log = std::fs::read_to_string(dir.path().join("agent.log")).expect("log");
    assert!(
        log.contains("Reload failed; the previous configuration stays in force."),
        "{log}"
    );
    let messages = messages.lock().expect("lock").clone();
    let position = |needle: &str| messages.iter().position(|m| m.contains(needle));
    let ready = position("READY=1").expect("READY=1 sent");
    let reloading = messages
        .iter()
        .position(|m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC="))
        .expect("RELOADING=1 with MONOTONIC_USEC");
    assert!(ready < reloading, "{messages:?}");
    assert!(
        messages[reloading..].iter().any(|m| m.contains("READY=1")),
        "READY=1 after a reload: {messages:?}"
    );
    assert!(
        position("WATCHDOG=1").is_some(),
        "watchdog pings: {messages:?}"
    );
    assert_eq!(
        position("STOPPING=1"),
        Some(messages.len() - 1),
        "STOPPING=1 last: {messages:?}"
    );
}

#[test]
fn install_service_writes_a_unit_that_systemd_analyze_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join("luumen-agent.service");
    let config = luumen_integration::agent::workspace_dir().join("examples/config.yaml");
    let out = luumen_integration::run_agent(
        &[
            "install-service",
            "--config",
            config.to_str().expect("utf-8"),
            "--unit",
            unit.to_str().expect("utf-8"),
            "--notify-reload",
            "false",
        ],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&unit).expect("unit written");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "WatchdogSec=",
        "ReadWritePaths=/var/lib/luumen-agent /var/log/luumen",
    ] {
        assert!(text.contains(line), "missing {line}:\n{text}");
    }
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let verify = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .expect("systemd-analyze");
        let messages = String::from_utf8_lossy(&verify.stderr);
        assert!(verify.status.success(), "{messages}");
        assert!(
            !messages.contains(unit.to_str().expect("utf-8")),
            "warnings about the unit: {messages}"
        );
    } else {
        eprintln!("systemd-analyze not installed: unit checked by content only");
    }
}

/// Writes `dir/config.yaml`: the receiver as API, `dir/state` as state dir, plus `extra` lines.
fn write_config(
    dir: &Path,
    receiver: &luumen_integration::Receiver,
    extra: &str,
) -> std::path::PathBuf {
    let config = dir.join("config.yaml");
    let text = format!(
        "api: {{ base_url: '{}', api_key: k }}\nstate_dir: '{}'\n{extra}",
        receiver.base_url(),
        dir.join("state").display()
    );
    std::fs::write(&config, text).expect("write config");
    config
}

fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return String::new();
    };
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[test]
fn run_serves_prometheus_metrics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = luumen_integration::Receiver::start(503);
    let port = luumen_integration::net::free_port_on_all(&[std::net::Ipv4Addr::LOCALHOST])
        .expect("free port");
    let address = format!("127.0.0.1:{port}");
    let config = write_config(
        dir.path(),
        &receiver,
        &format!("metrics_listen: '{address}'\nbatch: {{ max_results: 1 }}\n"),
    );
    let inventory = dir.path().join("inventory.json");
    write_inventory(&inventory, &["a"]);
    let mut child = Command::new(luumen_integration::agent_bin())
        .args(["run", "--config", config.to_str().expect("utf-8")])
        .args(["--inventory", inventory.to_str().expect("utf-8")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts");
    let mut text = String::new();
    let complete = wait_until(Duration::from_secs(30), || {
        text = http_get(&address, "/metrics");
        text.contains("luumen_hosts{status=\"partial\"} 1")
            && text
                .lines()
                .any(|l| l.starts_with("luumen_api_send_failures_total ") && !l.ends_with(" 0"))
            && text
                .lines()
                .any(|l| l.starts_with("luumen_spool_records ") && !l.ends_with(" 0"))
    });
    signal(&child, libc::SIGTERM);
    let _ = child.wait();
    assert!(
        complete,
        "metrics never showed the host, the failed sends and the spool:\n{text}"
    );
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");
    assert!(
        text.contains("luumen_collection_duration_seconds_count"),
        "{text}"
    );
    assert!(
        http_get(&address, "/metrics").is_empty(),
        "the endpoint stops with the agent"
    );
}

#[test]
fn an_unreachable_host_backs_off_and_is_still_reported_every_cycle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = luumen_integration::closed_port(std::net::Ipv4Addr::LOCALHOST);
    let inventory = dir.path().join("inventory.json");
    let body = json!({"schedule": {"interval_seconds": 1}, "hosts": [
        {"id": "down", "address": "127.0.0.1", "port": port, "protocol": "ssh",
         "credentials": {"username": "nobody", "password": "unused"}}
    ]});
    std::fs::write(&inventory, body.to_string()).expect("write inventory");
    let output = dir.path().join("out.ndjson");
    let mut child = Command::new(luumen_integration::agent_bin())
        .args(["run", "--inventory", inventory.to_str().expect("utf-8")])
        .args(["--output", output.to_str().expect("utf-8")])
        .args([
            "--state-dir",
            dir.path().join("state").to_str().expect("utf-8"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts");
    let reported = wait_until(Duration::from_secs(30), || {
        results_for(&output, "down") >= 5
    });
    signal(&child, libc::SIGTERM);
    let _ = child.wait();
    assert!(reported, "reported every cycle");
    let results: Vec<Value> = std::fs::read_to_string(&output)
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let messages: Vec<&str> = results
        .iter()
        .map(|r| r["errors"][0]["message"].as_str().unwrap_or(""))
        .collect();
    assert!(
        results.iter().all(|r| r["status"] == "unreachable"),
        "{messages:#?}"
    );
    // Two real attempts, then the breaker is open: no connection, the last error and its time.
    assert!(!messages[0].contains("not attempted") && !messages[1].contains("not attempted"));
    for message in &messages[2..] {
        assert!(
            message.contains("not attempted: unreachable 2 times in a row"),
            "{message}"
        );
        assert!(
            message.contains(&format!("127.0.0.1:{port}")),
            "the last error: {message}"
        );
    }
}

/// Runs `run` for a few seconds against an API that is down, with a spool too small for one
/// batch; returns (results collected, agent log).
fn run_with_full_spool(policy: &str) -> (usize, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = luumen_integration::Receiver::start(503);
    let config = write_config(
        dir.path(),
        &receiver,
        &format!(
            "batch: {{ max_results: 1 }}\nspool: {{ max_bytes: 20000, when_full: {policy} }}\n"
        ),
    );
    let inventory = dir.path().join("inventory.json");
    write_inventory(&inventory, &["a"]);
    let output = dir.path().join("out.ndjson");
    let log = dir.path().join("agent.log");
    let mut child = Command::new(luumen_integration::agent_bin())
        .args(["run", "--config", config.to_str().expect("utf-8")])
        .args(["--inventory", inventory.to_str().expect("utf-8")])
        .args(["--output", output.to_str().expect("utf-8")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("agent starts");
    std::thread::sleep(Duration::from_millis(4500));
    signal(&child, libc::SIGTERM);
    let status = child.wait().expect("exit");
    assert_eq!(status.code(), Some(0));
    (
        results_for(&output, "a"),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn a_full_spool_skips_cycles_or_keeps_collecting_as_configured() {
    let (collected, log) = run_with_full_spool("skip_cycles");
    assert!(log.contains("Spool full: this cycle is skipped"), "{log}");
    assert_eq!(collected, 1, "only the first cycle ran: {log}");
    let (collected, log) = run_with_full_spool("keep_in_memory");
    assert!(!log.contains("Spool full: this cycle is skipped"), "{log}");
    assert!(collected >= 3, "cycles go on: {collected}");
}

/// A reload that points `api` elsewhere sends from then on to the new endpoint (waiting batches
/// included); settings that shape the process are named in a warning and stay as they were.
#[test]
fn a_reload_moves_reports_to_the_new_api_and_names_restart_only_settings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = luumen_integration::Receiver::start(200);
    let second = luumen_integration::Receiver::start(200);
    let inventory = dir.path().join("inventory.json");
    write_inventory(&inventory, &["a"]);
    let batch = "batch: { max_results: 1, max_wait_seconds: 1 }\n";
    let config = write_config(dir.path(), &first, batch);
    let log_path = dir.path().join("agent.log");
    let mut child = Command::new(luumen_integration::agent_bin())
        .args(["run", "--config", config.to_str().expect("utf-8")])
        .args(["--inventory", inventory.to_str().expect("utf-8")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("agent starts");
    let posts = |r: &luumen_integration::Receiver| r.requests_to("POST", "/reports").len();
    assert!(
        wait_until(Duration::from_secs(20), || posts(&first) >= 1),
        "reports go to the first API: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    write_config(
        dir.path(),
        &second,
        &format!("{batch}metrics_listen: '127.0.0.1:0'\nmax_concurrency: 3\n"),
    );
    signal(&child, libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(20), || posts(&second) >= 2),
        "reports go to the new API after the reload: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    signal(&child, libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(30), || child
        .try_wait()
        .expect("wait")
        .is_some()));
    assert_eq!(child.wait().expect("status").code(), Some(0));
    let log = std::fs::read_to_string(&log_path).expect("log");
    let warning = log
        .lines()
        .find(|l| l.contains("take effect only after a restart"))
        .unwrap_or_else(|| panic!("restart-only settings named: {log}"));
    assert!(
        warning.contains("metrics_listen") && warning.contains("max_concurrency"),
        "{warning}"
    );
    assert!(!warning.contains("\"api\""), "api was applied: {warning}");
    assert!(log.contains("API endpoint changed by a reload."), "{log}");
}
