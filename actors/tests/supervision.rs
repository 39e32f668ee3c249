//! Supervision with real host actors collecting this machine (`local`): one host whose actor
//! panics at every collection (fault injection, `LUUMEN_FAULT_PANIC_HOSTS`) is restarted alone,
//! with backoff, until its restart budget is spent and it is parked; the other host is collected
//! every cycle and the Supervisor keeps running.

use std::time::Duration;

use actix::{Actor, SyncArbiter};
use luumen_actors::collector::CollectorActor;
use luumen_actors::host::Peers;
use luumen_actors::protocol::ProtocolActor;
use luumen_actors::reporter::output::NdjsonOutput;
use luumen_actors::reporter::retry::RetryPolicy;
use luumen_actors::reporter::{Reporter, ReporterConfig};
use luumen_actors::supervisor::{RestartPolicy, RunCycle, Supervisor};
use luumen_actors::{HostSpec, SshSettings};
use luumen_schemas::config::{BatchConfig, HostKeyPolicy, Timeouts};
use luumen_schemas::inventory::Inventory;
use luumen_schemas::report::Status;

#[test]
fn a_panicking_host_actor_is_restarted_alone_then_parked_by_its_budget() {
    // Read once by the first collection; this test binary runs in its own process.
    std::env::set_var(luumen_actors::fault::PANIC_HOSTS_VAR, "bad");
    let dir = tempfile::tempdir().expect("temp dir");
    let output_path = dir.path().join("out.ndjson");
    let inventory: Inventory = serde_json::from_value(serde_json::json!({"hosts": [
        {"id": "good", "protocol": "local"},
        {"id": "bad", "protocol": "local"},
    ]}))
    .expect("inventory");
    let ssh = SshSettings {
        host_key_policy: HostKeyPolicy::Strict,
        pin_file: dir.path().join("known_hosts"),
        known_hosts_files: Vec::new(),
        allow_ssh_rsa_sha1: false,
    };
    let specs = HostSpec::from_inventory(&inventory, &Timeouts::default(), &ssh);
    let policy = RestartPolicy {
        backoff: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        intensity: 2,
        period: Duration::from_secs(60),
    };
    let summaries = actix::System::new().block_on(async {
        let file = std::fs::File::create(&output_path).expect("output file");
        let reporter = Reporter::new(ReporterConfig {
            agent_id: "test".to_owned(),
            batch: BatchConfig::default(),
            api: None,
            output: Some(NdjsonOutput::File(std::io::BufWriter::new(file))),
            retry: RetryPolicy::default(),
            spool: None,
        })
        .start();
        let peers = Peers {
            protocol: SyncArbiter::start(2, || ProtocolActor),
            collector: SyncArbiter::start(1, || CollectorActor),
            reporter,
            vault: None,
        };
        let supervisor = Supervisor::new(specs, peers).restart_policy(policy).start();
        let mut summaries = Vec::new();
        for _ in 0..6 {
            summaries.push(supervisor.send(RunCycle).await.expect("supervisor alive"));
            // Past the (short) backoff, so the restarted actor is used next cycle.
            actix_rt::time::sleep(Duration::from_millis(60)).await;
        }
        summaries
    });
    for summary in &summaries {
        assert!(
            summary.statuses["good"].is_collected(),
            "cycle {}: {:?}",
            summary.cycle,
            summary.statuses
        );
        assert_eq!(
            summary.statuses["bad"],
            Status::Error,
            "cycle {}",
            summary.cycle
        );
    }
    let lines = std::fs::read_to_string(&output_path).expect("output");
    let bad: Vec<String> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["host"]["id"] == "bad")
        .map(|v| v["errors"][0]["message"].as_str().unwrap_or("").to_owned())
        .collect();
    let good = lines
        .lines()
        .filter(|l| l.contains("\"id\":\"good\""))
        .count();
    assert_eq!(good, 6, "the good host is collected every cycle");
    assert_eq!(
        bad.len(),
        6,
        "the bad host is reported every cycle: {bad:?}"
    );
    // Three failures (intensity 2 allows two restarts within the period), then parked.
    let crashed = bad
        .iter()
        .filter(|m| m.contains("collector stopped unexpectedly"))
        .count();
    let parked = bad.iter().filter(|m| m.contains("parked")).count();
    assert_eq!(crashed, 3, "{bad:?}");
    assert_eq!(parked, 3, "{bad:?}");
}
