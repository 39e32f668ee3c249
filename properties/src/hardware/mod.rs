//! `hardware`: DMI (sysfs, dmidecode fallback), CPU topology, memory, virtualization.

use serde::{Deserialize, Serialize};

use crate::util::non_empty;
use crate::ParseError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
    pub bios_date: Option<String>,
    /// `systemd-detect-virt` output (`none` on bare metal).
    pub virtualization: Option<String>,
    pub cpu_model: Option<String>,
    pub cpu_sockets: Option<u32>,
    /// Total physical cores (all sockets).
    pub cpu_cores: Option<u32>,
    /// Logical processors.
    pub cpu_threads: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub swap_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    pub dmi: Option<&'a str>,
    pub dmidecode: Option<&'a str>,
    pub cpuinfo: Option<&'a str>,
    pub meminfo: Option<&'a str>,
    pub virt: Option<&'a str>,
}

/// Firmware placeholders that mean "unknown".
pub(crate) fn dmi_value(v: &str) -> Option<String> {
    let v = non_empty(v)?;
    const JUNK: [&str; 8] = [
        "To Be Filled By O.E.M.",
        "To be filled by O.E.M.",
        "Default string",
        "Not Specified",
        "Not Present",
        "System Product Name",
        "System manufacturer",
        "0",
    ];
    if JUNK.contains(&v) {
        None
    } else {
        Some(v.to_owned())
    }
}

/// `key=value` lines of the `dmi` section (`key!unreadable` lines are skipped).
pub fn parse_dmi(text: &str, hw: &mut Hardware) -> Result<(), ParseError> {
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.ends_with("!unreadable") {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(ParseError::Line {
                line: i + 1,
                reason: "expected key=value".into(),
            });
        };
        let slot = match k {
            "sys_vendor" => &mut hw.vendor,
            "product_name" => &mut hw.model,
            "product_serial" => &mut hw.serial,
            "product_uuid" => &mut hw.uuid,
            "bios_vendor" => &mut hw.bios_vendor,
            "bios_version" => &mut hw.bios_version,
            "bios_date" => &mut hw.bios_date,
            _ => continue,
        };
        *slot = dmi_value(v);
    }
    if let Some(u) = hw.uuid.as_mut() {
        u.make_ascii_lowercase();
    }
    Ok(())
}

/// `dmidecode -t bios -t system`: fills only the fields still unknown.
pub fn parse_dmidecode(text: &str, hw: &mut Hardware) -> Result<(), ParseError> {
    let mut block = "";
    let mut seen = false;
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') || line.starts_with("Handle ") {
            continue;
        }
        if !line.starts_with('\t') && !line.starts_with(' ') {
            block = line.trim();
            continue;
        }
        let Some((k, v)) = line.trim().split_once(':') else {
            continue;
        };
        let slot = match (block, k) {
            ("System Information", "Manufacturer") => &mut hw.vendor,
            ("System Information", "Product Name") => &mut hw.model,
            ("System Information", "Serial Number") => &mut hw.serial,
            ("System Information", "UUID") => &mut hw.uuid,
            ("BIOS Information", "Vendor") => &mut hw.bios_vendor,
            ("BIOS Information", "Version") => &mut hw.bios_version,
            ("BIOS Information", "Release Date") => &mut hw.bios_date,
            _ => continue,
        };
        seen = true;
        if slot.is_none() {
            *slot = dmi_value(v);
        }
    }
    if let Some(u) = hw.uuid.as_mut() {
        u.make_ascii_lowercase();
    }
    if seen {
        Ok(())
    } else {
        Err(ParseError::Invalid(
            "no System/BIOS Information in dmidecode output".into(),
        ))
    }
}

/// CPU model and topology from (filtered) `/proc/cpuinfo`.
pub fn parse_cpuinfo(text: &str, hw: &mut Hardware) -> Result<(), ParseError> {
    let mut threads = 0u32;
    let mut model: Option<&str> = None;
    let mut alt_model: Option<&str> = None;
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    let mut sockets: Vec<u32> = Vec::new();
    let mut phys: Option<u32> = None;
    for (i, line) in text.lines().enumerate() {
        let Some((k, v)) = line.split_once(':') else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(ParseError::Line {
                line: i + 1,
                reason: "expected key: value".into(),
            });
        };
        let v = v.trim();
        match k.trim() {
            "processor" if v.parse::<u32>().is_ok() => {
                threads += 1;
                phys = None;
            }
            "model name" if model.is_none() => model = non_empty(v),
            "Processor" | "cpu" | "Hardware" if alt_model.is_none() => alt_model = non_empty(v),
            "physical id" => {
                let p = v.parse().map_err(|_| ParseError::Line {
                    line: i + 1,
                    reason: "bad physical id".into(),
                })?;
                phys = Some(p);
                sockets.push(p);
            }
            "core id" => {
                let c = v.parse().map_err(|_| ParseError::Line {
                    line: i + 1,
                    reason: "bad core id".into(),
                })?;
                pairs.push((phys.unwrap_or(0), c));
            }
            _ => {}
        }
    }
    if threads == 0 {
        return Err(ParseError::Invalid("no processor entries".into()));
    }
    sockets.sort_unstable();
    sockets.dedup();
    pairs.sort_unstable();
    pairs.dedup();
    hw.cpu_threads = Some(threads);
    hw.cpu_model = model
        .or(alt_model)
        .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "));
    if sockets.is_empty() {
        // No topology (many ARM and some VM kernels): assume no SMT.
        hw.cpu_sockets = None;
        hw.cpu_cores = Some(threads);
    } else {
        hw.cpu_sockets = u32::try_from(sockets.len()).ok();
        hw.cpu_cores = if pairs.is_empty() {
            Some(threads)
        } else {
            u32::try_from(pairs.len()).ok()
        };
    }
    Ok(())
}

/// `MemTotal` / `SwapTotal` (kB) of `/proc/meminfo`.
pub fn parse_meminfo(text: &str, hw: &mut Hardware) -> Result<(), ParseError> {
    for (i, line) in text.lines().enumerate() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let slot = match k {
            "MemTotal" => &mut hw.memory_bytes,
            "SwapTotal" => &mut hw.swap_bytes,
            _ => continue,
        };
        let num = v.trim().trim_end_matches("kB").trim();
        let kb: u64 = num.parse().map_err(|_| ParseError::Line {
            line: i + 1,
            reason: format!("bad {k}"),
        })?;
        *slot = Some(kb.checked_mul(1024).ok_or_else(|| ParseError::Line {
            line: i + 1,
            reason: format!("{k} overflows"),
        })?);
    }
    if hw.memory_bytes.is_none() {
        return Err(ParseError::Invalid("no MemTotal".into()));
    }
    Ok(())
}

/// `systemd-detect-virt`: one word.
pub fn parse_virt(text: &str) -> Result<String, ParseError> {
    let v = text
        .lines()
        .next()
        .and_then(non_empty)
        .ok_or(ParseError::Empty)?;
    if v.contains(char::is_whitespace) || v.len() > 64 {
        return Err(ParseError::Invalid(format!("unexpected virt value {v:?}")));
    }
    Ok(v.to_owned())
}

/// Build `hardware` from whatever is usable; error only if CPU, memory and DMI
/// all failed.
pub fn parse(inputs: Inputs<'_>) -> Result<Hardware, ParseError> {
    let mut hw = Hardware::default();
    let mut ok = false;
    let mut err: Option<ParseError> = None;
    let mut note = |r: Result<(), ParseError>, counts: bool, ok: &mut bool| match r {
        Ok(()) => *ok |= counts,
        Err(e) => {
            err.get_or_insert(e);
        }
    };
    if let Some(t) = inputs.dmi {
        note(parse_dmi(t, &mut hw), false, &mut ok);
    }
    if let Some(t) = inputs.dmidecode {
        note(parse_dmidecode(t, &mut hw), false, &mut ok);
    }
    if let Some(t) = inputs.cpuinfo {
        note(parse_cpuinfo(t, &mut hw), true, &mut ok);
    }
    if let Some(t) = inputs.meminfo {
        note(parse_meminfo(t, &mut hw), true, &mut ok);
    }
    if let Some(t) = inputs.virt {
        if let Ok(v) = parse_virt(t) {
            hw.virtualization = Some(v);
        }
    }
    if hw.vendor.is_some() || hw.model.is_some() || hw.serial.is_some() {
        ok = true;
    }
    if ok {
        Ok(hw)
    } else {
        Err(err.unwrap_or(ParseError::Empty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{capture, garbage};

    fn cpu(text: &str) -> Hardware {
        let mut hw = Hardware::default();
        parse_cpuinfo(capture(text), &mut hw).unwrap();
        hw
    }

    #[test]
    fn cpuinfo_captures() {
        // (file, model, sockets, cores, threads)
        let cases: [(&str, &str, Option<u32>, u32, u32); 2] = [
            (
                include_str!("testdata/cpuinfo-debian-12-firecracker.txt"),
                "AMD EPYC",
                Some(1),
                2,
                2,
            ),
            (
                include_str!("testdata/cpuinfo-xeon-x5670-2s.txt"),
                "Intel(R) Xeon(R) CPU X5670 @ 2.93GHz",
                Some(2),
                12,
                22,
            ),
        ];
        for (text, model, sockets, cores, threads) in cases {
            let hw = cpu(text);
            assert_eq!(hw.cpu_model.as_deref(), Some(model));
            assert_eq!(hw.cpu_sockets, sockets);
            assert_eq!(hw.cpu_cores, Some(cores));
            assert_eq!(hw.cpu_threads, Some(threads));
        }
    }

    #[test]
    fn cpuinfo_without_topology() {
        let hw =
            cpu("processor\t: 0\nBogoMIPS\t: 50.00\nprocessor\t: 1\nCPU implementer\t: 0x41\n");
        assert_eq!(
            (hw.cpu_sockets, hw.cpu_cores, hw.cpu_threads),
            (None, Some(2), Some(2))
        );
    }

    #[test]
    fn meminfo_capture() {
        let mut hw = Hardware::default();
        parse_meminfo(
            capture(include_str!("testdata/meminfo-debian-12-firecracker.txt")),
            &mut hw,
        )
        .unwrap();
        assert_eq!(hw.memory_bytes, Some(24_684_084 * 1024));
        assert_eq!(hw.swap_bytes, Some(0));
    }

    #[test]
    fn dmi_and_dmidecode() {
        let mut hw = Hardware::default();
        parse_dmi(
            "sys_vendor=QEMU\nproduct_name=Standard PC (Q35 + ICH9, 2009)\nproduct_serial!unreadable\nproduct_uuid!unreadable\nbios_vendor=SeaBIOS\nbios_version=1.16.2-debian-1.16.2-1\nbios_date=04/01/2014\n",
            &mut hw,
        )
        .unwrap();
        assert_eq!(hw.vendor.as_deref(), Some("QEMU"));
        assert_eq!(hw.serial, None);
        parse_dmidecode(
            "# dmidecode 3.4\nGetting SMBIOS data from sysfs.\n\nHandle 0x0100, DMI type 1, 27 bytes\nSystem Information\n\tManufacturer: QEMU\n\tProduct Name: Standard PC (Q35 + ICH9, 2009)\n\tSerial Number: Not Specified\n\tUUID: 4C4C4544-0042-3510-8052-B4C04F4A4E32\n",
            &mut hw,
        )
        .unwrap();
        assert_eq!(
            hw.uuid.as_deref(),
            Some("4c4c4544-0042-3510-8052-b4c04f4a4e32")
        );
        assert_eq!(hw.serial, None);
        assert_eq!(hw.bios_vendor.as_deref(), Some("SeaBIOS"));
    }

    #[test]
    fn dmidecode_rhel_6_vmware() {
        let mut hw = Hardware::default();
        parse_dmidecode(
            capture(include_str!("testdata/dmidecode-rhel-6.2-vmware.txt")),
            &mut hw,
        )
        .unwrap();
        assert_eq!(hw.vendor.as_deref(), Some("VMware, Inc."));
        assert_eq!(hw.model.as_deref(), Some("VMware Virtual Platform"));
        assert_eq!(
            hw.serial.as_deref(),
            Some("VMware-42 1b ba bd 5f 4e af 7e-3a 56 b5 af 1c e1 a9 77")
        );
        assert_eq!(
            hw.uuid.as_deref(),
            Some("421bbabd-5f4e-af7e-3a56-b5af1ce1a977")
        );
        assert_eq!(hw.bios_vendor.as_deref(), Some("Phoenix Technologies LTD"));
        assert_eq!(hw.bios_version.as_deref(), Some("6.00"));
        assert_eq!(hw.bios_date.as_deref(), Some("07/30/2013"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for g in garbage() {
            let mut hw = Hardware::default();
            let _ = parse_dmi(&g, &mut hw);
            let _ = parse_dmidecode(&g, &mut hw);
            let _ = parse_cpuinfo(&g, &mut hw);
            let _ = parse_meminfo(&g, &mut hw);
            let _ = parse_virt(&g);
            let _ = parse(Inputs {
                dmi: Some(&g),
                dmidecode: Some(&g),
                cpuinfo: Some(&g),
                meminfo: Some(&g),
                virt: Some(&g),
            });
        }
        assert!(parse(Inputs::default()).is_err());
        assert!(parse(Inputs {
            cpuinfo: Some(""),
            meminfo: Some(""),
            ..Inputs::default()
        })
        .is_err());
        let mut hw = Hardware::default();
        assert!(parse_meminfo("MemTotal: 99999999999999999999 kB\n", &mut hw).is_err());
    }
}
