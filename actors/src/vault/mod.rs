//! Credentials from HashiCorp Vault (KV v2), also served by OpenBao.
//!
//! A credential field written as `vault:PATH#FIELD` (e.g. `password: "vault:hosts/db1#password"`)
//! is replaced, each cycle, by field `FIELD` of the KV v2 secret at `PATH` under the configured
//! mount: `GET /v1/<mount>/data/<PATH>` with `X-Vault-Token` (and `X-Vault-Namespace` when a
//! namespace is configured).
//!
//! - [`VaultClient`] authenticates with a token (`VAULT_TOKEN` or a token file, read by the agent)
//!   or AppRole (`POST /v1/auth/approle/login`), renews its token at about half its TTL
//!   (`POST /v1/auth/token/renew-self`, before a request that finds it due, and on a timer with
//!   [`VaultClient::spawn_renewal`]), and logs in again with AppRole when renewal fails.
//! - [`resolve_credentials`] replaces the references in a [`Credentials`]; values are not cached.
//! - 403 and 404 are [`VaultError::PermissionDenied`] / [`VaultError::NotFound`] naming the path:
//!   credential errors, not retried ([`VaultError::is_retriable`] is false).
//! - Tokens, secret ids and values are `SecretString`s: `[REDACTED]` in Debug, zeroized on drop;
//!   no error or log line carries one; response bodies are wiped after parsing.
//!
//! This module reads no file: the agent passes the CA PEM and the token / secret-id sources.
//!
//! The client is hand-written over reqwest rather than built on `vaultrs`: `vaultrs` keeps the
//! token as a plain `String` (in a `Debug`-derived settings struct and middleware, never
//! zeroized), fills unset settings from `VAULT_*` environment variables (`VAULT_SKIP_VERIFY`
//! turns off TLS verification) and reads CA files itself, while the five calls needed here are
//! small.
//!
//! [`Credentials`]: luumen_schemas::inventory::Credentials

mod client;
mod error;
mod reference;
mod resolve;

pub use client::{RenewalTask, SecretSource, TokenInfo, VaultAuth, VaultClient, VaultSettings};
pub use error::VaultError;
pub use reference::{VaultRef, PREFIX};
pub use resolve::{references, resolve_credentials, uses_vault};

#[cfg(test)]
mod tests;
