//! A real OpenBao (Vault-compatible) dev server on loopback, started per test and stopped by PID.

use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `bao server -dev`.
pub struct OpenBao {
    child: Child,
    bin: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The dev root token.
    pub root_token: String,
}

/// The `bao` binary: `LUUMEN_BAO`, else what `tests/setup/install-openbao.sh` installs/prints.
pub fn bao_bin() -> PathBuf {
    if let Ok(path) = std::env::var("LUUMEN_BAO") {
        return PathBuf::from(path);
    }
    let script = crate::agent::workspace_dir().join("tests/setup/install-openbao.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run install-openbao.sh");
    assert!(
        out.status.success(),
        "install-openbao.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().expect("bao path line").trim())
}

impl OpenBao {
    /// Starts a dev server on a free loopback port and waits until it answers.
    pub fn start() -> OpenBao {
        let bin = bao_bin();
        let port = crate::net::free_port_on_all(&[Ipv4Addr::LOCALHOST]).expect("free port");
        let root_token = format!("root-{}-{port}", std::process::id());
        let child = Command::new(&bin)
            .args(["server", "-dev"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-dev-root-token-id={root_token}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bao server -dev");
        let bao = OpenBao {
            child,
            bin,
            address: format!("http://127.0.0.1:{port}"),
            root_token,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "bao did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The dev server mounts KV v2 at secret/ once unsealed; wait until a write works.
        while !bao.try_put("luumen-ready", &[("ok", "1")]) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "bao never became ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        bao
    }

    fn try_put(&self, path: &str, fields: &[(&str, &str)]) -> bool {
        let mut command = Command::new(&self.bin);
        command
            .args(["kv", "put", "-mount=secret", path])
            .env("BAO_ADDR", &self.address)
            .env("BAO_TOKEN", &self.root_token)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in fields {
            command.arg(format!("{key}={value}"));
        }
        command.status().is_ok_and(|s| s.success())
    }

    /// Writes a KV v2 secret at `secret/<path>`.
    pub fn put(&self, path: &str, fields: &[(&str, &str)]) {
        assert!(self.try_put(path, fields), "bao kv put {path} failed");
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
