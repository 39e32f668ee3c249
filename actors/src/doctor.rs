//! `luumen-agent doctor`: checks, per host and in parallel, everything a collection needs — TCP,
//! host key (or TLS certificate), authentication, and each privileged read (sudo on Linux; CIM,
//! registry and service reads on Windows) — and says how to fix what is missing.
//! Nothing is collected and nothing is changed (no host key is pinned).

use futures_util::future::join_all;
use luumen_properties::plan::{Plan, PlanOptions};
use luumen_properties::privileges::{self, PrivilegeState};
use luumen_properties::windows::probe as windows_probe;
use luumen_protocols::ErrorKind as TransportKind;
use serde::Serialize;

use crate::host::resolve_vault;
use crate::protocol::{ExecFailure, Execute, ProtocolActor};
use crate::spec::{HostSpec, Target};
use crate::vault::VaultClient;

/// One line of the doctor's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The host's id, or `-` for agent-wide checks.
    pub host: String,
    /// What was checked, e.g. `tcp`, `host key`, `sudo dmidecode`.
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// How to fix it, when it failed.
    pub remedy: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(host: &str, check: &str, detail: impl Into<String>) -> Check {
        Check {
            host: host.to_owned(),
            check: check.to_owned(),
            ok: true,
            detail: detail.into(),
            remedy: None,
        }
    }

    /// A failed check with its remedy.
    pub fn fail(
        host: &str,
        check: &str,
        detail: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Check {
        Check {
            host: host.to_owned(),
            check: check.to_owned(),
            ok: false,
            detail: detail.into(),
            remedy: Some(remedy.into()),
        }
    }
}

/// Checks every host in parallel (bounded by the protocol pool) and returns the checks in host
/// order. Credentials that reference Vault are resolved through `vault` first, as a collection
/// does; without a client (no `vault` block, or one the agent could not set up) such a host
/// gets a failed `credentials` check and no connection: the literal `vault:…` reference is
/// never sent as a password (a failed login counts toward Windows' account lockout).
pub async fn diagnose(
    specs: Vec<HostSpec>,
    protocol: actix::Addr<ProtocolActor>,
    vault: Option<VaultClient>,
) -> Vec<Check> {
    let runs = specs.into_iter().map(|spec| {
        let protocol = protocol.clone();
        let vault = vault.clone();
        async move { diagnose_host(spec, protocol, vault.as_ref()).await }
    });
    join_all(runs).await.into_iter().flatten().collect()
}

async fn diagnose_host(
    mut spec: HostSpec,
    protocol: actix::Addr<ProtocolActor>,
    vault: Option<&VaultClient>,
) -> Vec<Check> {
    let id = spec.host.id.clone();
    if spec.vault_credentials.is_some() {
        match resolve_vault(&spec, vault).await {
            Ok(target) => spec.target = target,
            Err(message) => {
                return vec![Check::fail(
                    &id,
                    "credentials",
                    message,
                    "the credentials reference Vault: configure the vault block of config.yaml (see the vault check), give the agent a token that may read the secret, and check that the secret and field exist",
                )];
            }
        }
    }
    let mut checks = Vec::new();
    let (address, username) = match &mut spec.target {
        Target::Unsupported(reason) => {
            return vec![Check::fail(
                &id,
                "protocol",
                reason.clone(),
                "remove the host or collect it with a supported protocol",
            )];
        }
        Target::Local => ("localhost".to_owned(), None),
        Target::Winrm(_) => return diagnose_windows(spec, protocol).await,
        Target::Ssh(target) => {
            target.host_key.pin_new_keys = false;
            (
                format!("{}:{}", target.address, target.port),
                Some(target.username.clone()),
            )
        }
    };
    let execute = Execute {
        host_id: id.clone(),
        target: spec.target.clone(),
        command: Plan::linux(&PlanOptions { use_sudo: true }, 0).command(),
        stdin: privileges::PROBE_SCRIPT.as_bytes().to_vec(),
        limits: spec.limits,
    };
    let Some(output) = run_probe(&protocol, execute, &mut checks, |failure, checks| {
        transport_checks(&id, &address, username.as_deref(), failure, checks)
    })
    .await
    else {
        return checks;
    };
    if let Some(user) = &username {
        checks.push(Check::pass(&id, "tcp", address.clone()));
        checks.push(Check::pass(
            &id,
            "host key",
            "known or accepted under the host key policy",
        ));
        checks.push(Check::pass(
            &id,
            "authentication",
            format!("logged in as {user}"),
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    match privileges::parse(&stdout) {
        Err(error) => checks.push(Check::fail(
            &id,
            "probe",
            format!("unexpected probe output: {error}"),
            "the login shell must be able to run /bin/sh -s (a POSIX shell)",
        )),
        Ok(probe) => {
            for privilege in &probe.privileges {
                let name = format!("sudo {}", privilege.name);
                let check = match privilege.state {
                    PrivilegeState::Root => Check::pass(&id, &name, "logged in as root"),
                    PrivilegeState::Allowed => {
                        Check::pass(&id, &name, format!("sudo -n {}", privilege.command))
                    }
                    PrivilegeState::Absent => {
                        Check::pass(&id, &name, "not installed on the host: not needed")
                    }
                    PrivilegeState::Denied if !spec.use_sudo => Check::fail(
                        &id,
                        &name,
                        "sudo is turned off for this host (credentials.sudo: false)",
                        "set credentials.sudo: true, or accept that this property is not collected",
                    ),
                    PrivilegeState::Denied if !probe.sudo_installed => Check::fail(
                        &id,
                        &name,
                        "sudo is not installed",
                        "install sudo and grant: ".to_owned()
                            + &privilege.sudoers_line(&probe.user),
                    ),
                    PrivilegeState::Denied => Check::fail(
                        &id,
                        &name,
                        format!("sudo -n refuses {}", privilege.command),
                        format!(
                            "add to /etc/sudoers.d/luumen: {}",
                            privilege.sudoers_line(&probe.user)
                        ),
                    ),
                };
                checks.push(check);
            }
        }
    }
    checks
}

/// A Windows host: TCP, TLS, authentication through one WinRM shell running the probe, then
/// each kind of read the catalogue needs.
async fn diagnose_windows(spec: HostSpec, protocol: actix::Addr<ProtocolActor>) -> Vec<Check> {
    let id = spec.host.id.clone();
    let Target::Winrm(target) = &spec.target else {
        return Vec::new();
    };
    let address = format!("{}:{}", target.address, target.port);
    let https = target.scheme == luumen_protocols::winrm::Scheme::Https;
    let tls_detail = match (&target.tls.cert_sha256, &target.tls.ca_file) {
        (Some(_), _) => "certificate matches the pinned SHA-256".to_owned(),
        (None, Some(ca)) => format!("certificate signed by {}", ca.display()),
        (None, None) => "certificate trusted by the system roots".to_owned(),
    };
    let auth = match target.auth {
        luumen_protocols::winrm::WinrmAuth::Ntlm => "ntlm",
        luumen_protocols::winrm::WinrmAuth::Basic => "basic",
    };
    let username = target.username.clone();
    let execute = Execute {
        host_id: id.clone(),
        target: spec.target.clone(),
        command: "powershell",
        stdin: windows_probe::PROBE_SCRIPT.as_bytes().to_vec(),
        limits: spec.limits,
    };
    let mut checks = Vec::new();
    let Some(output) = run_probe(&protocol, execute, &mut checks, |failure, checks| {
        windows_transport_checks(&id, &address, &username, https, failure, checks)
    })
    .await
    else {
        return checks;
    };
    checks.push(Check::pass(&id, "tcp", address));
    if https {
        checks.push(Check::pass(&id, "tls", tls_detail));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let probe = match windows_probe::parse(&stdout) {
        Ok(probe) => probe,
        Err(error) => {
            checks.push(Check::pass(
                &id,
                "authentication",
                format!("logged in as {username} ({auth})"),
            ));
            let stderr =
                luumen_properties::windows::stderr_text(&String::from_utf8_lossy(&output.stderr));
            checks.push(Check::fail(
                &id,
                "powershell",
                format!("unexpected probe output ({error}); stderr: {}", stderr.trim()),
                "the account must be allowed to run powershell.exe in a WinRM shell (PowerShell 3.0 or later)",
            ));
            return checks;
        }
    };
    let admin = if probe.admin {
        ", local administrator"
    } else {
        ""
    };
    checks.push(Check::pass(
        &id,
        "authentication",
        format!("logged in as {} ({auth}{admin})", probe.user),
    ));
    checks.push(Check::pass(&id, "powershell", probe.powershell.clone()));
    for (read, error) in &probe.reads {
        let name = format!("read {read}");
        checks.push(match (read, error) {
            (_, None) => Check::pass(&id, &name, "allowed"),
            (&"cim", Some(error)) => Check::fail(&id, &name, error.trim(), format!("grant {} Remote Enable and Enable Account on the WMI namespace root\\cimv2 (wmimgmt.msc), or collect with an administrator account", probe.user)),
            (&"registry", Some(error)) => Check::fail(&id, &name, error.trim(), format!("grant {} read access to HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall", probe.user)),
            (_, Some(error)) => Check::fail(&id, &name, error.trim(), format!("grant {} the right to query the service control manager (sc.exe sdset scmanager), or use an administrator account", probe.user)),
        });
    }
    checks
}

fn windows_transport_checks(
    id: &str,
    address: &str,
    user: &str,
    https: bool,
    failure: &ExecFailure,
    checks: &mut Vec<Check>,
) {
    let Some(error) = transport_error(id, failure, checks) else {
        return;
    };
    let message = error.kind.to_string();
    let reached = |checks: &mut Vec<Check>| {
        checks.push(Check::pass(id, "tcp", address.to_owned()));
        if https {
            checks.push(Check::pass(id, "tls", "certificate accepted"));
        }
    };
    match &error.kind {
        TransportKind::Unreachable { .. } | TransportKind::Timeout { stage: "connect", .. } => checks.push(Check::fail(
            id,
            "tcp",
            message,
            format!("check the address and port (5985 http, 5986 https), that WinRM listens (winrm enumerate winrm/config/listener) and that a firewall lets the patch server reach {address}"),
        )),
        TransportKind::Certificate { .. } => {
            checks.push(Check::pass(id, "tcp", address.to_owned()));
            checks.push(Check::fail(
                id,
                "tls",
                message,
                "verify the host's certificate out of band, then set winrm.cert_sha256 to its SHA-256 or winrm.ca_file to the CA that signed it",
            ));
        }
        // The handshake failed or hung for another reason than the certificate (protocol
        // version, cipher suites, not TLS at all): TCP was reached, TLS was not.
        TransportKind::WinRm { stage: "tls handshake", .. }
        | TransportKind::Timeout { stage: "tls handshake", .. } => {
            checks.push(Check::pass(id, "tcp", address.to_owned()));
            checks.push(Check::fail(
                id,
                "tls",
                message,
                "check that the port is WinRM's HTTPS listener (5986; 5985 is plain HTTP: use scheme http) and that the host offers TLS 1.2 or 1.3 (winrm enumerate winrm/config/listener; the SCHANNEL settings)",
            ));
        }
        TransportKind::AuthFailed { .. } => {
            reached(checks);
            checks.push(Check::fail(
                id,
                "authentication",
                message,
                format!("check the password of {user}; domain accounts as DOMAIN\\user, local ones as the bare name; a non-administrator must be in Remote Management Users"),
            ));
        }
        TransportKind::Settings { .. } => checks.push(Check::fail(
            id,
            "settings",
            message,
            "fix the host's winrm block in the host list",
        )),
        _ => {
            reached(checks);
            checks.push(Check::fail(
                id,
                "winrm",
                message,
                "check the WinRM service on the host (winrm quickconfig) and its event log for the reason",
            ));
        }
    }
}

/// Runs a probe; when it produced no output, the checks say why (`on_failure` turns a
/// transport failure into checks) and `None` is returned.
async fn run_probe(
    protocol: &actix::Addr<ProtocolActor>,
    execute: Execute,
    checks: &mut Vec<Check>,
    on_failure: impl FnOnce(&ExecFailure, &mut Vec<Check>),
) -> Option<luumen_protocols::ExecOutput> {
    let id = execute.host_id.clone();
    match protocol.send(execute).await {
        Err(error) => {
            checks.push(Check::fail(
                &id,
                "agent",
                error.to_string(),
                "report this as a bug",
            ));
            None
        }
        Ok(Err(failure)) => {
            on_failure(&failure, checks);
            None
        }
        Ok(Ok(output)) => Some(output),
    }
}

/// The transport's error, or — for a failure of the agent itself — a failed `agent` check.
fn transport_error<'a>(
    id: &str,
    failure: &'a ExecFailure,
    checks: &mut Vec<Check>,
) -> Option<&'a luumen_protocols::Error> {
    match failure {
        ExecFailure::Transport(error) => Some(error),
        other => {
            checks.push(Check::fail(
                id,
                "agent",
                other.to_string(),
                "report this as a bug",
            ));
            None
        }
    }
}

fn transport_checks(
    id: &str,
    address: &str,
    username: Option<&str>,
    failure: &ExecFailure,
    checks: &mut Vec<Check>,
) {
    let Some(error) = transport_error(id, failure, checks) else {
        return;
    };
    let message = error.kind.to_string();
    let user = username.unwrap_or("-");
    match &error.kind {
        TransportKind::Unreachable { .. } => checks.push(Check::fail(
            id,
            "tcp",
            message,
            format!("check the address and port, DNS, and that a firewall lets the patch server reach {address}"),
        )),
        TransportKind::Timeout { stage: "connect", .. } => checks.push(Check::fail(
            id,
            "tcp",
            message,
            format!("nothing answered at {address}: check routing and firewalls"),
        )),
        TransportKind::HostKeyMismatch { file, .. } => {
            checks.push(Check::pass(id, "tcp", address.to_owned()));
            checks.push(Check::fail(
                id,
                "host key",
                message,
                format!("if the host was rebuilt on purpose, remove its entry: ssh-keygen -R '{}' -f {}", known_hosts_name(address), file.display()),
            ));
        }
        TransportKind::HostKeyUnknown { files, .. } => {
            checks.push(Check::pass(id, "tcp", address.to_owned()));
            checks.push(Check::fail(
                id,
                "host key",
                message,
                format!("verify the key out of band, then add it to {}", files.first().map(|f| f.display().to_string()).unwrap_or_else(|| "known_hosts_files".to_owned())),
            ));
        }
        TransportKind::AuthFailed { .. } => {
            checks.push(Check::pass(id, "tcp", address.to_owned()));
            checks.push(Check::pass(id, "host key", "known or accepted under the host key policy"));
            checks.push(Check::fail(
                id,
                "authentication",
                message,
                format!("check the credentials of {user}: the password, or that the public key is in ~{user}/.ssh/authorized_keys"),
            ));
        }
        TransportKind::KeyFile { path, .. } => checks.push(Check::fail(
            id,
            "authentication",
            message,
            format!("make {} readable by the agent's user (mode 0600), with the right passphrase", path.display()),
        )),
        _ => checks.push(Check::fail(id, "ssh", message, "check sshd's log on the host for the reason")),
    }
}

/// `host` or `[host]:port` as in known_hosts, from `host:port`.
fn known_hosts_name(address: &str) -> String {
    match address.rsplit_once(':') {
        Some((host, "22")) => host.to_owned(),
        Some((host, port)) => format!("[{host}]:{port}"),
        None => address.to_owned(),
    }
}
