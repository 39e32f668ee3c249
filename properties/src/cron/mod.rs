//! `cron`: root's crontab and the system crontabs (`/etc/crontab`, `/etc/cron.d/*`).

use serde::{Deserialize, Serialize};

use crate::util::file_blocks;
use crate::ParseError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronEntry {
    /// The file the entry comes from.
    pub source: String,
    /// The user the job runs as.
    pub user: Option<String>,
    /// `*/5 * * * *` (fields joined by one space) or `@reboot`.
    pub schedule: String,
    pub command: String,
}

/// Which kind of crontab a block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A user's crontab (no user field); entries get this user.
    User,
    /// `/etc/crontab` and `/etc/cron.d/*`: a user field after the schedule.
    System,
}

/// Parse `==> PATH <==`-headed crontab blocks. `user` is used for
/// [`Kind::User`] blocks. Lines that are not jobs (comments, blanks,
/// `VAR=value`) are skipped; malformed job lines too.
pub fn parse(text: &str, kind: Kind, user: Option<&str>) -> Result<Vec<CronEntry>, ParseError> {
    let blocks = file_blocks(text);
    if !blocks.iter().any(|(p, _)| p.is_some()) {
        return Err(if text.trim().is_empty() {
            ParseError::Empty
        } else {
            ParseError::Invalid("no ==> FILE <== header".into())
        });
    }
    let mut out = Vec::new();
    for (path, content) in blocks {
        let Some(path) = path else { continue };
        for line in content.lines() {
            if let Some(e) = parse_line(line, kind) {
                out.push(CronEntry {
                    source: path.to_owned(),
                    user: match kind {
                        Kind::System => e.user.map(str::to_owned),
                        Kind::User => user.map(str::to_owned),
                    },
                    schedule: e.schedule,
                    command: e.command.to_owned(),
                });
            }
        }
    }
    Ok(out)
}

struct Line<'a> {
    schedule: String,
    user: Option<&'a str>,
    command: &'a str,
}

/// Split off the next whitespace-separated token: (token, rest).
fn token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

fn parse_line(line: &str, kind: Kind) -> Option<Line<'_>> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return None;
    }
    // cronie: a leading '-' on a job line only disables its syslog logging
    // (SUSE's stock /etc/crontab uses it).
    let l = l.strip_prefix('-').unwrap_or(l);
    let (first, mut rest) = token(l)?;
    let schedule = if first.starts_with('@') {
        first.to_owned()
    } else {
        let c = first.as_bytes()[0];
        if !(c.is_ascii_digit() || c == b'*') {
            return None; // VAR=value or garbage
        }
        let mut s = String::with_capacity(16);
        s.push_str(first);
        for _ in 0..4 {
            let (t, r) = token(rest)?;
            s.push(' ');
            s.push_str(t);
            rest = r;
        }
        s
    };
    let user = if kind == Kind::System {
        let (u, r) = token(rest)?;
        rest = r;
        Some(u)
    } else {
        None
    };
    let command = rest.trim();
    if command.is_empty() {
        return None;
    }
    Some(Line {
        schedule,
        user,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{capture, garbage};

    #[test]
    fn system_crontab_debian_12() {
        let e = parse(
            capture(include_str!("testdata/system-debian-12.txt")),
            Kind::System,
            None,
        )
        .unwrap();
        assert_eq!(e.len(), 6, "{e:#?}");
        assert_eq!(e[0].source, "/etc/crontab");
        assert_eq!(e[0].user.as_deref(), Some("root"));
        assert_eq!(e[0].schedule, "17 * * * *");
        assert_eq!(e[0].command, "cd / && run-parts --report /etc/cron.hourly");
        let scrub = e
            .iter()
            .find(|x| x.source == "/etc/cron.d/e2scrub_all")
            .unwrap();
        assert_eq!(scrub.schedule, "30 3 * * 0");
        assert_eq!(scrub.user.as_deref(), Some("root"));
        assert!(scrub
            .command
            .starts_with("test -e /run/systemd/system || SERVICE_MODE=1"));
    }

    #[test]
    fn root_crontab_debian_12() {
        let e = parse(
            capture(include_str!("testdata/root-debian-12.txt")),
            Kind::User,
            Some("root"),
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].source, "/var/spool/cron/crontabs/root");
        assert_eq!(e[0].schedule, "17 3 * * *");
        assert_eq!(e[1].schedule, "*/30 * * * *");
        assert_eq!(e[1].command, "/bin/echo luumen >/dev/null # luumen-test");
        assert!(e.iter().all(|x| x.user.as_deref() == Some("root")));
    }

    #[test]
    fn system_crontab_sles_12() {
        let e = parse(
            capture(include_str!("testdata/system-sles-12.txt")),
            Kind::System,
            None,
        )
        .unwrap();
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!(e[0].source, "/etc/crontab");
        assert_eq!(e[0].user.as_deref(), Some("root"));
        assert_eq!(e[0].schedule, "*/15 * * * *");
        assert_eq!(
            e[0].command,
            "test -x /usr/lib/cron/run-crons && /usr/lib/cron/run-crons >/dev/null 2>&1"
        );
    }

    #[test]
    fn system_crontab_rhel_cronie() {
        let e = parse(
            capture(include_str!(
                "testdata/system-rhel-cronie-package-files.txt"
            )),
            Kind::System,
            None,
        )
        .unwrap();
        // /etc/crontab holds only comments and variables; the job is in 0hourly.
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!(e[0].source, "/etc/cron.d/0hourly");
        assert_eq!(e[0].user.as_deref(), Some("root"));
        assert_eq!(e[0].schedule, "01 * * * *");
        assert_eq!(e[0].command, "run-parts /etc/cron.hourly");
    }

    #[test]
    fn root_crontab_alpine() {
        let e = parse(
            capture(include_str!("testdata/root-alpine-3.x.txt")),
            Kind::User,
            Some("root"),
        )
        .unwrap();
        assert_eq!(e.len(), 6, "{e:#?}");
        assert_eq!(e[0].source, "/var/spool/cron/crontabs/root");
        // Tab-separated fields are joined by one space.
        assert_eq!(e[0].schedule, "*/15 * * * *");
        assert_eq!(e[0].command, "run-parts /etc/periodic/15min");
        assert_eq!(e[3].schedule, "0 3 * * 6");
        assert_eq!(e[5].command, "/root/session.sh");
        assert!(e.iter().all(|x| x.user.as_deref() == Some("root")));
    }

    #[test]
    fn specials_and_variables() {
        let t = "==> /etc/cron.d/x <==\nMAILTO=\"\"\nPATH = /bin\n@reboot root /usr/bin/start\n  */5 1-3 * * mon-fri\tapp  run --x\n5 * *\n";
        let e = parse(t, Kind::System, None).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].schedule, "@reboot");
        assert_eq!(e[1].schedule, "*/5 1-3 * * mon-fri");
        assert_eq!(e[1].user.as_deref(), Some("app"));
        assert_eq!(e[1].command, "run --x");
        assert!(
            parse("==> /var/spool/cron/root <==\n", Kind::User, Some("root"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for g in garbage() {
            let _ = parse(&g, Kind::System, None);
            let _ = parse(&g, Kind::User, Some("root"));
        }
        assert!(parse("", Kind::System, None).is_err());
        assert!(parse("17 * * * * root x\n", Kind::System, None).is_err());
        assert!(parse(
            "==> /etc/crontab <==\n-\n-foo bar\n--5 * * * * root x\n",
            Kind::System,
            None
        )
        .unwrap()
        .is_empty());
    }
}
