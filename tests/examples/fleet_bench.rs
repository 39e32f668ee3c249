//! `make bench`, part 1 ("Real OpenSSH fleet", issue 7): the test harness' real OpenSSH sshd on
//! N loopback addresses, collected side by side, each R times, with the same concurrency C, by
//!
//! 1. `luumen-agent once --inventory ... --output FILE` (release build, `LUUMEN_AGENT_BIN`),
//! 2. plain OpenSSH: `xargs -P C` running `ssh ... /bin/sh -s < script` per host, where the
//!    script is built exactly as the agent builds it (marker line, `LUUMEN_SUDO=1`, `linux.sh`),
//! 3. `ansible -m setup` and `ansible -m raw -a <script>` with `forks = C` (when `--ansible-bin`
//!    names the bin dir of a virtualenv with ansible-core; `bench/setup-ansible.sh` makes it).
//!
//! For every run it measures the wall time, the collector's own CPU (user+sys of the process and
//! all its descendants, from `wait4`; orphaned ssh ControlPersist masters are re-parented to this
//! process, a child subreaper, stopped and counted too), the whole machine's CPU from
//! `/proc/stat` (busy jiffies of all CPUs), and per-host latencies where the tool reports them
//! (the agent's `duration_ms`). Prints a table of medians and the ratios of the issue's targets,
//! and writes a Markdown report. Never asserts timings; exits 0 unless the setup itself fails.
//!
//! ```text
//! cargo run --release -p luumen-integration --example fleet_bench -- \
//!     [--hosts N] [--runs R] [--concurrency C] [--ansible-bin DIR] [--work DIR] \
//!     [--results FILE] [--no-warmup]
//! ```
//! Needs root (test users, sshd). See `bench/README.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use luumen_integration::{
    agent_bin, ensure_test_users, require_root, Receiver, SshdConfig, SshdHarness,
};
use serde_json::{json, Value};

/// The collection script of the agent, without its two generated header lines.
const LINUX_SCRIPT: &str = include_str!("../../properties/src/plan/linux.sh");

/// The agent's `max_concurrency` when no config.yaml is given.
const AGENT_DEFAULT_CONCURRENCY: usize = 64;

/// Sections every host of this machine must report (a missing END means a broken collection).
const MIN_SECTIONS: usize = 10;

/// Options from the command line.
#[derive(Debug, Clone)]
struct Options {
    hosts: usize,
    runs: usize,
    concurrency: usize,
    ansible_bin: Option<PathBuf>,
    work: PathBuf,
    results: Option<PathBuf>,
    warmup: bool,
    command_line: String,
}

fn parse_options() -> Options {
    let mut o = Options {
        hosts: 50,
        runs: 3,
        concurrency: 0,
        ansible_bin: None,
        work: PathBuf::from("bench/work"),
        results: None,
        warmup: true,
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("fleet_bench: {arg} needs a value"))
        };
        match arg.as_str() {
            "--hosts" => o.hosts = value().parse().expect("--hosts N"),
            "--runs" => o.runs = value().parse().expect("--runs R"),
            "--concurrency" => o.concurrency = value().parse().expect("--concurrency C"),
            "--ansible-bin" => o.ansible_bin = Some(PathBuf::from(value())),
            "--work" => o.work = PathBuf::from(value()),
            "--results" => o.results = Some(PathBuf::from(value())),
            "--no-warmup" => o.warmup = false,
            other => panic!("fleet_bench: unknown argument {other:?} (see the file's doc comment)"),
        }
    }
    if o.concurrency == 0 {
        o.concurrency = o.hosts;
    }
    assert!(
        o.hosts > 0 && o.runs > 0,
        "fleet_bench: --hosts and --runs must be > 0"
    );
    o
}

/// What one run of one tool cost.
#[derive(Debug, Clone, Default)]
struct Sample {
    wall: f64,
    /// user+sys of the tool and its descendants, seconds.
    cpu: f64,
    /// busy CPU of the whole machine over the run, seconds.
    machine: f64,
    /// CPU of the harness' sshd trees over the run (the managed hosts' side), seconds.
    hosts_cpu: f64,
    /// Peak RSS of the largest process of the tool, KiB.
    max_rss_kib: i64,
    /// Hosts collected completely.
    ok_hosts: usize,
    /// Per-host latencies reported by the tool, ms.
    per_host_ms: Vec<f64>,
    exit: i32,
}

/// The resource use of a waited-for process tree.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu: f64,
    max_rss_kib: i64,
}

impl Usage {
    fn from_rusage(ru: &libc::rusage) -> Usage {
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Usage {
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            max_rss_kib: ru.ru_maxrss,
        }
    }
}

/// Busy jiffies (everything but idle and iowait) of all CPUs, from `/proc/stat`.
fn machine_busy_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let line = stat.lines().next().expect("cpu line");
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest is already in user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| *v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    busy as f64 / hz
}

/// CPU seconds (utime+stime+cutime+cstime) of the given processes: for the harness' listening
/// sshd processes this is everything the managed hosts did (every per-connection sshd, shell,
/// command and sudo is reaped inside that tree), whatever else runs on the machine.
fn tree_cpu_seconds(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    for pid in pids {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        // After the comm: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
        ticks += rest
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum::<u64>();
    }
    ticks as f64 / hz
}

/// CPU seconds of processes orphaned inside the harness' sshd trees (OpenSSH's post-auth
/// session process can outlive its monitor and be re-parented): this process is a child
/// subreaper and [`start_orphan_reaper`] reaps them and adds their rusage here (in µs).
static ORPHAN_CPU_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Pids this process waits for itself (tools, sshd listeners): the orphan reaper skips them.
static OWN_PIDS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn orphan_cpu_seconds() -> f64 {
    ORPHAN_CPU_US.load(std::sync::atomic::Ordering::SeqCst) as f64 / 1e6
}

/// Makes this process a child subreaper and reaps, every 10 ms, the exited children that are
/// not in [`OWN_PIDS`] and are sshd processes (orphans from the sshd trees), adding their CPU to [`ORPHAN_CPU_US`].
fn start_orphan_reaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only changes this process' attributes.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let me = std::process::id();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(10));
        let Ok(dir) = fs::read_dir("/proc") else {
            continue;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("");
            let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            // Only sshd processes: other children (e.g. `Command::output` in `shell`) are
            // waited for by their owners.
            let comm = stat.split_once('(').map_or("", |(_, c)| c);
            if ppid != me || state != "Z" || !comm.starts_with("sshd)") {
                continue;
            }
            if OWN_PIDS.lock().map(|p| p.contains(&pid)).unwrap_or(true) {
                continue;
            }
            let mut status = 0;
            // SAFETY: rusage is plain old data; wait4 fills it.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointers to local variables; pid is our zombie child.
            let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, libc::WNOHANG, &mut ru) };
            if r == pid as libc::pid_t {
                let us = (Usage::from_rusage(&ru).cpu * 1e6) as u64;
                ORPHAN_CPU_US.fetch_add(us, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
}

/// Spawns `cmd`, waits for it with `wait4` and returns its exit code and resource use.
fn run_measured(mut cmd: Command) -> (i32, Usage) {
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {:?}: {e}", cmd.get_program()));
    let pid = child.id() as libc::pid_t;
    if let Ok(mut own) = OWN_PIDS.lock() {
        own.push(child.id());
    }
    let (status, usage) = wait_pid(pid);
    // The child is reaped; `Child` must not be waited for again.
    std::mem::forget(child);
    (status, usage)
}

fn wait_pid(pid: libc::pid_t) -> (i32, Usage) {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to local variables.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return (-1, Usage::default());
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    (code, Usage::from_rusage(&ru))
}

/// `fleet_bench --reap CONTROL_DIR WALL_FILE -- PROGRAM ARGS...`: runs PROGRAM as a child subreaper, so
/// that the ssh ControlPersist masters Ansible leaves behind (daemonized, hence orphaned) are
/// re-parented to this helper. When PROGRAM exits, stops those masters (`ssh -O exit` on every
/// socket of CONTROL_DIR) and waits for every remaining descendant, so that the `wait4` rusage of
/// this helper covers the whole client side and nothing of the sshd side (the harness' sshd is
/// not a descendant of the helper). Writes PROGRAM's own wall time (seconds) to WALL_FILE and exits
/// with PROGRAM's exit code.
fn reap_main(args: &[String]) -> i32 {
    let (control_dir, wall_file, rest) = match args {
        [dir, wall, dashdash, rest @ ..] if dashdash == "--" && !rest.is_empty() => {
            (Path::new(dir), Path::new(wall), rest)
        }
        _ => panic!("fleet_bench --reap CONTROL_DIR WALL_FILE -- PROGRAM ARGS..."),
    };
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only changes this process' attributes.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let mut cmd = Command::new(&rest[0]);
    cmd.args(&rest[1..]);
    let started = Instant::now();
    let (code, _) = run_measured(cmd);
    let _ = fs::write(wall_file, format!("{}\n", started.elapsed().as_secs_f64()));
    if let Ok(dir) = fs::read_dir(control_dir) {
        for socket in dir.flatten() {
            let mut exit = Command::new("ssh");
            exit.arg("-o")
                .arg(format!("ControlPath={}", socket.path().display()))
                .args(["-O", "exit", "bench"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = run_measured(exit);
        }
    }
    // Wait for every orphan (the masters exit once told to); ECHILD ends the loop.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut status = 0;
        // SAFETY: valid pointer to a local variable.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
        if r == 0 {
            if Instant::now() >= deadline {
                eprintln!("fleet_bench --reap: descendants still running after 20 s");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    code
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
    let mut v: Vec<f64> = values.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn random_nonce() -> u128 {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_ok() {
        return u128::from_le_bytes(bytes);
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The script exactly as `Plan::linux` builds it (sudo on).
fn build_script(marker: &str) -> String {
    format!("M='{marker}'\nLUUMEN_SUDO=1\n{LINUX_SCRIPT}")
}

/// Number of `<marker> END ` lines on stdout (complete sections).
fn count_ends(stdout: &str, marker: &str) -> usize {
    let needle = format!("{marker} END ");
    stdout.lines().filter(|l| l.starts_with(&needle)).count()
}

/// Everything the tools share.
struct Fleet {
    sshd: SshdHarness,
    user: String,
    key: PathBuf,
    work: PathBuf,
    concurrency: usize,
    hosts_file: PathBuf,
    script_file: PathBuf,
    marker: String,
    agent_inventory: PathBuf,
    agent_config: Option<PathBuf>,
    _receiver: Option<Receiver>,
    ansible_bin: Option<PathBuf>,
    ansible_inventory: PathBuf,
    ansible_cfg: PathBuf,
}

impl Fleet {
    fn new(o: &Options) -> Fleet {
        let sshd = SshdHarness::start(SshdConfig::with_addresses(o.hosts)).expect("sshd starts");
        let user = sshd.sudo_user().clone();
        let work = fs::canonicalize(&o.work).expect("work dir");
        let run_dir = work.join("fleet");
        let _ = fs::remove_dir_all(&run_dir);
        fs::create_dir_all(&run_dir).expect("create work/fleet");

        let hosts_file = run_dir.join("hosts.txt");
        let list: String = sshd.addresses().iter().map(|a| format!("{a}\n")).collect();
        fs::write(&hosts_file, list).expect("hosts.txt");

        let marker = format!("@@LUUMEN-{:032x}@@", random_nonce());
        let script_file = run_dir.join("script.sh");
        fs::write(&script_file, build_script(&marker)).expect("script.sh");

        let entries: Vec<Value> = sshd
            .addresses()
            .iter()
            .enumerate()
            .map(|(i, a)| {
                json!({"id": format!("h{i:04}"), "address": a.to_string(), "port": sshd.port(), "protocol": "ssh"})
            })
            .collect();
        let agent_inventory = run_dir.join("inventory.json");
        let body = json!({
            "default_credentials": {"username": user.name, "private_key_file": user.private_key, "sudo": true},
            "hosts": entries,
        });
        fs::write(&agent_inventory, body.to_string()).expect("inventory.json");

        // The agent's thread pool is min(max_concurrency, hosts); a config.yaml (which needs an
        // API: a local receiver) is only written when the default 64 would not give C.
        let needs_config = o.concurrency.min(o.hosts) != AGENT_DEFAULT_CONCURRENCY.min(o.hosts);
        let (agent_config, receiver) = if needs_config {
            let receiver = Receiver::start(200);
            let path = run_dir.join("config.yaml");
            let yaml = format!(
                "api:\n  base_url: {}\n  api_key: bench\nmax_concurrency: {}\nbatch:\n  max_results: 1000\n  max_bytes: 67108864\n",
                receiver.base_url(),
                o.concurrency
            );
            fs::write(&path, yaml).expect("config.yaml");
            (Some(path), Some(receiver))
        } else {
            (None, None)
        };

        let ansible_inventory = run_dir.join("ansible-inventory.ini");
        let mut ini = String::from("[fleet]\n");
        for (i, a) in sshd.addresses().iter().enumerate() {
            let _ = writeln!(ini, "h{i:04} ansible_host={a} ansible_port={}", sshd.port());
        }
        let _ = write!(
            ini,
            "\n[fleet:vars]\nansible_user={}\nansible_ssh_private_key_file={}\nansible_python_interpreter=/usr/bin/python3\n",
            user.name,
            user.private_key.display()
        );
        fs::write(&ansible_inventory, ini).expect("ansible inventory");
        let ansible_cfg = run_dir.join("ansible.cfg");
        // Ansible's defaults except host key checking (the harness' keys are fresh each run):
        // ssh with ControlMaster/ControlPersist=60s, no pipelining.
        let cfg = format!(
            "[defaults]\nhost_key_checking = False\nforks = {}\nremote_tmp = ~/.ansible/tmp\n\
             [ssh_connection]\nssh_args = -C -o ControlMaster=auto -o ControlPersist=60s \
             -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes\n",
            o.concurrency
        );
        fs::write(&ansible_cfg, cfg).expect("ansible.cfg");
        // The harness' host keys are fresh each bench: start with no pinned keys (the warm-up
        // run pins them, as a first cycle in production does).
        let _ = fs::remove_dir_all(run_dir.join("agent-state"));

        Fleet {
            sshd,
            user: user.name,
            key: user.private_key,
            work: run_dir,
            concurrency: o.concurrency,
            hosts_file,
            script_file,
            marker,
            agent_inventory,
            agent_config,
            _receiver: receiver,
            ansible_bin: o.ansible_bin.clone(),
            ansible_inventory,
            ansible_cfg,
        }
    }

    fn hosts(&self) -> usize {
        self.sshd.addresses().len()
    }

    /// Runs `cmd` measured: wall, wait4 CPU of its tree, /proc/stat of the machine.
    fn measure(&self, cmd: Command) -> Sample {
        let sshd = self.sshd.pids();
        let hosts0 = tree_cpu_seconds(&sshd) + orphan_cpu_seconds();
        let machine0 = machine_busy_seconds();
        let started = Instant::now();
        let (exit, usage) = run_measured(cmd);
        let wall = started.elapsed().as_secs_f64();
        // Let the last sessions' processes exit and be reaped (not part of the wall time).
        std::thread::sleep(Duration::from_millis(300));
        let machine = machine_busy_seconds() - machine0;
        let hosts_cpu = tree_cpu_seconds(&sshd) + orphan_cpu_seconds() - hosts0;
        Sample {
            wall,
            cpu: usage.cpu,
            machine,
            hosts_cpu,
            max_rss_kib: usage.max_rss_kib,
            exit,
            ..Sample::default()
        }
    }

    fn agent_command(&self, output: &Path, log: &Path) -> Command {
        let mut cmd = Command::new(agent_bin());
        cmd.arg("once");
        if let Some(config) = &self.agent_config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("--inventory")
            .arg(&self.agent_inventory)
            .arg("--output")
            .arg(output)
            .arg("--state-dir")
            .arg(self.work.join("agent-state"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).expect("agent log"));
        cmd
    }

    fn run_agent(&self, run: usize) -> Sample {
        let output = self.work.join(format!("agent-{run}.ndjson"));
        let log = self.work.join(format!("agent-{run}.log"));
        let mut s = self.measure(self.agent_command(&output, &log));
        let text = fs::read_to_string(&output).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some(d) = v["duration_ms"].as_f64() {
                s.per_host_ms.push(d);
            }
            if matches!(v["status"].as_str(), Some("ok" | "partial")) {
                s.ok_hosts += 1;
            }
        }
        s
    }

    /// The exact shell command line of the OpenSSH variant (for the report).
    fn openssh_command_line(&self) -> String {
        format!(
            "xargs -a {hosts} -P {c} -I{{}} sh -c 'exec ssh -i {key} -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR \
             -p {port} {user}@\"$1\" /bin/sh -s < {script} > {out}/\"$1\"' _ {{}}",
            hosts = self.hosts_file.display(),
            c = self.concurrency,
            key = self.key.display(),
            port = self.sshd.port(),
            user = self.user,
            script = self.script_file.display(),
            out = self.work.join("openssh-out").display(),
        )
    }

    fn run_openssh(&self) -> Sample {
        let out = self.work.join("openssh-out");
        let _ = fs::remove_dir_all(&out);
        fs::create_dir_all(&out).expect("openssh-out");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("exec {}", self.openssh_command_line()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut s = self.measure(cmd);
        for a in self.sshd.addresses() {
            let text = fs::read_to_string(out.join(a.to_string())).unwrap_or_default();
            if count_ends(&text, &self.marker) >= MIN_SECTIONS {
                s.ok_hosts += 1;
            }
        }
        s
    }

    fn ansible_command(
        &self,
        module: &str,
        args: Option<&str>,
        control_dir: &Path,
        wall_file: &Path,
    ) -> Command {
        let bin = self.ansible_bin.as_ref().expect("ansible bin");
        let home = self.work.join("ansible-home");
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.arg("--reap")
            .arg(control_dir)
            .arg(wall_file)
            .arg("--")
            .arg(bin.join("ansible"))
            .args(["fleet", "-o", "-i"])
            .arg(&self.ansible_inventory)
            .args(["-f", &self.concurrency.to_string(), "-m", module]);
        if let Some(a) = args {
            cmd.args(["-a", a]);
        }
        cmd.env("ANSIBLE_CONFIG", &self.ansible_cfg)
            .env("ANSIBLE_HOME", &home)
            .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", control_dir)
            .env("ANSIBLE_NOCOLOR", "1")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .stdin(Stdio::null());
        cmd
    }

    fn run_ansible(&self, module: &str, args: Option<&str>, run: usize) -> Sample {
        let control_dir = self.work.join(format!("cp-{module}-{run}"));
        fs::create_dir_all(&control_dir).expect("control dir");
        let out_path = self.work.join(format!("ansible-{module}-{run}.out"));
        let wall_file = self.work.join(format!("ansible-{module}-{run}.wall"));
        let mut cmd = self.ansible_command(module, args, &control_dir, &wall_file);
        cmd.stdout(fs::File::create(&out_path).expect("ansible out"))
            .stderr(Stdio::null());
        let mut s = self.measure(cmd);
        // The wall time of ansible itself, without the helper's cleanup of the masters.
        if let Some(w) = fs::read_to_string(&wall_file)
            .ok()
            .and_then(|w| w.trim().parse().ok())
        {
            s.wall = w;
        }
        let text = fs::read_to_string(&out_path).unwrap_or_default();
        s.ok_hosts = text
            .lines()
            .filter(|l| {
                (l.contains(" | SUCCESS") || l.contains(" | CHANGED"))
                    && (module != "raw"
                        || count_ends(&l.replace("\\n", "\n"), &self.marker) >= MIN_SECTIONS)
            })
            .count();
        let _ = fs::remove_dir_all(&control_dir);
        s
    }

    fn ansible_raw_command_line(&self) -> String {
        format!(
            "ansible fleet -o -i {} -f {} -m raw -a \"$(cat {})\"",
            self.ansible_inventory.display(),
            self.concurrency,
            self.script_file.display()
        )
    }
}

/// Medians over the runs of one tool.
struct Row {
    name: &'static str,
    samples: Vec<Sample>,
}

impl Row {
    fn med(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(&self.samples.iter().map(f).collect::<Vec<_>>())
    }
    fn wall(&self) -> f64 {
        self.med(|s| s.wall)
    }
    fn cpu(&self) -> f64 {
        self.med(|s| s.cpu)
    }
    fn machine(&self) -> f64 {
        self.med(|s| s.machine)
    }
    fn host_side(&self) -> f64 {
        self.med(|s| s.hosts_cpu)
    }
    fn other(&self) -> f64 {
        self.med(|s| s.machine - s.cpu - s.hosts_cpu)
    }
    fn per_host(&self) -> Vec<f64> {
        self.samples
            .iter()
            .flat_map(|s| s.per_host_ms.iter().copied())
            .collect()
    }
}

fn fmt_num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "–".to_string()
    }
}

fn table(rows: &[Row], hosts: usize) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| tool | wall s | collector CPU s | collector CPU / host ms | host side (sshd) CPU s | host side / host ms | machine CPU s | other CPU s | per-host median ms | per-host p99 ms | peak RSS MiB | hosts ok | exit codes |"
    );
    let _ = writeln!(
        t,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    let n = hosts as f64;
    for r in rows {
        let per_host = r.per_host();
        let ok: Vec<String> = r.samples.iter().map(|s| s.ok_hosts.to_string()).collect();
        let exits: Vec<String> = r.samples.iter().map(|s| s.exit.to_string()).collect();
        let rss = r.samples.iter().map(|s| s.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} of {hosts} | {} |",
            r.name,
            fmt_num(r.wall(), 2),
            fmt_num(r.cpu(), 2),
            fmt_num(r.cpu() / n * 1000.0, 1),
            fmt_num(r.host_side(), 2),
            fmt_num(r.host_side() / n * 1000.0, 1),
            fmt_num(r.machine(), 2),
            fmt_num(r.other(), 2),
            fmt_num(median(&per_host), 0),
            fmt_num(percentile(&per_host, 99.0), 0),
            fmt_num(rss, 1),
            ok.join(","),
            exits.join(","),
        );
    }
    t
}

fn ratios(rows: &BTreeMap<&str, &Row>) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| ratio | measured | target |");
    let _ = writeln!(t, "|---|---:|---|");
    let get = |k: &str| rows.get(k).copied();
    let mut line = |name: &str, v: Option<f64>, target: &str| {
        let _ = writeln!(
            t,
            "| {name} | {} | {target} |",
            v.map_or("–".to_string(), |v| fmt_num(v, 3))
        );
    };
    let agent = get("luumen-agent");
    let openssh = get("OpenSSH xargs");
    let setup = get("ansible -m setup");
    let raw = get("ansible -m raw");
    let both = |a: Option<&Row>, b: Option<&Row>, f: &dyn Fn(&Row, &Row) -> f64| match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        _ => None,
    };
    line(
        "agent wall / OpenSSH wall",
        both(agent, openssh, &|a, b| a.wall() / b.wall()),
        "≤ 1.0",
    );
    line(
        "agent CPU / OpenSSH client CPU",
        both(agent, openssh, &|a, b| a.cpu() / b.cpu()),
        "≤ 0.15",
    );
    line(
        "agent CPU / Ansible setup controller CPU",
        both(agent, setup, &|a, b| a.cpu() / b.cpu()),
        "≤ 0.05 (1/20)",
    );
    line(
        "agent CPU / Ansible raw controller CPU",
        both(agent, raw, &|a, b| a.cpu() / b.cpu()),
        "(info)",
    );
    line(
        "Ansible setup wall / agent wall",
        both(setup, agent, &|a, b| a.wall() / b.wall()),
        "≥ 5",
    );
    line(
        "agent host-side CPU / Ansible setup host-side CPU",
        both(agent, setup, &|a, b| a.host_side() / b.host_side()),
        "≤ 0.2",
    );
    line(
        "agent host-side CPU / OpenSSH host-side CPU",
        both(agent, openssh, &|a, b| a.host_side() / b.host_side()),
        "(info)",
    );
    t
}

/// Busy CPUs (0..=nproc) over one idle second: what else runs on the machine.
fn background_load() -> f64 {
    let before = machine_busy_seconds();
    std::thread::sleep(Duration::from_secs(1));
    machine_busy_seconds() - before
}

fn shell(cmd: &str) -> String {
    Command::new("/bin/sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--reap") {
        std::process::exit(reap_main(&args[2..]));
    }
    require_root();
    ensure_test_users();
    let o = parse_options();
    fs::create_dir_all(&o.work).expect("work dir");
    let fleet = Fleet::new(&o);
    if let Ok(mut own) = OWN_PIDS.lock() {
        own.extend(fleet.sshd.pids());
    }
    start_orphan_reaper();
    let n = fleet.hosts();
    let script = fs::read_to_string(&fleet.script_file).expect("script");
    println!(
        "fleet_bench: {n} sshd addresses ({} sshd processes) on port {}, concurrency {}, {} runs, ansible: {}",
        fleet.sshd.pids().len(),
        fleet.sshd.port(),
        o.concurrency,
        o.runs,
        if o.ansible_bin.is_some() { "yes" } else { "skipped" }
    );

    let background_before = background_load();
    if o.warmup {
        let _ = fleet.run_agent(usize::MAX);
        let _ = fleet.run_openssh();
    }
    let mut rows = vec![
        Row {
            name: "luumen-agent",
            samples: Vec::new(),
        },
        Row {
            name: "OpenSSH xargs",
            samples: Vec::new(),
        },
    ];
    if o.ansible_bin.is_some() {
        rows.push(Row {
            name: "ansible -m setup",
            samples: Vec::new(),
        });
        rows.push(Row {
            name: "ansible -m raw",
            samples: Vec::new(),
        });
    }
    let report = |run: usize, row: &mut Row, s: Sample| {
        println!(
            "run {run}: {:<17} wall {:6.2}s  cpu {:6.2}s  hosts(sshd) {:6.2}s  machine {:6.2}s  ok {}",
            row.name, s.wall, s.cpu, s.hosts_cpu, s.machine, s.ok_hosts
        );
        row.samples.push(s);
    };
    for run in 0..o.runs {
        // Side by side, interleaved, so a noisy machine affects every tool alike.
        report(run, &mut rows[0], fleet.run_agent(run));
        report(run, &mut rows[1], fleet.run_openssh());
        if o.ansible_bin.is_some() {
            report(run, &mut rows[2], fleet.run_ansible("setup", None, run));
            report(
                run,
                &mut rows[3],
                fleet.run_ansible("raw", Some(&script), run),
            );
        }
    }
    let background_after = background_load();
    println!("background load (busy CPUs while idle): before {background_before:.2}, after {background_after:.2}");

    let results_table = table(&rows, n);
    let by_name: BTreeMap<&str, &Row> = rows.iter().map(|r| (r.name, r)).collect();
    let ratio_table = ratios(&by_name);
    println!("\n{results_table}\n{ratio_table}");

    if let Some(path) = &o.results {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Fleet benchmark: real OpenSSH fleet (issue 7, part 1)\n"
        );
        let _ = writeln!(md, "- date: {}", shell("date -u '+%Y-%m-%d %H:%M:%S UTC'"));
        let _ = writeln!(
            md,
            "- machine: {} CPUs ({}), kernel {}, {} MiB RAM",
            shell("nproc"),
            shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'"),
            shell("uname -r"),
            shell("awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo")
        );
        let _ = writeln!(md, "- agent: `{}` (git {})", agent_bin().display(), shell("git rev-parse --short HEAD 2>/dev/null; git status --porcelain 2>/dev/null | grep -q . && echo '(dirty)'").replace('\n', " "));
        let _ = writeln!(md, "- OpenSSH: {}", shell("ssh -V 2>&1"));
        if let Some(bin) = &o.ansible_bin {
            let _ = writeln!(
                md,
                "- Ansible: {}",
                shell(&format!(
                    "{}/ansible --version 2>/dev/null | head -1",
                    bin.display()
                ))
            );
        }
        let _ = writeln!(
            md,
            "- fleet: {n} hosts = {n} loopback addresses served by {} sshd processes (the test harness, user `{}`, ed25519 key, sudo), concurrency C = {}, {} run(s) per tool (figures are medians; per-host latencies pooled over all runs){}",
            fleet.sshd.pids().len(),
            fleet.user,
            o.concurrency,
            o.runs,
            if o.warmup { ", after one unmeasured warm-up run of the agent and OpenSSH" } else { "" }
        );
        let _ = writeln!(
            md,
            "- background load (busy CPUs over 1 idle second, before / after the bench): {background_before:.2} / {background_after:.2}{}",
            if background_before.max(background_after) > 0.2 {
                " — the machine was NOT idle: wall times and machine CPU are inflated; collector and sshd CPU are per process tree and hold"
            } else {
                ""
            }
        );
        let _ = writeln!(md, "- driver: `{}`\n", o.command_line);
        let _ = writeln!(
            md,
            "## Results\n\n{results_table}\n## Ratios against the issue's targets\n\n{ratio_table}"
        );
        let _ = writeln!(md, "## Commands (paths from this run)\n");
        let mut agent_line = format!("{} once", agent_bin().display());
        if let Some(c) = &fleet.agent_config {
            agent_line.push_str(&format!(" --config {}", c.display()));
        }
        agent_line.push_str(&format!(
            " --inventory {} --output FILE",
            fleet.agent_inventory.display()
        ));
        let _ = writeln!(md, "```sh\n# 1. agent\n{agent_line}\n# 2. OpenSSH\n{}\n# 3. Ansible (ANSIBLE_CONFIG={})\nansible fleet -o -i {} -f {} -m setup\n{}\n```\n",
            fleet.openssh_command_line(),
            fleet.ansible_cfg.display(),
            fleet.ansible_inventory.display(),
            o.concurrency,
            fleet.ansible_raw_command_line());
        let _ = writeln!(
            md,
            "ansible.cfg:\n\n```ini\n{}```\n",
            fs::read_to_string(&fleet.ansible_cfg).unwrap_or_default()
        );
        let _ = writeln!(md, "See `bench/README.md` for what each column means.");
        if let Some(dir) = path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        fs::write(path, md).expect("write results");
        println!("wrote {}", path.display());
    }
}
