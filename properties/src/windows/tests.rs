use super::*;
use crate::testutil::{capture, garbage};

const SERVER_2022: &str = include_str!("../../testdata/windows/server-2022-datacenter.json");
const WINDOWS_11: &str = include_str!("../../testdata/windows/windows-11-pro-22h2.json");
const SERVER_2012R2: &str =
    include_str!("../../testdata/windows/server-2012r2-single-objects.json");
const PARTIAL: &str = include_str!("../../testdata/windows/windows-10-partial-errors.json");

fn run(file: &str) -> Collected {
    collect(capture(file).as_bytes(), b"", Some(0))
}

/// Every property is either collected or explained by an error.
fn assert_accounted(c: &Collected, context: &str) {
    let p = &c.properties;
    let present = [
        ("os", p.os.is_some()),
        ("hardware", p.hardware.is_some()),
        ("packages", p.packages.is_some()),
        ("hotfixes", p.hotfixes.is_some()),
        ("services", p.services.is_some()),
        ("processes", p.processes.is_some()),
    ];
    for (name, ok) in present {
        assert!(
            ok || c
                .errors
                .iter()
                .any(|e| e.property == name || e.property == "*"),
            "{name} neither collected nor explained ({context}): {:?}",
            c.errors
        );
    }
}

#[test]
fn script_is_minimised_read_only_and_fits_the_command_line() {
    let s = script();
    assert!(s.is_ascii());
    assert!(s
        .lines()
        .all(|l| !l.starts_with('#') && !l.starts_with(' ') && !l.is_empty()));
    assert!(s.len() <= 2_900, "script is {} characters", s.len());
    // powershell -EncodedCommand takes base64 of UTF-16LE.
    let utf16_bytes = s.encode_utf16().count() * 2;
    let encoded = 4 * utf16_bytes.div_ceil(3);
    let command = "powershell.exe -NoProfile -NonInteractive -EncodedCommand ".len() + encoded;
    assert!(command < 8_000, "encoded command is {command} characters");
    for forbidden in [
        "Set-",
        "New-Item",
        "Remove-",
        "Invoke-",
        "Start-",
        "Stop-",
        "Restart-",
        "Out-File",
        "Add-Content",
        "Set-Content",
        "Clear-",
        "Rename-",
        "Copy-",
        "Move-",
    ] {
        assert!(!s.contains(forbidden), "script uses {forbidden}");
    }
    for section in [
        "S os",
        "S cs",
        "S cv",
        "S bios",
        "S csp",
        "S cpu",
        "S page",
        "S packages",
        "S hotfixes",
        "S services",
        "S processes",
    ] {
        assert!(s.contains(section), "{section}");
    }
    assert!(s.contains("ConvertTo-Json -Compress -Depth 4"));
}

#[test]
fn server_2022_full_output() {
    let c = run(SERVER_2022);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let p = &c.properties;
    let os = p.os.as_ref().unwrap();
    assert_eq!(os.family, "windows");
    assert_eq!(os.id.as_deref(), Some("windows"));
    assert_eq!(
        os.name.as_deref(),
        Some("Microsoft Windows Server 2022 Datacenter")
    );
    assert_eq!(
        os.pretty_name.as_deref(),
        Some("Microsoft Windows Server 2022 Datacenter 21H2")
    );
    assert_eq!(os.version_id.as_deref(), Some("10.0.20348"));
    assert_eq!(os.kernel_release.as_deref(), Some("10.0.20348.2227"));
    assert_eq!(os.build_number.as_deref(), Some("20348"));
    assert_eq!(os.ubr, Some(2227));
    assert_eq!(os.edition.as_deref(), Some("ServerDatacenter"));
    assert_eq!(os.installation_type.as_deref(), Some("Server"));
    assert_eq!(os.arch.as_deref(), Some("x86_64"));
    assert_eq!(os.hostname.as_deref(), Some("srv-app01"));
    assert_eq!(os.boot_time.as_deref(), Some("2024-01-10T03:02:11Z"));
    assert_eq!(os.install_date.as_deref(), Some("2023-06-01T09:12:44Z"));
    assert_eq!(
        os.uptime_seconds,
        Some(12 * 86_400 + 11 * 3600 + 37 * 60 + 54)
    );
    assert_eq!(os.domain.as_deref(), Some("corp.example.com"));
    assert_eq!(os.workgroup, None);
    assert_eq!(os.domain_role.as_deref(), Some("member_server"));

    let hw = p.hardware.as_ref().unwrap();
    assert_eq!(hw.vendor.as_deref(), Some("VMware, Inc."));
    assert_eq!(hw.virtualization.as_deref(), Some("vmware"));
    assert_eq!(
        hw.uuid.as_deref(),
        Some("3c6b1a42-7e0d-219f-8a44-5b6c7d8e9f10")
    );
    assert!(hw.serial.as_deref().unwrap().starts_with("VMware-42 1a"));
    assert_eq!(hw.bios_date.as_deref(), Some("01/11/2023"));
    assert_eq!(
        (hw.cpu_sockets, hw.cpu_cores, hw.cpu_threads),
        (Some(2), Some(4), Some(4))
    );
    assert_eq!(
        hw.cpu_model.as_deref(),
        Some("Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz")
    );
    assert_eq!(hw.memory_bytes, Some(17_179_332_608));
    assert_eq!(hw.swap_bytes, Some(2432 * 1024 * 1024));

    let pk = p.packages.as_ref().unwrap();
    // 13 entries: two SystemComponent runtimes and one update of another product are hidden.
    assert_eq!(pk.len(), 10, "{pk:#?}");
    assert!(pk
        .iter()
        .all(|x| x.manager == crate::packages::Manager::Registry));
    assert!(!pk
        .iter()
        .any(|x| x.name.contains("Minimum Runtime") || x.name.contains("KB2565063")));
    let vc = pk
        .iter()
        .find(|x| x.name == "Microsoft Visual C++ 2015-2022 Redistributable (x64) - 14.36.32532")
        .unwrap();
    assert_eq!(vc.arch.as_deref(), Some("x86")); // the bundle registers in WOW6432Node
    assert_eq!(vc.version, "14.36.32532.0");
    let vmt = pk.iter().find(|x| x.name == "VMware Tools").unwrap();
    assert_eq!(vmt.install_date.as_deref(), Some("2023-06-01"));
    assert_eq!(vmt.publisher.as_deref(), Some("VMware, Inc."));
    assert_eq!(vmt.arch.as_deref(), Some("x64"));

    let hf = p.hotfixes.as_ref().unwrap();
    assert_eq!(hf.len(), 4);
    assert_eq!(hf[0].id, "KB5032198");
    assert_eq!(hf[0].installed_on.as_deref(), Some("2023-11-14"));
    assert_eq!(hf[1].description.as_deref(), Some("Security Update"));

    let sv = p.services.as_ref().unwrap();
    assert_eq!(sv.len(), 51);
    let winrm = sv.iter().find(|s| s.name == "WinRM").unwrap();
    assert_eq!(
        (
            winrm.active.as_str(),
            winrm.sub.as_str(),
            winrm.enabled.as_deref(),
            winrm.start_mode.as_deref()
        ),
        ("active", "running", Some("enabled"), Some("automatic"))
    );
    assert_eq!(
        winrm.display_name.as_deref(),
        Some("Windows Remote Management (WS-Management)")
    );
    let aj = sv.iter().find(|s| s.name == "AJRouter").unwrap();
    assert_eq!(
        (aj.active.as_str(), aj.sub.as_str(), aj.enabled.as_deref()),
        ("inactive", "stopped", Some("disabled"))
    );

    let pr = p.processes.as_ref().unwrap();
    assert_eq!(pr.len(), 19);
    assert_eq!(pr[0].name, "Idle");
    assert_eq!(pr[0].pid, 0);
    assert!(pr.iter().any(
        |x| x.name == "lsass" && x.path.as_deref() == Some("C:\\Windows\\system32\\lsass.exe")
    ));
    assert!(pr.iter().any(|x| x.name == "MsMpEng" && x.path.is_none()));

    // Round trip through the wire format.
    let json = serde_json::to_value(p).unwrap();
    let back: Properties = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&back, p);
    assert_eq!(json["packages"][0]["manager"], "registry");
}

#[test]
fn windows_11_workstation_non_ascii() {
    let c = run(WINDOWS_11);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let p = &c.properties;
    let os = p.os.as_ref().unwrap();
    assert_eq!(os.name.as_deref(), Some("Microsoft Windows 11 Pro"));
    assert_eq!(os.display_version.as_deref(), Some("22H2"));
    assert_eq!(os.kernel_release.as_deref(), Some("10.0.22621.3007"));
    assert_eq!(os.domain, None);
    assert_eq!(os.workgroup.as_deref(), Some("WORKGROUP"));
    assert_eq!(os.domain_role.as_deref(), Some("standalone_workstation"));
    assert_eq!(os.hostname.as_deref(), Some("HPFIREFLY16P"));
    let hw = p.hardware.as_ref().unwrap();
    // One socket: PowerShell prints an object, not an array.
    assert_eq!(
        (hw.cpu_sockets, hw.cpu_cores, hw.cpu_threads),
        (Some(1), Some(10), Some(12))
    );
    assert_eq!(hw.virtualization, None);
    assert_eq!(hw.serial.as_deref(), Some("5CG3281XYZ"));
    let pk = p.packages.as_ref().unwrap();
    assert_eq!(pk.len(), 8);
    let buero = pk.iter().find(|x| x.name == "Büro Plus NexT").unwrap();
    assert_eq!(buero.publisher.as_deref(), Some("Büro Plus GmbH"));
    let wechat = pk.iter().find(|x| x.name == "微信").unwrap();
    assert_eq!(wechat.publisher.as_deref(), Some("腾讯科技(深圳)有限公司"));
    assert_eq!(wechat.install_date.as_deref(), Some("2023-11-30"));
    assert!(pk
        .iter()
        .any(|x| x.name == "Microsoft Visual C++ 2015-2022 Redistributable (x64) - 14.36.32532"));
    let spooler = p
        .services
        .as_ref()
        .unwrap()
        .iter()
        .find(|s| s.name == "Spooler")
        .unwrap();
    assert_eq!(spooler.display_name.as_deref(), Some("Druckwarteschlange"));
    assert_eq!(
        p.hotfixes.as_ref().unwrap()[2].installed_on.as_deref(),
        Some("2024-02-01")
    );
}

#[test]
fn server_2012r2_single_objects_nulls_and_wmi_fallback() {
    let c = run(SERVER_2012R2);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let p = &c.properties;
    let os = p.os.as_ref().unwrap();
    assert_eq!(
        os.name.as_deref(),
        Some("Microsoft Windows Server 2012 R2 Standard")
    );
    assert_eq!(
        os.pretty_name.as_deref(),
        Some("Microsoft Windows Server 2012 R2 Standard")
    );
    assert_eq!(os.kernel_release.as_deref(), Some("6.3.9600"));
    assert_eq!(os.ubr, None);
    assert_eq!(os.display_version, None);
    assert_eq!(os.installation_type.as_deref(), Some("Server Core"));
    // DMTF with +060 minutes.
    assert_eq!(os.boot_time.as_deref(), Some("2024-01-05T01:15:01Z"));
    assert_eq!(os.install_date.as_deref(), Some("2019-04-08T09:30:12Z"));
    assert_eq!(os.uptime_seconds, Some(86_400));
    assert_eq!(os.arch.as_deref(), Some("x86_64")); // from OSArchitecture
    assert_eq!(os.hostname.as_deref(), Some("LEGACY-DB"));
    assert_eq!(os.domain_role.as_deref(), Some("standalone_server"));
    assert_eq!(os.workgroup.as_deref(), Some("WORKGROUP"));
    let hw = p.hardware.as_ref().unwrap();
    assert_eq!(hw.uuid, None); // all-F UUID
    assert_eq!(hw.serial, None); // "0" and ""
    assert_eq!(hw.memory_bytes, Some(8_589_463_552)); // number as string
    assert_eq!(
        (hw.cpu_sockets, hw.cpu_cores, hw.cpu_threads),
        (Some(1), Some(2), Some(4))
    );
    assert_eq!(hw.swap_bytes, Some(0)); // no page file
    assert_eq!(hw.virtualization.as_deref(), Some("microsoft"));
    assert_eq!(hw.bios_version.as_deref(), Some("090008"));
    assert_eq!(hw.bios_date.as_deref(), Some("12/07/2012"));
    assert_eq!(p.packages.as_deref(), Some(&[][..]));
    let hf = p.hotfixes.as_ref().unwrap();
    assert_eq!(hf.len(), 1);
    assert_eq!(
        (hf[0].id.as_str(), hf[0].installed_on.as_deref()),
        ("KB2919355", Some("2014-04-06"))
    );
    let sv = p.services.as_ref().unwrap();
    assert_eq!(sv.len(), 1);
    assert_eq!(
        (
            sv[0].active.as_str(),
            sv[0].sub.as_str(),
            sv[0].start_mode.as_deref()
        ),
        ("active", "running", Some("automatic"))
    );
    let pr = p.processes.as_ref().unwrap();
    assert_eq!(pr.len(), 2); // {"value": [...], "Count": 2}
    assert_eq!(pr[1].pid, 1844);
}

#[test]
fn section_errors_become_property_errors() {
    let c = run(PARTIAL);
    assert_accounted(&c, "partial");
    let p = &c.properties;
    assert!(
        p.os.is_some() && p.hardware.is_some() && p.packages.is_some() && p.processes.is_some()
    );
    assert!(p.hotfixes.is_none() && p.services.is_none());
    let os = p.os.as_ref().unwrap();
    assert_eq!(os.hostname.as_deref(), Some("PC-LAGER-07")); // CSName, cs was denied
    assert_eq!(os.domain_role, None);
    let hw = p.hardware.as_ref().unwrap();
    assert_eq!(hw.vendor.as_deref(), Some("HP")); // from csp
    assert_eq!(hw.memory_bytes, None);
    let kinds: Vec<(&str, ErrorKind, bool)> = c
        .errors
        .iter()
        .map(|e| {
            (
                e.property.as_str(),
                e.kind,
                e.message.starts_with("section "),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("os", ErrorKind::PermissionDenied, true),
            ("hardware", ErrorKind::PermissionDenied, true),
            ("hardware", ErrorKind::PermissionDenied, true),
            ("hotfixes", ErrorKind::Unavailable, true),
            ("services", ErrorKind::PermissionDenied, true),
        ]
    );
    assert!(c.errors[0].message.contains("section cs"));
    assert!(c.errors[2].message.contains("section bios"));
}

#[test]
fn unusable_output_is_one_clear_error() {
    let c = collect(b"", b"", Some(0));
    assert_eq!(c.properties, Properties::default());
    assert_eq!(c.errors.len(), 1);
    assert_eq!(
        (c.errors[0].property.as_str(), c.errors[0].kind),
        ("*", ErrorKind::Missing)
    );

    let c = collect(b"garbage\n", b"", Some(0));
    assert_eq!(
        (c.errors.len(), c.errors[0].kind),
        (1, ErrorKind::ParseError)
    );
    assert!(c.errors[0].message.contains("garbage"));

    // CLIXML on stderr (as WinRM delivers PowerShell errors), nothing on stdout.
    let clixml = "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><S S=\"Error\">Get-CimInstance : Access denied _x000D__x000A_</S><S S=\"Error\">At line:1 char:1_x000D__x000A_</S></Objs>";
    let c = collect(b"", clixml.as_bytes(), Some(1));
    assert_eq!(c.errors.len(), 1);
    assert_eq!(c.errors[0].kind, ErrorKind::PermissionDenied);
    assert!(
        c.errors[0]
            .message
            .contains("Get-CimInstance : Access denied"),
        "{}",
        c.errors[0].message
    );
    assert!(!c.errors[0].message.contains("_x000D_"));

    for g in garbage() {
        let c = collect(g.as_bytes(), g.as_bytes(), None);
        assert_eq!(c.errors.len(), 1, "{g:?}");
        assert_eq!(c.properties, Properties::default());
    }
}

#[test]
fn wrong_shapes_and_truncation_never_panic() {
    let c = collect(
        br#"{"os":"x","cs":5,"cv":[1],"bios":true,"csp":"","cpu":[1,2],"page":"x","packages":"x","hotfixes":7,"services":[3],"processes":{"Name":"x"},"errors":{"weird":"boom","cs":null}}"#,
        b"",
        Some(0),
    );
    assert_accounted(&c, "wrong shapes");
    assert!(c
        .errors
        .iter()
        .any(|e| e.property == "*" && e.message.contains("weird")));
    // A process without an id is skipped, not an error.
    assert_eq!(c.properties.processes.as_deref(), Some(&[][..]));

    let full = capture(SERVER_2022);
    for cut in (0..full.len()).step_by(53) {
        let c = collect(&full.as_bytes()[..cut], b"", None);
        assert_accounted(&c, &format!("cut at {cut}"));
    }
    // The empty object: every property missing, each explained.
    let c = collect(b"{}", b"", Some(0));
    assert_accounted(&c, "{}");
    assert!(c.errors.iter().all(|e| e.kind == ErrorKind::Missing));
}

#[test]
fn encodings_and_noise() {
    // PowerShell 7 without the script's escaping: raw UTF-8.
    let raw = r#"{"os":{"Caption":"Microsoft Windows 11 Pro","Version":"10.0.22631"},"packages":[{"DisplayName":"Büro 日本語","DisplayVersion":1.5,"Arch":"x64"}],"errors":{}}"#;
    let c = collect(raw.as_bytes(), b"", Some(0));
    assert_eq!(
        c.properties.packages.as_ref().unwrap()[0].name,
        "Büro 日本語"
    );
    assert_eq!(c.properties.packages.as_ref().unwrap()[0].version, "1.5");
    // UTF-16LE with BOM, and a noise line before the JSON.
    let noisy = format!("WARNING: something\r\n{raw}\r\n");
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(noisy.encode_utf16().flat_map(u16::to_le_bytes));
    let c2 = collect(&utf16, b"", Some(0));
    assert_eq!(c2.properties, c.properties);
    // UTF-8 BOM.
    let mut bom = vec![0xef, 0xbb, 0xbf];
    bom.extend_from_slice(raw.as_bytes());
    assert_eq!(collect(&bom, b"", Some(0)).properties, c.properties);
}

#[test]
fn thirty_two_bit_windows_labels_its_only_hive_x86() {
    let raw = r#"{"pa":"x86","os":{"Caption":"Microsoft Windows 10 Pro","Version":"10.0.19045","OSArchitecture":"32-bit"},"packages":{"DisplayName":"7-Zip 23.01","DisplayVersion":"23.01","Arch":"x64"},"errors":{}}"#;
    let c = collect(raw.as_bytes(), b"", Some(0));
    assert_eq!(
        c.properties.os.as_ref().unwrap().arch.as_deref(),
        Some("x86")
    );
    assert_eq!(
        c.properties.packages.as_ref().unwrap()[0].arch.as_deref(),
        Some("x86")
    );
}

#[test]
fn classify_messages() {
    assert_eq!(classify("Access denied "), ErrorKind::PermissionDenied);
    assert_eq!(
        classify("Access is denied. (Exception from HRESULT: 0x80070005 (E_ACCESSDENIED))"),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        classify("Requested registry access is not allowed."),
        ErrorKind::PermissionDenied
    );
    assert_eq!(classify("Invalid class \"Win32_Foo\""), ErrorKind::NotFound);
    assert_eq!(
        classify("The term 'Get-CimInstance' is not recognized as the name of a cmdlet, function, script file, or operable program."),
        ErrorKind::NotFound
    );
    assert_eq!(classify("Provider load failure "), ErrorKind::Unavailable);
    assert_eq!(
        classify("The RPC server is unavailable. (Exception from HRESULT: 0x800706BA)"),
        ErrorKind::Unavailable
    );
    assert_eq!(classify("boom"), ErrorKind::CommandFailed);
}

#[test]
fn clixml_unescaping() {
    assert_eq!(stderr_text("plain"), "plain");
    assert_eq!(
        stderr_text("#< CLIXML\n<Objs><S S=\"Error\">a &lt;b&gt; _x000D__x000A_c _xZZ_</S><S S=\"Progress\">no</S></Objs>"),
        "a <b> \r\nc _xZZ_"
    );
}

/// Date strings the host controls, cut inside a multi-byte character at the offsets the date
/// parser looks at (`/Date(ms±HHMM)/`, DMTF), plus the shared garbage.
fn hostile_dates() -> Vec<String> {
    let mut v: Vec<String> = [
        "/Date(1+a€)/",
        "/Date(1-€€)/",
        "/Date(1+0€)/",
        "/Date(1+€0)/",
        "/Date(€+0100)/",
        "/Date(1+01000)/",
        "2023111423132€.000000+060",
        "20231114231320.0000€+060",
        "20231114231320.000000+€",
        "€€€€€€€€",
        "01d2fb39b3f35c0€",
        "1/€/2024",
        "€/1/2024 10:00",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    v.extend(garbage());
    v
}

#[test]
fn hostile_dates_in_every_date_field_never_panic() {
    fn replace_dates(v: &mut serde_json::Value, with: &str) -> usize {
        match v {
            serde_json::Value::Object(map) => map
                .iter_mut()
                .map(|(key, value)| {
                    if matches!(
                        key.as_str(),
                        "InstallDate" | "LastBootUpTime" | "ReleaseDate" | "InstalledOn"
                    ) {
                        *value = serde_json::Value::String(with.to_owned());
                        1
                    } else {
                        replace_dates(value, with)
                    }
                })
                .sum(),
            serde_json::Value::Array(items) => {
                items.iter_mut().map(|i| replace_dates(i, with)).sum()
            }
            _ => 0,
        }
    }
    let doc: serde_json::Value =
        serde_json::from_str(capture(SERVER_2022)).expect("the capture is JSON");
    for date in hostile_dates() {
        let mut hostile = doc.clone();
        assert!(replace_dates(&mut hostile, &date) >= 4, "{date:?}");
        let c = collect(hostile.to_string().as_bytes(), b"", Some(0));
        assert_accounted(&c, &date);
        let p = &c.properties;
        let os = p.os.as_ref().expect("os");
        assert_eq!(
            (&os.install_date, &os.boot_time),
            (&None, &None),
            "{date:?}"
        );
        assert_eq!(p.hardware.as_ref().expect("hardware").bios_date, None);
        assert!(p
            .packages
            .as_ref()
            .expect("packages")
            .iter()
            .all(|k| k.install_date.is_none()));
        assert!(p
            .hotfixes
            .as_ref()
            .expect("hotfixes")
            .iter()
            .all(|h| h.installed_on.is_none()));
    }
}
