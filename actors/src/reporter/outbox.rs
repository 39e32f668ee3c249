//! Sealed batches waiting for the API: on the durable spool when there is one, in memory
//! otherwise (and for a batch the spool refused, so that nothing collected is dropped while the
//! process runs). Oldest first: spooled batches, then in-memory ones.

use std::collections::VecDeque;

use super::batcher::SealedBatch;
use crate::spool::{NewRecord, RecordId, Spool};

/// Which waiting batch, for [`Outbox::remove`] and [`Outbox::quarantine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A record of the spool.
    Spooled(RecordId),
    /// The first in-memory batch.
    Memory,
}

/// The waiting batches.
pub struct Outbox {
    spool: Option<Spool>,
    memory: VecDeque<SealedBatch>,
}

impl Outbox {
    /// An outbox on `spool`, or in memory only.
    pub fn new(spool: Option<Spool>) -> Outbox {
        Outbox {
            spool,
            memory: VecDeque::new(),
        }
    }

    /// Keeps a batch: returns once it is on disk (fsync'd) when there is a spool, with `true`;
    /// `false` when it is kept in memory (no spool, or the spool refused it).
    pub fn push(&mut self, batch: SealedBatch) -> bool {
        if let Some(spool) = &mut self.spool {
            match spool.append(&NewRecord::from(&batch)) {
                Ok(id) => {
                    tracing::debug!(message = "Batch spooled.", batch_id = %batch.batch_id, record = %id);
                    return true;
                }
                Err(error) => tracing::error!(
                    message = "Cannot spool batch; keeping it in memory.",
                    batch_id = %batch.batch_id,
                    results = batch.results,
                    %error,
                ),
            }
        }
        self.memory.push_back(batch);
        false
    }

    /// The ids of the sealed batches waiting in memory (their results stay in the journal).
    pub fn memory_ids(&self) -> std::collections::HashSet<uuid::Uuid> {
        self.memory.iter().map(|b| b.batch_id).collect()
    }

    /// The oldest waiting batch.
    pub fn front(&mut self) -> Option<(Key, SealedBatch)> {
        if let Some(spool) = &mut self.spool {
            match spool.peek_oldest() {
                Ok(Some(record)) => {
                    let id = record.id;
                    return Some((Key::Spooled(id), record.into_sealed()));
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(message = "Cannot read the spool.", %error);
                }
            }
        }
        self.memory.front().map(|b| (Key::Memory, b.clone()))
    }

    /// Forgets a batch the API accepted.
    pub fn remove(&mut self, key: Key) {
        match key {
            Key::Memory => {
                self.memory.pop_front();
            }
            Key::Spooled(id) => {
                if let Some(Err(error)) = self.spool.as_mut().map(|s| s.ack(id)) {
                    tracing::error!(message = "Cannot acknowledge a spooled batch; it may be sent again (the API stores it once).", record = %id, %error);
                }
            }
        }
    }

    /// Sets aside a batch the API refused for good (4xx), with the reason.
    pub fn quarantine(&mut self, key: Key, reason: &str) {
        match key {
            Key::Memory => {
                if let Some(batch) = self.memory.pop_front() {
                    tracing::error!(message = "Batch refused by the API and dropped (no spool to quarantine it in).", batch_id = %batch.batch_id, reason);
                }
            }
            Key::Spooled(id) => match self.spool.as_mut().map(|s| s.quarantine(id, reason)) {
                Some(Ok(path)) => {
                    tracing::error!(message = "Batch refused by the API; quarantined.", record = %id, path = %path.display(), reason)
                }
                Some(Err(error)) => {
                    tracing::error!(message = "Cannot quarantine a refused batch.", record = %id, %error)
                }
                None => {}
            },
        }
    }

    /// Waiting batches and the results in them.
    pub fn waiting(&self) -> (usize, usize) {
        let (mut batches, mut results) = (
            self.memory.len(),
            self.memory.iter().map(|b| b.results).sum(),
        );
        if let Some(spool) = &self.spool {
            for record in spool.iter_pending() {
                batches += 1;
                results += record.results as usize;
            }
        }
        (batches, results)
    }

    /// Publishes what waits (batches, and bytes on disk) to the metrics.
    pub fn publish_size(&self) {
        let (batches, _) = self.waiting();
        let bytes = self.spool.as_ref().map_or(0, |s| s.stats().bytes)
            + self.memory.iter().map(|b| b.body.len() as u64).sum::<u64>();
        crate::metrics::metrics().spool_size(batches as u64, bytes);
    }

    /// No room for new batches on disk: the spool is full, or a batch already waits in memory
    /// because it did not fit. Without a spool, never.
    pub fn is_full(&self) -> bool {
        self.spool
            .as_ref()
            .is_some_and(|s| s.is_full() || !self.memory.is_empty())
    }

    /// The spool's open-batch journal, when there is a spool.
    pub fn journal(&mut self) -> Option<&mut crate::spool::Journal> {
        self.spool.as_mut().map(Spool::journal)
    }

    /// The batches found in the journal at the last stop, oldest first, without those already
    /// in the spool (sealed and spooled just before the stop, the journal not yet rewritten).
    pub fn take_open_batches(&mut self) -> Vec<crate::spool::OpenBatch> {
        let Some(spool) = self.spool.as_mut() else {
            return Vec::new();
        };
        let found = spool.take_open_batches();
        found
            .into_iter()
            .filter(|open| {
                let held = spool.holds_batch(open.batch_id);
                if held {
                    tracing::info!(message = "A batch found in the journal is already in the spool; not sealed again.", batch_id = %open.batch_id, results = open.results.len());
                }
                !held
            })
            .collect()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.spool.as_ref().is_none_or(Spool::is_empty)
    }
}
