//! Locating and running the `luumen-agent` binary.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of the `luumen-agent` binary.
///
/// Order: env `LUUMEN_AGENT_BIN`; else `$CARGO_TARGET_DIR/debug/luumen-agent`
/// (a relative `CARGO_TARGET_DIR` is taken relative to the workspace); else
/// `<workspace>/target/debug/luumen-agent`, where the workspace is the parent
/// of this crate's manifest dir.
///
/// # Panics
/// If the binary does not exist, telling to run `cargo build -p luumen-agent`.
pub fn agent_bin() -> PathBuf {
    let path = if let Some(bin) = std::env::var_os("LUUMEN_AGENT_BIN") {
        PathBuf::from(bin)
    } else {
        target_dir().join("debug").join("luumen-agent")
    };
    if !path.is_file() {
        panic!(
            "luumen-agent binary not found at {}: run `cargo build -p luumen-agent` first \
             (or set LUUMEN_AGENT_BIN)",
            path.display()
        );
    }
    path
}

/// The workspace root (parent of this crate's manifest dir).
pub fn workspace_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// Cargo's target dir: `CARGO_TARGET_DIR` (relative to the workspace if
/// relative) or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_dir().join(dir)
            }
        }
        None => workspace_dir().join("target"),
    }
}

/// Runs [`agent_bin`] with `args` (stdin closed), capturing its output; kills
/// it when it runs longer than `timeout`.
///
/// After a timeout the returned status is the killed process' status (not
/// success) and `stderr` ends with a `luumen-integration: killed after ...`
/// line.
pub fn run_agent(args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(agent_bin());
    cmd.args(args).stdin(Stdio::null());
    run_command(cmd, timeout)
}

/// Runs any command like [`run_agent`] does: stdout/stderr captured (stdin
/// as configured on `cmd`), killed after `timeout`.
///
/// Output that grandchildren still write after the child exited is collected
/// for at most 5 more seconds.
///
/// # Panics
/// If the command cannot be spawned.
pub fn run_command(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {:?}: {e}", cmd.get_program()));
    let mut stdout = child.stdout.take().expect("stdout was piped");
    let mut stderr = child.stderr.take().expect("stderr was piped");
    let out_reader = spawn_reader(move |buf| stdout.read_to_end(buf));
    let err_reader = spawn_reader(move |buf| stderr.read_to_end(buf));

    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child
                    .wait()
                    .unwrap_or_else(|e| panic!("waiting for killed {:?}: {e}", cmd.get_program()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for {:?}: {e}", cmd.get_program()),
        }
    };
    // Grandchildren may hold the pipes open: do not wait for them forever.
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    let stdout = out_reader
        .recv_timeout(drain_deadline.saturating_duration_since(Instant::now()))
        .unwrap_or_default();
    let mut stderr = err_reader
        .recv_timeout(drain_deadline.saturating_duration_since(Instant::now()))
        .unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(
            format!("\nluumen-integration: killed after {timeout:?} (timeout)\n").as_bytes(),
        );
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Reads a pipe to its end in a thread; the bytes arrive on the channel.
fn spawn_reader(
    read: impl FnOnce(&mut Vec<u8>) -> std::io::Result<usize> + Send + 'static,
) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = read(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_command_captures_and_times_out() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = run_command(cmd, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");

        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("30");
        let started = Instant::now();
        let out = run_command(cmd, Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("killed after"));
    }

    #[test]
    fn target_dir_is_under_workspace_by_default() {
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            assert_eq!(target_dir(), workspace_dir().join("target"));
        }
    }
}
