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
}

impl Batcher {
    /// An empty batcher.
    pub fn new(agent_id: &str, limits: BatchConfig) -> Batcher {
        Batcher {
            limits,
            agent_id_json: serde_json::Value::from(agent_id).to_string(),
            pending: Vec::new(),
            pending_bytes: 0,
        }
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
        let batch_id = Uuid::new_v4();
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
}
