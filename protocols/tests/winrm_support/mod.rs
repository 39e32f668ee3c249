//! A loopback WinRM replay server for the transport's tests.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine;
use luumen_protocols::winrm::{Scheme, TlsTrust, WinrmAuth, WinrmTarget};

/// The recordings of real Windows exchanges, copied into the repository (from
/// `../shared/fixtures/winrm-recordings`, pypsrp's MIT-licensed test data) so a fresh clone has
/// them.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/winrm/recordings");

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One recorded exchange.
#[derive(Debug, Clone)]
pub struct Message {
    /// The request's `wsa:Action`.
    pub action: String,
    /// The response body.
    pub response: String,
    /// The response's HTTP status.
    pub status: u16,
}

/// The text of the first element with this local name.
pub fn element_text(xml: &str, local_name: &str) -> Option<String> {
    let mut rest = xml;
    loop {
        let at = rest.find(local_name)?;
        let before = &rest[..at];
        let after = &rest[at + local_name.len()..];
        let opening = before.ends_with('<')
            || (before.ends_with(':')
                && before
                    .rfind('<')
                    .is_some_and(|lt| !before[lt..].contains([' ', '>', '/'])));
        if opening && (after.starts_with('>') || after.starts_with(' ')) {
            let body = &after[after.find('>')? + 1..];
            return Some(body[..body.find('<')?].to_owned());
        }
        rest = after;
    }
}

/// Loads a recording: `- request: <xml>`, `  response: <xml>`, optionally
/// `  transport_error:` / `    code: 500`.
pub fn recording(file: &str) -> Vec<Message> {
    let path = format!("{FIXTURES}/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut messages = Vec::new();
    let mut action = None;
    for line in text.lines() {
        if let Some(request) = line.strip_prefix("- request: ") {
            action = Some(element_text(request, "Action").expect("request has an Action"));
        } else if let Some(response) = line.strip_prefix("  response: ") {
            messages.push(Message {
                action: action.take().expect("response follows a request"),
                response: response.to_owned(),
                status: 200,
            });
        } else if let Some(code) = line.strip_prefix("    code: ") {
            let last = messages.last_mut().expect("code follows a response");
            last.status = code.trim().parse().expect("numeric code");
        }
    }
    assert!(!messages.is_empty(), "{path} holds no messages");
    messages
}

/// A Receive response with these stream chunks; `Some(code)` ends the command.
pub fn synthetic_receive(streams: &[(&str, &[u8])], exit: Option<i32>) -> Message {
    let id = "D644AE56-61E5-4C1A-A135-E599B76B3035";
    let mut body = String::new();
    for (name, data) in streams {
        body.push_str(&format!(
            r#"<rsp:Stream Name="{name}" CommandId="{id}">{}</rsp:Stream>"#,
            B64.encode(data)
        ));
    }
    let state = match exit {
        Some(code) => format!(
            r#"<rsp:Stream Name="stdout" CommandId="{id}" End="true"></rsp:Stream><rsp:Stream Name="stderr" CommandId="{id}" End="true"></rsp:Stream><rsp:CommandState CommandId="{id}" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"><rsp:ExitCode>{code}</rsp:ExitCode></rsp:CommandState>"#
        ),
        None => format!(
            r#"<rsp:CommandState CommandId="{id}" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"></rsp:CommandState>"#
        ),
    };
    Message {
        action: "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive".to_owned(),
        response: format!(
            r#"<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header><a:Action>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse</a:Action></s:Header><s:Body><rsp:ReceiveResponse>{body}{state}</rsp:ReceiveResponse></s:Body></s:Envelope>"#
        ),
        status: 200,
    }
}

/// A SOAP fault body shaped like Windows' (see the TimedOut faults in the recordings).
pub fn fault(subcode: &str, code: &str, text: &str) -> String {
    format!(
        r#"<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Header><a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action></s:Header><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{text} </s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="{code}" Machine="127.0.0.1"><f:Message>{text} </f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>"#
    )
}

#[derive(Default)]
struct State {
    messages: VecDeque<Message>,
    actions: Vec<String>,
    errors: Vec<String>,
    stdin: Vec<u8>,
    commands: Vec<String>,
}

/// Answers requests with the recorded responses, in order.
pub struct ReplayServer {
    pub port: u16,
    server: Arc<tiny_http::Server>,
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

impl ReplayServer {
    /// Starts on 127.0.0.1 with a free port, accepting Basic `user:password`.
    pub fn start(messages: Vec<Message>, user: &str, password: &str) -> ReplayServer {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind replay server"));
        let port = server.server_addr().to_ip().expect("ip listener").port();
        let state = Arc::new(Mutex::new(State {
            messages: messages.into(),
            ..State::default()
        }));
        let expected_auth = format!("Basic {}", B64.encode(format!("{user}:{password}")));
        let thread = {
            let server = server.clone();
            let state = state.clone();
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    handle(request, &state, &expected_auth);
                }
            })
        };
        ReplayServer {
            port,
            server,
            state,
            thread: Some(thread),
        }
    }

    /// What arrived on stdin through Send requests.
    pub fn stdin(&self) -> Vec<u8> {
        self.state.lock().expect("state").stdin.clone()
    }

    /// The command lines of Command requests.
    pub fn commands(&self) -> Vec<String> {
        self.state.lock().expect("state").commands.clone()
    }

    /// Stops the server and returns the actions received, without checking the recording.
    pub fn stop(mut self) -> Vec<String> {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("replay thread");
        }
        let state = self.state.lock().expect("state");
        state.actions.clone()
    }

    /// Stops the server, checks that every recorded message was used and every action
    /// matched, and returns the actions received.
    pub fn finish(mut self) -> Vec<String> {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("replay thread");
        }
        let state = self.state.lock().expect("state");
        assert!(state.errors.is_empty(), "replay errors: {:?}", state.errors);
        assert!(
            state.messages.is_empty(),
            "{} recorded messages were not requested: {:?}",
            state.messages.len(),
            state.messages.iter().map(|m| &m.action).collect::<Vec<_>>()
        );
        state.actions.clone()
    }
}

fn handle(mut request: tiny_http::Request, state: &Mutex<State>, expected_auth: &str) {
    let authorized = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Authorization") && h.value.as_str() == expected_auth);
    let mut body = String::new();
    let _ = request.as_reader().read_to_string(&mut body);
    let soap = |status: u16, text: String| {
        tiny_http::Response::from_string(text)
            .with_status_code(status)
            .with_header(
                tiny_http::Header::from_bytes("Content-Type", "application/soap+xml;charset=UTF-8")
                    .expect("header"),
            )
    };
    if !authorized {
        let response = tiny_http::Response::empty(401).with_header(
            tiny_http::Header::from_bytes("WWW-Authenticate", "Basic realm=\"WSMAN\"")
                .expect("header"),
        );
        let _ = request.respond(response);
        return;
    }
    let mut state = state.lock().expect("state");
    let Some(action) = element_text(&body, "Action") else {
        state.errors.push(format!("request without Action: {body}"));
        let _ = request.respond(soap(400, String::new()));
        return;
    };
    state.actions.push(action.clone());
    if action.ends_with("/Send") {
        if let Some(data) = element_text(&body, "Stream") {
            match B64.decode(data.trim()) {
                Ok(bytes) => state.stdin.extend_from_slice(&bytes),
                Err(e) => state.errors.push(format!("Send with bad base64: {e}")),
            }
        }
        let response = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header><a:Action>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse</a:Action></s:Header><s:Body><rsp:SendResponse/></s:Body></s:Envelope>"#;
        let _ = request.respond(soap(200, response.to_owned()));
        return;
    }
    if action.ends_with("/Command") {
        let command = element_text(&body, "Command").unwrap_or_default();
        let mut line = vec![command];
        let mut rest = body.as_str();
        while let Some(at) = rest.find("<rsp:Arguments>") {
            let after = &rest[at + "<rsp:Arguments>".len()..];
            let end = after.find('<').unwrap_or(after.len());
            line.push(after[..end].to_owned());
            rest = &after[end..];
        }
        state.commands.push(line.join(" "));
    }
    match state.messages.pop_front() {
        Some(message) if message.action == action => {
            let _ = request.respond(soap(message.status, message.response));
        }
        Some(message) => {
            state
                .errors
                .push(format!("expected {}, got {action}", message.action));
            let _ = request.respond(soap(500, fault("w:InternalError", "1", "replay mismatch")));
        }
        None => {
            state
                .errors
                .push(format!("unexpected {action} after the recording ended"));
            let _ = request.respond(soap(500, fault("w:InternalError", "1", "replay ended")));
        }
    }
}

/// A WinRM target on 127.0.0.1 with Basic over HTTP (allowed: loopback tests).
pub fn basic_target(port: u16, user: &str, password: &str) -> WinrmTarget {
    WinrmTarget {
        address: "127.0.0.1".to_owned(),
        port,
        scheme: Scheme::Http,
        auth: WinrmAuth::Basic,
        username: user.to_owned(),
        password: password.to_owned().into(),
        tls: TlsTrust::default(),
        allow_http_basic: true,
    }
}

/// A listener that accepts connections and never answers; returns its port.
pub fn tarpit() -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tarpit");
    let port = listener.local_addr().expect("addr").port();
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    (port, thread)
}

/// A TLS front for a replay server: HTTPS on 127.0.0.1 with a fresh self-signed certificate
/// for `localhost` / 127.0.0.1. Returns the port, the certificate PEM and its SHA-256.
pub fn tls_front(backend_port: u16) -> (u16, String, [u8; 32]) {
    use sha2::Digest;
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params");
    let cert = params.self_signed(&key).expect("self-signed");
    let pem = cert.pem();
    let der = cert.der().to_vec();
    let digest: [u8; 32] = sha2::Sha256::digest(&der).into();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls_pki_types::CertificateDer::from(der)],
        rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
    )
    .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tls front");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut backend) =
                        tokio::net::TcpStream::connect(("127.0.0.1", backend_port)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut backend).await;
                });
            }
        });
    });
    (port, pem, digest)
}
