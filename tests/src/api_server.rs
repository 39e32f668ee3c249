//! The real `luumen-api` binary on loopback with a fresh data dir, stopped by PID on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The `luumen-api` binary: `LUUMEN_API_BIN`, else `<target>/debug/luumen-api`.
pub fn api_bin() -> PathBuf {
    if let Ok(path) = std::env::var("LUUMEN_API_BIN") {
        return PathBuf::from(path);
    }
    let path = crate::agent::target_dir().join("debug/luumen-api");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p luumen-api` first (make test does)",
        path.display()
    );
    path
}

/// A running `luumen-api serve`.
pub struct ApiServer {
    child: Child,
    /// `http://127.0.0.1:PORT/api/v1`.
    pub base_url: String,
    /// The admin key printed by `init`.
    pub admin_key: String,
    /// The agent key printed by `init`.
    pub agent_key: String,
}

impl ApiServer {
    /// Runs `init` on `data_dir` (which must not exist yet) and serves it.
    pub fn init_and_serve(data_dir: &Path) -> ApiServer {
        let out = Command::new(api_bin())
            .arg("init")
            .arg("--data-dir")
            .arg(data_dir)
            .output()
            .expect("luumen-api init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let key = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("init printed no {name}: {stdout}"))
                .to_owned()
        };
        let (admin_key, agent_key) = (key("admin_key"), key("agent_key"));
        let mut server = ApiServer::serve(data_dir);
        server.admin_key = admin_key;
        server.agent_key = agent_key;
        server
    }

    /// Serves an existing data dir (keys left empty).
    pub fn serve(data_dir: &Path) -> ApiServer {
        ApiServer::serve_at(data_dir, "127.0.0.1:0")
    }

    /// Serves an existing data dir on `listen` (e.g. the address an earlier server had, to
    /// bring an API back after an outage). Keys left empty.
    pub fn serve_at(data_dir: &Path, listen: &str) -> ApiServer {
        let mut child = Command::new(api_bin())
            .args(["serve", "--listen", listen, "--workers", "2", "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start luumen-api serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let base_url = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => {
                    let _ = child.kill();
                    panic!("luumen-api exited before listening");
                }
            };
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["message"] == "listening" {
                break event["base_url"].as_str().expect("base_url").to_owned();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ApiServer {
            child,
            base_url,
            admin_key: String::new(),
            agent_key: String::new(),
        }
    }
}

impl ApiServer {
    /// The `host:port` it listens on.
    pub fn listen_address(&self) -> String {
        self.base_url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
