//! Local transport: runs the command on the agent's own machine with the semantics of an SSH
//! exec — `/bin/sh -c COMMAND`, the script on standard input — so the same collection plan works
//! for the patch server itself, `make run`, and tests.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::ssh::{read_capped, ReadError};
use crate::{Deadline, Error, ErrorKind, Exec, ExecOutput, Limits};

/// How often a running child is polled for its exit.
const POLL: Duration = Duration::from_millis(5);

/// Runs `exec.command` through `/bin/sh -c`, feeding `exec.stdin`, within `limits.total`.
pub fn run(exec: &Exec<'_>, limits: &Limits) -> Result<ExecOutput, Error> {
    let host = exec.host;
    let fail = |kind| Error::with_command(host, exec.command, kind);
    let deadline = Deadline::after(limits.total);
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(exec.command)
        // A clean environment, as a fresh SSH session has: none of the agent's own variables
        // (API key, VAULT_TOKEN, NOTIFY_SOCKET, …) reaches the commands.
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills the script's children too.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(ErrorKind::Local(e)))?;

    let stdin = child.stdin.take();
    let script = exec.stdin.to_vec();
    let writer = thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // A command that exits without reading all of its input closes the pipe: not an error.
            let _ = stdin.write_all(&script);
        }
    });
    let limit = limits.max_output_bytes;
    let reader = |stream: Option<Box<dyn std::io::Read + Send>>, name: &'static str| {
        thread::spawn(move || match stream {
            Some(mut stream) => read_capped(&mut stream, limit, name),
            None => Ok(Vec::new()),
        })
    };
    let stdout = reader(child.stdout.take().map(|s| Box::new(s) as _), "stdout");
    let stderr = reader(child.stderr.take().map(|s| Box::new(s) as _), "stderr");

    let status = wait(&mut child, deadline, limits.total).map_err(fail)?;
    let _ = writer.join();
    let collect = |handle: thread::JoinHandle<Result<Vec<u8>, ReadError>>| match handle.join() {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(ReadError::TooLarge(kind))) => Err(fail(kind)),
        Ok(Err(ReadError::Io(e))) => Err(fail(ErrorKind::Local(e))),
        Err(_) => Err(fail(ErrorKind::Local(std::io::Error::other(
            "output reader panicked",
        )))),
    };
    Ok(ExecOutput {
        stdout: collect(stdout)?,
        stderr: collect(stderr)?,
        exit_status: status.code(),
    })
}

fn wait(
    child: &mut Child,
    deadline: Deadline,
    total: Duration,
) -> Result<std::process::ExitStatus, ErrorKind> {
    loop {
        if let Some(status) = child.try_wait().map_err(ErrorKind::Local)? {
            return Ok(status);
        }
        if deadline.remaining().is_none() {
            kill_group(child);
            let _ = child.wait();
            return Err(ErrorKind::Timeout {
                stage: "command",
                seconds: total.as_secs_f64(),
            });
        }
        thread::sleep(POLL);
    }
}

fn kill_group(child: &mut Child) {
    match i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group we created at spawn.
        Ok(pid) => unsafe {
            libc::kill(-pid, libc::SIGKILL);
        },
        Err(_) => {
            let _ = child.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(Duration::from_secs(1), Duration::from_secs(10))
    }

    #[test]
    fn runs_the_script_from_stdin_and_keeps_streams_apart() {
        let exec = Exec {
            host: "local",
            command: "/bin/sh -s",
            stdin: b"echo out; echo err >&2; exit 3\n",
        };
        let output = run(&exec, &limits()).expect("local exec runs");
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err\n");
        assert_eq!(output.exit_status, Some(3));
    }

    #[test]
    fn the_agent_environment_does_not_reach_the_commands() {
        let exec = Exec {
            host: "local",
            command: "/bin/sh -s",
            stdin: b"env\n",
        };
        let output = run(&exec, &limits()).expect("local exec runs");
        let env = String::from_utf8_lossy(&output.stdout);
        let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(
            names
                .iter()
                .all(|n| ["PATH", "LC_ALL", "PWD", "SHLVL", "_"].contains(n)),
            "{env}"
        );
    }

    #[test]
    fn a_command_that_hangs_times_out_and_is_killed() {
        let exec = Exec {
            host: "local",
            command: "/bin/sh -s",
            stdin: b"sleep 30\n",
        };
        let limits = Limits::new(Duration::from_secs(1), Duration::from_millis(200));
        let started = std::time::Instant::now();
        let error = run(&exec, &limits).expect_err("must time out");
        assert!(matches!(error.kind, ErrorKind::Timeout { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(error.host, "local");
        assert_eq!(error.command.as_deref(), Some("/bin/sh -s"));
    }

    #[test]
    fn output_beyond_the_cap_is_an_error() {
        let exec = Exec {
            host: "local",
            command: "/bin/sh -s",
            stdin: b"head -c 5000 /dev/zero\n",
        };
        let mut limits = limits();
        limits.max_output_bytes = 1000;
        let error = run(&exec, &limits).expect_err("must refuse");
        assert!(
            matches!(
                error.kind,
                ErrorKind::OutputTooLarge {
                    stream: "stdout",
                    ..
                }
            ),
            "{error}"
        );
    }
}
