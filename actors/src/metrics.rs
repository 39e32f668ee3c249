//! Process-wide metrics in the Prometheus text format: hosts by last status, collection
//! durations, spool size, API send failures, batches sent, host-actor restarts.
//!
//! One registry per process ([`metrics`]), updated by the actors and rendered by the agent's
//! `metrics_listen` endpoint.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use luumen_schemas::report::Status;

/// Upper bounds (seconds) of the collection-duration histogram buckets.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

/// The registry.
#[derive(Default)]
pub struct Metrics {
    last_status: Mutex<BTreeMap<String, Status>>,
    duration_buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_ms: AtomicU64,
    send_failures: AtomicU64,
    batches_sent: AtomicU64,
    batches_quarantined: AtomicU64,
    restarts: AtomicU64,
    spool_records: AtomicU64,
    spool_bytes: AtomicU64,
    cycles_skipped: AtomicU64,
}

/// The process's registry.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

impl Metrics {
    /// A host finished a collection.
    pub fn host_collected(&self, host: &str, status: Status, duration_ms: u64) {
        if let Ok(mut map) = self.last_status.lock() {
            map.insert(host.to_owned(), status);
        }
        let seconds = duration_ms as f64 / 1000.0;
        for (bucket, bound) in self.duration_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_ms
            .fetch_add(duration_ms, Ordering::Relaxed);
    }

    /// A host left the host list (reload).
    pub fn host_removed(&self, host: &str) {
        if let Ok(mut map) = self.last_status.lock() {
            map.remove(host);
        }
    }

    /// A batch could not be sent.
    pub fn send_failed(&self) {
        self.send_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The API accepted a batch.
    pub fn batch_sent(&self) {
        self.batches_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// The API refused a batch for good.
    pub fn batch_quarantined(&self) {
        self.batches_quarantined.fetch_add(1, Ordering::Relaxed);
    }

    /// A host actor was restarted.
    pub fn host_restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// A scheduled cycle was skipped (the previous one still ran).
    pub fn cycle_skipped(&self) {
        self.cycles_skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// What waits in the spool now.
    pub fn spool_size(&self, records: u64, bytes: u64) {
        self.spool_records.store(records, Ordering::Relaxed);
        self.spool_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counts: BTreeMap<&str, usize> = self
            .last_status
            .lock()
            .map(|map| {
                Status::ALL
                    .iter()
                    .map(|s| (s.as_str(), map.values().filter(|v| *v == s).count()))
                    .collect()
            })
            .unwrap_or_default();
        out.push_str("# HELP luumen_hosts Managed hosts by the status of their last collection.\n# TYPE luumen_hosts gauge\n");
        for (status, count) in &counts {
            let _ = writeln!(out, "luumen_hosts{{status=\"{status}\"}} {count}");
        }
        out.push_str("# HELP luumen_collection_duration_seconds Time to collect one host.\n# TYPE luumen_collection_duration_seconds histogram\n");
        for (bucket, bound) in self.duration_buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "luumen_collection_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                load(bucket)
            );
        }
        let count = load(&self.duration_count);
        let _ = writeln!(
            out,
            "luumen_collection_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "luumen_collection_duration_seconds_sum {}",
            load(&self.duration_sum_ms) as f64 / 1000.0
        );
        let _ = writeln!(out, "luumen_collection_duration_seconds_count {count}");
        let simple = [
            (
                "luumen_spool_records",
                "gauge",
                "Batches waiting in the spool.",
                load(&self.spool_records),
            ),
            (
                "luumen_spool_bytes",
                "gauge",
                "Bytes of batches waiting in the spool.",
                load(&self.spool_bytes),
            ),
            (
                "luumen_api_send_failures_total",
                "counter",
                "Failed attempts to send a batch.",
                load(&self.send_failures),
            ),
            (
                "luumen_batches_sent_total",
                "counter",
                "Batches the API accepted.",
                load(&self.batches_sent),
            ),
            (
                "luumen_batches_quarantined_total",
                "counter",
                "Batches the API refused for good.",
                load(&self.batches_quarantined),
            ),
            (
                "luumen_host_restarts_total",
                "counter",
                "Host actors restarted after a failure.",
                load(&self.restarts),
            ),
            (
                "luumen_cycles_skipped_total",
                "counter",
                "Scheduled cycles skipped because the previous one still ran.",
                load(&self.cycles_skipped),
            ),
        ];
        for (name, kind, help, value) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_hosts_histogram_and_counters() {
        let m = Metrics::default();
        m.host_collected("a", Status::Ok, 80);
        m.host_collected("b", Status::Unreachable, 2_000);
        m.host_collected("a", Status::Partial, 120);
        m.send_failed();
        m.spool_size(3, 4096);
        let text = m.render();
        for line in [
            "luumen_hosts{status=\"partial\"} 1",
            "luumen_hosts{status=\"unreachable\"} 1",
            "luumen_hosts{status=\"ok\"} 0",
            "luumen_collection_duration_seconds_bucket{le=\"0.1\"} 1",
            "luumen_collection_duration_seconds_bucket{le=\"2.5\"} 3",
            "luumen_collection_duration_seconds_bucket{le=\"+Inf\"} 3",
            "luumen_collection_duration_seconds_count 3",
            "luumen_api_send_failures_total 1",
            "luumen_spool_records 3",
            "luumen_spool_bytes 4096",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        m.host_removed("b");
        assert!(m
            .render()
            .contains("luumen_hosts{status=\"unreachable\"} 0"));
    }
}
