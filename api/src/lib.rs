//! luumen-api: the self-hosted Luumen API. The agent pulls `GET /api/v1/config` and posts its
//! batches to `POST /api/v1/reports`; admins manage hosts, credentials and settings.
//!
//! - [`store`] — the storage trait and its SQLite implementation (migrations in `migrations/`);
//! - [`crypto`] — API keys (stored hashed) and AES-256-GCM sealing of credential secrets;
//! - [`http`] — the actix-web handlers; [`openapi`] — the generated OpenAPI document;
//! - [`server`] — `init`, `serve` and `create-key`.

pub mod crypto;
pub mod http;
pub mod openapi;
pub mod server;
pub mod store;
