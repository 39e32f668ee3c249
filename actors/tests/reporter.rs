//! The Reporter against a real HTTP server on loopback: batches sealed by the timer started by
//! their first result, by count, and on Flush; failed sends stay in the outbox in order and are
//! retried after the server's `Retry-After`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use actix::Actor;
use chrono::Utc;
use luumen_actors::api::ApiClient;
use luumen_actors::reporter::retry::RetryPolicy;
use luumen_actors::reporter::{Flush, Report, Reporter, ReporterConfig};
use luumen_schemas::config::BatchConfig;
use luumen_schemas::inventory::Protocol;
use luumen_schemas::report::{Batch, HostRef, HostResult, Status};
use secrecy::SecretString;

/// One request the server saw: when, what it answered, the body.
struct Seen {
    at: Instant,
    status: u16,
    body: Vec<u8>,
}

/// Answers to give first, in order: status and `Retry-After`.
type Script = VecDeque<(u16, Option<&'static str>)>;

/// A tiny_http server recording POST bodies and answering with a settable status, or with the
/// scripted answers (status, `Retry-After`) first, in order.
struct Server {
    url: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    status: Arc<Mutex<u16>>,
    script: Arc<Mutex<Script>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: Arc<tiny_http::Server>,
}

impl Server {
    fn start() -> Server {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind loopback"));
        let url = format!(
            "http://{}/api/v1",
            server.server_addr().to_ip().expect("ip")
        );
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(200u16));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, b, st, sc, se) = (
            server.clone(),
            bodies.clone(),
            status.clone(),
            script.clone(),
            seen.clone(),
        );
        thread::spawn(move || {
            for mut request in s.incoming_requests() {
                let mut body = Vec::new();
                let _ = request.as_reader().read_to_end(&mut body);
                let scripted = sc.lock().expect("lock").pop_front();
                let (code, retry_after) = scripted.unwrap_or((*st.lock().expect("lock"), None));
                if code < 300 {
                    b.lock().expect("lock").push(body.clone());
                }
                se.lock().expect("lock").push(Seen {
                    at: Instant::now(),
                    status: code,
                    body,
                });
                let mut response = tiny_http::Response::from_string("{}").with_status_code(code);
                if let Some(value) = retry_after {
                    let header =
                        tiny_http::Header::from_bytes("Retry-After", value).expect("valid header");
                    response = response.with_header(header);
                }
                let _ = request.respond(response);
            }
        });
        Server {
            url,
            bodies,
            status,
            script,
            seen,
            server,
        }
    }

    fn batches(&self) -> Vec<Batch> {
        let bodies = self.bodies.lock().expect("lock");
        bodies
            .iter()
            .map(|b| serde_json::from_slice(b).expect("posted body is a Batch"))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn result(id: &str) -> HostResult {
    HostResult {
        host: HostRef {
            id: id.to_owned(),
            address: "127.0.0.1".to_owned(),
            protocol: Protocol::Local,
        },
        collected_at: Utc::now(),
        duration_ms: 1,
        status: Status::Ok,
        properties: Default::default(),
        errors: Vec::new(),
    }
}

/// A policy whose own backoff never fires during a test.
const NO_RETRY: RetryPolicy = RetryPolicy {
    initial: Duration::from_secs(3600),
    max: Duration::from_secs(3600),
};

fn reporter(server: &Server, max_results: usize, max_wait_seconds: u64) -> actix::Addr<Reporter> {
    reporter_with(server, max_results, max_wait_seconds, NO_RETRY)
}

fn reporter_with(
    server: &Server,
    max_results: usize,
    max_wait_seconds: u64,
    retry: RetryPolicy,
) -> actix::Addr<Reporter> {
    start_reporter(server, batch(max_results, max_wait_seconds), retry, None)
}

fn batch(max_results: usize, max_wait_seconds: u64) -> BatchConfig {
    BatchConfig {
        max_results,
        max_bytes: 1 << 20,
        max_wait_seconds,
    }
}

/// A Reporter posting to `server`, on `spool` when given.
fn start_reporter(
    server: &Server,
    batch: BatchConfig,
    retry: RetryPolicy,
    spool: Option<luumen_actors::spool::Spool>,
) -> actix::Addr<Reporter> {
    let api = ApiClient::new(
        &server.url,
        &SecretString::from("key"),
        None,
        Duration::from_secs(5),
    )
    .expect("client");
    Reporter::new(ReporterConfig {
        agent_id: "test".to_owned(),
        batch,
        api: Some(api),
        output: None,
        retry,
        spool,
    })
    .start()
}

async fn wait_async(server: &Server, n: usize, limit: Duration) -> Vec<Batch> {
    let started = Instant::now();
    while server.bodies.lock().expect("lock").len() < n && started.elapsed() < limit {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    server.batches()
}

#[actix_rt::test]
async fn the_first_result_starts_the_batch_timer() {
    let server = Server::start();
    let reporter = reporter(&server, 100, 1);
    reporter.do_send(Report(result("a")));
    reporter.do_send(Report(result("b")));
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.batches().is_empty(),
        "nothing is sent before the timer fires"
    );
    let batches = wait_async(&server, 1, Duration::from_secs(10)).await;
    assert_eq!(batches.len(), 1);
    let ids: Vec<_> = batches[0]
        .results
        .iter()
        .map(|r| r.host.id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);
}

#[actix_rt::test]
async fn failed_batches_stay_queued_in_order_and_are_sent_on_the_next_flush() {
    let server = Server::start();
    *server.status.lock().expect("lock") = 503;
    let reporter = reporter(&server, 1, 3600);
    for id in ["a", "b", "c"] {
        reporter.do_send(Report(result(id)));
    }
    let report = reporter.send(Flush).await.expect("reporter alive");
    assert_eq!(report.results, 3);
    assert_eq!(report.batches_sent, 0);
    assert_eq!(report.results_waiting, 3);
    let error = report.last_error.expect("the failure is reported");
    assert!(
        error.contains("/reports") && error.contains("503"),
        "{error}"
    );

    *server.status.lock().expect("lock") = 200;
    let report = reporter.send(Flush).await.expect("reporter alive");
    assert_eq!(report.batches_waiting, 0);
    assert_eq!(report.results_sent, 3);
    let order: Vec<String> = server
        .batches()
        .iter()
        .flat_map(|b| b.results.iter().map(|r| r.host.id.clone()))
        .collect();
    assert_eq!(order, ["a", "b", "c"], "order is kept after recovery");
}

#[actix_rt::test]
async fn retry_after_is_honoured_and_the_batch_arrives_once_in_order() {
    let server = Server::start();
    server
        .script
        .lock()
        .expect("lock")
        .extend([(503, Some("1")), (503, Some("1"))]);
    // The policy alone would retry within 10 ms; the server's Retry-After must win.
    let policy = RetryPolicy {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(10),
    };
    let reporter = reporter_with(&server, 1, 3600, policy);
    let started = Instant::now();
    reporter.do_send(Report(result("a")));
    reporter.do_send(Report(result("b")));
    let batches = wait_async(&server, 2, Duration::from_secs(15)).await;

    let ids: Vec<&str> = batches
        .iter()
        .flat_map(|b| b.results.iter().map(|r| r.host.id.as_str()))
        .collect();
    assert_eq!(ids, ["a", "b"], "each batch arrives once, in order");
    {
        let seen = server.seen.lock().expect("lock");
        let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
        assert_eq!(statuses, [503, 503, 200, 200], "no extra attempts");
        assert!(
            seen[0].body == seen[1].body && seen[1].body == seen[2].body,
            "the same batch (same batch_id) is sent again"
        );
        let first_ok = seen[2].at.duration_since(started);
        assert!(
            first_ok >= Duration::from_secs(2),
            "delivered after {first_ok:?}, before two Retry-After: 1"
        );
        for pair in seen.windows(2).take(2) {
            let gap = pair[1].at.duration_since(pair[0].at);
            assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
        }
    }

    let report = reporter.send(Flush).await.expect("reporter alive");
    assert_eq!(report.batches_sent, 2);
    assert_eq!(report.batches_waiting, 0);
    assert_eq!(report.last_error, None);
}

fn spooled_reporter(server: &Server, dir: &std::path::Path) -> actix::Addr<Reporter> {
    let (spool, _) = luumen_actors::spool::Spool::open(dir, Default::default()).expect("spool");
    start_reporter(server, batch(100, 3600), NO_RETRY, Some(spool))
}

/// Results of a batch that was never sealed (the process died) are in the journal: the next
/// start seals them with the batch's original id and sends them once.
#[test]
fn results_of_the_open_batch_survive_a_stop_without_flush() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("temp dir");
    *server.status.lock().expect("lock") = 503;
    actix::System::new().block_on(async {
        let reporter = spooled_reporter(&server, dir.path());
        for id in ["a", "b", "c"] {
            reporter.do_send(Report(result(id)));
        }
        // Past the group-commit delay; no Flush, no batch timer: the batch stays open.
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    });
    assert!(server.seen.lock().expect("lock").is_empty(), "nothing sent");
    assert!(
        std::fs::metadata(dir.path().join("open.journal"))
            .expect("journal")
            .len()
            > 0
    );

    *server.status.lock().expect("lock") = 200;
    let report = actix::System::new().block_on(async {
        let reporter = spooled_reporter(&server, dir.path());
        reporter.send(Flush).await.expect("reporter alive")
    });
    assert_eq!(report.batches_sent, 1);
    let batches = server.batches();
    assert_eq!(batches.len(), 1);
    let ids: Vec<_> = batches[0]
        .results
        .iter()
        .map(|r| r.host.id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b", "c"], "every result, in order");

    // A third start finds nothing left to send.
    let report = actix::System::new().block_on(async {
        let reporter = spooled_reporter(&server, dir.path());
        reporter.send(Flush).await.expect("reporter alive")
    });
    assert_eq!(report.batches_sent, 0);
    assert_eq!(server.batches().len(), 1, "sent once");
}

/// A sealed batch the spool refuses (full) waits in memory and keeps its results in the
/// journal: a stop without flush loses nothing, and the next start (with room) sends it.
#[test]
fn a_batch_the_full_spool_refused_survives_a_stop_through_the_journal() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("temp dir");
    *server.status.lock().expect("lock") = 503;
    let start = |max_bytes: u64| {
        let (spool, _) = luumen_actors::spool::Spool::open(
            dir.path(),
            luumen_actors::spool::SpoolLimits {
                max_bytes,
                ..Default::default()
            },
        )
        .expect("spool");
        start_reporter(&server, batch(2, 3600), NO_RETRY, Some(spool))
    };
    actix::System::new().block_on(async {
        // Too small for any batch: a+b are sealed but stay in memory; c is in the open batch.
        let reporter = start(64);
        for id in ["a", "b", "c"] {
            reporter.do_send(Report(result(id)));
        }
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    });
    *server.status.lock().expect("lock") = 200;
    let report = actix::System::new().block_on(async {
        let reporter = start(1 << 30);
        reporter.send(Flush).await.expect("reporter alive")
    });
    assert_eq!(report.batches_waiting, 0, "{report:?}");
    let mut ids: Vec<String> = server
        .batches()
        .iter()
        .flat_map(|b| b.results.iter().map(|r| r.host.id.clone()))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids, ["a", "b", "c"], "every result delivered");
}
