//! The connector: winrm-rs's only way out to the host.
//!
//! winrm-rs 1.1.2 builds its own HTTP client: TLS against the webpki roots only, connect errors
//! folded into one `reqwest::Error`, and `HTTP_PROXY` from the environment honoured. So every
//! call gives it a proxy URL pointing at this connector, a listener on 127.0.0.1 with a random
//! port that lives for one call. For each connection the client opens, the connector connects to
//! the real host itself (each resolved address in turn, within the connect limit), and for HTTPS
//! completes the TLS handshake with our trust settings before a single byte of the request (or a
//! credential) is forwarded. Then it copies bytes both ways.
//!
//! The client speaks plain HTTP to a proxy, so requests go out in absolute form
//! (`POST http://host:5986/wsman HTTP/1.1`, `Host: host:5986`), which HTTP/1.1 servers must
//! accept (RFC 9112 §3.2.2); the client still sees the real host name, so NTLM and Kerberos
//! target the right service name.
//!
//! A failure (unreachable, certificate refused, handshake error) is recorded for the caller and
//! the client's connection is dropped; the caller reports the recorded failure instead of the
//! client's "connection closed".

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::ErrorKind;

/// What the connector learned; shared with the caller.
#[derive(Debug, Default)]
pub(super) struct ConnectorState {
    /// The first failure to reach the host.
    pub(super) failure: Option<ErrorKind>,
    /// Connections made to the host (TCP established, and TLS done for HTTPS).
    pub(super) connections: u32,
}

/// A running connector. Stops accepting when dropped.
pub(super) struct Connector {
    /// Where the client connects (its proxy).
    pub(super) local: SocketAddr,
    pub(super) state: Arc<Mutex<ConnectorState>>,
    accept: JoinHandle<()>,
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Where the connector connects to.
#[derive(Clone)]
pub(super) struct Upstream {
    pub(super) address: String,
    pub(super) port: u16,
    pub(super) connect_limit: Duration,
    /// TLS configuration for HTTPS; `None` for HTTP.
    pub(super) tls: Option<Arc<ClientConfig>>,
}

impl Connector {
    /// Starts listening on 127.0.0.1; must run inside a tokio runtime.
    pub(super) async fn start(upstream: Upstream) -> std::io::Result<Connector> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let local = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ConnectorState::default()));
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every pipe.
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let upstream = upstream.clone();
                let state = accept_state.clone();
                pipes.spawn(async move {
                    pipe(client, &upstream, &state).await;
                });
                while pipes.try_join_next().is_some() {}
            }
        });
        Ok(Connector {
            local,
            state,
            accept,
        })
    }

    /// The recorded failure, if any.
    pub(super) fn take_failure(&self) -> Option<ErrorKind> {
        lock(&self.state).failure.take()
    }

    /// Whether a connection to the host was ever made.
    pub(super) fn connected(&self) -> bool {
        lock(&self.state).connections > 0
    }
}

fn lock(state: &Mutex<ConnectorState>) -> std::sync::MutexGuard<'_, ConnectorState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn record(state: &Mutex<ConnectorState>, kind: ErrorKind) {
    let mut state = lock(state);
    if state.failure.is_none() {
        state.failure = Some(kind);
    }
}

async fn pipe(mut client: TcpStream, upstream: &Upstream, state: &Mutex<ConnectorState>) {
    let server = match connect(upstream).await {
        Ok(server) => server,
        Err(kind) => {
            record(state, kind);
            return;
        }
    };
    match &upstream.tls {
        None => {
            lock(state).connections += 1;
            let mut server = server;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Some(config) => {
            let name = match ServerName::try_from(upstream.address.clone()) {
                Ok(name) => name,
                Err(e) => {
                    record(
                        state,
                        ErrorKind::Settings {
                            reason: format!(
                                "{:?} is not a valid TLS server name: {e}",
                                upstream.address
                            ),
                        },
                    );
                    return;
                }
            };
            match TlsConnector::from(config.clone())
                .connect(name, server)
                .await
            {
                Ok(mut tls) => {
                    lock(state).connections += 1;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut tls).await;
                }
                Err(e) => record(state, tls_failure(&e)),
            }
        }
    }
}

/// Connects to each resolved address in turn, each within the connect limit.
async fn connect(upstream: &Upstream) -> Result<TcpStream, ErrorKind> {
    let label = format!("{}:{}", upstream.address, upstream.port);
    let unreachable = |reason: String| ErrorKind::Unreachable {
        address: label.clone(),
        reason,
    };
    let addresses: Vec<SocketAddr> =
        tokio::net::lookup_host((upstream.address.as_str(), upstream.port))
            .await
            .map_err(|e| unreachable(format!("cannot resolve: {e}")))?
            .collect();
    let mut last_error = "name resolved to no address".to_owned();
    for address in addresses {
        match tokio::time::timeout(upstream.connect_limit, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => {
                last_error = format!(
                    "no answer within {:.1} s",
                    upstream.connect_limit.as_secs_f64()
                )
            }
        }
    }
    Err(unreachable(last_error))
}

/// A certificate refusal, or another handshake failure.
fn tls_failure(error: &std::io::Error) -> ErrorKind {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            ErrorKind::Certificate {
                reason: other.0.to_string(),
            }
        }
        Some(rustls::Error::InvalidCertificate(reason)) => ErrorKind::Certificate {
            reason: format!("{reason:?}"),
        },
        Some(other) => ErrorKind::WinRm {
            stage: "tls handshake",
            message: other.to_string(),
        },
        None => ErrorKind::WinRm {
            stage: "tls handshake",
            message: error.to_string(),
        },
    }
}
