//! Fault injection with the real binaries: a tarpit host among real ones, and a spool with
//! flipped bytes found at start.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use luumen_integration::{ensure_test_users, require_root, Receiver, SshdConfig, SshdHarness};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(120);

fn once(dir: &Path, config: &str, inventory: &Value) -> (Option<i32>, String, Vec<Value>) {
    once_with_env(dir, config, inventory, &[])
}

fn once_with_env(
    dir: &Path,
    config: &str,
    inventory: &Value,
    env: &[(&str, &str)],
) -> (Option<i32>, String, Vec<Value>) {
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, config).expect("write config");
    let inventory_path = dir.join("inventory.json");
    std::fs::write(&inventory_path, inventory.to_string()).expect("write inventory");
    let output = dir.join("out.ndjson");
    let mut command = std::process::Command::new(luumen_integration::agent_bin());
    command
        .args(["once", "--config", config_path.to_str().expect("utf-8")])
        .args(["--inventory", inventory_path.to_str().expect("utf-8")])
        .args(["--output", output.to_str().expect("utf-8")])
        .envs(env.iter().copied());
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

/// The host ids of every result in the batches the receiver accepted (answered 200), in order.
fn delivered_host_ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .requests_to("POST", "/reports")
        .into_iter()
        .filter(|r| r.status == 200)
        .flat_map(|r| {
            let batch = r.json().expect("batch");
            batch["results"]
                .as_array()
                .expect("results")
                .iter()
                .map(|x| x["host"]["id"].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A tarpit host and a host whose actor panics (fault injection) among real ones: each costs
/// only itself.
#[test]
fn a_tarpit_host_and_a_panicking_host_delay_no_other_host() {
    require_root();
    ensure_test_users();
    let sshd = SshdHarness::start(SshdConfig::with_addresses(2)).expect("sshd");
    // Accepts TCP and never says a word.
    let tarpit = TcpListener::bind("127.0.0.1:0").expect("bind tarpit");
    let tarpit_port = tarpit.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        let mut connections = Vec::new();
        tarpit.set_nonblocking(true).expect("nonblocking");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok((stream, _)) = tarpit.accept() {
                connections.push(stream);
            }
            std::thread::sleep(Duration::from_millis(20));
            if connections.len() == 1 && started.elapsed() > Duration::from_secs(8) {
                break;
            }
        }
        connections.len()
    });
    let user = sshd.sudo_user();
    let credentials = json!({"username": user.name, "private_key_file": user.private_key});
    let mut hosts = vec![
        json!({"id": "tarpit", "address": "127.0.0.1", "port": tarpit_port, "protocol": "ssh", "credentials": credentials}),
        json!({"id": "panics", "protocol": "local"}),
    ];
    for (i, address) in sshd.addresses().iter().enumerate() {
        hosts.push(json!({"id": format!("real-{i}"), "address": address.to_string(), "port": sshd.port(), "protocol": "ssh", "credentials": credentials}));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(200);
    let config = format!(
        "api: {{ base_url: '{}', api_key: k }}\nstate_dir: '{}'\ntimeouts: {{ connect_seconds: 2, host_seconds: 3 }}\n",
        receiver.base_url(),
        dir.path().join("state").display()
    );
    let started = Instant::now();
    let (code, stderr, results) = once_with_env(
        dir.path(),
        &config,
        &json!({ "hosts": hosts }),
        &[("LUUMEN_FAULT_PANIC_HOSTS", "panics")],
    );
    let wall = started.elapsed();
    assert_eq!(code, Some(1), "{stderr}");
    let by_id = |id: &str| {
        results
            .iter()
            .find(|r| r["host"]["id"] == id)
            .expect("result")
    };
    let panicked = by_id("panics");
    assert_eq!(panicked["status"], "error", "{panicked:#}");
    let message = panicked["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("collector stopped unexpectedly"),
        "{panicked:#}"
    );
    assert!(stderr.contains("Host actor restarted."), "{stderr}");
    let tarpit_result = by_id("tarpit");
    assert_eq!(tarpit_result["status"], "timeout", "{tarpit_result:#}");
    let tarpit_ms = tarpit_result["duration_ms"].as_u64().unwrap_or(u64::MAX);
    assert!(
        (2_900..4_000).contains(&tarpit_ms),
        "costs its 3 s limit: {tarpit_ms} ms"
    );
    for i in 0..2 {
        let real = by_id(&format!("real-{i}"));
        let status = real["status"].as_str().unwrap_or("");
        assert!(status == "ok" || status == "partial", "{real:#}");
        let ms = real["duration_ms"].as_u64().unwrap_or(u64::MAX);
        assert!(
            ms < 2_500,
            "a real host is not held up by the tarpit: {ms} ms"
        );
    }
    assert!(
        wall < Duration::from_secs(15),
        "the cycle is bounded: {wall:?}"
    );
    assert!(
        held.join().expect("tarpit thread") >= 1,
        "the tarpit was connected to"
    );
}

/// Offsets of the records of a spool segment (24-byte header, 40-byte record headers with the
/// body length at +4).
fn record_offsets(segment: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 24;
    while at + 40 <= segment.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(segment[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        at += 40 + len;
    }
    offsets
}

#[test]
fn flipped_bytes_in_the_spool_are_set_aside_and_the_rest_is_delivered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(503);
    let state = dir.path().join("state");
    let config = format!(
        "api: {{ base_url: '{}', api_key: k }}\nstate_dir: '{}'\nbatch: {{ max_results: 1 }}\n",
        receiver.base_url(),
        state.display()
    );
    let hosts: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|id| json!({"id": id, "protocol": "local"}))
        .collect();
    let (code, stderr, results) = once(dir.path(), &config, &json!({ "hosts": hosts }));
    assert_eq!(code, Some(3), "API down: {stderr}");
    assert_eq!(results.len(), 3);

    // Three batches wait in one segment; flip bytes in the body of the middle one.
    let segments: Vec<_> = std::fs::read_dir(state.join("spool"))
        .expect("spool dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    let segment = segments
        .iter()
        .find(|p| record_offsets(&std::fs::read(p).expect("read")).len() == 3)
        .expect("a segment with the three batches");
    let mut bytes = std::fs::read(segment).expect("read segment");
    let middle = record_offsets(&bytes)[1];
    let body_len = u32::from_le_bytes(bytes[middle + 4..middle + 8].try_into().expect("4 bytes"));
    let body: Value = serde_json::from_slice(&bytes[middle + 40..middle + 40 + body_len as usize])
        .expect("a spooled batch body is the batch JSON");
    let damaged = body["results"][0]["host"]["id"]
        .as_str()
        .expect("host id")
        .to_owned();
    for byte in &mut bytes[middle + 60..middle + 64] {
        *byte ^= 0xff;
    }
    std::fs::write(segment, &bytes).expect("write segment");

    receiver.set_status(200);
    let (code, stderr, _) = once(dir.path(), &config, &json!({ "hosts": [] }));
    assert_eq!(code, Some(0), "{stderr}");
    let delivered = delivered_host_ids(&receiver);
    assert_eq!(delivered.len(), 2, "the two intact batches: {delivered:?}");
    let mut expected: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|id| id.to_string())
        .filter(|id| *id != damaged)
        .collect();
    let mut delivered = delivered;
    delivered.sort();
    expected.sort();
    assert_eq!(
        delivered, expected,
        "everything but the damaged batch ({damaged})"
    );
    let corrupt = std::fs::read_dir(state.join("spool/corrupt"))
        .expect("corrupt dir")
        .count();
    assert!(corrupt >= 1, "the damaged record is kept aside");
    assert!(
        stderr.contains("set_aside") || stderr.contains("corrupt"),
        "{stderr}"
    );
}

#[test]
fn sigterm_mid_cycle_with_the_api_down_exits_in_time_and_keeps_every_finished_result() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(503);
    // A tarpit keeps the cycle running for its 3 s limit while SIGTERM arrives.
    let tarpit = TcpListener::bind("127.0.0.1:0").expect("bind tarpit");
    let tarpit_port = tarpit.local_addr().expect("addr").port();
    let config_path = dir.path().join("config.yaml");
    let config = format!(
        "api: {{ base_url: '{}', api_key: k }}\nstate_dir: '{}'\ntimeouts: {{ connect_seconds: 2, host_seconds: 3 }}\n",
        receiver.base_url(),
        dir.path().join("state").display()
    );
    std::fs::write(&config_path, &config).expect("write config");
    let hosts = json!({"schedule": {"interval_seconds": 3600, "splay_seconds": 0}, "hosts": [
        {"id": "local", "protocol": "local"},
        {"id": "slow", "address": "127.0.0.1", "port": tarpit_port, "protocol": "ssh",
         "credentials": {"username": "nobody", "password": "unused"}},
    ]});
    let inventory = dir.path().join("inventory.json");
    std::fs::write(&inventory, hosts.to_string()).expect("write inventory");
    let output = dir.path().join("out.ndjson");
    let mut child = std::process::Command::new(luumen_integration::agent_bin())
        .args(["run", "--config", config_path.to_str().expect("utf-8")])
        .args(["--inventory", inventory.to_str().expect("utf-8")])
        .args(["--output", output.to_str().expect("utf-8")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("agent starts");
    // Wait until the local host is done (the tarpit host is still in flight), then SIGTERM.
    let started = Instant::now();
    while std::fs::read_to_string(&output)
        .unwrap_or_default()
        .lines()
        .count()
        < 1
        && started.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let stop_started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            stop_started.elapsed() < Duration::from_secs(30),
            "did not stop in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stop_time = stop_started.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        stop_time < Duration::from_secs(12),
        "stopped in {stop_time:?}"
    );
    drop(tarpit);

    // Both results (the finished one and the one the grace period let finish) are in the spool:
    // the next start with the API up delivers them.
    receiver.set_status(200);
    let (code, stderr, _) = once(dir.path(), &config, &json!({ "hosts": [] }));
    assert_eq!(code, Some(0), "{stderr}");
    let delivered = delivered_host_ids(&receiver);
    let mut delivered = delivered;
    delivered.sort();
    assert_eq!(
        delivered,
        ["local", "slow"],
        "nothing finished is lost: {stderr}"
    );
    eprintln!("stop time after SIGTERM mid-cycle: {stop_time:?}");
}

/// A pseudo-random number in `0..n` (xorshift, seeded from the clock; the seed is printed so a
/// failing run can be reasoned about).
fn next_random(state: &mut u64, n: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % n
}

/// `(host, collected_at)` of every result the agent logged as spooled (durable).
fn spooled_results(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| {
            v["fields"]["message"] == "Result spooled." || v["message"] == "Result spooled."
        })
        .map(|v| {
            let fields = if v["fields"].is_object() {
                &v["fields"]
            } else {
                &v
            };
            (
                fields["host"].as_str().unwrap_or("").to_owned(),
                fields["collected_at"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn kill_9_at_random_moments_loses_nothing_spooled_and_stores_each_result_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(200);
    let config_path = dir.path().join("config.yaml");
    let config = format!(
        "api: {{ base_url: '{}', api_key: k }}\nstate_dir: '{}'\nbatch: {{ max_results: 2, max_wait_seconds: 1 }}\n",
        receiver.base_url(),
        dir.path().join("state").display()
    );
    std::fs::write(&config_path, &config).expect("write config");
    let hosts: Vec<Value> = (1..=5)
        .map(|n| json!({"id": format!("local-{n}"), "protocol": "local"}))
        .collect();
    let inventory = dir.path().join("inventory.json");
    std::fs::write(
        &inventory,
        json!({"schedule": {"interval_seconds": 1, "splay_seconds": 0}, "hosts": hosts})
            .to_string(),
    )
    .expect("write inventory");

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("seed {seed}");
    let mut spooled = Vec::new();
    let kills = 10;
    for round in 0..kills {
        let log_path = dir.path().join(format!("agent-{round}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = std::process::Command::new(luumen_integration::agent_bin())
            .args(["run", "--config", config_path.to_str().expect("utf-8")])
            .args(["--inventory", inventory.to_str().expect("utf-8")])
            .env("RUST_LOG", "info,luumen_actors::reporter=debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts");
        let wait = Duration::from_millis(200 + next_random(&mut seed, 2300));
        std::thread::sleep(wait);
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        spooled.extend(spooled_results(
            &std::fs::read_to_string(&log_path).unwrap_or_default(),
        ));
    }
    // A last, clean start with no hosts delivers whatever the spool still holds.
    let (code, stderr, _) = once(dir.path(), &config, &json!({ "hosts": [] }));
    assert_eq!(code, Some(0), "{stderr}");

    // What the API would store: each batch_id once (it de-duplicates by batch_id). A batch sent
    // again must be the same batch; no result may be in two different batches.
    let mut batches: std::collections::BTreeMap<String, Vec<(String, String)>> =
        std::collections::BTreeMap::new();
    let mut posts = 0;
    for request in receiver.requests_to("POST", "/reports") {
        let Ok(batch) = request.json() else { continue };
        posts += 1;
        let results: Vec<(String, String)> = batch["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                (
                    r["host"]["id"].as_str().unwrap_or("").to_owned(),
                    r["collected_at"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let id = batch["batch_id"].as_str().expect("batch_id").to_owned();
        if let Some(earlier) = batches.get(&id) {
            assert_eq!(
                earlier, &results,
                "batch {id} sent again with other results"
            );
        }
        batches.insert(id, results);
    }
    let mut stored: Vec<(String, String)> = batches.values().flatten().cloned().collect();
    stored.sort();
    let total = stored.len();
    stored.dedup();
    assert_eq!(total, stored.len(), "a result was stored twice");
    let missing: Vec<_> = spooled
        .iter()
        .filter(|r| stored.binary_search(r).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "spooled results never delivered: {missing:?}"
    );
    assert!(
        spooled.len() >= 5,
        "the runs produced results: {}",
        spooled.len()
    );
    eprintln!(
        "kill -9 x{kills}: {} results spooled, {} stored, {} batches stored, {} posts",
        spooled.len(),
        stored.len(),
        batches.len(),
        posts
    );
}

/// Size of the spool's segment files and journal under `dir`.
fn spool_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.ends_with(".seg") || name == "open.journal"
                })
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The real luumen-api goes away for many cycles and comes back on the same address: every
/// result the agent produced meanwhile is stored once, in the API's own database.
#[test]
fn a_long_api_outage_loses_nothing_and_stores_each_result_once() {
    use luumen_integration::api_server::ApiServer;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("api-data");
    let server = ApiServer::init_and_serve(&data);
    let (admin_key, agent_key) = (server.admin_key.clone(), server.agent_key.clone());
    let base_url = server.base_url.clone();
    let listen = server.listen_address();
    let client = reqwest::blocking::Client::new();
    let admin = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = client
            .request(method, format!("{base_url}{path}"))
            .header("api-key", &admin_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("API answers");
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    let ids = ["outage-1", "outage-2", "outage-3"];
    for id in ids {
        let (status, body) = admin(
            reqwest::Method::POST,
            "/hosts",
            Some(json!({"id": id, "protocol": "local"})),
        );
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = admin(
        reqwest::Method::PUT,
        "/schedule",
        Some(json!({"interval_seconds": 1})),
    );
    assert_eq!(status, 200, "{body}");

    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "api: {{ base_url: '{base_url}', api_key: '{agent_key}', request_timeout_seconds: 5 }}\nstate_dir: '{}'\nbatch: {{ max_results: 3, max_wait_seconds: 1 }}\n",
            dir.path().join("state").display()
        ),
    )
    .expect("write config");
    let output = dir.path().join("out.ndjson");
    let log_path = dir.path().join("agent.log");
    let mut child = std::process::Command::new(luumen_integration::agent_bin())
        .args(["run", "--config", config.to_str().expect("utf-8")])
        .args(["--output", output.to_str().expect("utf-8")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("agent starts");
    let produced = || {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let wait = |limit: Duration, done: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !done() && started.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(50));
        }
        done()
    };
    assert!(
        wait(Duration::from_secs(20), &|| produced() >= 3),
        "first cycle"
    );
    // The outage: the API process is gone for ~10 cycles.
    drop(server);
    let outage_started = Instant::now();
    let before = produced();
    assert!(
        wait(Duration::from_secs(40), &|| produced() >= before + 30),
        "cycles go on during the outage: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let outage = outage_started.elapsed();
    let spool = dir.path().join("state/spool");
    let spooled_bytes = spool_bytes(&spool);
    let during_outage = produced() - before;
    // The API is back where it was.
    let _server = ApiServer::serve_at(&data, &listen);
    let stored = |id: &str| -> Vec<String> {
        let (status, page) = admin(
            reqwest::Method::GET,
            &format!("/hosts/{id}/history?limit=1000"),
            None,
        );
        assert_eq!(status, 200, "{page}");
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["collected_at"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let all_stored = || ids.iter().map(|id| stored(id).len()).sum::<usize>();
    // Catch up, then stop: whatever was produced until the stop must end up stored.
    assert!(
        wait(Duration::from_secs(60), &|| all_stored() + 3 >= produced()),
        "the backlog is delivered after the outage"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGTERM) };
    let stop_started = Instant::now();
    let status = child.wait().expect("agent exits");
    let stop_time = stop_started.elapsed();
    assert_eq!(status.code(), Some(0));
    let results: Vec<Value> = std::fs::read_to_string(&output)
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    for id in ids {
        let produced_here = results.iter().filter(|r| r["host"]["id"] == id).count();
        let mut here = stored(id);
        let total = here.len();
        here.sort();
        here.dedup();
        assert_eq!(total, here.len(), "{id}: a result stored twice");
        assert_eq!(
            total, produced_here,
            "{id}: every produced result stored (produced {produced_here}, stored {total})"
        );
    }
    eprintln!(
        "outage {:.1} s: {during_outage} results produced meanwhile, spool {spooled_bytes} bytes ({} bytes/result); {} produced, {} stored; stopped {:.2} s after SIGTERM",
        outage.as_secs_f64(),
        spooled_bytes / during_outage.max(1) as u64,
        results.len(),
        all_stored(),
        stop_time.as_secs_f64(),
    );
}
