//! The Reporter: batch → outbox → send.
//!
//! - [`batcher`]: pure; groups serialized results into batches by count and bytes.
//! - [`output`]: NDJSON copy of every result (`--output FILE|-`).
//! - [`outbox`]: sealed batches waiting for the API, on the durable spool (fsync'd) when the
//!   agent has one.
//! - [`actor`]: the actor; seals a batch when it is full, when its timer (started by its first
//!   result) fires, or on `Flush`; puts it in the outbox and posts the oldest one at a time;
//!   removes a batch only after a 2xx, quarantines one refused with a 4xx.

pub mod actor;
pub mod batcher;
pub mod outbox;
pub mod output;
pub mod retry;

pub use actor::{DeliveryReport, Flush, IsFull, Reconfigure, Report, Reporter, ReporterConfig};
