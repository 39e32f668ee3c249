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
//! The listener is reachable by every local process for the length of a call, so it is no open
//! relay: the proxy URL carries a random per-call token (`http://luumen:<token>@127.0.0.1:port`,
//! which reqwest sends as `Proxy-Authorization: Basic …` on every request). The connector reads
//! each request head, answers 407 and closes unless that header matches, strips it before
//! forwarding, and only connects to the host once the first request of a connection passed.
//! At most [`MAX_CONNECTIONS`] client connections are served at once; more are closed at once.
//!
//! A failure (unreachable, certificate refused, handshake error) is recorded for the caller and
//! the client's connection is dropped; the caller reports the recorded failure instead of the
//! client's "connection closed".
//!
//! [`Connector::stop`] ends the listener and every connection before the call returns (an
//! `abort` alone would only be acted on the next time the thread's runtime runs).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::ErrorKind;

/// Most client connections served at once (the client uses one at a time per call).
pub(super) const MAX_CONNECTIONS: usize = 4;

/// Longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// User name in the proxy URL (the token is the password).
const PROXY_USER: &str = "luumen";

/// The answer to a request without the right token.
const REFUSED: &[u8] = b"HTTP/1.1 407 Proxy Authentication Required\r\n\
Proxy-Authenticate: Basic realm=\"luumen\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// What the connector learned; shared with the caller.
#[derive(Debug, Default)]
pub(super) struct ConnectorState {
    /// The first failure to reach the host.
    pub(super) failure: Option<ErrorKind>,
    /// TCP connections made to the host.
    pub(super) tcp_connections: u32,
    /// Connections made to the host (TCP established, and TLS done for HTTPS).
    pub(super) connections: u32,
    /// Client connections refused (wrong or missing token, or over the cap).
    pub(super) refused: u32,
}

/// A running connector. [`Connector::stop`] ends it; dropping it only schedules that.
pub(super) struct Connector {
    /// Where the client connects (its proxy).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) local: SocketAddr,
    pub(super) state: Arc<Mutex<ConnectorState>>,
    /// `http://luumen:<token>@127.0.0.1:port`, for the client only.
    proxy_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    accept: Option<JoinHandle<()>>,
}

impl Drop for Connector {
    fn drop(&mut self) {
        if let Some(accept) = &self.accept {
            accept.abort();
        }
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
        let token = token()?;
        let expected: Arc<[u8]> = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{PROXY_USER}:{token}"))
        )
        .into_bytes()
        .into();
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let local = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ConnectorState::default()));
        let accept_state = state.clone();
        let (shutdown, mut stopped) = oneshot::channel::<()>();
        let accept = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every pipe.
            let mut pipes = tokio::task::JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { break };
                while pipes.try_join_next().is_some() {}
                if pipes.len() >= MAX_CONNECTIONS {
                    lock(&accept_state).refused += 1;
                    tracing::debug!(
                        message = "WinRM connector: too many connections, one refused."
                    );
                    continue;
                }
                let _ = client.set_nodelay(true);
                let upstream = upstream.clone();
                let state = accept_state.clone();
                let expected = expected.clone();
                pipes.spawn(async move {
                    serve(client, &upstream, &state, &expected).await;
                });
            }
            drop(listener);
            pipes.shutdown().await;
        });
        Ok(Connector {
            local,
            state,
            proxy_url: format!("http://{PROXY_USER}:{token}@{local}"),
            shutdown: Some(shutdown),
            accept: Some(accept),
        })
    }

    /// The proxy URL to give the client (contains the token).
    pub(super) fn proxy_url(&self) -> &str {
        &self.proxy_url
    }

    /// Stops listening and ends every connection; returns when they are closed.
    pub(super) async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
    }

    /// The recorded failure, if any.
    pub(super) fn take_failure(&self) -> Option<ErrorKind> {
        lock(&self.state).failure.take()
    }

    /// Whether a connection to the host was ever made (TLS done for HTTPS).
    pub(super) fn connected(&self) -> bool {
        lock(&self.state).connections > 0
    }

    /// Whether a TCP connection to the host was ever made.
    pub(super) fn tcp_connected(&self) -> bool {
        lock(&self.state).tcp_connections > 0
    }
}

/// 32 random bytes, hex.
fn token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("no random numbers for the connector token"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
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

/// One request head, as read from the client.
struct Head {
    /// The head to forward: without `Proxy-Authorization`, ending with the blank line.
    forward: Vec<u8>,
    /// Whether `Proxy-Authorization` carried the token.
    authorized: bool,
    /// How the body is framed.
    body: Body,
}

enum Body {
    /// `Content-Length` bytes (0 when absent).
    Length(u64),
    /// `Transfer-Encoding`: the rest of the connection is copied as is.
    Unframed,
}

/// Reads one request head into `buffer` (which may already hold bytes) and takes it out;
/// `Ok(None)` at a clean end of stream before any byte of a head.
async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
    expected: &[u8],
) -> std::io::Result<Option<Head>> {
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buffer.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too long"));
        }
        let mut chunk = [0u8; 8192];
        let read = reader.read(&mut chunk).await?;
        if read == 0 {
            if buffer.is_empty() {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head: Vec<u8> = buffer.drain(..end + 4).collect();
    parse_head(&head[..end], expected).map(Some)
}

/// Parses a head (without the final blank line).
fn parse_head(head: &[u8], expected: &[u8]) -> std::io::Result<Head> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().ok_or_else(|| invalid("empty request"))?;
    let mut forward = Vec::with_capacity(head.len() + 4);
    forward.extend_from_slice(request_line);
    forward.extend_from_slice(b"\r\n");
    let mut authorized = false;
    let mut length: Option<u64> = None;
    let mut unframed = false;
    for line in lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            // Obsolete line folding (RFC 9112 §5.2): refused rather than half-stripped.
            return Err(invalid("folded header line"));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(invalid("header line without a colon"));
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"proxy-authorization") {
            authorized = constant_time_eq(value, expected);
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| invalid("bad Content-Length"))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(invalid("conflicting Content-Length"));
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            unframed = true;
        }
        forward.extend_from_slice(line);
        forward.extend_from_slice(b"\r\n");
    }
    forward.extend_from_slice(b"\r\n");
    Ok(Head {
        forward,
        authorized,
        body: if unframed {
            Body::Unframed
        } else {
            Body::Length(length.unwrap_or(0))
        },
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves one client connection: checks its first request, connects to the host, then
/// forwards requests (each checked and stripped) and copies the answers back.
async fn serve(
    mut client: TcpStream,
    upstream: &Upstream,
    state: &Mutex<ConnectorState>,
    expected: &[u8],
) {
    let mut buffer = Vec::new();
    let first = tokio::time::timeout(
        upstream.connect_limit,
        read_head(&mut client, &mut buffer, expected),
    )
    .await;
    let first = match first {
        Ok(Ok(Some(head))) if head.authorized => head,
        Ok(Ok(Some(_))) => {
            lock(state).refused += 1;
            let _ = client.write_all(REFUSED).await;
            let _ = client.shutdown().await;
            return;
        }
        // Nothing, garbage or too slow: not a request from our client.
        _ => {
            lock(state).refused += 1;
            return;
        }
    };
    let server = match connect(upstream).await {
        Ok(server) => server,
        Err(kind) => {
            record(state, kind);
            return;
        }
    };
    lock(state).tcp_connections += 1;
    match &upstream.tls {
        None => {
            lock(state).connections += 1;
            relay(client, server, first, buffer, expected).await;
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
                Ok(tls) => {
                    lock(state).connections += 1;
                    relay(client, tls, first, buffer, expected).await;
                }
                Err(e) => record(state, tls_failure(&e)),
            }
        }
    }
}

/// Forwards requests to the server and answers to the client until either side ends.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    client: TcpStream,
    server: S,
    first: Head,
    buffer: Vec<u8>,
    expected: &[u8],
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let requests = async {
        let forwarded =
            forward_requests(&mut client_read, &mut server_write, first, buffer, expected).await;
        let _ = server_write.shutdown().await;
        forwarded
    };
    let answers = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::pin!(requests, answers);
    tokio::select! {
        forwarded = &mut requests => {
            // The client finished sending: let the last answer through.
            if forwarded.is_ok() {
                answers.await;
            }
        }
        () = &mut answers => {}
    }
}

/// Client → server: each request head checked and stripped of the token, its body copied.
async fn forward_requests<R, W>(
    client: &mut R,
    server: &mut W,
    first: Head,
    mut buffer: Vec<u8>,
    expected: &[u8],
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut head = first;
    loop {
        if !head.authorized {
            return Err(std::io::Error::other("request without the connector token"));
        }
        server.write_all(&head.forward).await?;
        match head.body {
            Body::Unframed => {
                server.write_all(&buffer).await?;
                tokio::io::copy(client, server).await?;
                return Ok(());
            }
            Body::Length(length) => {
                let buffered = usize::try_from(length)
                    .unwrap_or(usize::MAX)
                    .min(buffer.len());
                server.write_all(&buffer[..buffered]).await?;
                buffer.drain(..buffered);
                let rest = length - buffered as u64;
                if rest > 0 {
                    let copied = tokio::io::copy(&mut (&mut *client).take(rest), server).await?;
                    if copied < rest {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
            }
        }
        server.flush().await?;
        head = match read_head(client, &mut buffer, expected).await? {
            Some(head) => head,
            None => return Ok(()),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{ErrorKind as IoKind, Read, Write};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// A host on loopback that counts the connections it gets (non-blocking accept).
    fn host() -> (std::net::TcpListener, Upstream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let upstream = Upstream {
            address: "127.0.0.1".to_owned(),
            port,
            connect_limit: Duration::from_secs(2),
            tls: None,
        };
        (listener, upstream)
    }

    /// The token from a proxy URL, as reqwest puts it in `Proxy-Authorization`.
    fn authorization(proxy_url: &str) -> String {
        let userinfo = proxy_url
            .strip_prefix("http://")
            .and_then(|rest| rest.split_once('@'))
            .map(|(userinfo, _)| userinfo)
            .expect("userinfo in the proxy URL");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(userinfo)
        )
    }

    fn request(port: u16, authorization: Option<&str>, body: &str) -> String {
        let mut head =
            format!("POST http://127.0.0.1:{port}/wsman HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
        if let Some(value) = authorization {
            head.push_str(&format!("Proxy-Authorization: {value}\r\n"));
        }
        format!("{head}Content-Length: {}\r\n\r\n{body}", body.len())
    }

    /// Sends `request` from a plain blocking client and returns everything the connector
    /// answers until it closes.
    fn foreign(connector: std::net::SocketAddr, request: &str) -> String {
        let mut stream = std::net::TcpStream::connect(connector).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("send");
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .expect("closed by the connector");
        String::from_utf8_lossy(&answer).into_owned()
    }

    fn no_connection(host: &std::net::TcpListener) {
        match host.accept() {
            Err(e) if e.kind() == IoKind::WouldBlock => {}
            other => panic!("the host got a connection: {other:?}"),
        }
    }

    #[test]
    fn a_connection_without_the_token_gets_407_and_never_reaches_the_host() {
        let runtime = runtime();
        let (host, upstream) = host();
        let port = upstream.port;
        let mut connector = runtime.block_on(Connector::start(upstream)).expect("start");
        let local = connector.local;
        let url = connector.proxy_url().to_owned();
        assert!(url.starts_with("http://luumen:") && url.ends_with(&format!("@{local}")));
        let good = authorization(&url);
        let wrong = format!("{}x", &good[..good.len() - 1]);
        // The connector runs on the runtime while the blocking clients talk to it.
        let answers = runtime.block_on(async {
            tokio::task::spawn_blocking(move || {
                vec![
                    foreign(local, &request(port, None, "<s:Envelope/>")),
                    foreign(local, &request(port, Some(&wrong), "<s:Envelope/>")),
                    foreign(local, &request(port, Some("Basic bHV1bWVuOg=="), "")),
                ]
            })
            .await
            .expect("clients")
        });
        for answer in &answers {
            assert!(
                answer.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\n"),
                "{answer}"
            );
        }
        no_connection(&host);
        let state = lock(&connector.state);
        assert_eq!((state.refused, state.tcp_connections), (3, 0));
        drop(state);
        runtime.block_on(connector.stop());
        assert!(connector.take_failure().is_none());
    }

    #[test]
    fn with_the_token_requests_reach_the_host_without_it() {
        let runtime = runtime();
        let (host, upstream) = host();
        let port = upstream.port;
        let mut connector = runtime.block_on(Connector::start(upstream)).expect("start");
        let local = connector.local;
        let good = authorization(connector.proxy_url());
        let (received, answer) = runtime.block_on(async {
            tokio::task::spawn_blocking(move || {
                let mut client = std::net::TcpStream::connect(local).expect("connect");
                client
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                // Two requests on one connection (the second as two writes), as a pooled
                // client sends them.
                let second = request(port, Some(&good), "second body");
                client
                    .write_all(
                        format!(
                            "{}{}",
                            request(port, Some(&good), "first body"),
                            &second[..20]
                        )
                        .as_bytes(),
                    )
                    .expect("send");
                host.set_nonblocking(false).expect("blocking");
                let (mut server, _) = host.accept().expect("the host gets the connection");
                client
                    .write_all(&second.as_bytes()[20..])
                    .expect("send rest");
                server
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut received = Vec::new();
                let mut chunk = [0u8; 4096];
                while !String::from_utf8_lossy(&received).ends_with("second body") {
                    let n = server.read(&mut chunk).expect("read");
                    assert!(n > 0, "early EOF: {}", String::from_utf8_lossy(&received));
                    received.extend_from_slice(&chunk[..n]);
                }
                server
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .expect("answer");
                let mut answer = [0u8; 40];
                client.read_exact(&mut answer).expect("answer arrives");
                host.set_nonblocking(true).expect("nonblocking");
                no_connection(&host);
                (String::from_utf8_lossy(&received).into_owned(), answer)
            })
            .await
            .expect("client")
        });
        let expected = format!(
            "{}{}",
            request(port, None, "first body"),
            request(port, None, "second body")
        );
        assert_eq!(received, expected);
        assert_eq!(
            &answer[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        );
        runtime.block_on(connector.stop());
        assert_eq!(lock(&connector.state).tcp_connections, 1);
    }

    #[test]
    fn connections_beyond_the_cap_are_closed() {
        let runtime = runtime();
        let (host, upstream) = host();
        let mut connector = runtime.block_on(Connector::start(upstream)).expect("start");
        let local = connector.local;
        let extra = runtime.block_on(async {
            tokio::task::spawn_blocking(move || {
                let held: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS)
                    .map(|_| std::net::TcpStream::connect(local).expect("connect"))
                    .collect();
                // Let the connector accept those before the next one.
                std::thread::sleep(Duration::from_millis(200));
                let mut extra = std::net::TcpStream::connect(local).expect("connect");
                extra
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .expect("timeout");
                let mut byte = [0u8; 1];
                let read = extra.read(&mut byte);
                drop(held);
                read
            })
            .await
            .expect("clients")
        });
        assert!(
            matches!(extra, Ok(0))
                || matches!(&extra, Err(e) if e.kind() == IoKind::ConnectionReset),
            "the fifth connection was kept: {extra:?}"
        );
        no_connection(&host);
        runtime.block_on(connector.stop());
        assert!(lock(&connector.state).refused >= 1);
    }
}
