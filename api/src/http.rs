//! The HTTP API under `/api/v1` (actix-web): authentication, errors, handlers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::{InternalError, JsonPayloadError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use futures_util::StreamExt;
use luumen_schemas::report::Batch;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

use crate::crypto::{hash_api_key, hex, unhex, MasterKey};
use crate::store::{
    ApiKeyInfo, AuditEntry, Change, Collection, CredentialMeta, Host, HostDetail, HostFilter,
    HostSpec, IngestOutcome, Role, SealedCredential, Settings, SoftwareHost, SoftwareVersion,
    Store, StoreError,
};

/// Shared by every handler.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub master: Arc<MasterKey>,
    /// Largest accepted `POST /reports` body.
    pub max_report_bytes: usize,
}

/// An error answered as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(ErrorBody {
            error: self.message.clone(),
        })
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, error.to_string()),
            StoreError::Conflict(_) => Self::new(StatusCode::CONFLICT, error.to_string()),
            StoreError::Invalid(_) => Self::bad_request(error.to_string()),
            StoreError::Backend(_) => {
                tracing::error!(error = %error, "storage failure");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal storage error")
            }
        }
    }
}

/// Runs blocking storage work off the async executor.
async fn blocking<T, F>(state: &web::Data<AppState>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, ApiError> + Send + 'static,
{
    let store = state.store.clone();
    web::block(move || f(store.as_ref()))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "worker failed"))?
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// A caller with an agent key.
pub struct AgentKey(pub ApiKeyInfo);
/// A caller with an admin key.
pub struct AdminKey(pub ApiKeyInfo);

async fn authenticate(req: &HttpRequest, role: Role) -> Result<ApiKeyInfo, ApiError> {
    let unauthorized = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, message);
    let Some(value) = req.headers().get("api-key") else {
        return Err(unauthorized("missing api-key header"));
    };
    let key = value
        .to_str()
        .map_err(|_| unauthorized("the API key was rejected"))?;
    let hash = hash_api_key(key.trim());
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no state"))?
        .clone();
    let info = blocking(&state, move |store| Ok(store.authenticate(&hash)?))
        .await?
        .ok_or_else(|| unauthorized("the API key was rejected"))?;
    if info.role != role {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this endpoint needs an {} key", role.as_str()),
        ));
    }
    Ok(info)
}

impl FromRequest for AgentKey {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req, Role::Agent).await.map(AgentKey) })
    }
}

impl FromRequest for AdminKey {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req, Role::Admin).await.map(AdminKey) })
    }
}

// ---------------------------------------------------------------------------------------------
// Paging

/// `limit` and `next` of every list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next` value of the previous page (opaque; empty means the first page).
    #[param(pattern = r"^(63313[aA](3[0-9]){1,18})?$")]
    pub next: Option<String>,
}

/// `{id}` of `/hosts/{id}…` (documentation only; handlers take `web::Path<String>`).
#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct HostIdPath(
    /// The host's id; not blank (ids are checked on creation and ingest).
    #[param(pattern = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")]
    pub String,
);

/// `{id}` of `/credentials/{id}` (documentation only).
#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct CredentialIdPath(
    /// The credential's id; not blank.
    #[param(pattern = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")]
    pub String,
);

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageOf<T> {
    pub items: Vec<T>,
    /// Pass as `next` to get the following page; null on the last page.
    pub next: Option<String>,
}

const CURSOR_PREFIX: &str = "c1:";

/// What a list's keyset cursor holds: one row number, or two (`software/{name}/hosts`).
#[derive(Clone, Copy)]
enum CursorKind {
    Single,
    Pair,
}

fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(_) => Err(ApiError::bad_request("limit: must be between 1 and 1000")),
    }
}

/// Decodes `next` exactly as the documented patterns describe it: empty (first page) or the hex
/// of `c1:` and 1–18 digits (`.` and 1–18 more for [`CursorKind::Pair`]).
fn decode_cursor(next: Option<&str>, kind: CursorKind) -> Result<Option<String>, ApiError> {
    let Some(next) = next.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let number = |s: &str| (1..=18).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    next.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| unhex(next))
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix(CURSOR_PREFIX).map(str::to_owned))
        .filter(|inner| match kind {
            CursorKind::Single => number(inner),
            CursorKind::Pair => inner
                .split_once('.')
                .is_some_and(|(a, b)| number(a) && number(b)),
        })
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("next: invalid cursor"))
}

fn page<T>((items, next): (Vec<T>, Option<String>)) -> PageOf<T> {
    PageOf {
        items,
        next: next.map(|n| hex(format!("{CURSOR_PREFIX}{n}").as_bytes())),
    }
}

/// The stale cutoff: two schedule intervals ago. A window longer than chrono can represent
/// (the schedule allows up to 2^61 - 1 seconds) puts it at the earliest instant, so only hosts
/// never seen are stale.
fn stale_before(interval_seconds: u64) -> String {
    let cutoff = i64::try_from(interval_seconds.saturating_mul(2))
        .ok()
        .and_then(chrono::TimeDelta::try_seconds)
        .and_then(|window| Utc::now().checked_sub_signed(window))
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
    crate::store::timestamp(cutoff)
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Liveness (no authentication).
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Up")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

#[derive(Serialize)]
struct ConfigCredentials<'a> {
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
    /// PEM/OpenSSH text of the private key (`private_key` of remote-config.schema.json).
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    passphrase: Option<&'a str>,
    sudo: bool,
}

#[derive(Serialize)]
struct ConfigHost<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    protocol: &'static str,
    groups: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    credentials: Option<ConfigCredentials<'a>>,
}

#[derive(Serialize)]
struct RemoteConfig<'a> {
    schedule: luumen_schemas::inventory::Schedule,
    default_credentials: Option<ConfigCredentials<'a>>,
    hosts: Vec<ConfigHost<'a>>,
}

/// Decrypted secrets of one credential; zeroized on drop.
struct OpenCredential {
    username: String,
    password: Option<Zeroizing<String>>,
    private_key: Option<Zeroizing<String>>,
    passphrase: Option<Zeroizing<String>>,
    sudo: bool,
}

impl OpenCredential {
    fn open(master: &MasterKey, sealed: &SealedCredential) -> Result<Self, ApiError> {
        let open = |field: &str, value: &Option<Vec<u8>>| {
            value
                .as_deref()
                .map(|v| master.open(v, &format!("{}/{field}", sealed.id)))
                .transpose()
                .map_err(|e| {
                    tracing::error!(credential = %sealed.id, error = %e, "cannot decrypt");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "a credential could not be decrypted",
                    )
                })
        };
        Ok(OpenCredential {
            username: sealed.username.clone(),
            password: open("password", &sealed.password_enc)?,
            private_key: open("private_key", &sealed.private_key_enc)?,
            passphrase: open("passphrase", &sealed.passphrase_enc)?,
            sudo: sealed.sudo,
        })
    }

    fn wire(&self) -> ConfigCredentials<'_> {
        ConfigCredentials {
            username: &self.username,
            password: self.password.as_deref().map(String::as_str),
            private_key: self.private_key.as_deref().map(String::as_str),
            passphrase: self.passphrase.as_deref().map(String::as_str),
            sudo: self.sudo,
        }
    }
}

/// The remote config for the calling agent (agent key). Every credential served is audited.
#[utoipa::path(get, path = "/api/v1/config", security(("api_key" = [])),
    responses((status = 200, description = "Remote config (remote-config.schema.json)"),
              (status = 401, body = ErrorBody)))]
pub async fn get_config(
    agent: AgentKey,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let master = state.master.clone();
    let body = blocking(&state, move |store| {
        let settings = store.settings()?;
        let hosts = store.config_hosts()?;
        let mut wanted: Vec<String> = hosts
            .iter()
            .filter_map(|h| h.credential_id.clone())
            .collect();
        wanted.extend(settings.default_credential_id.clone());
        wanted.sort();
        wanted.dedup();
        let mut open: HashMap<String, OpenCredential> = HashMap::new();
        for id in &wanted {
            if let Some(sealed) = store.sealed_credential(id)? {
                open.insert(id.clone(), OpenCredential::open(&master, &sealed)?);
                store.audit(
                    Some(&agent.0.id),
                    "credential_read",
                    Some(id),
                    Some("GET /config"),
                )?;
            }
        }
        let config = RemoteConfig {
            schedule: luumen_schemas::inventory::Schedule {
                interval_seconds: settings.interval_seconds,
                splay_seconds: None,
            },
            default_credentials: settings
                .default_credential_id
                .as_ref()
                .and_then(|id| open.get(id))
                .map(OpenCredential::wire),
            hosts: hosts
                .iter()
                .map(|h| ConfigHost {
                    id: &h.id,
                    address: h.address.as_deref(),
                    port: h.port,
                    protocol: h.protocol.as_str(),
                    groups: &h.groups,
                    credentials: h
                        .credential_id
                        .as_ref()
                        .and_then(|id| open.get(id))
                        .map(OpenCredential::wire),
                })
                .collect(),
        };
        serde_json::to_vec(&config)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("cache-control", "no-store"))
        .body(body))
}

/// Stores a batch of host results (agent key); idempotent on `batch_id`.
#[utoipa::path(post, path = "/api/v1/reports", security(("api_key" = [])),
    request_body(content = Object, description = "A batch (report.schema.json)"),
    responses((status = 200, body = IngestOutcome), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn post_reports(
    agent: AgentKey,
    state: web::Data<AppState>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let max = state.max_report_bytes;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading body: {e}")))?;
        if body.len() + chunk.len() > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {max} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    let batch: Batch = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(format!("invalid batch at `{path}`: {}", e.inner()))
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("invalid batch: {e}")))?;
    if batch.agent_id.trim().is_empty() {
        return Err(ApiError::bad_request("agent_id: must not be empty"));
    }
    if let Some(index) = batch
        .results
        .iter()
        .position(|r| r.host.id.trim().is_empty())
    {
        return Err(ApiError::bad_request(format!(
            "results[{index}].host.id: must not be empty"
        )));
    }
    let received_at = Utc::now();
    let key_id = agent.0.id.clone();
    let outcome = blocking(&state, move |store| {
        Ok(store.ingest(&batch, &key_id, received_at)?)
    })
    .await?;
    tracing::info!(
        batch_id = %outcome.batch_id,
        results = outcome.results,
        duplicate = outcome.duplicate,
        "batch received"
    );
    Ok(HttpResponse::Ok().json(outcome))
}

fn validate_host(host: &HostSpec) -> Result<(), ApiError> {
    use luumen_schemas::inventory::Protocol;
    if host.id.trim().is_empty() {
        return Err(ApiError::bad_request("id: must not be empty"));
    }
    if host.protocol != Protocol::Local
        && host.address.as_deref().is_none_or(|a| a.trim().is_empty())
    {
        return Err(ApiError::bad_request(format!(
            "address: required for protocol {}",
            host.protocol.as_str()
        )));
    }
    if host.port == Some(0) {
        return Err(ApiError::bad_request("port: must be 1-65535"));
    }
    Ok(())
}

/// Adds a host (admin key).
#[utoipa::path(post, path = "/api/v1/hosts", security(("api_key" = [])), request_body = HostSpec,
    responses((status = 201, body = HostDetail), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody,
               description = "The id exists already, or `credential_id` names no credential")))]
pub async fn create_host(
    admin: AdminKey,
    state: web::Data<AppState>,
    host: web::Json<HostSpec>,
) -> Result<HttpResponse, ApiError> {
    let host = host.into_inner();
    validate_host(&host)?;
    let detail = blocking(&state, move |store| {
        store.create_host(&host)?;
        store.audit(Some(&admin.0.id), "host_created", Some(&host.id), None)?;
        let cutoff = stale_before(store.settings()?.interval_seconds);
        Ok(store.get_host(&host.id, &cutoff)?)
    })
    .await?;
    Ok(HttpResponse::Created().json(detail))
}

/// Query of `GET /hosts`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HostsQuery {
    /// Rows per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next` value of the previous page (opaque; empty means the first page).
    #[param(pattern = r"^(63313[aA](3[0-9]){1,18})?$")]
    pub next: Option<String>,
    pub status: Option<String>,
    pub group: Option<String>,
    pub os_id: Option<String>,
    pub stale: Option<bool>,
    pub package: Option<String>,
}

/// Lists hosts with server-side filters (admin key).
#[utoipa::path(get, path = "/api/v1/hosts", security(("api_key" = [])), params(HostsQuery),
    responses((status = 200, body = PageOf<Host>)))]
pub async fn list_hosts(
    _admin: AdminKey,
    state: web::Data<AppState>,
    query: web::Query<HostsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = limit(query.limit)?;
    let after = decode_cursor(query.next.as_deref(), CursorKind::Single)?;
    let filter = HostFilter {
        status: query.status,
        group: query.group,
        os_id: query.os_id,
        stale: query.stale,
        package: query.package,
    };
    let result = blocking(&state, move |store| {
        let cutoff = stale_before(store.settings()?.interval_seconds);
        Ok(store.list_hosts(&filter, after.as_deref(), limit, &cutoff)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page(result)))
}

/// One host with its latest properties, status and staleness (admin key).
#[utoipa::path(get, path = "/api/v1/hosts/{id}", security(("api_key" = [])),
    params(HostIdPath),
    responses((status = 200, body = HostDetail), (status = 404, body = ErrorBody)))]
pub async fn get_host(
    _admin: AdminKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let detail = blocking(&state, move |store| {
        let cutoff = stale_before(store.settings()?.interval_seconds);
        Ok(store.get_host(&id, &cutoff)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(detail))
}

/// Body of `PUT /hosts/{id}`: the host without (or with the same) `id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostUpdate {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default, deserialize_with = "crate::store::integral_opt")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    #[schema(value_type = crate::store::ProtocolName, example = "ssh")]
    pub protocol: luumen_schemas::inventory::Protocol,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub credential_id: Option<String>,
}

/// Replaces a host's settings (admin key); its state and history stay.
#[utoipa::path(put, path = "/api/v1/hosts/{id}", security(("api_key" = [])), request_body = HostUpdate,
    params(HostIdPath),
    responses((status = 200, body = HostDetail), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody,
               description = "The body's `id` differs from the path, or `credential_id` names no credential")))]
pub async fn update_host(
    admin: AdminKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<HostUpdate>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let body = body.into_inner();
    if body.id.as_deref().is_some_and(|b| b != id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "id: does not match the path",
        ));
    }
    let host = HostSpec {
        id,
        address: body.address,
        port: body.port,
        protocol: body.protocol,
        groups: body.groups,
        credential_id: body.credential_id,
    };
    validate_host(&host)?;
    let detail = blocking(&state, move |store| {
        store.update_host(&host)?;
        store.audit(Some(&admin.0.id), "host_updated", Some(&host.id), None)?;
        let cutoff = stale_before(store.settings()?.interval_seconds);
        Ok(store.get_host(&host.id, &cutoff)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(detail))
}

/// Removes a host and its history (admin key).
#[utoipa::path(delete, path = "/api/v1/hosts/{id}", security(("api_key" = [])),
    params(HostIdPath),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_host(
    admin: AdminKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    blocking(&state, move |store| {
        store.delete_host(&id)?;
        Ok(store.audit(Some(&admin.0.id), "host_deleted", Some(&id), None)?)
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The host's stored results, newest first (admin key).
#[utoipa::path(get, path = "/api/v1/hosts/{id}/history", security(("api_key" = [])),
    params(HostIdPath, PageQuery),
    responses((status = 200, body = PageOf<Collection>), (status = 404, body = ErrorBody)))]
pub async fn host_history(
    _admin: AdminKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(query.limit)?;
    let after = decode_cursor(query.next.as_deref(), CursorKind::Single)?;
    let id = id.into_inner();
    let result = blocking(&state, move |store| {
        Ok(store.host_history(&id, after.as_deref(), limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page(result)))
}

/// What changed between collections, newest first (admin key).
#[utoipa::path(get, path = "/api/v1/hosts/{id}/changes", security(("api_key" = [])),
    params(HostIdPath, PageQuery),
    responses((status = 200, body = PageOf<Change>), (status = 404, body = ErrorBody)))]
pub async fn host_changes(
    _admin: AdminKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(query.limit)?;
    let after = decode_cursor(query.next.as_deref(), CursorKind::Single)?;
    let id = id.into_inner();
    let result = blocking(&state, move |store| {
        Ok(store.host_changes(&id, after.as_deref(), limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page(result)))
}

/// Body of `POST /credentials`. Secrets are write-only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialInput {
    /// Defaults to a new UUID; not blank.
    #[serde(default)]
    #[schema(pattern = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")]
    pub id: Option<String>,
    /// Defaults to the username.
    #[serde(default)]
    pub name: Option<String>,
    /// Not blank.
    #[schema(pattern = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")]
    pub username: String,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub password: Option<SecretString>,
    /// PEM text of the private key (`-----BEGIN ` after optional white space).
    #[serde(default)]
    #[schema(value_type = Option<String>,
             pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*-----BEGIN ")]
    pub private_key: Option<SecretString>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub passphrase: Option<SecretString>,
    #[serde(default = "default_true")]
    pub sudo: bool,
    /// `workspace` (default) or `personal`.
    #[serde(default)]
    #[schema(value_type = Option<CredentialScope>)]
    pub scope: Option<String>,
}

/// The OpenAPI view of a credential's `scope`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum CredentialScope {
    Workspace,
    Personal,
}

fn default_true() -> bool {
    true
}

/// Stores a credential, its secrets encrypted (admin key).
#[utoipa::path(post, path = "/api/v1/credentials", security(("api_key" = [])), request_body = CredentialInput,
    responses((status = 201, body = CredentialMeta), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn create_credential(
    admin: AdminKey,
    state: web::Data<AppState>,
    body: web::Json<CredentialInput>,
) -> Result<HttpResponse, ApiError> {
    let input = body.into_inner();
    let id = input
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if id.trim().is_empty() {
        return Err(ApiError::bad_request("id: must not be empty"));
    }
    if input.username.trim().is_empty() {
        return Err(ApiError::bad_request("username: must not be empty"));
    }
    if input.password.is_none() && input.private_key.is_none() {
        return Err(ApiError::bad_request(
            "password or private_key: one of them is required",
        ));
    }
    if let Some(key) = &input.private_key {
        if !key.expose_secret().trim_start().starts_with("-----BEGIN ") {
            return Err(ApiError::bad_request("private_key: must be PEM text"));
        }
    }
    let scope = input.scope.clone().unwrap_or_else(|| "workspace".into());
    if scope != "workspace" && scope != "personal" {
        return Err(ApiError::bad_request(
            "scope: must be workspace or personal",
        ));
    }
    let seal = |field: &str, value: &Option<SecretString>| {
        value
            .as_ref()
            .map(|v| {
                state
                    .master
                    .seal(v.expose_secret().as_bytes(), &format!("{id}/{field}"))
            })
            .transpose()
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    };
    let sealed = SealedCredential {
        id: id.clone(),
        name: input.name.clone().unwrap_or_else(|| input.username.clone()),
        username: input.username.clone(),
        password_enc: seal("password", &input.password)?,
        private_key_enc: seal("private_key", &input.private_key)?,
        passphrase_enc: seal("passphrase", &input.passphrase)?,
        sudo: input.sudo,
        scope,
        owner_key_id: Some(admin.0.id.clone()),
    };
    drop(input);
    let meta = blocking(&state, move |store| {
        store.create_credential(&sealed)?;
        store.audit(
            Some(&admin.0.id),
            "credential_created",
            Some(&sealed.id),
            None,
        )?;
        let (items, _) = store.list_credentials(None, u32::MAX)?;
        items
            .into_iter()
            .find(|c| c.id == sealed.id)
            .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "credential vanished"))
    })
    .await?;
    Ok(HttpResponse::Created().json(meta))
}

/// Credential metadata, never a secret (admin key).
#[utoipa::path(get, path = "/api/v1/credentials", security(("api_key" = [])), params(PageQuery),
    responses((status = 200, body = PageOf<CredentialMeta>)))]
pub async fn list_credentials(
    _admin: AdminKey,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(query.limit)?;
    let after = decode_cursor(query.next.as_deref(), CursorKind::Single)?;
    let result = blocking(&state, move |store| {
        Ok(store.list_credentials(after.as_deref(), limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page(result)))
}

/// Deletes a credential at once; hosts using it fall back to the defaults (admin key).
#[utoipa::path(delete, path = "/api/v1/credentials/{id}", security(("api_key" = [])),
    params(CredentialIdPath),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_credential(
    admin: AdminKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    blocking(&state, move |store| {
        store.delete_credential(&id)?;
        Ok(store.audit(Some(&admin.0.id), "credential_deleted", Some(&id), None)?)
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Body of `PUT /default-credentials`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultCredentials {
    /// null removes the default.
    pub credential_id: Option<String>,
}

/// Sets the default credentials (admin key).
#[utoipa::path(put, path = "/api/v1/default-credentials", security(("api_key" = [])),
    request_body = DefaultCredentials, responses((status = 200, body = Settings),
        (status = 409, body = ErrorBody, description = "`credential_id` names no credential")))]
pub async fn put_default_credentials(
    admin: AdminKey,
    state: web::Data<AppState>,
    body: web::Json<DefaultCredentials>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let settings = blocking(&state, move |store| {
        store.set_default_credential(body.credential_id.as_deref())?;
        store.audit(
            Some(&admin.0.id),
            "default_credentials_set",
            body.credential_id.as_deref(),
            None,
        )?;
        Ok(store.settings()?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(settings))
}

/// Body of `PUT /schedule`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    /// Seconds between collections, 1 to 2^61 - 1.
    #[schema(minimum = 1, maximum = 31622400_u64)]
    #[serde(deserialize_with = "crate::store::integral")]
    pub interval_seconds: u64,
}

/// Sets the collection schedule (admin key).
#[utoipa::path(put, path = "/api/v1/schedule", security(("api_key" = [])),
    request_body = ScheduleInput, responses((status = 200, body = Settings)))]
pub async fn put_schedule(
    admin: AdminKey,
    state: web::Data<AppState>,
    body: web::Json<ScheduleInput>,
) -> Result<HttpResponse, ApiError> {
    let interval = body.interval_seconds;
    // The agent's own bound (one year): a larger interval would be refused by every agent.
    if !(1..=luumen_schemas::inventory::MAX_INTERVAL_SECONDS).contains(&interval) {
        return Err(ApiError::bad_request(
            "interval_seconds: must be between 1 and 31622400 (one year)",
        ));
    }
    let settings = blocking(&state, move |store| {
        store.set_schedule(interval)?;
        store.audit(
            Some(&admin.0.id),
            "schedule_set",
            None,
            Some(&format!("interval_seconds={interval}")),
        )?;
        Ok(store.settings()?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(settings))
}

/// The schedule and default credentials (admin key).
#[utoipa::path(get, path = "/api/v1/settings", security(("api_key" = [])),
    responses((status = 200, body = Settings)))]
pub async fn get_settings(
    _admin: AdminKey,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let settings = blocking(&state, |store| Ok(store.settings()?)).await?;
    Ok(HttpResponse::Ok().json(settings))
}

/// Credential reads and admin changes, newest first (admin key).
#[utoipa::path(get, path = "/api/v1/audit", security(("api_key" = [])), params(PageQuery),
    responses((status = 200, body = PageOf<AuditEntry>)))]
pub async fn list_audit(
    _admin: AdminKey,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(query.limit)?;
    let after = decode_cursor(query.next.as_deref(), CursorKind::Single)?;
    let result = blocking(&state, move |store| {
        Ok(store.list_audit(after.as_deref(), limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page(result)))
}

/// Query of `GET /software`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SoftwareQuery {
    /// Package name (exact).
    pub name: String,
    /// Rows per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next` value of the previous page (opaque; empty means the first page).
    #[param(pattern = r"^(63313[aA](3[0-9]){1,18})?$")]
    pub next: Option<String>,
}

/// Installed versions of a package across the fleet, with host counts (admin key).
#[utoipa::path(get, path = "/api/v1/software", security(("api_key" = [])), params(SoftwareQuery),
    responses((status = 200, body = PageOf<SoftwareVersion>)))]
pub async fn software_versions(
    _admin: AdminKey,
    state: web::Data<AppState>,
    query: web::Query<SoftwareQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = limit(query.limit)?;
    let after = decode_cursor(query.next.as_deref(), CursorKind::Single)?;
    let result = blocking(&state, move |store| {
        Ok(store.software_versions(&query.name, after.as_deref(), limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page(result)))
}

/// Query of `GET /software/{name}/hosts`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SoftwareHostsQuery {
    /// `version` or `version-release`.
    pub version: Option<String>,
    /// Rows per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next` value of the previous page (opaque; empty means the first page).
    #[param(pattern = r"^(63313[aA](3[0-9]){1,18}2[eE](3[0-9]){1,18})?$")]
    pub next: Option<String>,
}

/// Hosts that have a package (optionally a version) installed (admin key).
#[utoipa::path(get, path = "/api/v1/software/{name}/hosts", security(("api_key" = [])),
    params(SoftwareHostsQuery), responses((status = 200, body = PageOf<SoftwareHost>)))]
pub async fn software_hosts(
    _admin: AdminKey,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<SoftwareHostsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = limit(query.limit)?;
    let after = decode_cursor(query.next.as_deref(), CursorKind::Pair)?;
    let name = name.into_inner();
    let result = blocking(&state, move |store| {
        Ok(store.software_hosts(&name, query.version.as_deref(), after.as_deref(), limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page(result)))
}

/// The OpenAPI 3 document of this API.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document_json())
}

async fn not_found() -> HttpResponse {
    ApiError::new(StatusCode::NOT_FOUND, "not found").error_response()
}

/// One JSON log line per request: method, path (no query), status, duration. Never headers.
pub async fn log_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req.path().to_owned();
    let response = next.call(req).await?;
    tracing::info!(
        method,
        path,
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(response)
}

/// A path whose other methods get 405 with `Allow: {allow}` (the methods routed on it).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        HttpResponse::MethodNotAllowed()
            .insert_header((actix_web::http::header::ALLOW, allow))
            .json(ErrorBody {
                error: format!("method {} not allowed", req.method()),
            })
    }))
}

/// Registers every route on an actix `App`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let json = web::JsonConfig::default()
        .limit(1024 * 1024)
        .error_handler(|error, _req| {
            let status = match &error {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                JsonPayloadError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            };
            let message = match &error {
                JsonPayloadError::Deserialize(e) => format!("invalid body: {e}"),
                other => other.to_string(),
            };
            let response = ApiError::new(status, message).error_response();
            InternalError::from_response(error, response).into()
        });
    let query = web::QueryConfig::default().error_handler(|error, _req| {
        let message = match &error {
            QueryPayloadError::Deserialize(e) => format!("invalid query: {e}"),
            other => other.to_string(),
        };
        let response = ApiError::bad_request(message).error_response();
        InternalError::from_response(error, response).into()
    });
    cfg.app_data(json)
        .app_data(query)
        .service(resource("/healthz", "GET").route(web::get().to(healthz)))
        .service(resource("/openapi.json", "GET").route(web::get().to(openapi)))
        .service(
            web::scope("/api/v1")
                .service(resource("/healthz", "GET").route(web::get().to(healthz)))
                .service(resource("/openapi.json", "GET").route(web::get().to(openapi)))
                .service(resource("/config", "GET").route(web::get().to(get_config)))
                .service(resource("/reports", "POST").route(web::post().to(post_reports)))
                .service(
                    resource("/hosts", "GET, POST")
                        .route(web::get().to(list_hosts))
                        .route(web::post().to(create_host)),
                )
                .service(
                    resource("/hosts/{id}", "GET, PUT, DELETE")
                        .route(web::get().to(get_host))
                        .route(web::put().to(update_host))
                        .route(web::delete().to(delete_host)),
                )
                .service(resource("/hosts/{id}/history", "GET").route(web::get().to(host_history)))
                .service(resource("/hosts/{id}/changes", "GET").route(web::get().to(host_changes)))
                .service(
                    resource("/credentials", "GET, POST")
                        .route(web::get().to(list_credentials))
                        .route(web::post().to(create_credential)),
                )
                .service(
                    resource("/credentials/{id}", "DELETE")
                        .route(web::delete().to(delete_credential)),
                )
                .service(
                    resource("/default-credentials", "PUT")
                        .route(web::put().to(put_default_credentials)),
                )
                .service(resource("/schedule", "PUT").route(web::put().to(put_schedule)))
                .service(resource("/settings", "GET").route(web::get().to(get_settings)))
                .service(resource("/audit", "GET").route(web::get().to(list_audit)))
                .service(resource("/software", "GET").route(web::get().to(software_versions)))
                .service(
                    resource("/software/{name}/hosts", "GET").route(web::get().to(software_hosts)),
                ),
        )
        .default_service(web::to(not_found));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_decode_exactly_as_documented() {
        let single = hex(b"c1:42");
        let pair = hex(b"c1:42.7");
        assert_eq!(decode_cursor(None, CursorKind::Single).unwrap(), None);
        assert_eq!(decode_cursor(Some(""), CursorKind::Single).unwrap(), None);
        assert_eq!(
            decode_cursor(Some(&single), CursorKind::Single).unwrap(),
            Some("42".into())
        );
        assert_eq!(
            decode_cursor(Some(&single.to_uppercase()), CursorKind::Single).unwrap(),
            Some("42".into())
        );
        assert_eq!(
            decode_cursor(Some(&pair), CursorKind::Pair).unwrap(),
            Some("42.7".into())
        );
        for (bad, kind) in [
            (pair.as_str(), CursorKind::Single),
            (single.as_str(), CursorKind::Pair),
            ("0", CursorKind::Single),
            (" 63313a3432", CursorKind::Single),
            (&hex(b"c1:-1"), CursorKind::Single),
            (&hex(b"c1:1234567890123456789"), CursorKind::Single),
        ] {
            assert!(decode_cursor(Some(bad), kind).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_largest_schedule_gives_a_stale_cutoff() {
        assert!(stale_before(i64::MAX as u64 / 4).starts_with('-'));
        assert!(stale_before(u64::MAX).starts_with('-'));
        assert!(stale_before(600) > stale_before(3600));
    }
}
