//! What the collection plan needs `sudo -n` for, and the doctor's probe of it.
//!
//! [`PROBE_SCRIPT`] runs on a host (on stdin of `/bin/sh -s`, like the plan) and asks sudo —
//! without running anything privileged — whether each privileged read is allowed without a
//! password. [`parse`] turns its output into one [`Privilege`] per read, with the sudoers line
//! that would grant a missing one.

use serde::Serialize;

use crate::ParseError;

/// The probe, sent on stdin of [`crate::plan::Plan::command`]'s `/bin/sh -s`.
pub const PROBE_SCRIPT: &str = include_str!("probe.sh");

/// Whether one privileged read is possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Privilege {
    /// `dmidecode`, `getenforce`, `tuned-adm` or `root-crontab`.
    pub name: String,
    /// The result.
    pub state: PrivilegeState,
    /// The full command line sudo was asked about.
    pub command: String,
}

/// The state of one privileged read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivilegeState {
    /// The user is root: no sudo needed.
    Root,
    /// `sudo -n` allows it.
    Allowed,
    /// `sudo -n` refuses it (or sudo is missing).
    Denied,
    /// The tool is not installed on the host, so it is not needed.
    Absent,
}

/// The probe's findings for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// The login user on the host.
    pub user: String,
    /// Whether `sudo` is installed.
    pub sudo_installed: bool,
    /// One entry per privileged read.
    pub privileges: Vec<Privilege>,
}

impl Privilege {
    /// The sudoers line that grants this read to `user`, when it is denied.
    pub fn sudoers_line(&self, user: &str) -> String {
        format!("{user} ALL=(root) NOPASSWD: {}", self.command)
    }
}

/// Parses the probe's stdout.
pub fn parse(stdout: &str) -> Result<Probe, ParseError> {
    let mut user = None;
    let mut root = false;
    let mut sudo_installed = false;
    let mut privileges = Vec::new();
    for (index, line) in stdout.lines().enumerate() {
        let bad = |reason: &str| ParseError::Line {
            line: index + 1,
            reason: reason.to_owned(),
        };
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "user" => user = Some(rest.to_owned()),
            "root" => root = rest == "yes",
            "sudo" => sudo_installed = rest == "yes",
            "check" => {
                let mut fields = rest.splitn(3, ' ');
                let (Some(name), Some(state), Some(command)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    return Err(bad("check line needs name, state and command"));
                };
                let state = match state {
                    _ if root => PrivilegeState::Root,
                    "allowed" => PrivilegeState::Allowed,
                    "denied" => PrivilegeState::Denied,
                    "absent" => PrivilegeState::Absent,
                    _ => return Err(bad("unknown state")),
                };
                privileges.push(Privilege {
                    name: name.to_owned(),
                    state,
                    command: command.to_owned(),
                });
            }
            _ => return Err(bad("unknown line")),
        }
    }
    let user = user.ok_or(ParseError::Empty)?;
    if privileges.is_empty() {
        return Err(ParseError::Invalid("no check lines".to_owned()));
    }
    Ok(Probe {
        user,
        sudo_installed,
        privileges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_probe_of_a_user_without_sudo_rights() {
        // Captured from the probe run as luumen-nosudo on Debian 12 (this machine).
        let probe = parse(
            "user luumen-nosudo\nsudo yes\ncheck dmidecode denied /usr/sbin/dmidecode\n\
             check getenforce absent getenforce\ncheck tuned-adm absent tuned-adm\n\
             check root-crontab denied /usr/bin/cat /var/spool/cron/crontabs/root\n",
        )
        .expect("parses");
        assert_eq!(probe.user, "luumen-nosudo");
        let states: Vec<_> = probe.privileges.iter().map(|p| p.state).collect();
        assert_eq!(
            states,
            [
                PrivilegeState::Denied,
                PrivilegeState::Absent,
                PrivilegeState::Absent,
                PrivilegeState::Denied
            ]
        );
        assert_eq!(
            probe.privileges[3].sudoers_line("svc"),
            "svc ALL=(root) NOPASSWD: /usr/bin/cat /var/spool/cron/crontabs/root"
        );
    }

    #[test]
    fn root_needs_no_sudo() {
        let probe =
            parse("user root\nroot yes\nsudo no\ncheck dmidecode denied /usr/sbin/dmidecode\n")
                .expect("parses");
        assert_eq!(probe.privileges[0].state, PrivilegeState::Root);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("").is_err());
        assert!(parse("user x\n").is_err());
        assert!(parse("user x\ncheck dmidecode maybe /x\n").is_err());
        assert!(parse("hello world\n").is_err());
    }
}
