//! Service life under systemd: readiness, reload and stop notifications, the watchdog, and the
//! unit file written by `install-service`. On Windows the same notifications go to the Service
//! Control Manager instead (`windows_service.rs`, compiled only for Windows targets).

use std::path::Path;
use std::time::Duration;

#[cfg(unix)]
use sd_notify::NotifyState;

/// Tells systemd (when `NOTIFY_SOCKET` is set) about a state change; a no-op otherwise.
#[cfg(unix)]
fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(message = "Cannot notify systemd.", %error);
    }
}

/// Start-up finished: the schedule runs.
pub fn ready() {
    #[cfg(unix)]
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("collecting on schedule"),
    ]);
    #[cfg(windows)]
    crate::windows_service::running();
}

/// A reload (SIGHUP) begins; `Type=notify-reload` expects `MONOTONIC_USEC` with it. The SCM
/// has no reloading state: the service stays Running.
pub fn reloading() {
    #[cfg(unix)]
    {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => notify(&[NotifyState::Reloading, now]),
            Err(_) => notify(&[NotifyState::Reloading]),
        }
    }
}

/// Shutdown begins.
pub fn stopping() {
    #[cfg(unix)]
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    #[cfg(windows)]
    crate::windows_service::stop_pending();
}

/// The scheduling loop is alive.
pub fn watchdog() {
    #[cfg(unix)]
    notify(&[NotifyState::Watchdog]);
}

/// Serves `GET /metrics` (Prometheus text) on `address` from a background thread for the life
/// of the process.
pub fn serve_metrics(address: &str) -> anyhow::Result<()> {
    let server = tiny_http::Server::http(address)
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {address}: {e}"))?;
    tracing::info!(message = "Serving metrics.", address, path = "/metrics");
    std::thread::Builder::new()
        .name("metrics".to_owned())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = if request.url() == "/metrics" {
                    let header = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"text/plain; version=0.0.4"[..],
                    )
                    .expect("static header is valid");
                    tiny_http::Response::from_string(luumen_actors::metrics::metrics().render())
                        .with_header(header)
                } else {
                    tiny_http::Response::from_string("not found\n").with_status_code(404)
                };
                let _ = request.respond(response);
            }
        })?;
    Ok(())
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when systemd set one.
#[cfg(unix)]
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// No watchdog outside systemd.
#[cfg(not(unix))]
pub fn watchdog_period() -> Option<Duration> {
    None
}

/// The unit file for `binary` running `run --config config`. `notify_reload` selects
/// `Type=notify-reload` (systemd 253 and later) over `Type=notify` with `ExecReload`.
pub fn unit_file(
    binary: &Path,
    config: &Path,
    state_dir: &Path,
    log_dir: Option<&Path>,
    notify_reload: bool,
) -> String {
    let service_type = if notify_reload {
        "Type=notify-reload\n".to_owned()
    } else {
        "Type=notify\nExecReload=/bin/kill -HUP $MAINPID\n".to_owned()
    };
    let mut writable = vec![state_dir.display().to_string()];
    if let Some(log_dir) = log_dir {
        writable.push(log_dir.display().to_string());
    }
    format!(
        "[Unit]\n\
         Description=luumen-agent agentless inventory collector\n\
         Documentation=https://docs.luumen.ai/\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         {service_type}\
         ExecStart={binary} run --config {config}\n\
         Restart=on-failure\n\
         RestartSec=5s\n\
         WatchdogSec=120s\n\
         TimeoutStopSec=60s\n\
         NotifyAccess=main\n\
         # Hardening: the agent reads its config and keys, writes only its state and logs.\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=read-only\n\
         PrivateTmp=yes\n\
         PrivateDevices=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectControlGroups=yes\n\
         ProtectClock=yes\n\
         ProtectHostname=yes\n\
         RestrictSUIDSGID=yes\n\
         RestrictRealtime=yes\n\
         RestrictNamespaces=yes\n\
         LockPersonality=yes\n\
         MemoryDenyWriteExecute=yes\n\
         SystemCallArchitectures=native\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
         CapabilityBoundingSet=\n\
         UMask=0077\n\
         ReadWritePaths={writable}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        binary = binary.display(),
        config = config.display(),
        writable = writable.join(" "),
    )
}

/// The running systemd's version, from `systemctl --version` (None when unknown).
pub fn systemd_version() -> Option<u32> {
    let out = std::process::Command::new("systemctl")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1)?.parse().ok()
}
