//! Smoke tests of the integration harness itself: real sshd, test users,
//! sudo rules, cleanup, and the HTTP receiver. Must run as root.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use luumen_integration::sshd::{process_alive, MAX_ADDRESSES_PER_SSHD};
use luumen_integration::{require_root, run_command, Receiver, SshdConfig, SshdHarness};

const SSH_TIMEOUT: Duration = Duration::from_secs(30);

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn harness_sshd_users_sudo_and_cleanup() {
    require_root();
    let started = Instant::now();
    let mut harness = SshdHarness::start(SshdConfig::with_addresses(2)).expect("start sshd");
    eprintln!(
        "harness start (2 addresses) took {:?}, port {}",
        started.elapsed(),
        harness.port()
    );
    assert_eq!(harness.addresses().len(), 2);
    assert_eq!(harness.pids().len(), 1);
    let pids = harness.pids();
    let dir = harness.dir().to_path_buf();

    let script = "id -un; sudo -n /usr/sbin/dmidecode -t 1 >/dev/null 2>&1; echo rc=$?; \
                  sudo -n -l /usr/sbin/dmidecode -t 1 >/dev/null 2>&1; echo allowed=$?; \
                  sudo -n cat /var/spool/cron/crontabs/root >/dev/null 2>&1; echo cron=$?";
    for addr in harness.addresses().to_vec() {
        for user in [harness.key_user(), harness.sudo_user()] {
            let out = run_command(harness.ssh_command(user, addr, script), SSH_TIMEOUT);
            assert!(
                out.status.success(),
                "ssh {}@{addr}: {}\n{}",
                user.name,
                text(&out),
                harness.log()
            );
            let o = stdout(&out);
            assert!(o.starts_with(&format!("{}\n", user.name)), "{}", text(&out));
            // dmidecode may fail on machines without DMI tables: only the
            // permission (sudo -l) is asserted.
            assert!(o.contains("rc="), "{}", text(&out));
            assert!(o.contains("allowed=0"), "{}", text(&out));
            assert!(o.contains("cron=0"), "{}", text(&out));
        }
    }

    // No sudo for luumen-nosudo.
    let addr = harness.address();
    let out = run_command(
        harness.ssh_command(
            harness.nosudo_user(),
            addr,
            "id -un; sudo -n -l /usr/sbin/dmidecode >/dev/null 2>&1; echo allowed=$?; \
             sudo -n cat /var/spool/cron/crontabs/root; echo cron=$?",
        ),
        SSH_TIMEOUT,
    );
    assert!(out.status.success(), "{}", text(&out));
    let o = stdout(&out);
    assert!(o.starts_with("luumen-nosudo\n"), "{}", text(&out));
    assert!(o.contains("allowed=1"), "{}", text(&out));
    assert!(o.contains("cron=1"), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password is required"),
        "{}",
        text(&out)
    );

    // Sudo users may not run anything else.
    let out = run_command(
        harness.ssh_command(harness.key_user(), addr, "sudo -n cat /etc/shadow"),
        SSH_TIMEOUT,
    );
    assert!(!out.status.success(), "{}", text(&out));

    // Password auth for luumen-pass (via SSH_ASKPASS; sshpass if present too).
    let pass = harness.pass_user().clone();
    let out = run_command(
        harness.password_ssh_command(&pass, addr, "id -un"),
        SSH_TIMEOUT,
    );
    assert!(out.status.success(), "{}\n{}", text(&out), harness.log());
    assert_eq!(stdout(&out), "luumen-pass\n");
    if Command::new("sshpass").arg("-V").output().is_ok() {
        let mut cmd = Command::new("sshpass");
        cmd.arg("-p")
            .arg(pass.password.as_deref().expect("pass user has a password"))
            .args([
                "ssh",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "PubkeyAuthentication=no",
                "-p",
            ])
            .arg(harness.port().to_string())
            .arg(format!("luumen-pass@{addr}"))
            .arg("id -un")
            .stdin(Stdio::null());
        let out = run_command(cmd, SSH_TIMEOUT);
        assert_eq!(stdout(&out), "luumen-pass\n", "{}", text(&out));
    } else {
        eprintln!("sshpass not installed: sshpass check skipped");
    }
    // The harness key is not authorized for the password user.
    let out = run_command(harness.ssh_command(&pass, addr, "id -un"), SSH_TIMEOUT);
    assert!(!out.status.success(), "{}", text(&out));

    // The encrypted key decrypts with the documented passphrase and is
    // authorized for the key users.
    let (enc, passphrase) = harness.encrypted_key();
    let out = Command::new("ssh-keygen")
        .args(["-y", "-P", passphrase, "-f"])
        .arg(enc)
        .output()
        .expect("run ssh-keygen -y");
    assert!(out.status.success(), "{}", text(&out));
    let public = stdout(&out);
    let key_blob = public.split_whitespace().nth(1).expect("public key blob");
    let authorized = std::fs::read_to_string(dir.join("authorized_keys").join("luumen-key"))
        .expect("read authorized keys");
    assert!(authorized.contains(key_blob));
    let out = Command::new("ssh-keygen")
        .args(["-y", "-P", "", "-f"])
        .arg(enc)
        .output()
        .expect("run ssh-keygen -y");
    assert!(
        !out.status.success(),
        "encrypted key opened without passphrase"
    );

    // known_hosts is usable with strict host key checking.
    let mut cmd = Command::new("ssh");
    cmd.arg("-i")
        .arg(harness.client_key())
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
        ])
        .arg(format!(
            "UserKnownHostsFile={}",
            harness.known_hosts().display()
        ))
        .arg("-p")
        .arg(harness.port().to_string())
        .arg(format!("luumen-key@{}", harness.addresses()[1]))
        .arg("true")
        .stdin(Stdio::null());
    let out = run_command(cmd, SSH_TIMEOUT);
    assert!(out.status.success(), "{}", text(&out));

    let log = harness.log();
    assert!(log.contains("Accepted publickey for luumen-key"), "{log}");
    assert!(log.contains("Accepted password for luumen-pass"), "{log}");

    // A session still running at drop is killed with the server.
    let mut session = harness
        .ssh_command(harness.key_user(), addr, "sleep 120")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn long ssh session");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !harness.log().contains("Starting session") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }

    let stop_started = Instant::now();
    harness.stop();
    drop(harness);
    eprintln!("harness stop took {:?}", stop_started.elapsed());
    for pid in pids {
        assert!(
            !process_alive(pid),
            "sshd pid {pid} still running after drop"
        );
    }
    assert!(
        !Path::new(&dir).exists(),
        "temp dir {} left behind",
        dir.display()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if session.try_wait().expect("poll ssh session").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ssh session survived the harness"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let leftover = Command::new("sh")
        .args([
            "-c",
            "ps -eo pid,args | grep -F \"$1\" | grep -v grep || true",
            "sh",
        ])
        .arg(dir.display().to_string())
        .output()
        .expect("ps");
    assert!(
        leftover.stdout.is_empty(),
        "processes referencing the harness dir left: {}",
        stdout(&leftover)
    );
}

#[test]
fn harness_many_addresses_use_several_sshd() {
    require_root();
    let started = Instant::now();
    let harness = SshdHarness::start(SshdConfig::with_addresses(MAX_ADDRESSES_PER_SSHD + 4))
        .expect("start sshd on 20 addresses");
    eprintln!("harness start (20 addresses) took {:?}", started.elapsed());
    assert_eq!(harness.pids().len(), 2);
    let pids = harness.pids();
    for addr in [
        harness.addresses()[0],
        harness.addresses()[MAX_ADDRESSES_PER_SSHD + 3],
    ] {
        let out = run_command(
            harness.ssh_command(harness.key_user(), addr, "id -un"),
            SSH_TIMEOUT,
        );
        assert_eq!(stdout(&out), "luumen-key\n", "{}", text(&out));
    }
    drop(harness);
    for pid in pids {
        assert!(
            !process_alive(pid),
            "sshd pid {pid} still running after drop"
        );
    }
}

#[test]
fn harness_extra_config_overrides_defaults() {
    require_root();
    let harness = SshdHarness::start(SshdConfig::default().extra("PasswordAuthentication no"))
        .expect("start sshd");
    let pass = harness.pass_user().clone();
    let out = run_command(
        harness.password_ssh_command(&pass, harness.address(), "id -un"),
        SSH_TIMEOUT,
    );
    assert!(
        !out.status.success(),
        "password auth should be off: {}",
        text(&out)
    );
}

#[test]
fn harness_receiver_with_plain_tcp() {
    let receiver = Receiver::start(200);
    receiver.serve_config(r#"{"targets":[]}"#);
    let mut stream = TcpStream::connect(receiver.addr()).expect("connect receiver");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
        .write_all(
            b"GET /config HTTP/1.1\r\nHost: x\r\napi-key: secret\r\nConnection: close\r\n\r\n",
        )
        .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"targets":[]}"#), "{response}");

    let body = br#"{"hosts":1}"#;
    let mut stream = TcpStream::connect(receiver.addr()).expect("connect receiver");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    receiver.set_status(503);
    write!(
        stream,
        "POST /inventory HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("send head");
    stream.write_all(body).expect("send body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");

    let requests = receiver.wait_for(2, Duration::from_secs(5));
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path(), "/config");
    assert_eq!(requests[0].header("api-key"), Some("secret"));
    assert_eq!(requests[1].method, "POST");
    assert_eq!(requests[1].body, body);
    assert_eq!(requests[1].status, 503);
}

#[test]
fn harness_reports_sshd_failure_with_log_tail() {
    require_root();
    let err = SshdHarness::start(SshdConfig::default().extra("NoSuchOption yes"))
        .expect_err("sshd must refuse an unknown option");
    let message = err.to_string();
    assert!(message.contains("log tail"), "{message}");
    assert!(message.contains("NoSuchOption"), "{message}");
}
