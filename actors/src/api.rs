//! The agent's HTTP client for the Luumen API: `GET {base_url}/config` and
//! `POST {base_url}/reports`, each with the `api-key` header.

use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

/// A failed API call, naming the URL.
#[derive(Debug, thiserror::Error)]
#[error("API {url}: {kind}")]
pub struct ApiError {
    /// The URL that was called.
    pub url: String,
    /// What went wrong.
    pub kind: ApiErrorKind,
}

/// Kinds of API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiErrorKind {
    /// 401 or 403: the key is wrong, revoked, or lacks the role.
    #[error("the API key was rejected (HTTP {0})")]
    KeyRejected(u16),
    /// Any other non-2xx answer.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("{0}")]
    Transport(String),
    /// The client could not be built (e.g. an invalid CA certificate).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

impl ApiError {
    /// Whether sending the same request again later may succeed.
    pub fn is_retriable(&self) -> bool {
        match &self.kind {
            ApiErrorKind::Transport(_) => true,
            ApiErrorKind::Status { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            ApiErrorKind::KeyRejected(_) | ApiErrorKind::Setup(_) => false,
        }
    }
}

/// Talks to one Luumen API.
#[derive(Clone)]
pub struct ApiClient {
    base_url: String,
    api_key: HeaderValue,
    client: reqwest::Client,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base_url", &self.base_url)
            .field("api_key", &"[REDACTED]")
            .finish()
    }
}

impl ApiClient {
    /// A client for `base_url` (e.g. `https://api.example.com/api/v1`). `extra_ca_pem` is a PEM
    /// certificate to trust besides the system roots.
    pub fn new(
        base_url: &str,
        api_key: &SecretString,
        extra_ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ApiClient, ApiError> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let setup = |message: String| ApiError {
            url: base_url.clone(),
            kind: ApiErrorKind::Setup(message),
        };
        let mut api_key = HeaderValue::from_str(api_key.expose_secret())
            .map_err(|_| setup("the API key contains characters not allowed in a header".into()))?;
        api_key.set_sensitive(true);
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("luumen-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = extra_ca_pem {
            let certificate = reqwest::Certificate::from_pem(pem)
                .map_err(|e| setup(format!("invalid CA certificate: {e}")))?;
            builder = builder.add_root_certificate(certificate);
        }
        let client = builder.build().map_err(|e| setup(e.to_string()))?;
        Ok(ApiClient {
            base_url,
            api_key,
            client,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET {base_url}/config`: the remote configuration's body.
    pub async fn fetch_config(&self) -> Result<Vec<u8>, ApiError> {
        let url = format!("{}/config", self.base_url);
        let request = self
            .client
            .get(&url)
            .header("api-key", self.api_key.clone());
        self.call(url, request).await
    }

    /// `POST {base_url}/reports` with a serialized batch.
    pub async fn post_batch(&self, body: Vec<u8>) -> Result<(), ApiError> {
        let url = format!("{}/reports", self.base_url);
        let request = self
            .client
            .post(&url)
            .header("api-key", self.api_key.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        self.call(url, request).await.map(|_| ())
    }

    async fn call(
        &self,
        url: String,
        request: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, ApiError> {
        let fail = |kind| ApiError {
            url: url.clone(),
            kind,
        };
        let response = request
            .send()
            .await
            .map_err(|e| fail(ApiErrorKind::Transport(error_chain(&e))))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| fail(ApiErrorKind::Transport(error_chain(&e))))?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(fail(ApiErrorKind::KeyRejected(status.as_u16())));
        }
        let text = String::from_utf8_lossy(&body);
        let snippet: String = text.chars().take(300).collect();
        Err(fail(ApiErrorKind::Status {
            status: status.as_u16(),
            body: snippet,
        }))
    }
}

/// reqwest's error with its causes ("error sending request: … Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
