//! End to end: the real `luumen-api` binary on 127.0.0.1:0 with a temporary data dir.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_luumen-api");

struct Keys {
    admin: String,
    agent: String,
}

fn init(dir: &Path) -> Keys {
    let output = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(dir)
        .output()
        .expect("run init");
    assert!(output.status.success(), "init failed: {output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let get = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {stdout:?}"))
            .to_owned()
    };
    Keys {
        admin: get("admin_key="),
        agent: get("agent_key="),
    }
}

/// A running server, killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start server");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .expect("read stderr");
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["message"] == "listening" {
                break event["base_url"].as_str().expect("base_url").to_owned();
            }
            assert_ne!(event["level"], "ERROR", "server failed: {line}");
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn package(name: &str, version: &str, release: &str) -> Value {
    json!({"name": name, "epoch": null, "version": version, "release": release,
           "arch": "x86_64", "source": null, "manager": "rpm"})
}

fn result(host: &str, collected_at: &str, packages: Vec<Value>) -> Value {
    json!({
        "host": {"id": host, "address": "localhost", "protocol": "local"},
        "collected_at": collected_at,
        "duration_ms": 120,
        "status": "ok",
        "properties": {
            "os": {"family": "linux", "name": "Rocky Linux", "id": "rocky", "id_like": ["rhel"],
                   "version_id": "9.3", "pretty_name": "Rocky Linux 9.3", "kernel_release": "5.14.0",
                   "arch": "x86_64", "hostname": host, "uptime_seconds": 100, "boot_time": null},
            "selinux": {"mode": "enforcing", "policy": "targeted"},
            "packages": packages
        },
        "errors": []
    })
}

fn batch(results: Vec<Value>) -> Value {
    json!({
        "agent_id": "test-agent",
        "batch_id": uuid::Uuid::new_v4().to_string(),
        "sent_at": "2026-01-01T00:00:00Z",
        "results": results
    })
}

fn post(c: &Client, server: &Server, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    let response = c
        .post(server.url(path))
        .header("api-key", key)
        .json(body)
        .send()
        .expect("post");
    let status = response.status();
    (status, response.json().unwrap_or(Value::Null))
}

fn get(c: &Client, server: &Server, path: &str, key: &str) -> (StatusCode, Value) {
    let response = c
        .get(server.url(path))
        .header("api-key", key)
        .send()
        .expect("get");
    let status = response.status();
    (status, response.json().unwrap_or(Value::Null))
}

fn setup() -> (tempfile::TempDir, PathBuf, Keys) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let keys = init(&dir);
    (tmp, dir, keys)
}

#[test]
fn init_prints_keys_once_and_protects_the_key_file() {
    let (_tmp, dir, keys) = setup();
    assert!(
        keys.admin.starts_with("lmn_") && keys.admin.len() == 68,
        "{}",
        keys.admin
    );
    assert_ne!(keys.admin, keys.agent);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The keys are stored hashed only.
    let db = std::fs::read(dir.join("luumen.db")).unwrap();
    assert!(!contains(&db, keys.admin.as_bytes()));
    assert!(!contains(&db, keys.agent.as_bytes()));
    // A second init refuses to overwrite.
    let again = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(again.stdout.is_empty());
    // create-key adds a working key.
    let output = Command::new(BIN)
        .args(["create-key", "--role", "agent", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("agent_key="))
        .unwrap();
    let server = Server::start(&dir, &[]);
    let (status, _) = get(&client(), &server, "/config", key);
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn wrong_or_missing_key_is_401_without_hints() {
    let (_tmp, dir, keys) = setup();
    let server = Server::start(&dir, &[]);
    let c = client();
    let body = batch(vec![]);
    let missing = c.post(server.url("/reports")).json(&body).send().unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert!(missing.json::<Value>().unwrap()["error"].is_string());
    let wrong_agent = post(&c, &server, "/reports", "lmn_0000", &body);
    let wrong_admin = get(&c, &server, "/hosts", "nope");
    assert_eq!(wrong_agent.0, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_admin.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong_agent.1, wrong_admin.1,
        "the same message for every wrong key"
    );
    // Roles are enforced.
    assert_eq!(
        get(&c, &server, "/hosts", &keys.agent).0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&c, &server, "/config", &keys.admin).0,
        StatusCode::FORBIDDEN
    );
    // Health needs no key.
    assert_eq!(
        c.get(server.url("/healthz")).send().unwrap().status(),
        StatusCode::OK
    );
}

#[test]
fn the_same_batch_twice_is_stored_once() {
    let (_tmp, dir, keys) = setup();
    let server = Server::start(&dir, &[]);
    let c = client();
    let body = batch(vec![result(
        "db-1",
        "2026-01-01T00:00:00Z",
        vec![package("openssl", "3.0.7", "27.el9")],
    )]);
    let first = post(&c, &server, "/reports", &keys.agent, &body);
    let second = post(&c, &server, "/reports", &keys.agent, &body);
    assert_eq!(first.0, StatusCode::OK, "{:?}", first.1);
    assert_eq!(second.0, StatusCode::OK, "{:?}", second.1);
    assert_eq!(first.1["duplicate"], false);
    assert_eq!(second.1["duplicate"], true);
    let (_, history) = get(&c, &server, "/hosts/db-1/history", &keys.admin);
    assert_eq!(history["items"].as_array().unwrap().len(), 1, "{history}");
    let (_, versions) = get(&c, &server, "/software?name=openssl", &keys.admin);
    assert_eq!(versions["items"][0]["hosts"], 1, "{versions}");
}

#[test]
fn invalid_and_oversize_batches_are_refused() {
    let (_tmp, dir, keys) = setup();
    let server = Server::start(&dir, &["--max-report-bytes", "2000"]);
    let c = client();
    let mut bad = batch(vec![result("h", "2026-01-01T00:00:00Z", vec![])]);
    bad["results"][0]["status"] = json!("fine");
    let (status, body) = post(&c, &server, "/reports", &keys.agent, &bad);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("results[0].status"), "{message}");
    let mut missing = batch(vec![]);
    missing.as_object_mut().unwrap().remove("batch_id");
    let (status, body) = post(&c, &server, "/reports", &keys.agent, &missing);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("batch_id"),
        "{body}"
    );
    let packages = (0..100)
        .map(|i| package(&format!("p{i}"), "1", "1"))
        .collect();
    let big = batch(vec![result("h", "2026-01-01T00:00:00Z", packages)]);
    let (status, body) = post(&c, &server, "/reports", &keys.agent, &big);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"].is_string());
}

#[test]
fn host_shows_properties_and_changes_after_reports() {
    let (_tmp, dir, keys) = setup();
    let server = Server::start(&dir, &[]);
    let c = client();
    let (status, created) = post(
        &c,
        &server,
        "/hosts",
        &keys.admin,
        &json!({"id": "web-1", "address": "10.0.0.5", "protocol": "ssh", "groups": ["web"]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["stale"], true);
    assert_eq!(created["status"], Value::Null);

    let first = vec![
        package("openssl", "3.0.7", "27.el9"),
        package("bash", "5.1.8", "6.el9"),
    ];
    let r = post(
        &c,
        &server,
        "/reports",
        &keys.agent,
        &batch(vec![result("web-1", "2026-01-01T00:00:00Z", first)]),
    );
    assert_eq!(r.0, StatusCode::OK);
    let second = vec![
        package("openssl", "3.0.7", "28.el9"),
        package("curl", "7.76.1", "26.el9"),
    ];
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = post(
        &c,
        &server,
        "/reports",
        &keys.agent,
        &batch(vec![result("web-1", &now, second)]),
    );
    assert_eq!(r.0, StatusCode::OK);

    let (status, host) = get(&c, &server, "/hosts/web-1", &keys.admin);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(host["status"], "ok");
    assert_eq!(host["stale"], false);
    assert_eq!(host["last_seen"].as_str().unwrap()[..19], now[..19]);
    assert!(host["received_at"].is_string());
    assert_eq!(host["properties"]["os"]["id"], "rocky");
    assert_eq!(host["properties"]["selinux"]["mode"], "enforcing");
    let names: Vec<&str> = host["properties"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["curl", "openssl"]);

    let (_, changes) = get(&c, &server, "/hosts/web-1/changes", &keys.admin);
    let kinds: Vec<(String, String)> = changes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().into(),
                c["subject"].as_str().unwrap().into(),
            )
        })
        .collect();
    for expected in [
        ("package_changed", "openssl"),
        ("package_added", "curl"),
        ("package_removed", "bash"),
        ("packages_baseline", "packages"),
    ] {
        assert!(
            kinds.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} in {kinds:?}"
        );
    }
    // uptime changes are not property changes
    assert_eq!(kinds.iter().filter(|k| k.1 == "os").count(), 1, "{kinds:?}");

    // Fleet queries and filters.
    let (_, hosts) = get(
        &c,
        &server,
        "/software/openssl/hosts?version=3.0.7-28.el9",
        &keys.admin,
    );
    assert_eq!(hosts["items"][0]["host_id"], "web-1");
    let (_, hosts) = get(
        &c,
        &server,
        "/software/openssl/hosts?version=3.0.7-27.el9",
        &keys.admin,
    );
    assert_eq!(hosts["items"].as_array().unwrap().len(), 0);
    for (query, expected) in [
        ("?group=web", 1),
        ("?group=db", 0),
        ("?os_id=rocky", 1),
        ("?status=ok", 1),
        ("?package=curl", 1),
        ("?package=bash", 0),
        ("?stale=false", 1),
        ("?stale=true", 0),
    ] {
        let (status, list) = get(&c, &server, &format!("/hosts{query}"), &keys.admin);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            list["items"].as_array().unwrap().len(),
            expected,
            "{query}: {list}"
        );
    }
}

#[test]
fn host_list_pages_with_a_stable_cursor() {
    let (_tmp, dir, keys) = setup();
    let server = Server::start(&dir, &[]);
    let c = client();
    for i in 0..5 {
        let (status, _) = post(
            &c,
            &server,
            "/hosts",
            &keys.admin,
            &json!({"id": format!("h{i}"), "protocol": "local"}),
        );
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, page1) = get(&c, &server, "/hosts?limit=2", &keys.admin);
    let next = page1["next"].as_str().unwrap().to_owned();
    // An insert between pages does not shift the next page.
    post(
        &c,
        &server,
        "/hosts",
        &keys.admin,
        &json!({"id": "h5", "protocol": "local"}),
    );
    let (_, page2) = get(
        &c,
        &server,
        &format!("/hosts?limit=2&next={next}"),
        &keys.admin,
    );
    let ids = |p: &Value| -> Vec<String> {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&page1), ["h0", "h1"]);
    assert_eq!(ids(&page2), ["h2", "h3"]);
    assert_eq!(
        get(&c, &server, "/hosts?next=garbage", &keys.admin).0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&c, &server, "/hosts?limit=0", &keys.admin).0,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn data_survives_a_restart() {
    let (_tmp, dir, keys) = setup();
    let server = Server::start(&dir, &[]);
    let c = client();
    post(
        &c,
        &server,
        "/hosts",
        &keys.admin,
        &json!({"id": "keep", "protocol": "local"}),
    );
    let body = batch(vec![result(
        "keep",
        "2026-01-01T00:00:00Z",
        vec![package("zlib", "1.2.11", "40.el9")],
    )]);
    assert_eq!(
        post(&c, &server, "/reports", &keys.agent, &body).0,
        StatusCode::OK
    );
    server.stop();

    let server = Server::start(&dir, &[]);
    let (status, host) = get(&c, &server, "/hosts/keep", &keys.admin);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(host["properties"]["packages"][0]["name"], "zlib");
    // Still idempotent across the restart.
    let (_, again) = post(&c, &server, "/reports", &keys.agent, &body);
    assert_eq!(again["duplicate"], true);
}

const PASSWORD: &str = "pw-marker-7c1f9a3e-do-not-store";
const PRIVATE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nkey-marker-b5e2d8c04f1a\n-----END OPENSSH PRIVATE KEY-----\n";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secrets_are_encrypted_at_rest_and_never_returned_to_admins() {
    let (_tmp, dir, keys) = setup();
    let server = Server::start(&dir, &[]);
    let c = client();
    let (status, meta) = post(
        &c,
        &server,
        "/credentials",
        &keys.admin,
        &json!({"id": "pw", "name": "service", "username": "svc", "password": PASSWORD}),
    );
    assert_eq!(status, StatusCode::CREATED, "{meta}");
    assert!(!meta.to_string().contains(PASSWORD));
    let (status, meta) = post(
        &c,
        &server,
        "/credentials",
        &keys.admin,
        &json!({"id": "key", "username": "svc", "private_key": PRIVATE_KEY, "passphrase": PASSWORD, "scope": "personal"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{meta}");
    post(
        &c,
        &server,
        "/hosts",
        &keys.admin,
        &json!({"id": "s1", "address": "10.0.0.1", "protocol": "ssh", "credential_id": "pw"}),
    );
    let put = c
        .put(server.url("/default-credentials"))
        .header("api-key", &keys.admin)
        .json(&json!({"credential_id": "key"}))
        .send()
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);

    let (_, config) = get(&c, &server, "/config", &keys.agent);
    assert_eq!(config["hosts"][0]["credentials"]["password"], PASSWORD);
    assert_eq!(config["default_credentials"]["private_key"], PRIVATE_KEY);
    // A key credential (PEM text in `private_key`) is in the agent's contract too.
    let schema: Value = serde_json::from_str(luumen_schemas::REMOTE_CONFIG_SCHEMA).unwrap();
    assert!(
        jsonschema::validator_for(&schema)
            .unwrap()
            .is_valid(&config),
        "{config}"
    );
    let inventory: luumen_schemas::inventory::Inventory =
        serde_json::from_value(config.clone()).unwrap();
    inventory.validate().unwrap();
    let (_, list) = get(&c, &server, "/credentials", &keys.admin);
    let text = list.to_string();
    assert!(
        !text.contains(PASSWORD) && !text.contains("key-marker"),
        "{text}"
    );
    let (_, audit) = get(&c, &server, "/audit", &keys.admin);
    let reads = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "credential_read")
        .count();
    assert_eq!(reads, 2, "{audit}");
    server.stop();

    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for marker in [
            PASSWORD.as_bytes(),
            b"key-marker-b5e2d8c04f1a",
            PRIVATE_KEY.as_bytes(),
        ] {
            assert!(
                !contains(&bytes, marker),
                "{} holds a plaintext secret",
                path.display()
            );
        }
    }
    assert!(files >= 2);
}

#[test]
fn deleting_a_credential_removes_it_from_the_next_config() {
    let (_tmp, dir, keys) = setup();
    let server = Server::start(&dir, &[]);
    let c = client();
    post(
        &c,
        &server,
        "/credentials",
        &keys.admin,
        &json!({"id": "gone", "username": "svc", "password": PASSWORD}),
    );
    post(
        &c,
        &server,
        "/credentials",
        &keys.admin,
        &json!({"id": "default", "username": "dflt", "password": "other"}),
    );
    post(
        &c,
        &server,
        "/hosts",
        &keys.admin,
        &json!({"id": "s1", "address": "10.0.0.1", "protocol": "ssh", "credential_id": "gone"}),
    );
    c.put(server.url("/default-credentials"))
        .header("api-key", &keys.admin)
        .json(&json!({"credential_id": "default"}))
        .send()
        .unwrap();
    c.put(server.url("/schedule"))
        .header("api-key", &keys.admin)
        .json(&json!({"interval_seconds": 900}))
        .send()
        .unwrap();

    let (_, config) = get(&c, &server, "/config", &keys.agent);
    assert_eq!(config["hosts"][0]["credentials"]["username"], "svc");
    assert_eq!(config["schedule"]["interval_seconds"], 900);
    // The agent's own contract: the JSON Schema and the typed inventory.
    let schema: Value = serde_json::from_str(luumen_schemas::REMOTE_CONFIG_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&config), "{config}");
    let inventory: luumen_schemas::inventory::Inventory =
        serde_json::from_value(config.clone()).unwrap();
    inventory.validate().unwrap();

    let delete = c
        .delete(server.url("/credentials/gone"))
        .header("api-key", &keys.admin)
        .send()
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    let (_, config) = get(&c, &server, "/config", &keys.agent);
    assert!(!config.to_string().contains(PASSWORD), "{config}");
    assert!(config["hosts"][0].get("credentials").is_none(), "{config}");
    assert_eq!(config["default_credentials"]["username"], "dflt");
    let (_, list) = get(&c, &server, "/credentials", &keys.admin);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(validator.is_valid(&config));
}

#[test]
fn openapi_document_lists_the_endpoints() {
    let (_tmp, dir, _keys) = setup();
    let server = Server::start(&dir, &[]);
    let doc: Value = client()
        .get(server.url("/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/config",
        "/api/v1/reports",
        "/api/v1/hosts/{id}",
        "/api/v1/credentials",
        "/api/v1/software",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["paths"]["/api/v1/hosts"]["get"]["responses"]["401"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

/// A CA and a server certificate for 127.0.0.1, made with the `openssl` command.
fn make_certs(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = run(&[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=luumen test CA",
    ]) && run(&[
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
    ]) && std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .is_ok()
        && run(&[
            "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
        ]);
    ok.then(|| {
        (
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server.key"),
        )
    })
}

#[test]
fn serves_https_with_rustls() {
    let (tmp, dir, keys) = setup();
    let Some((ca, cert, key)) = make_certs(tmp.path()) else {
        eprintln!("skipped: the openssl command is not available");
        return;
    };
    let server = Server::start(
        &dir,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let c = Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (status, config) = get(&c, &server, "/config", &keys.agent);
    assert_eq!(status, StatusCode::OK, "{config}");
    assert!(config["hosts"].is_array());
}

#[test]
fn concurrent_posts_of_one_batch_store_it_once() {
    let (_tmp, dir, keys) = setup();
    let server = Server::start(&dir, &[]);
    let body = batch(vec![result(
        "race",
        "2026-01-01T00:00:00Z",
        vec![package("a", "1", "1")],
    )]);
    let outcomes: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let (status, outcome) =
                        post(&client(), &server, "/reports", &keys.agent, &body);
                    assert_eq!(status, StatusCode::OK, "{outcome}");
                    outcome
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored = outcomes.iter().filter(|o| o["duplicate"] == false).count();
    assert_eq!(stored, 1, "{outcomes:?}");
    let (_, history) = get(&client(), &server, "/hosts/race/history", &keys.admin);
    assert_eq!(history["items"].as_array().unwrap().len(), 1);
}

fn put(c: &Client, server: &Server, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    let response = c
        .put(server.url(path))
        .header("api-key", key)
        .json(body)
        .send()
        .expect("put");
    let status = response.status();
    (status, response.json().unwrap_or(Value::Null))
}

/// Methods not routed on a known path get 405 and an `Allow` header (schemathesis ST204), with
/// or without a key; unknown paths stay 404.
#[test]
fn other_methods_on_known_paths_are_405_with_allow() {
    let (_tmp, dir, keys) = setup();
    let server = Server::start(&dir, &[]);
    let c = client();
    let root = server.base.trim_end_matches("/api/v1").to_owned();
    for (method, url, allow) in [
        ("TRACE", server.url("/config"), "GET"),
        ("TRACE", server.url("/reports"), "POST"),
        ("PATCH", server.url("/hosts/h1"), "GET, PUT, DELETE"),
        ("DELETE", server.url("/hosts"), "GET, POST"),
        ("GET", server.url("/schedule"), "PUT"),
        ("TRACE", server.url("/settings"), "GET"),
        ("POST", format!("{root}/healthz"), "GET"),
        ("TRACE", format!("{root}/openapi.json"), "GET"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = c
            .request(method.clone(), &url)
            .header("api-key", &keys.admin)
            .send()
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {url}"
        );
        assert_eq!(response.headers()["allow"], allow, "{method} {url}");
        let body: Value = response.json().unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    let response = c
        .request(reqwest::Method::TRACE, server.url("/config"))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        get(&c, &server, "/nowhere", &keys.admin).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&c, &server, "/hosts/h1", &keys.admin).0,
        StatusCode::NOT_FOUND
    );
}

/// Requests the OpenAPI document calls valid are accepted (schemathesis ST202): an empty `next`
/// is the first page, integers may be spelled `600.0`, the largest schedule does not break the
/// stale cutoff, and an unknown `credential_id` is a 409 conflict rather than a 400.
#[test]
fn schema_valid_requests_are_accepted() {
    let (_tmp, dir, keys) = setup();
    let server = Server::start(&dir, &[]);
    let c = client();
    let doc: Value = c
        .get(server.url("/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let params = doc["paths"]["/api/v1/hosts"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let schema = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["schema"].clone())
            .unwrap()
    };
    assert_eq!(schema("limit")["minimum"], 1);
    assert_eq!(schema("limit")["maximum"], 1000);
    assert!(schema("next")["pattern"].is_string());
    let schedule = &doc["components"]["schemas"]["ScheduleInput"]["properties"]["interval_seconds"];
    assert_eq!(schedule["minimum"], 1);
    assert_eq!(schedule["maximum"], 31622400_u64);

    for path in [
        "/hosts?next=",
        "/audit?next=",
        "/software?name=x&next=",
        "/hosts?limit=1000",
    ] {
        let (status, body) = get(&c, &server, path, &keys.admin);
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    for path in ["/hosts?next=0", "/hosts?limit=0", "/hosts?limit=1001"] {
        assert_eq!(
            get(&c, &server, path, &keys.admin).0,
            StatusCode::BAD_REQUEST,
            "{path}"
        );
    }
    let host = json!({"id": "h1", "protocol": "ssh", "address": "10.0.0.1", "port": 2222.0});
    let (status, body) = post(&c, &server, "/hosts", &keys.admin, &host);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["port"], 2222);
    assert_eq!(body["properties"], Value::Null);
    let (status, body) = put(
        &c,
        &server,
        "/schedule",
        &keys.admin,
        &json!({"interval_seconds": 31622401_u64}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = put(
        &c,
        &server,
        "/schedule",
        &keys.admin,
        &json!({"interval_seconds": 31622400_u64}),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = get(&c, &server, "/hosts?stale=true", &keys.admin);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"][0]["id"], "h1", "never seen, so stale: {body}");
    let (status, _) = get(&c, &server, "/hosts/h1", &keys.admin);
    assert_eq!(status, StatusCode::OK);
    let (status, body) = put(
        &c,
        &server,
        "/schedule",
        &keys.admin,
        &json!({"interval_seconds": 600.0}),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["interval_seconds"], 600);
    let (status, _) = put(
        &c,
        &server,
        "/schedule",
        &keys.admin,
        &json!({"interval_seconds": 0.5}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = put(
        &c,
        &server,
        "/default-credentials",
        &keys.admin,
        &json!({"credential_id": "nope"}),
    );
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = put(
        &c,
        &server,
        "/hosts/h1",
        &keys.admin,
        &json!({"id": "h2", "protocol": "local"}),
    );
    assert_eq!(status, StatusCode::CONFLICT);
}
