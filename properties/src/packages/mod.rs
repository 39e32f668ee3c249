//! `packages`: installed packages from dpkg, rpm and apk.

use serde::{Deserialize, Serialize};

use crate::util::non_empty;
use crate::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Manager {
    Dpkg,
    Rpm,
    Apk,
    /// Windows: the Uninstall keys of the registry (64-bit and WOW6432Node hives).
    Registry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    pub epoch: Option<u32>,
    /// Upstream version (without epoch and release/revision).
    pub version: String,
    /// Debian revision, RPM release, or apk `-rN`.
    pub release: Option<String>,
    pub arch: Option<String>,
    /// Source package name.
    pub source: Option<String>,
    pub manager: Manager,
    /// Windows: `Publisher` of the Uninstall entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// Windows: `InstallDate` of the Uninstall entry, as `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_date: Option<String>,
}

/// Split Debian `[epoch:]upstream[-revision]`.
pub fn split_deb_version(v: &str) -> (Option<u32>, &str, Option<&str>) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().ok(), r)
        }
        _ => (None, v),
    };
    match rest.rsplit_once('-') {
        Some((up, rev)) if !up.is_empty() && !rev.is_empty() => (epoch, up, Some(rev)),
        _ => (epoch, rest, None),
    }
}

/// deb822 stanzas of `/var/lib/dpkg/status` (full or filtered by the script's
/// grep). Only `install ok installed`-style (status word `installed`) entries.
pub fn parse_dpkg(text: &str) -> Result<Vec<Package>, ParseError> {
    let mut out = Vec::new();
    let mut stanzas = 0usize;
    for stanza in text.split("\n\n") {
        let (mut name, mut status, mut version, mut arch, mut source) =
            (None, None, None, None, None);
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue; // continuation line
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => name = non_empty(v),
                "Status" => status = Some(v),
                "Version" => version = non_empty(v),
                "Architecture" => arch = non_empty(v),
                "Source" => source = v.split_whitespace().next(),
                _ => {}
            }
        }
        let Some(name) = name else { continue };
        stanzas += 1;
        let installed = status.is_some_and(|s| {
            let mut w = s.split_whitespace();
            let (_want, flag, state) = (w.next(), w.next(), w.next());
            flag == Some("ok") && state == Some("installed")
        });
        let (Some(version), true) = (version, installed) else {
            continue;
        };
        let (epoch, upstream, rev) = split_deb_version(version);
        out.push(Package {
            name: name.to_owned(),
            epoch,
            version: upstream.to_owned(),
            release: rev.map(str::to_owned),
            arch: arch.map(str::to_owned),
            source: source.map(str::to_owned),
            manager: Manager::Dpkg,
            publisher: None,
            install_date: None,
        });
    }
    if stanzas == 0 {
        return Err(if text.trim().is_empty() {
            ParseError::Empty
        } else {
            ParseError::Invalid("no Package stanza".into())
        });
    }
    Ok(out)
}

fn none_if_unset(v: &str) -> Option<&str> {
    match v {
        "" | "(none)" => None,
        v => Some(v),
    }
}

/// Source package name from a SOURCERPM file name
/// (`openssl-1.0.2k-19.el7.src.rpm` → `openssl`).
pub fn srpm_name(srpm: &str) -> Option<&str> {
    let base = srpm
        .strip_suffix(".src.rpm")
        .or_else(|| srpm.strip_suffix(".nosrc.rpm"))?;
    let (nv, _release) = base.rsplit_once('-')?;
    let (n, _version) = nv.rsplit_once('-')?;
    non_empty(n)
}

/// `rpm -qa --queryformat '%{NAME} %{EPOCH} %{VERSION} %{RELEASE} %{ARCH} %{SOURCERPM}\n'`
/// (also accepts `%{EPOCHNUM}` and the 5-field form without SOURCERPM).
pub fn parse_rpm(text: &str) -> Result<Vec<Package>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 5 && f.len() != 6 {
            return Err(ParseError::Line {
                line: i + 1,
                reason: format!("expected 6 fields, got {}", f.len()),
            });
        }
        let name = non_empty(f[0]).ok_or_else(|| ParseError::Line {
            line: i + 1,
            reason: "empty name".into(),
        })?;
        let epoch = match none_if_unset(f[1]) {
            None => None,
            Some(e) => Some(e.parse::<u32>().map_err(|_| ParseError::Line {
                line: i + 1,
                reason: "bad epoch".into(),
            })?),
        };
        let version = none_if_unset(f[2]).ok_or_else(|| ParseError::Line {
            line: i + 1,
            reason: "empty version".into(),
        })?;
        out.push(Package {
            name: name.to_owned(),
            epoch,
            version: version.to_owned(),
            release: none_if_unset(f[3]).map(str::to_owned),
            arch: none_if_unset(f[4]).map(str::to_owned),
            source: f
                .get(5)
                .and_then(|s| none_if_unset(s))
                .and_then(srpm_name)
                .map(str::to_owned),
            manager: Manager::Rpm,
            publisher: None,
            install_date: None,
        });
    }
    if out.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(out)
}

/// `/lib/apk/db/installed` stanzas (full or filtered to `P V A o`).
pub fn parse_apk(text: &str) -> Result<Vec<Package>, ParseError> {
    let mut out = Vec::new();
    let mut stanzas = 0usize;
    for stanza in text.split("\n\n") {
        let (mut name, mut version, mut arch, mut origin) = (None, None, None, None);
        for line in stanza.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k {
                "P" => name = non_empty(v),
                "V" => version = non_empty(v),
                "A" => arch = non_empty(v),
                "o" => origin = non_empty(v),
                _ => {}
            }
        }
        let Some(name) = name else { continue };
        stanzas += 1;
        let Some(version) = version else { continue };
        let (ver, rel) = match version.rsplit_once("-r") {
            Some((v, r))
                if !v.is_empty() && !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (v, Some(&version[v.len() + 1..]))
            }
            _ => (version, None),
        };
        out.push(Package {
            name: name.to_owned(),
            epoch: None,
            version: ver.to_owned(),
            release: rel.map(str::to_owned),
            arch: arch.map(str::to_owned),
            source: origin.map(str::to_owned),
            manager: Manager::Apk,
            publisher: None,
            install_date: None,
        });
    }
    if stanzas == 0 {
        return Err(if text.trim().is_empty() {
            ParseError::Empty
        } else {
            ParseError::Invalid("no P: stanza".into())
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{capture, garbage};

    fn find<'a>(p: &'a [Package], name: &str) -> &'a Package {
        p.iter()
            .find(|x| x.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn dpkg_debian_12() {
        let p = parse_dpkg(capture(include_str!("testdata/dpkg-debian-12.txt"))).unwrap();
        assert!(p.len() > 100, "{}", p.len());
        let bash = find(&p, "bash");
        assert_eq!(
            (bash.epoch, bash.version.as_str(), bash.release.as_deref()),
            (None, "5.2.15", Some("2+b8"))
        );
        assert_eq!(bash.arch.as_deref(), Some("amd64"));
        assert_eq!(bash.source.as_deref(), Some("bash"));
        let libc = find(&p, "libc6");
        assert_eq!(libc.source.as_deref(), Some("glibc"));
        let perl = find(&p, "perl-base");
        assert_eq!(perl.epoch, None);
        assert!(p.iter().all(|x| x.manager == Manager::Dpkg));
        // Some packages on Debian carry an epoch.
        assert!(p.iter().any(|x| x.epoch.is_some()));
    }

    #[test]
    fn deb_versions() {
        assert_eq!(
            split_deb_version("1:2.38.1-5+deb12u3"),
            (Some(1), "2.38.1", Some("5+deb12u3"))
        );
        assert_eq!(split_deb_version("2.36"), (None, "2.36", None));
        assert_eq!(split_deb_version("1.2-3-4"), (None, "1.2-3", Some("4")));
        assert_eq!(split_deb_version("x:1"), (None, "x:1", None));
    }

    #[test]
    fn apk_alpine() {
        let p = parse_apk(capture(include_str!("testdata/apk-alpine-3.4.txt"))).unwrap();
        let musl = find(&p, "musl");
        assert_eq!(
            (musl.version.as_str(), musl.release.as_deref()),
            ("1.1.14", Some("r10"))
        );
        assert_eq!(musl.arch.as_deref(), Some("x86_64"));
        let ssl = find(&p, "libssl1.0");
        assert_eq!(ssl.source.as_deref(), Some("openssl"));
        let t = find(&p, "test");
        assert_eq!(t.version, "2.9.11_pre20061021");
        // The stanza without V: is skipped, not an error.
        assert!(p.iter().all(|x| x.name != "invalidPackageWithoutAVersion"));
        assert_eq!(p.len(), 15);
    }

    #[test]
    fn dpkg_ubuntu_22_04_arm64() {
        let p = parse_dpkg(capture(include_str!(
            "testdata/dpkg-ubuntu-22.04-arm64.txt"
        )))
        .unwrap();
        assert_eq!(p.len(), 4);
        let aa = find(&p, "apparmor");
        assert_eq!(
            (
                aa.epoch,
                aa.version.as_str(),
                aa.release.as_deref(),
                aa.arch.as_deref()
            ),
            (None, "3.0.4", Some("2ubuntu2.2"), Some("arm64"))
        );
        // Native package: no Debian revision.
        let apt = find(&p, "apt");
        assert_eq!(
            (apt.version.as_str(), apt.release.as_deref()),
            ("2.4.9", None)
        );
        assert_eq!(apt.source, None);
        let ath = find(&p, "apt-transport-https");
        assert_eq!(ath.source.as_deref(), Some("apt"));
        assert_eq!(ath.arch.as_deref(), Some("all"));
        assert_eq!(find(&p, "adduser").version, "3.118ubuntu5");
    }

    #[test]
    fn apk_alpine_3_18_aarch64() {
        let p = parse_apk(capture(include_str!(
            "testdata/apk-alpine-3.18-aarch64.txt"
        )))
        .unwrap();
        assert_eq!(p.len(), 8);
        assert!(p.iter().all(|x| x.arch.as_deref() == Some("aarch64")));
        let musl = find(&p, "musl-utils");
        assert_eq!(
            (
                musl.version.as_str(),
                musl.release.as_deref(),
                musl.source.as_deref()
            ),
            ("1.2.4", Some("r1"), Some("musl"))
        );
        let ssl = find(&p, "ssl_client");
        assert_eq!(ssl.source.as_deref(), Some("busybox"));
        assert_eq!(find(&p, "scanelf").source.as_deref(), Some("pax-utils"));
    }

    /// Real `rpm -qa` outputs of the 5-field (no SOURCERPM) query formats.
    #[test]
    fn rpm_captures() {
        // (file, count, name, epoch, version, release, arch)
        type Case = (
            &'static str,
            usize,
            &'static str,
            Option<u32>,
            &'static str,
            &'static str,
            &'static str,
        );
        let cases: [Case; 3] = [
            (
                include_str!("testdata/rpm-rocky-8.7.txt"),
                10,
                "crypto-policies",
                None,
                "20211116",
                "1.gitae470d6.el8",
                "noarch",
            ),
            (
                include_str!("testdata/rpm-amzn-2022.txt"),
                10,
                "ncurses-libs",
                None,
                "6.2",
                "4.20200222.amzn2022",
                "x86_64",
            ),
            (
                include_str!("testdata/rpm-oracle-8.7.txt"),
                8,
                "libgcc",
                Some(0),
                "8.5.0",
                "16.0.2.el8_7",
                "x86_64",
            ),
        ];
        for (text, count, name, epoch, version, release, arch) in cases {
            let p = parse_rpm(capture(text)).unwrap();
            assert_eq!(p.len(), count, "{name}");
            let x = find(&p, name);
            assert_eq!(
                (
                    x.epoch,
                    x.version.as_str(),
                    x.release.as_deref(),
                    x.arch.as_deref()
                ),
                (epoch, version, Some(release), Some(arch))
            );
            assert!(p
                .iter()
                .all(|x| x.source.is_none() && x.manager == Manager::Rpm));
        }
    }

    #[test]
    fn rpm_lines() {
        let p = parse_rpm(
            "openssl-libs 1 1.0.2k 19.el7 x86_64 openssl-1.0.2k-19.el7.src.rpm\n\
             gpg-pubkey (none) fd431d51 4ae0493b (none) (none)\n\
             bash (none) 5.1.8 9.el9 x86_64 bash-5.1.8-9.el9.src.rpm\n",
        )
        .unwrap();
        assert_eq!(p[0].epoch, Some(1));
        assert_eq!(p[0].source.as_deref(), Some("openssl"));
        assert_eq!(p[1].arch, None);
        assert_eq!(p[1].source, None);
        assert_eq!(p[2].release.as_deref(), Some("9.el9"));
        assert_eq!(
            srpm_name("java-17-openjdk-17.0.9.0.9-2.el9.src.rpm"),
            Some("java-17-openjdk")
        );
        assert_eq!(srpm_name("(none)"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for g in garbage() {
            let _ = parse_dpkg(&g);
            let _ = parse_rpm(&g);
            let _ = parse_apk(&g);
        }
        assert!(parse_dpkg("").is_err());
        assert!(parse_rpm("").is_err());
        assert!(parse_apk("").is_err());
        assert!(parse_rpm("a b c\n").is_err());
        assert!(parse_rpm("a x 1 2 3 4\n").is_err());
        assert!(parse_dpkg("garbage\n").is_err());
    }
}
