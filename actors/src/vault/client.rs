//! The Vault HTTP client: token / AppRole auth, renewal, KV v2 reads.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use luumen_schemas::config::VaultConfig;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode, Url};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use serde::de::{Deserializer, IgnoredAny};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::VaultError;

/// Header carrying the token.
const TOKEN_HEADER: &str = "X-Vault-Token";
/// Header selecting a namespace (Vault Enterprise, OpenBao).
const NAMESPACE_HEADER: &str = "X-Vault-Namespace";
/// Renewal is retried this long after a failed renewal (while the token is still valid).
const RENEW_RETRY: Duration = Duration::from_secs(5);
/// A token is treated as expired this long before Vault would expire it.
const EXPIRY_MARGIN: Duration = Duration::from_millis(500);

/// Where a secret used for authentication comes from. The agent reads files (architecture
/// invariant), so a file-backed source is a closure the agent provides; it is called at every
/// login, so a rotated AppRole secret id (or a rewritten token file) is picked up.
#[derive(Clone)]
pub struct SecretSource(Arc<dyn Fn() -> Result<SecretString, String> + Send + Sync>);

impl SecretSource {
    /// A fixed value (e.g. `VAULT_TOKEN` read by the agent).
    pub fn fixed(secret: SecretString) -> SecretSource {
        SecretSource(Arc::new(move || Ok(secret.clone())))
    }

    /// A value produced on demand, e.g. by reading the token or secret-id file again. The
    /// error message must not contain the secret.
    pub fn from_fn(f: impl Fn() -> Result<SecretString, String> + Send + Sync + 'static) -> Self {
        SecretSource(Arc::new(f))
    }

    fn get(&self) -> Result<SecretString, String> {
        (self.0)()
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretSource([REDACTED])")
    }
}

/// How the client authenticates.
#[derive(Clone, Debug)]
pub enum VaultAuth {
    /// A token (from `VAULT_TOKEN` or a token file). Renewed at half its TTL when renewable.
    Token(SecretSource),
    /// AppRole: `POST /v1/auth/<mount>/login` with the role id and secret id. The resulting token
    /// is renewed at half its TTL; when renewal fails or is not possible, the client logs in again.
    AppRole {
        /// The role id (not secret on its own).
        role_id: String,
        /// The secret id.
        secret_id: SecretSource,
        /// The auth mount, normally `approle`.
        mount: String,
    },
}

/// Everything the client needs, with files already read by the caller.
#[derive(Clone, Debug)]
pub struct VaultSettings {
    /// Vault's address, e.g. `https://vault.example.com:8200`.
    pub address: String,
    /// Namespace sent as `X-Vault-Namespace` on every request.
    pub namespace: Option<String>,
    /// The KV v2 mount (may contain `/`).
    pub mount: String,
    /// PEM certificate(s) of the CA that signed Vault's certificate, trusted besides the system
    /// roots.
    pub ca_pem: Option<Vec<u8>>,
    /// How to authenticate.
    pub auth: VaultAuth,
    /// Time limit of one HTTP request.
    pub timeout: Duration,
}

impl VaultSettings {
    /// Settings from config.yaml's `vault` block. The caller (the agent, which alone reads files)
    /// passes the CA file's content, a source for the token (the token file if `token_file` is
    /// set, else `VAULT_TOKEN`) and, when `approle` is set, a source for its secret id file.
    /// AppRole wins over a token when both are configured.
    pub fn from_config(
        config: &VaultConfig,
        ca_pem: Option<Vec<u8>>,
        token: Option<SecretSource>,
        approle_secret_id: Option<SecretSource>,
    ) -> Result<VaultSettings, VaultError> {
        let auth =
            match (&config.approle, approle_secret_id, token) {
                (Some(approle), Some(secret_id), _) => VaultAuth::AppRole {
                    role_id: approle.role_id.clone(),
                    secret_id,
                    mount: "approle".to_owned(),
                },
                (Some(_), None, _) => {
                    return Err(VaultError::Setup(
                        "vault.approle is set but no secret id was provided".into(),
                    ))
                }
                (None, _, Some(token)) => VaultAuth::Token(token),
                (None, _, None) => return Err(VaultError::Setup(
                    "no Vault authentication: set VAULT_TOKEN, vault.token_file or vault.approle"
                        .into(),
                )),
            };
        Ok(VaultSettings {
            address: config.address.clone(),
            namespace: config.namespace.clone(),
            mount: config.mount.clone(),
            ca_pem,
            auth,
            timeout: Duration::from_secs(10),
        })
    }
}

/// What Vault says about the client's current token (no token value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Remaining lifetime; `None` for a token that never expires (e.g. a root token).
    pub ttl: Option<Duration>,
    /// Whether the token can be renewed.
    pub renewable: bool,
}

/// The current token and when to renew it.
struct TokenState {
    token: SecretString,
    renewable: bool,
    /// When to renew (about half the TTL); `None` when the token does not expire.
    renew_at: Option<Instant>,
    /// When the token expires (minus a small margin); `None` when it does not.
    expires_at: Option<Instant>,
}

impl TokenState {
    fn new(token: SecretString, ttl: Option<Duration>, renewable: bool) -> TokenState {
        let now = Instant::now();
        TokenState {
            token,
            renewable,
            renew_at: ttl.map(|ttl| now + ttl / 2),
            expires_at: ttl.map(|ttl| now + ttl.saturating_sub(EXPIRY_MARGIN)),
        }
    }
}

struct Inner {
    settings: VaultSettings,
    base: Url,
    kv_mount: Vec<String>,
    http: reqwest::Client,
    state: Mutex<Option<TokenState>>,
    renewals: std::sync::atomic::AtomicU64,
    logins: std::sync::atomic::AtomicU64,
}

/// An async Vault client (KV v2). Cheap to clone: clones share the token and its renewal.
/// Debug shows the address, namespace, mount and auth method, never a token or secret id.
#[derive(Clone)]
pub struct VaultClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.inner.settings;
        let method = match &settings.auth {
            VaultAuth::Token(_) => "token",
            VaultAuth::AppRole { .. } => "approle",
        };
        f.debug_struct("VaultClient")
            .field("address", &settings.address)
            .field("namespace", &settings.namespace)
            .field("mount", &settings.mount)
            .field("auth", &method)
            .field("token", &"[REDACTED]")
            .finish()
    }
}

/// `{"auth": {...}}` of a login or renewal.
#[derive(Deserialize)]
struct AuthResponse {
    auth: AuthBlock,
}

#[derive(Deserialize)]
struct AuthBlock {
    client_token: SecretString,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

/// `{"data": {...}}` of lookup-self.
#[derive(Deserialize)]
struct LookupResponse {
    data: LookupData,
}

#[derive(Deserialize)]
struct LookupData {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    renewable: bool,
}

/// `{"data": {"data": {...}}}` of a KV v2 read; string values go straight into secrets.
#[derive(Deserialize)]
struct KvResponse {
    data: KvData,
}

#[derive(Deserialize)]
struct KvData {
    #[serde(default)]
    data: Option<HashMap<String, KvValue>>,
}

/// A field of a KV secret: a string (kept as a secret) or anything else (ignored).
enum KvValue {
    Text(SecretString),
    Other,
}

impl<'de> Deserialize<'de> for KvValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KvValue, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = KvValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a KV field value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KvValue, E> {
                Ok(KvValue::Text(SecretString::from(v)))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<KvValue, E> {
                Ok(KvValue::Text(SecretString::from(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<KvValue, E> {
                Ok(KvValue::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<KvValue, E> {
                Ok(KvValue::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<KvValue, E> {
                Ok(KvValue::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<KvValue, E> {
                Ok(KvValue::Other)
            }
            fn visit_unit<E>(self) -> Result<KvValue, E> {
                Ok(KvValue::Other)
            }
            fn visit_none<E>(self) -> Result<KvValue, E> {
                Ok(KvValue::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<KvValue, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KvValue::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<KvValue, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KvValue::Other)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Vault's `{"errors": [...]}` body.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

/// A response body read into a buffer that is wiped when dropped.
struct Body(Vec<u8>);

impl Drop for Body {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Body {
    /// Vault's error messages, joined (they never contain secrets), for the error text.
    fn error_message(&self) -> String {
        serde_json::from_slice::<ErrorBody>(&self.0)
            .map(|body| body.errors.join("; "))
            .unwrap_or_default()
    }
}

impl VaultClient {
    /// A client for `settings`. Does no I/O: the first request logs in (AppRole) or looks the
    /// token up to learn its TTL.
    pub fn new(settings: VaultSettings) -> Result<VaultClient, VaultError> {
        let base = Url::parse(settings.address.trim_end_matches('/'))
            .map_err(|e| VaultError::Setup(format!("vault.address {:?}: {e}", settings.address)))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(VaultError::Setup(format!(
                "vault.address {:?} must be an http(s) URL",
                settings.address
            )));
        }
        let kv_mount: Vec<String> = settings
            .mount
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if kv_mount.is_empty() {
            return Err(VaultError::Setup("vault.mount is empty".into()));
        }
        if let Some(namespace) = &settings.namespace {
            HeaderValue::from_str(namespace).map_err(|_| {
                VaultError::Setup(format!(
                    "vault.namespace {namespace:?} is not a valid header"
                ))
            })?;
        }
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("luumen-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &settings.ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| VaultError::Setup(format!("invalid Vault CA certificate: {e}")))?;
            if certificates.is_empty() {
                return Err(VaultError::Setup(
                    "the Vault CA file holds no PEM certificate".into(),
                ));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|e| VaultError::Setup(format!("HTTP client: {e}")))?;
        Ok(VaultClient {
            inner: Arc::new(Inner {
                settings,
                base,
                kv_mount,
                http,
                state: Mutex::new(None),
                renewals: Default::default(),
                logins: Default::default(),
            }),
        })
    }

    /// The configured KV v2 mount.
    pub fn mount(&self) -> &str {
        &self.inner.settings.mount
    }

    /// How many times the token was renewed (for tests and the doctor).
    pub fn renewals(&self) -> u64 {
        self.inner
            .renewals
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many AppRole logins were made.
    pub fn logins(&self) -> u64 {
        self.inner.logins.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads one field of the KV v2 secret at `path` (`GET /v1/<mount>/data/<path>`). 403 and 404
    /// are [`VaultError::PermissionDenied`] / [`VaultError::NotFound`] naming the path.
    pub async fn read_secret(&self, path: &str, field: &str) -> Result<SecretString, VaultError> {
        let mount = &self.inner.settings.mount;
        let mut segments: Vec<&str> = self.inner.kv_mount.iter().map(String::as_str).collect();
        segments.push("data");
        segments.extend(path.split('/').filter(|s| !s.is_empty()));
        let url = self.url(&segments);
        let token = self.token().await?;
        let (status, body) = self.send(Method::GET, url, Some(&token), None).await?;
        drop(token);
        match status {
            StatusCode::OK => {}
            StatusCode::FORBIDDEN => {
                return Err(VaultError::PermissionDenied {
                    mount: mount.clone(),
                    path: path.to_owned(),
                })
            }
            StatusCode::NOT_FOUND => {
                return Err(VaultError::NotFound {
                    mount: mount.clone(),
                    path: path.to_owned(),
                })
            }
            status => {
                return Err(VaultError::Request {
                    endpoint: format!("/v1/{mount}/data/{path}"),
                    reason: format!("HTTP {status}: {}", body.error_message()),
                    retriable: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
                })
            }
        }
        let response: KvResponse =
            serde_json::from_slice(&body.0).map_err(|e| VaultError::Request {
                endpoint: format!("/v1/{mount}/data/{path}"),
                // serde_json's message names the position, not the content.
                reason: format!("unexpected KV v2 response: {}", e.classify_name()),
                retriable: false,
            })?;
        // A deleted (soft-deleted) version answers 404 with data: null; handled above or here.
        let mut data = response.data.data.ok_or_else(|| VaultError::NotFound {
            mount: mount.clone(),
            path: path.to_owned(),
        })?;
        match data.remove(field) {
            Some(KvValue::Text(secret)) => Ok(secret),
            _ => Err(VaultError::MissingField {
                mount: mount.clone(),
                path: path.to_owned(),
                field: field.to_owned(),
            }),
        }
    }

    /// Makes sure there is a valid token (logging in or renewing as needed) and asks Vault about
    /// it (`GET /v1/auth/token/lookup-self`): "Vault reachable and the token valid".
    pub async fn check(&self) -> Result<TokenInfo, VaultError> {
        let token = self.token().await?;
        self.lookup_self(&token).await
    }

    /// Renews the token now if it is due (half its TTL passed), or logs in again (AppRole) when
    /// renewal fails or is impossible. Called before every request; [`VaultClient::spawn_renewal`]
    /// calls it on a timer so the token also survives long pauses between cycles.
    pub async fn renew_if_due(&self) -> Result<(), VaultError> {
        self.token().await.map(drop)
    }

    /// Starts a background task (on the current tokio runtime) that renews the token at about
    /// half its TTL and logs in again when renewal fails. Stops when the handle is dropped.
    pub fn spawn_renewal(&self) -> RenewalTask {
        let client = self.clone();
        let handle = tokio::spawn(async move {
            loop {
                let wait = match client.renew_if_due().await {
                    Ok(()) => match client.next_renewal().await {
                        Some(at) => at.saturating_duration_since(Instant::now()),
                        // A token that never expires: nothing to do.
                        None => return,
                    },
                    Err(error) => {
                        tracing::warn!(%error, "Vault token renewal failed; retrying");
                        RENEW_RETRY
                    }
                };
                tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
            }
        });
        RenewalTask(handle)
    }

    async fn next_renewal(&self) -> Option<Instant> {
        let state = self.inner.state.lock().await;
        state.as_ref().and_then(|s| s.renew_at)
    }

    /// A valid token: logs in / looks up on first use, renews when due, logs in again when the
    /// renewal fails (AppRole).
    async fn token(&self) -> Result<SecretString, VaultError> {
        let mut state = self.inner.state.lock().await;
        let now = Instant::now();
        let Some(current) = state.as_mut() else {
            let fresh = self.authenticate().await?;
            let token = fresh.token.clone();
            *state = Some(fresh);
            return Ok(token);
        };
        if current.renew_at.is_some_and(|at| now >= at) {
            let renewed = if current.renewable {
                self.renew_self(&current.token, current.expires_at).await
            } else {
                Err(VaultError::Auth {
                    method: "token",
                    reason: "the token is not renewable".into(),
                    retriable: false,
                })
            };
            match renewed {
                Ok(fresh) => {
                    self.inner
                        .renewals
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!("Vault token renewed");
                    *current = fresh;
                }
                Err(error) => match &self.inner.settings.auth {
                    VaultAuth::AppRole { .. } => {
                        tracing::info!(%error, "Vault token renewal failed; logging in again");
                        *current = self.login_approle().await?;
                    }
                    VaultAuth::Token(source) => {
                        // Maybe the token file was rewritten with a new token.
                        let fresh = source
                            .get()
                            .ok()
                            .filter(|t| t.expose_secret().trim() != current.token.expose_secret());
                        if let Some(fresh) = fresh {
                            *current = self.adopt_token(fresh).await?;
                        } else if current.expires_at.is_some_and(|at| now >= at) {
                            return Err(VaultError::TokenExpired);
                        } else {
                            tracing::warn!(%error, "Vault token renewal failed");
                            current.renew_at = Some(now + RENEW_RETRY);
                        }
                    }
                },
            }
        } else if current.expires_at.is_some_and(|at| now >= at) {
            match &self.inner.settings.auth {
                VaultAuth::AppRole { .. } => *current = self.login_approle().await?,
                VaultAuth::Token(_) => return Err(VaultError::TokenExpired),
            }
        }
        Ok(current.token.clone())
    }

    async fn authenticate(&self) -> Result<TokenState, VaultError> {
        match &self.inner.settings.auth {
            VaultAuth::AppRole { .. } => self.login_approle().await,
            VaultAuth::Token(source) => {
                let token = source.get().map_err(|reason| VaultError::Auth {
                    method: "token",
                    reason,
                    retriable: false,
                })?;
                self.adopt_token(token).await
            }
        }
    }

    /// Takes a token as given and learns its TTL with lookup-self. A token whose policy does
    /// not even allow lookup-self is used as it is (without renewal): reads will tell.
    async fn adopt_token(&self, token: SecretString) -> Result<TokenState, VaultError> {
        let token = SecretString::from(token.expose_secret().trim());
        if token.expose_secret().is_empty() {
            return Err(VaultError::Auth {
                method: "token",
                reason: "the Vault token is empty".into(),
                retriable: false,
            });
        }
        match self.lookup_self(&token).await {
            Ok(info) => Ok(TokenState::new(token, info.ttl, info.renewable)),
            Err(VaultError::Auth {
                retriable: false, ..
            }) => Ok(TokenState::new(token, None, false)),
            Err(error) => Err(error),
        }
    }

    async fn lookup_self(&self, token: &SecretString) -> Result<TokenInfo, VaultError> {
        let url = self.url(&["auth", "token", "lookup-self"]);
        let (status, body) = self.send(Method::GET, url, Some(token), None).await?;
        if status != StatusCode::OK {
            return Err(VaultError::Auth {
                method: "token",
                reason: format!("lookup-self: HTTP {status}: {}", body.error_message()),
                retriable: status.is_server_error(),
            });
        }
        let data = serde_json::from_slice::<LookupResponse>(&body.0)
            .map_err(|e| VaultError::Auth {
                method: "token",
                reason: format!("unexpected lookup-self response: {}", e.classify_name()),
                retriable: false,
            })?
            .data;
        Ok(TokenInfo {
            ttl: (data.ttl > 0).then(|| Duration::from_secs(data.ttl)),
            renewable: data.renewable,
        })
    }

    /// `POST /v1/auth/token/renew-self`. A renewal that does not extend the token (max TTL
    /// reached) counts as failed, so AppRole logs in again before the token runs out.
    async fn renew_self(
        &self,
        token: &SecretString,
        expires_at: Option<Instant>,
    ) -> Result<TokenState, VaultError> {
        let url = self.url(&["auth", "token", "renew-self"]);
        let (status, body) = self
            .send(Method::POST, url, Some(token), Some(b"{}".to_vec()))
            .await?;
        let auth = parse_auth(status, &body, "token")?;
        let ttl = Duration::from_secs(auth.lease_duration);
        let remaining = expires_at
            .map(|at| at.saturating_duration_since(Instant::now()) + EXPIRY_MARGIN)
            .unwrap_or_default();
        if auth.lease_duration > 0 && ttl <= remaining + Duration::from_secs(1) {
            return Err(VaultError::Auth {
                method: "token",
                reason: "renewal did not extend the token (max TTL reached)".into(),
                retriable: false,
            });
        }
        // renew-self returns the same token; keep Vault's answer anyway.
        Ok(TokenState::new(
            auth.client_token,
            (auth.lease_duration > 0).then_some(ttl),
            auth.renewable,
        ))
    }

    async fn login_approle(&self) -> Result<TokenState, VaultError> {
        let VaultAuth::AppRole {
            role_id,
            secret_id,
            mount,
        } = &self.inner.settings.auth
        else {
            unreachable!("login_approle is only called for AppRole auth");
        };
        let secret_id = secret_id.get().map_err(|reason| VaultError::Auth {
            method: "approle",
            reason,
            retriable: false,
        })?;
        let mut body = serde_json::to_vec(&serde_json::json!({
            "role_id": role_id,
            "secret_id": secret_id.expose_secret().trim(),
        }))
        .map_err(|e| VaultError::Setup(e.to_string()))?;
        let mut segments = vec!["auth"];
        segments.extend(mount.split('/').filter(|s| !s.is_empty()));
        segments.push("login");
        let url = self.url(&segments);
        let result = self.send(Method::POST, url, None, Some(body.clone())).await;
        body.zeroize();
        let (status, response) = result?;
        let auth = parse_auth(status, &response, "approle")?;
        self.inner
            .logins
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!("logged in to Vault with AppRole");
        Ok(TokenState::new(
            auth.client_token,
            (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration)),
            auth.renewable,
        ))
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("checked in new: the address can be a base");
            path.pop_if_empty().push("v1").extend(segments);
        }
        url
    }

    /// One request; the body is read into a buffer wiped on drop. Network errors and timeouts
    /// are retriable [`VaultError::Request`]s naming the endpoint.
    async fn send(
        &self,
        method: Method,
        url: Url,
        token: Option<&SecretString>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Body), VaultError> {
        let endpoint = url.path().to_owned();
        let request_error = |e: reqwest::Error| VaultError::Request {
            endpoint: endpoint.clone(),
            reason: without_url(&e),
            retriable: true,
        };
        let mut request = self.inner.http.request(method, url);
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token.expose_secret()).map_err(|_| {
                VaultError::Setup("the Vault token has characters not allowed in a header".into())
            })?;
            value.set_sensitive(true);
            request = request.header(TOKEN_HEADER, value);
        }
        if let Some(namespace) = &self.inner.settings.namespace {
            request = request.header(NAMESPACE_HEADER, namespace.as_str());
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(request_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(request_error)?;
        Ok((status, Body(Vec::from(bytes))))
    }
}

fn parse_auth(
    status: StatusCode,
    body: &Body,
    method: &'static str,
) -> Result<AuthBlock, VaultError> {
    if status != StatusCode::OK {
        return Err(VaultError::Auth {
            method,
            reason: format!("HTTP {status}: {}", body.error_message()),
            retriable: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
        });
    }
    serde_json::from_slice::<AuthResponse>(&body.0)
        .map(|r| r.auth)
        .map_err(|e| VaultError::Auth {
            method,
            reason: format!("unexpected response: {}", e.classify_name()),
            retriable: false,
        })
}

/// A reqwest error's text without its URL (the endpoint is reported separately).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text
            .replace(&format!(" for url ({url})"), "")
            .replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "unexpected JSON shape",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// The background renewal started by [`VaultClient::spawn_renewal`]; aborted on drop.
#[derive(Debug)]
pub struct RenewalTask(tokio::task::JoinHandle<()>);

impl Drop for RenewalTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
