//! `luumen-simfleet`: the simulated SSH fleet (see the crate doc and `bench/README.md`).
//!
//! ```text
//! luumen-simfleet --addresses FILE --port P [--empty-port P2] --host-key FILE \
//!     --authorized-key FILE.pub [--password-file FILE] --script linux.sh [--no-sudo] [--rtt-ms MS]
//!     [--threads N]
//! ```
//! Listens on port P (canned answers) and P2 (empty answers) of every address of FILE (one IPv4
//! address per line), prints one `simfleet: listening ...` line on stdout once every listener is
//! bound, and serves until SIGTERM or SIGINT, then prints its counters on stderr and exits 0.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use luumen_simfleet::canned::Canned;
use luumen_simfleet::server::{accept_loop, config, Shared, Stats};

/// Command line of the simulator.
#[derive(Debug, Parser)]
#[command(about = "Simulated SSH fleet answering the luumen collection script with canned output")]
struct Args {
    /// File with one IPv4 address per line to listen on.
    #[arg(long)]
    addresses: PathBuf,
    /// Port answering with the canned output of the collection script.
    #[arg(long)]
    port: u16,
    /// Optional second port on the same addresses answering with empty output (exit 0).
    #[arg(long)]
    empty_port: Option<u16>,
    /// The server's host key (OpenSSH private key file, unencrypted).
    #[arg(long)]
    host_key: PathBuf,
    /// The one client public key accepted (OpenSSH `.pub` file).
    #[arg(long)]
    authorized_key: Option<PathBuf>,
    /// File holding the one password accepted (first line).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// The collection script to record once (properties/src/plan/linux.sh).
    #[arg(long)]
    script: PathBuf,
    /// Record the template with `LUUMEN_SUDO=0` instead of 1.
    #[arg(long)]
    no_sudo: bool,
    /// Simulated network round trip (ms): each connection waits one RTT before the banner and
    /// every byte sent leaves one RTT late (see `server::accept_loop`). 0 = loopback as is.
    #[arg(long, default_value_t = 0)]
    rtt_ms: u64,
    /// Worker threads of the tokio runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.addresses)
        .with_context(|| format!("reading {}", args.addresses.display()))?;
    let addresses: Vec<Ipv4Addr> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().with_context(|| format!("bad address {l:?}")))
        .collect::<Result<_>>()?;
    if addresses.is_empty() {
        bail!("{} lists no address", args.addresses.display());
    }
    let host_key = russh::keys::load_secret_key(&args.host_key, None)
        .with_context(|| format!("loading host key {}", args.host_key.display()))?;
    let authorized_key = match &args.authorized_key {
        Some(path) => Some(
            russh::keys::load_public_key(path)
                .with_context(|| format!("loading authorized key {}", path.display()))?,
        ),
        None => None,
    };
    let password = match &args.password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        ),
        None => None,
    };
    if authorized_key.is_none() && password.is_none() {
        bail!("give --authorized-key or --password-file (or both)");
    }
    let canned = Canned::record(&args.script, !args.no_sudo)?;
    let (out_bytes, err_bytes) = canned.sizes();
    let sections = canned.sections();
    let config = Arc::new(config(host_key, password.is_some()));
    let full = Arc::new(Shared {
        canned: Some(canned),
        authorized_key: authorized_key.clone(),
        password: password.clone(),
        stats: Stats::default(),
    });
    let empty = Arc::new(Shared {
        canned: None,
        authorized_key,
        password,
        stats: Stats::default(),
    });
    let mut ports = vec![(args.port, full.clone())];
    if let Some(p) = args.empty_port {
        ports.push((p, empty.clone()));
    }
    let mut tasks = Vec::new();
    for (port, shared) in &ports {
        for addr in &addresses {
            let listener = bind(SocketAddrV4::new(*addr, *port))
                .with_context(|| format!("listening on {addr}:{port}"))?;
            tasks.push(tokio::spawn(accept_loop(
                listener,
                config.clone(),
                shared.clone(),
                std::time::Duration::from_millis(args.rtt_ms),
            )));
        }
    }
    println!(
        "simfleet: listening on {} addresses, rtt {} ms, port {} (canned: {out_bytes} bytes stdout, {err_bytes} bytes stderr, {sections} sections){}",
        addresses.len(),
        args.rtt_ms,
        args.port,
        args.empty_port
            .map(|p| format!(", port {p} (empty answers)"))
            .unwrap_or_default()
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for task in &tasks {
        task.abort();
    }
    for (name, shared) in [("canned", &full), ("empty", &empty)] {
        let s = &shared.stats;
        eprintln!(
            "simfleet: {name}: {} connections, {} answered, {} refused, {} session errors",
            s.connections.load(Ordering::Relaxed),
            s.answered.load(Ordering::Relaxed),
            s.refused.load(Ordering::Relaxed),
            s.errors.load(Ordering::Relaxed)
        );
    }
    Ok(())
}

/// A listener with a deep accept queue: a cycle opens up to `max_concurrency` connections at
/// once, spread over many addresses, but a single-host run still must not see SYN drops.
fn bind(addr: SocketAddrV4) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr.into())?;
    socket.listen(1024)
}

/// Thousands of listeners need thousands of descriptors: raise the soft limit to the hard one.
fn raise_fd_limit() {
    // SAFETY: rlimit is plain old data; getrlimit/setrlimit only read/write it.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
