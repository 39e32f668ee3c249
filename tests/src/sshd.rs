//! Real OpenSSH `sshd` servers for integration tests.
//!
//! [`SshdHarness::start`] runs `/usr/sbin/sshd -D -f <config> -E <log>` on one
//! or more private loopback addresses and one common port, everything in a
//! fresh temp dir: host key, client keys, authorized keys, pid and log files.
//! One `sshd` listens on at most 16 addresses, so one process is started per
//! 16 addresses. Dropping the harness stops every `sshd` (and every
//! per-connection child) by pid and removes the temp dir.

use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::net::{free_loopback_addresses, free_port_on_all};
use crate::users::{self, TestUser, ALL_USERS};

/// Path of the OpenSSH server binary.
pub const SSHD_BIN: &str = "/usr/sbin/sshd";

/// Most `ListenAddress` lines one `sshd` accepts (OpenSSH `MAX_LISTEN_SOCKS`).
pub const MAX_ADDRESSES_PER_SSHD: usize = 16;

/// Passphrase of the encrypted client key ([`SshdHarness::encrypted_key`]).
pub const KEY_PASSPHRASE: &str = "luumen-test-passphrase";

/// How many times a start is retried when the chosen port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// Lines of log shown in error messages.
const LOG_TAIL_LINES: usize = 40;

/// Counter making temp dir names unique within the process.
static HARNESS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// What [`SshdHarness::start`] should start.
#[derive(Debug, Clone)]
pub struct SshdConfig {
    /// Loopback addresses to listen on; when empty, one fresh address from
    /// [`free_loopback_addresses`] is used.
    pub addresses: Vec<Ipv4Addr>,
    /// Extra `sshd_config` lines. They are written BEFORE the harness
    /// defaults, and since sshd takes the first value of an option, they
    /// override them (e.g. `"PasswordAuthentication no"`). `Match` blocks are
    /// not allowed here (they would swallow the defaults).
    pub extra_config: Vec<String>,
    /// How long to wait for every address to accept TCP connections.
    pub startup_timeout: Duration,
}

impl Default for SshdConfig {
    fn default() -> Self {
        SshdConfig {
            addresses: Vec::new(),
            extra_config: Vec::new(),
            startup_timeout: Duration::from_secs(15),
        }
    }
}

impl SshdConfig {
    /// Config listening on `n` fresh loopback addresses.
    pub fn with_addresses(n: usize) -> Self {
        SshdConfig {
            addresses: free_loopback_addresses(n),
            ..SshdConfig::default()
        }
    }

    /// Config listening on exactly the given addresses.
    pub fn on(addresses: Vec<Ipv4Addr>) -> Self {
        SshdConfig {
            addresses,
            ..SshdConfig::default()
        }
    }

    /// Adds one extra `sshd_config` line (see [`SshdConfig::extra_config`]).
    pub fn extra(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }
}

/// One running `sshd` process.
#[derive(Debug)]
struct Instance {
    child: Child,
    log: PathBuf,
    addresses: Vec<Ipv4Addr>,
}

/// Running `sshd` processes plus the keys and users to log in with.
///
/// Dropping it stops everything (see [`SshdHarness::stop`]).
#[derive(Debug)]
pub struct SshdHarness {
    dir: PathBuf,
    port: u16,
    addresses: Vec<Ipv4Addr>,
    instances: Vec<Instance>,
    client_key: PathBuf,
    encrypted_key: PathBuf,
    host_public_key: String,
    known_hosts: PathBuf,
    users: Vec<TestUser>,
    logs: Vec<PathBuf>,
    stopped: bool,
}

/// Why one start attempt failed.
enum StartError {
    /// The port was taken on some address between probing and binding.
    PortTaken(String),
    /// Anything else.
    Fatal(io::Error),
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Fatal(e)
    }
}

impl SshdHarness {
    /// Starts sshd on `config.addresses` (one process per 16 addresses, one
    /// common port), after making sure the test users exist.
    ///
    /// Returns an error (with the tail of the sshd log when sshd itself
    /// failed) if a key cannot be generated or sshd does not come up within
    /// `config.startup_timeout`.
    ///
    /// # Panics
    /// If not root, or if `tests/setup/test-users.sh` fails.
    pub fn start(config: SshdConfig) -> io::Result<SshdHarness> {
        crate::require_root();
        users::ensure_test_users();
        for line in &config.extra_config {
            if line.trim_start().to_ascii_lowercase().starts_with("match") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "SshdConfig::extra_config must not contain Match blocks",
                ));
            }
        }
        let addresses = if config.addresses.is_empty() {
            free_loopback_addresses(1)
        } else {
            config.addresses.clone()
        };

        let dir = make_temp_dir()?;
        let mut harness = SshdHarness {
            dir: dir.clone(),
            port: 0,
            addresses: addresses.clone(),
            instances: Vec::new(),
            client_key: dir.join("client_ed25519"),
            encrypted_key: dir.join("client_ed25519_encrypted"),
            host_public_key: String::new(),
            known_hosts: dir.join("known_hosts"),
            users: Vec::new(),
            logs: Vec::new(),
            stopped: false,
        };
        // From here on, dropping `harness` cleans up on any error.
        harness.prepare_files()?;

        fs::create_dir_all("/run/sshd")?;
        fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755))?;

        let mut last_collision = String::new();
        for attempt in 0..PORT_ATTEMPTS {
            let port = free_port_on_all(&addresses)?;
            harness.port = port;
            match harness.spawn_all(attempt, &config) {
                Ok(()) => {
                    harness.write_known_hosts()?;
                    return Ok(harness);
                }
                Err(StartError::PortTaken(msg)) => {
                    harness.stop_instances();
                    last_collision = msg;
                }
                Err(StartError::Fatal(e)) => {
                    harness.stop_instances();
                    return Err(e);
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "sshd: port taken on every one of {PORT_ATTEMPTS} attempts; last: {last_collision}"
            ),
        ))
    }

    /// The common port all addresses listen on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The loopback addresses sshd listens on.
    pub fn addresses(&self) -> &[Ipv4Addr] {
        &self.addresses
    }

    /// The first address (convenience for single-address tests).
    pub fn address(&self) -> Ipv4Addr {
        self.addresses[0]
    }

    /// Contents of all sshd log files (one header line per file), or an
    /// empty string once stopped and removed.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for path in &self.logs {
            let text = fs::read_to_string(path).unwrap_or_default();
            out.push_str(&format!("==> {} <==\n", path.display()));
            out.push_str(&text);
        }
        out
    }

    /// Pids of the listening sshd processes (one per 16 addresses).
    pub fn pids(&self) -> Vec<u32> {
        self.instances.iter().map(|i| i.child.id()).collect()
    }

    /// The harness' temp dir (keys, configs, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unencrypted ed25519 client private key, authorized for the key users.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// Passphrase-protected ed25519 client private key (passphrase
    /// [`KEY_PASSPHRASE`]), authorized for the key users.
    pub fn encrypted_key(&self) -> (&Path, &str) {
        (&self.encrypted_key, KEY_PASSPHRASE)
    }

    /// The server's host public key line (`ssh-ed25519 AAAA... comment`).
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// A known_hosts file with the host key for `[addr]:port` of every address.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// All test users, in the order of [`users::ALL_USERS`].
    pub fn users(&self) -> &[TestUser] {
        &self.users
    }

    /// The test user called `name`.
    ///
    /// # Panics
    /// If there is no such test user.
    pub fn user(&self, name: &str) -> &TestUser {
        self.users
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("SshdHarness::user: no test user {name:?}"))
    }

    /// `luumen-key`: key auth, sudo.
    pub fn key_user(&self) -> &TestUser {
        self.user(users::KEY_USER)
    }

    /// `luumen-sudo`: key auth, sudo.
    pub fn sudo_user(&self) -> &TestUser {
        self.user(users::SUDO_USER)
    }

    /// `luumen-pass`: password auth, sudo.
    pub fn pass_user(&self) -> &TestUser {
        self.user(users::PASS_USER)
    }

    /// `luumen-nosudo`: key auth, no sudo.
    pub fn nosudo_user(&self) -> &TestUser {
        self.user(users::NOSUDO_USER)
    }

    /// A system `ssh` client command logging in as `user` (with the harness
    /// client key, no host key checking, batch mode) to `addr` on
    /// [`SshdHarness::port`] and running `remote_command`.
    pub fn ssh_command(&self, user: &TestUser, addr: Ipv4Addr, remote_command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(&user.private_key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=10",
                "-p",
            ])
            .arg(self.port.to_string())
            .arg(format!("{}@{}", user.name, addr))
            .arg(remote_command)
            .stdin(Stdio::null());
        cmd
    }

    /// A system `ssh` client command logging in as `user` with its password
    /// (password auth only, public keys disabled) to `addr` and running
    /// `remote_command`. The password is supplied through `SSH_ASKPASS` with
    /// `SSH_ASKPASS_REQUIRE=force` (OpenSSH >= 8.4), so neither a tty nor
    /// `sshpass` is needed.
    ///
    /// # Panics
    /// If `user` has no password or the askpass script cannot be written.
    pub fn password_ssh_command(
        &self,
        user: &TestUser,
        addr: Ipv4Addr,
        remote_command: &str,
    ) -> Command {
        let password = user
            .password
            .as_deref()
            .unwrap_or_else(|| panic!("password_ssh_command: {} has no password", user.name));
        let askpass = self.dir.join(format!("askpass-{}", user.name));
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' '{}'\n",
            password.replace('\'', "'\\''")
        );
        fs::write(&askpass, script)
            .and_then(|()| fs::set_permissions(&askpass, fs::Permissions::from_mode(0o700)))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", askpass.display()));
        let mut cmd = Command::new("ssh");
        cmd.env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "NumberOfPasswordPrompts=1",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=10",
                "-p",
            ])
            .arg(self.port.to_string())
            .arg(format!("{}@{}", user.name, addr))
            .arg(remote_command)
            .stdin(Stdio::null());
        cmd
    }

    /// Stops every sshd and its per-connection children by pid (SIGTERM, up
    /// to 5 s, then SIGKILL) and removes the temp dir. Idempotent; also done
    /// on drop.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.stop_instances();
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// Generates keys and authorized_keys files.
    fn prepare_files(&mut self) -> io::Result<()> {
        let host_key = self.dir.join("ssh_host_ed25519_key");
        keygen(&host_key, "", "luumen-test-host")?;
        self.host_public_key = fs::read_to_string(host_key.with_extension("pub"))?
            .trim()
            .to_string();
        keygen(&self.client_key, "", "luumen-test-client")?;
        keygen(
            &self.encrypted_key,
            KEY_PASSPHRASE,
            "luumen-test-client-encrypted",
        )?;

        let plain_pub = fs::read_to_string(pub_path(&self.client_key))?;
        let enc_pub = fs::read_to_string(pub_path(&self.encrypted_key))?;
        let auth_dir = self.dir.join("authorized_keys");
        fs::create_dir(&auth_dir)?;
        fs::set_permissions(&auth_dir, fs::Permissions::from_mode(0o755))?;

        self.users = ALL_USERS
            .iter()
            .map(|name| TestUser::for_name(name, &self.client_key))
            .collect();
        for user in &self.users {
            let path = auth_dir.join(&user.name);
            let content = if user.key_authorized {
                format!("{}\n{}\n", plain_pub.trim(), enc_pub.trim())
            } else {
                String::new()
            };
            fs::write(&path, content)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        }
        Ok(())
    }

    /// Starts one sshd per 16 addresses on `self.port` and waits for them.
    fn spawn_all(&mut self, attempt: usize, config: &SshdConfig) -> Result<(), StartError> {
        let chunks: Vec<Vec<Ipv4Addr>> = self
            .addresses
            .chunks(MAX_ADDRESSES_PER_SSHD)
            .map(|c| c.to_vec())
            .collect();
        for (index, chunk) in chunks.into_iter().enumerate() {
            let name = format!("sshd-{attempt}-{index}");
            let config_path = self.dir.join(format!("{name}.config"));
            let log = self.dir.join(format!("{name}.log"));
            fs::write(&config_path, self.render_config(&name, &chunk, config))?;
            let log_file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)?;
            let child = Command::new(SSHD_BIN)
                .arg("-D")
                .arg("-f")
                .arg(&config_path)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .map_err(|e| io::Error::new(e.kind(), format!("cannot spawn {SSHD_BIN}: {e}")))?;
            self.logs.push(log.clone());
            self.instances.push(Instance {
                child,
                log,
                addresses: chunk,
            });
        }
        let deadline = Instant::now() + config.startup_timeout;
        for i in 0..self.instances.len() {
            self.wait_ready(i, deadline)?;
        }
        Ok(())
    }

    /// Waits until every address of instance `i` accepts TCP.
    fn wait_ready(&mut self, i: usize, deadline: Instant) -> Result<(), StartError> {
        let port = self.port;
        let instance = &mut self.instances[i];
        let mut pending = instance.addresses.clone();
        loop {
            let log = fs::read_to_string(&instance.log).unwrap_or_default();
            if let Some(line) = log
                .lines()
                .find(|l| l.contains("Bind to port") && l.contains("failed"))
            {
                return Err(StartError::PortTaken(line.to_string()));
            }
            if let Some(status) = instance.child.try_wait()? {
                return Err(StartError::Fatal(io::Error::other(format!(
                    "sshd (pid {}) exited with {status} before listening on {:?} port {port}; log tail:\n{}",
                    instance.child.id(),
                    instance.addresses,
                    tail(&log, LOG_TAIL_LINES)
                ))));
            }
            pending.retain(|addr| {
                let sock = SocketAddr::from((*addr, port));
                TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_err()
            });
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError::Fatal(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "sshd (pid {}) not accepting TCP on {pending:?} port {port} in time; log tail:\n{}",
                        instance.child.id(),
                        tail(&log, LOG_TAIL_LINES)
                    ),
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sshd_config of one instance.
    fn render_config(&self, name: &str, addresses: &[Ipv4Addr], config: &SshdConfig) -> String {
        let dir = self.dir.display();
        let mut out = String::from("# generated by luumen-integration\n");
        for line in &config.extra_config {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&format!("Port {}\n", self.port));
        out.push_str("AddressFamily inet\n");
        for addr in addresses {
            out.push_str(&format!("ListenAddress {addr}\n"));
        }
        out.push_str(&format!(
            "HostKey {dir}/ssh_host_ed25519_key\n\
             PidFile {dir}/{name}.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys/%u\n\
             StrictModes no\n\
             UsePAM no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication yes\n\
             PermitEmptyPasswords no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin no\n\
             LogLevel VERBOSE\n\
             MaxStartups 1000:30:1000\n\
             MaxSessions 1000\n\
             MaxAuthTries 20\n\
             LoginGraceTime 60\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             X11Forwarding no\n\
             Subsystem sftp internal-sftp\n"
        ));
        if openssh_at_least(9, 8) {
            out.push_str("PerSourcePenalties no\n");
        }
        out
    }

    /// Writes the known_hosts file for all addresses.
    fn write_known_hosts(&self) -> io::Result<()> {
        let mut file = fs::File::create(&self.known_hosts)?;
        for addr in &self.addresses {
            writeln!(file, "[{addr}]:{} {}", self.port, self.host_public_key)?;
        }
        Ok(())
    }

    /// Stops all running instances (keeps the temp dir and logs).
    fn stop_instances(&mut self) {
        let instances = std::mem::take(&mut self.instances);
        for mut instance in instances {
            stop_process_tree(&mut instance.child);
        }
    }
}

impl Drop for SshdHarness {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `ssh-keygen` for an ed25519 key at `path`.
fn keygen(path: &Path, passphrase: &str, comment: &str) -> io::Result<()> {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run ssh-keygen: {e}")))?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "ssh-keygen for {} failed ({}): {}",
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(())
}

/// `key` + `.pub` (ssh-keygen's naming, also for names containing dots).
fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Creates a fresh, world-traversable (0755) temp dir: sshd reads
/// authorized keys as the logging-in user.
fn make_temp_dir() -> io::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = HARNESS_COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir =
        std::env::temp_dir().join(format!("luumen-sshd-{}-{n}-{nanos:09}", std::process::id()));
    fs::create_dir(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// Last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether the installed OpenSSH is at least `major.minor` (from `ssh -V`).
fn openssh_at_least(major: u32, minor: u32) -> bool {
    static VERSION: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    let version = VERSION.get_or_init(|| {
        let output = Command::new("ssh").arg("-V").output().ok()?;
        let text = String::from_utf8_lossy(&output.stderr).to_string();
        let rest = text.split("OpenSSH_").nth(1)?;
        let mut parts = rest.split(|c: char| !c.is_ascii_digit());
        let ma = parts.next()?.parse().ok()?;
        let mi = parts.next()?.parse().ok()?;
        Some((ma, mi))
    });
    matches!(version, Some(v) if *v >= (major, minor))
}

/// Whether `pid` is still a live (non-zombie) process.
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_state(&stat) != Some('Z'),
        Err(_) => false,
    }
}

/// The state letter of a `/proc/<pid>/stat` line.
fn stat_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// The parent pid from a `/proc/<pid>/stat` line.
fn stat_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// All live descendants of `root` (children, grandchildren, ...).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(ppid) = stat_ppid(&stat) {
                    parent_of.push((pid, ppid));
                }
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for (pid, ppid) in &parent_of {
            if *ppid == parent && !found.contains(pid) {
                found.push(*pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

/// Sends `signal` to `pid` (errors such as "no such process" are ignored).
fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a positive pid only signals that process.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// SIGTERMs `child` and all its descendants, waits up to 5 s, SIGKILLs what
/// is left, and reaps `child`.
fn stop_process_tree(child: &mut Child) {
    let pid = child.id();
    if let Ok(Some(_)) = child.try_wait() {
        // Already exited; its children (if any) were re-parented and can no
        // longer be found by parentage.
        return;
    }
    let mut pids = descendants(pid);
    pids.push(pid);
    for p in &pids {
        signal(*p, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let child_done = matches!(child.try_wait(), Ok(Some(_)));
        let others_done = pids
            .iter()
            .filter(|p| **p != pid)
            .all(|p| !process_alive(*p));
        if child_done && others_done {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in &pids {
        if process_alive(*p) {
            signal(*p, libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let stat = "1234 (ss h) d) S 42 1234 1234 0 -1";
        assert_eq!(stat_state(stat), Some('S'));
        assert_eq!(stat_ppid(stat), Some(42));
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
