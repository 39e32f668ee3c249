//! The whole system with the real binaries: luumen-api on SQLite, luumen-agent, and a real sshd.
//! Hosts and credentials are added through the admin API; the agent pulls its config from the
//! API and reports to it.

use std::path::Path;
use std::time::Duration;

use luumen_integration::api_server::ApiServer;
use luumen_integration::{ensure_test_users, require_root, run_agent, SshdConfig, SshdHarness};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(120);

fn admin(server: &ApiServer) -> impl Fn(reqwest::Method, &str, Option<Value>) -> (u16, Value) + '_ {
    let client = reqwest::blocking::Client::new();
    move |method, path, body| {
        let mut request = client
            .request(method, format!("{}{path}", server.base_url))
            .header("api-key", &server.admin_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("API answers");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }
}

fn agent_once(dir: &Path, base_url: &str, key: &str) -> std::process::Output {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "api: {{ base_url: '{base_url}', api_key: '{key}' }}\nstate_dir: '{}'\n",
            dir.join("agent-state").display()
        ),
    )
    .expect("write config");
    run_agent(
        &["once", "--config", config.to_str().expect("utf-8")],
        TIMEOUT,
    )
}

fn files_contain(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                pending.push(entry.expect("entry").path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn hosts_and_credentials_added_through_the_api_are_collected_over_ssh() {
    require_root();
    ensure_test_users();
    let sshd = SshdHarness::start(SshdConfig::with_addresses(1)).expect("sshd");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("api");
    let server = ApiServer::init_and_serve(&data);
    let call = admin(&server);
    let user = sshd.sudo_user();
    let key_text = std::fs::read_to_string(&user.private_key).expect("read test key");
    let password = luumen_integration::users::pass_user_password();

    let (status, _) = call(
        reqwest::Method::POST,
        "/credentials",
        Some(
            json!({"id": "sudo-key", "username": user.name, "private_key": key_text, "sudo": true, "scope": "workspace"}),
        ),
    );
    assert_eq!(status, 201, "create the key credential");
    let (status, _) = call(
        reqwest::Method::POST,
        "/credentials",
        Some(
            json!({"id": "pass", "username": sshd.pass_user().name, "password": password, "scope": "workspace"}),
        ),
    );
    assert_eq!(status, 201);
    for (id, credential) in [("ssh-key", "sudo-key"), ("ssh-password", "pass")] {
        let (status, body) = call(
            reqwest::Method::POST,
            "/hosts",
            Some(
                json!({"id": id, "address": sshd.address().to_string(), "port": sshd.port(), "protocol": "ssh", "groups": ["web"], "credential_id": credential}),
            ),
        );
        assert_eq!(status, 201, "{body}");
    }

    let out = agent_once(dir.path(), &server.base_url, &server.agent_key);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    for id in ["ssh-key", "ssh-password"] {
        let (status, host) = call(reqwest::Method::GET, &format!("/hosts/{id}"), None);
        assert_eq!(status, 200);
        assert!(
            host["status"] == "ok" || host["status"] == "partial",
            "{host:#}"
        );
        assert_eq!(host["properties"]["os"]["id"], "debian", "{host:#}");
        assert_eq!(host["stale"], false);
        assert!(host["last_seen"].is_string());
    }
    let (_, software) = call(reqwest::Method::GET, "/software/openssh-server/hosts", None);
    assert!(software.to_string().contains("ssh-key"), "{software}");

    // doctor against the real API: the key is accepted, both hosts pass every check.
    let config = dir.path().join("config.yaml");
    let doctor = run_agent(
        &[
            "doctor",
            "--format",
            "json",
            "--config",
            config.to_str().expect("utf-8"),
        ],
        TIMEOUT,
    );
    let checks: Vec<Value> = serde_json::from_slice(&doctor.stdout).expect("doctor JSON");
    assert_eq!(doctor.status.code(), Some(0), "{checks:#?}");
    assert!(
        checks
            .iter()
            .any(|c| c["check"] == "api" && c["ok"] == true),
        "{checks:#?}"
    );
    assert!(checks
        .iter()
        .any(|c| c["host"] == "ssh-key" && c["check"] == "sudo root-crontab" && c["ok"] == true));

    // The data dir never holds a plaintext secret.
    for secret in [
        key_text.trim().lines().nth(1).expect("key body line"),
        password.as_str(),
    ] {
        assert_eq!(
            files_contain(&data, secret.as_bytes()),
            Vec::<String>::new(),
            "plaintext in the data dir"
        );
    }

    // Restart the API on the same data dir: everything is still there.
    drop(call);
    drop(server);
    let server = ApiServer::serve(&data);
    let client = reqwest::blocking::Client::new();
    let response = client
        .get(format!("{}/hosts/ssh-key", server.base_url))
        .header("api-key", call_key(&data))
        .send()
        .expect("API answers");
    assert_eq!(response.status().as_u16(), 200);

    // A wrong agent key: 401, and the agent says which API rejected it.
    let out = agent_once(dir.path(), &server.base_url, "not-a-key");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}/config", server.base_url)) && stderr.contains("rejected"),
        "{stderr}"
    );
}

/// A fresh admin key for a restarted server (keys are stored hashed; `create-key` adds one).
fn call_key(data: &Path) -> String {
    let out = std::process::Command::new(luumen_integration::api_server::api_bin())
        .args(["create-key", "--role", "admin", "--data-dir"])
        .arg(data)
        .output()
        .expect("create-key");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once('=').map(|(_, k)| k.trim().to_owned()))
        .unwrap_or_else(|| stdout.trim().to_owned())
}
