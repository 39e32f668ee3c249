//! The SSH side: one russh server configuration shared by every listening address.
//!
//! Each accepted connection gets a [`Connection`] handler: public key (the one authorized key)
//! or password authentication, one session channel, `exec "/bin/sh -s"`, the script read from
//! the channel until EOF, then the canned answer with the script's marker on stdout and stderr,
//! exit status 0, EOF and close. Everything runs as tasks of one tokio runtime.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::canned::{script_marker, Canned};

/// Most bytes of script kept from a client (the real one is ~7 KB).
const MAX_SCRIPT_BYTES: usize = 1 << 20;

/// The command the agent runs; anything else is answered with exit status 127.
const COMMAND: &[u8] = b"/bin/sh -s";

/// What every connection shares.
pub struct Shared {
    /// The answer to the collection script (`None`: answer with empty output, exit 0, to
    /// measure what a host costs the client without any payload).
    pub canned: Option<Canned>,
    /// The one client key accepted.
    pub authorized_key: Option<PublicKey>,
    /// The one password accepted (any user name).
    pub password: Option<String>,
    /// Counters, printed by the binary on exit.
    pub stats: Stats,
}

/// Counters of the whole fleet.
#[derive(Debug, Default)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// Scripts answered with the canned output.
    pub answered: AtomicU64,
    /// Scripts refused (unknown command or no marker line).
    pub refused: AtomicU64,
    /// Sessions that ended with an SSH or I/O error.
    pub errors: AtomicU64,
}

/// The russh configuration: the host key, the allowed methods, no auth rejection delay, Nagle
/// off (as OpenSSH's sshd does for interactive traffic; with it, small packets wait for ACKs).
pub fn config(host_key: PrivateKey, password: bool) -> russh::server::Config {
    let mut methods = vec![MethodKind::PublicKey];
    if password {
        methods.push(MethodKind::Password);
    }
    russh::server::Config {
        keys: vec![host_key],
        methods: MethodSet::from(methods.as_slice()),
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(120)),
        nodelay: true,
        ..Default::default()
    }
}

/// Accepts connections on `listener` until the task is dropped; each one runs as its own task.
///
/// With a non-zero `rtt`, the network's round trip is simulated here: a new connection waits
/// one `rtt` before the server says anything (the TCP handshake's round trip) and every byte the
/// server writes leaves `rtt` later (the whole round trip lumped on the server-to-client
/// direction), so each request/response exchange of the protocol costs one `rtt`.
pub async fn accept_loop(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    rtt: Duration,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // EMFILE and friends: back off a little instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let config = config.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let handler = Connection::new(shared.clone(), peer);
            let result = if rtt.is_zero() {
                match russh::server::run_stream(config, stream, handler).await {
                    Ok(session) => session.await,
                    Err(e) => Err(e),
                }
            } else {
                tokio::time::sleep(rtt).await;
                match russh::server::run_stream(config, Delayed::new(stream, rtt), handler).await {
                    Ok(session) => session.await,
                    Err(e) => Err(e),
                }
            };
            if result.is_err() {
                shared.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// The state of one client connection.
pub struct Connection {
    shared: Arc<Shared>,
    /// Only kept for debugging; the answer does not depend on it.
    _peer: SocketAddr,
    /// The session channel that asked for `/bin/sh -s`.
    exec: Option<ChannelId>,
    /// `false` when the command was not `/bin/sh -s`.
    command_ok: bool,
    /// The script received so far.
    stdin: Vec<u8>,
}

impl Connection {
    fn new(shared: Arc<Shared>, peer: SocketAddr) -> Connection {
        Connection {
            shared,
            _peer: peer,
            exec: None,
            command_ok: false,
            stdin: Vec::new(),
        }
    }

    fn refuse(
        &self,
        channel: ChannelId,
        message: &str,
        status: u32,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        session.extended_data(channel, 1, format!("simfleet: {message}\n").into_bytes())?;
        session.exit_status_request(channel, status)?;
        session.eof(channel)?;
        session.close(channel)
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        key: &PublicKey,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.key_allowed(key) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(&mut self, _user: &str, key: &PublicKey) -> Result<Auth, Self::Error> {
        Ok(if self.key_allowed(key) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_password(&mut self, _user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(match &self.shared.password {
            Some(expected) if expected.as_bytes() == password.as_bytes() => Auth::Accept,
            _ => Auth::reject(),
        })
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.exec = Some(channel);
        self.command_ok = data == COMMAND;
        session.channel_success(channel)
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.exec == Some(channel) && self.stdin.len() < MAX_SCRIPT_BYTES {
            let room = MAX_SCRIPT_BYTES - self.stdin.len();
            self.stdin.extend_from_slice(&data[..data.len().min(room)]);
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.exec != Some(channel) {
            return Ok(());
        }
        if !self.command_ok {
            return self.refuse(channel, "only `/bin/sh -s` is simulated", 127, session);
        }
        let Some(marker) = script_marker(&self.stdin) else {
            return self.refuse(
                channel,
                "the script does not start with the marker line M='@@LUUMEN-<hex>@@'",
                2,
                session,
            );
        };
        if let Some(canned) = &self.shared.canned {
            let (stdout, stderr) = canned.answer(marker);
            session.data(channel, stdout)?;
            session.extended_data(channel, 1, stderr)?;
        }
        self.stdin = Vec::new();
        self.shared.stats.answered.fetch_add(1, Ordering::Relaxed);
        session.exit_status_request(channel, 0)?;
        session.eof(channel)?;
        session.close(channel)
    }
}

impl Connection {
    fn key_allowed(&self, key: &PublicKey) -> bool {
        self.shared
            .authorized_key
            .as_ref()
            .is_some_and(|k| k.key_data() == key.key_data())
    }
}

/// A TCP stream whose writes reach the peer `delay` after they were made: reads pass through,
/// writes are queued with their due time to a task that owns the write half and sends them in
/// order. Dropping the stream lets the task send what is queued, then close the write side.
pub struct Delayed {
    read: OwnedReadHalf,
    queue: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    delay: Duration,
}

impl Delayed {
    /// Wraps `stream`; spawns its writer task on the current runtime.
    pub fn new(stream: TcpStream, delay: Duration) -> Delayed {
        let (read, mut write) = stream.into_split();
        let (queue, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        tokio::spawn(async move {
            while let Some((at, bytes)) = due.recv().await {
                tokio::time::sleep_until(at).await;
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            let _ = write.shutdown().await;
        });
        Delayed { read, queue, delay }
    }
}

impl AsyncRead for Delayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Delayed {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let at = Instant::now() + self.delay;
        match self.queue.send((at, buf.to_vec())) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(_) => Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
