//! End-to-end tests of `luumen-agent once` against real OpenSSH sshd processes on loopback and a
//! real HTTP receiver. They run the real binary (build it first: `make test` does).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use luumen_integration::{
    closed_port, ensure_test_users, require_root, run_agent, Receiver, SshdConfig, SshdHarness,
    TestUser,
};
use serde_json::{json, Value};

const AGENT_TIMEOUT: Duration = Duration::from_secs(120);

struct Run {
    code: Option<i32>,
    stderr: String,
    results: Vec<Value>,
}

impl Run {
    fn result(&self, id: &str) -> &Value {
        self.results
            .iter()
            .find(|r| r["host"]["id"] == id)
            .unwrap_or_else(|| panic!("no result for host {id}; stderr:\n{}", self.stderr))
    }
}

fn start_sshd(addresses: usize) -> SshdHarness {
    require_root();
    ensure_test_users();
    SshdHarness::start(SshdConfig::with_addresses(addresses)).expect("sshd starts")
}

fn credentials(user: &TestUser) -> Value {
    match &user.password {
        Some(password) if !user.key_authorized => {
            json!({"username": user.name, "password": password, "sudo": user.sudo})
        }
        _ => {
            json!({"username": user.name, "private_key_file": user.private_key, "sudo": user.sudo})
        }
    }
}

fn host(id: &str, address: impl ToString, port: u16, credentials: Value) -> Value {
    json!({"id": id, "address": address.to_string(), "port": port, "protocol": "ssh", "credentials": credentials})
}

fn write_json(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).expect("json")).expect("write file");
    path
}

fn read_ndjson(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).expect("each NDJSON line is JSON"))
        .collect()
}

/// Runs `once` with an inventory file and an NDJSON output file.
fn once_with_inventory(hosts: Vec<Value>, extra_args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let inventory = write_json(dir.path(), "inventory.json", &json!({ "hosts": hosts }));
    let output = dir.path().join("out.ndjson");
    let state = dir.path().join("state");
    let mut args = vec![
        "once",
        "--inventory",
        inventory.to_str().expect("utf-8 path"),
        "--output",
        output.to_str().expect("utf-8 path"),
        "--state-dir",
        state.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra_args);
    let out = run_agent(&args, AGENT_TIMEOUT);
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        results: read_ndjson(&output),
    }
}

fn report_validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(luumen_schemas::REPORT_SCHEMA).expect("report schema is JSON");
    jsonschema::validator_for(&schema).expect("report schema compiles")
}

fn assert_valid(validator: &jsonschema::Validator, value: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "invalid against report.schema.json: {errors:#?}\n{value:#}"
    );
}

fn error_kinds(result: &Value) -> Vec<(String, String)> {
    result["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    (
                        e["property"].as_str().unwrap_or("-").to_owned(),
                        e["kind"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the parts of a collected Debian host that do not depend on privileges.
fn assert_collected_debian(result: &Value) {
    let status = result["status"].as_str().unwrap_or("");
    assert!(
        status == "ok" || status == "partial",
        "status {status}: {result:#}"
    );
    let os = &result["properties"]["os"];
    assert_eq!(os["family"], "linux", "{result:#}");
    assert_eq!(os["id"], "debian", "{result:#}");
    assert!(os["kernel_release"].as_str().is_some_and(|k| !k.is_empty()));
    let packages = result["properties"]["packages"]
        .as_array()
        .expect("packages collected");
    assert!(
        packages
            .iter()
            .any(|p| p["name"] == "openssh-server" && p["manager"] == "dpkg"),
        "openssh-server is installed on the test host"
    );
    assert!(
        result["properties"]["hardware"]["memory_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
}

#[test]
fn key_and_password_auth_collect_real_hosts() {
    let sshd = start_sshd(2);
    let [a, b] = [sshd.addresses()[0], sshd.addresses()[1]];
    let run = once_with_inventory(
        vec![
            host("key-host", a, sshd.port(), credentials(sshd.sudo_user())),
            host(
                "password-host",
                b,
                sshd.port(),
                credentials(sshd.pass_user()),
            ),
        ],
        &[],
    );
    assert_eq!(run.results.len(), 2, "{}", run.stderr);
    for id in ["key-host", "password-host"] {
        let result = run.result(id);
        assert_collected_debian(result);
        // Both users may sudo the privileged reads: root's crontab is readable.
        let cron = result["properties"]["cron"]
            .as_array()
            .expect("cron collected");
        assert!(
            cron.iter().any(|e| e["user"] == "root"
                && e["source"]
                    .as_str()
                    .is_some_and(|s| s.contains("crontabs/root"))),
            "root's crontab entries via sudo: {cron:#?}"
        );
        assert!(
            !error_kinds(result)
                .iter()
                .any(|(_, kind)| kind == "permission_denied"),
            "{result:#}"
        );
    }
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("2 hosts"), "{}", run.stderr);
    let log = sshd.log();
    assert!(log.contains("Accepted publickey for luumen-sudo"), "{log}");
    assert!(log.contains("Accepted password for luumen-pass"), "{log}");
}

#[test]
fn wrong_password_is_auth_failed_and_the_other_hosts_still_succeed() {
    let sshd = start_sshd(3);
    let addresses = sshd.addresses().to_vec();
    let port = sshd.port();
    let wrong = json!({"username": sshd.pass_user().name, "password": "not-the-password"});
    let run = once_with_inventory(
        vec![
            host("good-1", addresses[0], port, credentials(sshd.sudo_user())),
            host("wrong-password", addresses[1], port, wrong),
            host("good-2", addresses[2], port, credentials(sshd.pass_user())),
        ],
        &[],
    );
    let failed = run.result("wrong-password");
    assert_eq!(failed["status"], "auth_failed", "{failed:#}");
    assert_eq!(
        error_kinds(failed),
        [("-".to_owned(), "auth_failed".to_owned())]
    );
    let message = failed["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("wrong-password") && message.contains("luumen-pass"),
        "{message}"
    );
    assert!(
        !message.contains("not-the-password"),
        "the password leaked: {message}"
    );
    assert!(
        !run.stderr.contains("not-the-password"),
        "the password leaked into logs"
    );
    assert_collected_debian(run.result("good-1"));
    assert_collected_debian(run.result("good-2"));
    assert_eq!(
        run.code,
        Some(1),
        "a host was not collected: {}",
        run.stderr
    );
    assert!(run.stderr.contains("1 auth_failed"), "{}", run.stderr);
}

#[test]
fn closed_port_is_unreachable_within_the_connect_timeout() {
    let sshd = start_sshd(1);
    let address = sshd.address();
    let port = closed_port(address);
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(200);
    let config = dir.path().join("config.yaml");
    // The host list comes from --inventory; the config sets the timeouts and the API.
    std::fs::write(
        &config,
        format!(
            "api: {{ base_url: '{}', api_key: k }}\ntimeouts: {{ connect_seconds: 2, host_seconds: 10 }}\n",
            receiver.base_url()
        ),
    )
    .expect("write config");
    let started = Instant::now();
    let run = once_with_inventory(
        vec![
            host("closed", address, port, credentials(sshd.sudo_user())),
            host("open", address, sshd.port(), credentials(sshd.sudo_user())),
        ],
        &["--config", config.to_str().expect("utf-8")],
    );
    let closed = run.result("closed");
    assert_eq!(closed["status"], "unreachable", "{closed:#}");
    assert!(
        closed["duration_ms"].as_u64().unwrap_or(u64::MAX) <= 2_000,
        "{closed:#}"
    );
    let message = closed["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains(&format!("{address}:{port}")), "{message}");
    assert_collected_debian(run.result("open"));
    assert_eq!(run.code, Some(1));
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn user_without_sudo_gets_partial_with_permission_denied() {
    let sshd = start_sshd(1);
    let run = once_with_inventory(
        vec![host(
            "no-sudo",
            sshd.address(),
            sshd.port(),
            credentials(sshd.nosudo_user()),
        )],
        &[],
    );
    let result = run.result("no-sudo");
    assert_eq!(result["status"], "partial", "{result:#}");
    let kinds = error_kinds(result);
    assert!(
        kinds.contains(&("cron".to_owned(), "permission_denied".to_owned())),
        "root's crontab needs sudo: {kinds:?}"
    );
    assert_collected_debian(result);
    // Exit 0: the host was collected, in part.
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn ndjson_output_is_valid_against_the_report_schema() {
    let sshd = start_sshd(2);
    let [a, b] = [sshd.addresses()[0], sshd.addresses()[1]];
    let run = once_with_inventory(
        vec![
            host("ssh-ok", a, sshd.port(), credentials(sshd.sudo_user())),
            host(
                "ssh-nosudo",
                b,
                sshd.port(),
                credentials(sshd.nosudo_user()),
            ),
            host(
                "ssh-closed",
                a,
                closed_port(a),
                credentials(sshd.sudo_user()),
            ),
            json!({"id": "local", "protocol": "local"}),
        ],
        &[],
    );
    assert_eq!(run.results.len(), 4, "{}", run.stderr);
    let validator = report_validator();
    for result in &run.results {
        assert_valid(&validator, result);
    }
    // The schema is strict enough to refuse a broken result.
    let mut broken = run.results[0].clone();
    broken["status"] = json!("fine");
    assert!(!validator.is_valid(&broken));
}

#[test]
fn batches_reach_the_api_with_the_api_key() {
    let sshd = start_sshd(3);
    let receiver = Receiver::start(200);
    let hosts: Vec<Value> = sshd
        .addresses()
        .iter()
        .enumerate()
        .map(|(i, address)| host(&format!("web-{i}"), address, sshd.port(), Value::Null))
        .collect();
    let hosts: Vec<Value> = hosts
        .into_iter()
        .map(|mut h| {
            h.as_object_mut().expect("object").remove("credentials");
            h
        })
        .collect();
    receiver.serve_config(
        json!({
            "schedule": {"interval_seconds": 600},
            "default_credentials": credentials(sshd.sudo_user()),
            "hosts": hosts,
        })
        .to_string(),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "api: {{ base_url: '{}', api_key: test-agent-key-123 }}\nagent_id: test-agent\nbatch: {{ max_results: 2 }}\nstate_dir: '{}'\n",
            receiver.base_url(),
            dir.path().display()
        ),
    )
    .expect("write config");
    let out = run_agent(
        &["once", "--config", config.to_str().expect("utf-8")],
        AGENT_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let config_requests = receiver.requests_to("GET", "/config");
    assert_eq!(config_requests.len(), 1);
    assert_eq!(
        config_requests[0].header("api-key"),
        Some("test-agent-key-123")
    );
    let posts = receiver.requests_to("POST", "/reports");
    assert_eq!(
        posts.len(),
        2,
        "3 results with max_results 2 make 2 batches"
    );
    let validator = report_validator();
    let mut hosts_seen = Vec::new();
    let mut batch_ids = Vec::new();
    for post in &posts {
        assert_eq!(post.header("api-key"), Some("test-agent-key-123"));
        assert_eq!(post.header("content-type"), Some("application/json"));
        let batch = post.json().expect("batch is JSON");
        assert_valid(&validator, &batch);
        assert_eq!(batch["agent_id"], "test-agent");
        batch_ids.push(batch["batch_id"].as_str().unwrap_or("").to_owned());
        for result in batch["results"].as_array().expect("results") {
            assert_collected_debian(result);
            hosts_seen.push(result["host"]["id"].as_str().unwrap_or("").to_owned());
        }
    }
    hosts_seen.sort();
    assert_eq!(hosts_seen, ["web-0", "web-1", "web-2"]);
    assert_ne!(batch_ids[0], batch_ids[1]);
    assert!(
        !stderr.contains("test-agent-key-123"),
        "the API key leaked into logs"
    );
}

#[test]
fn api_down_keeps_the_results_in_the_spool_and_delivers_them_later_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(503);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "api: {{ base_url: '{}', api_key: k }}\nstate_dir: '{}'\n",
            receiver.base_url(),
            dir.path().join("state").display()
        ),
    )
    .expect("write config");
    let inventory = write_json(
        dir.path(),
        "inventory.json",
        &json!({"hosts": [{"id": "local", "protocol": "local"}]}),
    );
    let output = dir.path().join("out.ndjson");
    let once = || {
        run_agent(
            &[
                "once",
                "--config",
                config.to_str().expect("utf-8"),
                "--inventory",
                inventory.to_str().expect("utf-8"),
                "--output",
                output.to_str().expect("utf-8"),
            ],
            AGENT_TIMEOUT,
        )
    };
    let out = once();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("NOT delivered"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}/reports", receiver.base_url())),
        "{stderr}"
    );
    assert!(stderr.contains("503"), "{stderr}");
    // Nothing collected is lost: the NDJSON copy holds the result, the spool the batch.
    let first = read_ndjson(&output);
    assert_eq!(first.len(), 1);
    assert!(dir.path().join("state/spool").is_dir());

    // The API is back: the next run sends the spooled batch first, then its own.
    receiver.set_status(200);
    let out = once();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let delivered: Vec<Value> = receiver
        .requests_to("POST", "/reports")
        .into_iter()
        .filter(|r| r.status == 200)
        .map(|r| r.json().expect("batch JSON"))
        .collect();
    assert_eq!(delivered.len(), 2, "the old batch and the new one");
    assert_eq!(
        delivered[0]["results"][0]["collected_at"],
        first[0]["collected_at"]
    );
    assert!(
        delivered[0]["results"][0]["collected_at"].as_str()
            < delivered[1]["results"][0]["collected_at"].as_str(),
        "order kept"
    );
    // A third run sends only its own batch: the delivered ones left the spool.
    let out = once();
    assert_eq!(out.status.code(), Some(0));
    let successful = receiver
        .requests_to("POST", "/reports")
        .into_iter()
        .filter(|r| r.status == 200)
        .count();
    assert_eq!(successful, 3);
}

#[test]
fn a_rejected_api_key_is_a_clear_error_naming_the_api() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(401);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "api: {{ base_url: '{}', api_key: wrong-key }}\n",
            receiver.base_url()
        ),
    )
    .expect("write config");
    let out = run_agent(
        &["once", "--config", config.to_str().expect("utf-8")],
        AGENT_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}/config", receiver.base_url())),
        "{stderr}"
    );
    assert!(stderr.contains("API key was rejected"), "{stderr}");
    assert!(!stderr.contains("wrong-key"), "{stderr}");
}

#[test]
fn the_local_protocol_collects_this_machine() {
    let run = once_with_inventory(
        vec![json!({"id": "patch-server", "protocol": "local"})],
        &[],
    );
    assert_collected_debian(run.result("patch-server"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn malformed_inventory_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "hosts:\n  - { id: a, protocol: ssh, adress: 10.0.0.1 }\n",
    )
    .expect("write");
    let out = run_agent(
        &[
            "validate-config",
            "--inventory",
            path.to_str().expect("utf-8"),
        ],
        AGENT_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("adress") && stderr.contains("hosts[0]"),
        "{stderr}"
    );
}

#[test]
fn run_collects_on_the_schedule_and_stops_on_sigint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let inventory = write_json(
        dir.path(),
        "inventory.json",
        &json!({"schedule": {"interval_seconds": 1}, "hosts": [{"id": "local", "protocol": "local"}]}),
    );
    let output = dir.path().join("out.ndjson");
    let mut child = std::process::Command::new(luumen_integration::agent_bin())
        .args(["run", "--inventory", inventory.to_str().expect("utf-8")])
        .args(["--output", output.to_str().expect("utf-8")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("agent starts");
    // Wait for three cycles (bounded), then ask it to stop like Ctrl-C does.
    let started = Instant::now();
    while read_ndjson(&output).len() < 3 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let results = read_ndjson(&output);
    assert!(
        results.len() >= 3,
        "three cycles ran: {} results",
        results.len()
    );
    let times: Vec<&str> = results
        .iter()
        .filter_map(|r| r["collected_at"].as_str())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "one result per cycle, in order: {times:?}"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exits 0 on SIGINT");
}

#[test]
fn private_key_text_and_encrypted_key_files_authenticate() {
    let sshd = start_sshd(2);
    let user = sshd.sudo_user();
    let key_text = std::fs::read_to_string(&user.private_key).expect("read test key");
    let (encrypted, passphrase) = sshd.encrypted_key();
    let run = once_with_inventory(
        vec![
            host(
                "key-text",
                sshd.addresses()[0],
                sshd.port(),
                json!({"username": user.name, "private_key": key_text}),
            ),
            host(
                "encrypted-key",
                sshd.addresses()[1],
                sshd.port(),
                json!({"username": user.name, "private_key_file": encrypted, "passphrase": passphrase}),
            ),
        ],
        &[],
    );
    assert_collected_debian(run.result("key-text"));
    assert_collected_debian(run.result("encrypted-key"));
    assert!(
        !run.stderr.contains(passphrase),
        "the passphrase leaked into logs"
    );
    assert!(
        !run.stderr.contains("PRIVATE KEY"),
        "key text leaked into logs"
    );
}

/// `ssh-keygen -lf` of a public key file: the fingerprint as OpenSSH prints it.
fn keygen_fingerprint(public_key: &Path) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key)
        .output()
        .expect("ssh-keygen runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_owned()
}

/// Runs `once` with an explicit state dir (so pins survive between runs) and a config.
fn once_with_state(inventory: &Value, dir: &Path, config: Option<&str>) -> Run {
    once_with_env(inventory, dir, config, &[])
}

/// [`once_with_state`] with extra environment variables for the agent.
fn once_with_env(inventory: &Value, dir: &Path, config: Option<&str>, env: &[(&str, &str)]) -> Run {
    let inventory = write_json(dir, "inventory.json", inventory);
    let output = dir.join("out.ndjson");
    let _ = std::fs::remove_file(&output);
    let state = dir.join("state");
    let mut args = vec![
        "once".to_owned(),
        "--inventory".to_owned(),
        inventory.display().to_string(),
        "--output".to_owned(),
        output.display().to_string(),
        "--state-dir".to_owned(),
        state.display().to_string(),
    ];
    if let Some(config) = config {
        let path = dir.join("config.yaml");
        std::fs::write(&path, config).expect("write config");
        args.extend(["--config".to_owned(), path.display().to_string()]);
    }
    let mut command = std::process::Command::new(luumen_integration::agent_bin());
    command.args(&args).stdin(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let out = luumen_integration::run_command(command, AGENT_TIMEOUT);
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        results: read_ndjson(&output),
    }
}

#[test]
fn accept_new_pins_the_first_key_and_refuses_a_changed_one_before_authenticating() {
    let sshd = start_sshd(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let inventory = json!({"hosts": [host("pinned", sshd.address(), sshd.port(), credentials(sshd.sudo_user()))]});
    let old_public = sshd.dir().join("ssh_host_ed25519_key.pub");
    let old_fingerprint = keygen_fingerprint(&old_public);

    let first = once_with_state(&inventory, dir.path(), None);
    assert_collected_debian(first.result("pinned"));
    let pins = std::fs::read_to_string(dir.path().join("state/known_hosts")).expect("pin file");
    assert!(
        pins.contains(&format!("[{}]:{}", sshd.address(), sshd.port())),
        "{pins}"
    );
    assert!(first.stderr.contains("Host key pinned") && first.stderr.contains(&old_fingerprint));

    // Same pin, same key: collected again.
    assert_collected_debian(once_with_state(&inventory, dir.path(), None).result("pinned"));

    // Swap the host key and make sshd re-read it (SIGHUP re-executes sshd).
    let key = sshd.dir().join("ssh_host_ed25519_key");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(&old_public);
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let new_fingerprint = keygen_fingerprint(&old_public);
    assert_ne!(new_fingerprint, old_fingerprint);
    for pid in sshd.pids() {
        // SAFETY: signalling the harness' own sshd.
        unsafe { libc::kill(i32::try_from(pid).expect("pid"), libc::SIGHUP) };
    }
    std::thread::sleep(Duration::from_millis(500));
    let log_before = sshd.log().len();

    let swapped = once_with_state(&inventory, dir.path(), None);
    let result = swapped.result("pinned");
    assert_eq!(result["status"], "host_key_mismatch", "{result:#}");
    let message = result["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&new_fingerprint) && message.contains(&old_fingerprint),
        "both fingerprints, as OpenSSH prints them: {message}"
    );
    assert_eq!(swapped.code, Some(1));
    let log = sshd.log();
    let after = &log[log_before.min(log.len())..];
    assert!(
        after.contains("Connection from"),
        "the agent did connect: {after}"
    );
    for attempt in [
        "Accepted",
        "Failed",
        "authenticating user",
        "Invalid user",
        "Postponed",
    ] {
        assert!(
            !after.contains(attempt),
            "an authentication attempt after the swap: {after}"
        );
    }
}

#[test]
fn strict_needs_the_key_in_known_hosts_files_hashed_or_not() {
    let sshd = start_sshd(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let inventory = json!({"hosts": [host("strict", sshd.address(), sshd.port(), credentials(sshd.sudo_user()))]});
    let receiver = Receiver::start(200);
    let config = |known_hosts: &Path| {
        format!(
            "api: {{ base_url: '{}', api_key: k }}\nhost_key_policy: strict\nknown_hosts_files: ['{}']\n",
            receiver.base_url(),
            known_hosts.display()
        )
    };

    let empty = dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").expect("write");
    let unknown = once_with_state(&inventory, dir.path(), Some(&config(&empty)));
    let result = unknown.result("strict");
    assert_eq!(result["status"], "host_key_mismatch", "{result:#}");
    assert_eq!(
        error_kinds(result),
        [("-".to_owned(), "host_key_unknown".to_owned())]
    );
    assert!(
        !dir.path().join("state/known_hosts").exists(),
        "strict never pins"
    );
    assert!(
        !sshd.log().contains("Accepted"),
        "no authentication without a known key"
    );

    // The harness' known_hosts ([addr]:port entries), then the same file hashed by ssh-keygen -H.
    let hashed = dir.path().join("hashed_known_hosts");
    std::fs::copy(sshd.known_hosts(), &hashed).expect("copy");
    let status = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&hashed)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("ssh-keygen -H");
    assert!(status.success());
    assert!(std::fs::read_to_string(&hashed)
        .expect("read")
        .starts_with("|1|"));
    for known_hosts in [sshd.known_hosts().to_path_buf(), hashed] {
        let run = once_with_state(&inventory, dir.path(), Some(&config(&known_hosts)));
        assert_collected_debian(run.result("strict"));
    }
}

/// Strings that would do harm if any host-list field were pasted into a shell line.
const HOSTILE: &[&str] = &[
    "'",
    "\"; touch {canary}; echo \"",
    "$(touch {canary})",
    "`touch {canary}`",
    "x; touch {canary}",
    "a\ntouch {canary}",
    "|| touch {canary} #",
    "ünï-cødé-☃-\u{202e}",
    "-oProxyCommand=touch {canary}",
];

#[test]
fn hostile_host_list_fields_never_reach_a_shell() {
    let sshd =
        SshdHarness::start(SshdConfig::with_addresses(1).extra("LogLevel DEBUG3")).expect("sshd");
    let dir = tempfile::tempdir().expect("temp dir");
    let canary = dir.path().join("pwned");
    let canary_text = canary.display().to_string();
    let user = sshd.sudo_user();
    let mut hosts = Vec::new();
    for (i, pattern) in HOSTILE.iter().enumerate() {
        let hostile = pattern.replace("{canary}", &canary_text);
        // A hostile id with valid credentials: collected, the id only labels the result.
        hosts.push(host(
            &format!("{hostile}-{i}"),
            sshd.address(),
            sshd.port(),
            credentials(user),
        ));
        // A hostile user name: refused by sshd, never executed.
        hosts.push(host(
            &format!("user-{i}"),
            sshd.address(),
            sshd.port(),
            json!({"username": hostile, "private_key_file": user.private_key}),
        ));
        // A hostile address: never resolves, never reaches a shell.
        hosts.push(host(
            &format!("address-{i}"),
            hostile,
            22,
            credentials(user),
        ));
    }
    let run = once_with_inventory(hosts, &[]);
    assert_eq!(run.results.len(), HOSTILE.len() * 3, "{}", run.stderr);
    for (i, pattern) in HOSTILE.iter().enumerate() {
        let id = format!("{}-{i}", pattern.replace("{canary}", &canary_text));
        assert_collected_debian(run.result(&id));
        let user_result = run.result(&format!("user-{i}"));
        assert_eq!(user_result["status"], "auth_failed", "{user_result:#}");
        let address_result = run.result(&format!("address-{i}"));
        assert_eq!(
            address_result["status"], "unreachable",
            "{address_result:#}"
        );
    }
    assert!(!canary.exists(), "a hostile string was executed");
    let log = sshd.log();
    // sshd at DEBUG3 logs every exec'd command line: "mm_audit_run_command entering command …".
    let commands: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("mm_audit_run_command entering command"))
        .collect();
    assert_eq!(
        commands.len(),
        HOSTILE.len(),
        "one exec per collected host: {log}"
    );
    for line in commands {
        assert!(
            line.trim_end().ends_with("entering command /bin/sh -s"),
            "only the fixed command runs: {line}"
        );
    }
}

#[test]
fn no_secret_appears_in_logs_or_output_even_at_trace_level() {
    let sshd = start_sshd(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(200);
    let api_key = "api-key-marker-7f3a9c";
    let password = luumen_integration::users::pass_user_password();
    let (encrypted, passphrase) = sshd.encrypted_key();
    // A group-readable copy of the key: the agent must warn about it.
    let loose_key = dir.path().join("loose_key");
    std::fs::copy(encrypted, &loose_key).expect("copy key");
    std::fs::set_permissions(
        &loose_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .expect("chmod");
    let inventory = json!({"hosts": [
        host("password", sshd.addresses()[0], sshd.port(), credentials(sshd.pass_user())),
        host("passphrase", sshd.addresses()[1], sshd.port(),
             json!({"username": sshd.sudo_user().name, "private_key_file": loose_key, "passphrase": passphrase})),
        host("wrong-password", sshd.addresses()[1], sshd.port(),
             json!({"username": sshd.pass_user().name, "password": format!("{password}-wrong")})),
    ]});
    let inventory = write_json(dir.path(), "inventory.json", &inventory);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "api: {{ base_url: '{}', api_key: {api_key} }}\nstate_dir: '{}'\n",
            receiver.base_url(),
            dir.path().join("state").display()
        ),
    )
    .expect("write config");
    let output = dir.path().join("out.ndjson");
    let mut command = std::process::Command::new(luumen_integration::agent_bin());
    command
        .args(["once", "--log-level", "trace"])
        .args(["--config", config.to_str().expect("utf-8")])
        .args(["--inventory", inventory.to_str().expect("utf-8")])
        .args(["--output", output.to_str().expect("utf-8")])
        .env("RUST_LOG", "trace");
    let out = luumen_integration::run_command(command, AGENT_TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Batch sealed."),
        "debug/trace logging is on: {stderr}"
    );
    assert!(
        stderr.contains("readable by group or others"),
        "loose key warned about"
    );
    let results = read_ndjson(&output);
    assert_eq!(results.len(), 3);
    assert_eq!(receiver.requests_to("POST", "/reports").len(), 1);

    let mut haystacks = vec![
        ("stderr".to_owned(), out.stderr.clone()),
        ("stdout".to_owned(), out.stdout.clone()),
        ("ndjson".to_owned(), std::fs::read(&output).expect("ndjson")),
    ];
    // Every file the agent wrote under its state dir: pins and the spool's segments.
    let mut pending = vec![dir.path().join("state")];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                pending.push(entry.expect("entry").path());
            }
        } else {
            haystacks.push((
                path.display().to_string(),
                std::fs::read(&path).expect("read"),
            ));
        }
    }
    assert!(
        haystacks.iter().any(|(name, _)| name.ends_with(".seg")),
        "the spool was written and is searched too"
    );
    for (name, bytes) in &haystacks {
        for secret in [api_key, password.as_str(), passphrase] {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "secret {secret:?} found in {name}");
        }
    }
}

#[test]
fn doctor_names_each_missing_prerequisite_with_a_remedy() {
    let sshd = start_sshd(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let [a, b] = [sshd.addresses()[0], sshd.addresses()[1]];
    let wrong = json!({"username": sshd.pass_user().name, "password": "not-it"});
    let inventory = write_json(
        dir.path(),
        "inventory.json",
        &json!({"hosts": [
            host("good", a, sshd.port(), credentials(sshd.sudo_user())),
            // The agent would use sudo, but the host grants this user nothing.
            host("no-sudo", b, sshd.port(), json!({"username": sshd.nosudo_user().name, "private_key_file": sshd.nosudo_user().private_key, "sudo": true})),
            host("wrong-password", a, sshd.port(), wrong),
            host("closed", b, closed_port(b), credentials(sshd.sudo_user())),
        ]}),
    );
    let state = dir.path().join("state");
    let doctor = |extra: &[&str]| {
        let mut args = vec![
            "doctor",
            "--inventory",
            inventory.to_str().expect("utf-8"),
            "--state-dir",
            state.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        run_agent(&args, AGENT_TIMEOUT)
    };
    let out = doctor(&["--format", "json"]);
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
        "host key",
        "authentication",
        "sudo dmidecode",
        "sudo root-crontab",
    ] {
        assert_eq!(find("good", check)["ok"], true, "{check}");
    }
    let denied = find("no-sudo", "sudo root-crontab");
    assert_eq!(denied["ok"], false);
    assert_eq!(
        denied["remedy"],
        "add to /etc/sudoers.d/luumen: luumen-nosudo ALL=(root) NOPASSWD: /usr/bin/cat /var/spool/cron/crontabs/root"
    );
    assert_eq!(find("no-sudo", "sudo dmidecode")["ok"], false);
    assert_eq!(
        find("no-sudo", "sudo getenforce")["ok"],
        true,
        "not installed here: not needed"
    );
    assert_eq!(find("wrong-password", "authentication")["ok"], false);
    assert_eq!(find("wrong-password", "tcp")["ok"], true);
    assert_eq!(find("closed", "tcp")["ok"], false);
    assert!(
        !state.join("known_hosts").exists(),
        "doctor pins no host key"
    );

    let table = doctor(&["--host", "good"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(table.status.code(), Some(0), "{text}");
    assert!(text.contains("✓") && !text.contains("✗"), "{text}");
}

#[test]
fn credentials_come_from_vault_per_cycle_and_a_missing_secret_fails_only_its_host() {
    let sshd = start_sshd(2);
    let bao = luumen_integration::openbao::OpenBao::start();
    let password = luumen_integration::users::pass_user_password();
    bao.put(
        "hosts/pass",
        &[
            ("password", &password),
            ("username", &sshd.pass_user().name),
        ],
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(200);
    let config = format!(
        "api: {{ base_url: '{}', api_key: k }}\nvault: {{ address: '{}', mount: secret }}\n",
        receiver.base_url(),
        bao.address
    );
    let inventory = json!({"hosts": [
        host("from-vault", sshd.addresses()[0], sshd.port(),
             json!({"username": "vault:hosts/pass#username", "password": "vault:hosts/pass#password"})),
        host("missing-secret", sshd.addresses()[1], sshd.port(),
             json!({"username": sshd.pass_user().name, "password": "vault:hosts/nope#password"})),
        host("plain", sshd.addresses()[1], sshd.port(), credentials(sshd.sudo_user())),
    ]});
    // The token reaches the agent through its environment, as VAULT_TOKEN does in production.
    let run = once_with_env(
        &inventory,
        dir.path(),
        Some(&config),
        &[("VAULT_TOKEN", &bao.root_token), ("RUST_LOG", "trace")],
    );
    assert_collected_debian(run.result("from-vault"));
    assert_collected_debian(run.result("plain"));
    let missing = run.result("missing-secret");
    assert_eq!(missing["status"], "error", "{missing:#}");
    assert_eq!(
        error_kinds(missing),
        [("-".to_owned(), "credentials".to_owned())]
    );
    let message = missing["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("hosts/nope") && message.contains("404"),
        "{message}"
    );
    for secret in [password.as_str(), bao.root_token.as_str()] {
        assert!(!run.stderr.contains(secret), "a secret leaked into the log");
    }
    assert!(sshd.log().contains("Accepted password for luumen-pass"));
}

#[test]
fn a_batch_the_api_refuses_for_good_is_quarantined_not_retried_forever() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(400);
    let config = format!(
        "api: {{ base_url: '{}', api_key: k }}\n",
        receiver.base_url()
    );
    let inventory = json!({"hosts": [{"id": "local", "protocol": "local"}]});
    let refused = once_with_state(&inventory, dir.path(), Some(&config));
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(refused.stderr.contains("quarantined"), "{}", refused.stderr);
    let quarantine = dir.path().join("state/spool/quarantine");
    let files = std::fs::read_dir(&quarantine)
        .expect("quarantine dir")
        .count();
    assert!(
        files >= 1,
        "the refused batch is kept aside with its reason"
    );

    receiver.set_status(200);
    let next = once_with_state(&inventory, dir.path(), Some(&config));
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    let posts = receiver.requests_to("POST", "/reports");
    assert_eq!(posts.len(), 2, "the quarantined batch is not sent again");
}

#[test]
fn ssh_rsa_sha1_host_keys_are_refused_unless_allowed() {
    require_root();
    ensure_test_users();
    let keys = tempfile::tempdir().expect("temp dir");
    let rsa = keys.path().join("ssh_host_rsa_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    // A server that only signs with the legacy SHA-1 ssh-rsa algorithm.
    let sshd = SshdHarness::start(
        SshdConfig::with_addresses(1)
            .extra(format!("HostKey {}", rsa.display()))
            .extra("HostKeyAlgorithms ssh-rsa"),
    )
    .expect("sshd");
    let dir = tempfile::tempdir().expect("temp dir");
    let inventory = json!({"hosts": [host("legacy", sshd.address(), sshd.port(), credentials(sshd.sudo_user()))]});
    let receiver = Receiver::start(200);
    let config = |allow: bool| {
        format!(
            "api: {{ base_url: '{}', api_key: k }}\nallow_ssh_rsa_sha1: {allow}\n",
            receiver.base_url()
        )
    };
    let refused = once_with_state(&inventory, dir.path(), Some(&config(false)));
    let result = refused.result("legacy");
    assert_eq!(result["status"], "error", "{result:#}");
    let message = result["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("handshake"), "{message}");
    assert!(
        !sshd.log().contains("Accepted"),
        "no authentication on a refused key exchange"
    );
    // With allow_ssh_rsa_sha1 the agent offers ssh-rsa, but the libssh2 + OpenSSL 3 build here
    // still cannot complete a SHA-1 RSA host key exchange (OpenSSH's own client can), so only
    // that the setting is accepted is checked; see the closing note of the trust issue.
    let allowed = once_with_state(&inventory, dir.path(), Some(&config(true)));
    assert_eq!(allowed.results.len(), 1, "{}", allowed.stderr);
}

#[test]
fn doctor_checks_the_api_key_and_vault() {
    let sshd = start_sshd(1);
    let bao = luumen_integration::openbao::OpenBao::start();
    let receiver = Receiver::start(200);
    receiver.serve_config(
        json!({"hosts": [host("good", sshd.address(), sshd.port(), credentials(sshd.sudo_user()))]})
            .to_string(),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.yaml");
    let write_config = |key: &str| {
        std::fs::write(
            &config,
            format!(
                "api: {{ base_url: '{}', api_key: {key} }}\nvault: {{ address: '{}' }}\nstate_dir: '{}'\n",
                receiver.base_url(),
                bao.address,
                dir.path().display()
            ),
        )
        .expect("write config");
    };
    write_config("k");
    let doctor = |token: &str| {
        let mut command = std::process::Command::new(luumen_integration::agent_bin());
        command
            .args([
                "doctor",
                "--format",
                "json",
                "--config",
                config.to_str().expect("utf-8"),
            ])
            .env("VAULT_TOKEN", token);
        let out = luumen_integration::run_command(command, AGENT_TIMEOUT);
        let checks: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON checks");
        (out.status.code(), checks)
    };
    let ok = |checks: &[Value], check: &str| {
        checks
            .iter()
            .find(|c| c["host"] == "-" && c["check"] == check)
            .unwrap_or_else(|| panic!("no {check} check: {checks:#?}"))["ok"]
            .as_bool()
    };
    let (code, checks) = doctor(&bao.root_token);
    assert_eq!(code, Some(0), "{checks:#?}");
    assert_eq!(ok(&checks, "api"), Some(true));
    assert_eq!(ok(&checks, "vault"), Some(true));
    assert!(checks
        .iter()
        .any(|c| c["host"] == "good" && c["check"] == "authentication" && c["ok"] == true));

    let (code, checks) = doctor("not-a-token");
    assert_eq!(code, Some(1));
    assert_eq!(ok(&checks, "vault"), Some(false));

    receiver.set_status(401);
    receiver.serve_config(String::new());
    let (code, checks) = doctor(&bao.root_token);
    assert_eq!(code, Some(1));
    assert_eq!(ok(&checks, "api"), Some(false), "{checks:#?}");
}

/// The doctor resolves `vault:` references as a collection does: a host whose secret is in
/// Vault logs in; a missing secret, or a reference without a vault block, is a failed
/// `credentials` check and the host is never contacted (the literal reference is never tried as
/// a password).
#[test]
fn doctor_resolves_vault_references_and_never_sends_them() {
    let sshd = start_sshd(1);
    let bao = luumen_integration::openbao::OpenBao::start();
    let password = luumen_integration::users::pass_user_password();
    let user = sshd.pass_user().name.clone();
    bao.put(
        "hosts/pass",
        &[("password", &password), ("username", &user)],
    );
    let receiver = Receiver::start(200);
    receiver.serve_config(
        json!({"hosts": [
            host("from-vault", sshd.address(), sshd.port(),
                 json!({"username": "vault:hosts/pass#username", "password": "vault:hosts/pass#password"})),
            host("missing-secret", sshd.address(), sshd.port(),
                 json!({"username": user, "password": "vault:hosts/nope#password"})),
        ]})
        .to_string(),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.yaml");
    let doctor = |vault: bool| {
        let vault = if vault {
            format!("vault: {{ address: '{}', mount: secret }}\n", bao.address)
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            format!(
                "api: {{ base_url: '{}', api_key: k }}\n{vault}state_dir: '{}'\n",
                receiver.base_url(),
                dir.path().display()
            ),
        )
        .expect("write config");
        let mut command = std::process::Command::new(luumen_integration::agent_bin());
        command
            .args(["doctor", "--format", "json", "--config"])
            .arg(&config)
            .env("VAULT_TOKEN", &bao.root_token);
        let out = luumen_integration::run_command(command, AGENT_TIMEOUT);
        let checks: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON checks");
        for secret in [password.as_str(), bao.root_token.as_str()] {
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains(secret)
                    && !String::from_utf8_lossy(&out.stderr).contains(secret),
                "a secret leaked"
            );
        }
        checks
    };
    let of = |checks: &[Value], host: &str| -> Vec<(String, bool)> {
        checks
            .iter()
            .filter(|c| c["host"] == host)
            .map(|c| {
                (
                    c["check"].as_str().unwrap_or("").to_owned(),
                    c["ok"] == true,
                )
            })
            .collect()
    };

    let checks = doctor(true);
    let from_vault = of(&checks, "from-vault");
    assert!(
        from_vault.contains(&("authentication".to_owned(), true)),
        "{checks:#?}"
    );
    assert_eq!(
        of(&checks, "missing-secret"),
        [("credentials".to_owned(), false)],
        "only the credentials check, no connection: {checks:#?}"
    );
    let missing = checks
        .iter()
        .find(|c| c["host"] == "missing-secret")
        .expect("missing-secret check");
    let detail = missing["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("hosts/nope") && detail.contains("404"),
        "{detail}"
    );

    // No vault block: both hosts fail their credentials check without being contacted.
    let checks = doctor(false);
    for id in ["from-vault", "missing-secret"] {
        assert_eq!(
            of(&checks, id),
            [("credentials".to_owned(), false)],
            "{checks:#?}"
        );
    }
    let log = sshd.log();
    assert_eq!(
        log.matches("Accepted password for").count(),
        1,
        "only the resolved login reaches sshd: {log}"
    );
    assert!(
        !log.contains("Failed password") && !log.contains("vault:"),
        "a reference was tried as a password: {log}"
    );
}

/// Every kind of client key the agent may be given logs in against a real sshd: ECDSA (signed
/// in Rust), RSA in OpenSSH and PEM formats (signed by libssh2), encrypted ones with their
/// passphrase; a wrong passphrase is a credentials error naming the key file, not a crash.
#[test]
fn ecdsa_and_rsa_client_keys_in_every_format_authenticate() {
    let sshd = start_sshd(1);
    let user = sshd.sudo_user();
    let dir = tempfile::tempdir().expect("temp dir");
    let keygen = |name: &str, args: &[&str], passphrase: &str| -> std::path::PathBuf {
        let path = dir.path().join(name);
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-C", name, "-N", passphrase, "-f"])
            .arg(&path)
            .args(args)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success(), "ssh-keygen {args:?}");
        path
    };
    let keys = [
        (
            "ecdsa-256",
            keygen("ecdsa-256", &["-t", "ecdsa", "-b", "256"], ""),
            "",
        ),
        (
            "ecdsa-384",
            keygen("ecdsa-384", &["-t", "ecdsa", "-b", "384"], ""),
            "",
        ),
        (
            "ecdsa-521-enc",
            keygen("ecdsa-521-enc", &["-t", "ecdsa", "-b", "521"], "pw-ecdsa"),
            "pw-ecdsa",
        ),
        ("rsa", keygen("rsa", &["-t", "rsa", "-b", "2048"], ""), ""),
        (
            "rsa-enc",
            keygen("rsa-enc", &["-t", "rsa", "-b", "2048"], "pw-rsa"),
            "pw-rsa",
        ),
        (
            "rsa-pem",
            keygen("rsa-pem", &["-t", "rsa", "-b", "2048", "-m", "PEM"], ""),
            "",
        ),
    ];
    // Authorize every new key for the test user (the harness's own authorized_keys file).
    let authorized = sshd.dir().join("authorized_keys").join(&user.name);
    let mut lines = std::fs::read_to_string(&authorized).expect("authorized_keys");
    for (_, path, _) in &keys {
        let public = std::fs::read_to_string(path.with_extension("pub"))
            .or_else(|_| std::fs::read_to_string(format!("{}.pub", path.display())))
            .expect("public key");
        lines.push_str(public.trim());
        lines.push('\n');
    }
    std::fs::write(&authorized, lines).expect("authorize keys");
    let mut hosts: Vec<Value> = keys
        .iter()
        .map(|(id, path, passphrase)| {
            let mut credentials =
                json!({"username": user.name, "private_key_file": path, "sudo": false});
            if !passphrase.is_empty() {
                credentials["passphrase"] = json!(passphrase);
            }
            host(id, sshd.address(), sshd.port(), credentials)
        })
        .collect();
    hosts.push(host(
        "wrong-passphrase",
        sshd.address(),
        sshd.port(),
        json!({"username": user.name, "private_key_file": keys[2].1, "passphrase": "not-it", "sudo": false}),
    ));
    let run = once_with_inventory(hosts, &[]);
    for (id, _, _) in &keys {
        let result = run
            .results
            .iter()
            .find(|r| r["host"]["id"] == *id)
            .unwrap_or_else(|| panic!("no result for {id}: {}", run.stderr));
        assert!(
            result["status"] == "ok" || result["status"] == "partial",
            "{id}: {result:#}\n{}",
            run.stderr
        );
    }
    let wrong = run
        .results
        .iter()
        .find(|r| r["host"]["id"] == "wrong-passphrase")
        .expect("result");
    assert_eq!(wrong["status"], "error", "{wrong:#}");
    assert_eq!(wrong["errors"][0]["kind"], "credentials", "{wrong:#}");
    assert!(!run.stderr.contains("pw-ecdsa") && !run.stderr.contains("pw-rsa"));
}
