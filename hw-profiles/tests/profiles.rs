//! Every shipped profile parses, validates and documents itself; broken profiles are rejected
//! with the file, the key and the problem; the dry-run plans match the reviewed goldens.
use hw_profiles::plan::dry_run;
use hw_profiles::{xsk_queue_ids, KernelVersion, PlanContext, Profile, BUILTIN};

#[test]
fn every_builtin_profile_parses_and_validates() {
    let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
    for want in [
        "connectx-4lx",
        "connectx-5",
        "connectx-6dx",
        "connectx-7",
        "intel-e810",
        "intel-x710",
        "virtio-net",
        "veth",
    ] {
        assert!(names.contains(&want), "{want} missing");
    }
    for (name, text) in BUILTIN {
        let p = Profile::parse(&format!("{name}.toml"), text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&p.name, name);
    }
    // The files on disk are the ones compiled in (BUILTIN uses include_str!, this guards renames).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let on_disk = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "toml"))
        .count();
    assert_eq!(on_disk, BUILTIN.len(), "a profile in {dir:?} is not listed in BUILTIN");
}

/// Every `key = value` line has a comment right above it (or inline) that says why and cites a
/// source with `src:`.
#[test]
fn every_setting_carries_a_why_with_its_source() {
    for (name, text) in BUILTIN {
        let lines: Vec<&str> = text.lines().collect();
        let mut in_table = false;
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            in_table |= t.starts_with('[');
            // The file's identity (top-level name and description) is not a setting.
            let identity = !in_table && (t.starts_with("name =") || t.starts_with("description ="));
            if t.is_empty() || t.starts_with('#') || t.starts_with('[') || identity {
                continue;
            }
            let mut block = String::new();
            if let Some((_, inline)) = t.split_once(" #") {
                block.push_str(inline);
            }
            let mut j = i;
            while j > 0 && lines[j - 1].trim_start().starts_with('#') {
                j -= 1;
                block.push_str(lines[j]);
            }
            // A table's first key may lean on the comment above its [[header]].
            if block.is_empty() && j > 0 && lines[j - 1].trim_start().starts_with("[[") {
                let mut k = j - 1;
                while k > 0 && lines[k - 1].trim_start().starts_with('#') {
                    k -= 1;
                    block.push_str(lines[k]);
                }
            }
            assert!(
                !block.is_empty(),
                "{name}.toml line {}: `{t}` has no comment saying why",
                i + 1
            );
            assert!(
                block.contains("src:"),
                "{name}.toml line {}: `{t}`: the comment cites no source (src: …)",
                i + 1
            );
        }
    }
}

fn rejected(file: &str, text: &str) -> hw_profiles::ProfileError {
    match Profile::parse(file, text) {
        Ok(_) => panic!("{file} was accepted:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn invalid_profiles_name_file_key_and_problem() {
    let good = BUILTIN.iter().find(|(n, _)| *n == "intel-e810").unwrap().1;
    // (edit, expected key, a word of the problem)
    let cases: &[(&str, &str, &str, &str)] = &[
        ("rx_ring = 8160", "rx_ring = 100", "queues.rx_ring", "multiple of 32"),
        ("rx_ring = 8160", "rx_ring = \"deep\"", "queues.rx_ring", "invalid type"),
        ("frame_size = 2048", "frame_size = 3000", "xdp.frame_size", "power of two"),
        ("mode = \"native\"", "mode = \"offload\"", "xdp.mode", "unknown variant"),
        ("budget = 64", "budget = 64\nbugdet = 3", "busy_poll.bugdet", "unknown field"),
        (
            "gro_flush_timeout_ns = 200000",
            "gro_flush_timeout_ns = 99000000",
            "busy_poll.gro_flush_timeout_ns",
            "10 ms",
        ),
        ("\"8086:1591\",", "\"8086:15Z1\",", "match.pci_ids", "not a PCI id"),
        ("name = \"intel-e810\"", "name = \"intel-e820\"", "name", "file name"),
        ("key_bytes = 52", "", "rss.key_bytes", "toeplitz-key needs"),
        ("promiscuous = true", "", "link.promiscuous", "missing field"),
        ("name = \"ice-{iface}-TxRx-{queue}\"", "name = \"ice-{iface}\"", "irq.name", "{queue}"),
        ("[offloads]", "[offloads\n", "offloads", "expected"),
    ];
    for (from, to, key, word) in cases {
        assert!(good.contains(from), "fixture edit {from:?} not found");
        let bad = good.replacen(from, to, 1);
        let e = rejected("/etc/wirewatch/hw-profiles/intel-e810.toml", &bad);
        let shown = e.to_string();
        assert_eq!(e.file, "/etc/wirewatch/hw-profiles/intel-e810.toml", "{shown}");
        assert_eq!(e.key, *key, "edit {from:?} → {to:?}: {shown}");
        assert!(
            e.problem.contains(word),
            "edit {from:?} → {to:?}: problem lacks {word:?}: {shown}"
        );
        assert!(shown.starts_with("/etc/wirewatch/hw-profiles/intel-e810.toml: key `"), "{shown}");
    }
}

fn ctx(iface: &str, cpus: &[usize], kernel: KernelVersion, device: &str) -> PlanContext {
    PlanContext {
        iface: iface.into(),
        worker_cpus: cpus.to_vec(),
        kernel,
        device: Some(device.into()),
    }
}

fn golden(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("WIREWATCH_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (WIREWATCH_BLESS=1 writes it)", path.display()));
    assert_eq!(
        got,
        want,
        "dry-run differs from {}; review and re-bless with WIREWATCH_BLESS=1",
        path.display()
    );
}

fn builtin(name: &str) -> Profile {
    let text = BUILTIN.iter().find(|(n, _)| *n == name).unwrap().1;
    Profile::parse(&format!("{name}.toml"), text).unwrap()
}

#[test]
fn golden_dry_run_connectx_6dx() {
    let p = builtin("connectx-6dx");
    golden(
        "connectx-6dx-ens1f0-k6.8.sh",
        &dry_run(&p, &ctx("ens1f0np0", &[2, 3, 4, 5], KernelVersion(6, 8), "0000:3b:00.0")),
    );
    // Before 6.1 the XSK queue ids move up by the channel count and RSS is pointed at them.
    let old = dry_run(&p, &ctx("ens1f0np0", &[2, 3], KernelVersion(5, 15), "0000:3b:00.0"));
    assert!(old.contains("ethtool -X ens1f0np0 equal 2 start 2"), "{old}");
    assert_eq!(xsk_queue_ids(&p, KernelVersion(5, 15), 2), vec![2, 3]);
    assert_eq!(xsk_queue_ids(&p, KernelVersion(6, 1), 2), vec![0, 1]);
}

#[test]
fn golden_dry_run_e810() {
    let p = builtin("intel-e810");
    golden(
        "intel-e810-ens2f0-k6.8.sh",
        &dry_run(&p, &ctx("ens2f0", &[2, 3, 4, 5], KernelVersion(6, 8), "0000:5e:00.0")),
    );
    assert_eq!(xsk_queue_ids(&p, KernelVersion(5, 15), 2), vec![0, 1]);
}
