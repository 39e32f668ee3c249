//! The actors of luumen-agent (actix 0.13) and the messages between them.
//!
//! ```text
//!             RunCycle                 Collect            Execute (SyncArbiter, C threads)
//!  agent ──▶ Supervisor ──(one per host)──▶ HostActor ──────────▶ ProtocolActor ── ssh2 / local
//!                 │ restarts a failed           │     Parse (SyncArbiter)
//!                 │ HostActor alone             ├──────────▶ CollectorActor ── luumen_properties
//!                 │                             │     Report
//!                 └──── Flush ──────────────────┴──────────▶ Reporter ── batch → outbox → POST /reports
//!                                                                        └─ NDJSON --output
//! ```
//!
//! - [`supervisor::Supervisor`] owns the host list, runs a cycle on demand or on the schedule.
//! - [`host::HostActor`] holds one host's state and turns one cycle into one [`HostResult`].
//! - [`protocol::ProtocolActor`] runs the blocking transports on a pool whose size is the global
//!   concurrency limit.
//! - [`collector::CollectorActor`] runs the pure parsers off the scheduling thread.
//! - [`reporter::Reporter`] batches results and posts them; it can also write NDJSON.
//!
//! Panics in the protocol and collector actors are caught at the actor boundary and become an
//! `error` result for that host only.
//!
//! [`HostResult`]: luumen_schemas::report::HostResult

pub mod api;
pub mod collector;
pub mod doctor;
pub mod fault;
pub mod host;
pub mod metrics;
pub mod protocol;
pub mod reporter;
pub mod spec;
pub mod spool;
pub mod supervisor;
pub mod vault;

pub use spec::{HostSpec, SshSettings, Target};

/// The text of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}
