//! The agent's HTTP client for the Luumen API: `GET {base_url}/config` and
//! `POST {base_url}/reports`, each with the `api-key` header.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
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
        /// The server's `Retry-After` on a 429 or 503, as a wait from when the answer came.
        retry_after: Option<Duration>,
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

    /// How long the server asked us to wait (`Retry-After` on a 429 or 503), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.kind {
            ApiErrorKind::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds (`120`) or an HTTP-date
/// (IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, or the obsolete RFC 850 and asctime forms),
/// as a wait from `now`. A date in the past is a zero wait; anything else is `None`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit is still "a very long time"; the caller caps it.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = parse_http_date(value)?;
    Some((date - now).to_std().unwrap_or(Duration::ZERO))
}

fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    // IMF-fixdate is RFC 5322's date-time with the zone "GMT".
    if value.ends_with(" GMT") {
        if let Ok(date) = DateTime::parse_from_rfc2822(value) {
            return Some(date.with_timezone(&Utc));
        }
    }
    // RFC 850 ("Sunday, 06-Nov-94 08:49:37 GMT") and asctime ("Sun Nov  6 08:49:37 1994").
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|naive| naive.and_utc())
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
        let retry_after = if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::SERVICE_UNAVAILABLE
        {
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()))
        } else {
            None
        };
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
            retry_after,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("1994-11-06T08:49:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    #[test]
    fn retry_after_seconds() {
        let cases = [
            ("0", Some(0)),
            ("1", Some(1)),
            ("120", Some(120)),
            (" 30 ", Some(30)),
            ("99999999999999999999999", Some(u64::MAX)),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_retry_after(value, now()),
                expected.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }

    #[test]
    fn retry_after_http_dates() {
        let cases = [
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(37)),
            ("Sun, 06 Nov 1994 09:49:00 GMT", Some(3600)),
            ("Sunday, 06-Nov-94 08:49:37 GMT", Some(37)),
            ("Sun Nov  6 08:49:37 1994", Some(37)),
            // In the past: retry now.
            ("Sat, 05 Nov 1994 08:49:37 GMT", Some(0)),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_retry_after(value, now()),
                expected.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }

    #[test]
    fn retry_after_garbage_is_none() {
        for value in [
            "",
            "   ",
            "-1",
            "1.5",
            "soon",
            "12s",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 +0200",
            "Sun, 06 Nov 1994",
            "\u{1F600}",
        ] {
            assert_eq!(parse_retry_after(value, now()), None, "{value:?}");
        }
    }

    #[test]
    fn retry_after_is_exposed_on_status_errors_only() {
        let error = |kind| ApiError {
            url: "u".into(),
            kind,
        };
        let status = error(ApiErrorKind::Status {
            status: 503,
            body: String::new(),
            retry_after: Some(Duration::from_secs(7)),
        });
        assert_eq!(status.retry_after(), Some(Duration::from_secs(7)));
        assert!(status.is_retriable());
        assert_eq!(
            error(ApiErrorKind::Transport("x".into())).retry_after(),
            None
        );
    }
}
