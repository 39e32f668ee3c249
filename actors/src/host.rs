//! The host actor: one per managed host. Holds the host's state and turns one cycle into one
//! timestamped [`HostResult`] sent to the Reporter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use luumen_properties::plan::{Plan, PlanOptions};
use luumen_properties::Properties;
use luumen_protocols::ErrorKind as TransportKind;
use luumen_schemas::report::{HostResult, ResultError, Status};

use crate::collector::{CollectorActor, ParseLinux, ParseWindows};
use crate::protocol::{ExecFailure, Execute, ProtocolActor};
use crate::reporter::{Report, Reporter};
use crate::spec::HostSpec;

/// Collect this host once and report the result.
#[derive(Debug, Message)]
#[rtype(result = "Status")]
pub struct Collect {
    /// The cycle number, for logs.
    pub cycle: u64,
}

/// The addresses a host actor talks to.
#[derive(Clone)]
pub struct Peers {
    /// The transport pool.
    pub protocol: Addr<ProtocolActor>,
    /// The parser pool.
    pub collector: Addr<CollectorActor>,
    /// Where results go.
    pub reporter: Addr<Reporter>,
    /// Vault, for hosts whose credentials reference it.
    pub vault: Option<crate::vault::VaultClient>,
}

/// One managed host.
pub struct HostActor {
    spec: HostSpec,
    peers: Peers,
    /// When the host was last collected with status ok or partial.
    last_success: Option<DateTime<Utc>>,
    /// Cycles in a row that did not collect the host.
    consecutive_failures: u32,
    /// The last host-level error, for logs and later for the API.
    last_error: Option<String>,
    /// Unreachable results in a row: the circuit breaker opens from the second.
    unreachable_streak: u32,
    /// When the host was last actually tried.
    last_attempt: Option<DateTime<Utc>>,
    /// While the breaker is open, the host is not connected to before this time.
    next_attempt: Option<DateTime<Utc>>,
}

/// First pause of an open circuit breaker; doubles per further unreachable attempt.
const BREAKER_BASE_SECONDS: i64 = 30;
/// Longest pause of the circuit breaker.
const BREAKER_MAX_SECONDS: i64 = 3600;

impl HostActor {
    /// A host actor with no history.
    pub fn new(spec: HostSpec, peers: Peers) -> HostActor {
        HostActor {
            spec,
            peers,
            last_success: None,
            consecutive_failures: 0,
            last_error: None,
            unreachable_streak: 0,
            last_attempt: None,
            next_attempt: None,
        }
    }

    fn record(&mut self, result: &HostResult) {
        self.last_attempt = Some(result.collected_at);
        if result.status == Status::Unreachable {
            self.unreachable_streak += 1;
            if self.unreachable_streak >= 2 {
                let doublings = (self.unreachable_streak - 2).min(16);
                let pause = (BREAKER_BASE_SECONDS << doublings).min(BREAKER_MAX_SECONDS);
                self.next_attempt = Some(result.collected_at + chrono::Duration::seconds(pause));
            }
        } else {
            self.unreachable_streak = 0;
            self.next_attempt = None;
        }
        if result.status.is_collected() {
            self.last_success = Some(result.collected_at);
            self.consecutive_failures = 0;
            self.last_error = None;
        } else {
            self.consecutive_failures += 1;
            self.last_error = result.errors.first().map(|e| e.message.clone());
        }
    }
}

impl HostActor {
    /// The result of a cycle skipped by the open circuit breaker, if it is open.
    fn breaker_result(&self) -> Option<HostResult> {
        let next = self.next_attempt?;
        let now = Utc::now();
        if now >= next {
            return None;
        }
        let last = self
            .last_attempt
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        Some(HostResult {
            host: self.spec.host.clone(),
            collected_at: now,
            duration_ms: 0,
            status: Status::Unreachable,
            properties: Properties::default(),
            errors: vec![ResultError {
                property: None,
                kind: "unreachable".to_owned(),
                message: format!(
                    "host {}: not attempted: unreachable {} times in a row, next attempt after {}; last attempt at {last}: {}",
                    self.spec.host.id,
                    self.unreachable_streak,
                    next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    self.last_error.as_deref().unwrap_or("unknown error"),
                ),
            }],
        })
    }
}

impl Actor for HostActor {
    type Context = Context<Self>;
}

/// Results admitted beyond the protocol pool's threads: finished hosts whose output waits for
/// the parsers or whose result waits for the Reporter. Without a bound, 256 transport threads
/// outrun the 2 parser threads and the Reporter (they share 2 CPUs) and results pile up: 300 MiB
/// at 2,000 simulated hosts (bench/results.md).
const RESULTS_WAITING_MAX: usize = 64;

/// Hosts admitted and not yet handed to the Reporter, in this process.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Wakes a host waiting for admission when one is released.
static RELEASED: std::sync::LazyLock<tokio::sync::Notify> =
    std::sync::LazyLock::new(tokio::sync::Notify::new);

/// The most hosts in flight: the protocol pool's threads plus [`RESULTS_WAITING_MAX`].
fn in_flight_limit() -> usize {
    crate::protocol::pool_threads().max(1) + RESULTS_WAITING_MAX
}

/// A host's place among the hosts in flight; released on drop.
struct Admission;

impl Drop for Admission {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        RELEASED.notify_one();
    }
}

/// Waits until fewer than [`in_flight_limit`] hosts are in flight, and takes a place.
async fn admit() -> Admission {
    loop {
        // Registered before the check, so a release in between is not missed.
        let released = RELEASED.notified();
        let current = IN_FLIGHT.load(Ordering::Acquire);
        if current < in_flight_limit() {
            if IN_FLIGHT
                .compare_exchange(current, current + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Admission;
            }
            continue;
        }
        released.await;
    }
}

/// What one collection produced before it is stamped into a [`HostResult`].
struct Outcome {
    status: Status,
    properties: Properties,
    errors: Vec<ResultError>,
    /// A peer actor is gone: this host actor cannot work and must be restarted.
    broken: bool,
}

impl Handler<Collect> for HostActor {
    type Result = ResponseActFuture<Self, Status>;

    fn handle(&mut self, msg: Collect, _ctx: &mut Context<Self>) -> Self::Result {
        crate::fault::maybe_panic(&self.spec.host.id);
        if let Some(result) = self.breaker_result() {
            // Still reported every cycle, with the last error and when it happened.
            let status = result.status;
            log_result(msg.cycle, &result);
            self.peers.reporter.do_send(Report(result));
            return Box::pin(actix::fut::ready(status));
        }
        if let crate::Target::Ssh(target) = &self.spec.target {
            if target.host_key.policy == luumen_protocols::hostkey::HostKeyPolicy::Off {
                tracing::warn!(
                    message = "Host key checking is off for this host: its identity is not verified.",
                    host = %self.spec.host.id,
                );
            }
        }
        let collected_at = Utc::now();
        let clock = Instant::now();
        let spec = self.spec.clone();
        let peers = self.peers.clone();
        let work = async move {
            let target = match resolve_vault(&spec, peers.vault.as_ref()).await {
                Ok(target) => target,
                Err(message) => return (credential_failure(message), None),
            };
            // Back-pressure: the pool takes this host only while few results wait for the
            // parsers and the Reporter (held until the Reporter has the result).
            let admission = admit().await;
            // Windows hosts run the PowerShell catalogue, every other host the Linux plan.
            let plan = match &target {
                crate::Target::Winrm(_) => None,
                _ => Some(Plan::linux(
                    &PlanOptions {
                        use_sudo: spec.use_sudo,
                    },
                    uuid::Uuid::new_v4().as_u128(),
                )),
            };
            let (command, script) = match &plan {
                Some(plan) => (plan.command(), plan.script()),
                None => ("powershell", luumen_properties::windows::script()),
            };
            let execute = Execute {
                host_id: spec.host.id.clone(),
                target,
                command,
                stdin: script.as_bytes().to_vec(),
                limits: spec.limits,
            };
            let outcome = match peers.protocol.send(execute).await {
                Err(mailbox) => broken(format!("protocol pool unavailable: {mailbox}")),
                Ok(Err(failure)) => failed(&failure),
                Ok(Ok(output)) => {
                    let host_id = spec.host.id.clone();
                    let parsed = match plan {
                        Some(plan) => {
                            peers
                                .collector
                                .send(ParseLinux {
                                    host_id,
                                    plan,
                                    output,
                                })
                                .await
                        }
                        None => peers.collector.send(ParseWindows { host_id, output }).await,
                    };
                    match parsed {
                        Err(mailbox) => broken(format!("collector pool unavailable: {mailbox}")),
                        Ok(collected) => {
                            let errors: Vec<ResultError> = collected
                                .errors
                                .into_iter()
                                .map(|e| ResultError {
                                    property: Some(e.property),
                                    kind: kind_name(&e.kind),
                                    message: e.message,
                                })
                                .collect();
                            let status = if collected.properties == Properties::default() {
                                Status::Error
                            } else if errors.is_empty() {
                                Status::Ok
                            } else {
                                Status::Partial
                            };
                            Outcome {
                                status,
                                properties: collected.properties,
                                errors,
                                broken: false,
                            }
                        }
                    }
                }
            };
            (outcome, Some(admission))
        };
        Box::pin(
            work.into_actor(self)
                .then(move |(outcome, admission), act, ctx| {
                    let result = HostResult {
                        host: act.spec.host.clone(),
                        collected_at,
                        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
                        status: outcome.status,
                        properties: outcome.properties,
                        errors: outcome.errors,
                    };
                    log_result(msg.cycle, &result);
                    crate::metrics::metrics().host_collected(
                        &result.host.id,
                        result.status,
                        result.duration_ms,
                    );
                    act.record(&result);
                    let status = result.status;
                    // The admission is released once the Reporter has taken the result (a full
                    // Reporter mailbox makes this wait too); a Reporter that is gone loses nothing more
                    // than `do_send` did.
                    let taken = if outcome.broken {
                        act.peers.reporter.do_send(Report(result));
                        // The Supervisor sees the closed mailbox and restarts this host alone.
                        ctx.stop();
                        None
                    } else {
                        Some(act.peers.reporter.send(Report(result)))
                    };
                    async move {
                        if let Some(taken) = taken {
                            let _ = taken.await;
                        }
                        drop(admission);
                        status
                    }
                    .into_actor(act)
                }),
        )
    }
}

/// The host's target with its Vault references resolved for this cycle only.
pub(crate) async fn resolve_vault(
    spec: &HostSpec,
    vault: Option<&crate::vault::VaultClient>,
) -> Result<crate::Target, String> {
    let Some(credentials) = &spec.vault_credentials else {
        return Ok(spec.target.clone());
    };
    let Some(vault) = vault else {
        return Err(format!(
            "host {}: credentials reference Vault but config.yaml has no vault block",
            spec.host.id
        ));
    };
    let mut resolved = credentials.clone();
    crate::vault::resolve_credentials(vault, &mut resolved)
        .await
        .map_err(|e| format!("host {}: {e}", spec.host.id))?;
    match &spec.target {
        crate::Target::Ssh(target) => {
            let mut target = target.clone();
            target.username = resolved.username.clone();
            target.auth = crate::spec::ssh_auth(&resolved).map_err(|missing| {
                format!("host {}: credentials from Vault {missing}", spec.host.id)
            })?;
            Ok(crate::Target::Ssh(target))
        }
        crate::Target::Winrm(target) => {
            let mut target = target.clone();
            target.username = resolved.username.clone();
            target.password = resolved.password.clone().ok_or_else(|| {
                format!(
                    "host {}: credentials from Vault have no password (winrm needs one)",
                    spec.host.id
                )
            })?;
            Ok(crate::Target::Winrm(target))
        }
        other => Ok(other.clone()),
    }
}

/// Credentials that could not be had (e.g. a Vault 403/404): not retried within the cycle.
fn credential_failure(message: String) -> Outcome {
    Outcome {
        status: Status::Error,
        properties: Properties::default(),
        errors: vec![ResultError {
            property: None,
            kind: "credentials".to_owned(),
            message,
        }],
        broken: false,
    }
}

fn broken(message: String) -> Outcome {
    Outcome {
        status: Status::Error,
        properties: Properties::default(),
        errors: vec![ResultError {
            property: None,
            kind: "internal".to_owned(),
            message,
        }],
        broken: true,
    }
}

fn failed(failure: &ExecFailure) -> Outcome {
    let status = match failure {
        ExecFailure::Transport(error) => match error.kind {
            TransportKind::Unreachable { .. } => Status::Unreachable,
            TransportKind::AuthFailed { .. } => Status::AuthFailed,
            TransportKind::Timeout { .. } => Status::Timeout,
            TransportKind::HostKeyMismatch { .. } | TransportKind::HostKeyUnknown { .. } => {
                Status::HostKeyMismatch
            }
            _ => Status::Error,
        },
        ExecFailure::Unsupported { .. } | ExecFailure::Panicked { .. } => Status::Error,
    };
    let kind = match failure {
        ExecFailure::Transport(error) => match error.kind {
            TransportKind::KeyFile { .. } => "credentials",
            TransportKind::HostKeyUnknown { .. } => "host_key_unknown",
            TransportKind::HostKeyStore { .. } => "known_hosts",
            TransportKind::OutputTooLarge { .. } => "output_too_large",
            TransportKind::Ssh { .. } | TransportKind::WinRm { .. } => "protocol",
            TransportKind::WsManFault { .. } => "winrm_fault",
            TransportKind::Certificate { .. } => "certificate",
            TransportKind::Settings { .. } => "settings",
            TransportKind::Local(_) => "local_exec",
            _ => status.as_str(),
        },
        ExecFailure::Unsupported { .. } => "unsupported",
        ExecFailure::Panicked { .. } => "internal",
    };
    Outcome {
        status,
        properties: Properties::default(),
        errors: vec![ResultError {
            property: None,
            kind: kind.to_owned(),
            message: failure.to_string(),
        }],
        broken: false,
    }
}

fn kind_name(kind: &luumen_properties::ErrorKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "unknown".to_owned(),
    }
}

fn log_result(cycle: u64, result: &HostResult) {
    let host = result.host.id.as_str();
    let status = result.status.as_str();
    let duration_ms = result.duration_ms;
    if result.status.is_collected() {
        tracing::info!(
            message = "Host collected.",
            cycle,
            host,
            status,
            duration_ms
        );
        for error in &result.errors {
            tracing::warn!(
                message = "Property not collected.",
                cycle,
                host,
                property = error.property.as_deref().unwrap_or("-"),
                kind = %error.kind,
                error = %error.message,
            );
        }
    } else {
        let error = result
            .errors
            .first()
            .map(|e| e.message.as_str())
            .unwrap_or("");
        tracing::warn!(
            message = "Host not collected.",
            cycle,
            host,
            status,
            duration_ms,
            error
        );
    }
}
