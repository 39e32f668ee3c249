//! The agent's local `config.yaml`.
//!
//! ```yaml
//! api:
//!   base_url: https://api.example.com/api/v1
//!   api_key: "…"              # or LUUMEN_API_KEY in the environment
//! max_concurrency: 64
//! timeouts: { connect_seconds: 10, host_seconds: 300 }
//! log_dir: /var/log/luumen
//! ```

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// The agent's local configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Where the agent pulls its remote config from and posts its reports to.
    pub api: ApiConfig,
    /// HashiCorp Vault settings for credentials stored in Vault (used by a later release).
    #[serde(default)]
    pub vault: Option<VaultConfig>,
    /// Identifies this agent in every batch it sends; defaults to the machine's hostname.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Directory for the agent's log files (rolling daily).
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
    /// Log files older than this many days are deleted.
    #[serde(default = "default_log_retention_days")]
    pub log_retention_days: u32,
    /// How many hosts are collected at the same time (the size of the SSH worker pool).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Time limits for one host's collection.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// When the Reporter sends a batch.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Where the agent keeps its own state (e.g. `known_hosts` with the pinned host keys).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// How SSH host keys are verified (hosts may override it).
    #[serde(default)]
    pub host_key_policy: HostKeyPolicy,
    /// OpenSSH known_hosts files trusted by `strict` (and consulted by `accept-new`).
    #[serde(default)]
    pub known_hosts_files: Vec<PathBuf>,
    /// Also accept the legacy `ssh-rsa` (SHA-1) host key algorithm.
    #[serde(default)]
    pub allow_ssh_rsa_sha1: bool,
    /// Address (e.g. `127.0.0.1:9464`) where `run` serves Prometheus metrics at `/metrics`.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// The durable spool of batches waiting for the API (in `{state_dir}/spool`).
    #[serde(default)]
    pub spool: SpoolConfig,
}

/// The durable spool.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Most bytes on disk.
    #[serde(default = "default_spool_bytes")]
    pub max_bytes: u64,
    /// What `run` does when the spool is full.
    #[serde(default)]
    pub when_full: WhenFull,
}

/// The policy for a full spool. Results already collected are never dropped.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Skip new cycles (logged, counted in `luumen_cycles_skipped_total`) until there is room.
    #[default]
    SkipCycles,
    /// Keep collecting; batches that do not fit wait in memory (lost if the process dies).
    KeepInMemory,
}

fn default_spool_bytes() -> u64 {
    1 << 30
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: default_spool_bytes(),
            when_full: WhenFull::default(),
        }
    }
}

/// The default of `state_dir`.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/luumen-agent")
}

/// How SSH host keys are verified, as OpenSSH's `StrictHostKeyChecking`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Trust on first use: pin the first key in `{state_dir}/known_hosts`, refuse a changed key.
    #[default]
    AcceptNew,
    /// The key must already be in `known_hosts_files`.
    Strict,
    /// No check (a warning is logged every cycle).
    Off,
}

fn default_log_retention_days() -> u32 {
    30
}

/// The default of `max_concurrency`.
pub fn default_max_concurrency() -> usize {
    64
}

/// The Luumen API endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Base URL, e.g. `https://api.example.com/api/v1`; the agent calls `{base_url}/config` and
    /// `{base_url}/reports`.
    pub base_url: String,
    /// The agent's API key, sent in the `api-key` header. Never logged.
    pub api_key: SecretString,
    /// A PEM file with an extra CA certificate to trust (self-hosted API with its own CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Time limit for one API request.
    #[serde(default = "default_request_seconds")]
    pub request_timeout_seconds: u64,
}

fn default_request_seconds() -> u64 {
    30
}

/// Time limits for collecting one host.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP connect limit.
    #[serde(default = "default_connect_seconds")]
    pub connect_seconds: u64,
    /// Limit for the whole host: connect, handshake, authentication and the collection script.
    #[serde(default = "default_host_seconds")]
    pub host_seconds: u64,
}

fn default_connect_seconds() -> u64 {
    10
}
fn default_host_seconds() -> u64 {
    300
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_seconds: default_connect_seconds(),
            host_seconds: default_host_seconds(),
        }
    }
}

/// When the Reporter closes a batch and sends it: whichever limit is reached first.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most host results in one batch.
    #[serde(default = "default_batch_results")]
    pub max_results: usize,
    /// Most serialized bytes in one batch (a single larger result is sent alone).
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: usize,
    /// Seconds after the first result of a batch arrives before the batch is sent anyway.
    #[serde(default = "default_batch_seconds")]
    pub max_wait_seconds: u64,
}

fn default_batch_results() -> usize {
    100
}
fn default_batch_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_batch_seconds() -> u64 {
    5
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_results: default_batch_results(),
            max_bytes: default_batch_bytes(),
            max_wait_seconds: default_batch_seconds(),
        }
    }
}

/// HashiCorp Vault (KV v2) access.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Vault's address, e.g. `https://vault.example.com:8200`.
    pub address: String,
    /// Vault Enterprise namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The KV v2 mount holding the credentials.
    #[serde(default = "default_vault_mount")]
    pub mount: String,
    /// A PEM file with the CA that signed Vault's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A file holding a Vault token (otherwise `VAULT_TOKEN`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// AppRole login.
    #[serde(default)]
    pub approle: Option<AppRole>,
}

fn default_vault_mount() -> String {
    "secret".to_owned()
}

/// AppRole credentials for Vault.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRole {
    /// The role id (not secret on its own).
    pub role_id: String,
    /// A file holding the secret id.
    pub secret_id_file: PathBuf,
}

/// A problem with a config value that serde cannot express.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `api.base_url` is not an http(s) URL.
    #[error("api.base_url {0:?} must start with http:// or https://")]
    BaseUrl(String),
    /// `max_concurrency` is zero.
    #[error("max_concurrency must be at least 1")]
    Concurrency,
    /// A timeout is zero.
    #[error("timeouts.{0} must be at least 1")]
    Timeout(&'static str),
}

impl LocalConfig {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.api.base_url.as_str();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::BaseUrl(self.api.base_url.clone()));
        }
        if self.max_concurrency == 0 {
            return Err(ConfigError::Concurrency);
        }
        if self.timeouts.connect_seconds == 0 {
            return Err(ConfigError::Timeout("connect_seconds"));
        }
        if self.timeouts.host_seconds == 0 {
            return Err(ConfigError::Timeout("host_seconds"));
        }
        Ok(())
    }
}
