//! `wirewatch profile …` and `run --profile`: golden dry runs through the CLI, clear errors for
//! bad profiles, and detect/apply on a real veth in a namespace, checked with ethtool afterwards.
use std::process::Command;

use wirewatch_testkit::netns::{privileged_or_skip, Netns};
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::Topology;

fn ww() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wirewatch"))
}

fn out(c: &mut Command) -> (i32, String, String) {
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn list_show_and_golden_dry_runs_through_the_cli() {
    let (code, list, _) = out(ww().args(["profile", "list"]));
    assert_eq!(code, 0);
    for name in [
        "connectx-4lx",
        "connectx-5",
        "connectx-6dx",
        "connectx-7",
        "intel-e810",
        "intel-x710",
        "virtio-net",
        "veth",
    ] {
        assert!(list.lines().any(|l| l.starts_with(name)), "{name} not listed:\n{list}");
    }
    let (code, shown, _) = out(ww().args(["profile", "show", "intel-e810"]));
    assert_eq!(code, 0);
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hw-profiles/profiles/intel-e810.toml"
    ))
    .unwrap();
    assert_eq!(shown, file);
    let golden = |args: &[&str], file: &str| {
        let (code, got, err) = out(ww().args(["profile", "apply", "--dry-run"]).args(args));
        assert_eq!(code, 0, "{err}");
        let want = std::fs::read_to_string(format!(
            "{}/../hw-profiles/tests/golden/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert_eq!(got, want);
    };
    golden(
        &[
            "--profile",
            "connectx-6dx",
            "--iface",
            "ens1f0np0",
            "--cpus",
            "2-5",
            "--kernel",
            "6.8",
            "--device",
            "0000:3b:00.0",
        ],
        "connectx-6dx-ens1f0-k6.8.sh",
    );
    golden(
        &[
            "--profile",
            "intel-e810",
            "--iface",
            "ens2f0",
            "--cpus",
            "2-5",
            "--kernel",
            "6.8",
            "--device",
            "0000:5e:00.0",
        ],
        "intel-e810-ens2f0-k6.8.sh",
    );
    let (code, _, err) = out(ww().args(["profile", "show", "connectx-9"]));
    assert_eq!(code, 1);
    assert!(err.contains("no profile named `connectx-9`") && err.contains("connectx-7"), "{err}");
}

#[test]
fn a_bad_profile_in_the_directory_names_file_key_and_problem() {
    let dir = TempDir::new("profile-bad");
    let veth = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hw-profiles/profiles/veth.toml"
    ))
    .unwrap();
    let bad = veth
        .replace("name = \"veth\"", "name = \"veth-odd\"")
        .replace("frame_size = 2048", "frame_size = 1000");
    let path = dir.join("veth-odd.toml");
    std::fs::write(&path, bad).unwrap();
    let (code, _, err) = out(ww().args(["profile", "list", "--profile-dir"]).arg(&dir));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: key `xdp.frame_size`: 1000 must be a power of two",
            path.display()
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn features(ns: &Netns, dev: &str) -> String {
    ns.run(&format!("ethtool -k {dev}")).unwrap()
}

fn feature_is(text: &str, name: &str, state: &str) -> bool {
    text.lines().any(|l| l.trim_start().starts_with(&format!("{name}: {state}")))
}

#[test]
fn detect_and_apply_on_a_real_veth() {
    if !privileged_or_skip("detect_and_apply_on_a_real_veth") {
        return;
    }
    let mut t = Topology::new();
    t.namespace("p", &format!("wwprof{}", std::process::id() % 100000)).unwrap();
    t.veth(("p", "wwp0"), ("p", "wwp1")).unwrap();
    let ns = &t["p"];
    let in_ns = |args: &[&str]| {
        let mut c = ns.command(env!("CARGO_BIN_EXE_wirewatch"));
        c.args(args);
        out(&mut c)
    };
    // Start from the opposite of what the profile wants.
    ns.run("ethtool -K wwp0 gro on rxvlan on rx-vlan-stag-hw-parse on").unwrap();
    ns.run("ip link set dev wwp0 promisc off").unwrap();
    let before = features(ns, "wwp0");
    assert!(
        feature_is(&before, "generic-receive-offload", "on")
            && feature_is(&before, "rx-vlan-offload", "on"),
        "{before}"
    );

    let (code, detect, err) = in_ns(&["profile", "detect", "--iface", "wwp0"]);
    assert_eq!(code, 0, "{err}");
    assert!(detect.contains("driver     veth") && detect.contains("profile    veth"), "{detect}");
    assert!(detect.contains("cannot hash symmetrically"), "{detect}");

    let (code, applied, err) = in_ns(&["profile", "apply", "--iface", "wwp0"]);
    assert_eq!(code, 0, "{applied}{err}");
    assert!(!applied.contains("FAILED"), "{applied}");
    let after = features(ns, "wwp0");
    for f in ["generic-receive-offload", "rx-vlan-offload", "rx-vlan-stag-hw-parse"] {
        assert!(feature_is(&after, f, "off"), "{f} still on after apply:\n{after}");
    }
    let link = ns.run("ip link show wwp0").unwrap();
    assert!(link.contains("PROMISC"), "{link}");

    // An operator's profile: busy-poll settings land in sysfs; a ring size veth cannot take is
    // reported as failed (exit 1) without stopping the other steps.
    let dir = TempDir::new("profile-veth-busy");
    let veth_toml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hw-profiles/profiles/veth.toml"
    ))
    .unwrap();
    let busy = veth_toml
        .replace("name = \"veth\"", "name = \"veth-busy\"")
        .replace("enabled = false", "enabled = true")
        .replace("napi_defer_hard_irqs = 0", "napi_defer_hard_irqs = 2")
        .replace("gro_flush_timeout_ns = 0", "gro_flush_timeout_ns = 200000")
        .replace("policy = \"keep\"", "policy = \"keep\"\n# test (src: test)\nrx_ring = 1024");
    std::fs::write(dir.join("veth-busy.toml"), busy).unwrap();
    let d = dir.to_string_lossy().to_string();
    let (code, applied, err) = in_ns(&[
        "profile",
        "apply",
        "--iface",
        "wwp0",
        "--profile",
        "veth-busy",
        "--profile-dir",
        &d,
    ]);
    assert_eq!(code, 1, "{applied}{err}");
    assert!(
        applied.contains("FAILED  1024 RX descriptors")
            && applied.contains("ethtool -G wwp0 rx 1024"),
        "{applied}"
    );
    assert!(err.contains("1 of the steps failed on wwp0"), "{err}");
    assert_eq!(ns.run("cat /sys/class/net/wwp0/napi_defer_hard_irqs").unwrap().trim(), "2");
    assert_eq!(ns.run("cat /sys/class/net/wwp0/gro_flush_timeout").unwrap().trim(), "200000");

    // run --profile applies before attaching and says what it did.
    ns.run("ethtool -K wwp0 gro on").unwrap();
    let ev = dir.join("ev");
    let (code, _, err) = in_ns(&[
        "run",
        "--iface",
        "wwp0",
        "--profile",
        "auto",
        "--duration",
        "1",
        "--metrics",
        "127.0.0.1:0",
        "--evidence-dir",
        &ev.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("applying hw-profile veth"), "{err}");
    assert!(err.contains("gro off"), "{err}");
    assert!(err.contains("flow ownership: by flow hash"), "{err}");
    assert!(feature_is(&features(ns, "wwp0"), "generic-receive-offload", "off"));

    let (code, _, err) = in_ns(&["profile", "detect", "--iface", "nosuch0"]);
    assert_eq!(code, 1);
    assert!(err.contains("no interface nosuch0"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
