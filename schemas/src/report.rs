//! What the agent reports: one [`HostResult`] per host per cycle, sent in [`Batch`]es.

use chrono::{DateTime, Utc};
use luumen_properties::Properties;
use serde::{Deserialize, Serialize};

use crate::inventory::Protocol;

/// The outcome of one host's collection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every property was collected.
    Ok,
    /// Connected and collected, but some properties have errors.
    Partial,
    /// No TCP connection (refused, no route, name not resolved, connect timeout).
    Unreachable,
    /// The host refused the credentials.
    AuthFailed,
    /// Connected, but the host did not finish within its time limit.
    Timeout,
    /// The host's key is not the one on record (or unknown under `strict`); no credential was
    /// sent.
    HostKeyMismatch,
    /// Anything else (protocol error, unsupported protocol, internal failure).
    Error,
}

impl Status {
    /// Every status, in the order reports and summaries list them.
    pub const ALL: [Status; 7] = [
        Status::Ok,
        Status::Partial,
        Status::Unreachable,
        Status::AuthFailed,
        Status::Timeout,
        Status::HostKeyMismatch,
        Status::Error,
    ];

    /// The name used in reports and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Partial => "partial",
            Status::Unreachable => "unreachable",
            Status::AuthFailed => "auth_failed",
            Status::Timeout => "timeout",
            Status::HostKeyMismatch => "host_key_mismatch",
            Status::Error => "error",
        }
    }

    /// Whether the host's properties were collected (fully or in part).
    pub fn is_collected(self) -> bool {
        matches!(self, Status::Ok | Status::Partial)
    }
}

/// Which host a result is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostRef {
    /// The host's id from the host list.
    pub id: String,
    /// The address that was connected to.
    pub address: String,
    /// The protocol used.
    pub protocol: Protocol,
}

/// One error in a host result: of one property, or of the whole host (`property: null`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResultError {
    /// The property at fault, or `None` when the host as a whole failed.
    pub property: Option<String>,
    /// Machine-readable kind, e.g. `permission_denied`, `parse_error`, `unreachable`.
    pub kind: String,
    /// A sentence for people.
    pub message: String,
}

/// One host's timestamped result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostResult {
    /// The host.
    pub host: HostRef,
    /// When the collection started (UTC).
    pub collected_at: DateTime<Utc>,
    /// How long the collection took, connect to parsed.
    pub duration_ms: u64,
    /// Outcome.
    pub status: Status,
    /// The collected properties (empty unless `ok` or `partial`).
    pub properties: Properties,
    /// What went wrong, per property or for the host.
    pub errors: Vec<ResultError>,
}

/// A batch of results posted to `{base_url}/reports`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Which agent sent it.
    pub agent_id: String,
    /// Unique id; stays the same when the batch is sent again.
    pub batch_id: uuid::Uuid,
    /// When the batch was (last) sent.
    pub sent_at: DateTime<Utc>,
    /// The host results.
    pub results: Vec<HostResult>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Protocol;

    fn windows_result(file: &str) -> serde_json::Value {
        let output: String = file
            .lines()
            .filter(|l| !l.starts_with("#!source:"))
            .collect::<Vec<_>>()
            .join("\n");
        let collected = luumen_properties::windows::collect(output.as_bytes(), b"", Some(0));
        let result = HostResult {
            host: HostRef {
                id: "win".into(),
                address: "127.0.0.1".into(),
                protocol: Protocol::Winrm,
            },
            collected_at: DateTime::from_timestamp(1_700_000_000, 0).expect("valid time"),
            duration_ms: 1,
            status: Status::Partial,
            properties: collected.properties,
            errors: collected
                .errors
                .into_iter()
                .map(|e| ResultError {
                    property: Some(e.property),
                    kind: serde_json::to_value(e.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    message: e.message,
                })
                .collect(),
        };
        serde_json::to_value(&result).expect("serializes")
    }

    /// Windows results (every optional Windows field, hotfixes, processes,
    /// `registry` packages) are valid against `report.schema.json`, and the
    /// schema still refuses what the types refuse.
    #[test]
    fn windows_results_match_the_report_schema() {
        let schema: serde_json::Value =
            serde_json::from_str(crate::REPORT_SCHEMA).expect("schema is JSON");
        let validator = jsonschema::validator_for(&schema).expect("schema compiles");
        for file in [
            include_str!("../../properties/testdata/windows/server-2022-datacenter.json"),
            include_str!("../../properties/testdata/windows/windows-11-pro-22h2.json"),
            include_str!("../../properties/testdata/windows/server-2012r2-single-objects.json"),
            include_str!("../../properties/testdata/windows/windows-10-partial-errors.json"),
        ] {
            let value = windows_result(file);
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{errors:#?}");
            let back: HostResult = serde_json::from_value(value).expect("round trip");
            assert_eq!(back.host.protocol, Protocol::Winrm);
        }
        let mut bad = windows_result(include_str!(
            "../../properties/testdata/windows/server-2022-datacenter.json"
        ));
        bad["properties"]["os"]["domain_role"] = "emperor".into();
        assert!(!validator.is_valid(&bad));
        let mut bad = windows_result(include_str!(
            "../../properties/testdata/windows/server-2022-datacenter.json"
        ));
        bad["properties"]["processes"][0]["cmdline"] = "x".into();
        assert!(!validator.is_valid(&bad));
    }
}
