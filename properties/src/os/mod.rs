//! `os`: distribution (os-release or legacy release files), kernel, hostname,
//! uptime and boot time.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::util::{file_blocks, non_empty, owned};
use crate::ParseError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Os {
    /// `"linux"` or `"windows"`.
    pub family: String,
    pub name: Option<String>,
    pub id: Option<String>,
    pub id_like: Vec<String>,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
    pub kernel_release: Option<String>,
    pub arch: Option<String>,
    pub hostname: Option<String>,
    pub uptime_seconds: Option<u64>,
    /// RFC 3339, UTC, seconds precision (from `btime` of `/proc/stat`, or
    /// `LastBootUpTime` on Windows).
    pub boot_time: Option<String>,
    /// Windows: build number (`BuildNumber`, e.g. `"20348"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_number: Option<String>,
    /// Windows: update build revision (registry `UBR`, e.g. `2113`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ubr: Option<u32>,
    /// Windows: edition (registry `EditionID`, e.g. `"ServerStandard"`, `"Professional"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<String>,
    /// Windows: feature release (registry `DisplayVersion`, else `ReleaseId`; e.g. `"23H2"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_version: Option<String>,
    /// Windows: `"Server"`, `"Server Core"` or `"Client"` (registry `InstallationType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_type: Option<String>,
    /// Windows: when the OS was installed, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_date: Option<String>,
    /// Windows: the Active Directory domain, when the host is joined to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Windows: the workgroup, when the host is not joined to a domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workgroup: Option<String>,
    /// Windows: `Win32_ComputerSystem.DomainRole` as a name: `standalone_workstation`,
    /// `member_workstation`, `standalone_server`, `member_server`,
    /// `backup_domain_controller`, `primary_domain_controller`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_role: Option<String>,
}

/// The outputs `os` is built from; `None` = section unusable.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    pub os_release: Option<&'a str>,
    pub legacy: Option<&'a str>,
    pub uname: Option<&'a str>,
    pub uptime: Option<&'a str>,
}

/// The fields of an os-release file that we use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease<'a> {
    pub name: Option<Cow<'a, str>>,
    pub id: Option<Cow<'a, str>>,
    pub id_like: Option<Cow<'a, str>>,
    pub version_id: Option<Cow<'a, str>>,
    pub pretty_name: Option<Cow<'a, str>>,
}

/// Parse os-release (shell-style `KEY=value` with optional quotes).
pub fn parse_os_release(text: &str) -> Result<OsRelease<'_>, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut r = OsRelease::default();
    let mut known = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ParseError::Line {
                line: i + 1,
                reason: "expected KEY=value".into(),
            });
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ParseError::Line {
                line: i + 1,
                reason: "invalid key".into(),
            });
        }
        let slot = match key {
            "NAME" => &mut r.name,
            "ID" => &mut r.id,
            "ID_LIKE" => &mut r.id_like,
            "VERSION_ID" => &mut r.version_id,
            "PRETTY_NAME" => &mut r.pretty_name,
            _ => continue,
        };
        known += 1;
        let v = unquote(value.trim());
        *slot = if v.trim().is_empty() { None } else { Some(v) };
    }
    if known == 0 {
        return Err(ParseError::Invalid(
            "no NAME, ID, VERSION_ID or PRETTY_NAME".into(),
        ));
    }
    Ok(r)
}

fn unquote(v: &str) -> Cow<'_, str> {
    let b = v.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        let inner = &v[1..v.len() - 1];
        if b[0] == b'"' && inner.contains('\\') {
            let mut s = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        s.push(n);
                    }
                } else {
                    s.push(c);
                }
            }
            return Cow::Owned(s);
        }
        return Cow::Borrowed(inner);
    }
    Cow::Borrowed(v)
}

/// Distribution facts from pre-os-release files (`==> FILE <==` blocks of the
/// `os_legacy` section), e.g. CentOS 6's `/etc/redhat-release`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Legacy {
    pub name: Option<String>,
    pub id: Option<String>,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
}

pub fn parse_legacy(text: &str) -> Result<Legacy, ParseError> {
    let mut found: Option<Legacy> = None;
    let mut debian: Option<&str> = None;
    let mut alpine: Option<&str> = None;
    let mut blocks = 0usize;
    for (path, content) in file_blocks(text) {
        let Some(path) = path else { continue };
        blocks += 1;
        let first = content.lines().map(str::trim).find(|l| !l.is_empty());
        let Some(first) = first else { continue };
        let file = path.rsplit('/').next().unwrap_or(path);
        match file {
            "debian_version" => debian = Some(first),
            "alpine-release" => alpine = Some(first),
            "redhat-release"
            | "centos-release"
            | "system-release"
            | "fedora-release"
            | "rocky-release"
            | "almalinux-release"
            | "oracle-release"
            | "SuSE-release"
            | "amazon-linux-release" => {
                // Prefer the most specific file over redhat/system-release.
                let generic = matches!(file, "redhat-release" | "system-release");
                if found.is_none() || !generic {
                    found = Some(release_line(first));
                }
            }
            _ => {}
        }
    }
    if let Some(l) = found {
        return Ok(l);
    }
    if let Some(v) = alpine {
        return Ok(Legacy {
            name: Some("Alpine Linux".into()),
            id: Some("alpine".into()),
            version_id: Some(v.to_owned()),
            pretty_name: None,
        });
    }
    if let Some(v) = debian {
        return Ok(Legacy {
            name: Some("Debian GNU/Linux".into()),
            id: Some("debian".into()),
            version_id: Some(v.to_owned()),
            pretty_name: None,
        });
    }
    if blocks == 0 {
        Err(ParseError::Invalid("no release file".into()))
    } else {
        Err(ParseError::Invalid("no known release file".into()))
    }
}

/// "CentOS Linux release 7.9.2009 (Core)" → name, id, version_id, pretty_name.
fn release_line(line: &str) -> Legacy {
    let (name, version) = match line.find(" release ") {
        Some(i) => {
            let v = line[i + 9..].split_whitespace().next();
            (Some(line[..i].trim()), v)
        }
        None => (None, None),
    };
    let lower = line.to_ascii_lowercase();
    let id = if lower.starts_with("red hat") {
        Some("rhel")
    } else if lower.starts_with("centos") {
        Some("centos")
    } else if lower.starts_with("fedora") {
        Some("fedora")
    } else if lower.starts_with("amazon") {
        Some("amzn")
    } else if lower.starts_with("oracle") {
        Some("ol")
    } else if lower.starts_with("rocky") {
        Some("rocky")
    } else if lower.starts_with("almalinux") {
        Some("almalinux")
    } else if lower.starts_with("suse linux enterprise server") {
        Some("sles")
    } else {
        None
    };
    Legacy {
        name: name.map(str::to_owned),
        id: id.map(str::to_owned),
        version_id: version.map(str::to_owned),
        pretty_name: Some(line.to_owned()),
    }
}

/// (hostname, kernel release, machine).
pub type Uname = (Option<String>, Option<String>, Option<String>);

/// `uname -n`, `uname -r`, `uname -m`: three lines.
pub fn parse_uname(text: &str) -> Result<Uname, ParseError> {
    let mut lines = text.lines();
    let host = lines.next().and_then(owned);
    let kernel = lines.next().and_then(owned);
    let arch = lines.next().and_then(owned);
    if host.is_none() && kernel.is_none() && arch.is_none() {
        return Err(ParseError::Empty);
    }
    for v in [&host, &kernel, &arch].into_iter().flatten() {
        if v.contains(char::is_whitespace) {
            return Err(ParseError::Invalid(format!("unexpected uname value {v:?}")));
        }
    }
    Ok((host, kernel, arch))
}

/// `/proc/uptime` then `btime N`: (uptime seconds, boot time RFC 3339).
pub fn parse_uptime(text: &str) -> Result<(Option<u64>, Option<String>), ParseError> {
    let mut uptime = None;
    let mut boot = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("btime ") {
            let secs: i64 = rest
                .trim()
                .parse()
                .map_err(|_| ParseError::Invalid(format!("bad btime {rest:?}")))?;
            let dt = chrono::DateTime::from_timestamp(secs, 0)
                .ok_or_else(|| ParseError::Invalid(format!("btime out of range {secs}")))?;
            boot = Some(dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        } else if uptime.is_none() {
            if let Some(first) = line.split_whitespace().next() {
                let whole = first.split('.').next().unwrap_or(first);
                uptime = Some(
                    whole
                        .parse::<u64>()
                        .map_err(|_| ParseError::Invalid(format!("bad uptime {first:?}")))?,
                );
            }
        }
    }
    if uptime.is_none() && boot.is_none() {
        return Err(ParseError::Empty);
    }
    Ok((uptime, boot))
}

/// Build `os` from whatever inputs are usable. Errors only when nothing at all
/// identifies the system.
pub fn parse(inputs: Inputs<'_>) -> Result<Os, ParseError> {
    let mut os = Os {
        family: "linux".into(),
        ..Os::default()
    };
    let mut first_err: Option<ParseError> = None;
    let mut any = false;
    match inputs.os_release.map(parse_os_release) {
        Some(Ok(r)) => {
            any = true;
            os.name = r.name.map(Cow::into_owned);
            os.id = r.id.map(Cow::into_owned);
            os.id_like = r
                .id_like
                .as_deref()
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
            os.version_id = r.version_id.map(Cow::into_owned);
            os.pretty_name = r.pretty_name.map(Cow::into_owned);
        }
        Some(Err(e)) => first_err = Some(e),
        None => {}
    }
    if os.id.is_none() && os.name.is_none() {
        if let Some(Ok(l)) = inputs.legacy.map(parse_legacy) {
            any = true;
            os.name = l.name;
            os.id = l.id;
            os.version_id = l.version_id;
            os.pretty_name = l.pretty_name;
        }
    }
    match inputs.uname.map(parse_uname) {
        Some(Ok((h, k, a))) => {
            any = true;
            os.hostname = h;
            os.kernel_release = k;
            os.arch = a;
        }
        Some(Err(e)) => {
            first_err.get_or_insert(e);
        }
        None => {}
    }
    match inputs.uptime.map(parse_uptime) {
        Some(Ok((u, b))) => {
            any = true;
            os.uptime_seconds = u;
            os.boot_time = b;
        }
        Some(Err(e)) => {
            first_err.get_or_insert(e);
        }
        None => {}
    }
    if !any {
        return Err(first_err.unwrap_or(ParseError::Empty));
    }
    // Normalise empty strings away.
    os.name = os.name.and_then(|s| non_empty(&s).map(str::to_owned));
    Ok(os)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{capture, garbage};

    struct Case {
        file: &'static str,
        text: &'static str,
        name: &'static str,
        id: &'static str,
        id_like: &'static [&'static str],
        version_id: Option<&'static str>,
        pretty: &'static str,
    }

    macro_rules! case {
        ($f:literal, $name:literal, $id:literal, [$($like:literal),*], $ver:expr, $pretty:literal) => {
            Case {
                file: $f,
                text: include_str!(concat!("testdata/", $f)),
                name: $name,
                id: $id,
                id_like: &[$($like),*],
                version_id: $ver,
                pretty: $pretty,
            }
        };
    }

    #[test]
    fn os_release_captures() {
        let cases = [
            case!(
                "debian-12.txt",
                "Debian GNU/Linux",
                "debian",
                [],
                Some("12"),
                "Debian GNU/Linux 12 (bookworm)"
            ),
            case!(
                "ubuntu-22.04.txt",
                "Ubuntu",
                "ubuntu",
                ["debian"],
                Some("22.04"),
                "Ubuntu 22.04.4 LTS"
            ),
            case!(
                "rhel-9.6.txt",
                "Red Hat Enterprise Linux",
                "rhel",
                ["fedora"],
                Some("9.6"),
                "Red Hat Enterprise Linux 9.6 (Plow)"
            ),
            case!(
                "rocky-9.3.txt",
                "Rocky Linux",
                "rocky",
                ["rhel", "centos", "fedora"],
                Some("9.3"),
                "Rocky Linux 9.3 (Blue Onyx)"
            ),
            case!(
                "centos-7.txt",
                "CentOS Linux",
                "centos",
                ["rhel", "fedora"],
                Some("7"),
                "CentOS Linux 7 (Core)"
            ),
            case!(
                "sles-15-sp2.txt",
                "SLES",
                "sles",
                ["suse"],
                Some("15.2"),
                "SUSE Linux Enterprise Server 15 SP2"
            ),
            case!(
                "alpine-3.23.txt",
                "Alpine Linux",
                "alpine",
                [],
                Some("3.23.2"),
                "Alpine Linux v3.23"
            ),
            case!(
                "amzn-2023.txt",
                "Amazon Linux",
                "amzn",
                ["fedora"],
                Some("2023"),
                "Amazon Linux 2023"
            ),
        ];
        for c in cases {
            let r = parse_os_release(capture(c.text)).unwrap_or_else(|e| panic!("{}: {e}", c.file));
            assert_eq!(r.name.as_deref(), Some(c.name), "{}", c.file);
            assert_eq!(r.id.as_deref(), Some(c.id), "{}", c.file);
            let like: Vec<&str> = r
                .id_like
                .as_deref()
                .map(|s| s.split_whitespace().collect())
                .unwrap_or_default();
            assert_eq!(like, c.id_like, "{}", c.file);
            assert_eq!(r.version_id.as_deref(), c.version_id, "{}", c.file);
            assert_eq!(r.pretty_name.as_deref(), Some(c.pretty), "{}", c.file);
        }
    }

    #[test]
    fn legacy_release_files() {
        let l = parse_legacy(capture(include_str!("testdata/centos-7.9-legacy.txt"))).unwrap();
        assert_eq!(l.id.as_deref(), Some("centos"));
        assert_eq!(l.version_id.as_deref(), Some("7.9.2009"));
        assert_eq!(l.name.as_deref(), Some("CentOS Linux"));
        assert_eq!(
            l.pretty_name.as_deref(),
            Some("CentOS Linux release 7.9.2009 (Core)")
        );
        let d = parse_legacy("==> /etc/debian_version <==\n12.11\n").unwrap();
        assert_eq!(
            (d.id.as_deref(), d.version_id.as_deref()),
            (Some("debian"), Some("12.11"))
        );
        let r = parse_legacy("==> /etc/redhat-release <==\nRed Hat Enterprise Linux Server release 6.10 (Santiago)\n").unwrap();
        assert_eq!(
            (r.id.as_deref(), r.version_id.as_deref()),
            (Some("rhel"), Some("6.10"))
        );
    }

    #[test]
    fn full_os_from_inputs() {
        let os = parse(Inputs {
            os_release: None,
            legacy: Some("==> /etc/centos-release <==\nCentOS release 6.10 (Final)\n"),
            uname: Some("web1\n2.6.32-754.el6.x86_64\nx86_64\n"),
            uptime: Some("350735.47 234388.90\nbtime 1700000000\n"),
        })
        .unwrap();
        assert_eq!(os.id.as_deref(), Some("centos"));
        assert_eq!(os.version_id.as_deref(), Some("6.10"));
        assert_eq!(os.hostname.as_deref(), Some("web1"));
        assert_eq!(os.kernel_release.as_deref(), Some("2.6.32-754.el6.x86_64"));
        assert_eq!(os.arch.as_deref(), Some("x86_64"));
        assert_eq!(os.uptime_seconds, Some(350735));
        assert_eq!(os.boot_time.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(os.family, "linux");
    }

    #[test]
    fn quoting() {
        let r = parse_os_release("NAME='A B'\nPRETTY_NAME=\"x \\\"y\\\"\"\nID=\"\"\n").unwrap();
        assert_eq!(r.name.as_deref(), Some("A B"));
        assert_eq!(r.pretty_name.as_deref(), Some("x \"y\""));
        assert_eq!(r.id, None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for g in garbage() {
            let _ = parse_os_release(&g);
            let _ = parse_legacy(&g);
            let _ = parse_uname(&g);
            let _ = parse_uptime(&g);
            let _ = parse(Inputs {
                os_release: Some(&g),
                legacy: Some(&g),
                uname: Some(&g),
                uptime: Some(&g),
            });
        }
        assert!(parse_os_release("").is_err());
        assert!(parse_os_release("garbage").is_err());
        assert!(parse_os_release("FOO=bar\n").is_err());
        assert!(parse_uptime("btime x\n").is_err());
        assert!(parse_uptime("btime 99999999999999999\n").is_err());
        assert!(parse(Inputs::default()).is_err());
        assert!(parse(Inputs {
            os_release: Some(""),
            legacy: Some(""),
            uname: Some(""),
            uptime: Some("")
        })
        .is_err());
    }
}
