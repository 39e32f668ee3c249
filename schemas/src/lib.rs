//! Wire types of luumen-agent and the JSON Schemas that describe them.
//!
//! Every type here crosses a boundary, so each is a contract:
//! - [`config::LocalConfig`] — the agent's local `config.yaml` (`config.schema.json`);
//! - [`inventory::Inventory`] — the remote configuration served by `GET {base_url}/config`, and the
//!   standalone inventory file in the same format (`remote-config.schema.json`);
//! - [`report::HostResult`] and [`report::Batch`] — what the agent posts to
//!   `{base_url}/reports` and writes as NDJSON (`report.schema.json`).
//!
//! This crate does no I/O: it parses and validates values that the agent has already read.
//!
//! ```
//! let inventory: luumen_schemas::inventory::Inventory = serde_json::from_str(
//!     r#"{"hosts": [{"id": "patch-server", "protocol": "local"}]}"#,
//! ).unwrap();
//! inventory.validate().unwrap();
//! assert_eq!(inventory.hosts[0].id, "patch-server");
//! ```

pub mod config;
pub mod inventory;
pub mod report;

/// The JSON Schema of `config.yaml` (draft 2020-12).
pub const CONFIG_SCHEMA: &str = include_str!("../config.schema.json");
/// The JSON Schema of the remote config and the inventory file (draft 2020-12).
pub const REMOTE_CONFIG_SCHEMA: &str = include_str!("../remote-config.schema.json");
/// The JSON Schema of a report batch and of one host result (draft 2020-12).
pub const REPORT_SCHEMA: &str = include_str!("../report.schema.json");
