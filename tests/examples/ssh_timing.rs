//! Collection time per host against the real sshd of the test harness: runs `luumen-agent once`
//! several times on one host (key auth, sudo user) and on a few hosts at once, and prints the
//! median and spread of `duration_ms` (connect to parsed) and of the agent's wall time.
//!
//! `cargo run --release -p luumen-integration --example ssh_timing -- [RUNS] [HOSTS]`
//! (needs root and a built agent: `LUUMEN_AGENT_BIN=target/release/luumen-agent`).

use std::time::{Duration, Instant};

use luumen_integration::{ensure_test_users, require_root, run_agent, SshdConfig, SshdHarness};
use serde_json::{json, Value};

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() {
    require_root();
    ensure_test_users();
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(9);
    let hosts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let sshd = SshdHarness::start(SshdConfig::with_addresses(hosts)).expect("sshd starts");
    let user = sshd.sudo_user();
    let dir = std::env::temp_dir().join(format!("luumen-timing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let inventory = |n: usize| {
        let list: Vec<Value> = sshd.addresses()[..n]
            .iter()
            .enumerate()
            .map(|(i, address)| {
                json!({"id": format!("h{i}"), "address": address.to_string(), "port": sshd.port(), "protocol": "ssh"})
            })
            .collect();
        let path = dir.join(format!("inventory-{n}.json"));
        let body = json!({"default_credentials": {"username": user.name, "private_key_file": user.private_key, "sudo": true}, "hosts": list});
        std::fs::write(&path, body.to_string()).expect("write inventory");
        path
    };
    for n in [1, hosts] {
        let path = inventory(n);
        let mut durations = Vec::new();
        let mut walls = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            let out = run_agent(
                &[
                    "once",
                    "--inventory",
                    path.to_str().expect("utf-8"),
                    "--output",
                    "-",
                    "--state-dir",
                    dir.join("state").to_str().expect("utf-8"),
                ],
                Duration::from_secs(120),
            );
            walls.push(started.elapsed().as_secs_f64() * 1000.0);
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let result: Value = serde_json::from_str(line).expect("NDJSON line");
                assert_eq!(result["status"], "partial", "{result}");
                durations.push(result["duration_ms"].as_f64().unwrap_or(f64::NAN));
            }
        }
        let (min, max) = durations
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), d| (lo.min(*d), hi.max(*d)));
        println!(
            "hosts={n:<3} runs={runs} per-host duration_ms: median {:.0} (min {min:.0}, max {max:.0}); agent wall ms: median {:.0}",
            median(&mut durations),
            median(&mut walls)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
