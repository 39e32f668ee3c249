//! The Reporter actor.

use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use luumen_schemas::config::BatchConfig;
use luumen_schemas::report::HostResult;
use tokio::sync::oneshot;

use super::batcher::{Batcher, SealedBatch};
use super::outbox::Outbox;
use super::output::NdjsonOutput;
use super::retry::{unit_random, RetryPolicy};
use crate::api::ApiClient;
use crate::metrics::metrics;

/// One host's result, to be written and batched.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Report(pub HostResult);

/// Seal the current batch and try to send everything waiting; answers once each waiting batch
/// was sent or its send failed.
#[derive(Debug, Message)]
#[rtype(result = "DeliveryReport")]
pub struct Flush;

/// Is there no room for new batches on disk (spool full, or a batch already waits in memory
/// because it did not fit)?
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct IsFull;

/// A reload changed config.yaml's `api` or `batch`: use these from now on. Batches already
/// sealed keep their ids and bodies and go to the new endpoint.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Reconfigure {
    /// The new API client, when `api` changed.
    pub api: Option<ApiClient>,
    /// The new batch limits, when `batch` changed.
    pub batch: Option<BatchConfig>,
}

/// What the Reporter has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Results received.
    pub results: usize,
    /// Batches the API accepted.
    pub batches_sent: usize,
    /// Results in those batches.
    pub results_sent: usize,
    /// Batches still waiting (not delivered yet).
    pub batches_waiting: usize,
    /// Results in those batches.
    pub results_waiting: usize,
    /// The last send error, if the last attempt failed.
    pub last_error: Option<String>,
    /// NDJSON lines that could not be written.
    pub output_errors: usize,
    /// Batches the API refused for good (4xx), set aside in the spool's quarantine.
    pub batches_quarantined: usize,
}

/// A rejected key is the agent's configuration problem, not the batch's: keep the batch.
fn is_key_problem(error: &crate::api::ApiError) -> bool {
    matches!(error.kind, crate::api::ApiErrorKind::KeyRejected(_))
}

/// How the Reporter is set up.
pub struct ReporterConfig {
    /// Names this agent in every batch.
    pub agent_id: String,
    /// When to seal a batch.
    pub batch: BatchConfig,
    /// Where to post batches; `None` = no API (NDJSON only).
    pub api: Option<ApiClient>,
    /// The NDJSON copy.
    pub output: Option<NdjsonOutput>,
    /// When to send again after a failed send: exponential backoff with full jitter, the
    /// server's `Retry-After` honoured (the `run` loop; `Flush` sends at once).
    pub retry: RetryPolicy,
    /// The durable spool batches wait in; `None` keeps them in memory.
    pub spool: Option<crate::spool::Spool>,
}

/// Batches results and posts them to the API in order.
pub struct Reporter {
    batcher: Batcher,
    max_wait: Duration,
    api: Option<ApiClient>,
    output: Option<NdjsonOutput>,
    retry: RetryPolicy,
    /// Sealed batches not yet accepted by the API, oldest first.
    outbox: Outbox,
    /// A send is under way (at most one at a time, to keep order).
    sending: bool,
    /// Increments whenever the open batch is sealed, so a stale timer does nothing.
    batch_generation: u64,
    /// Flush callers waiting for the outbox to drain or stall.
    waiters: Vec<oneshot::Sender<DeliveryReport>>,
    stats: DeliveryReport,
    /// Failed sends since the last answer from the API (reset by a 2xx or a quarantine).
    failures: u32,
    /// The pending retry timer; while it runs, new batches wait for it (only `Flush` sends at
    /// once).
    retry_timer: Option<SpawnHandle>,
    /// Results written to the open-batch journal but not yet synced: (host, collected_at).
    unsynced: Vec<(String, chrono::DateTime<Utc>)>,
    /// The pending journal sync (group commit).
    sync_timer: Option<SpawnHandle>,
    /// A result could not be written to the journal: rewrite it from the batcher's state.
    journal_stale: bool,
}

/// How long a journal write waits for others before one `fdatasync` makes them all durable.
const JOURNAL_SYNC_DELAY: Duration = Duration::from_millis(5);

impl Reporter {
    /// A Reporter on the outbox of `config.spool`. A batch that was open when the agent last
    /// stopped (found in the spool's journal) is sealed with its original id.
    pub fn new(config: ReporterConfig) -> Reporter {
        let mut reporter = Reporter {
            batcher: Batcher::new(&config.agent_id, config.batch),
            max_wait: Duration::from_secs(config.batch.max_wait_seconds),
            api: config.api,
            output: config.output,
            retry: config.retry,
            outbox: Outbox::new(config.spool),
            sending: false,
            batch_generation: 0,
            waiters: Vec::new(),
            stats: DeliveryReport::default(),
            failures: 0,
            retry_timer: None,
            unsynced: Vec::new(),
            sync_timer: None,
            journal_stale: false,
        };
        reporter.recover_open_batch();
        reporter
    }

    fn recover_open_batch(&mut self) {
        for open in self.outbox.take_open_batches() {
            tracing::info!(message = "Sealing a batch found in the journal at start.", batch_id = %open.batch_id, results = open.results.len());
            for batch in self
                .batcher
                .seal_recovered(open.batch_id, open.results, Utc::now())
            {
                self.outbox.push(batch);
            }
        }
        self.replace_journal();
        self.outbox.publish_size();
    }

    /// Rewrites the journal with what is not in the spool — the sealed batches waiting in memory
    /// and the open batch — after the batches sealed from it were pushed to the outbox: every
    /// result received so far is then durable (or, without a spool, kept in memory).
    fn replace_journal(&mut self) {
        let keep = self.outbox.memory_ids();
        let open = self.batcher.open_batch();
        if let Some(journal) = self.outbox.journal() {
            if let Err(error) = journal.rewrite(&keep, open) {
                tracing::error!(message = "Cannot rewrite the open-batch journal; results not yet in the spool are kept in memory only until it can be.", %error);
                self.unsynced.clear();
                return;
            }
        }
        self.journal_stale = false;
        self.announce_durable();
    }

    /// Syncs the journal: the results written to it become durable.
    fn sync_journal(&mut self) {
        if let Some(journal) = self.outbox.journal() {
            if let Err(error) = journal.sync() {
                tracing::error!(message = "Cannot sync the open-batch journal; its results are kept in memory only until their batch is sealed.", %error);
                self.unsynced.clear();
                return;
            }
        }
        self.announce_durable();
    }

    fn announce_durable(&mut self) {
        for (host, collected_at) in self.unsynced.drain(..) {
            tracing::debug!(message = "Result spooled.", host = %host, collected_at = %collected_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        }
    }

    fn schedule_sync(&mut self, ctx: &mut Context<Self>) {
        if self.sync_timer.is_none() {
            self.sync_timer = Some(ctx.run_later(JOURNAL_SYNC_DELAY, |act, _ctx| {
                act.sync_timer = None;
                act.sync_journal();
            }));
        }
    }

    fn report(&self) -> DeliveryReport {
        let (batches_waiting, results_waiting) = self.outbox.waiting();
        DeliveryReport {
            batches_waiting,
            results_waiting,
            ..self.stats.clone()
        }
    }

    fn enqueue(&mut self, sealed: impl IntoIterator<Item = SealedBatch>, ctx: &mut Context<Self>) {
        let mut any = false;
        for batch in sealed {
            any = true;
            if self.api.is_some() {
                tracing::debug!(message = "Batch sealed.", batch_id = %batch.batch_id, results = batch.results, bytes = batch.body.len());
                self.outbox.push(batch);
            }
        }
        if any {
            self.batch_generation += 1;
            if let Some(timer) = self.sync_timer.take() {
                ctx.cancel_future(timer);
            }
            self.replace_journal();
            self.outbox.publish_size();
            self.pump(ctx);
        }
    }

    fn seal_now(&mut self, ctx: &mut Context<Self>) {
        let sealed = self.batcher.seal(Utc::now());
        self.enqueue(sealed, ctx);
    }

    /// Sends the oldest waiting batch unless a send is under way or a retry is scheduled.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.sending || self.retry_timer.is_some() {
            return;
        }
        let Some(api) = self.api.clone() else {
            self.answer_waiters();
            return;
        };
        let Some((key, batch)) = self.outbox.front() else {
            self.answer_waiters();
            return;
        };
        self.sending = true;
        let batch_id = batch.batch_id;
        let results = batch.results;
        let send = async move { api.post_batch(batch.body).await };
        ctx.spawn(send.into_actor(self).map(move |outcome, act, ctx| {
            act.sending = false;
            match outcome {
                Ok(()) => {
                    tracing::info!(message = "Batch sent.", %batch_id, results);
                    act.outbox.remove(key);
                    act.stats.batches_sent += 1;
                    metrics().batch_sent();
                    act.outbox.publish_size();
                    act.stats.results_sent += results;
                    act.stats.last_error = None;
                    act.failures = 0;
                    act.pump(ctx);
                }
                Err(error) if !error.is_retriable() && !is_key_problem(&error) => {
                    // The API will never take this batch (e.g. 400, 413): set it aside, go on.
                    act.outbox.quarantine(key, &error.to_string());
                    act.stats.batches_quarantined += 1;
                    metrics().batch_quarantined();
                    act.outbox.publish_size();
                    act.stats.last_error = Some(error.to_string());
                    act.failures = 0;
                    act.pump(ctx);
                }
                Err(error) => {
                    let (waiting, _) = act.outbox.waiting();
                    let attempt = act.failures;
                    act.failures = act.failures.saturating_add(1);
                    let delay = act.retry.delay(attempt, error.retry_after(), unit_random());
                    let next_retry_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    metrics().send_failed();
                    tracing::error!(message = "Failed to send batch.", %batch_id, results, %error, waiting, failures = act.failures, next_retry_ms);
                    act.stats.last_error = Some(error.to_string());
                    // The batch stays first in the outbox; try again later, in order.
                    act.answer_waiters();
                    act.schedule_retry(delay, ctx);
                }
            }
        }));
    }

    /// Replaces any pending retry with one after `delay`.
    fn schedule_retry(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        self.cancel_retry(ctx);
        self.retry_timer = Some(ctx.run_later(delay, |act, ctx| {
            act.retry_timer = None;
            act.pump(ctx);
        }));
    }

    fn cancel_retry(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.retry_timer.take() {
            ctx.cancel_future(timer);
        }
    }

    fn answer_waiters(&mut self) {
        let report = self.report();
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(report.clone());
        }
    }
}

impl Actor for Reporter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Batches left in the spool by an earlier run go out at once, not after the next cycle.
        if !self.outbox.is_empty() {
            self.pump(ctx);
        }
    }
}

impl Handler<Report> for Reporter {
    type Result = ();

    fn handle(&mut self, Report(result): Report, ctx: &mut Context<Self>) {
        self.stats.results += 1;
        let json = match serde_json::to_vec(&result) {
            Ok(json) => json,
            Err(error) => {
                // Cannot happen for these types; logged rather than lost silently.
                tracing::error!(message = "Cannot serialize host result.", host = %result.host.id, %error);
                return;
            }
        };
        if let Some(output) = &mut self.output {
            if let Err(error) = output.write_line(&json) {
                self.stats.output_errors += 1;
                tracing::error!(message = "Cannot write NDJSON output.", host = %result.host.id, %error);
            }
        }
        if self.api.is_none() {
            return;
        }
        let was_empty = self.batcher.is_empty();
        // The journal write comes first; if the push seals batches, the journal is rewritten
        // with whatever stays open anyway.
        let journaled = match self.outbox.journal() {
            Some(journal) => match journal.append(self.batcher.open_id(), &json) {
                Ok(()) => true,
                Err(error) => {
                    tracing::error!(message = "Cannot write the result to the open-batch journal; rewriting the journal.", host = %result.host.id, %error);
                    self.journal_stale = true;
                    false
                }
            },
            None => false,
        };
        let has_journal = self.outbox.journal().is_some();
        if has_journal {
            self.unsynced
                .push((result.host.id.clone(), result.collected_at));
        }
        let sealed = self.batcher.push(json, Utc::now());
        let sealed_any = !sealed.is_empty();
        self.enqueue(sealed, ctx);
        if self.journal_stale {
            // The rewrite puts this result (now in the batcher) on disk with the others.
            self.replace_journal();
        } else if journaled && !sealed_any {
            self.schedule_sync(ctx);
        }
        if was_empty && !sealed_any {
            // The first result of a batch starts its timer.
            let generation = self.batch_generation;
            ctx.run_later(self.max_wait, move |act, ctx| {
                if act.batch_generation == generation {
                    act.seal_now(ctx);
                }
            });
        }
    }
}

impl Handler<Reconfigure> for Reporter {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, ctx: &mut Context<Self>) {
        if let Some(batch) = msg.batch {
            self.batcher.set_limits(batch);
            self.max_wait = Duration::from_secs(batch.max_wait_seconds);
        }
        if let Some(api) = msg.api {
            tracing::info!(message = "API endpoint changed by a reload.", base_url = %api.base_url());
            self.api = Some(api);
            self.failures = 0;
            // Try the new endpoint at once rather than after the old one's backoff.
            self.cancel_retry(ctx);
            self.pump(ctx);
        }
    }
}

impl Handler<IsFull> for Reporter {
    type Result = bool;

    fn handle(&mut self, _msg: IsFull, _ctx: &mut Context<Self>) -> bool {
        self.outbox.is_full()
    }
}

impl Handler<Flush> for Reporter {
    type Result = ResponseFuture<DeliveryReport>;

    fn handle(&mut self, _msg: Flush, ctx: &mut Context<Self>) -> Self::Result {
        // An explicit flush (`once`, shutdown) tries at once rather than after the backoff.
        self.cancel_retry(ctx);
        self.seal_now(ctx);
        let (sender, receiver) = oneshot::channel();
        self.waiters.push(sender);
        self.pump(ctx);
        let fallback = self.report();
        Box::pin(async move { receiver.await.unwrap_or(fallback) })
    }
}
