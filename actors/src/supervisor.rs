//! The Supervisor: owns the host list, runs one HostActor per host, runs collection cycles on
//! demand or on the schedule, and restarts a failed HostActor alone, with backoff.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use luumen_schemas::report::{HostResult, ResultError, Status};

use crate::host::{Collect, HostActor, Peers};
use crate::reporter::Report;
use crate::spec::HostSpec;

/// Run one collection cycle over every host now.
#[derive(Debug, Message)]
#[rtype(result = "CycleSummary")]
pub struct RunCycle;

/// Run a cycle now and then every `interval`, until the process stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StartSchedule {
    /// Time between the starts of two cycles.
    pub interval: Duration,
    /// Each host starts at a fixed offset within this window after the cycle begins (derived
    /// from its id), so hosts do not all connect at once.
    pub splay: Duration,
}

/// Replace the host list: start added hosts, stop removed ones, restart changed ones (by
/// [`HostSpec::fingerprint`]), leave the rest running. A collection in flight finishes and its
/// result is kept.
#[derive(Debug, Message)]
#[rtype(result = "HostChanges")]
pub struct UpdateHosts(pub Vec<HostSpec>);

/// What [`UpdateHosts`] did, by host id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostChanges {
    /// New hosts.
    pub added: Vec<String>,
    /// Hosts no longer in the list.
    pub removed: Vec<String>,
    /// Hosts whose definition changed (restarted).
    pub changed: Vec<String>,
    /// Hosts left running as they were.
    pub unchanged: usize,
}

/// Stop scheduling new cycles (a running cycle finishes).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopSchedule;

/// Is the Supervisor responsive, and is a cycle running? (Watchdog and shutdown use it.)
#[derive(Debug, Message)]
#[rtype(result = "SupervisorState")]
pub struct Ping;

/// The answer to [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorState {
    /// Cycles started so far.
    pub cycles: u64,
    /// A cycle is in progress.
    pub cycle_running: bool,
}

/// How one cycle went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleSummary {
    /// The cycle's number, from 1.
    pub cycle: u64,
    /// Each host's status, by host id.
    pub statuses: BTreeMap<String, Status>,
    /// Wall time of the cycle.
    pub elapsed: Duration,
}

impl CycleSummary {
    /// How many hosts ended with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.statuses.values().filter(|s| **s == status).count()
    }

    /// Whether every host was collected (ok or partial).
    pub fn all_collected(&self) -> bool {
        self.statuses.values().all(|s| s.is_collected())
    }
}

struct Slot {
    spec: HostSpec,
    actor: Addr<HostActor>,
    /// Restarts in a row (reset when the host collects again).
    restarts: u32,
    /// A restarted actor is not used before this instant.
    hold_until: Option<Instant>,
    /// When the last restarts happened, within the restart policy's period (the budget).
    recent_restarts: std::collections::VecDeque<Instant>,
}

impl Slot {
    fn new(spec: HostSpec, peers: &Peers) -> Slot {
        let actor = HostActor::new(spec.clone(), peers.clone()).start();
        Slot {
            spec,
            actor,
            restarts: 0,
            hold_until: None,
            recent_restarts: std::collections::VecDeque::new(),
        }
    }
}

/// Runs the fleet.
pub struct Supervisor {
    peers: Peers,
    hosts: BTreeMap<String, Slot>,
    cycle: u64,
    cycle_running: bool,
    /// The schedule's timer, so it can be replaced or stopped.
    schedule: Option<SpawnHandle>,
    /// The scheduled cycles' splay window (zero for `RunCycle`).
    splay: Duration,
    /// Skip scheduled cycles while the spool is full (`spool.when_full: skip_cycles`).
    skip_when_spool_full: bool,
    /// Set by [`StopSchedule`]: hosts not started yet in the running cycle are not started.
    stopping: tokio::sync::watch::Sender<bool>,
    restart_policy: RestartPolicy,
}

/// A host's stable offset within the splay window, from its id.
fn splay_offset(id: &str, splay: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    if splay.is_zero() {
        return Duration::ZERO;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    splay.mul_f64((hasher.finish() % 10_000) as f64 / 10_000.0)
}

/// How failed host actors are restarted: backoff doubling from `backoff` up to `backoff_max`,
/// and a restart budget as OTP's intensity and period: a host whose actor fails more than
/// `intensity` times within `period` is parked for a whole `period` (reported every cycle, not
/// collected) instead of being restarted again; a reload that changes the host starts it
/// afresh. Unlike OTP, the failure never escalates: other hosts and the process go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// First pause after a failure; doubles per failure in a row.
    pub backoff: Duration,
    /// Longest pause.
    pub backoff_max: Duration,
    /// Failures allowed within `period`.
    pub intensity: usize,
    /// The window of the budget, and how long a host over budget is parked.
    pub period: Duration,
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy {
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            intensity: 5,
            period: Duration::from_secs(600),
        }
    }
}

impl Supervisor {
    /// A Supervisor for these hosts. Host actors start when the Supervisor starts.
    pub fn new(specs: Vec<HostSpec>, peers: Peers) -> Supervisor {
        let hosts = specs
            .into_iter()
            .map(|spec| (spec.host.id.clone(), Slot::new(spec, &peers)))
            .collect();
        Supervisor {
            peers,
            hosts,
            cycle: 0,
            cycle_running: false,
            schedule: None,
            splay: Duration::ZERO,
            skip_when_spool_full: true,
            stopping: tokio::sync::watch::channel(false).0,
            restart_policy: RestartPolicy::default(),
        }
    }

    /// Replaces the default [`RestartPolicy`].
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Supervisor {
        self.restart_policy = policy;
        self
    }

    /// `false` keeps collecting while the spool is full (new batches then wait in memory).
    pub fn skip_cycles_when_spool_full(mut self, skip: bool) -> Supervisor {
        self.skip_when_spool_full = skip;
        self
    }

    fn restart(&mut self, host_id: &str) {
        let policy = self.restart_policy;
        let Some(slot) = self.hosts.get_mut(host_id) else {
            return;
        };
        slot.restarts += 1;
        let now = Instant::now();
        slot.recent_restarts.push_back(now);
        while slot
            .recent_restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.period)
        {
            slot.recent_restarts.pop_front();
        }
        let over_budget = slot.recent_restarts.len() > policy.intensity;
        let backoff = if over_budget {
            policy.period
        } else {
            policy
                .backoff
                .saturating_mul(1 << slot.restarts.min(16))
                .min(policy.backoff_max)
        };
        slot.hold_until = Some(now + backoff);
        slot.actor = HostActor::new(slot.spec.clone(), self.peers.clone()).start();
        crate::metrics::metrics().host_restarted();
        if over_budget {
            tracing::error!(
                message = "Host actor keeps failing: restart budget exhausted, host parked.",
                host = host_id,
                restarts = slot.restarts,
                failures_in_period = slot.recent_restarts.len(),
                period_seconds = policy.period.as_secs(),
                parked_seconds = backoff.as_secs(),
            );
        } else {
            tracing::warn!(
                message = "Host actor restarted.",
                host = host_id,
                restarts = slot.restarts,
                backoff_ms = backoff.as_millis() as u64
            );
        }
    }

    fn cycle_future(&mut self, splay: Duration) -> ResponseActFuture<Self, CycleSummary> {
        self.cycle += 1;
        self.cycle_running = true;
        let cycle = self.cycle;
        let started = Instant::now();
        tracing::info!(message = "Cycle started.", cycle, hosts = self.hosts.len());
        let now = Instant::now();
        let mut held = Vec::new();
        let mut requests = Vec::new();
        for (id, slot) in &self.hosts {
            if slot.hold_until.is_some_and(|until| until > now) {
                let parked = slot.recent_restarts.len() > self.restart_policy.intensity;
                held.push((slot.spec.clone(), parked));
                continue;
            }
            let id = id.clone();
            let actor = slot.actor.clone();
            let offset = splay_offset(&id, splay);
            let mut stopping = self.stopping.subscribe();
            requests.push(async move {
                // A host still waiting for its splay offset does not start once shutdown began.
                if !offset.is_zero() {
                    tokio::select! {
                        _ = actix_rt::time::sleep(offset) => {}
                        _ = stopping.wait_for(|stop| *stop) => {}
                    }
                }
                if *stopping.borrow() {
                    return (id, None);
                }
                (id, Some(actor.send(Collect { cycle }).await))
            });
        }
        // A host whose actor is restarting is still reported, so it never silently disappears.
        for (spec, parked) in held {
            let message = if parked {
                format!(
                    "host {}: collector failed more than {} times in {} s; parked, not collected this cycle (a reload that changes the host starts it again)",
                    spec.host.id,
                    self.restart_policy.intensity,
                    self.restart_policy.period.as_secs()
                )
            } else {
                format!(
                    "host {}: collector is restarting after a failure; skipped this cycle",
                    spec.host.id
                )
            };
            self.peers
                .reporter
                .do_send(Report(failure_result(&spec, message)));
        }
        let held_ids: Vec<String> = self
            .hosts
            .iter()
            .filter(|(_, s)| s.hold_until.is_some_and(|until| until > now))
            .map(|(id, _)| id.clone())
            .collect();
        Box::pin(
            join_all(requests)
                .into_actor(self)
                .map(move |answers, act, _ctx| {
                    let mut statuses = BTreeMap::new();
                    for id in held_ids {
                        statuses.insert(id, Status::Error);
                    }
                    for (id, answer) in answers {
                        let Some(answer) = answer else {
                            tracing::info!(message = "Host not started: shutting down.", host = %id);
                            continue;
                        };
                        match answer {
                            Ok(status) => {
                                if let Some(slot) = act.hosts.get_mut(&id) {
                                    if status.is_collected() {
                                        slot.restarts = 0;
                                    }
                                }
                                statuses.insert(id, status);
                            }
                            Err(error) => {
                                // The actor died (a panic in its handler, or a peer pool gone):
                                // the cycle's result says so, and the host restarts alone.
                                tracing::error!(message = "Host actor failed.", host = %id, %error);
                                if let Some(slot) = act.hosts.get(&id) {
                                    act.peers.reporter.do_send(Report(failure_result(
                                        &slot.spec,
                                        format!(
                                            "host {id}: collector stopped unexpectedly ({error}); restarted"
                                        ),
                                    )));
                                }
                                act.restart(&id);
                                statuses.insert(id, Status::Error);
                            }
                        }
                    }
                    act.cycle_running = false;
                    let summary = CycleSummary {
                        cycle,
                        statuses,
                        elapsed: started.elapsed(),
                    };
                    tracing::info!(
                        message = "Cycle finished.",
                        cycle,
                        hosts = summary.statuses.len(),
                        ok = summary.count(Status::Ok),
                        partial = summary.count(Status::Partial),
                        failed = summary.statuses.len()
                            - summary.count(Status::Ok)
                            - summary.count(Status::Partial),
                        elapsed_ms = summary.elapsed.as_millis() as u64,
                    );
                    summary
                }),
        )
    }
}

fn failure_result(spec: &HostSpec, message: String) -> HostResult {
    HostResult {
        host: spec.host.clone(),
        collected_at: chrono::Utc::now(),
        duration_ms: 0,
        status: Status::Error,
        properties: Default::default(),
        errors: vec![ResultError {
            property: None,
            kind: "internal".to_owned(),
            message,
        }],
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<RunCycle> for Supervisor {
    type Result = ResponseActFuture<Self, CycleSummary>;

    fn handle(&mut self, _msg: RunCycle, _ctx: &mut Context<Self>) -> Self::Result {
        self.cycle_future(Duration::ZERO)
    }
}

impl Handler<StartSchedule> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: StartSchedule, ctx: &mut Context<Self>) {
        tracing::info!(
            message = "Schedule started.",
            interval_seconds = msg.interval.as_secs()
        );
        let tick = |act: &mut Supervisor, ctx: &mut Context<Supervisor>| {
            if act.cycle_running {
                tracing::warn!(
                    message = "Previous cycle still running; this cycle is skipped.",
                    cycle = act.cycle
                );
                crate::metrics::metrics().cycle_skipped();
                return;
            }
            // Claim the slot now, so a tick during the spool check cannot start a second cycle.
            act.cycle_running = true;
            let full = act.peers.reporter.send(crate::reporter::IsFull);
            ctx.spawn(full.into_actor(act).map(|full, act, ctx| {
                act.cycle_running = false;
                if act.skip_when_spool_full && full.unwrap_or(false) {
                    tracing::error!(
                        message = "Spool full: this cycle is skipped, results already collected are kept.",
                        cycle = act.cycle
                    );
                    crate::metrics::metrics().cycle_skipped();
                    return;
                }
                let cycle = act.cycle_future(act.splay).map(|_summary, _act, _ctx| ());
                ctx.spawn(cycle);
            }));
        };
        self.splay = msg.splay;
        if let Some(previous) = self.schedule.take() {
            // A new interval (reload): no extra cycle now, the next one comes on the new timer.
            ctx.cancel_future(previous);
        } else {
            tick(self, ctx);
        }
        self.schedule = Some(ctx.run_interval(msg.interval, tick));
    }
}

impl Handler<StopSchedule> for Supervisor {
    type Result = ();

    fn handle(&mut self, _msg: StopSchedule, ctx: &mut Context<Self>) {
        self.stopping.send_replace(true);
        if let Some(schedule) = self.schedule.take() {
            ctx.cancel_future(schedule);
            tracing::info!(message = "Schedule stopped.", cycles = self.cycle);
        }
    }
}

impl Handler<Ping> for Supervisor {
    type Result = MessageResult<Ping>;

    fn handle(&mut self, _msg: Ping, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(SupervisorState {
            cycles: self.cycle,
            cycle_running: self.cycle_running,
        })
    }
}

impl Handler<UpdateHosts> for Supervisor {
    type Result = MessageResult<UpdateHosts>;

    fn handle(
        &mut self,
        UpdateHosts(specs): UpdateHosts,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let mut changes = HostChanges::default();
        let mut next = BTreeMap::new();
        for spec in specs {
            let id = spec.host.id.clone();
            match self.hosts.remove(&id) {
                Some(slot) if slot.spec.fingerprint == spec.fingerprint => {
                    changes.unchanged += 1;
                    next.insert(id, slot);
                }
                previous => {
                    // Dropping the old address lets an in-flight collection finish first.
                    if previous.is_some() {
                        changes.changed.push(id.clone());
                    } else {
                        changes.added.push(id.clone());
                    }
                    next.insert(id, Slot::new(spec, &self.peers));
                }
            }
        }
        changes.removed = std::mem::take(&mut self.hosts).into_keys().collect();
        for id in &changes.removed {
            crate::metrics::metrics().host_removed(id);
        }
        self.hosts = next;
        tracing::info!(
            message = "Host list updated.",
            added = ?changes.added,
            removed = ?changes.removed,
            changed = ?changes.changed,
            unchanged = changes.unchanged,
        );
        MessageResult(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splay_offsets_are_stable_spread_and_inside_the_window() {
        let window = Duration::from_secs(60);
        let offsets: Vec<Duration> = (0..200)
            .map(|i| splay_offset(&format!("host-{i}"), window))
            .collect();
        assert!(offsets.iter().all(|o| *o < window));
        assert_eq!(
            splay_offset("host-7", window),
            offsets[7],
            "stable per host"
        );
        let early = offsets.iter().filter(|o| **o < window / 2).count();
        assert!(
            (60..140).contains(&early),
            "spread over the window: {early} of 200 in the first half"
        );
        assert_eq!(splay_offset("x", Duration::ZERO), Duration::ZERO);
    }
}
