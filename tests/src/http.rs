//! A recording HTTP receiver standing in for the inventory backend.
//!
//! [`Receiver::start`] serves on `127.0.0.1:<random port>` from a background
//! thread, records every request and answers with a configurable status and a
//! small JSON body. `GET /config` can be answered with a fixed JSON document
//! ([`Receiver::serve_config`]), as the agent pulls its config from
//! `GET {base_url}/config` with an `api-key` header.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Method, upper case (`GET`, `POST`, ...).
    pub method: String,
    /// Request target as sent: path plus query string, e.g. `/inventory?x=1`.
    pub url: String,
    /// Headers in order of arrival, names as sent.
    pub headers: Vec<(String, String)>,
    /// Raw body bytes.
    pub body: Vec<u8>,
    /// Status the receiver answered with.
    pub status: u16,
}

impl RecordedRequest {
    /// The path part of [`RecordedRequest::url`] (without query string).
    pub fn path(&self) -> &str {
        self.url.split('?').next().unwrap_or("")
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8 text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
    }
}

/// State shared with the server thread.
#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    arrived: Condvar,
    config: Mutex<Option<String>>,
}

impl Shared {
    fn requests(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        // A panic while holding the lock cannot corrupt a Vec push; keep going.
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config(&self) -> MutexGuard<'_, Option<String>> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running HTTP receiver; dropping it stops the server thread.
pub struct Receiver {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Starts a receiver on `127.0.0.1:0` answering every request (except
    /// `GET /config` once [`Receiver::serve_config`] was called) with
    /// `status` and a small JSON body.
    ///
    /// # Panics
    /// If the server cannot bind or the thread cannot be spawned.
    pub fn start(status: u16) -> Receiver {
        let server = tiny_http::Server::http("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("Receiver: cannot bind 127.0.0.1:0: {e}"));
        let addr = server
            .server_addr()
            .to_ip()
            .expect("Receiver: tiny_http listens on an IP address");
        let server = Arc::new(server);
        let status = Arc::new(AtomicU16::new(status));
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, status, shared, stop) =
                (server.clone(), status.clone(), shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("luumen-receiver-{}", addr.port()))
                .spawn(move || serve(&server, &status, &shared, &stop))
                .expect("Receiver: cannot spawn server thread")
        };
        Receiver {
            addr,
            status,
            shared,
            stop,
            server,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address the receiver listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the status answered from now on (e.g. `503`).
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The status currently answered.
    pub fn status(&self) -> u16 {
        self.status.load(Ordering::SeqCst)
    }

    /// Answers `GET /config` with `200` and this JSON document from now on
    /// (the request is still recorded).
    pub fn serve_config(&self, json: impl Into<String>) {
        *self.shared.config() = Some(json.into());
    }

    /// All requests recorded so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests().clone()
    }

    /// Recorded requests with this method and path (query string ignored).
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path() == path)
            .collect()
    }

    /// Waits until at least `n` requests were recorded or `timeout` passed,
    /// and returns all recorded requests (possibly fewer than `n`: assert on
    /// the length).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        self.wait_for_matching(n, timeout, |_| true)
    }

    /// Waits until at least `n` recorded requests satisfy `pred` or `timeout`
    /// passed, and returns the matching ones (possibly fewer than `n`).
    pub fn wait_for_matching(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&RecordedRequest) -> bool,
    ) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.shared.requests();
        loop {
            let matching: Vec<RecordedRequest> =
                guard.iter().filter(|r| pred(r)).cloned().collect();
            let now = Instant::now();
            if matching.len() >= n || now >= deadline {
                return matching;
            }
            guard = self
                .shared
                .arrived
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Stops the server thread (also done on drop). Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .field("status", &self.status())
            .field("requests", &self.shared.requests().len())
            .finish()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server loop.
fn serve(server: &tiny_http::Server, status: &AtomicU16, shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut request = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(_) => break,
        };
        let method = request.method().as_str().to_ascii_uppercase();
        let url = request.url().to_string();
        let headers = request
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_string(),
                    h.value.as_str().to_string(),
                )
            })
            .collect();
        let mut body = Vec::new();
        let read_error = request.as_reader().read_to_end(&mut body).err();

        let config = if method == "GET" && url.split('?').next() == Some("/config") {
            shared.config().clone()
        } else {
            None
        };
        let (code, text) = match (config, read_error) {
            (_, Some(e)) => (
                400,
                serde_json::json!({ "error": format!("reading body: {e}") }).to_string(),
            ),
            (Some(config), None) => (200, config),
            (None, None) => {
                let code = status.load(Ordering::SeqCst);
                let body = if (200..300).contains(&code) {
                    serde_json::json!({ "status": "ok" })
                } else {
                    serde_json::json!({ "status": "error", "code": code })
                };
                (code, body.to_string())
            }
        };
        {
            let mut requests = shared.requests();
            requests.push(RecordedRequest {
                method,
                url,
                headers,
                body,
                status: code,
            });
            shared.arrived.notify_all();
        }
        let content_type = tiny_http::Header::from_bytes("Content-Type", "application/json")
            .expect("static header is valid");
        let response = tiny_http::Response::from_string(text)
            .with_status_code(code)
            .with_header(content_type);
        let _ = request.respond(response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn raw_request(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect to receiver");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set timeout");
        stream.write_all(request.as_bytes()).expect("write request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        response
    }

    #[test]
    fn records_and_answers() {
        let mut receiver = Receiver::start(202);
        let body = r#"{"hello":"world"}"#;
        let response = raw_request(
            receiver.addr(),
            &format!(
                "POST /inventory?x=1 HTTP/1.1\r\nHost: test\r\napi-key: k1\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert!(response.starts_with("HTTP/1.1 202"), "{response}");
        assert!(response.contains(r#"{"status":"ok"}"#), "{response}");

        let got = receiver.wait_for(1, Duration::from_secs(5));
        assert_eq!(got.len(), 1);
        let r = &got[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.url, "/inventory?x=1");
        assert_eq!(r.path(), "/inventory");
        assert_eq!(r.header("API-KEY"), Some("k1"));
        assert_eq!(r.json().expect("json body")["hello"], "world");
        assert_eq!(r.status, 202);

        receiver.set_status(503);
        receiver.serve_config(r#"{"interval":5}"#);
        let response = raw_request(
            receiver.addr(),
            "POST /inventory HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        let response = raw_request(
            receiver.addr(),
            "GET /config HTTP/1.1\r\nHost: t\r\napi-key: k2\r\nConnection: close\r\n\r\n",
        );
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(r#"{"interval":5}"#), "{response}");
        assert_eq!(receiver.requests().len(), 3);
        assert_eq!(receiver.requests_to("get", "/config").len(), 1);

        let none = receiver.wait_for_matching(1, Duration::from_millis(50), |r| r.method == "PUT");
        assert!(none.is_empty());

        let addr = receiver.addr();
        receiver.stop();
        drop(receiver);
        // tiny_http closes its listener from its accept thread, shortly after.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_ok() {
            assert!(
                Instant::now() < deadline,
                "receiver still listening after drop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
