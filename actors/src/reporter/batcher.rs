//! Groups serialized host results into batches. Pure: no clock, no I/O.
//!
//! Each result is serialized once (the same bytes go to NDJSON and into the batch body); a batch
//! body is assembled from those bytes without serializing the results again.

use chrono::{DateTime, SecondsFormat, Utc};
use luumen_schemas::config::BatchConfig;
use uuid::Uuid;

/// A batch ready to send: its id and the exact bytes to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBatch {
    /// The batch's id; stays the same if the batch is sent again.
    pub batch_id: Uuid,
    /// How many host results it holds.
    pub results: usize,
    /// The JSON body (`schemas/report.schema.json#/$defs/batch`).
    pub body: Vec<u8>,
}

/// Accumulates results until a limit is reached.
#[derive(Debug)]
pub struct Batcher {
    limits: BatchConfig,
    agent_id_json: String,
    pending: Vec<Vec<u8>>,
    pending_bytes: usize,
    /// The id the open batch will be sealed with, known from its first result on so that the
    /// open-batch journal can record it.
    open_id: Uuid,
}

impl Batcher {
    /// An empty batcher.
    pub fn new(agent_id: &str, limits: BatchConfig) -> Batcher {
        Batcher {
            limits,
            agent_id_json: serde_json::Value::from(agent_id).to_string(),
            pending: Vec::new(),
            pending_bytes: 0,
            open_id: Uuid::new_v4(),
        }
    }

    /// The open batch: its future id and the results in it.
    pub fn open_batch(&self) -> Option<(Uuid, &[Vec<u8>])> {
        (!self.pending.is_empty()).then_some((self.open_id, self.pending.as_slice()))
    }

    /// The id the next result will be batched under: the open batch's, or the next batch's
    /// when the result does not fit in it.
    pub fn open_id(&self) -> Uuid {
        self.open_id
    }

    /// Seals a batch found in the journal at start, with its original id. Results already
    /// pending are sealed first, under their own id.
    pub fn seal_recovered(
        &mut self,
        batch_id: Uuid,
        results: Vec<Vec<u8>>,
        now: DateTime<Utc>,
    ) -> Vec<SealedBatch> {
        let mut sealed: Vec<SealedBatch> = self.seal(now).into_iter().collect();
        if results.is_empty() {
            return sealed;
        }
        let next_id = std::mem::replace(&mut self.open_id, batch_id);
        self.pending_bytes = results.iter().map(|r| r.len() + 1).sum();
        self.pending = results;
        sealed.extend(self.seal(now));
        self.open_id = next_id;
        sealed
    }

    /// New limits, from the next result on (a reload).
    pub fn set_limits(&mut self, limits: BatchConfig) {
        self.limits = limits;
    }

    /// Whether no result is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Adds one serialized result. Returns the batches this closed: the current one when the
    /// new result would push it past `max_bytes`, and the new one when it reaches `max_results`
    /// (or is alone larger than `max_bytes`).
    pub fn push(&mut self, result_json: Vec<u8>, now: DateTime<Utc>) -> Vec<SealedBatch> {
        let mut sealed = Vec::new();
        if !self.pending.is_empty()
            && self.pending_bytes + result_json.len() + 1 > self.limits.max_bytes
        {
            sealed.extend(self.seal(now));
        }
        self.pending_bytes += result_json.len() + 1;
        self.pending.push(result_json);
        if self.pending.len() >= self.limits.max_results
            || self.pending_bytes >= self.limits.max_bytes
        {
            sealed.extend(self.seal(now));
        }
        sealed
    }

    /// Closes the current batch, if it holds anything.
    pub fn seal(&mut self, now: DateTime<Utc>) -> Option<SealedBatch> {
        if self.pending.is_empty() {
            return None;
        }
        let batch_id = std::mem::replace(&mut self.open_id, Uuid::new_v4());
        let sent_at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut body = Vec::with_capacity(self.pending_bytes + 160);
        body.extend_from_slice(b"{\"agent_id\":");
        body.extend_from_slice(self.agent_id_json.as_bytes());
        body.extend_from_slice(b",\"batch_id\":\"");
        body.extend_from_slice(batch_id.hyphenated().to_string().as_bytes());
        body.extend_from_slice(b"\",\"sent_at\":\"");
        body.extend_from_slice(sent_at.as_bytes());
        body.extend_from_slice(b"\",\"results\":[");
        let results = self.pending.len();
        for (index, result) in self.pending.drain(..).enumerate() {
            if index > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&result);
        }
        body.extend_from_slice(b"]}");
        self.pending_bytes = 0;
        Some(SealedBatch {
            batch_id,
            results,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use luumen_schemas::report::Batch;

    fn limits(max_results: usize, max_bytes: usize) -> BatchConfig {
        BatchConfig {
            max_results,
            max_bytes,
            max_wait_seconds: 5,
        }
    }

    fn result(id: &str) -> Vec<u8> {
        format!(
            r#"{{"host":{{"id":"{id}","address":"a","protocol":"local"}},"collected_at":"2026-11-23T10:00:00Z","duration_ms":1,"status":"ok","properties":{{}},"errors":[]}}"#
        )
        .into_bytes()
    }

    fn decode(sealed: &SealedBatch) -> Batch {
        serde_json::from_slice(&sealed.body).expect("batch body is a valid Batch")
    }

    #[test]
    fn seals_by_count() {
        let mut batcher = Batcher::new("agent \"1\"", limits(2, 1 << 20));
        assert!(batcher.push(result("a"), Utc::now()).is_empty());
        let sealed = batcher.push(result("b"), Utc::now());
        assert_eq!(sealed.len(), 1);
        let batch = decode(&sealed[0]);
        assert_eq!(batch.agent_id, "agent \"1\"");
        assert_eq!(batch.batch_id, sealed[0].batch_id);
        let ids: Vec<_> = batch.results.iter().map(|r| r.host.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(batcher.is_empty());
    }

    #[test]
    fn seals_by_bytes_before_overflowing() {
        let one = result("a").len() + 1;
        let mut batcher = Batcher::new("agent", limits(100, one * 2 + one / 2));
        assert!(batcher.push(result("a"), Utc::now()).is_empty());
        assert!(batcher.push(result("b"), Utc::now()).is_empty());
        let sealed = batcher.push(result("c"), Utc::now());
        assert_eq!(sealed.len(), 1, "a+b sealed, c waits");
        assert_eq!(decode(&sealed[0]).results.len(), 2);
        let rest = batcher.seal(Utc::now()).expect("c is pending");
        assert_eq!(decode(&rest).results[0].host.id, "c");
    }

    #[test]
    fn an_oversize_result_goes_alone() {
        let mut batcher = Batcher::new("agent", limits(100, 10));
        let sealed = batcher.push(result("big"), Utc::now());
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].results, 1);
        assert!(batcher.seal(Utc::now()).is_none());
    }

    #[test]
    fn every_batch_gets_its_own_id() {
        let mut batcher = Batcher::new("agent", limits(1, 1 << 20));
        let a = batcher.push(result("a"), Utc::now());
        let b = batcher.push(result("b"), Utc::now());
        assert_ne!(a[0].batch_id, b[0].batch_id);
    }

    #[test]
    fn the_open_batch_is_sealed_with_the_id_it_was_opened_with() {
        let mut batcher = Batcher::new("agent", limits(3, 1 << 20));
        assert!(batcher.open_batch().is_none());
        batcher.push(result("a"), Utc::now());
        let (id, pending) = batcher.open_batch().expect("open");
        assert_eq!(pending.len(), 1);
        let sealed = batcher.seal(Utc::now()).expect("sealed");
        assert_eq!(sealed.batch_id, id);
        assert_ne!(batcher.open_id(), id, "the next batch gets a new id");
    }

    #[test]
    fn a_recovered_batch_keeps_its_id_and_pending_results_keep_theirs() {
        let mut batcher = Batcher::new("agent", limits(10, 1 << 20));
        batcher.push(result("new"), Utc::now());
        let pending_id = batcher.open_id();
        let recovered = uuid::Uuid::new_v4();
        let sealed = batcher.seal_recovered(recovered, vec![result("old")], Utc::now());
        assert_eq!(sealed.len(), 2);
        assert_eq!(sealed[0].batch_id, pending_id);
        assert_eq!(decode(&sealed[0]).results[0].host.id, "new");
        assert_eq!(sealed[1].batch_id, recovered);
        assert_eq!(decode(&sealed[1]).results[0].host.id, "old");
        assert!(batcher.is_empty());
        assert_ne!(batcher.open_id(), recovered);
    }
}
