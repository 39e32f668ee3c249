//! The simulator against the real OpenSSH client: key accepted, other keys refused, the script's
//! own marker in every frame, exit status 0; the empty port answers nothing.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MARKER: &str = "@@LUUMEN-0123456789abcdef0123456789abcdef@@";

struct Simulator {
    child: Child,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // Stopped by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
}

/// A loopback address of its own for this process: 127.<pid-derived>.250.1.
fn address() -> Ipv4Addr {
    Ipv4Addr::new(127, (1 + std::process::id() % 254) as u8, 250, 1)
}

fn free_port(addr: Ipv4Addr) -> u16 {
    TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

fn script() -> Vec<u8> {
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../properties/src/plan/linux.sh"),
    )
    .expect("linux.sh");
    let mut s = format!("M='{MARKER}'\nLUUMEN_SUDO=1\n").into_bytes();
    s.extend_from_slice(&body);
    s
}

fn ssh(key: &Path, addr: Ipv4Addr, port: u16, command: &str, stdin: &[u8]) -> Output {
    let mut child = Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-p",
        ])
        .arg(port.to_string())
        .arg(format!("luumen@{addr}"))
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write script");
    child.wait_with_output().expect("ssh output")
}

#[test]
fn answers_the_script_with_its_marker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host_key = dir.path().join("host");
    let client_key = dir.path().join("client");
    let other_key = dir.path().join("other");
    for k in [&host_key, &client_key, &other_key] {
        keygen(k);
    }
    let addr = address();
    let (port, empty_port) = (free_port(addr), free_port(addr));
    let addresses = dir.path().join("addresses");
    std::fs::write(&addresses, format!("{addr}\n")).expect("addresses");
    let mut child = Command::new(env!("CARGO_BIN_EXE_luumen-simfleet"))
        .arg("--addresses")
        .arg(&addresses)
        .args(["--port", &port.to_string()])
        .args(["--empty-port", &empty_port.to_string()])
        .arg("--host-key")
        .arg(&host_key)
        .arg("--authorized-key")
        .arg(PathBuf::from(format!("{}.pub", client_key.display())))
        .arg("--script")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../properties/src/plan/linux.sh"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("simulator starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect((addr, empty_port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("simulator exited: {status}");
        }
        assert!(Instant::now() < deadline, "simulator not listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _sim = Simulator { child };

    let out = ssh(&client_key, addr, port, "/bin/sh -s", &script());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ends = stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{MARKER} END ")))
        .count();
    assert!(ends >= 8, "END frames on stdout: {ends}");
    assert!(stdout.starts_with(&format!("{MARKER} BEGIN os_release\n")));
    assert!(stderr.contains(&format!("{MARKER} END uname ")));

    let refused = ssh(&other_key, addr, port, "/bin/sh -s", &script());
    assert_eq!(
        refused.status.code(),
        Some(255),
        "another key must be refused"
    );

    let other_command = ssh(&client_key, addr, port, "uname", b"");
    assert_eq!(other_command.status.code(), Some(127));

    let no_marker = ssh(&client_key, addr, port, "/bin/sh -s", b"echo hi\n");
    assert_eq!(no_marker.status.code(), Some(2));

    let empty = ssh(&client_key, addr, empty_port, "/bin/sh -s", &script());
    assert_eq!(empty.status.code(), Some(0));
    assert!(empty.stdout.is_empty());
}
