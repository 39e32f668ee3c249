//! The Reporter: batch → outbox → send.
//!
//! - [`batcher`]: pure; groups serialized results into batches by count and bytes.
//! - [`output`]: NDJSON copy of every result (`--output FILE|-`).
//! - [`actor`]: the actor; seals a batch when it is full, when its timer (started by its first
//!   result) fires, or on `Flush`; keeps sealed batches in an ordered outbox and posts them one at
//!   a time. The outbox is the seam where a durable disk spool goes.

pub mod actor;
pub mod batcher;
pub mod output;

pub use actor::{DeliveryReport, Flush, Report, Reporter, ReporterConfig};
