//! `wirewatch run --config FILE`: one clear error per mistake, and flags override the file.
use std::process::Command;

fn run_with(toml: &str, extra: &[&str]) -> (i32, String) {
    let p =
        std::env::temp_dir().join(format!("ww-config-{}-{}.toml", std::process::id(), toml.len()));
    std::fs::write(&p, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["run", "--config"])
        .arg(&p)
        .args(extra)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&p);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn each_mistake_is_one_clear_error() {
    let cases = [
        ("iface = \"x\"\nsnap_len = 128\n", &["unknown key `snap_len`", "snaplen"][..]),
        ("iface = \"x\"\nsnaplen = \"big\"\n", &["'big'", "--snaplen"][..]),
        ("iface = \"x\"\nsnaplen = 20\n", &["'20'", "96..=1024"][..]),
        ("iface = \"x\"\napi_insecure = \"yes\"\n", &["`api_insecure`", "true or false"][..]),
        ("iface = \"x\"\nxdp_mode = \"turbo\"\n", &["'turbo'", "native"][..]),
        ("iface = [\"x\"\n", &["TOML parse error", "line 1"][..]),
        ("iface = \"x\"\ncommunity_id_seed = 70000\n", &["'70000'", "0..=65535"][..]),
        ("iface = \"x\"\nhost_name = \"a b\"\n", &["--host-name", "1 to 253 letters"][..]),
        ("snaplen = 256\n", &["sets no interface", "iface = [\"eth1\"]"][..]),
    ];
    for (toml, wants) in cases {
        let (code, err) = run_with(toml, &[]);
        assert_eq!(code, 2, "{toml}: {err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("wirewatch: error:")).count(), 1, "{err}");
        for w in wants {
            assert!(err.contains(w), "{toml}: `{w}` missing from: {err}");
        }
    }
}

#[test]
fn flags_override_the_file() {
    // A valid file gets past validation to the interface check: its interface, unless the
    // command line names another.
    let file = "iface = [\"wwcfgfile0\"]\nsnaplen = 256\nxdp_mode = \"generic\"\n";
    let (code, err) = run_with(file, &["--snaplen", "200"]);
    assert_ne!(code, 0);
    assert!(err.contains("wwcfgfile0") || err.contains("missing capabilities"), "{err}");
    let (code, err) = run_with(file, &["--iface", "wwcfgflag0"]);
    assert_ne!(code, 0);
    assert!(!err.contains("wwcfgfile0"), "the flag's interface replaces the file's: {err}");
}

#[test]
fn the_shipped_config_is_valid_and_asks_for_an_interface() {
    // deploy/wirewatch.toml is /etc/wirewatch/wirewatch.toml in the .deb, read by the unit.
    let shipped = include_str!("../../deploy/wirewatch.toml");
    let (code, err) = run_with(shipped, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sets no interface") && err.contains("iface = ["), "{err}");
    // With an interface every other setting passes validation, up to the interface check.
    let (code, err) = run_with(shipped, &["--iface", "wwcfgnone0"]);
    assert_ne!(code, 0);
    assert!(err.contains("wwcfgnone0") || err.contains("missing capabilities"), "{err}");
}
