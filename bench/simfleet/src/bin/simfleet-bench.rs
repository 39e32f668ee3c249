//! `simfleet-bench`: issue 7, part 2 — `luumen-agent once` against a simulated fleet of
//! thousands of SSH hosts (`luumen-simfleet`), at RTT 0 and 50 ms, for several fleet sizes.
//!
//! The bench creates its own network namespace (`ip netns add luumen-sim-<pid>`), moves itself
//! into it, and runs there: the simulator on N loopback addresses `127.10.x.y` port 22, a local
//! receiver standing in for the API (`POST /reports`, bodies counted and dropped) and the agent.
//! For each RTT it restarts the simulator with that round trip, measures t1 (one host alone: its
//! `duration_ms`, median of several runs), then per N the cycle's wall time, the concurrency
//! bound `ceil(N / C) × t1`, the agent's CPU (user+sys from `wait4`, the agent process only),
//! its peak RSS (`ru_maxrss`), the simulator's CPU (`/proc/PID/stat`) and the whole machine's.
//! At RTT 0 it also runs the "empty" port (handshake + exec, no output) so the CPU the agent
//! spends beyond the SSH handshake shows. Prints tables and appends them to `--results`.
//! Never asserts timings; exits 0 unless the setup fails. The namespace and the simulator are
//! removed/stopped (by PID) at the end. See `bench/README.md`.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

/// The port the simulator answers on with canned output (its own namespace: no collisions).
const PORT: u16 = 22;
/// The port answering with empty output.
const EMPTY_PORT: u16 = 2222;
/// Agent runs longer than this are killed (and reported with exit code 137).
const AGENT_LIMIT: Duration = Duration::from_secs(900);

/// Command line.
#[derive(Debug, Parser)]
struct Options {
    /// Fleet sizes N, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,5000")]
    sizes: Vec<usize>,
    /// Round trips in ms, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "0,50")]
    rtts: Vec<u64>,
    /// The agent's max_concurrency C.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Runs per (RTT, N); figures are medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Runs per (RTT, N) for N >= --large.
    #[arg(long, default_value_t = 1)]
    runs_large: usize,
    /// Fleet size from which --runs-large applies.
    #[arg(long, default_value_t = 5000)]
    large: usize,
    /// Single-host runs for t1.
    #[arg(long, default_value_t = 5)]
    t1_runs: usize,
    /// Skip the empty-answer (handshake-only) runs.
    #[arg(long)]
    no_empty: bool,
    /// Skip the unmeasured warm-up run.
    #[arg(long)]
    no_warmup: bool,
    /// The luumen-agent binary.
    #[arg(long)]
    agent: PathBuf,
    /// The luumen-simfleet binary.
    #[arg(long)]
    simfleet: PathBuf,
    /// properties/src/plan/linux.sh (recorded once by the simulator).
    #[arg(long)]
    script: PathBuf,
    /// Scratch directory.
    #[arg(long)]
    work: PathBuf,
    /// The agent's host_key_policy: accept-new (every run starts with an empty state dir, so
    /// every host is pinned: a first cycle), strict is not possible here, or off.
    #[arg(long, default_value = "accept-new")]
    host_key_policy: String,
    /// Markdown file the report is appended to.
    #[arg(long)]
    results: Option<PathBuf>,
}

/// One agent run.
#[derive(Debug, Clone, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    max_rss_kib: i64,
    sim_cpu: f64,
    machine: f64,
    ok: usize,
    per_host_ms: Vec<f64>,
    exit: i32,
}

fn main() -> Result<()> {
    let o = Options::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("simfleet-bench must run as root (network namespace)");
    }
    fs::create_dir_all(&o.work).context("work dir")?;
    let work = fs::canonicalize(&o.work)?;
    let started_at = shell("date -u '+%Y-%m-%d %H:%M:%S UTC'");
    let background = background_load();

    // The namespace first, while this process has a single thread: setns applies per thread.
    let netns = Netns::create(&format!("luumen-sim-{}", std::process::id()))?;
    netns.enter()?;

    let keys = work.join("keys");
    let _ = fs::remove_dir_all(&keys);
    fs::create_dir_all(&keys)?;
    let host_key = keys.join("host_ed25519");
    let client_key = keys.join("client_ed25519");
    keygen(&host_key)?;
    keygen(&client_key)?;

    let max_n = o.sizes.iter().copied().max().unwrap_or(1);
    let addresses: Vec<Ipv4Addr> = (0..max_n as u32)
        .map(|i| Ipv4Addr::new(127, 10, (1 + i / 254) as u8, (1 + i % 254) as u8))
        .collect();
    let addresses_file = work.join("addresses.txt");
    fs::write(
        &addresses_file,
        addresses
            .iter()
            .map(|a| format!("{a}\n"))
            .collect::<String>(),
    )?;

    let receiver = Receiver::start()?;
    let config = work.join("config.yaml");
    fs::write(
        &config,
        format!(
            "api:\n  base_url: http://{}\n  api_key: bench\nmax_concurrency: {}\nhost_key_policy: \"{}\"\ntimeouts:\n  connect_seconds: 10\n  host_seconds: 120\n",
            receiver.addr, o.concurrency, o.host_key_policy
        ),
    )?;
    let inventory = |n: usize, port: u16| -> Result<PathBuf> {
        let path = work.join(format!("inventory-{n}-{port}.json"));
        let hosts: Vec<serde_json::Value> = addresses[..n]
            .iter()
            .enumerate()
            .map(|(i, a)| serde_json::json!({"id": format!("h{i:05}"), "address": a.to_string(), "port": port, "protocol": "ssh"}))
            .collect();
        let body = serde_json::json!({
            "default_credentials": {"username": "luumen", "private_key_file": client_key, "sudo": true},
            "hosts": hosts,
        });
        fs::write(&path, body.to_string())?;
        Ok(path)
    };

    let mut report = String::new();
    let mut main_rows = Vec::new();
    let mut empty_rows = Vec::new();
    let agent = Agent {
        bin: o.agent.clone(),
        config: config.clone(),
        work: work.clone(),
    };
    println!(
        "simfleet-bench: namespace {}, sizes {:?}, RTTs {:?} ms, C = {}, runs {} ({} from N = {})",
        netns.name, o.sizes, o.rtts, o.concurrency, o.runs, o.runs_large, o.large
    );
    let mut sim_line = String::new();
    for (round, &rtt) in o.rtts.iter().enumerate() {
        let sim = Simulator::start(&o, &addresses_file, &host_key, &client_key, rtt, &work)?;
        sim_line = sim.banner.clone();
        println!("{}", sim.banner);
        let probe = connect_ms(addresses[0]);
        println!("RTT {rtt} ms: TCP connect to {} takes {probe:.2} ms (the simulator adds the RTT above TCP)", addresses[0]);
        if round == 0 && !o.no_warmup {
            let n = o.sizes.iter().copied().min().unwrap_or(1);
            let _ = agent.run(&inventory(n, PORT)?, &sim, "warmup");
        }
        let one = inventory(1, PORT)?;
        let mut t1 = Vec::new();
        let mut t1_wall = Vec::new();
        for i in 0..o.t1_runs.max(1) {
            let s = agent.run(&one, &sim, &format!("t1-{rtt}-{i}"));
            t1.extend(s.per_host_ms.iter().copied());
            t1_wall.push(s.wall);
        }
        let t1_ms = median(&t1);
        println!(
            "RTT {rtt} ms: t1 = {t1_ms:.0} ms (one host alone, duration_ms, median of {}), single-host cycle {:.3} s",
            t1.len(),
            median(&t1_wall)
        );
        for &n in &o.sizes {
            let runs = if n >= o.large { o.runs_large } else { o.runs }.max(1);
            let inv = inventory(n, PORT)?;
            let mut samples = Vec::new();
            for r in 0..runs {
                let s = agent.run(&inv, &sim, &format!("{rtt}-{n}-{r}"));
                println!(
                    "RTT {rtt:>2} ms N {n:>5} run {r}: wall {:6.2} s  agent CPU {:6.2} s ({:.2} ms/host)  RSS {:6.1} MiB  simulator CPU {:5.2} s  machine {:6.2} s  ok {}/{n}  exit {}",
                    s.wall, s.cpu, s.cpu / n as f64 * 1e3, s.max_rss_kib as f64 / 1024.0, s.sim_cpu, s.machine, s.ok, s.exit
                );
                samples.push(s);
            }
            main_rows.push(Row {
                rtt,
                n,
                t1_ms,
                samples,
            });
            if rtt == 0 && !o.no_empty {
                let inv = inventory(n, EMPTY_PORT)?;
                let mut samples = Vec::new();
                for r in 0..runs {
                    let s = agent.run(&inv, &sim, &format!("empty-{n}-{r}"));
                    println!(
                        "RTT  0 ms N {n:>5} run {r} (empty answers): wall {:6.2} s  agent CPU {:6.2} s ({:.2} ms/host)  RSS {:6.1} MiB",
                        s.wall, s.cpu, s.cpu / n as f64 * 1e3, s.max_rss_kib as f64 / 1024.0
                    );
                    samples.push(s);
                }
                empty_rows.push(Row {
                    rtt,
                    n,
                    t1_ms,
                    samples,
                });
            }
        }
        drop(sim);
    }
    let received = receiver.requests.load(Ordering::Relaxed);
    let received_bytes = receiver.bytes.load(Ordering::Relaxed);

    let main_table = table(&main_rows, o.concurrency);
    let empty_table = empty_table(&main_rows, &empty_rows);
    println!("\n{main_table}\n{empty_table}");
    println!(
        "receiver: {received} POSTs, {:.1} MiB",
        received_bytes as f64 / 1048576.0
    );

    let _ = writeln!(
        report,
        "\n# Fleet benchmark: simulated fleet (issue 7, part 2)\n"
    );
    let _ = writeln!(report, "- date: {started_at}");
    let _ = writeln!(
        report,
        "- machine: {} CPUs ({}), kernel {}, {} MiB RAM; background load over 1 idle second before the runs: {:.2} busy CPUs (other processes share the 2 CPUs: wall times are inflated by them, the agent's CPU and RSS are its own)",
        shell("nproc"),
        shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'"),
        shell("uname -r"),
        shell("awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo"),
        background
    );
    let _ = writeln!(
        report,
        "- agent: `{}` (git {}), config: `max_concurrency: {}`, `host_key_policy: \"{}\"` (accept-new: every run starts without pins, so every host is pinned, a first cycle), default batching (100 results / 4 MiB / 5 s) to a local receiver, `--output FILE` (NDJSON) as in part 1",
        o.agent.display(),
        shell("git rev-parse --short HEAD 2>/dev/null; git status --porcelain 2>/dev/null | grep -q . && echo '(dirty)'").replace('\n', " "),
        o.concurrency,
        o.host_key_policy
    );
    let _ = writeln!(
        report,
        "- fleet: `luumen-simfleet` (russh 0.63, one tokio runtime, 2 worker threads) on N addresses 127.10.x.y port 22 inside the bench's own network namespace; every host answers `/bin/sh -s` with one real run of `linux.sh` on this machine ({sim_line}), key auth (ed25519)"
    );
    let _ = writeln!(
        report,
        "- latency: this kernel has no `sch_netem` (`tc qdisc ... netem` → \"Specified qdisc kind is unknown\"), so the RTT is simulated inside the simulator: a connection waits one RTT before the server's banner (the TCP handshake), and every byte the server sends leaves one RTT late; each request/response exchange therefore costs one RTT, as on a real link of that RTT (an OpenSSH client takes 0.50 s for one host at 50 ms, the agent's t1 below)"
    );
    let _ = writeln!(
        report,
        "- runs: {} per (RTT, N), {} for N ≥ {}; t1 = median `duration_ms` of one host alone over {} runs; the bound is ceil(N / C) × t1",
        o.runs, o.runs_large, o.large, o.t1_runs
    );
    let _ = writeln!(
        report,
        "- receiver: {received} POSTs, {:.1} MiB over the whole bench\n",
        received_bytes as f64 / 1048576.0
    );
    let _ = writeln!(report, "{main_table}\n{empty_table}");
    let _ = writeln!(
        report,
        "Commands:\n\n```sh\nsh bench/simfleet.sh   # = make bench (after part 1); --quick: N = 50, RTT 0, 1 run\n{} --addresses addresses.txt --port 22 --empty-port 2222 --host-key host_ed25519 --authorized-key client_ed25519.pub --script properties/src/plan/linux.sh --rtt-ms RTT\n{} once --config config.yaml --inventory inventory-N-22.json --output FILE --state-dir STATE\n```",
        o.simfleet.display(),
        o.agent.display()
    );
    if let Some(path) = &o.results {
        let mut md = fs::read_to_string(path).unwrap_or_default();
        md.push_str(&report);
        fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
        println!("appended to {}", path.display());
    }
    Ok(())
}

/// The figures of one (RTT, N).
struct Row {
    rtt: u64,
    n: usize,
    t1_ms: f64,
    samples: Vec<Sample>,
}

impl Row {
    fn med(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(&self.samples.iter().map(f).collect::<Vec<_>>())
    }
    fn cpu_per_host_ms(&self) -> f64 {
        self.med(|s| s.cpu) / self.n as f64 * 1e3
    }
    fn rss_mib(&self) -> f64 {
        self.samples
            .iter()
            .map(|s| s.max_rss_kib)
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    }
}

fn table(rows: &[Row], c: usize) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| RTT ms | N | runs | t1 ms | bound s | cycle wall s | wall / bound | agent CPU s | agent CPU / host ms | agent peak RSS MiB | simulator CPU / host ms | machine CPU s | per-host median ms (incl. waiting for a slot) | per-host p99 ms | hosts ok | exit codes |");
    let _ = writeln!(
        t,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for r in rows {
        let bound = r.n.div_ceil(c) as f64 * r.t1_ms / 1e3;
        let wall = r.med(|s| s.wall);
        let per_host: Vec<f64> = r
            .samples
            .iter()
            .flat_map(|s| s.per_host_ms.iter().copied())
            .collect();
        let ok: Vec<String> = r.samples.iter().map(|s| s.ok.to_string()).collect();
        let exits: Vec<String> = r.samples.iter().map(|s| s.exit.to_string()).collect();
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.0} | {:.0} | {} of {} | {} |",
            r.rtt,
            r.n,
            r.samples.len(),
            r.t1_ms,
            bound,
            wall,
            wall / bound,
            r.med(|s| s.cpu),
            r.cpu_per_host_ms(),
            r.rss_mib(),
            r.med(|s| s.sim_cpu) / r.n as f64 * 1e3,
            r.med(|s| s.machine),
            median(&per_host),
            percentile(&per_host, 99.0),
            ok.join(","),
            r.n,
            exits.join(",")
        );
    }
    t
}

fn empty_table(full: &[Row], empty: &[Row]) -> String {
    if empty.is_empty() {
        return String::new();
    }
    let mut t = String::from("Agent CPU beyond the SSH handshake (RTT 0): the same hosts on the simulator's empty port (handshake, auth, exec, no output; reported as `error`) vs the full answer.\n\n");
    let _ = writeln!(t, "| N | CPU / host, full answer ms | CPU / host, empty answer ms | beyond the handshake ms / host | peak RSS full / empty MiB | wall full / empty s |");
    let _ = writeln!(t, "|---:|---:|---:|---:|---:|---:|");
    for e in empty {
        let Some(f) = full.iter().find(|f| f.rtt == 0 && f.n == e.n) else {
            continue;
        };
        let _ = writeln!(
            t,
            "| {} | {:.2} | {:.2} | {:.2} | {:.1} / {:.1} | {:.2} / {:.2} |",
            e.n,
            f.cpu_per_host_ms(),
            e.cpu_per_host_ms(),
            f.cpu_per_host_ms() - e.cpu_per_host_ms(),
            f.rss_mib(),
            e.rss_mib(),
            f.med(|s| s.wall),
            e.med(|s| s.wall)
        );
    }
    t
}

/// How the agent is run.
struct Agent {
    bin: PathBuf,
    config: PathBuf,
    work: PathBuf,
}

impl Agent {
    fn run(&self, inventory: &Path, sim: &Simulator, label: &str) -> Sample {
        let output = self.work.join("agent-output.ndjson");
        let state = self.work.join("agent-state");
        let log = self.work.join(format!("agent-{label}.log"));
        let _ = fs::remove_file(&output);
        let _ = fs::remove_dir_all(&state);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("once")
            .arg("--config")
            .arg(&self.config)
            .arg("--inventory")
            .arg(inventory)
            .arg("--output")
            .arg(&output)
            .arg("--state-dir")
            .arg(&state)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match fs::File::create(&log) {
            Ok(f) => cmd.stderr(f),
            Err(_) => cmd.stderr(Stdio::null()),
        };
        let sim0 = sim.cpu_seconds();
        let machine0 = machine_busy_seconds();
        let started = Instant::now();
        let (exit, cpu, max_rss_kib) = run_measured(cmd);
        let wall = started.elapsed().as_secs_f64();
        let machine = machine_busy_seconds() - machine0;
        let sim_cpu = sim.cpu_seconds() - sim0;
        let (ok, per_host_ms) = scan_output(&output);
        let _ = fs::remove_file(&output);
        Sample {
            wall,
            cpu,
            max_rss_kib,
            sim_cpu,
            machine,
            ok,
            per_host_ms,
            exit,
        }
    }
}

/// Hosts `ok`/`partial` and every `duration_ms`, from the NDJSON output (read line by line).
fn scan_output(path: &Path) -> (usize, Vec<f64>) {
    #[derive(serde::Deserialize)]
    struct Line {
        status: String,
        duration_ms: f64,
    }
    let Ok(file) = fs::File::open(path) else {
        return (0, Vec::new());
    };
    let mut ok = 0;
    let mut durations = Vec::new();
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if let Ok(l) = serde_json::from_str::<Line>(&line) {
            durations.push(l.duration_ms);
            if l.status == "ok" || l.status == "partial" {
                ok += 1;
            }
        }
    }
    (ok, durations)
}

/// Spawns `cmd`, waits with `wait4`: exit code, user+sys seconds, peak RSS KiB. Killed after
/// [`AGENT_LIMIT`].
fn run_measured(mut cmd: Command) -> (i32, f64, i64) {
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("simfleet-bench: cannot spawn {:?}: {e}", cmd.get_program());
            return (-1, f64::NAN, 0);
        }
    };
    let pid = child.id() as libc::pid_t;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(AGENT_LIMIT).is_err() {
            // SAFETY: pid is our unreaped child (it cannot be reused before we wait for it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data that wait4 fills.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    let _ = done_tx.send(());
    let _ = watchdog.join();
    // Reaped by wait4 above: the Child must not be waited for again.
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (code, tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss)
}

/// The bench's own network namespace; deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: &str) -> Result<Netns> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns {
            name: name.to_string(),
        };
        run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// Moves the calling thread (call it before any other thread exists) into the namespace.
    fn enter(&self) -> Result<()> {
        let file = fs::File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening /run/netns/{}", self.name))?;
        use std::os::fd::AsRawFd;
        // SAFETY: a valid namespace fd; setns only changes this thread's network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!(
                "setns into {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A running `luumen-simfleet`; stopped by PID on drop.
struct Simulator {
    child: Child,
    banner: String,
}

impl Simulator {
    fn start(
        o: &Options,
        addresses: &Path,
        host_key: &Path,
        client_key: &Path,
        rtt: u64,
        work: &Path,
    ) -> Result<Simulator> {
        let log = fs::File::create(work.join(format!("simfleet-rtt{rtt}.log")))?;
        let mut child = Command::new(&o.simfleet)
            .arg("--addresses")
            .arg(addresses)
            .args([
                "--port",
                &PORT.to_string(),
                "--empty-port",
                &EMPTY_PORT.to_string(),
            ])
            .arg("--host-key")
            .arg(host_key)
            .arg("--authorized-key")
            .arg(format!("{}.pub", client_key.display()))
            .arg("--script")
            .arg(&o.script)
            .args(["--rtt-ms", &rtt.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", o.simfleet.display()))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let mut sim = Simulator {
            child,
            banner: line.trim().to_string(),
        };
        if !sim.banner.starts_with("simfleet: listening") {
            let status = sim.child.try_wait().ok().flatten();
            bail!(
                "luumen-simfleet did not start (status {status:?}); see {}/simfleet-rtt{rtt}.log",
                work.display()
            );
        }
        Ok(sim)
    }

    fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(self.child.id())
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // SAFETY: our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The API stand-in: answers every request 200 `{}`, counts and drops the bodies.
struct Receiver {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Receiver {
    fn start() -> Result<Receiver> {
        let server =
            tiny_http::Server::http("127.0.0.1:0").map_err(|e| anyhow::anyhow!("receiver: {e}"))?;
        let addr = server
            .server_addr()
            .to_ip()
            .context("receiver has no IP address")?;
        let requests = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (r, b) = (requests.clone(), bytes.clone());
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let n = std::io::copy(request.as_reader(), &mut std::io::sink()).unwrap_or(0);
                r.fetch_add(1, Ordering::Relaxed);
                b.fetch_add(n, Ordering::Relaxed);
                let header =
                    tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]);
                let mut response = tiny_http::Response::from_string("{}");
                if let Ok(h) = header {
                    response = response.with_header(h);
                }
                let _ = request.respond(response);
            }
        });
        Ok(Receiver {
            addr,
            requests,
            bytes,
        })
    }
}

fn keygen(path: &Path) -> Result<()> {
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "simfleet-bench",
            "-f",
        ])
        .arg(path))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Median time of a few TCP connects (one kernel round trip each), ms.
fn connect_ms(addr: Ipv4Addr) -> f64 {
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        if TcpStream::connect_timeout(&(addr, PORT).into(), Duration::from_secs(2)).is_ok() {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    median(&times)
}

/// utime+stime of a process, seconds.
fn proc_cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return f64::NAN;
    };
    rest.split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum::<u64>() as f64
        / hz
}

/// Busy seconds of all CPUs (everything but idle and iowait), from `/proc/stat`.
fn machine_busy_seconds() -> f64 {
    let mut text = String::new();
    if fs::File::open("/proc/stat")
        .and_then(|mut f| f.read_to_string(&mut text))
        .is_err()
    {
        return f64::NAN;
    }
    let busy: u64 = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    busy as f64 / hz
}

fn background_load() -> f64 {
    let before = machine_busy_seconds();
    std::thread::sleep(Duration::from_secs(1));
    machine_busy_seconds() - before
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn shell(cmd: &str) -> String {
    Command::new("/bin/sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
