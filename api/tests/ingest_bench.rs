//! Ingest speed (host results per second into SQLite), for `make bench`:
//! `cargo test -p luumen-api --release --test ingest_bench -- --ignored --nocapture`.
//! Measured, not asserted.

use std::time::Instant;

use chrono::Utc;
use luumen_api::store::sqlite::SqliteStore;
use luumen_api::store::Store;
use luumen_schemas::report::Batch;
use serde_json::{json, Value};

fn batch(hosts: std::ops::Range<usize>, cycle: usize, packages: usize) -> Batch {
    let results: Vec<Value> = hosts
        .map(|h| {
            let packages: Vec<Value> = (0..packages)
                .map(|p| {
                    // every 50th package gets a new release each cycle
                    let release = if p % 50 == 0 { format!("{cycle}.el9") } else { "1.el9".into() };
                    json!({"name": format!("pkg-{p}"), "epoch": null, "version": "1.2.3",
                           "release": release, "arch": "x86_64", "source": null, "manager": "rpm"})
                })
                .collect();
            json!({
                "host": {"id": format!("host-{h}"), "address": format!("10.0.{}.{}", h / 250, h % 250), "protocol": "ssh"},
                "collected_at": Utc::now().to_rfc3339(),
                "duration_ms": 900,
                "status": "ok",
                "properties": {"os": {"family": "linux", "id": "rocky", "id_like": [], "uptime_seconds": cycle},
                               "packages": packages},
                "errors": []
            })
        })
        .collect();
    serde_json::from_value(json!({
        "agent_id": "bench", "batch_id": uuid::Uuid::new_v4().to_string(),
        "sent_at": Utc::now().to_rfc3339(), "results": results
    }))
    .expect("valid batch")
}

#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn ingest_throughput() {
    let hosts: usize = std::env::var("BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let packages: usize = std::env::var("BENCH_PACKAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    for cycle in 0..2 {
        let batches: Vec<Batch> = (0..hosts)
            .step_by(100)
            .map(|s| batch(s..(s + 100).min(hosts), cycle, packages))
            .collect();
        let started = Instant::now();
        for b in &batches {
            store.ingest(b, "bench-key", Utc::now()).unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "cycle {cycle} ({}): {hosts} host results x {packages} packages in {secs:.2} s = {:.0} results/s",
            if cycle == 0 { "first inventory" } else { "2% of packages changed" },
            hosts as f64 / secs
        );
    }
    let size: u64 = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!("data dir: {:.1} MB", size as f64 / 1e6);
}
