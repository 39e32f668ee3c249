//! Storage. The HTTP layer talks only to the [`Store`] trait; [`sqlite::SqliteStore`] is the
//! embedded implementation. A PostgreSQL backend implements the same trait.
//!
//! Keyset cursors are passed as the raw key of the last row returned (`after`) and returned as
//! `next`; the HTTP layer makes them opaque.

pub mod sqlite;

use chrono::{DateTime, SecondsFormat, Utc};
use luumen_schemas::inventory::Protocol;
use luumen_schemas::report::Batch;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with what is stored (duplicate id, unknown credential referenced).
    #[error("{0}")]
    Conflict(String),
    /// The request refers to something that does not exist or is otherwise unusable.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("database: {0}")]
    Backend(String),
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The two kinds of API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May call `GET /config` and `POST /reports` only.
    Agent,
    /// May call the management endpoints.
    Admin,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct ApiKeyInfo {
    /// The key's id (not the key).
    pub id: String,
    /// What it may do.
    pub role: Role,
}

/// Deserializes an integer that JSON may also spell as an integral float (`22.0`), as JSON
/// Schema's `integer` allows.
pub fn integral<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_u64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        })
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid value: {number}, expected an integer in range"
            ))
        })
}

/// [`integral`] for an optional (or null) field.
pub fn integral_opt<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    #[derive(Deserialize)]
    struct Wrap<T: TryFrom<u64>>(#[serde(deserialize_with = "integral")] T);
    Ok(Option::<Wrap<T>>::deserialize(deserializer)?.map(|Wrap(n)| n))
}

/// How the agent reaches a host (the OpenAPI view of [`Protocol`]).
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ProtocolName {
    Ssh,
    Winrm,
    Local,
}

/// A host as written by an admin (`POST /hosts`, `PUT /hosts/{id}`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Unique, stable name of the host (the `host.id` of its reports); not blank.
    #[schema(pattern = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")]
    pub id: String,
    /// DNS name or IP address (required for ssh and winrm).
    #[serde(default)]
    pub address: Option<String>,
    /// TCP port (the protocol's default when absent).
    #[serde(default, deserialize_with = "integral_opt")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// `ssh`, `winrm` or `local`.
    #[schema(value_type = ProtocolName, example = "ssh")]
    pub protocol: Protocol,
    /// Free-form group names.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The credential the agent uses for this host; the default credentials when absent.
    #[serde(default)]
    pub credential_id: Option<String>,
}

/// A host with its latest state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Host {
    pub id: String,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub protocol: String,
    pub groups: Vec<String>,
    pub credential_id: Option<String>,
    /// False for a host that only appeared in a report (not served by `GET /config`).
    pub managed: bool,
    pub created_at: String,
    /// Status of the latest result (`ok`, `partial`, `unreachable`, ...), null before the first.
    pub status: Option<String>,
    /// The host-level error of the latest result, or its first property error.
    pub last_error: Option<String>,
    /// `collected_at` of the latest result.
    pub last_seen: Option<String>,
    /// When the latest result was received.
    pub received_at: Option<String>,
    /// `os.id` of the latest properties.
    pub os_id: Option<String>,
    /// No result within two schedule intervals.
    pub stale: bool,
}

/// `GET /hosts/{id}`: the host and its latest properties.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostDetail {
    #[serde(flatten)]
    pub host: Host,
    /// The latest collected properties (`packages` rebuilt from the software tables); null
    /// before the first result.
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
}

/// Server-side filters of `GET /hosts`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct HostFilter {
    pub status: Option<String>,
    pub group: Option<String>,
    pub os_id: Option<String>,
    pub stale: Option<bool>,
    /// Hosts that have a package of this name installed.
    pub package: Option<String>,
}

/// One stored host result (`GET /hosts/{id}/history`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Collection {
    pub id: i64,
    pub batch_id: String,
    pub collected_at: String,
    pub received_at: String,
    pub duration_ms: i64,
    pub status: String,
    #[schema(value_type = Vec<Object>)]
    pub errors: serde_json::Value,
    /// False when the result was older than the host's latest and did not change its state.
    pub applied: bool,
    /// How many change events this result produced.
    pub changes: i64,
}

/// One change event (`GET /hosts/{id}/changes`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Change {
    pub id: i64,
    pub collection_id: i64,
    pub collected_at: String,
    /// `package_added`, `package_removed`, `package_changed`, `packages_baseline`,
    /// `status_changed` or `property_changed`.
    pub kind: String,
    pub subject: String,
    #[schema(value_type = Object)]
    pub old_value: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub new_value: Option<serde_json::Value>,
}

/// What `ingest` did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IngestOutcome {
    pub batch_id: String,
    /// True when the batch had been stored before; nothing was written this time.
    pub duplicate: bool,
    pub results: usize,
}

/// A credential with its secrets sealed by the master key.
#[derive(Debug, Clone)]
pub struct SealedCredential {
    pub id: String,
    pub name: String,
    pub username: String,
    pub password_enc: Option<Vec<u8>>,
    pub private_key_enc: Option<Vec<u8>>,
    pub passphrase_enc: Option<Vec<u8>>,
    pub sudo: bool,
    pub scope: String,
    pub owner_key_id: Option<String>,
}

/// Credential metadata: never a secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CredentialMeta {
    pub id: String,
    pub name: String,
    pub username: String,
    pub has_password: bool,
    pub has_private_key: bool,
    pub has_passphrase: bool,
    pub sudo: bool,
    pub scope: String,
    pub created_at: String,
}

/// Global settings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Settings {
    pub interval_seconds: u64,
    pub default_credential_id: Option<String>,
}

/// An audit record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    /// The API key that acted (null for the command line).
    pub api_key_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
}

/// A software version with the number of hosts that have it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SoftwareVersion {
    pub name: String,
    pub epoch: Option<i64>,
    pub version: String,
    pub release: Option<String>,
    pub arch: Option<String>,
    pub manager: String,
    pub hosts: i64,
}

/// A host that has a software version installed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SoftwareHost {
    pub host_id: String,
    pub epoch: Option<i64>,
    pub version: String,
    pub release: Option<String>,
    pub arch: Option<String>,
    pub manager: String,
}

/// A page of a list and the keyset of its last row.
pub type Page<T> = (Vec<T>, Option<String>);

/// Everything the API stores.
pub trait Store: Send + Sync + 'static {
    /// The key with this hash, unless unknown or revoked.
    fn authenticate(&self, key_hash: &str) -> StoreResult<Option<ApiKeyInfo>>;
    /// Stores a new key's hash; returns the key id.
    fn create_api_key(&self, role: Role, key_hash: &str) -> StoreResult<String>;

    /// Stores a batch once (idempotent on `batch_id`), in one transaction.
    fn ingest(
        &self,
        batch: &Batch,
        api_key_id: &str,
        received_at: DateTime<Utc>,
    ) -> StoreResult<IngestOutcome>;

    fn create_host(&self, host: &HostSpec) -> StoreResult<()>;
    fn update_host(&self, host: &HostSpec) -> StoreResult<()>;
    fn delete_host(&self, id: &str) -> StoreResult<()>;
    /// `stale_before`: results collected before this time are stale.
    fn get_host(&self, id: &str, stale_before: &str) -> StoreResult<HostDetail>;
    fn list_hosts(
        &self,
        filter: &HostFilter,
        after: Option<&str>,
        limit: u32,
        stale_before: &str,
    ) -> StoreResult<Page<Host>>;
    /// Newest first.
    fn host_history(
        &self,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Collection>>;
    /// Newest first.
    fn host_changes(&self, id: &str, after: Option<&str>, limit: u32) -> StoreResult<Page<Change>>;
    /// The managed hosts, for `GET /config`.
    fn config_hosts(&self) -> StoreResult<Vec<HostSpec>>;

    fn create_credential(&self, credential: &SealedCredential) -> StoreResult<()>;
    fn list_credentials(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<CredentialMeta>>;
    fn delete_credential(&self, id: &str) -> StoreResult<()>;
    fn sealed_credential(&self, id: &str) -> StoreResult<Option<SealedCredential>>;

    fn settings(&self) -> StoreResult<Settings>;
    fn set_default_credential(&self, id: Option<&str>) -> StoreResult<()>;
    fn set_schedule(&self, interval_seconds: u64) -> StoreResult<()>;

    fn audit(
        &self,
        api_key_id: Option<&str>,
        action: &str,
        target: Option<&str>,
        detail: Option<&str>,
    ) -> StoreResult<()>;
    /// Newest first.
    fn list_audit(&self, after: Option<&str>, limit: u32) -> StoreResult<Page<AuditEntry>>;

    /// Versions of software named `name` with host counts.
    fn software_versions(
        &self,
        name: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<SoftwareVersion>>;
    /// Hosts that have `name` (optionally in `version`, matched against `version` or
    /// `version-release`) installed.
    fn software_hosts(
        &self,
        name: &str,
        version: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<SoftwareHost>>;
}

/// The stored text form of a time: RFC 3339, UTC, microseconds, `Z` (sorts as text).
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}
